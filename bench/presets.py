"""Time each config preset's training step (images/s, peak memory) and one DAMSM pretraining step.

Each measurement runs in its own process (so peak memory is that preset's alone): the GAN step through
bench/train_step.py (attngan_edu.train.train_step on random tensors at the preset's widths, batch and branches), the
DAMSM step as DAMSM.forward + backward + Adam step at the preset's DAMSM batch and image size. Prints a Markdown table.

  python bench/presets.py --threads 2                       # all presets on the CPU
  python bench/presets.py --presets birds coco --device cuda --precision bf16
"""
import argparse, json, os, resource, statistics, subprocess, sys, time
from pathlib import Path
os.environ.setdefault('OMP_WAIT_POLICY', 'PASSIVE')   # fixed, so timings compare (the CLI picks by load)
import torch

HERE = Path(__file__).resolve().parent


def damsm_step(preset: str, device: str, threads: int, warmup: int, steps: int) -> dict:
    "Median s/step of one DAMSM pretraining step (forward, L_DAMSM, backward, clip, Adam) on random images and captions"
    from attngan_edu.config import make_config
    from attngan_edu.train import damsm_config, resolve_device, keep_freed_memory
    from attngan_edu.damsm import DAMSM
    keep_freed_memory()                        # as the attngan-edu command does (train_step.py does it too)
    if threads: torch.set_num_threads(threads)
    cfg = make_config(preset)
    dev = resolve_device(device)
    V = 5450 if cfg.dataset != 'synbirds' else 100          # CUB's vocabulary has ~5.4k words; SynBirds' ~100
    dc = damsm_config(cfg, V)
    torch.manual_seed(0)
    m = DAMSM(dc, inception_weights=None).to(dev).train()
    opt = torch.optim.Adam([p for p in m.parameters() if p.requires_grad], lr=dc.lr, betas=(0.5, 0.999))
    g = torch.Generator().manual_seed(0)
    B, T = dc.batch_size, dc.words_num
    imgs = (torch.rand(B, 3, dc.image_size, dc.image_size, generator=g) * 2 - 1).to(dev)
    cap_len = torch.randint(max(2, T // 3), T + 1, (B,), generator=g)
    caption = torch.randint(2, V, (B, T), generator=g); caption[torch.arange(T)[None] >= cap_len[:, None]] = 0
    class_id = torch.arange(B, device=dev)
    sync = (lambda: torch.cuda.synchronize(dev)) if dev.type == 'cuda' else (lambda: None)
    times = []
    for _ in range(warmup + steps):
        sync(); t = time.perf_counter()
        out = m(imgs, caption.to(dev), cap_len, class_id)
        opt.zero_grad(set_to_none=True); out.total.backward()
        torch.nn.utils.clip_grad_norm_(m.text_enc.parameters(), dc.grad_clip); opt.step()
        sync(); times.append(time.perf_counter() - t)
    med = statistics.median(times[warmup:])
    peak = torch.cuda.max_memory_allocated(dev) if dev.type == 'cuda' else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    return dict(damsm_batch=B, damsm_size=dc.image_size, damsm_s_per_step=med, damsm_imgs_per_s=B / med, damsm_peak_gib=peak / 2 ** 30)


def run_json(cmd: list[str], timeout: int) -> dict:
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
    if r.returncode: return {'error': (r.stderr.strip().splitlines() or ['?'])[-1]}
    return json.loads(r.stdout.strip().splitlines()[-1])


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument('--presets', nargs='*', default=['tiny', 'synbirds-cpu', 'birds', 'coco'])
    p.add_argument('--device', default='cpu'); p.add_argument('--precision', default='auto')
    p.add_argument('--threads', type=int, default=0); p.add_argument('--warmup', type=int, default=1)
    p.add_argument('--steps', type=int, default=3); p.add_argument('--timeout', type=int, default=3600)
    p.add_argument('--damsm-worker', help=argparse.SUPPRESS)
    p.add_argument('--out', help='also write the results as JSON lines to this file')
    a = p.parse_args(argv)
    if a.damsm_worker:
        print(json.dumps(damsm_step(a.damsm_worker, a.device, a.threads, a.warmup, a.steps))); return
    from attngan_edu.config import make_config
    rows = []
    for name in a.presets:
        cfg = make_config(name)
        gan = run_json([sys.executable, str(HERE / 'train_step.py'), '--preset', name, '--branches', str(cfg.branch_num),
                        '--batch', str(cfg.batch_size), '--threads', str(a.threads), '--device', a.device, '--precision', a.precision,
                        '--warmup', str(a.warmup), '--steps', str(a.steps), '--json']
                       + (['--channels-last'] if cfg.channels_last and a.device != 'cpu' else []), a.timeout)
        dam = run_json([sys.executable, __file__, '--damsm-worker', name, '--device', a.device, '--threads', str(a.threads),
                        '--warmup', str(a.warmup), '--steps', str(a.steps)], a.timeout)
        row = {**gan, **dam, 'preset': name}
        rows.append(row)
        if a.out:
            with open(a.out, 'a') as f: f.write(json.dumps(row) + '\n')
        print(f"# {name}: {json.dumps({k: v for k, v in row.items() if k != 'all_s'})}", file=sys.stderr, flush=True)
    print('| preset | branches → px | batch | device, threads | GAN step s | GAN images/s | peak GiB | DAMSM batch @ px | DAMSM step s | DAMSM images/s | DAMSM peak GiB |')
    print('|---|---|---|---|---|---|---|---|---|---|---|')
    for r in rows:
        if 'error' in r and 's_per_step' not in r: print(f"| {r['preset']} | error: {r['error']} |"); continue
        print(f"| {r['preset']} | {r['branches']} → {r['size']} | {r['batch']} | {r['device']} {r['dtype']}, {r['threads']} | "
              f"{r['s_per_step']:.3f} | {r['imgs_per_s']:.2f} | {r['peak_mem_gib']:.2f} | "
              + (f"{r['damsm_batch']} @ {r['damsm_size']} | {r['damsm_s_per_step']:.3f} | {r['damsm_imgs_per_s']:.1f} | {r['damsm_peak_gib']:.2f} |"
                 if 'damsm_s_per_step' in r else f"error: {r.get('error')} | | | |"))


if __name__ == '__main__':
    main()
