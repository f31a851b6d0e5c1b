"""DF-GAN (notebook 12): shapes and identity start of the fusion blocks, the losses against their definitions, MA-GP in
both forms, the config's model defaults, and `attngan-edu train/sample/evaluate --model dfgan` through the course's loop."""
import pytest
import torch
from torch import nn
from attngan_edu.dfgan import Affine, DFBlock, DFGenerator, DFDiscriminator, channel_plan, d_hinge_loss, g_hinge_loss, ma_gp
from attngan_edu.config import make_config, ConfigError
from attngan_edu.objective import build_gan, generate, d_losses, g_adv_losses


def test_affine_is_the_identity_at_init_and_per_channel_after():
    a = Affine(4, 3)
    x, e = torch.randn(2, 3, 5, 5), torch.randn(2, 4)
    assert torch.equal(a(x, e), x)
    nn.init.normal_(a.mlp_gamma[2].weight); nn.init.normal_(a.mlp_beta[2].weight)
    g, b = a.mlp_gamma(e), a.mlp_beta(e)
    torch.testing.assert_close(a(x, e)[1, 2], g[1, 2] * x[1, 2] + b[1, 2])
    assert torch.equal(DFBlock(4, 3)(x, e), nn.functional.leaky_relu(nn.functional.leaky_relu(x, 0.2), 0.2))


@pytest.mark.parametrize('size,n_blocks', [(32, 3), (64, 4), (256, 6)])
def test_generator_and_discriminator_shapes(size, n_blocks):
    G, D = DFGenerator(10, 2, size, 6), DFDiscriminator(2, size, 6)
    assert len(G.blocks) == n_blocks and len(D.blocks) == n_blocks
    x = G(torch.randn(3, 10), torch.randn(3, 6))
    assert x.shape == (3, 3, size, size) and x.abs().max() <= 1
    assert D(x, torch.randn(3, 6)).shape == (3,)
    assert channel_plan(2, size)[0] == 16 and channel_plan(2, size)[-1] == 2


def test_text_changes_the_image_only_through_the_affine_layers():
    G = DFGenerator(8, 2, 16, 5)
    z = torch.randn(2, 8)
    assert torch.equal(G(z, torch.randn(2, 5)), G(z, torch.randn(2, 5)))     # identity affines: text has no effect yet
    for m in G.modules():
        if isinstance(m, Affine): nn.init.normal_(m.mlp_gamma[2].weight)
    assert not torch.equal(G(z, torch.randn(2, 5)), G(z, torch.randn(2, 5)))
    with pytest.raises(ValueError, match='power of 2'): DFGenerator(8, 2, 48, 5)


def test_hinge_losses():
    r, f, m = torch.tensor([2., .5]), torch.tensor([-2., .3]), torch.tensor([0., -1.5])
    assert d_hinge_loss(r, f, m).item() == pytest.approx(0.825)
    assert d_hinge_loss(torch.full((4,), 1.), torch.full((4,), -1.), torch.full((4,), -1.)).item() == 0   # on the margins
    assert g_hinge_loss(f).item() == pytest.approx(0.85)


def test_ma_gp_paper_and_code_forms_and_its_gradient():
    w, u = torch.tensor([3., 4.]), torch.tensor([0., 2.])
    x, e = torch.randn(5, 2, requires_grad=True), torch.randn(5, 2, requires_grad=True)
    assert ma_gp(x @ w + e @ u, x, e, 1, 2).item() == pytest.approx(49.)
    assert ma_gp(x @ w + e @ u, x, e, 1, 2, joint=True).item() == pytest.approx(29.)
    assert ma_gp(x @ w + e @ u, x, e).item() == pytest.approx(2 * 7 ** 6)              # k = 2, p = 6
    D = DFDiscriminator(2, 16, 3)
    xi, ei = torch.randn(2, 3, 16, 16, requires_grad=True), torch.randn(2, 3, requires_grad=True)
    ma_gp(D(xi, ei), xi, ei).backward()
    assert D.joint[0].weight.grad is not None and D.joint[0].weight.grad.abs().sum() > 0


def test_model_defaults_follow_the_paper_and_the_preset():
    b = make_config('birds', overrides={'model': 'dfgan'})
    assert (b.branch_num, b.base_size, b.ngf, b.ndf, b.batch_size, b.lr_g, b.lr_d, b.beta1, b.beta2, b.lam) == \
        (1, 256, 32, 32, 32, 1e-4, 4e-4, 0.0, 0.9, 0.0)
    assert make_config('birds', overrides={'model': 'dfgan', 'dfgan_cond_noise': False}).dfgan_cond_noise is False   # the paper's form, asked for
    assert make_config('coco', overrides={'model': 'dfgan'}).epochs == 301
    s = make_config('synbirds-cpu', overrides={'model': 'dfgan'})
    assert (s.branch_num, s.base_size, s.ngf, s.ndf, s.lr_d / s.lr_g) == (1, 64, 8, 8, 4.0)   # the preset's 64 px; nf 8
    assert s.dfgan_cond_noise and s.ema_decay == 0 and s.lam == 0                         # the released code's [z, e_bar]; no EMA
    assert make_config('tiny', overrides={'model': 'dfgan'}).ngf == 2                          # other presets keep their widths
    assert make_config('synbirds-cpu', overrides={'model': 'dfgan', 'lr_g': 1e-3}).lr_g == 1e-3   # asked for: kept
    assert make_config('synbirds-cpu').model == 'attngan' and make_config('synbirds-cpu').branch_num == 2
    with pytest.raises(ConfigError, match='one stage'):
        make_config('synbirds-cpu', overrides={'model': 'dfgan', 'branch_num': 2})


def test_one_step_through_the_course_objective():
    cfg = make_config('tiny', overrides={'model': 'dfgan'})
    G, Ds = build_gan(cfg)
    S = cfg.base_size
    e, z = torch.randn(4, cfg.embedding_dim), torch.randn(4, cfg.z_dim)
    fake, att, mu, logvar = generate(cfg, G, z, e, None, None)
    assert fake[0].shape == (4, 3, S, S) and att == [] and not mu.any()
    loss_D = d_losses(cfg, Ds, [torch.rand(4, 3, S, S) * 2 - 1], fake, e, mu)
    loss_D.backward()
    assert torch.isfinite(loss_D) and all(p.grad is not None for p in Ds.parameters())
    assert torch.isfinite(g_adv_losses(cfg, Ds, fake, e, mu))


def test_train_sample_evaluate_with_the_cli(tmp_path, capsys, monkeypatch):
    from attngan_edu.cli import main
    monkeypatch.setenv('ATTNGAN_EDU_DATA', str(tmp_path / 'data'))
    assert main(['train', '--preset', 'tiny', '--model', 'dfgan', '--out_dir', str(tmp_path / 'runs'), '--max_steps', '4']) == 0
    run = tmp_path / 'runs' / 'tiny'
    ck = torch.load(run / 'checkpoint.pt', weights_only=True)
    assert ck['config']['model'] == 'dfgan' and ck['step'] == 4
    assert main(['sample', '--checkpoint', str(run), '--out', str(tmp_path / 's.png')]) == 0
    assert (tmp_path / 's.png').stat().st_size > 0
    assert main(['evaluate', '--checkpoint', str(run), '--judge', 'none', '--n', '8', '--draws', '2']) == 0
    assert (run / 'metrics.json').exists()
    capsys.readouterr()
