"AttnGAN generator, discriminators and losses (attngan_edu.attngan) on small widths."
import dataclasses
import math
import pytest
import torch
import torch.nn.functional as F
from attngan_edu.attention import padding_mask
from attngan_edu.attngan import (AttnGANConfig, AttnGANGenerator, AttnGANDiscriminator, make_discriminators,
                                 InitStage, NextStage, image_head, g_adv_loss, d_adv_loss, mismatched,
                                 discriminator_loss, generator_loss, plot_stage_attention)


def small_cfg(branch_num):
    return AttnGANConfig(ngf=4, ndf=2, D=6, cond_dim=5, z_dim=7, r_num=1, branch_num=branch_num)


def inputs(cfg, B=3, T=5, lens=(5, 2, 3), seed=0):
    g = torch.Generator().manual_seed(seed)
    return (torch.randn(B, cfg.z_dim, generator=g), torch.randn(B, cfg.D, generator=g),
            torch.randn(B, cfg.D, T, generator=g), padding_mask(torch.tensor(lens), T))


def test_config_defaults_follow_reference_birds():
    c = AttnGANConfig()
    assert (c.ngf, c.ndf, c.D, c.cond_dim, c.z_dim, c.words_num, c.r_num, c.branch_num) == (32, 64, 256, 100, 100, 18, 2, 3)
    assert c.img_sizes == [64, 128, 256]
    assert small_cfg(1).img_sizes == [64]
    with pytest.raises(ValueError, match='ndf'):
        AttnGANConfig(ndf=-1)
    with pytest.raises(ValueError, match='branch_num'):
        AttnGANConfig(branch_num=True)
    with pytest.raises(TypeError):
        dataclasses.replace(AttnGANConfig(), no_such_field=1)


@pytest.mark.parametrize("m", [1, 2, 3])
def test_generator_shapes_and_attention(m):
    torch.manual_seed(0)
    cfg = small_cfg(m)
    G = AttnGANGenerator(cfg)
    z, sent_emb, words_emb, mask = inputs(cfg)
    fake_imgs, att_maps, mu, logvar = G(z, sent_emb, words_emb, mask)
    assert [tuple(x.shape) for x in fake_imgs] == [(3, 3, s, s) for s in cfg.img_sizes]
    assert [tuple(a.shape) for a in att_maps] == [(3, 5, s, s) for s in cfg.img_sizes[:-1]]
    assert mu.shape == logvar.shape == (3, cfg.cond_dim)
    for x in fake_imgs:
        assert x.min() >= -1 and x.max() <= 1
    for a in att_maps:
        torch.testing.assert_close(a.sum(1), torch.ones(3, *a.shape[2:]))     # sums to 1 over the words
        assert (a[1, 2:] == 0).all() and (a[2, 3:] == 0).all()              # padding: exactly zero
        assert (a >= 0).all()


def test_generator_without_mask_and_channel_plan():
    cfg = small_cfg(2)
    G = AttnGANGenerator(cfg)
    z, sent_emb, words_emb, _ = inputs(cfg)
    fake_imgs, att_maps, _, _ = G(z, sent_emb, words_emb)
    assert (att_maps[0] > 0).all()
    # F_0 starts at 16 ngf channels on a 4x4 map (reference: INIT_STAGE_G(ngf * 16, ...)) and ends at ngf
    assert G.F[0].fc[0].out_features == 2 * 16 * cfg.ngf * 16
    assert G.F[0](z, torch.randn(3, cfg.cond_dim)).shape == (3, cfg.ngf, 64, 64)
    # F_1 attends with D_hat = ngf and works on 2 ngf channels
    assert G.F[1].attn.U.weight.shape == (cfg.ngf, cfg.D, 1)
    assert G.F[1].res[0].block[0].in_channels == 2 * cfg.ngf


def test_generator_is_batch_independent_in_eval_mode():
    "No mixing across the batch (eval-mode BN): a batch gives the same result as its samples one by one."
    torch.manual_seed(0)
    cfg = small_cfg(2)
    G = AttnGANGenerator(cfg)
    with torch.no_grad():                 # give BN running stats something non-trivial
        G.train(); G(*inputs(cfg, seed=1))
    G.eval()
    z, sent_emb, words_emb, mask = inputs(cfg)
    eps = torch.randn(3, cfg.cond_dim)
    with torch.no_grad():
        imgs, atts, mu, _ = G(z, sent_emb, words_emb, mask, eps=eps)
        for b in range(3):
            L = int((~mask[b]).sum())
            imgs_b, atts_b, mu_b, _ = G(z[b:b + 1], sent_emb[b:b + 1], words_emb[b:b + 1, :, :L], eps=eps[b:b + 1])
            torch.testing.assert_close(imgs_b[-1], imgs[-1][b:b + 1], atol=1e-5, rtol=1e-4)
            torch.testing.assert_close(atts_b[0], atts[0][b:b + 1, :L], atol=1e-6, rtol=1e-5)
        # fixed z and eps: reproducible
        imgs2, _, _, _ = G(z, sent_emb, words_emb, mask, eps=eps)
        torch.testing.assert_close(imgs2[-1], imgs[-1])


def test_generator_bad_inputs():
    cfg = small_cfg(2)
    G = AttnGANGenerator(cfg)
    z, sent_emb, words_emb, mask = inputs(cfg)
    with pytest.raises(ValueError, match='z must be'):
        G(z[:, :3], sent_emb, words_emb, mask)
    with pytest.raises(ValueError, match='words_emb'):
        G(z, sent_emb, words_emb[:, :4], mask)
    with pytest.raises(ValueError, match='mask'):
        G(z, sent_emb, words_emb, mask[:, :4])


@pytest.mark.parametrize("m", [1, 2, 3])
def test_discriminator_shapes(m):
    cfg = small_cfg(m)
    Ds = make_discriminators(cfg)
    assert len(Ds) == m
    sent_emb = torch.randn(2, cfg.D)
    for D_i, s in zip(Ds, cfg.img_sizes):
        x = torch.rand(2, 3, s, s) * 2 - 1
        feats = D_i.features(x)
        assert feats.shape == (2, 8 * cfg.ndf, 4, 4)
        u, c = D_i(x, sent_emb)
        assert u.shape == c.shape == (2,)
        assert D_i(x)[1] is None


def test_discriminator_channel_plan_matches_reference():
    ndf = 2
    # D_NET256: s16 (8 ndf) -> down 16 ndf -> down 32 ndf -> 3x3 16 ndf -> 3x3 8 ndf
    D = AttnGANDiscriminator(256, ndf, D=6)
    x = torch.randn(2, 3, 256, 256)
    shapes = []
    for layer in D.encode:
        x = layer(x); shapes.append(tuple(x.shape[1:]))
    assert shapes == [(8 * ndf, 16, 16), (16 * ndf, 8, 8), (32 * ndf, 4, 4), (16 * ndf, 4, 4), (8 * ndf, 4, 4)]
    assert len(AttnGANDiscriminator(128, ndf, 6).encode) == 3 and len(AttnGANDiscriminator(64, ndf, 6).encode) == 1
    for bad in (16, 96, 100):
        with pytest.raises(ValueError, match='img_size'):
            AttnGANDiscriminator(bad, ndf, 6)
    with pytest.raises(ValueError, match='sent_emb'):
        AttnGANDiscriminator(64, ndf, 6)(torch.randn(2, 3, 64, 64), torch.randn(2, 5))


def bce(logit, y):                         # -[y log sigmoid(l) + (1 - y) log(1 - sigmoid(l))], mean over the batch
    p = torch.sigmoid(logit.double())
    return -(y * torch.log(p) + (1 - y) * torch.log(1 - p)).mean()


def test_losses_match_equations():
    g = torch.Generator().manual_seed(0)
    ru, fu, rc, fc, wc = (torch.randn(6, generator=g) for _ in range(5))
    paper = 0.5 * (bce(ru, 1) + bce(fu, 0)) + 0.5 * (bce(rc, 1) + 0.5 * (bce(fc, 0) + bce(wc, 0)))
    eq5 = 0.5 * (bce(ru, 1) + bce(fu, 0)) + 0.5 * (bce(rc, 1) + bce(fc, 0))
    ref = (bce(ru, 1) + bce(rc, 1)) / 2 + (bce(fu, 0) + bce(fc, 0) + bce(wc, 0)) / 3
    torch.testing.assert_close(d_adv_loss(ru, fu, rc, fc, wc).double(), paper)
    torch.testing.assert_close(d_adv_loss(ru, fu, rc, fc).double(), eq5)
    torch.testing.assert_close(d_adv_loss(ru, fu, rc, fc, wc, weighting='reference').double(), ref)
    torch.testing.assert_close(g_adv_loss(fu, fc).double(), 0.5 * (bce(fu, 1) + bce(fc, 1)))
    torch.testing.assert_close(g_adv_loss(fu, fc, 'reference').double(), bce(fu, 1) + bce(fc, 1))
    with pytest.raises(ValueError, match='wrong_cond'):
        d_adv_loss(ru, fu, rc, fc, weighting='reference')
    with pytest.raises(ValueError, match='weighting'):
        d_adv_loss(ru, fu, rc, fc, wc, weighting='Paper')


@pytest.mark.parametrize("weighting", ['paper', 'reference'])
def test_loss_signs_and_gradient_directions(weighting):
    logits = [torch.randn(5, requires_grad=True) for _ in range(5)]
    d_adv_loss(*logits, weighting=weighting).backward()
    real_u, fake_u, real_c, fake_c, wrong_c = (l.grad for l in logits)
    assert (real_u < 0).all() and (real_c < 0).all()              # D should raise scores of real pairs
    assert (fake_u > 0).all() and (fake_c > 0).all() and (wrong_c > 0).all()   # and lower fakes / wrong captions
    gl = [torch.randn(5, requires_grad=True) for _ in range(2)]
    loss = g_adv_loss(*gl, weighting=weighting)
    assert loss > 0
    loss.backward()
    assert all((x.grad < 0).all() for x in gl)                   # G wants D to score its fakes higher
    big = torch.full((5,), 10.)
    good = d_adv_loss(big, -big, big, -big, -big, weighting=weighting)
    fooled = d_adv_loss(-big, big, -big, big, big, weighting=weighting)
    assert 0 < good < 1e-3 < 5 < fooled
    assert g_adv_loss(big, big, weighting) < g_adv_loss(-big, -big, weighting)


def test_discriminator_loss_uses_rolled_captions_and_detaches_fakes():
    torch.manual_seed(0)
    cfg = small_cfg(1)
    G, D = AttnGANGenerator(cfg), AttnGANDiscriminator(64, cfg.ndf, cfg.D).eval()
    z, sent_emb, words_emb, mask = inputs(cfg)
    fake = G(z, sent_emb, words_emb, mask)[0][0]
    real = torch.rand(3, 3, 64, 64) * 2 - 1
    loss = discriminator_loss(D, real, fake, sent_emb)
    fr, ff = D.features(real), D.features(fake)
    wrong = D.cond_logits(fr, sent_emb[[2, 0, 1]])                 # image k with caption k-1
    manual = d_adv_loss(D.uncond_logits(fr), D.uncond_logits(ff), D.cond_logits(fr, sent_emb),
                        D.cond_logits(ff, sent_emb), wrong)
    torch.testing.assert_close(loss, manual)
    loss.backward()
    assert all(p.grad is None for p in G.parameters())
    assert all(p.grad is not None for p in D.parameters())
    with pytest.raises(ValueError, match='at least 2'):
        mismatched(sent_emb[:1])
    assert mismatched(torch.arange(4.)[:, None]).flatten().tolist() == [3., 0., 1., 2.]


def test_generator_loss_reaches_every_generator_parameter():
    torch.manual_seed(0)
    cfg = small_cfg(3)
    G, Ds = AttnGANGenerator(cfg), make_discriminators(cfg)
    z, sent_emb, words_emb, mask = inputs(cfg)
    fake_imgs, _, _, _ = G(z, sent_emb, words_emb, mask)
    total, per_stage = generator_loss(Ds, fake_imgs, sent_emb)
    assert len(per_stage) == 3 and total.dim() == 0
    torch.testing.assert_close(total, sum(per_stage))
    total.backward()
    missing = [n for n, p in G.named_parameters() if p.grad is None or p.grad.abs().sum() == 0]
    assert missing == []
    with pytest.raises(ValueError, match='discriminators'):
        generator_loss(Ds[:2], fake_imgs, sent_emb)


@pytest.mark.parametrize("m", [1, 3])
def test_plot_stage_attention(m):
    import matplotlib
    matplotlib.use('Agg')
    cfg = small_cfg(m)
    G = AttnGANGenerator(cfg)
    z, sent_emb, words_emb, mask = inputs(cfg)
    with torch.no_grad():
        fake_imgs, att_maps, _, _ = G(z, sent_emb, words_emb, mask)
    words = ['this', 'bird', 'is']                                  # sample 2 has 3 words
    fig = plot_stage_attention(fake_imgs, att_maps, words, idx=2, top_k=5, size=64, title='t')
    cols = max(m, 3)
    assert len(fig.axes) == m * cols
    titles = [ax.get_title() for ax in fig.axes[cols:] if ax.get_title()]
    assert len(titles) == (m - 1) * 3 and all(t.split()[0] in words for t in titles)
    if m > 1:                                                       # 6 words do not fit T = 5
        with pytest.raises(ValueError, match='words'):
            plot_stage_attention(fake_imgs, att_maps, ['w'] * 6)


def test_im2col_route_matches_onednn_in_the_discriminator(monkeypatch):
    "D_1 at batch 4 takes the im2col route for its deepest layers; logits and all gradients match plain F.conv2d"
    from attngan_edu.blocks import Im2colConv2d
    torch.manual_seed(0)
    D = AttnGANDiscriminator(128, ndf=16, D=32)     # 8 ndf = 128 ... 16 ndf = 256 channels on the 8x8 and 4x4 maps
    x, e = torch.randn(4, 3, 128, 128, requires_grad=True), torch.randn(4, 32)
    used = []
    orig = Im2colConv2d.use_im2col
    def spy(self, inp):
        r = orig(self, inp); used.append(r); return r
    monkeypatch.setattr(Im2colConv2d, 'use_im2col', spy)
    def run():
        D.zero_grad(set_to_none=True); x.grad = None
        u, c = D(x, e); (u.square().sum() + c.sum()).backward()
        return [u.detach(), c.detach(), x.grad.clone()] + [p.grad.clone() for p in D.parameters()]
    with_im2col = run()
    assert any(used) and not all(used), used        # both routes were taken
    monkeypatch.setattr(Im2colConv2d, 'use_im2col', lambda self, inp: False)
    for a, b in zip(with_im2col, run()):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-5)


def test_base_size_32_pyramid_and_discriminators():
    "base_size 32 (the course's CPU preset): x_hat_0 32 px, x_hat_1 64 px, attention on the 32x32 grid, D_0 at 32 px"
    cfg = dataclasses.replace(small_cfg(2), base_size=32)
    G, Ds = AttnGANGenerator(cfg), make_discriminators(cfg)
    z, sent_emb, words_emb, mask = inputs(cfg)
    fake_imgs, att_maps, _, _ = G(z, sent_emb, words_emb, mask)
    assert [tuple(x.shape[-2:]) for x in fake_imgs] == [(32, 32), (64, 64)] and att_maps[0].shape == (3, 5, 32, 32)
    assert G.F[0].ngf16 == 8 * cfg.ngf and len(G.F[0].up) == 3        # three doublings from 4x4, channels halve each time
    assert D_code_shape(Ds[0], fake_imgs[0]) == (3, 8 * cfg.ndf, 4, 4) == D_code_shape(Ds[1], fake_imgs[1])
    for D_i, x in zip(Ds, fake_imgs):
        u, c = D_i(x, sent_emb)
        assert u.shape == c.shape == (3,)
    for bad in (16, 48, 100):
        with pytest.raises(ValueError, match='base_size'):
            AttnGANConfig(base_size=bad)


def D_code_shape(D, x): return tuple(D.features(x).shape)


def test_sentence_only_ablation():
    "word_attention=False: the same pyramid, no attention maps, and the context of every region is U e_bar"
    cfg = dataclasses.replace(small_cfg(3), word_attention=False)
    G = AttnGANGenerator(cfg)
    z, sent_emb, words_emb, mask = inputs(cfg)
    fake_imgs, att_maps, _, _ = G(z, sent_emb, words_emb, mask)
    assert [tuple(x.shape[-1:]) for x in fake_imgs] == [(64,), (128,), (256,)] and att_maps == []
    h = torch.randn(3, cfg.ngf, 4, 4)
    c = G.F[1].attn(h, sent_emb)
    assert c.shape == h.shape and torch.allclose(c[:, :, 0, 0], c[:, :, 3, 2])
    torch.testing.assert_close(c[:, :, 1, 1], sent_emb @ G.F[1].attn.U.weight.t())
    # the words do not matter any more: another caption with the same sentence feature gives the same image
    torch.manual_seed(1); a = G(z, sent_emb, words_emb, mask, eps=torch.zeros(3, cfg.cond_dim))[0][-1]
    torch.manual_seed(1); b = G(z, sent_emb, torch.randn_like(words_emb), mask, eps=torch.zeros(3, cfg.cond_dim))[0][-1]
    torch.testing.assert_close(a, b)
    with pytest.raises(ValueError, match='sent_emb'):
        G.F[1](h, words_emb, mask)


def test_hinge_loss_and_spectral_norm():
    from attngan_edu.attngan import spectral_normalize
    l = torch.tensor([2.0, -0.5, 0.3])
    # hinge: D pays max(0, 1 - l) on reals and max(0, 1 + l) on fakes; G pays -l
    hand = 0.5 * (F.relu(1 - l).mean() + F.relu(1 + l).mean()) + 0.5 * (F.relu(1 - l).mean() + F.relu(1 + l).mean())
    torch.testing.assert_close(d_adv_loss(l, l, l, l, gan_loss='hinge'), hand)
    torch.testing.assert_close(g_adv_loss(l, l, gan_loss='hinge'), -l.mean())
    with pytest.raises(ValueError, match='gan_loss'):
        d_adv_loss(l, l, l, l, gan_loss='wasserstein')
    D = spectral_normalize(AttnGANDiscriminator(32, ndf=2, D=6))
    names = [n for n, _ in D.named_parameters()]
    assert names and all('parametrizations' in n for n in names if n.endswith('weight.original')) and \
        sum(n.endswith('weight.original') for n in names) == sum(isinstance(m, (torch.nn.Conv2d, torch.nn.Linear)) for m in D.modules())
    for _ in range(30): D(torch.randn(4, 3, 32, 32), torch.randn(4, 6))      # power iteration converges
    for m in D.modules():
        if isinstance(m, torch.nn.Conv2d):
            assert abs(torch.linalg.matrix_norm(m.weight.flatten(1), ord=2).item() - 1) < 0.1
