"""Compare our training step with the original AttnGAN code's (issue #8: target >= 1.5x the original's images/s).

Runs bench/train_step.py (ours, `--no-damsm`) and bench/reference_step.py (the original taoxugit/AttnGAN code, whose
DAMSM terms are left out the same way) in fresh processes, interleaved — round r runs ours then the original for even r
and the original then ours for odd r — so that a change in the load of a shared machine hits both sides alike. Prints
one markdown row per branch count: the median over rounds of each side's median s/step, images/s, the speed-up
(our images/s / original images/s), G/D parameter counts, peak RSS and the load averages seen.

  git clone https://github.com/taoxugit/AttnGAN /path/to/AttnGAN        # not part of this repository
  python bench/compare_reference.py --reference /path/to/AttnGAN/code
  python bench/compare_reference.py --reference /path/to/AttnGAN/code --branches 1 2 --rounds 5 --steps 5 --raw
  python bench/compare_reference.py --reference /path/to/AttnGAN/code --branches 2 --ours-args=--channels-last
"""
import argparse, json, os, shlex, statistics, subprocess, sys, time
from pathlib import Path

HERE = Path(__file__).resolve().parent


def run(cmd: list[str], timeout: float) -> dict:
    "Run one benchmark process with --json -> its dict (the last stdout line)"
    p = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, cwd=HERE.parent,
                       env={**os.environ, 'OMP_WAIT_POLICY': os.environ.get('OMP_WAIT_POLICY', 'PASSIVE')})
    if p.returncode != 0: raise RuntimeError(f"{' '.join(cmd)} failed ({p.returncode}):\n{p.stderr[-3000:]}")
    return json.loads(p.stdout.strip().splitlines()[-1])


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument('--reference', required=True, help="the code/ folder of a taoxugit/AttnGAN checkout")
    p.add_argument('--branches', type=int, nargs='+', default=[1, 2, 3], choices=[1, 2, 3])
    p.add_argument('--batch', type=int, default=4)
    p.add_argument('--threads', type=int, default=2)
    p.add_argument('--rounds', type=int, default=3)
    p.add_argument('--warmup', type=int, default=2)
    p.add_argument('--steps', type=int, default=5)
    p.add_argument('--steps3', type=int, default=0, help='steps for 3 branches (0: --steps)')
    p.add_argument('--device', default='cpu')
    p.add_argument('--timeout', type=float, default=1800, help='seconds per process')
    p.add_argument('--ours-args', default='', metavar='FLAGS',
                   help='extra flags for train_step.py only, written with "=": --ours-args=--channels-last, '
                        '--ours-args="--precision bf16" (default: none, i.e. fp32, contiguous)')
    p.add_argument('--malloc', default='default', choices=['default', 'kept'],
                   help="glibc malloc on BOTH sides: default, or kept (freed memory kept for reuse, as attngan-edu runs)")
    p.add_argument('--raw', action='store_true', help='also print every run')
    p.add_argument('--json', metavar='FILE', help='write all runs to FILE')
    a = p.parse_args(argv)
    py = sys.executable
    common = ['--batch', str(a.batch), '--threads', str(a.threads), '--warmup', str(a.warmup), '--device', a.device,
              '--malloc', a.malloc, '--json']
    runs = []
    for br in a.branches:
        steps = str(a.steps3 if br == 3 and a.steps3 else a.steps)
        ours = [py, str(HERE / 'train_step.py'), '--model', 'attngan', '--branches', str(br), '--no-damsm', '--steps', steps, *common, *shlex.split(a.ours_args)]
        theirs = [py, str(HERE / 'reference_step.py'), '--reference', a.reference, '--branches', str(br), '--steps', steps, *common]
        for r in range(a.rounds):
            order = [('ours', ours), ('original', theirs)] if r % 2 == 0 else [('original', theirs), ('ours', ours)]
            for side, cmd in order:
                load0 = os.getloadavg()[0]
                res = run(cmd, a.timeout)
                res.update(side=side, round=r, loadavg_start=load0, when=time.strftime('%Y-%m-%d %H:%M:%S UTC', time.gmtime()))
                runs.append(res)
                if a.raw:
                    print(f"  branches {br} round {r} {side:8s}: {res['s_per_step']:.3f} s/step ({res['imgs_per_s']:.2f} images/s), "
                          f"load {load0:.1f} -> {res['loadavg']:.1f}", file=sys.stderr, flush=True)
    if a.json: Path(a.json).write_text(json.dumps(runs, indent=1))
    print(f"| branches → px | steps | ours s/step | ours images/s | original s/step | original images/s | speed-up (ours/original) "
          f"| per-round speed-ups (median) | G params ours / orig | D params ours / orig | peak RSS GiB ours / orig | load avg |")
    print('|' + '---|' * 12)
    for br in a.branches:
        o = [x for x in runs if x['branches'] == br and x['side'] == 'ours']
        t = [x for x in runs if x['branches'] == br and x['side'] == 'original']
        so, st = statistics.median(x['s_per_step'] for x in o), statistics.median(x['s_per_step'] for x in t)
        per_round = [tt['s_per_step'] / oo['s_per_step'] for oo, tt in zip(sorted(o, key=lambda x: x['round']), sorted(t, key=lambda x: x['round']))]
        loads = [x['loadavg_start'] for x in o + t] + [x['loadavg'] for x in o + t]
        n_steps = a.steps3 if br == 3 and a.steps3 else a.steps
        print(f"| {br} → {64 * 2 ** (br - 1)} | {a.warmup}+{n_steps} | {so:.3f} | {a.batch / so:.2f} | {st:.3f} | {a.batch / st:.2f} | "
              f"**{st / so:.2f}×** | {', '.join(f'{v:.2f}' for v in per_round)} ({statistics.median(per_round):.2f}) | {o[0]['G_params'] / 1e6:.2f} M / {t[0]['G_params'] / 1e6:.2f} M | "
              f"{o[0]['D_params'] / 1e6:.2f} M / {t[0]['D_params'] / 1e6:.2f} M | "
              f"{max(x['peak_mem_gib'] for x in o):.2f} / {max(x['peak_mem_gib'] for x in t):.2f} | {min(loads):.1f}–{max(loads):.1f} |")
    return runs


if __name__ == '__main__':
    main()
