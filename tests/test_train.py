"""Training loop end to end on the `tiny` preset: exact resume, resume after a kill, the divergence guard,
checkpoints that weights_only=True loads, and StackGAN++ through the same loop."""
import json, os, signal, subprocess, sys, time
from pathlib import Path
import pytest
import torch
from attngan_edu.config import make_config, load_config
from attngan_edu import train as T, objective
from conftest import tiny_env, tiny_config

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope='module')
def env(tmp_path_factory):
    "A tiny SynBirds and a DAMSM pretrained on it, shared by the tests of this file"
    torch.set_num_threads(1)                      # tiny models: one thread is fastest, and the test machine is shared
    return tiny_env(tmp_path_factory.mktemp('train'))


tiny = tiny_config


def losses(run_dir):
    "[(step, loss_D, loss_G, loss_DAMSM)] of a run's log"
    return [(r['step'], r['loss_D'], r['loss_G'], r['loss_DAMSM']) for r in T.read_log(Path(run_dir) / 'log.jsonl')]


def assert_same_series(a, b):
    assert [x[0] for x in a] == [x[0] for x in b]
    assert [v for x in a for v in x[1:]] == pytest.approx([v for x in b for v in x[1:]], rel=1e-6, abs=1e-6)


def test_run_writes_outputs_and_weights_only_checkpoint(env):
    res = T.train(tiny(env, 'plain', max_steps=4))
    d = res.run_dir
    assert res.step == 4
    assert {p.name for p in d.iterdir()} >= {'config.toml', 'checkpoint.pt', 'log.jsonl', 'losses.png', 'attention.png', 'samples'}
    assert not list(d.glob('*.tmp'))
    assert sorted(p.name for p in (d / 'samples').iterdir()) == ['step_000003.png', 'step_000004.png']
    ck = torch.load(d / 'checkpoint.pt', weights_only=True)        # plain torch.load, weights_only: no pickled objects
    assert ck['step'] == 4 and ck['config']['name'] == 'plain' and ck['format'] == T.CKPT_FORMAT
    assert set(ck) >= {'G', 'G_ema', 'Ds', 'opt_G', 'opt_D', 'rng', 'fixed', 'damsm', 'scaler_G'}
    assert isinstance(ck['rng'][0]['python'], torch.Tensor)
    # the EMA generator differs from G (it averages) but has the same keys
    assert ck['G'].keys() == ck['G_ema'].keys()
    assert any(not torch.equal(ck['G'][k], ck['G_ema'][k]) for k in ck['G'] if ck['G'][k].is_floating_point())
    assert load_config(d / 'config.toml') == tiny(env, 'plain', max_steps=4)
    assert [s for s, *_ in losses(d)] == [1, 2, 3, 4]


def test_existing_run_needs_resume(env):
    T.train(tiny(env, 'twice', max_steps=1, sample_every=0))
    with pytest.raises(FileExistsError, match='--resume'):
        T.train(tiny(env, 'twice', max_steps=1, sample_every=0))


def test_resume_is_exact(env):
    "4 steps + resume to 8 gives the same losses as 8 steps in one go (CPU, num_workers=0: bit-for-bit)"
    ref = T.train(tiny(env, 'ref8', max_steps=8, checkpoint_every=4, sample_every=0)).run_dir
    T.train(tiny(env, 'split', max_steps=4, checkpoint_every=4, sample_every=0))
    cfg = tiny(env, 'split', max_steps=8, checkpoint_every=4, sample_every=0)
    T.train(cfg, resume=True)
    a, b = losses(ref), losses(Path(cfg.out_dir) / 'split')
    assert [x[0] for x in b] == list(range(1, 9))
    assert_same_series(a, b)
    ca = torch.load(ref / 'checkpoint.pt', weights_only=True)
    cb = torch.load(Path(cfg.out_dir) / 'split' / 'checkpoint.pt', weights_only=True)
    for k in ca['G']: torch.testing.assert_close(ca['G'][k], cb['G'][k])


def test_resume_refuses_another_memory_format(env):
    "Adam's saved moments keep the memory format they were saved in: a resume may not change channels_last"
    T.train(tiny(env, 'fmt', max_steps=2, checkpoint_every=2, sample_every=0, channels_last=False))
    with pytest.raises(ValueError, match='channels_last False -> True'):
        T.train(tiny(env, 'fmt', max_steps=4, checkpoint_every=2, sample_every=0, channels_last=True), resume=True)


def test_resume_after_kill(env):
    "Kill a CLI run after its first checkpoint; --resume continues the step series with no gap and the same losses"
    steps, every = 14, 4
    common = ['--preset', 'tiny', '--out_dir', str(env['base'] / 'runs'), '--data_dir', env['data_dir'],
              '--damsm_path', env['damsm_path'], '--print_every', '1', '--max_steps', str(steps),
              '--checkpoint_every', str(every), '--sample_every', '0']
    ref = T.train(tiny(env, 'nokill', max_steps=steps, checkpoint_every=every, sample_every=0)).run_dir
    cmd = [sys.executable, '-m', 'attngan_edu.cli', 'train', *common, '--name', 'killed']
    run_dir = env['base'] / 'runs' / 'killed'
    proc = subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        deadline = time.time() + 120
        while time.time() < deadline:                  # wait for a checkpoint and a couple of steps after it
            log = run_dir / 'log.jsonl'
            n = len(T.read_log(log)) if log.exists() else 0
            if (run_dir / 'checkpoint.pt').exists() and n >= every + 2: break
            assert proc.poll() is None, proc.stderr.read().decode()
            time.sleep(0.05)
        else: pytest.fail('the run wrote no checkpoint in 120 s')
    finally:
        proc.send_signal(signal.SIGKILL); proc.wait()
    killed_at = max(r['step'] for r in T.read_log(run_dir / 'log.jsonl'))
    ck_step = torch.load(run_dir / 'checkpoint.pt', weights_only=True)['step']
    assert ck_step % every == 0 and every <= ck_step < steps and killed_at >= ck_step
    r = subprocess.run([sys.executable, '-m', 'attngan_edu.cli', 'train', *common, '--name', 'killed', '--resume'],
                       cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    got = losses(run_dir)
    assert [x[0] for x in got] == list(range(1, steps + 1))    # no gap, no duplicate
    assert_same_series(got, losses(ref))


def test_divergence_guard_names_step_and_checkpoint(env, monkeypatch):
    calls = {'n': 0}
    real = T.g_adv_losses
    def poisoned(*a, **kw):
        calls['n'] += 1
        loss = real(*a, **kw)
        return loss * float('nan') if calls['n'] == 5 else loss
    monkeypatch.setattr(objective, 'g_adv_losses', poisoned)        # train_step looks it up in its module
    cfg = tiny(env, 'nan', max_steps=8, checkpoint_every=3, print_every=2, sample_every=0)
    with pytest.raises(T.DivergenceError) as e:
        T.train(cfg)
    msg = str(e.value)
    assert 'non-finite loss at step 5' in msg and 'stopped at step 6' in msg
    ck_path = Path(cfg.out_dir) / 'nan' / 'checkpoint.pt'
    assert str(ck_path) in msg
    ck = torch.load(ck_path, weights_only=True)
    assert ck['step'] == 3                                         # the NaN weights were never saved
    assert all(torch.isfinite(v).all() for v in ck['G'].values() if v.is_floating_point())


def test_divergence_before_any_checkpoint(env, monkeypatch):
    monkeypatch.setattr(objective, 'g_adv_losses', lambda *a, **kw: torch.tensor(float('inf')))
    with pytest.raises(T.DivergenceError, match='non-finite loss at step 1 .*none yet'):
        T.train(tiny(env, 'inf', max_steps=4, checkpoint_every=3, print_every=2, sample_every=0))


def test_stackganpp_through_the_same_loop(env):
    res = T.train(tiny(env, 'sgpp', model='stackganpp', max_steps=2, color_alpha=1.0, ngf=4, base_size=64))
    recs = T.read_log(res.run_dir / 'log.jsonl')
    assert [r['step'] for r in recs] == [1, 2] and all(r['loss_DAMSM'] == 0 for r in recs)
    assert (res.run_dir / 'samples' / 'step_000002.png').exists()


def test_stackgan_two_phases_through_the_same_loop(env):
    "Stage-I alone for stage1_steps, then Stage-II on the frozen Stage-I; a resume across the switch is exact"
    kw = dict(model='stackgan', ngf=16, stage1_steps=3, checkpoint_every=3)
    full = T.train(tiny(env, 'sg-full', max_steps=6, **kw))
    ck3 = T.load_checkpoint(full.run_dir / 'checkpoint.pt')
    assert ck3['step'] == 6 and ck3['config']['stage1_steps'] == 3
    G = full.state.G
    assert G.phase == 2 and not G.G0.training and all(not p.requires_grad for p in G.G0.parameters())
    # a run stopped at the switch, then resumed: G_0 no longer moves, and the series continue exactly
    half = T.train(tiny(env, 'sg-half', max_steps=3, **kw))
    g0_at_switch = {k: v.clone() for k, v in half.state.G.G0.state_dict().items()}
    T.train(tiny(env, 'sg-half', max_steps=6, **kw), resume=True)
    ck = T.load_checkpoint(half.run_dir / 'checkpoint.pt')
    for k, v in g0_at_switch.items():
        if not k.endswith('num_batches_tracked'): assert torch.equal(ck['G'][f'G0.{k}'], v), k
    for k, v in ck['G'].items(): assert torch.equal(v, ck3['G'][k]), k                  # the same weights as the full run
    assert_same_series(losses(half.run_dir), losses(full.run_dir))
    x = T.sample(T.validate(T.Config(**ck['config'])), full.state.G_ema, full.state.damsm.text_enc,
                 *[ck['fixed'][k] for k in ('caption', 'cap_len', 'z')], torch.device('cpu'), ck['fixed']['eps'])[0]
    assert [t.shape[-1] for t in x] == [64, 128]


def test_stackgan_settings_are_checked():
    with pytest.raises(ValueError, match='multiple of 16'): make_config('tiny', overrides={'model': 'stackgan', 'ngf': 8})
    with pytest.raises(ValueError, match='branch_num 2'): make_config('tiny', overrides={'model': 'stackgan', 'ngf': 16, 'branch_num': 1})


def test_tensorboard_flag_without_tensorboard(env, capsys):
    try:
        import tensorboard  # noqa: F401
        pytest.skip('tensorboard is installed here')
    except ImportError: pass
    res = T.train(tiny(env, 'tb', max_steps=1, tensorboard=True, sample_every=0))
    assert 'tensorboard is not installed' in capsys.readouterr().out
    assert not (res.run_dir / 'tb').exists() and (res.run_dir / 'checkpoint.pt').exists()


def test_bf16_autocast_and_channels_last_on_cpu(env):
    "The GPU code path (autocast bf16, channels_last) runs on a CPU too: finite losses, float32 weights"
    res = T.train(tiny(env, 'bf16', max_steps=2, precision='bf16', channels_last=True, sample_every=0))
    recs = T.read_log(res.run_dir / 'log.jsonl')
    assert all(all(map(lambda v: v == v and abs(v) < 1e6, (r['loss_D'], r['loss_G']))) for r in recs)
    assert all(p.dtype == torch.float32 for p in res.state.G.parameters())
    conv = next(m for m in res.state.Ds.modules() if isinstance(m, torch.nn.Conv2d))
    assert conv.weight.is_contiguous(memory_format=torch.channels_last)


def test_new_settings_are_checked():
    "the course's CPU preset settings: base_size 32, the sentence-only ablation, the stabilisers, the DAMSM grid"
    cfg = make_config('synbirds-cpu')
    assert (cfg.base_size, cfg.branch_num, cfg.damsm_cnn_stride) == (32, 2, 8)
    assert T.damsm_config(cfg, 99).image_size == 64 and T.damsm_config(cfg, 99).cnn_stride == 8
    G, Ds = T.build_gan(make_config('synbirds-cpu', overrides={'word_attention': False, 'spectral_norm': True}))
    assert all(F_i.attn.__class__.__name__ == 'SentenceContext' for F_i in G.F[1:])
    assert any('parametrizations' in n for n, _ in Ds.named_parameters())
    for bad, match in ((dict(base_size=48), 'power of 2'), (dict(model='stackganpp', word_attention=False), 'ablation'),
                       (dict(damsm_cnn_stride=4), 'damsm_cnn_stride'), (dict(gan_loss='wgan'), 'gan_loss')):
        with pytest.raises(ValueError, match=match): make_config('tiny', overrides=bad)


def test_sentence_only_ablation_trains(env):
    "word_attention=false through the loop: a run without attention maps, which sample and the figures handle"
    res = T.train(tiny(env, 'no-attn', max_steps=2, word_attention=False, sample_every=1))
    assert (res.run_dir / 'samples' / 'step_000002.png').is_file() and not (res.run_dir / 'attention.png').exists()
