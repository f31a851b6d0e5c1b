"""What a learner pays for each notebook: its default path run top to bottom as Jupyter runs it (no IN_TEST, torch's
default threads), skipping the cells marked `slow` or `gpu`, each notebook in a fresh Python process: once with the
data caches already built, and with --first once as a learner's first run (an empty home folder, so every cache is
built by the notebook that first needs it, in reading order). Writes bench/notebook_times.json and .md.

    .venv/bin/python bench/notebook_times.py                  # every notebook of nbs/, caches built
    .venv/bin/python bench/notebook_times.py --first          # every notebook, from empty caches
    .venv/bin/python bench/notebook_times.py 05_stackganpp    # some of them (the others keep their recorded times)
"""
import argparse, json, os, platform, subprocess, sys, tempfile, time
from datetime import date
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
NBS, OUT = ROOT / 'nbs', ROOT / 'bench'
SKIP = {'slow', 'gpu'}


def run_one(path: Path) -> float:
    "Seconds to run the notebook's default path in this process (raises on the first failing cell)"
    from execnb.shell import CaptureShell
    from nbdev.process import NBProcessor
    nb = NBProcessor(path, process=True).nb
    def skip(cell):
        if cell.cell_type != 'code' or 'nbdev_export(' in cell.source: return True
        return bool(SKIP & set((getattr(cell, 'directives_', None) or {}).keys()))
    os.chdir(path.parent)
    t0 = time.perf_counter()
    CaptureShell(path).run_all(nb, exc_stop=True, preproc=skip)
    return time.perf_counter() - t0


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument('names', nargs='*', help='notebook names without .ipynb (default: all)')
    ap.add_argument('--first', action='store_true', help='from empty caches (a fresh home folder), as a first run')
    ap.add_argument('--one', help=argparse.SUPPRESS)
    a = ap.parse_args()
    if a.one:                                    # the child: one notebook, print its seconds
        print(json.dumps({'seconds': run_one(NBS / f'{a.one}.ipynb')})); return
    names = a.names or sorted(p.stem for p in NBS.glob('*.ipynb'))
    rec_path = OUT / 'notebook_times.json'
    rec = json.loads(rec_path.read_text()) if rec_path.is_file() else {}
    import torch                                 # only its version, for the record
    env = {k: v for k, v in os.environ.items() if k not in ('IN_TEST', 'ATTNGAN_EDU_DATA')}
    if a.first: env['HOME'] = tempfile.mkdtemp(prefix='first-run-home-')
    key = 'first_seconds' if a.first else 'seconds'
    for n in names:
        r = subprocess.run([sys.executable, __file__, '--one', n], capture_output=True, text=True, env=env, cwd=ROOT)
        if r.returncode: sys.exit(f"{n}: failed\n{r.stderr[-3000:]}")
        s = json.loads(r.stdout.strip().splitlines()[-1])['seconds']
        rec[n] = rec.get(n, {}) | {key: round(s, 1), 'date': str(date.today()), 'cpus': os.cpu_count(),
                                   'torch': torch.__version__, 'machine': platform.processor() or platform.machine()}
        print(f"{n}: {s:.1f} s", flush=True)
        rec_path.write_text(json.dumps(dict(sorted(rec.items())), indent=1) + '\n')
    fmt = lambda r, k: f"{r[k]:.0f}" if k in r else '–'
    rows = [f"| `{n}` | {fmt(r, 'seconds')} | {fmt(r, 'first_seconds')} | {r['date']}, {r['cpus']} CPUs, torch {r['torch']} |"
            for n, r in sorted(rec.items())]
    (OUT / 'notebook_times.md').write_text(
        "# Each notebook's default path, as a learner runs it in Jupyter\n\n"
        "`bench/notebook_times.py`: every code cell but those marked `slow` or `gpu`, top to bottom, in a fresh Python\n"
        "process, without `IN_TEST` (the sizes a learner gets), torch's default threads. *Caches built*: the data sets, the\n"
        "small encoders and runs the notebooks cache are already there; *first run*: an empty home folder, every notebook\n"
        "run in reading order, so each cache is built by the first notebook that needs it (A-notebooks last).\n\n"
        "| notebook | seconds, caches built | seconds, first run | measured on |\n|---|---|---|---|\n" + '\n'.join(rows) + '\n')


if __name__ == '__main__': main()
