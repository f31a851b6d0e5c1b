"""Time one full GAN training step (D update on every scale + G update with L_DAMSM) on random tensors.

The step is attngan_edu.train.train_step itself (the code the training loop runs), at AttnGAN's birds widths by default
(ngf 32, ndf 64, D 256, N_z = N_g = 100, R_NUM 2, T = 18); the text encoder is frozen, as in training. Prints the median
seconds per step after warm-up and the images per second.

  python bench/train_step.py --model attngan --branches 2 --batch 4 --threads 2
  python bench/train_step.py --branches 3 --batch 20 --device cuda --precision bf16 --channels-last
  python bench/train_step.py --model dfgan --preset synbirds-cpu --batch 16 --threads 2     # one stage at 64 px
"""
import argparse, copy, json, os, resource, statistics, sys, time
if os.environ.get('OMP_WAIT_POLICY') == 'UNSET': del os.environ['OMP_WAIT_POLICY']
else: os.environ.setdefault('OMP_WAIT_POLICY', 'PASSIVE')   # fixed, so timings compare (the CLI picks by load)
import torch


def build_state(cfg, vocab_size: int, device, dtype, damsm: bool):
    from attngan_edu.train import TrainState, build_gan, grad_scaler, adam
    from attngan_edu.damsm import DAMSM, DAMSMConfig
    G, Ds = build_gan(cfg)
    fmt = torch.channels_last if cfg.channels_last else torch.contiguous_format
    G, Ds = G.to(device, memory_format=fmt), Ds.to(device, memory_format=fmt)
    dm = DAMSM(DAMSMConfig(vocab_size=vocab_size, words_num=cfg.words_num, emb_dim=cfg.damsm_emb_dim, D=cfg.embedding_dim,
                           ndf=cfg.damsm_ndf, image_size=cfg.base_size * 2 ** (cfg.branch_num - 1)), inception_weights=None)
    dm = dm.to(device).freeze()
    betas = (cfg.beta1, cfg.beta2)
    return TrainState(G, copy.deepcopy(G).eval().requires_grad_(False), Ds,
                      adam(G.parameters(), cfg.lr_g, betas), adam(Ds.parameters(), cfg.lr_d, betas),   # as train() builds them
                      grad_scaler(device, dtype), grad_scaler(device, dtype), dm)


def random_batch(cfg, vocab_size: int, B: int, g: torch.Generator) -> dict:
    T = cfg.words_num
    cap_len = torch.randint(max(2, T // 3), T + 1, (B,), generator=g).sort(descending=True).values
    caption = torch.randint(2, vocab_size, (B, T), generator=g)
    caption[torch.arange(T)[None] >= cap_len[:, None]] = 0
    return dict(imgs=[torch.rand(B, 3, cfg.base_size * 2 ** i, cfg.base_size * 2 ** i, generator=g) * 2 - 1
                      for i in range(cfg.branch_num)],
                caption=caption, cap_len=cap_len, class_id=torch.arange(B))


def time_steps(cfg, B: int, device, dtype, warmup: int, steps: int, vocab_size: int = 5450, damsm: bool = True,
               flops: bool = False) -> dict:
    "Median s/step of attngan_edu.train.train_step after `warmup` steps, images/s, peak memory; flops: FLOPs of one step"
    from attngan_edu.train import train_step, batch_to, generate, d_losses, g_adv_losses
    torch.manual_seed(0)
    s = build_state(cfg, vocab_size, device, dtype, damsm)
    g = torch.Generator().manual_seed(0)
    batch = batch_to(random_batch(cfg, vocab_size, B, g), device, cfg.channels_last)
    compiled = None
    if cfg.compile:
        compiled = {'generate': torch.compile(generate), 'd_losses': torch.compile(d_losses), 'g_adv_losses': torch.compile(g_adv_losses)}
    sync = (lambda: torch.cuda.synchronize(device)) if device.type == 'cuda' else (lambda: None)
    n_flops = None
    if flops:                                   # one eager step under the counter (it sees aten ops, not compiled kernels)
        from torch.utils.flop_counter import FlopCounterMode
        with FlopCounterMode(display=False) as fc: train_step(s, batch, cfg, device, dtype, None)
        n_flops = fc.get_total_flops()
    if device.type == 'cuda': torch.cuda.reset_peak_memory_stats(device)
    times = []
    for i in range(warmup + steps):
        sync(); t = time.perf_counter()
        losses = train_step(s, batch, cfg, device, dtype, compiled)
        sync(); times.append(time.perf_counter() - t)
    assert torch.isfinite(losses).all(), losses
    med = statistics.median(times[warmup:])
    peak = (torch.cuda.max_memory_allocated(device) if device.type == 'cuda'
            else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024)   # CPU: peak RSS of this process (Linux: KiB)
    return dict(s_per_step=med, imgs_per_s=B / med, peak_mem_gib=peak / 2 ** 30, warmup_s=sum(times[:warmup]), flops_per_step=n_flops,
                all_s=[round(t, 4) for t in times],
                G_params=sum(p.numel() for p in s.G.parameters()), D_params=sum(p.numel() for p in s.Ds.parameters()))


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument('--model', default='attngan', choices=['attngan', 'stackganpp', 'dfgan'])
    p.add_argument('--branches', type=int, default=2, choices=[1, 2, 3])
    p.add_argument('--batch', type=int, default=4)
    p.add_argument('--threads', type=int, default=0, help='torch.set_num_threads (0: leave the default)')
    p.add_argument('--no-damsm', action='store_true', help='leave out L_DAMSM (lam = 0): no DAMSM image encoder in the G step')
    p.add_argument('--device', default='cpu')
    p.add_argument('--precision', default='auto', choices=['auto', 'fp32', 'bf16', 'fp16'])
    p.add_argument('--channels-last', action='store_true')
    p.add_argument('--compile', action='store_true')
    p.add_argument('--preset', default='birds', help='config preset giving the widths (default: birds)')
    p.add_argument('--set', nargs='*', default=[], metavar='KEY=VALUE', help='more config overrides')
    p.add_argument('--warmup', type=int, default=2)
    p.add_argument('--steps', type=int, default=5)
    p.add_argument('--malloc', default='kept', choices=['kept', 'default'],
                   help="kept: glibc keeps freed memory, as the attngan-edu command sets it up (train.keep_freed_memory); "
                        "default: glibc's own behaviour")
    p.add_argument('--flops', action='store_true', help='count the FLOPs of one step (torch.utils.flop_counter)')
    p.add_argument('--json', action='store_true', help='print one JSON line')
    a = p.parse_args(argv)
    from attngan_edu.config import make_config, parse_value
    from attngan_edu.train import resolve_device, resolve_precision, keep_freed_memory
    if a.malloc == 'kept' and not keep_freed_memory(): raise SystemExit('--malloc kept needs Linux with glibc')
    if a.threads: torch.set_num_threads(a.threads)
    over = {'model': a.model, 'batch_size': a.batch, 'channels_last': a.channels_last,
            'compile': a.compile, 'precision': a.precision, 'device': a.device}
    if a.model != 'dfgan': over['branch_num'] = a.branches   # DF-GAN: one stage at the preset's final size (dfgan_defaults)
    if a.no_damsm: over['lam'] = 0.0
    for kv in a.set:
        k, v = kv.split('=', 1); over[k] = parse_value(k, v)
    cfg = make_config(a.preset, overrides=over)
    device = resolve_device(cfg.device)
    dtype = resolve_precision(cfg.precision, device)
    r = time_steps(cfg, a.batch, device, dtype, a.warmup, a.steps, damsm=not a.no_damsm, flops=a.flops)
    info = dict(model=a.model, branches=cfg.branch_num, size=cfg.base_size * 2 ** (cfg.branch_num - 1), batch=a.batch,
                threads=torch.get_num_threads(), device=str(device), dtype=str(dtype).replace('torch.', ''),
                damsm=cfg.model == 'attngan' and cfg.lam > 0, channels_last=a.channels_last, compile=a.compile, preset=a.preset, malloc=a.malloc,
                loadavg=os.getloadavg()[0], **r)
    if a.json: print(json.dumps(info))
    else:
        print(f"{a.model} {cfg.branch_num} branch(es) -> {info['size']}px, batch {a.batch}, {info['device']} {info['dtype']}, "
              f"{info['threads']} thread(s), DAMSM {'on' if info['damsm'] else 'off'}, malloc {a.malloc}: median {r['s_per_step']:.3f} s/step, "
              f"{r['imgs_per_s']:.2f} images/s, peak {r['peak_mem_gib']:.2f} GiB (load average {info['loadavg']:.1f})")
    return info


if __name__ == '__main__':
    main()
