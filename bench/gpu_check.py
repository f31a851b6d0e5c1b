"""Prove the CUDA path in one command: environment, CPU-vs-CUDA equivalence of a training step, throughput at the
paper's widths, and a short real training run with a kill and --resume, then `attngan-edu evaluate` on the device.

  python bench/gpu_check.py                    # on a GPU machine (all parts within --budget, 360 s)
  python bench/gpu_check.py --device cpu       # the same parts with tiny sizes: what CI runs (tests/test_gpu_check.py)

Each part runs in its own process with its own time cap, so one hang cannot eat the budget; the JSON (--out, default
gpu_check.json, and a markdown summary beside it) is written after every part, and the exit status is 1 when any part failed, naming it.
"""
import argparse, json, os, platform, signal, subprocess, sys, tempfile, time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PY = sys.executable
# Dense bf16 tensor-core peak TFLOP/s (no sparsity) from the vendors' data sheets, by torch.cuda.get_device_name.
# There is no fp32 MFU: cuDNN runs fp32 convolutions in TF32 on tensor cores, so no single fp32 peak applies.
PEAK_TFLOPS = {'NVIDIA H200': dict(bf16=989.0), 'NVIDIA H100 80GB HBM3': dict(bf16=989.0),
               'NVIDIA H100 PCIe': dict(bf16=756.0), 'NVIDIA A100-SXM4-80GB': dict(bf16=312.0),
               'NVIDIA A100-SXM4-40GB': dict(bf16=312.0), 'NVIDIA L4': dict(bf16=121.0)}


def peak_for(name: str) -> dict | None:
    "The peaks of a GPU named exactly so (an 'NVIDIA H200 NVL' or an 'NVIDIA L40S' is not in the table: FLOP/s only)"
    return PEAK_TFLOPS.get(name.strip())


def part_env(device: str) -> dict:
    import torch
    r = dict(python=platform.python_version(), torch=torch.__version__, cuda=torch.version.cuda,
             cuda_available=torch.cuda.is_available(), cpu_capability=torch.backends.cpu.get_cpu_capability(), cpus=os.cpu_count())
    if device == 'cuda':
        if not torch.cuda.is_available(): raise RuntimeError('--device cuda, but torch sees no GPU')
        r['gpus'] = [dict(name=torch.cuda.get_device_name(i), memory_gib=round(torch.cuda.get_device_properties(i).total_memory / 2**30, 1))
                     for i in range(torch.cuda.device_count())]
        r['bf16_supported'] = torch.cuda.is_bf16_supported()
        try: r['driver'] = subprocess.run(['nvidia-smi', '--query-gpu=driver_version', '--format=csv,noheader'],
                                          capture_output=True, text=True, timeout=30).stdout.strip().splitlines()[0]
        except Exception as e: r['driver'] = f'unknown ({e})'
    return r


def part_equivalence(device: str) -> dict:
    """One train_step in float32 from the same weights and batch on the CPU and on the GPU: the losses and the gradients
    must agree. The noise (z, CA's epsilon) comes from one CPU generator on both sides; TF32 is off."""
    import copy, torch
    sys.path.insert(0, str(ROOT / 'bench'))
    from train_step import build_state, random_batch
    from attngan_edu.config import make_config
    from attngan_edu.train import train_step, batch_to
    if device == 'cpu': return dict(skipped='no GPU')
    cfg = make_config('birds', overrides=dict(branch_num=2, batch_size=4, precision='fp32', channels_last=False, compile=False,
                                              lr_d=0.0))   # D stays put: Adam's first step is ~lr*sign(g), which flips on tiny g
    torch.backends.cudnn.allow_tf32 = torch.backends.cuda.matmul.allow_tf32 = False   # true float32 on the GPU too
    torch.manual_seed(0)
    s0 = build_state(cfg, 500, torch.device('cpu'), torch.float32, True)
    batch = random_batch(cfg, 500, 4, torch.Generator().manual_seed(0))
    randn, randn_like, out = torch.randn, torch.randn_like, {}
    for name in ('cpu', 'cuda'):
        dev, s = torch.device(name), copy.deepcopy(s0)          # deepcopy keeps the optimisers on the copied parameters
        for m in (s.G, s.G_ema, s.Ds, s.damsm): m.to(dev)        # in place: the optimisers still hold the same Parameters
        g = torch.Generator().manual_seed(1)
        torch.randn = lambda *size, device=None, dtype=None, **kw: randn(*size, generator=g, dtype=dtype).to(device or 'cpu')
        torch.randn_like = lambda x, **kw: randn(x.shape, generator=g, dtype=x.dtype).to(x.device)
        try: losses = train_step(s, batch_to(batch, dev, False), cfg, dev, torch.float32)
        finally: torch.randn, torch.randn_like = randn, randn_like
        grads = lambda mod: torch.cat([p.grad.detach().flatten().cpu() for p in mod.parameters() if p.grad is not None])
        out[name] = (losses.cpu(), grads(s.Ds), grads(s.G))
    (l0, d0, g0), (l1, d1, g1) = out['cpu'], out['cuda']
    rel = lambda a, b: float((a - b).norm() / a.norm().clamp_min(1e-12))
    r = dict(losses_cpu=[round(float(x), 5) for x in l0], losses_cuda=[round(float(x), 5) for x in l1],
             loss_rel_diff=rel(l0, l1), D_grad_rel_diff=rel(d0, d1), G_grad_rel_diff=rel(g0, g1),
             tolerance=dict(loss=1e-4, D_grad=1e-3, G_grad=1e-2))
    bad = [k for k, t in (('loss_rel_diff', 1e-4), ('D_grad_rel_diff', 1e-3), ('G_grad_rel_diff', 1e-2)) if not r[k] <= t]
    if bad: raise AssertionError(f'CPU and CUDA steps disagree on {bad}: {r}')
    return r


def part_throughput(device: str) -> dict:
    """bench/train_step.py at AttnGAN's birds widths, 3 branches (256 px), batch 20, with the DAMSM term: fp32, bf16,
    bf16 + channels_last, bf16 + channels_last + torch.compile; FLOPs of one step -> TFLOP/s and model FLOP utilisation."""
    import torch
    gpu = torch.cuda.get_device_name(0) if device == 'cuda' else platform.processor() or 'cpu'
    peak = peak_for(gpu) if device == 'cuda' else None
    size = ['--branches', '3', '--batch', '20'] if device == 'cuda' else ['--preset', 'tiny', '--branches', '2', '--batch', '4', '--threads', '1']
    variants = [('fp32', ['--precision', 'fp32']), ('bf16', ['--precision', 'bf16']),
                ('bf16 + channels_last', ['--precision', 'bf16', '--channels-last']),
                ('bf16 + channels_last + compile', ['--precision', 'bf16', '--channels-last', '--compile'])]
    if device == 'cpu': variants = variants[:1]        # bf16 and compile on a CPU are not what this checks
    rows = []
    for name, extra in variants:
        cmd = [PY, str(ROOT / 'bench' / 'train_step.py'), '--device', device, '--flops', '--json', '--warmup', '3', '--steps', '6', *size, *extra]
        t = time.time()
        try: p = subprocess.run(cmd, capture_output=True, text=True, timeout=240 if 'compile' in name else 120)
        except subprocess.TimeoutExpired as e:
            rows.append(dict(variant=name, error=f'timed out after {e.timeout} s')); continue
        if p.returncode: rows.append(dict(variant=name, error=p.stderr[-1500:])); continue
        r = json.loads(p.stdout.strip().splitlines()[-1])
        tflops = r['flops_per_step'] / r['s_per_step'] / 1e12
        dtype = 'bf16' if 'bf16' in name else 'fp32'
        rows.append(dict(variant=name, imgs_per_s=round(r['imgs_per_s'], 2), s_per_step=round(r['s_per_step'], 5),
                         peak_mem_gib=round(r['peak_mem_gib'], 2), gflops_per_step=round(r['flops_per_step'] / 1e9, 1),
                         tflops_per_s=round(tflops, 2), mfu=round(tflops / peak[dtype], 4) if peak and dtype in peak else None,
                         wall_s=round(time.time() - t, 1)))
        print('RESULT ' + json.dumps(dict(device_name=gpu, peak_tflops=peak, rows=rows, partial=True)), flush=True)
    return dict(device_name=gpu, peak_tflops=peak, rows=rows, errors=[r['variant'] for r in rows if 'error' in r],
                note='MFU against the dense bf16 tensor-core peak, for bf16 rows only: cuDNN runs fp32 convolutions in TF32 '
                     'on tensor cores, so the fp32 row reports FLOP/s without an MFU.')


def part_cuda_tests(device: str) -> dict:
    """The tests marked `gpu` (tests/test_cuda.py: AMP with and without GradScaler, channels_last, compile, pinned workers,
    CUDA RNG in checkpoints, sample/evaluate on the GPU; tests/test_ddp.py: torchrun with NCCL when there are 2+ GPUs).
    On a CPU they are collected and skipped: the files must still import."""
    try: import pytest  # noqa: F401
    except ImportError: raise RuntimeError('pytest is not installed for this python: add its wheels to WHEELS (bench/README.md)') from None
    p = subprocess.run([PY, '-m', 'pytest', '-q', '-rs', '-m', 'gpu', '-p', 'no:cacheprovider', str(ROOT / 'tests' / 'test_cuda.py'),
                        str(ROOT / 'tests' / 'test_ddp.py')], capture_output=True, text=True, cwd=ROOT)
    tail = p.stdout.strip().splitlines()[-1] if p.stdout.strip() else ''
    if p.returncode: raise AssertionError(f'the gpu tests failed ({tail}):\n{p.stdout[-2500:]}{p.stderr[-500:]}')
    return dict(summary=tail) if device == 'cuda' else dict(skipped='no GPU', summary=tail)


def gpu_cells(nbs: Path = ROOT / 'nbs') -> list[tuple[str, int, str]]:
    "(notebook, cell index, source) of every code cell flagged `#| gpu` in the course's notebooks"
    out = []
    for nb in sorted(nbs.glob('*.ipynb')):
        for i, c in enumerate(json.loads(nb.read_text())['cells']):
            src = ''.join(c['source'])
            if c['cell_type'] == 'code' and any(l.strip().replace(' ', '') == '#|gpu' for l in src.splitlines()[:3]):
                out.append((nb.name, i, src))
    return out


def part_notebook_gpu_cells(device: str, tmp: Path) -> dict:
    """Every `#| gpu` cell of the notebooks, each run on its own in a fresh namespace from nbs/ (a gpu cell imports what
    it needs, so it runs without the rest of its notebook; on a CPU its own guard makes it do nothing)."""
    os.environ['ATTNGAN_EDU_DATA'] = str(tmp / 'data')
    cells, ran = gpu_cells(), []
    if not cells: raise AssertionError('no `#| gpu` cell found in nbs/*.ipynb')
    os.chdir(ROOT / 'nbs')
    for nb, i, src in cells:
        t = time.time()
        try: exec(compile(src, f'{nb}[{i}]', 'exec'), {'__name__': '__main__'})
        except Exception as e: raise AssertionError(f'{nb} cell {i} failed: {type(e).__name__}: {e}') from e
        ran.append(dict(notebook=nb, cell=i, seconds=round(time.time() - t, 1)))
    return dict(cells=ran) if device == 'cuda' else dict(skipped='no GPU (each cell ran and did nothing)', cells=ran)


def small_judge(tmp: Path, device: str, n_train: int, n_test: int, steps: int) -> Path:
    """A SynBirds judge trained on the device (on the GPU: 720 birds, 300 steps, seconds): what evaluate scores with here.
    Training the standard judge (3,000 birds rendered on the CPU, 1,500 steps) took 100 s of the H200 check's training part."""
    from attngan_edu.judge import get_judge, judge_path
    kw = dict(n_train=n_train, n_test=n_test, steps=steps, root=tmp / 'judge')
    get_judge(device=device, verbose=False, **kw)
    return judge_path(**kw)


def part_training(device: str, tmp: Path) -> dict:
    """A real short run on SynBirds: train, kill -9 after the first checkpoint, --resume to the end (losses finite and
    continuing), then `attngan-edu evaluate` on the device."""
    env = {**os.environ, 'ATTNGAN_EDU_DATA': str(tmp / 'data'), 'PYTHONUNBUFFERED': '1'}
    cli = [PY, '-m', 'attngan_edu.cli']
    if device == 'cuda':
        args = ['--preset', 'birds', '--dataset', 'synbirds', '--synbirds_n_train', '400', '--synbirds_n_test', '64',
                '--synbirds_size', '256', '--damsm_epochs', '3', '--precision', 'bf16', '--channels_last', 'true',
                '--epochs', '0', '--max_steps', '120', '--checkpoint_every', '60', '--print_every', '20', '--sample_every', '0',
                *(['--compile', 'true'] if os.environ.get('GPU_CHECK_COMPILE') == '1' else [])]   # compile: timed in throughput
        steps, kill_after, ev = 120, 60, ['--judge', str(small_judge(tmp, device, 600, 120, 300)), '--n', '320', '--draws', '3']
    else:
        # 60 steps: on a fast CPU a 12-step run could reach its end in the second the loop waits before the kill
        args = ['--preset', 'tiny', '--epochs', '0', '--max_steps', '60', '--checkpoint_every', '4', '--print_every', '2', '--sample_every', '0']
        steps, kill_after, ev = 60, 4, ['--judge', str(small_judge(tmp, device, 24, 8, 4)), '--n', '8', '--draws', '2']
    base = [*cli, 'train', *args, '--device', device, '--out_dir', str(tmp / 'runs'), '--name', 'gpu-check', '--progress', 'false']
    run_dir = tmp / 'runs' / 'gpu-check'
    log = open(tmp / 'train1.log', 'w')
    p = subprocess.Popen(base, stdout=log, stderr=subprocess.STDOUT, env=env, cwd=ROOT)
    t0, killed_at = time.time(), None
    while p.poll() is None:                      # kill -9 once the first checkpoint is on disk
        recs = [json.loads(l) for l in open(run_dir / 'log.jsonl')] if (run_dir / 'log.jsonl').exists() else []
        if (run_dir / 'checkpoint.pt').exists() and any(r.get('step', 0) >= kill_after for r in recs):
            time.sleep(0.3); p.send_signal(signal.SIGKILL); p.wait(); killed_at = max(r.get('step', 0) for r in recs); break
        time.sleep(0.2)
    if killed_at is None: raise RuntimeError(f'the run ended (code {p.returncode}) before it could be killed: {open(tmp / "train1.log").read()[-2000:]}')
    first_s = time.time() - t0
    import torch
    ck_step = int(torch.load(run_dir / 'checkpoint.pt', map_location='cpu', weights_only=True)['step'])
    if ck_step >= steps: raise RuntimeError(f'the run reached its last step ({steps}) before the kill: nothing left to resume')
    q = subprocess.run([*base, '--resume'], capture_output=True, text=True, env=env, cwd=ROOT, timeout=900)
    if q.returncode: raise RuntimeError(f'--resume failed: {q.stderr[-2000:]}')
    recs = [json.loads(l) for l in open(run_dir / 'log.jsonl')]
    loss_recs = [r for r in recs if 'loss_G' in r]
    finite = all(all(v == v and abs(v) != float('inf') for k, v in r.items() if k.startswith('loss')) for r in loss_recs)
    resumed = [r['step'] for r in loss_recs if r['step'] > ck_step]
    if not finite: raise AssertionError('non-finite loss in the log')
    if not resumed or max(resumed) != steps: raise AssertionError(f'the resumed run did not reach step {steps}: {resumed}')
    t = time.time()
    e = subprocess.run([*cli, 'evaluate', '--checkpoint', str(run_dir), '--device', device, *ev], capture_output=True,
                       text=True, env=env, cwd=ROOT, timeout=900)
    if e.returncode: raise RuntimeError(f'evaluate failed: {e.stderr[-2000:]}')
    m = json.load(open(run_dir / 'metrics.json'))
    j = m.get('judge') or {}
    return dict(steps=steps, killed_after_step=killed_at, checkpoint_step=ck_step, first_process_s=round(first_s, 1),
                resumed_steps=[resumed[0], resumed[-1]], losses_finite=finite, last_losses={k: v for k, v in loss_recs[-1].items() if k.startswith('loss')},
                imgs_per_s_end=loss_recs[-1].get('imgs_per_s'), evaluate_s=round(time.time() - t, 1),
                r_precision_word=m['r_precision']['word'], attribute_accuracy=(j.get('attribute_accuracy') or {}).get('all'),
                judge_IS=(j.get('IS') or [None])[0])


# (function, time cap in seconds on a GPU; 240 each on a CPU). Estimated from the H200 timings of bench/README.md:
# about 5 + 20 + 120 (two compiles) + 20 + 100 + 130 s, near the 360 s budget; the caps only stop a hang.
PARTS = {'env': (part_env, 30), 'equivalence': (part_equivalence, 60), 'cuda_tests': (part_cuda_tests, 180),
         'notebook_gpu_cells': (part_notebook_gpu_cells, 60), 'training': (part_training, 150),
         'throughput': (part_throughput, 200)}
NEEDS_TMP = ('training', 'notebook_gpu_cells')


def fmt_mfu(x): return '-' if x is None else f'{x:.1%}'


def summary_md(res: dict) -> str:
    L = ['# gpu-check', '', f"device {res['device']}, {res['when']}, {res['wall_s']} s, "
         f"{'all parts passed' if res['ok'] else 'FAILED: ' + ', '.join(res['failed'])}", '']
    env = res['parts'].get('env', {}).get('result') or {}
    L.append(f"torch {env.get('torch')}, CUDA {env.get('cuda')}, driver {env.get('driver', '-')}, GPUs {env.get('gpus', '-')}, "
             f"bf16 {env.get('bf16_supported', '-')}")
    for name, p in res['parts'].items():
        L += ['', f"## {name}: {p['status']} ({p['seconds']} s)"]
        r = p.get('result') or {}
        if name == 'throughput' and r.get('rows'):
            L += ['', '| variant | images/s | s/step | peak GiB | GFLOP/step | TFLOP/s | MFU |', '|---|---|---|---|---|---|---|']
            L += [f"| {x['variant']} | error: {x['error'][-200:]!r} | | | | | |" if 'error' in x else f"| {x['variant']} | {x['imgs_per_s']} | {x['s_per_step']} | {x['peak_mem_gib']} | {x['gflops_per_step']} | "
                  f"{x['tflops_per_s']} | {fmt_mfu(x['mfu'])} |" for x in r['rows']]
        elif r: L.append('`' + json.dumps(r)[:1500] + '`')
        if p.get('error'): L.append('error: `' + p['error'][-1500:] + '`')
    return '\n'.join(L) + '\n'


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument('--device', default='cuda', choices=['cuda', 'cpu'])
    ap.add_argument('--parts', default=','.join(PARTS), help='comma-separated subset of ' + ', '.join(PARTS))
    ap.add_argument('--budget', type=float, default=360, help='seconds for all parts: a part gets at most what is left')
    ap.add_argument('--out', default='gpu_check.json'); ap.add_argument('--md', help='markdown summary (default: --out with .md)')
    ap.add_argument('--part', help=argparse.SUPPRESS); ap.add_argument('--tmp', help=argparse.SUPPRESS)
    a = ap.parse_args(argv)
    if a.part:                                   # child process: one part, one JSON line
        fn, _ = PARTS[a.part]
        r = fn(a.device, Path(a.tmp)) if a.part in NEEDS_TMP else fn(a.device)
        print('RESULT ' + json.dumps(r)); return
    t0, res = time.time(), dict(device=a.device, when=time.strftime('%Y-%m-%d %H:%M:%S'), parts={}, failed=[], ok=True)
    with tempfile.TemporaryDirectory(prefix='gpu_check_') as tmp:
        for name in a.parts.split(','):
            if name not in PARTS: raise SystemExit(f'gpu_check: unknown part {name!r}; parts: {", ".join(PARTS)}')
            cap = min(PARTS[name][1] if a.device == 'cuda' else 240, a.budget - (time.time() - t0))
            t = time.time(); entry = {}
            try:
                if cap < 10: raise subprocess.TimeoutExpired(name, 0)
                p = subprocess.Popen([PY, __file__, '--part', name, '--device', a.device, '--tmp', tmp], stdout=subprocess.PIPE,
                                     stderr=subprocess.PIPE, text=True, cwd=ROOT, start_new_session=True)
                timed_out = False
                try: out, err = p.communicate(timeout=cap)
                except subprocess.TimeoutExpired:                                # the part and every process it started
                    os.killpg(p.pid, signal.SIGKILL); out, err = p.communicate(); timed_out = True
                line = next((l for l in reversed(out.splitlines()) if l.startswith('RESULT ')), None)
                r = json.loads(line[7:]) if line else None                       # a part may print partial results
                if timed_out: entry = dict(status='failed', result=r, error=f'timed out after {cap:.0f} s (its cap, or what the budget left)')
                elif p.returncode or r is None or r.get('errors'):
                    entry = dict(status='failed', result=r, error=(err or out)[-3000:] if (p.returncode or r is None) else f"failed: {r['errors']}")
                else: entry = dict(status='skipped' if 'skipped' in r else 'passed', result=r)
            except subprocess.TimeoutExpired: entry = dict(status='failed', error=f'timed out after {max(cap, 0):.0f} s (its cap, or what the budget left)')
            entry['seconds'] = round(time.time() - t, 1)
            res['parts'][name] = entry
            if entry['status'] == 'failed': res['failed'].append(name); res['ok'] = False
            res['wall_s'] = round(time.time() - t0, 1)
            tmp_out = Path(a.out).with_suffix('.json.tmp'); tmp_out.write_text(json.dumps(res, indent=1)); os.replace(tmp_out, a.out)
            print(f"{name}: {entry['status']} ({entry['seconds']} s)" + (f" -- {entry['error'][-600:]}" if entry.get('error') else ''), flush=True)
    md = summary_md(res)
    print(md)
    Path(a.md or Path(a.out).with_suffix('.md')).write_text(md)
    if not res['ok']: sys.exit(f"gpu_check: failed parts: {', '.join(res['failed'])}")


if __name__ == '__main__':
    main()
