"""IS and FID (attngan_edu.metrics) against hand computations and torchmetrics 1.x with a custom feature network.

Tolerances: IS agrees with torchmetrics to 1e-4 relative (torchmetrics works in float32, we in float64);
FID agrees to 1e-4 relative on well-conditioned cases (torchmetrics accumulates in float64; `set_dtype(float64)` also
keeps its result from being cast back to float32), and to 1e-2 absolute on the rank-deficient case, where we add
eps·I and torchmetrics takes the real part of complex square roots."""
import math, warnings
import pytest
import torch
import torch.nn as nn

from attngan_edu.metrics import (inception_score, frechet_distance, feature_stats, fid_from_features,
                                 sqrtm_psd, trace_sqrt_product)

tm_inception = pytest.importorskip('torchmetrics.image.inception', reason='torchmetrics not installed')
tm_fid = pytest.importorskip('torchmetrics.image.fid', reason='torchmetrics not installed')


class RandomFeatures(nn.Module):
    "A fixed random 'feature network' for uint8 images (B, 3, 16, 16): 4x4 average pooling, a tanh layer, a linear map to d."
    def __init__(self, d, seed=0, hidden=64):
        super().__init__()
        g = torch.Generator().manual_seed(seed)
        self.register_buffer('W1', torch.randn(48, hidden, generator=g))
        self.register_buffer('W2', torch.randn(hidden, d, generator=g))
    def forward(self, x):
        # FrechetInceptionDistance probes the module with a uint8 batch, and set_dtype() may make the buffers float64
        x = x.to(self.W1.dtype) / 127.5 - 1
        pooled = nn.functional.avg_pool2d(x, 4).flatten(1)             # (B, 48)
        return torch.tanh(pooled @ self.W1) @ self.W2                   # (B, d)


# ---------------------------------------------------------------- Inception Score
def loop_is(probs, splits):
    "Reference with Python loops over splits, images and classes."
    N = len(probs); scores = []
    for i in range(splits):
        part = probs[i * N // splits:(i + 1) * N // splits].tolist()
        K = len(part[0]); p_y = [sum(r[k] for r in part) / len(part) for k in range(K)]
        kl = [sum(r[k] * math.log(r[k] / p_y[k]) for k in range(K) if r[k] > 0) for r in part]
        scores.append(math.exp(sum(kl) / len(kl)))
    m = sum(scores) / splits
    return m, math.sqrt(sum((s - m) ** 2 for s in scores) / splits)


@pytest.mark.parametrize('N,K,splits', [(37, 5, 1), (100, 7, 10), (53, 4, 3)])
def test_is_matches_loops(N, K, splits):
    g = torch.Generator().manual_seed(N)
    probs = (3 * torch.randn(N, K, generator=g)).softmax(1)
    mean, std = inception_score(probs, splits)
    ref_mean, ref_std = loop_is(probs.double(), splits)
    assert mean == pytest.approx(ref_mean, rel=1e-10) and std == pytest.approx(ref_std, rel=1e-8, abs=1e-12)


def test_is_closed_forms():
    K = 6
    perfect = torch.eye(K).repeat(10, 1)                      # each class 10 times, fully confident
    assert inception_score(perfect, 1)[0] == pytest.approx(K)
    assert inception_score(perfect, 2) == pytest.approx((K, 0.0))
    assert inception_score(torch.eye(K)[[2] * 30], 3)[0] == pytest.approx(1.0)   # mode collapse
    assert inception_score(torch.full((30, K), 1 / K), 3)[0] == pytest.approx(1.0)
    # two classes, images 50/50 between "sure class 0" and "sure class 1" with confidence c: I = exp(ln2 - H(c))
    c = 0.9
    probs = torch.tensor([[c, 1 - c], [1 - c, c]]).repeat(20, 1)
    H = -(c * math.log(c) + (1 - c) * math.log(1 - c))
    assert inception_score(probs, 1)[0] == pytest.approx(math.exp(math.log(2) - H), rel=1e-6)


def test_is_bad_input():
    with pytest.raises(ValueError, match='logits'): inception_score(torch.randn(10, 3), 1)
    with pytest.raises(ValueError, match='splits'): inception_score(torch.eye(3), 4)
    with pytest.raises(ValueError, match='2-D'): inception_score(torch.ones(3), 1)


@pytest.mark.parametrize('splits', [1, 10])
@pytest.mark.filterwarnings(r"ignore:std\(\)")
def test_is_vs_torchmetrics(splits):
    "torchmetrics takes logits from the feature net, permutes with torch.randperm, and reports the unbiased std."
    N, K = 200, 8
    net = RandomFeatures(K)
    g = torch.Generator().manual_seed(3)
    imgs = torch.randint(0, 256, (N, 3, 16, 16), generator=g, dtype=torch.uint8)
    with warnings.catch_warnings():
        warnings.simplefilter('ignore')          # "will save all extracted features in buffer"
        metric = tm_inception.InceptionScore(feature=net, splits=splits)
    metric.update(imgs)
    torch.manual_seed(123); perm = torch.randperm(N)          # the permutation compute() will draw
    torch.manual_seed(123); tm_mean, tm_std = metric.compute()
    probs = net(imgs).softmax(1)[perm]
    mean, std = inception_score(probs, splits)
    assert mean > 1.5                                         # the test case is not degenerate
    assert mean == pytest.approx(tm_mean.item(), rel=1e-4)
    if splits > 1:
        unbiased = std * math.sqrt(splits / (splits - 1))
        assert unbiased == pytest.approx(tm_std.item(), rel=1e-3)


# ---------------------------------------------------------------- FID
def test_fid_1d_and_diagonal_by_hand():
    assert frechet_distance(torch.tensor([0.]), torch.tensor([[1.]]), torch.tensor([1.]), torch.tensor([[4.]])) \
        == pytest.approx(2.0, abs=1e-12)
    m1, v1 = torch.tensor([0., 1., 2., -1.]), torch.tensor([1., 4., 9., 0.25])
    m2, v2 = torch.tensor([1., 1., 0., 0.]), torch.tensor([4., 1., 1., 1.])
    hand = sum((a - b) ** 2 + (math.sqrt(s) - math.sqrt(t)) ** 2
               for a, b, s, t in zip(m1.tolist(), m2.tolist(), v1.tolist(), v2.tolist()))
    assert frechet_distance(m1, torch.diag(v1), m2, torch.diag(v2)) == pytest.approx(hand, rel=1e-12)


def test_fid_rotation_closed_form():
    "Σ₂ = R Σ₁ Rᵀ with commuting-free R: for 2-D with Σ₁ = diag(a, b) and a 90° rotation, Σ₂ = diag(b, a)."
    a, b = 4.0, 1.0
    S1 = torch.diag(torch.tensor([a, b])); R = torch.tensor([[0., -1.], [1., 0.]])
    S2 = R @ S1 @ R.T
    assert frechet_distance(torch.zeros(2), S1, torch.zeros(2), S2) == pytest.approx(2 * (math.sqrt(a) - math.sqrt(b)) ** 2)


def test_sqrtm_and_trace():
    g = torch.Generator().manual_seed(0)
    X = torch.randn(50, 6, generator=g, dtype=torch.float64)
    S = torch.cov(X.T)
    r = sqrtm_psd(S)
    assert torch.allclose(r @ r, S, atol=1e-12) and torch.allclose(r, r.T)
    S2 = torch.cov(torch.randn(50, 6, generator=g, dtype=torch.float64).T)
    naive = torch.linalg.eigvals(S @ S2).sqrt().real.sum()
    assert trace_sqrt_product(S, S2).item() == pytest.approx(naive.item(), rel=1e-10)


def test_feature_stats_and_errors():
    f = torch.randn(30, 5)
    mu, sigma = feature_stats(f)
    assert mu.dtype == torch.float64 and sigma.shape == (5, 5)
    assert torch.allclose(sigma, torch.cov(f.double().T), atol=1e-12)
    with pytest.raises(ValueError, match='N >= 2'): feature_stats(torch.randn(1, 5))
    with pytest.raises(ValueError, match=r'\(3, 3\)'): frechet_distance(torch.zeros(3), torch.eye(2), torch.zeros(3), torch.eye(3))
    with pytest.raises(ValueError, match='same dimension'): frechet_distance(torch.zeros(3), torch.eye(3), torch.zeros(2), torch.eye(2))
    with pytest.raises(ValueError, match='finite'): frechet_distance(torch.zeros(2), torch.full((2, 2), float('nan')), torch.zeros(2), torch.eye(2))
    assert fid_from_features(f, f) == pytest.approx(0.0, abs=1e-9)


def tm_fid_value(net, d, real, fake, dtype=torch.float64):
    metric = tm_fid.FrechetInceptionDistance(feature=net, input_img_size=(3, 16, 16), normalize=False)
    metric.set_dtype(dtype)
    metric.update(real, real=True); metric.update(fake, real=False)
    return metric.compute().item()


@pytest.mark.parametrize('d,N', [(4, 300), (16, 500)])
def test_fid_vs_torchmetrics(d, N):
    net = RandomFeatures(d, seed=d)
    g = torch.Generator().manual_seed(d)
    real = torch.randint(0, 256, (N, 3, 16, 16), generator=g, dtype=torch.uint8)
    fake = (torch.randint(0, 200, (N, 3, 16, 16), generator=g) + torch.arange(16).view(1, 1, 1, 16) * 3).to(torch.uint8)
    ours = fid_from_features(net(real), net(fake))
    theirs = tm_fid_value(net, d, real, fake)
    assert ours > 1.0                                           # the two sets really differ
    assert ours == pytest.approx(theirs, rel=1e-4)


def test_fid_near_singular():
    "Fewer samples than dimensions: covariances have rank N-1 < d; we warn, add eps·I, and stay finite and >= 0."
    d, N = 24, 10
    net = RandomFeatures(d, seed=5)                   
    g = torch.Generator().manual_seed(5)
    real = torch.randint(0, 256, (N, 3, 16, 16), generator=g, dtype=torch.uint8)
    fake = torch.randint(0, 256, (N, 3, 16, 16), generator=g, dtype=torch.uint8)
    with pytest.warns(UserWarning, match='singular'):
        ours = fid_from_features(net(real), net(fake))
    theirs = tm_fid_value(net, d, real, fake)
    assert math.isfinite(ours) and ours >= 0
    assert ours == pytest.approx(theirs, abs=1e-2, rel=1e-3)
    # identical singular Gaussians: distance ~0 (the eps·I offset cancels exactly)
    S = torch.diag(torch.tensor([1., 2., 0., 0.]))
    with pytest.warns(UserWarning, match='singular'):
        assert frechet_distance(torch.ones(4), S, torch.ones(4), S) == pytest.approx(0.0, abs=1e-9)
    # singular but different: N(0, diag(1,0)) vs N(0, diag(0,1)) -> 1 + 1 = 2 (up to the eps offset)
    with pytest.warns(UserWarning, match='singular'):
        assert frechet_distance(torch.zeros(2), torch.diag(torch.tensor([1., 0.])),
                                torch.zeros(2), torch.diag(torch.tensor([0., 1.]))) == pytest.approx(2.0, abs=1e-2)


def test_fid_no_warning_when_well_conditioned():
    g = torch.Generator().manual_seed(0)
    with warnings.catch_warnings():
        warnings.simplefilter('error')
        fid_from_features(torch.randn(200, 8, generator=g), torch.randn(200, 8, generator=g))


# ---------------------------------------------------------------- Inception-v3 helpers
from attngan_edu.metrics import inception_features, load_inception_v3, IMAGENET_MEAN, IMAGENET_STD

try:
    import torchvision  # noqa: F401
    HAVE_TV = True
except ImportError:
    HAVE_TV = False


class FakeInception(nn.Module):
    "Stand-in with an `.fc` head that records what it was fed."
    def __init__(self):
        super().__init__()
        self.fc = nn.Linear(3, 2)
        self.seen = []
    def forward(self, x):
        self.seen.append(x)
        return self.fc(x.mean((2, 3)))


def test_inception_features_preprocessing():
    m = FakeInception()
    imgs = torch.zeros(5, 3, 8, 8)             # mid-grey in [-1, 1]
    feats, logits = inception_features(imgs, m, batch_size=2, size=12)
    assert feats.shape == (5, 3) and logits.shape == (5, 2) and len(m.seen) == 3
    assert m.seen[0].shape == (2, 3, 12, 12)
    expect = (0.5 - torch.tensor(IMAGENET_MEAN)) / torch.tensor(IMAGENET_STD)   # grey 0.5 after ImageNet normalisation
    assert torch.allclose(feats, expect.expand(5, 3), atol=1e-6)
    assert torch.allclose(logits, m.fc(feats), atol=1e-6)
    with pytest.raises(ValueError, match='imgs'): inception_features(torch.zeros(2, 1, 8, 8), m)
    with pytest.raises(ValueError, match='fc'): inception_features(imgs, nn.Identity())


@pytest.mark.skipif(HAVE_TV, reason='checks the error message shown when torchvision is missing')
def test_load_inception_v3_without_torchvision():
    with pytest.raises(ImportError, match='torchvision'): load_inception_v3()


@pytest.mark.skipif(not HAVE_TV, reason='torchvision is not installed (optional extra: pip install -e .[inception])')
def test_inception_v3_torchvision(tmp_path):
    m = load_inception_v3(num_classes=10)                        # random init: no download
    torch.save(m.state_dict(), tmp_path / 'inc.pt')
    m2 = load_inception_v3(tmp_path / 'inc.pt', num_classes=10)
    feats, logits = inception_features(torch.rand(2, 3, 64, 64) * 2 - 1, m2)
    assert feats.shape == (2, 2048) and logits.shape == (2, 10)
