"""bench/gpu_check.py (make gpu-check) in its CPU mode: every part runs with tiny sizes, the parts that need CUDA say
so, and a part that fails or runs out of time is named in the JSON, the markdown and the exit status."""
import json, os, subprocess, sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _run(tmp_path, *args, timeout=300):
    env = dict(os.environ, OMP_NUM_THREADS='1', ATTNGAN_EDU_DATA=str(tmp_path / 'data'))
    p = subprocess.run([sys.executable, str(ROOT / 'bench' / 'gpu_check.py'), '--device', 'cpu', '--out', str(tmp_path / 'gc.json'),
                        *args], capture_output=True, text=True, env=env, cwd=ROOT, timeout=timeout)
    return p, json.loads((tmp_path / 'gc.json').read_text())


def test_gpu_check_runs_end_to_end_on_a_cpu(tmp_path):
    p, res = _run(tmp_path)
    assert p.returncode == 0, p.stdout + p.stderr
    parts = res['parts']
    assert list(parts) == ['env', 'equivalence', 'cuda_tests', 'notebook_gpu_cells', 'training', 'throughput'] and res['ok']
    assert parts['equivalence']['status'] == 'skipped' and parts['equivalence']['result'] == {'skipped': 'no GPU'}
    assert parts['cuda_tests']['status'] == 'skipped' and 'skipped' in parts['cuda_tests']['result']['summary']   # collected, skipped
    cells = parts['notebook_gpu_cells']['result']['cells']          # each gpu cell ran alone (and did nothing without a GPU)
    assert parts['notebook_gpu_cells']['status'] == 'skipped' and {c['notebook'] for c in cells} >= {'09_train.ipynb'}
    tr = parts['training']['result']
    assert tr['losses_finite'] and tr['resumed_steps'][-1] == tr['steps'] and tr['checkpoint_step'] >= tr['killed_after_step']
    row = parts['throughput']['result']['rows'][0]
    assert row['variant'] == 'fp32' and row['imgs_per_s'] > 0 and row['gflops_per_step'] > 0
    md = (tmp_path / 'gc.md').read_text()
    assert 'all parts passed' in md and '| fp32 |' in md


def test_a_part_out_of_time_is_named_and_fails_the_check(tmp_path):
    p, res = _run(tmp_path, '--parts', 'training,throughput', '--budget', '3')   # a short run alone takes over 10 s
    assert p.returncode == 1 and 'failed parts: training, throughput' in p.stderr
    assert res['failed'] == ['training', 'throughput'] and 'timed out' in res['parts']['training']['error']
    assert '## training: failed' in (tmp_path / 'gc.md').read_text()
