"Tests for attngan_edu.blocks and attngan_edu.stackgan beyond the notebook's checks."
import inspect, math
import pytest
import torch
import torch.nn.functional as F

from attngan_edu.blocks import conv1x1, conv3x3, GLU, up_block, ResBlock, down_block, downsample_16
from attngan_edu.stackgan import (StageIGenerator, StageIIGenerator, MatchingDiscriminator, discriminator_loss,
                                  generator_loss, mismatched, gan_optimizers, train_stage, stackgan_samples)


# ---------------------------------------------------------------- blocks
@pytest.mark.parametrize('H', [4, 7, 16])
def test_block_shapes(H):
    x = torch.randn(2, 6, H, H)
    assert conv1x1(6, 5)(x).shape == (2, 5, H, H)
    assert conv3x3(6, 5)(x).shape == (2, 5, H, H)
    assert GLU()(x).shape == (2, 3, H, H)
    assert up_block(6, 4)(x).shape == (2, 4, 2 * H, 2 * H)
    assert ResBlock(6)(x).shape == (2, 6, H, H)
    if H % 2 == 0: assert down_block(6, 8)(x).shape == (2, 8, H // 2, H // 2)


def test_block_details():
    assert conv1x1(3, 4).bias is None and conv3x3(3, 4).bias is None and conv3x3(3, 4, bias=True).bias is not None
    a, b = torch.randn(2, 3, 5), torch.randn(2, 3, 5)
    torch.testing.assert_close(GLU()(torch.cat([a, b], 1)), a * torch.sigmoid(b))
    d = downsample_16(4)
    assert not any(isinstance(m, torch.nn.BatchNorm2d) for m in d[:2])          # first conv without BN
    assert d(torch.randn(2, 3, 256, 256)).shape == (2, 32, 16, 16)
    # up_block upsamples by nearest neighbour: a constant image stays constant away from the zero-padded border
    u = up_block(2, 2).eval()
    out = u(torch.ones(1, 2, 4, 4))
    assert torch.allclose(out[..., 1:-1, 1:-1], out[..., 2:3, 2:3].expand_as(out[..., 1:-1, 1:-1]), atol=1e-6)


# ---------------------------------------------------------------- models
def small():
    torch.manual_seed(0)
    return (StageIGenerator(16, z_dim=8, cond_dim=4, ngf=16), MatchingDiscriminator(64, 16, ndf=4, N_d=8),
            StageIIGenerator(16, cond_dim=4, ngf=16, n_res=1, out_size=128), MatchingDiscriminator(128, 16, ndf=4, N_d=8))


def test_model_shapes_and_ranges():
    G0, D0, G1, D1 = small()
    z, phi = torch.randn(3, 8), torch.randn(3, 16)
    s0, mu, logvar = G0(z, phi)
    assert s0.shape == (3, 3, 64, 64) and mu.shape == logvar.shape == (3, 4) and s0.abs().max() <= 1
    s, mu1, _ = G1(s0, phi)
    assert s.shape == (3, 3, 128, 128) and s.abs().max() <= 1
    assert D0(s0, phi).shape == (3,) and D1(s, phi).shape == (3,)
    assert D1.features(s).shape == (3, 32, 4, 4)
    assert StageIIGenerator(16, cond_dim=4, ngf=16, n_res=1)(s0, phi)[0].shape == (3, 3, 256, 256)   # paper default 256
    with pytest.raises(ValueError, match='multiple of 16'): StageIGenerator(16, ngf=24)
    with pytest.raises(ValueError, match='s0 must be'): G1(torch.randn(3, 3, 128, 128), phi)


def test_stage2_has_its_own_ca_and_no_z():
    G0, _, G1, _ = small()
    assert G1.ca is not G0.ca
    assert not any(p is q for p in G1.parameters() for q in G0.parameters())
    for f in (G1.forward, G1.decode): assert 'z' not in inspect.signature(f).parameters
    G1.eval()
    s0, phi, eps = torch.rand(2, 3, 64, 64) * 2 - 1, torch.randn(2, 16), torch.randn(2, 4)
    with torch.no_grad():
        torch.testing.assert_close(G1(s0, phi, eps)[0], G1(s0, phi, eps)[0])
        # the image does depend on s0 and on the text
        assert not torch.allclose(G1(s0, phi, eps)[0], G1(s0.flip(0), phi, eps)[0])
        assert not torch.allclose(G1(s0, phi, eps)[0], G1(s0, phi.flip(0), eps)[0])
    with pytest.raises(TypeError): G1(s0, phi, z=torch.randn(2, 8))


def test_discriminator_uses_text():
    _, D0, _, _ = small()
    D0.eval()
    img, phi = torch.randn(2, 3, 64, 64), torch.randn(2, 16)
    with torch.no_grad():
        assert not torch.allclose(D0(img, phi), D0(img, phi + 1))
        f = D0.features(img)
        torch.testing.assert_close(D0.logits(f, phi), D0(img, phi))


# ---------------------------------------------------------------- losses
def _logit(p): return math.log(p / (1 - p))


def test_discriminator_loss_matches_eq3_with_half_weights():
    r, w, f = torch.randn(5), torch.randn(5), torch.randn(5)
    D = torch.sigmoid
    # -L_D = -(E log D(real) + 1/2 E log(1 - D(wrong)) + 1/2 E log(1 - D(fake)))
    ref = -(D(r).log().mean() + 0.5 * (1 - D(w)).log().mean() + 0.5 * (1 - D(f)).log().mean())
    torch.testing.assert_close(discriminator_loss(r, w, f), ref)
    # a perfect discriminator has (near) zero loss; a confused one log 2 + log 2 / 2 + log 2 / 2
    big = torch.full((4,), 30.)
    assert discriminator_loss(big, -big, -big) < 1e-6
    torch.testing.assert_close(discriminator_loss(torch.zeros(4), torch.zeros(4), torch.zeros(4)), torch.tensor(2 * math.log(2)))


def test_generator_loss_forms_and_kl():
    f = torch.randn(6)
    mu, logvar = torch.randn(6, 3), torch.randn(6, 3)
    kl = 0.5 * (mu ** 2 + logvar.exp() - 1 - logvar).sum(1).mean()
    torch.testing.assert_close(generator_loss(f, mu, logvar, lam=0.5), -torch.sigmoid(f).log().mean() + 0.5 * kl)
    torch.testing.assert_close(generator_loss(f, mu, logvar, lam=0., saturating=True), (1 - torch.sigmoid(f)).log().mean())
    # the two adversarial forms share their optimum direction but not their gradient size when D rejects the fakes
    for p in (0.001, 0.5, 0.999):
        gs = {}
        for sat in (False, True):
            x = torch.tensor([_logit(p)], requires_grad=True)
            generator_loss(x, torch.zeros(1, 2), torch.zeros(1, 2), saturating=sat).backward(); gs[sat] = x.grad.item()
        assert gs[False] < 0 and gs[True] < 0
        torch.testing.assert_close(torch.tensor(gs[False]), torch.tensor(-(1 - p)), rtol=1e-4, atol=1e-6)
        torch.testing.assert_close(torch.tensor(gs[True]), torch.tensor(-p), rtol=1e-4, atol=1e-6)


def test_one_descent_step_moves_d_outputs_the_right_way():
    "Toy: D(x, t) = sigmoid(w1 * x * t + w0). One SGD step on each loss must move every D output the right way."
    w = torch.zeros(2, requires_grad=True)
    D = lambda x, tt: w[0] * x * tt + w[1]                 # logits (B,)
    x_real, x_fake, t = torch.tensor([1., -1.]), torch.tensor([-0.5, 0.5]), torch.tensor([1., -1.])
    outs = lambda: [torch.sigmoid(D(x_real, t)), torch.sigmoid(D(x_real, mismatched(t))), torch.sigmoid(D(x_fake, t))]
    before = outs()
    discriminator_loss(D(x_real, t), D(x_real, mismatched(t)), D(x_fake, t)).backward()
    with torch.no_grad(): w -= 0.5 * w.grad
    after = outs()
    assert (after[0] > before[0]).all() and (after[1] < before[1]).all() and (after[2] < before[2]).all()
    # generator step on the fake "image" x_fake: raises D(fake)
    xf = x_fake.clone().requires_grad_(True)
    generator_loss(D(xf, t), torch.zeros(2, 1), torch.zeros(2, 1)).backward()
    with torch.no_grad(): xf2 = xf - 0.5 * xf.grad
    assert (torch.sigmoid(D(xf2, t)) > torch.sigmoid(D(x_fake, t))).all()


def test_mismatched():
    phi = torch.randn(5, 3)
    m = mismatched(phi)
    torch.testing.assert_close(m[1:], phi[:-1]); torch.testing.assert_close(m[0], phi[-1])
    assert not any(torch.equal(m[i], phi[i]) for i in range(5))
    with pytest.raises(ValueError, match='at least 2'): mismatched(phi[:1])


# ---------------------------------------------------------------- training loop on a fake data set
class FakeDS(torch.utils.data.Dataset):
    "Two 'classes': red images captioned [2, 3], blue images captioned [4, 5, 6]."
    def __len__(self): return 16
    def __getitem__(self, i):
        red = i % 2 == 0
        col = torch.tensor([1., -1., -1.]) if red else torch.tensor([-1., -1., 1.])
        cap = torch.tensor([2, 3, 0, 0]) if red else torch.tensor([4, 5, 6, 0])
        return dict(imgs=[col[:, None, None].expand(3, S, S).clone() for S in (64, 128)], caption=cap,
                    cap_len=2 if red else 3, class_id=int(red), key=f'k{i}', cap_idx=0)


class TinyTextEncoder(torch.nn.Module):
    def __init__(self): super().__init__(); self.emb = torch.nn.Embedding(8, 16)
    def forward(self, caps, lens): e = self.emb(caps); return e.transpose(1, 2), e.sum(1)


def test_train_stage_runs_both_stages_and_leaves_frozen_parts_alone():
    G0, D0, G1, D1 = small()
    te = TinyTextEncoder()
    te_before = {k: v.clone() for k, v in te.state_dict().items()}
    logs = []
    h0 = train_stage(G0, D0, te, FakeDS(), steps=2, batch_size=2, print_every=2, on_log=lambda h: logs.append(len(h)))
    assert [h['step'] for h in h0] == [1, 2] and logs == [2]
    assert all(math.isfinite(h[k]) for h in h0 for k in ('loss_d', 'loss_g', 'kl'))
    g0_before = {k: v.clone() for k, v in G0.state_dict().items()}
    opt_g, opt_d = gan_optimizers(G1, D1)
    h1 = train_stage(G1, D1, te, FakeDS(), steps=1, G0=G0, opt_g=opt_g, opt_d=opt_d, batch_size=2, print_every=0)
    h1 = train_stage(G1, D1, te, FakeDS(), steps=1, G0=G0, opt_g=opt_g, opt_d=opt_d, batch_size=2, print_every=0, history=h1)
    assert [h['step'] for h in h1] == [1, 2]
    for k, v in G0.state_dict().items(): torch.testing.assert_close(v, g0_before[k])       # stage I frozen in stage II
    for k, v in te.state_dict().items(): torch.testing.assert_close(v, te_before[k])       # text encoder frozen
    assert all(p.grad is None for p in te.parameters())
    # time budget
    h = train_stage(G0, D0, te, FakeDS(), steps=10_000, batch_size=2, print_every=0, max_seconds=0.0)
    assert len(h) == 1


def test_train_stage_wrong_image_size_is_a_clear_error():
    G0, D0, _, _ = small()
    G1 = StageIIGenerator(16, cond_dim=4, ngf=16, n_res=1, out_size=256)
    D1 = MatchingDiscriminator(256, 16, ndf=4, N_d=8)
    with pytest.raises(ValueError, match='branch_num'):
        train_stage(G1, D1, TinyTextEncoder(), FakeDS(), steps=1, G0=G0, batch_size=4)


def test_samples_are_reproducible_and_restore_modes():
    G0, _, G1, _ = small()
    te = TinyTextEncoder()
    caps, lens = torch.tensor([[2, 3, 0], [4, 5, 6]]), torch.tensor([2, 3])
    z, e0, e1 = torch.randn(2, 8), torch.randn(2, 4), torch.randn(2, 4)
    a = stackgan_samples(G0, te, caps, lens, z, e0, G1, e1)
    b = stackgan_samples(G0, te, caps, lens, z, e0, G1, e1)
    torch.testing.assert_close(a[0], b[0]); torch.testing.assert_close(a[1], b[1])
    assert a[1].shape == (2, 3, 128, 128)
    assert G0.training and G1.training and te.training
    assert stackgan_samples(G0, te, caps, lens, z)[1] is None
