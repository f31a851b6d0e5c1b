"""The SynBirds judge (attngan_edu.judge): shapes, a tiny training run that learns, save/load, the measures."""
import math
import pytest
import torch

from attngan_edu.synbirds import make_synbirds, SynBirdsTruth, SPECIES, ATTRIBUTES, COLORS, PART_NAMES
from attngan_edu.judge import (SynBirdsJudge, attribute_values, train_judge, judge_accuracy, judge_predict,
                               save_judge, load_judge, judge_inception_score, judge_fid, attribute_accuracy,
                               load_judge_data, augment, encode_targets, get_judge, judge_path,
                               part_class_weights, judge_loss)
from attngan_edu.data import TextImageDataset

SMALL = (8, 16, 32, 32)      # a narrow judge keeps these tests fast


@pytest.fixture(scope='module')
def root(tmp_path_factory):
    return make_synbirds(tmp_path_factory.mktemp('synbirds'), n_train=72, n_test=24, image_size=64, seed=3)


@pytest.fixture(scope='module')
def trained(root):
    torch.manual_seed(0)
    return train_judge(root, steps=60, batch_size=24, lr=1e-2, log_every=10, channels=SMALL)


def test_values_and_shapes():
    v = attribute_values()
    assert list(v) == ['species'] + ATTRIBUTES
    assert len(v['species']) == len(SPECIES) and v['crown_color'] == COLORS
    assert sorted(v['size']) == ['large', 'small'] and sorted(v['beak_length']) == ['long', 'short']
    judge = SynBirdsJudge().eval()
    for S in (64, 128, 256):
        logits, feats = judge(torch.rand(3, 3, S, S) * 2 - 1)
        assert feats.shape == (3, judge.feat_dim) and {k: t.shape for k, t in logits.items() if k != 'parts'} == \
            {k: (3, len(vals)) for k, vals in v.items()}
        assert logits['parts'].shape == (3, len(PART_NAMES) + 1, 32, 32)
    plain = SynBirdsJudge(part_pooling=False).eval()
    assert plain(torch.zeros(1, 3, 64, 64))[0]['crown_color'].shape == (1, len(COLORS))
    with pytest.raises(ValueError, match=r'\(B, 3, H, W\)'): judge(torch.zeros(2, 1, 64, 64))


def test_encode_targets_and_errors():
    v = attribute_values()
    attrs = [dict(SPECIES[5][1]), dict(SPECIES[0][1])]
    t = encode_targets(v, [5, 0], attrs)
    assert t['species'].tolist() == [5, 0]
    assert t['crown_color'].tolist() == [COLORS.index(attrs[0]['crown_color']), COLORS.index(attrs[1]['crown_color'])]
    with pytest.raises(ValueError, match='size'): encode_targets(v, [0], [dict(attrs[0], size='huge')])
    with pytest.raises(KeyError, match='beak_length'):
        encode_targets(v, [0], [{k: x for k, x in attrs[0].items() if k != 'beak_length'}])


def test_load_judge_data_matches_truth(root):
    d = load_judge_data(root, 'test', size=64)
    truth = SynBirdsTruth(root)
    assert d['imgs'].dtype == torch.uint8 and d['imgs'].shape == (24, 3, 64, 64)
    for i in (0, 7, 23):
        attrs = truth.attributes(d['keys'][i])
        assert attribute_values()['crown_color'][d['targets']['crown_color'][i]] == attrs['crown_color']
        assert attribute_values()['size'][d['targets']['size'][i]] == attrs['size']
    ds = TextImageDataset(root, 'test', base_size=64, branch_num=1)
    assert torch.equal(d['targets']['species'], torch.tensor(ds.class_ids))


def test_augment_keeps_labels_aligned():
    "Images whose grey level encodes the label map: after augment (zoom, shift, flip) image and labels still agree."
    g = torch.Generator().manual_seed(0)
    blocks = torch.randint(0, 10, (16, 1, 5, 5), generator=g).float()
    labels = torch.nn.functional.interpolate(blocks, size=76, mode="nearest")[:, 0].to(torch.uint8)   # ~15-px blocks
    u8 = (labels * 25).to(torch.uint8)[:, None].expand(-1, 3, -1, -1).contiguous()
    x, lab = augment(u8, 64, torch.Generator().manual_seed(1), labels)
    assert x.shape == (16, 3, 64, 64) and lab.shape == (16, 32, 32) and lab.dtype == torch.long
    grey = torch.nn.functional.avg_pool2d((x[:, :1] + 1) * 127.5, 2)[:, 0]          # (16, 32, 32) back to 0..225
    agree = ((grey / 25).round().long() == lab).float().mean().item()
    assert agree > 0.8, agree
    # and a flipped copy is not aligned: the check above can fail
    assert ((grey.flip(-1) / 25).round().long() == lab).float().mean().item() < 0.5


def test_part_class_weights_and_loss():
    labels = torch.tensor([[0, 0, 0, 1]] * 4)                   # 75% background, 25% part 1, nothing else
    w = part_class_weights(labels, n_classes=3)
    freq = torch.tensor([0.75, 0.25, 1e-4])
    assert torch.allclose(w, freq ** -0.5 / (freq ** -0.5 * freq).sum(), rtol=1e-5)
    assert w[1] / w[0] == pytest.approx(3 ** 0.5, rel=1e-5)
    logits = {'size': torch.tensor([[2., 0.]]), 'parts': torch.zeros(1, 3, 2, 2)}
    targets = {'size': torch.tensor([0]), 'parts': torch.zeros(1, 2, 2, dtype=torch.long)}
    expect = torch.nn.functional.cross_entropy(logits['size'], targets['size']) + math.log(3)
    assert judge_loss(logits, targets).item() == pytest.approx(expect.item(), rel=1e-6)


def test_tiny_training_learns(root, trained):
    judge, history = trained
    assert len(history) == 6 and history[-1][1] < 0.7 * history[0][1], history
    # well above chance on the training images themselves (the 24 test images are too few to ask more of them);
    # measured when written: species 0.82 (chance 1/24), size 0.89
    acc = judge_accuracy(judge, load_judge_data(root, 'train', size=64))
    assert acc['species'] > 0.3 and acc['size'] > 0.7, acc
    assert set(acc) == set(attribute_values())


def test_training_is_reproducible(root):
    a, ha = train_judge(root, steps=3, batch_size=8, log_every=1, seed=7, channels=SMALL)
    b, hb = train_judge(root, steps=3, batch_size=8, log_every=1, seed=7, channels=SMALL)
    assert ha == hb
    with pytest.raises(ValueError, match='steps'): train_judge(root, steps=0)


def test_judge_accuracy_accepts_dataset(root, trained):
    judge, _ = trained
    ds = TextImageDataset(root, 'test', base_size=64, branch_num=1, with_truth=True)
    assert judge_accuracy(judge, ds) == judge_accuracy(judge, load_judge_data(root, 'test', size=64))


def test_save_load_round_trip(tmp_path, trained):
    judge, _ = trained
    p = save_judge(judge, tmp_path / 'sub' / 'j.pt', info={'note': 'hi', 'acc': {'size': 0.5}})
    assert p.is_file() and not list(p.parent.glob('.*.tmp'))
    back = load_judge(p)
    x = torch.rand(5, 3, 128, 128) * 2 - 1
    la, fa = judge_predict(judge, x); lb, fb = judge_predict(back, x)
    assert torch.allclose(fa, fb) and all(torch.allclose(la[k], lb[k]) for k in la)
    assert back.info == {'note': 'hi', 'acc': {'size': 0.5}} and back.values == judge.values and not back.training
    plain = SynBirdsJudge(channels=SMALL, part_pooling=False)
    assert load_judge(save_judge(plain, tmp_path / 'plain.pt')).part_pooling is False
    # errors name the file
    with pytest.raises(FileNotFoundError, match='missing.pt'): load_judge(tmp_path / 'missing.pt')
    (tmp_path / 'junk.pt').write_bytes(b'not a checkpoint')
    with pytest.raises(ValueError, match='junk.pt'): load_judge(tmp_path / 'junk.pt')
    torch.save({'format': 'something else'}, tmp_path / 'other.pt')
    with pytest.raises(ValueError, match='not a judge file'): load_judge(tmp_path / 'other.pt')


class Evil:
    def __reduce__(self): return (print, ('unpickling ran code',))


def test_load_refuses_pickled_code(tmp_path):
    "weights_only=True: a file that would run code on unpickling is rejected."
    torch.save({'format': 'attngan_edu.judge', 'x': Evil()}, tmp_path / 'evil.pt')
    with pytest.raises(ValueError, match='evil.pt'): load_judge(tmp_path / 'evil.pt')


class ConstantJudge(SynBirdsJudge):
    "Always answers the species / attribute values given; features are the image means (for FID)."
    def __init__(self, answer):
        super().__init__()
        self.answer = answer
    def forward(self, imgs):
        B = imgs.shape[0]
        logits = {k: torch.zeros(B, len(v)) for k, v in self.values.items()}
        for k, val in self.answer.items(): logits[k][:, self.values[k].index(val)] = 10.
        return logits, imgs.flatten(2).mean(2)          # (B, 3)


def test_attribute_accuracy_hand_made():
    judge = ConstantJudge({'wing_color': 'blue', 'beak_length': 'long'})
    imgs = torch.zeros(4, 3, 64, 64)
    mentions = [[('wing_color', 'blue')],                               # 1/1
                [('wing_color', 'red'), ('beak_length', 'long')],       # 1/2
                [('beak_length', 'short'), ('wing_color', 'blue')],     # 1/2
                []]                                                      # nothing mentioned
    assert attribute_accuracy(judge, imgs, mentions) == pytest.approx(3 / 5)
    per = attribute_accuracy(judge, imgs, mentions, per_attribute=True)
    assert per == pytest.approx({'all': 3 / 5, 'wing_color': 2 / 3, 'beak_length': 1 / 2})
    with pytest.raises(ValueError, match='one list per image'): attribute_accuracy(judge, imgs, mentions[:2])
    with pytest.raises(ValueError, match='no'): attribute_accuracy(judge, imgs, [[], [], [], []])


def test_attribute_accuracy_with_truth_mentions(root, trained):
    "On real images with their own captions' mentions, per-attribute scores equal the judge's accuracy on those images."
    judge, _ = trained
    d = load_judge_data(root, 'test', size=64)
    truth = SynBirdsTruth(root)
    mentions = [truth.mentions(k, 0) for k in d['keys']]
    per = attribute_accuracy(judge, d['imgs'], mentions, per_attribute=True)
    logits, _ = judge_predict(judge, d['imgs'])
    for a in per:
        if a == 'all': continue
        rows = [i for i, ms in enumerate(mentions) if any(m[0] == a for m in ms)]
        expect = (logits[a][rows].argmax(1) == d['targets'][a][rows]).float().mean().item()
        assert per[a] == pytest.approx(expect)


def test_judge_is_and_fid():
    species = attribute_values()['species']
    judge = ConstantJudge({'species': species[3]})
    imgs = torch.rand(40, 3, 64, 64) * 2 - 1
    m, s = judge_inception_score(judge, imgs, splits=4)
    assert m == pytest.approx(1.0, abs=1e-6)                             # one species only: IS = 1
    # features are channel means: shifting the fake images' red channel moves the FID by exactly the shift²
    fake = imgs.clone(); fake[:, 0] += 0.5
    assert judge_fid(judge, imgs, fake) == pytest.approx(0.25, rel=1e-6)
    assert judge_fid(judge, imgs, imgs) == pytest.approx(0.0, abs=1e-9)


def test_get_judge_trains_then_loads(tmp_path, monkeypatch):
    monkeypatch.setenv('ATTNGAN_EDU_DATA', str(tmp_path))
    kw = dict(n_train=48, n_test=24, image_size=64, steps=4, batch_size=8, verbose=False)
    j1 = get_judge(**kw)
    path = judge_path(48, 24, 64, steps=4)
    assert path.is_file() and path.parent.parent == tmp_path
    assert set(j1.info['test_accuracy']) == set(attribute_values())
    j2 = get_judge(**kw)                                                  # loaded, not retrained
    x = torch.rand(3, 3, 64, 64) * 2 - 1
    assert torch.allclose(judge_predict(j1, x)[1], judge_predict(j2, x)[1])
    assert j2.info['steps'] == 4


def test_get_judge_trains_under_no_grad(tmp_path):
    "evaluate asks for the judge inside torch.no_grad(); training it there must still work (it used to crash)"
    with torch.no_grad():
        j = get_judge(n_train=48, n_test=24, image_size=64, steps=3, batch_size=8, verbose=False, root=tmp_path)
    assert judge_path(48, 24, 64, steps=3, root=tmp_path).is_file() and j.info['steps'] == 3
