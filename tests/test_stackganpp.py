"Tests for attngan_edu.stackganpp: colour statistics, colour consistency, joint losses, generator/discriminator shapes."
import math
import pytest
import torch
import torch.nn.functional as F
from attngan_edu.stackganpp import (StackGANppG, StackGANppD, make_discriminators, d_loss, g_loss, color_stats,
                                    color_consistency_loss, color_gaps, train_step, init_weights)


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)


# ---------------------------------------------------------------- colour statistics
@pytest.mark.parametrize('shape', [(1, 3, 1, 5), (4, 3, 8, 8), (3, 3, 17, 5)])
def test_color_stats_against_torch_cov(shape):
    x = torch.randn(shape, dtype=torch.float64)
    mu, cov = color_stats(x)
    assert mu.shape == (shape[0], 3) and cov.shape == (shape[0], 3, 3)
    for b in range(shape[0]):
        pixels = x[b].reshape(3, -1)                          # (3, N): variables in rows, as torch.cov wants
        torch.testing.assert_close(mu[b], pixels.mean(1))
        # torch.cov's default correction=1 is the unbiased 1/(N-1) form; the paper's Σ divides by N
        torch.testing.assert_close(cov[b], torch.cov(pixels, correction=0))
        if pixels.shape[1] > 1:
            assert not torch.allclose(cov[b], torch.cov(pixels)) or torch.allclose(cov[b], torch.zeros(3, 3, dtype=x.dtype))


def test_color_stats_loop_reference():
    x = torch.rand(2, 3, 3, 4)
    mu, cov = color_stats(x)
    for b in range(2):
        pix = [x[b, :, r, q] for r in range(3) for q in range(4)]
        m = sum(pix) / len(pix)
        c = sum(torch.outer(p - m, p - m) for p in pix) / len(pix)
        torch.testing.assert_close(mu[b], m); torch.testing.assert_close(cov[b], c)


def test_color_stats_rejects_bad_shapes():
    with pytest.raises(ValueError, match=r'\(B, 3, H, W\)'): color_stats(torch.rand(2, 4, 5, 5))
    with pytest.raises(ValueError, match=r'\(B, 3, H, W\)'): color_stats(torch.rand(3, 5, 5))


# ---------------------------------------------------------------- colour-consistency loss
def test_zero_for_identical_statistics():
    x = torch.rand(4, 3, 16, 16) * 2 - 1
    assert color_consistency_loss(x, x).item() == 0.0
    # same pixels in another order: same μ and Σ, so zero although the images differ
    perm = torch.randperm(16 * 16)
    y = x.flatten(2)[:, :, perm].reshape(x.shape)
    assert not torch.equal(x, y)
    assert color_consistency_loss(x, y).item() == pytest.approx(0.0, abs=1e-10)


@pytest.mark.parametrize('sizes', [(64, 16), (32, 8), (7, 13), (1, 32)])
def test_resolution_invariance_constant_image(sizes):
    colour = torch.tensor([[0.3, -0.7, 0.1], [-1.0, 1.0, 0.5]])[:, :, None, None]
    hi = colour.expand(2, 3, sizes[0], sizes[0]); lo = colour.expand(2, 3, sizes[1], sizes[1])
    for red in ('paper', 'reference'):
        assert color_consistency_loss(hi, lo, reduction=red).item() == pytest.approx(0.0, abs=1e-10)


@pytest.mark.parametrize('factor', [2, 4])
def test_resolution_invariance_nearest_upsampled(factor):
    lo = torch.rand(3, 3, 8, 8) * 2 - 1
    hi = F.interpolate(lo, scale_factor=factor, mode='nearest')
    assert color_consistency_loss(hi, lo).item() == pytest.approx(0.0, abs=1e-10)
    # but bilinear upsampling smooths, which lowers the variances: a positive loss
    assert color_consistency_loss(F.interpolate(lo, scale_factor=factor, mode='bilinear'), lo).item() > 1e-4


def test_positive_otherwise_and_formula():
    lo = torch.rand(5, 3, 8, 8) * 2 - 1
    hi = F.interpolate(lo, scale_factor=2, mode='nearest')
    for other in (hi + 0.1, hi * 0.7, hi.flip(1), torch.rand(5, 3, 16, 16)):
        assert color_consistency_loss(other, lo).item() > 0
    # hand formula, sample by sample, against the batched loss, for both reductions and custom λ
    x_hi, x_lo = torch.rand(5, 3, 12, 12), torch.rand(5, 3, 6, 6)
    (mh, ch), (ml, cl) = color_stats(x_hi), color_stats(x_lo)
    paper = sum(2.0 * ((mh[j] - ml[j]) ** 2).sum() + 3.0 * ((ch[j] - cl[j]) ** 2).sum() for j in range(5)) / 5
    torch.testing.assert_close(color_consistency_loss(x_hi, x_lo, 2.0, 3.0), paper)
    reference = 2.0 * F.mse_loss(mh, ml) + 3.0 * F.mse_loss(ch, cl)    # StackGAN-v2's MSELoss on μ and Σ
    torch.testing.assert_close(color_consistency_loss(x_hi, x_lo, 2.0, 3.0, reduction='reference'), reference)
    # the two reductions differ by exactly 1/3 on the mean term and 1/9 on the covariance term
    torch.testing.assert_close(color_consistency_loss(x_hi, x_lo, 1.0, 0.0, reduction='reference'),
                               color_consistency_loss(x_hi, x_lo, 1.0, 0.0) / 3)
    torch.testing.assert_close(color_consistency_loss(x_hi, x_lo, 0.0, 1.0, reduction='reference'),
                               color_consistency_loss(x_hi, x_lo, 0.0, 1.0) / 9)


def test_gradient_reaches_both_scales():
    hi = torch.rand(2, 3, 16, 16, requires_grad=True); lo = torch.rand(2, 3, 8, 8, requires_grad=True)
    color_consistency_loss(hi, lo).backward()
    assert hi.grad.abs().sum() > 0 and lo.grad.abs().sum() > 0
    hi.grad = None; lo.grad = None
    color_consistency_loss(hi, lo, detach_lo=True).backward()
    assert hi.grad.abs().sum() > 0 and lo.grad is None


def test_color_loss_bad_arguments():
    with pytest.raises(ValueError, match='reduction'): color_consistency_loss(torch.rand(1, 3, 4, 4), torch.rand(1, 3, 2, 2), reduction='sum')
    with pytest.raises(ValueError, match='same'): color_consistency_loss(torch.rand(2, 3, 4, 4), torch.rand(3, 3, 2, 2))


def test_color_gaps():
    lo = torch.rand(4, 3, 8, 8)
    hi = F.interpolate(lo, scale_factor=2, mode='nearest')
    g = color_gaps([lo, hi, hi + 0.1])
    assert g.shape == (2, 2)
    torch.testing.assert_close(g[0], torch.zeros(2), atol=1e-6, rtol=0)
    torch.testing.assert_close(g[1], torch.tensor([0.03, 0.0]), atol=1e-6, rtol=0)
    assert color_gaps([lo]).shape == (0, 2)


# ---------------------------------------------------------------- generator and discriminators
@pytest.mark.parametrize('branch_num', [1, 2, 3])
@pytest.mark.parametrize('conditional', [False, True])
def test_generator_shapes(branch_num, conditional):
    G = StackGANppG(z_dim=10, ngf=16, branch_num=branch_num, base_size=16,
                    embed_dim=12 if conditional else None, cond_dim=5)
    z = torch.randn(3, 10)
    fake_imgs, mu, logvar = G(z, torch.randn(3, 12) if conditional else None)
    assert [tuple(s.shape) for s in fake_imgs] == [(3, 3, 16 * 2 ** i, 16 * 2 ** i) for i in range(branch_num)]
    assert all(s.min() >= -1 and s.max() <= 1 for s in fake_imgs)
    if conditional: assert mu.shape == logvar.shape == (3, 5)
    else: assert mu is None and logvar is None


def test_generator_base_size_32_and_64():
    for base in (32, 64):
        G = StackGANppG(z_dim=8, ngf=8, branch_num=2, base_size=base)
        assert [s.shape[-1] for s in G(torch.randn(2, 8))[0]] == [base, 2 * base]


def test_unconditional_branches_see_z():
    "StackGAN++ feeds z to every branch: changing z changes h_1 even through F_1's own input"
    G = StackGANppG(z_dim=6, ngf=8, branch_num=2, base_size=16).eval()
    z = torch.randn(2, 6)
    h0 = G.F[0](z)
    assert not torch.allclose(G.F[1](h0, z), G.F[1](h0, z + 1))


def test_conditional_generator_uses_eps():
    G = StackGANppG(z_dim=6, ngf=8, branch_num=1, base_size=16, embed_dim=4, cond_dim=3).eval()
    z, e = torch.randn(2, 6), torch.randn(2, 4)
    a = G(z, e, eps=torch.zeros(2, 3))[0][0]; b = G(z, e, eps=torch.zeros(2, 3))[0][0]
    torch.testing.assert_close(a, b)


def test_generator_errors():
    with pytest.raises(ValueError, match='divisible'): StackGANppG(ngf=10, branch_num=3)
    with pytest.raises(ValueError, match='power of two'): StackGANppG(base_size=48)
    with pytest.raises(ValueError, match='power of two'): StackGANppG(base_size=8)
    G = StackGANppG(z_dim=6, ngf=8, branch_num=1, base_size=16)
    with pytest.raises(ValueError, match=r'\(B, 6\)'): G(torch.randn(2, 7))
    with pytest.raises(ValueError, match='unconditional'): G(torch.randn(2, 6), torch.randn(2, 4))
    Gc = StackGANppG(z_dim=6, ngf=8, branch_num=1, base_size=16, embed_dim=4, cond_dim=3)
    with pytest.raises(ValueError, match='sent_emb'): Gc(torch.randn(2, 6))


@pytest.mark.parametrize('branch_num', [1, 2, 3])
@pytest.mark.parametrize('base_size', [16, 32])
def test_discriminator_shapes(branch_num, base_size):
    Ds = make_discriminators(branch_num, ndf=4, base_size=base_size, cond_dim=5)
    assert len(Ds) == branch_num
    for i, D in enumerate(Ds):
        x = torch.randn(2, 3, base_size * 2 ** i, base_size * 2 ** i)
        u, c = D(x, torch.randn(2, 5))
        assert u.shape == (2,) and c.shape == (2,)
        u2, c2 = D(x)
        assert u2.shape == (2,) and c2 is None


def test_discriminator_errors():
    D = StackGANppD(1, ndf=4, base_size=16)
    with pytest.raises(ValueError, match=r'\(B, 3, 32, 32\)'): D(torch.randn(2, 3, 16, 16))
    with pytest.raises(ValueError, match='cond_dim'): D(torch.randn(2, 3, 32, 32), torch.randn(2, 3))


def test_discriminator_heads_differ_and_c_matters():
    D = StackGANppD(0, ndf=4, base_size=16, cond_dim=3).eval()
    x = torch.randn(2, 3, 16, 16)
    u1, c1 = D(x, torch.zeros(2, 3)); u2, c2 = D(x, torch.ones(2, 3))
    torch.testing.assert_close(u1, u2)                       # the unconditional head ignores c
    assert not torch.allclose(c1, c2)                        # the conditional head does not


# ---------------------------------------------------------------- losses
def test_losses_values_and_signs():
    zero = torch.zeros(6)
    assert d_loss(zero, zero).item() == pytest.approx(2 * math.log(2), rel=1e-6)
    assert d_loss(zero, zero, zero, zero).item() == pytest.approx(4 * math.log(2), rel=1e-6)
    assert g_loss(zero).item() == pytest.approx(math.log(2), rel=1e-6)
    assert g_loss(zero, zero).item() == pytest.approx(2 * math.log(2), rel=1e-6)
    r = torch.randn(6)
    # D's loss falls when it scores real images higher and fakes lower; G's loss falls as its fakes score higher
    assert d_loss(r + 1, r) < d_loss(r, r) < d_loss(r, r + 1)
    assert d_loss(r, r, r + 1, r) < d_loss(r, r, r, r) < d_loss(r, r, r, r + 1)
    assert g_loss(r + 1) < g_loss(r) < g_loss(r - 1)
    assert g_loss(r, r + 1) < g_loss(r, r)
    big = torch.full((3,), 40.)
    assert d_loss(big, -big, big, -big).item() < 1e-12 and d_loss(-big, big).item() == pytest.approx(80, rel=1e-4)
    assert torch.isfinite(g_loss(-big * 10))                # logits: no log(0)


def test_losses_match_formula():
    lg = torch.randn(4, 7)
    s = torch.sigmoid
    expected = -(s(lg[0]).log().mean() + (1 - s(lg[1])).log().mean() + s(lg[2]).log().mean() + (1 - s(lg[3])).log().mean())
    torch.testing.assert_close(d_loss(*lg), expected)
    torch.testing.assert_close(g_loss(lg[1], lg[3]), -(s(lg[1]).log().mean() + s(lg[3]).log().mean()))
    with pytest.raises(ValueError, match='both'): d_loss(lg[0], lg[1], lg[2])


# ---------------------------------------------------------------- one training step
@pytest.mark.parametrize('conditional', [False, True])
def test_train_step_updates_and_logs(conditional):
    G = StackGANppG(z_dim=8, ngf=8, branch_num=2, base_size=16, embed_dim=6 if conditional else None, cond_dim=4).apply(init_weights)
    Ds = make_discriminators(2, ndf=4, base_size=16, cond_dim=4 if conditional else None).apply(init_weights)
    opt_G = torch.optim.Adam(G.parameters(), 1e-3); opt_Ds = [torch.optim.Adam(D.parameters(), 1e-3) for D in Ds]
    g0 = [p.clone() for p in G.parameters()]; d0 = [[p.clone() for p in D.parameters()] for D in Ds]
    real = [torch.rand(4, 3, 16, 16) * 2 - 1, torch.rand(4, 3, 32, 32) * 2 - 1]
    logs = train_step(G, Ds, opt_G, opt_Ds, real, torch.randn(4, 8), torch.randn(4, 6) if conditional else None, alpha=10.)
    assert {'L_D0', 'L_D1', 'L_G0', 'L_G1', 'L_C1', 'L_G'} <= set(logs)
    assert ('L_KL' in logs) == conditional
    assert all(math.isfinite(v) for v in logs.values())
    assert logs['L_G'] == pytest.approx(logs['L_G0'] + logs['L_G1'] + 10 * logs['L_C1'] + logs.get('L_KL', 0.), rel=1e-5)
    assert any(not torch.equal(p, q) for p, q in zip(G.parameters(), g0))
    for D, before in zip(Ds, d0): assert any(not torch.equal(p, q) for p, q in zip(D.parameters(), before))
    assert all(p.requires_grad for D in Ds for p in D.parameters())
    with pytest.raises(ValueError, match='one real batch'):
        train_step(G, Ds, opt_G, opt_Ds, real[:1], torch.randn(4, 8), torch.randn(4, 6) if conditional else None)


def test_color_loss_pulls_scales_together():
    "A few G-only steps on α·L_C alone shrink the colour gap between the two scales"
    G = StackGANppG(z_dim=8, ngf=8, branch_num=2, base_size=16).apply(init_weights)
    opt = torch.optim.Adam(G.parameters(), 1e-2)
    z = torch.randn(8, 8)
    start = color_consistency_loss(*G(z)[0][::-1]).item()
    for _ in range(30):
        opt.zero_grad(); loss = color_consistency_loss(*G(z)[0][::-1]); loss.backward(); opt.step()
    assert color_consistency_loss(*G(z)[0][::-1]).item() < 0.5 * start
