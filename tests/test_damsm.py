"""DAMSM (nbs/07_damsm.ipynb): eqs. 7-14 against loop-by-loop references, checkpoints, the Inception backend,
R-precision and the pointing game on hand-built inputs."""
import json, math, sys
import pytest
import torch
import torch.nn.functional as F

from attngan_edu.text import Vocab
from attngan_edu.damsm import (region_context, word_match_scores, sentence_match_scores, matching_losses, damsm_loss,
                               DAMSMConfig, DAMSM, InceptionImageEncoder, save_damsm, load_damsm, r_precision,
                               point_hits, mention_positions, pointing_game)
from attngan_edu.synbirds import PART_NAMES

G1, G2, G3 = 4.0, 5.0, 10.0


# ---------------------------------------------------------------- loop-by-loop references, written from the paper
def ref_region_context(e, v, gamma1):
    "eqs. 7-9 for ONE caption of real words e (D, T) and one image v (D, R), element by element"
    D, T = e.shape; R = v.shape[1]
    s = [[sum(e[d, i] * v[d, j] for d in range(D)) for j in range(R)] for i in range(T)]                     # eq. 7
    s_bar = [[math.exp(s[i][j]) / sum(math.exp(s[k][j]) for k in range(T)) for j in range(R)] for i in range(T)]  # eq. 8
    alpha = [[math.exp(gamma1 * s_bar[i][j]) / sum(math.exp(gamma1 * s_bar[i][k]) for k in range(R)) for j in range(R)]
             for i in range(T)]                                                                               # eq. 9
    c = [[sum(alpha[i][j] * v[d, j] for j in range(R)) for i in range(T)] for d in range(D)]
    return torch.tensor(c, dtype=torch.float64), torch.tensor(alpha, dtype=torch.float64)


def ref_cos(a, b):
    return float(sum(x * y for x, y in zip(a, b)) / (math.sqrt(sum(x * x for x in a)) * math.sqrt(sum(y * y for y in b))))


def ref_word_score(e, v, gamma1, gamma2, reference_form=False):
    "eq. 10 for one caption of real words and one image"
    c, _ = ref_region_context(e, v, gamma1)
    r = [ref_cos(c[:, i].tolist(), e[:, i].tolist()) for i in range(e.shape[1])]
    lse = math.log(sum(math.exp(gamma2 * x) for x in r))
    return lse if reference_form else lse / gamma2


def ref_losses(scores, gamma3, class_ids=None):
    "eqs. 11-12, sums over the batch; same-class negatives dropped when class_ids is given"
    M = len(scores); l1 = l2 = 0.0
    keep = lambda i, j: class_ids is None or i == j or class_ids[i] != class_ids[j]
    for i in range(M):
        p1 = math.exp(gamma3 * scores[i][i]) / sum(math.exp(gamma3 * scores[i][j]) for j in range(M) if keep(i, j))
        p2 = math.exp(gamma3 * scores[i][i]) / sum(math.exp(gamma3 * scores[j][i]) for j in range(M) if keep(j, i))
        l1 -= math.log(p1); l2 -= math.log(p2)
    return l1, l2


@pytest.fixture
def batch():
    g = torch.Generator().manual_seed(0)
    B, D, T, R = 5, 6, 7, 9
    lengths = torch.tensor([7, 3, 5, 1, 4])
    e = torch.randn(B, D, T, generator=g, dtype=torch.float64) * (torch.arange(T) < lengths[:, None])[:, None]
    v = torch.randn(B, D, R, generator=g, dtype=torch.float64)
    return e, v, lengths


# ---------------------------------------------------------------- eqs. 7-9
def test_region_context_matches_loops(batch):
    e, v, lengths = batch
    for b in range(len(e)):
        L = int(lengths[b])
        c, alpha = region_context(e[b:b + 1, :, :L], v[b:b + 1], G1)        # one caption length at a time
        c_ref, a_ref = ref_region_context(e[b, :, :L], v[b], G1)
        torch.testing.assert_close(c[0], c_ref); torch.testing.assert_close(alpha[0], a_ref)


def test_region_context_mask_equals_cutting_padding(batch):
    e, v, lengths = batch
    e = e.clone(); e[:, :, 5:] = 3.0                                     # garbage in padding must not matter
    mask = torch.arange(e.shape[-1]) < lengths[:, None]
    c, alpha = region_context(e, v, G1, mask)
    for b in range(len(e)):
        L = int(lengths[b])
        c_b, a_b = region_context(e[b:b + 1, :, :L], v[b:b + 1], G1)
        torch.testing.assert_close(c[b, :, :L], c_b[0]); torch.testing.assert_close(alpha[b, :L], a_b[0])
        assert alpha[b, L:].abs().sum() == 0 and c[b, :, L:].abs().sum() == 0


def test_region_context_rejects_mismatched_D():
    with pytest.raises(ValueError, match='feature dim D'):
        region_context(torch.randn(2, 3, 4), torch.randn(2, 5, 6))


# ---------------------------------------------------------------- eq. 10
@pytest.mark.parametrize('reference_form', [False, True])
def test_word_match_scores_matches_loops(batch, reference_form):
    e, v, lengths = batch
    got = word_match_scores(e, v, lengths, G1, G2, reference_form=reference_form)
    want = torch.tensor([[ref_word_score(e[j, :, :int(lengths[j])], v[i], G1, G2, reference_form) for j in range(len(e))]
                         for i in range(len(v))], dtype=torch.float64)
    torch.testing.assert_close(got, want)


def test_word_match_scores_reference_form_is_gamma2_times_paper(batch):
    e, v, lengths = batch
    torch.testing.assert_close(word_match_scores(e, v, lengths, G1, 3.0, reference_form=True),
                               3.0 * word_match_scores(e, v, lengths, G1, 3.0))


def test_word_match_scores_rectangular_grid_and_alpha(batch):
    e, v, lengths = batch
    full = word_match_scores(e, v, lengths)
    torch.testing.assert_close(word_match_scores(e[:2], v.view(5, 6, 3, 3), lengths[:2]), full[:, :2])   # (Bi, Bc), 4-D v
    torch.testing.assert_close(word_match_scores(e, v[3:], lengths), full[3:])
    _, alpha = word_match_scores(e, v, lengths, return_alpha=True)
    for b in range(len(e)):
        L = int(lengths[b])
        torch.testing.assert_close(alpha[b, :L], ref_region_context(e[b, :, :L], v[b], G1)[1])
    with pytest.raises(ValueError, match='as many images as captions'):
        word_match_scores(e, v[:3], lengths, return_alpha=True)
    with pytest.raises(ValueError, match='lengths'):
        word_match_scores(e, v, torch.tensor([8, 1, 1, 1, 1]))


def test_word_match_scores_gradients_match_loop(batch):
    e, v, lengths = batch
    e1, v1 = e.clone().requires_grad_(), v.clone().requires_grad_()
    word_match_scores(e1, v1, lengths).pow(2).sum().backward()
    e2, v2 = e.clone().requires_grad_(), v.clone().requires_grad_()
    loop = torch.stack([torch.stack([word_match_scores(e2[j:j + 1, :, :int(lengths[j])], v2[i:i + 1], lengths[j:j + 1])[0, 0]
                                     for j in range(len(e))]) for i in range(len(v))])
    loop.pow(2).sum().backward()
    torch.testing.assert_close(e1.grad, e2.grad); torch.testing.assert_close(v1.grad, v2.grad)


# ---------------------------------------------------------------- eq. 13
def test_sentence_match_scores_matches_loops():
    g = torch.Generator().manual_seed(1)
    v_bar, e_bar = torch.randn(4, 8, generator=g, dtype=torch.float64), torch.randn(3, 8, generator=g, dtype=torch.float64)
    want = torch.tensor([[ref_cos(v_bar[i].tolist(), e_bar[j].tolist()) for j in range(3)] for i in range(4)], dtype=torch.float64)
    torch.testing.assert_close(sentence_match_scores(v_bar, e_bar), want)
    with pytest.raises(ValueError, match='same D'):
        sentence_match_scores(v_bar, torch.randn(3, 7))


# ---------------------------------------------------------------- eqs. 11-12
def test_matching_losses_reductions_match_loops():
    scores = torch.rand(6, 6, generator=torch.Generator().manual_seed(2), dtype=torch.float64)
    l1, l2 = ref_losses(scores.tolist(), G3)
    s1, s2 = matching_losses(scores, G3, reduction='sum')
    assert s1.item() == pytest.approx(l1, rel=1e-9) and s2.item() == pytest.approx(l2, rel=1e-9)
    m1, m2 = matching_losses(scores, G3)                                   # default: mean
    assert m1.item() == pytest.approx(l1 / 6, rel=1e-9) and m2.item() == pytest.approx(l2 / 6, rel=1e-9)
    n1, n2 = matching_losses(scores, G3, reduction='none')
    assert n1.shape == (6,) and n1.sum().item() == pytest.approx(l1, rel=1e-9) and n2.sum().item() == pytest.approx(l2, rel=1e-9)
    # direction: loss_1 is the softmax over captions (rows), loss_2 over images (columns)
    assert matching_losses(scores.t(), G3, 'sum')[0].item() == pytest.approx(l2, rel=1e-9)
    with pytest.raises(ValueError, match='reduction'): matching_losses(scores, reduction='avg')
    with pytest.raises(ValueError, match='square'): matching_losses(scores[:5])


def test_matching_losses_class_ids_mask():
    scores = torch.rand(6, 6, generator=torch.Generator().manual_seed(3), dtype=torch.float64)
    cls = torch.tensor([0, 1, 0, 2, 1, 0])
    l1, l2 = ref_losses(scores.tolist(), G3, cls.tolist())
    s1, s2 = matching_losses(scores, G3, 'sum', class_ids=cls)
    assert s1.item() == pytest.approx(l1, rel=1e-9) and s2.item() == pytest.approx(l2, rel=1e-9)
    # a masked (same-class, non-matching) score cannot change the losses; an unmasked one does
    bumped = scores.clone(); bumped[0, 2] += 5; bumped[5, 0] += 5
    torch.testing.assert_close(torch.stack(matching_losses(bumped, G3, class_ids=cls)), torch.stack(matching_losses(scores, G3, class_ids=cls)))
    bumped[0, 1] += 5
    assert matching_losses(bumped, G3, class_ids=cls)[0] > matching_losses(scores, G3, class_ids=cls)[0]
    # all one class: only the positive is left in each softmax, the loss is exactly 0
    assert torch.stack(matching_losses(scores, G3, class_ids=torch.zeros(6))).abs().max() == 0
    with pytest.raises(ValueError, match='class_ids'): matching_losses(scores, class_ids=torch.zeros(5))


# ---------------------------------------------------------------- eq. 14
def test_damsm_loss_is_sum_of_the_four(batch):
    e, v, lengths = batch
    g = torch.Generator().manual_seed(4)
    e_bar, v_bar = torch.randn(5, 6, generator=g, dtype=torch.float64), torch.randn(5, 6, generator=g, dtype=torch.float64)
    cls = torch.tensor([0, 1, 0, 2, 3])
    out = damsm_loss(e, e_bar, v, v_bar, lengths, G1, G2, G3, class_ids=cls, reduction='sum')
    w = [[ref_word_score(e[j, :, :int(lengths[j])], v[i], G1, G2) for j in range(5)] for i in range(5)]
    s = [[ref_cos(v_bar[i].tolist(), e_bar[j].tolist()) for j in range(5)] for i in range(5)]
    want = [*ref_losses(w, G3, cls.tolist()), *ref_losses(s, G3, cls.tolist())]
    for got, ref in zip(out[1:5], want): assert got.item() == pytest.approx(ref, rel=1e-7)
    assert out.total.item() == pytest.approx(sum(want), rel=1e-7)
    assert out.alpha.shape == (5, 7, 9)


# ---------------------------------------------------------------- DAMSM module, config, checkpoints
def tiny_model(seed=0):
    torch.manual_seed(seed)
    cfg = DAMSMConfig(vocab_size=12, emb_dim=8, D=16, ndf=4, image_size=64)
    return DAMSM(cfg), Vocab(['<pad>', '<unk>'] + [f'w{i}' for i in range(10)])


def tiny_batch():
    g = torch.Generator().manual_seed(5)
    caps = torch.randint(2, 12, (4, 6), generator=g); lens = torch.tensor([6, 4, 2, 5])
    caps[torch.arange(6) >= lens[:, None]] = 0
    return torch.rand(4, 3, 64, 64, generator=g) * 2 - 1, caps, lens


def test_config_from_dict_checks_keys_and_types():
    assert DAMSMConfig.from_dict({'gamma1': 5, 'backend': 'cnn'}).gamma1 == 5.0
    with pytest.raises(ValueError, match='unknown key'): DAMSMConfig.from_dict({'gamma_1': 5})
    with pytest.raises(TypeError, match='use_class_ids must be bool'): DAMSMConfig.from_dict({'use_class_ids': 1})
    with pytest.raises(ValueError, match='reduction'): DAMSMConfig.from_dict({'reduction': 'avg'})


def test_save_load_round_trip(tmp_path):
    model, vocab = tiny_model()
    imgs, caps, lens = tiny_batch()
    model.train(); model(imgs, caps, lens).total.backward()     # update batch-norm statistics so they are non-trivial
    path = save_damsm(tmp_path / 'sub' / 'damsm.safetensors', model.text_enc, model.img_enc, vocab, model.config)
    assert sorted(p.name for p in path.parent.iterdir()) == ['damsm.safetensors']
    back, vocab2 = load_damsm(path)
    assert vocab2 == vocab and back.config == model.config and not back.training
    for name in ('text_enc', 'img_enc'):
        a, b = getattr(model, name).state_dict(), getattr(back, name).state_dict()
        assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    model.eval()
    with torch.no_grad(): torch.testing.assert_close(back(imgs, caps, lens).total, model(imgs, caps, lens).total)
    # overwrite in place works and stays atomic
    save_damsm(path, model.text_enc, model.img_enc, vocab, model.config)
    assert sorted(p.name for p in path.parent.iterdir()) == ['damsm.safetensors']


def test_save_load_errors(tmp_path):
    model, vocab = tiny_model()
    with pytest.raises(ValueError, match='vocab_size'):
        save_damsm(tmp_path / 'x.safetensors', model.text_enc, model.img_enc, Vocab(['<pad>', '<unk>', 'a']), model.config)
    with pytest.raises(FileNotFoundError, match='does not exist'): load_damsm(tmp_path / 'nope.safetensors')
    bad = tmp_path / 'bad.safetensors'; bad.write_bytes(b'\x00' * 20)
    with pytest.raises(ValueError, match='not a safetensors file'): load_damsm(bad)
    from safetensors.torch import save_file
    other = tmp_path / 'other.safetensors'; save_file({'x': torch.zeros(2)}, str(other), metadata={'format': 'something else'})
    with pytest.raises(ValueError, match='not a DAMSM checkpoint'): load_damsm(other)
    # weights that do not fit the config are reported, not silently ignored
    p = save_damsm(tmp_path / 'ok.safetensors', model.text_enc, model.img_enc, vocab, model.config)
    from safetensors import safe_open
    from safetensors.torch import load_file
    with safe_open(str(p), framework='pt') as f: meta = f.metadata()
    cfg = json.loads(meta['config']); cfg['D'] = 32; meta['config'] = json.dumps(cfg)
    save_file(load_file(str(p)), str(tmp_path / 'wrong.safetensors'), metadata=meta)
    with pytest.raises(ValueError, match='do not fit'): load_damsm(tmp_path / 'wrong.safetensors')


def test_freeze_keeps_input_gradients():
    model, _ = tiny_model()
    imgs, caps, lens = tiny_batch()
    model.freeze()
    imgs = imgs.clone().requires_grad_()
    model(imgs, caps, lens).total.backward()
    assert imgs.grad is not None and imgs.grad.abs().sum() > 0
    assert all(p.grad is None for p in model.parameters())


# ---------------------------------------------------------------- Inception backend
def test_inception_missing_torchvision_says_what_to_do(monkeypatch):
    monkeypatch.setitem(sys.modules, 'torchvision', None)               # makes `import torchvision...` raise ImportError
    monkeypatch.setitem(sys.modules, 'torchvision.models', None)
    with pytest.raises(ImportError, match='CNNImageEncoder'):
        InceptionImageEncoder(D=16, weights=None)


def test_inception_encoder_shapes_frozen_trunk_and_local_weights(tmp_path):
    tv = pytest.importorskip('torchvision', reason='torchvision is optional and has no build for the CPU torch 2.13 '
                             'installed here; the Inception backend is tested where torchvision is installed')
    torch.manual_seed(0)
    enc = InceptionImageEncoder(D=16, weights=None)                     # random weights: never downloads in tests
    v, v_bar = enc(torch.rand(2, 3, 64, 64) * 2 - 1)
    assert v.shape == (2, 16, 17, 17) and v_bar.shape == (2, 16)
    trainable = {n for n, p in enc.named_parameters() if p.requires_grad}
    assert trainable == {'local_proj.weight', 'global_proj.weight', 'global_proj.bias'}
    enc.train(); assert not enc.local_trunk.training and not enc.global_trunk.training and enc.local_proj.training
    # weights from a local file (what an offline user does with a downloaded torchvision checkpoint)
    net = tv.models.inception_v3(weights=None, aux_logits=True, init_weights=True)
    torch.save(net.state_dict(), tmp_path / 'inception.pth')
    enc2 = InceptionImageEncoder(D=16, weights=tmp_path / 'inception.pth')
    torch.testing.assert_close(enc2.local_trunk[0].conv.weight, net.Conv2d_1a_3x3.conv.weight)
    torch.testing.assert_close(enc2.global_trunk[-1].branch_pool.conv.weight, net.Mixed_7c.branch_pool.conv.weight)
    with pytest.raises(FileNotFoundError, match='not found'):
        InceptionImageEncoder(D=16, weights=tmp_path / 'missing.pth')


# ---------------------------------------------------------------- measurements on hand-built inputs
def test_r_precision_extremes_and_probability():
    N = 150
    assert r_precision(torch.eye(N), n_candidates=100, n_draws=3)[0] == 1.0          # true caption always best
    assert r_precision(-torch.eye(N), n_candidates=100, n_draws=3)[0] == 0.0         # always worst
    # each image's true caption is beaten by exactly m = 20 other captions: it wins iff none of them is among
    # the 99 negatives drawn from the N - 1 others, probability C(N-1-m, 99) / C(N-1, 99)
    m = 20
    scores = torch.zeros(N, N)
    for i in range(N):
        others = [j for j in range(N) if j != i]
        scores[i, others[:m]] = 2.0; scores[i, i] = 1.0
    p = math.comb(N - 1 - m, 99) / math.comb(N - 1, 99)
    mean, std, rates = r_precision(scores, n_candidates=100, n_draws=200, seed=0)
    assert rates.shape == (200,)
    assert abs(mean - p) < 4 * math.sqrt(p * (1 - p) / (N * 200)) + 1e-9
    with pytest.raises(ValueError, match='candidates'):
        r_precision(torch.eye(50), n_candidates=100)


def test_r_precision_other_classes_only():
    N = 130
    cls = torch.arange(N) // 2                                    # pairs of images share a class
    scores = torch.eye(N)
    scores[torch.arange(N), torch.arange(N) ^ 1] = 5.0            # the same-class partner's caption scores higher
    assert r_precision(scores, n_draws=3, class_ids=cls)[0] == 1.0
    mean = r_precision(scores, n_draws=100)[0]                    # partner drawn with probability 99 / 129
    assert abs(mean - (1 - 99 / 129)) < 0.02
    with pytest.raises(ValueError, match='possible negative'):
        r_precision(scores, class_ids=torch.arange(N) // 40)      # 40 per class: only 90 other-class captions


def test_point_hits_by_hand():
    alpha = torch.zeros(3, 4, 4)
    alpha[0, 0, 0] = 1; alpha[1, 3, 3] = 1; alpha[2, 1, 2] = 1
    masks = torch.zeros(3, 16, 16, dtype=torch.bool)
    masks[0, 1:3, 1:3] = True                  # inside cell (0, 0)            -> hit
    masks[1, 0:4, 0:8] = True                  # cells (0, 0), (0, 1)          -> miss at (3, 3)
    masks[2, 5:6, 8:13] = True                 # cells (1, 2), (1, 3)          -> hit at (1, 2)
    hit, chance, area = point_hits(alpha, masks)
    assert hit.tolist() == [True, False, True]
    torch.testing.assert_close(chance, torch.tensor([1 / 16, 2 / 16, 2 / 16]))
    torch.testing.assert_close(area, torch.tensor([4 / 256, 32 / 256, 5 / 256]))


def test_mention_positions_grammar():
    m = [('size', 'small'), ('crown_color', 'red'), ('wing_color', 'red'), ('belly_color', 'white')]
    toks = 'a small bird with a crimson cap red wing feathers and its breast is white'.split()
    assert mention_positions(toks, m) == [(5, 'crown', 'colour'), (6, 'crown', 'part'), (7, 'wing', 'colour'),
                                          (8, 'wing', 'part'), (12, 'belly', 'part'), (14, 'belly', 'colour')]
    # a word the caption was cut to 18 tokens without is simply not scored
    assert mention_positions('a bird with red'.split(), [('crown_color', 'red')]) == []


class FakeTruth:
    def __init__(self, mentions): self._m = mentions
    def mentions(self, key, cap_idx): return self._m[(key, cap_idx)]


def test_pointing_game_end_to_end_by_hand():
    # 2 images, 2x2 regions, D = 3. Word features and region features are chosen so that each word's attention
    # peaks where we want it: image 0 puts "red" and "crown" on region 0 (top-left), image 1 puts them on region 3.
    vocab = Vocab(['<pad>', '<unk>', 'a', 'red', 'crown'])
    caption = torch.tensor([[2, 3, 4], [2, 3, 4]]); cap_len = torch.tensor([3, 3])
    e = torch.zeros(2, 3, 3); e[:, 0, 0] = 1.; e[:, 1, 1] = 1.; e[:, 1, 2] = 1.   # 'a' ~ x, 'red', 'crown' ~ y
    v = torch.zeros(2, 3, 2, 2)
    v[0, 1, 0, 0] = 8.; v[1, 1, 1, 1] = 8.                                         # the y-region
    v[:, 0] += 1.                                                                  # everything a little x
    masks = torch.zeros(2, len(PART_NAMES), 32, 32, dtype=torch.bool)
    crown = PART_NAMES.index('crown')
    masks[0, crown, 2:6, 2:6] = True                                               # top-left cell: hit
    masks[1, crown, 2:6, 2:6] = True                                               # image 1 attends bottom-right: miss
    enc = dict(v=v, words_emb=e, caption=caption, cap_len=cap_len, key=['k0', 'k1'], cap_idx=torch.tensor([0, 3]),
               masks=masks)
    truth = FakeTruth({('k0', 0): [('crown_color', 'red')], ('k1', 3): [('crown_color', 'red')]})
    rows = pointing_game(enc, truth, vocab, gamma1=4.0)
    by = {(r['part'], r['words']): r for r in rows}
    assert by[('crown', 'colour')]['n'] == 2 and by[('crown', 'colour')]['hit'] == 0.5
    assert by[('crown', 'part')]['hit'] == 0.5 and by[('all', 'part')]['n'] == 2
    assert by[('crown', 'part')]['chance'] == pytest.approx(0.25) and by[('crown', 'part')]['area'] == pytest.approx(16 / 1024)
    with pytest.raises(ValueError, match='with_truth'):
        pointing_game({k: x for k, x in enc.items() if k != 'masks'}, truth, vocab)


def test_word_match_all_is_eq_10_for_every_pair():
    "The all-pairs form (no context vectors: c.e = sum_r alpha s, |c|^2 = alpha^T V^T V alpha) equals the direct one"
    from attngan_edu.damsm import word_match_all, word_match_scores, pair_scores
    g = torch.Generator().manual_seed(1)
    e, v, L = torch.randn(30, 8, 10, generator=g), torch.randn(20, 8, 3, 5, generator=g), torch.randint(1, 11, (30,), generator=g)
    torch.testing.assert_close(word_match_all(e, v, L, 5.0, 3.0), word_match_scores(e, v, L, 5.0, 3.0), rtol=1e-5, atol=1e-5)
    enc = dict(words_emb=e[:20], v=v, cap_len=L[:20])
    torch.testing.assert_close(pair_scores(enc, 5.0, 3.0, chunk=(3, 7)), word_match_scores(e[:20], v, L[:20], 5.0, 3.0), rtol=1e-5, atol=1e-5)
    with pytest.raises(ValueError, match='chunk must be'):
        pair_scores(enc, chunk=(0, 128))
    with pytest.raises(ValueError, match='chunk must be'):
        pair_scores(enc, chunk=16)
