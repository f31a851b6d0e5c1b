#!/usr/bin/env python
"""Latency of one AttentionExplorer update on this machine (the target: < 0.5 s on a CPU for the reduced model).

Each kind of update is the widget change a reader makes: toggling a word, moving the opacity or the stage (redraw only),
a new noise seed or one more typed character (text encoder + generator + redraw), a word swap (two captions in one
batch), and in DAMSM mode a new test image (both encoders + redraw). The time is the wall clock of the `.value = ...`
assignment, which runs the observers synchronously — everything the kernel does before the new PNG can be sent.

  .venv/bin/python bench/explorer_latency.py                        # random weights, synbirds-cpu shapes (no data needed)
  .venv/bin/python bench/explorer_latency.py --run runs/synbirds-cpu # a trained run, DAMSM mode included
  .venv/bin/python bench/explorer_latency.py --threads 1 2 0 --n 30   # 0: torch's default thread count
"""
import argparse, json, os, platform, statistics, sys, time

import torch


def random_explorer(preset: str, tile: int):
    "An explorer over randomly initialised models with the shapes of a CLI preset (costs are those of a trained model)"
    from attngan_edu.config import make_config
    from attngan_edu.train import build_gan
    from attngan_edu.encoders import TextEncoder
    from attngan_edu.text import Vocab, tokenize
    from attngan_edu.synbirds import COLORS, PART_NAMES
    from attngan_edu.viz import DEFAULT_CAPTION
    from attngan_edu.explorer import AttentionExplorer
    cfg = make_config(preset)
    torch.manual_seed(0)
    G, _ = build_gan(cfg)
    words = tokenize(DEFAULT_CAPTION + ' short beak tail feathers with small large ' + ' '.join(COLORS + PART_NAMES))
    vocab = Vocab.build([words])
    te = TextEncoder(len(vocab), emb_dim=cfg.damsm_emb_dim, D=cfg.embedding_dim)
    return AttentionExplorer(G, te, vocab, words_num=cfg.words_num, tile=tile), f'random weights, preset {preset!r}'


def measure(ex, n: int) -> dict:
    "{kind: [seconds of each update]}"
    out = {k: [] for k in ('word', 'opacity', 'stage', 'seed', 'type_char', 'swap', 'damsm_image')}
    words = ex.exploration.words
    stages = [v for _, v in ex.stage.options]
    caption = ex.caption.value
    def timed(kind, widget, value):
        if kind in ('seed', 'type_char', 'swap', 'damsm_image'):          # the worst case: nothing cached
            ex._cache.clear(); ex._damsm_cache.clear()
        t0 = time.perf_counter(); widget.value = value; out[kind].append(time.perf_counter() - t0)
        if not ex.status.value.startswith('<small>'): raise RuntimeError(f"update {kind} failed: {ex.status.value}")
    for i in range(n):
        timed('word', ex.word, (ex.word.value + 1) % len(words))
        timed('opacity', ex.opacity, round(0.3 + 0.05 * (i % 8), 2))
        if len(stages) > 1: timed('stage', ex.stage, stages[i % len(stages)])
        timed('seed', ex.seed, 100 + i)                                  # the generator runs
        timed('type_char', ex.caption, caption + ' ' + 'and a short beak'[: 1 + i % 15])
        ex.caption.value = caption
        ex.word.value = 0
        timed('swap', ex.swap_to, ['blue', 'green', 'white', 'black', 'yellow'][i % 5] if i % 2 == 0 else 'red')
        ex.swap_to.value = ''
    if 'DAMSM' in ex.mode.options:
        ex.mode.value = 'DAMSM'
        for i in range(n): timed('damsm_image', ex.item, (i + 1) % (ex.item.max + 1))
        ex.mode.value = 'generate'
    return {k: v for k, v in out.items() if v}


def summary(times: dict) -> dict:
    return {k: dict(n=len(v), median_ms=round(statistics.median(v) * 1000, 1),
                    p90_ms=round(sorted(v)[int(0.9 * (len(v) - 1))] * 1000, 1), max_ms=round(max(v) * 1000, 1))
            for k, v in times.items()}


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument('--run', help='a run folder of `attngan-edu train` (default: random weights with --preset shapes)')
    p.add_argument('--preset', default='synbirds-cpu', help='CLI preset whose model shapes to use without --run')
    p.add_argument('--n', type=int, default=20, help='updates of each kind')
    p.add_argument('--threads', type=int, nargs='*', default=[1], help="the explorer's torch threads to try (0: torch's default)")
    p.add_argument('--tile', type=int, default=128, help='display size of each picture tile')
    args = p.parse_args(argv)
    from attngan_edu.explorer import AttentionExplorer
    if args.run: ex, what = AttentionExplorer.from_run(args.run, tile=args.tile), f'run {args.run}'
    else: ex, what = random_explorer(args.preset, args.tile)
    cfg = ex.G.cfg
    print(f"{what}: {cfg.branch_num} stages {[64 * 2 ** i for i in range(cfg.branch_num)]} px, ngf {cfg.ngf}, D {cfg.D}; "
          f"torch {torch.__version__}, {platform.processor() or platform.machine()}, {os.cpu_count()} CPUs, "
          f"load average {os.getloadavg()[0]:.1f}")
    results = {}
    for t in args.threads:
        ex.threads = t or None                                           # 0 -> None: leave torch's setting
        measure(ex, 2)                                                   # warm-up: first calls allocate
        res = summary(measure(ex, args.n))
        results[t] = res
        name = f"{t} thread{'s' * (t > 1)}" if t else f"torch's default ({torch.get_num_threads()})"
        print(f"\nexplorer threads: {name}\n  {'update':<12} {'median':>8} {'p90':>8} {'max':>8}   (ms, {args.n} updates each)")
        for k, r in res.items(): print(f"  {k:<12} {r['median_ms']:>8} {r['p90_ms']:>8} {r['max_ms']:>8}")
        worst = max(r['median_ms'] for r in res.values())
        print(f"  slowest median update: {worst} ms ({'under' if worst < 500 else 'OVER'} the 500 ms target)")
    print(json.dumps({'what': what, 'results': results}))
    return 0


if __name__ == '__main__':
    sys.exit(main())
