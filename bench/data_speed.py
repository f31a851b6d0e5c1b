"""How fast SynBirds is built and loaded.

    .venv/bin/python bench/data_speed.py [--n 2000] [--size 256] [--workers 2] [--root DIR]

Times `make_synbirds` for `n` images at `size` px with `workers` processes, then iterates once over a
`TextImageDataset` of the result through a DataLoader with 2 workers (base_size 64, 3 branches, batch 32),
without and with the ground-truth masks. Prints one markdown table row (header first). 'build CPU s' is the CPU time
the build used in all processes: on an idle machine, wall time is about that divided by the number of workers."""
import argparse, os, resource, shutil, tempfile, time
from pathlib import Path
import torch
from attngan_edu.synbirds import make_synbirds
from attngan_edu.data import TextImageDataset, collate_sorted

def loader_rate(root, with_truth, workers=2, batch_size=32):
    ds = TextImageDataset(root, 'train', base_size=64, branch_num=3, with_truth=with_truth)
    dl = torch.utils.data.DataLoader(ds, batch_size=batch_size, shuffle=True, num_workers=workers, collate_fn=collate_sorted)
    t = time.perf_counter(); n = 0
    for b in dl: n += len(b['key'])
    return n / (time.perf_counter() - t)

def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument('--n', type=int, default=2000); p.add_argument('--size', type=int, default=256)
    p.add_argument('--workers', type=int, default=2); p.add_argument('--root', default=None)
    a = p.parse_args()
    tmp = Path(a.root or tempfile.mkdtemp(prefix='synbirds-bench-'))
    root = tmp/'synbirds'
    if root.exists(): shutil.rmtree(root)
    n_test = a.n // 5
    def cpu():
        return sum(getattr(resource.getrusage(w), f) for w in (resource.RUSAGE_SELF, resource.RUSAGE_CHILDREN)
                   for f in ('ru_utime', 'ru_stime'))
    t, c = time.perf_counter(), cpu()
    make_synbirds(root, a.n - n_test, n_test, a.size, seed=0, workers=a.workers)
    build, build_cpu = time.perf_counter() - t, cpu() - c   # CPU seconds: what the build costs on an idle machine
    plain, truth = loader_rate(root, False), loader_rate(root, True)
    print('| images | px | build workers | build wall s | build CPU s | images/s | loader items/s | loader items/s (masks) | CPUs | load avg |')
    print('|---|---|---|---|---|---|---|---|---|---|')
    print(f'| {a.n} | {a.size} | {a.workers} | {build:.1f} | {build_cpu:.1f} | {a.n / build:.0f} | {plain:.0f} | {truth:.0f} | '
          f'{os.cpu_count()} | {os.getloadavg()[0]:.1f} |')
    if a.root is None: shutil.rmtree(tmp)

if __name__ == '__main__': main()
