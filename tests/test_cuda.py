"""The CUDA path, on a machine with a GPU (every test here is skipped without one; `make gpu-check` runs this file):
mixed precision with and without GradScaler, channels_last, torch.compile, pinned-memory workers, CUDA RNG state in
checkpoints and an exact-enough resume, `sample` and `evaluate` with --device cuda."""
import json
from pathlib import Path
import pytest
import torch
from attngan_edu import train as T
from attngan_edu.cli import main
from conftest import tiny_env, tiny_config

pytestmark = [pytest.mark.gpu, pytest.mark.skipif(not torch.cuda.is_available(), reason='needs a CUDA GPU')]


@pytest.fixture(scope='module')
def env(tmp_path_factory):
    "A tiny SynBirds and a DAMSM pretrained on it on the GPU, shared by the tests of this file"
    return tiny_env(tmp_path_factory.mktemp('cuda'), 'cuda')


def tiny(env, name, **kw):
    return tiny_config(env, name, **{'sample_every': 0, **kw})


def finite_log(run_dir) -> list[dict]:
    recs = T.read_log(Path(run_dir) / 'log.jsonl')
    assert recs and all(torch.isfinite(torch.tensor([r['loss_D'], r['loss_G'], r['loss_DAMSM']])).all() for r in recs), recs
    return recs


@pytest.mark.parametrize('precision,channels_last', [('bf16', False), ('bf16', True), ('fp16', False), ('fp32', True)])
def test_mixed_precision_and_channels_last_train(env, precision, channels_last):
    "autocast bf16/fp16 (fp16 with GradScaler) and channels_last: finite losses, float32 weights on the GPU"
    steps = 15 if precision == 'fp16' else 3       # fp16 skips its first steps while GradScaler's scale finds its level
    cfg = tiny(env, f'{precision}-{channels_last}', max_steps=steps, precision=precision, channels_last=channels_last)
    res = T.train(cfg)
    finite_log(res.run_dir)
    p = next(res.state.G.parameters())
    assert p.is_cuda and p.dtype == torch.float32
    ck = torch.load(res.run_dir / 'checkpoint.pt', map_location='cpu', weights_only=True)
    if precision == 'fp16':                        # the GradScaler really ran, and G was really updated
        assert 0 < ck['scaler_G']['scale'] < 65536.0, ck['scaler_G']
        torch.manual_seed(cfg.seed); ref = T.build_gan(cfg)[0]          # the initial weights, as train() builds them
        assert any(not torch.equal(a.cpu(), b) for a, b in zip(res.state.G.state_dict().values(), ref.state_dict().values()))
    if channels_last:
        conv = next(m for m in res.state.Ds.modules() if isinstance(m, torch.nn.Conv2d))
        assert conv.weight.is_contiguous(memory_format=torch.channels_last)


def test_compile_and_pinned_workers(env):
    "torch.compile of G and the Ds, with two data workers feeding pinned memory"
    res = T.train(tiny(env, 'compiled', max_steps=3, compile=True, num_workers=2, pin_memory=True, precision='bf16'))
    assert len(finite_log(res.run_dir)) == 3


def test_checkpoint_keeps_cuda_rng_and_resume_continues(env):
    "4 + 4 steps with a resume in between follow 8 steps in one go (cuDNN is not bit-exact: close, not equal)"
    ref = T.train(tiny(env, 'ref8', max_steps=8, checkpoint_every=4, precision='fp32')).run_dir
    T.train(tiny(env, 'split', max_steps=4, checkpoint_every=4, precision='fp32'))
    ck = torch.load(env['base'] / 'runs' / 'split' / 'checkpoint.pt', map_location='cpu', weights_only=True)
    assert isinstance(ck['rng'][0]['cuda'], torch.Tensor) and ck['rng'][0]['cuda'].numel() > 0
    T.train(tiny(env, 'split', max_steps=8, checkpoint_every=4, precision='fp32'), resume=True)
    a, b = finite_log(ref), finite_log(env['base'] / 'runs' / 'split')
    assert [r['step'] for r in b] == list(range(1, 9))
    for ra, rb in zip(a, b):
        assert rb['loss_G'] == pytest.approx(ra['loss_G'], rel=2e-2, abs=1e-2), (ra, rb)


def test_sample_and_evaluate_on_cuda(env, capsys, tmp_path):
    run_dir = T.train(tiny(env, 'cli', max_steps=2, precision='bf16')).run_dir
    assert main(['sample', '--checkpoint', str(run_dir), '--device', 'cuda', '--out', str(tmp_path / 's.png')]) == 0
    assert (tmp_path / 's.png').stat().st_size > 0
    assert main(['evaluate', '--checkpoint', str(run_dir), '--device', 'cuda', '--judge', 'none', '--n', '8', '--draws', '2']) == 0
    m = json.loads((run_dir / 'metrics.json').read_text())
    assert 0 <= m['r_precision']['word'][0] <= 1
    capsys.readouterr()


def test_dfgan_compiles(env):
    "DF-GAN with torch.compile: its MA-GP (a double backward) stays outside the compiled discriminator loss"
    res = T.train(tiny(env, 'dfgan-compiled', model='dfgan', max_steps=3, compile=True, precision='bf16'))
    assert len(finite_log(res.run_dir)) == 3


def test_resume_across_precision_and_device(env):
    "A CPU fp32 checkpoint continues on the GPU in fp16: the disabled scaler starts afresh, CUDA gets its own seed"
    T.train(tiny(env, 'moved', max_steps=2, checkpoint_every=2, device='cpu', precision='fp32'))
    res = T.train(tiny(env, 'moved', max_steps=4, checkpoint_every=2, precision='fp16'), resume=True)
    assert [r['step'] for r in finite_log(res.run_dir)] == [1, 2, 3, 4]
