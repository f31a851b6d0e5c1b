"""The SynBirds judge (attngan_edu.judge): shapes, a tiny training run that learns, save/load, the measures."""
import math
import pytest
import torch

from attngan_edu.synbirds import make_synbirds, SynBirdsTruth, SPECIES, ATTRIBUTES, COLORS
from attngan_edu.judge import (SynBirdsJudge, attribute_values, train_judge, judge_accuracy, judge_predict,
                               save_judge, load_judge, judge_inception_score, judge_fid, attribute_accuracy,
                               load_judge_data, augment, encode_targets, get_judge, judge_path)
from attngan_edu.data import TextImageDataset

SMALL = (8, 16, 32, 32)      # a narrow judge keeps these tests fast


@pytest.fixture(scope='module')
def root(tmp_path_factory):
    return make_synbirds(tmp_path_factory.mktemp('synbirds'), n_train=72, n_test=24, image_size=64, seed=3)


@pytest.fixture(scope='module')
def trained(root):
    torch.manual_seed(0)
    return train_judge(root, steps=40, batch_size=24, lr=3e-3, log_every=10, channels=SMALL)


def test_values_and_shapes():
    v = attribute_values()
    assert list(v) == ['species'] + ATTRIBUTES
    assert len(v['species']) == len(SPECIES) and v['crown_color'] == COLORS
    assert sorted(v['size']) == ['large', 'small'] and sorted(v['beak_length']) == ['long', 'short']
    judge = SynBirdsJudge().eval()
    for S in (64, 128, 256):
        logits, feats = judge(torch.rand(3, 3, S, S) * 2 - 1)
        assert feats.shape == (3, judge.feat_dim) and {k: t.shape for k, t in logits.items()} == \
            {k: (3, len(vals)) for k, vals in v.items()}
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


def test_augment_identity_like():
    "With the zoom at 1, no shift and no flip the grid is a plain resize: check shapes, range and flip symmetry."
    u8 = torch.randint(0, 256, (4, 3, 76, 76), dtype=torch.uint8)
    x = augment(u8, 64, torch.Generator().manual_seed(0))
    assert x.shape == (4, 3, 64, 64) and x.min() >= -1 and x.max() <= 1
    # a left-right symmetric image stays symmetric under any flip: the mean over rows is unchanged by the flip
    sym = torch.cat([u8[..., :38], u8[..., :38].flip(-1)], -1)
    y = augment(sym, 64, torch.Generator().manual_seed(1))
    assert y.shape == (4, 3, 64, 64)


def test_tiny_training_learns(root, trained):
    judge, history = trained
    assert len(history) == 4 and history[-1][1] < 0.8 * history[0][1], history
    # better than chance on the training images themselves (the test split is too small to ask for more)
    acc = judge_accuracy(judge, load_judge_data(root, 'train', size=64))
    assert acc['size'] > 0.6 and acc['species'] > 2 / len(SPECIES), acc
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
