"""Two CPU processes with gloo (and, on a machine with 2+ GPUs, one process per GPU with NCCL), launched by torchrun
(python -m torch.distributed.run): after a few steps every rank holds identical weights (G, its EMA, the discriminators, batch-norm statistics included), each saw a different shard of
the data, and only rank 0 wrote files into the run folder.

Run as a script, this file is the worker that torchrun starts."""
import hashlib, json, os, subprocess, sys
from pathlib import Path
import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]


def digest(module) -> str:
    "sha1 over every parameter and buffer (bit-exact equality)"
    h = hashlib.sha1()
    for k, v in module.state_dict().items():
        h.update(k.encode()); h.update(v.detach().cpu().contiguous().numpy().tobytes())
    return h.hexdigest()


def worker(out_dir: str, data_dir: str, damsm_path: str, results: str, device: str = 'cpu'):
    from attngan_edu.config import make_config
    from attngan_edu import train as T
    out = Path(out_dir).resolve()
    writes = []
    def audit(event, args):                      # every file this process opens for writing under the run folder
        if event == 'open' and args and isinstance(args[0], (str, bytes, os.PathLike)):
            mode, flags = (args[1] if len(args) > 1 else None), (args[2] if len(args) > 2 else 0)
            writing = (isinstance(mode, str) and any(c in mode for c in 'wax+')) or (
                mode is None and isinstance(flags, int) and flags & (os.O_WRONLY | os.O_RDWR | os.O_CREAT))
            p = Path(os.fsdecode(args[0])).resolve()
            if writing and out in p.parents: writes.append(str(p))
        elif event in ('os.rename', 'os.remove', 'os.mkdir'):     # os.replace raises 'os.rename' (src, dst, ...)
            p = Path(os.fsdecode(args[1] if event == 'os.rename' else args[0])).resolve()
            if out in p.parents or p == out: writes.append(f'{event} {p}')
    sys.addaudithook(audit)
    seen = []
    real_step = T.train_step
    def spy(s, batch, *a, **kw):                 # which items each rank trains on
        seen.append(batch['class_id'].tolist()); return real_step(s, batch, *a, **kw)
    T.train_step = spy
    cfg = make_config('tiny', overrides={'out_dir': out_dir, 'data_dir': data_dir, 'damsm_path': damsm_path, 'device': device,
                                         'max_steps': 3, 'checkpoint_every': 2, 'print_every': 1, 'sample_every': 0})
    res = T.train(cfg)
    rank = int(os.environ['RANK'])
    s = res.state
    Path(results, f'rank{rank}.json').write_text(json.dumps(dict(
        G=digest(s.G), G_ema=digest(s.G_ema), Ds=digest(s.Ds), step=res.step, writes=writes,
        world=int(os.environ['WORLD_SIZE']), seen=seen)))


@pytest.fixture(scope='module')
def prepared(tmp_path_factory):
    "SynBirds and a DAMSM built once, before the two processes start (they then only read them)"
    from attngan_edu.config import make_config
    from attngan_edu import train as T
    torch.set_num_threads(1)
    base = tmp_path_factory.mktemp('ddp')
    cfg = make_config('tiny', overrides={'out_dir': str(base / 'cache'), 'data_dir': str(base / 'data')})
    root = T.dataset_root(cfg)
    _, damsm_path = T.get_damsm(cfg, root, T.make_dataset(cfg, root).vocab, torch.device('cpu'), log=lambda m: None)
    return base, str(damsm_path)


def torchrun(base, damsm_path, n: int, device: str, tag: str) -> tuple[Path, list[dict]]:
    "n processes of worker() under torchrun -> (their run folder, each rank's report)"
    out, results = base / f'runs-{tag}', base / f'results-{tag}'
    results.mkdir()
    env = {**os.environ, 'OMP_NUM_THREADS': '1', 'PYTHONPATH': str(ROOT)}
    cmd = [sys.executable, '-m', 'torch.distributed.run', '--standalone', '--nproc_per_node', str(n), __file__, str(out),
           str(base / 'data'), damsm_path, str(results), device]
    r = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    ranks = [json.loads((results / f'rank{i}.json').read_text()) for i in range(n)]
    assert all(x['world'] == n and x['step'] == 3 for x in ranks)
    for k in ('G', 'G_ema', 'Ds'): assert len({x[k] for x in ranks}) == 1, f'{k} differs between ranks'
    return out, ranks


@pytest.mark.gpu
@pytest.mark.skipif(torch.cuda.device_count() < 2, reason='needs 2 or more CUDA GPUs')
def test_one_process_per_gpu_nccl(prepared):
    "torchrun on every GPU of the machine (NCCL): identical weights on every rank after 3 steps"
    base, damsm_path = prepared
    torchrun(base, damsm_path, torch.cuda.device_count(), 'cuda', 'nccl')


def test_two_processes_gloo(prepared):
    base, damsm_path = prepared
    out, (r0, r1) = torchrun(base, damsm_path, 2, 'cpu', 'gloo')
    # the ranks trained on different shards of the data
    assert r0['seen'] != r1['seen']
    # only rank 0 wrote into the run folder
    assert r1['writes'] == [], r1['writes']
    assert any(w.endswith('.tmp') and '/.checkpoint.pt.' in w for w in r0['writes'])    # atomic_path's temporary file
    run = out / 'tiny'
    assert {p.name for p in run.iterdir()} >= {'checkpoint.pt', 'config.toml', 'log.jsonl', 'samples'}
    ck = torch.load(run / 'checkpoint.pt', weights_only=True)
    assert ck['step'] == 3 and len(ck['rng']) == 2                 # one RNG state per rank
    assert not torch.equal(ck['rng'][0]['torch'], ck['rng'][1]['torch'])
    # the saved generator is the one both ranks hold
    from attngan_edu.train import build_gan
    from attngan_edu.config import Config
    G, _ = build_gan(Config(**ck['config'])); G.load_state_dict(ck['G'])
    assert digest(G) == r0['G']


if __name__ == '__main__':
    worker(*sys.argv[1:6])
