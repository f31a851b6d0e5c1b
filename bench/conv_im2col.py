"""Time both routes of attngan_edu.blocks.Im2colConv2d on every convolution of the AttnGAN generator and discriminators.

For each distinct layer shape met in one forward pass (birds widths, `--branches`, batch `--batch`), times forward +
backward (gradients for the input and the weights, the weights used twice as in the D step: real, then fake) through
  * oneDNN: `F.conv2d`, what `nn.Conv2d` runs on a CPU;
  * im2col: `attngan_edu.blocks.conv2d_im2col`, one matrix product over the unfolded patches;
and prints a markdown table with the route `Im2colConv2d.use_im2col` picks, so the rule (3 B H' W' <= O) can be checked.

  python bench/conv_im2col.py --branches 3 --batch 4 --threads 2
"""
import argparse, os, statistics, time
os.environ.setdefault('OMP_WAIT_POLICY', 'PASSIVE')   # fixed, so timings compare (the CLI picks by load)
import torch
import torch.nn.functional as F


def layer_shapes(branches: int, B: int) -> list[tuple]:
    "(module, input shape) of every Im2colConv2d in G and D_0..D_{m-1}, one entry per distinct shape, in call order"
    from attngan_edu.attngan import AttnGANConfig, AttnGANGenerator, make_discriminators
    from attngan_edu.blocks import Im2colConv2d
    cfg = AttnGANConfig(branch_num=branches)
    G, Ds = AttnGANGenerator(cfg), make_discriminators(cfg)
    seen, out = set(), []
    def hook(m, inp, _):
        key = (tuple(inp[0].shape), m.out_channels, m.kernel_size, m.stride, m.padding)
        if key not in seen: seen.add(key); out.append((m, tuple(inp[0].shape)))
    hs = [m.register_forward_hook(hook) for m in list(G.modules()) + list(Ds.modules()) if isinstance(m, Im2colConv2d)]
    with torch.no_grad():
        T = cfg.words_num
        imgs, *_ = G(torch.randn(B, cfg.z_dim), torch.randn(B, cfg.D), torch.randn(B, cfg.D, T))
        for D_i, x in zip(Ds, imgs): D_i(x, torch.randn(B, cfg.D))
    for h in hs: h.remove()
    return out


def time_route(fn, x, w, reps: int) -> float:
    "median ms of: two forwards through fn with the same weights, one backward"
    def step():
        x.grad = w.grad = None
        (fn(x, w).square().mean() + fn(x * 1.0, w).mean()).backward()
    for _ in range(2): step()
    ts = []
    for _ in range(reps):
        t = time.perf_counter(); step(); ts.append(time.perf_counter() - t)
    return statistics.median(ts) * 1000


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument('--branches', type=int, default=3, choices=[1, 2, 3])
    p.add_argument('--batch', type=int, default=4)
    p.add_argument('--threads', type=int, default=2)
    p.add_argument('--reps', type=int, default=7)
    a = p.parse_args(argv)
    from attngan_edu.blocks import conv2d_im2col, conv_out_size
    torch.set_num_threads(a.threads)
    print(f"batch {a.batch}, {a.branches} branch(es), {a.threads} thread(s), torch {torch.__version__}, "
          f"load average {os.getloadavg()[0]:.1f}\n")
    print("| input (B, C, H, W) | O | k, stride | B·H′·W′ | rule picks | oneDNN ms | im2col ms | oneDNN / im2col |")
    print("|---|---|---|---|---|---|---|---|")
    for m, shape in layer_shapes(a.branches, a.batch):
        x = torch.randn(shape, requires_grad=True)
        w = m.weight.detach().clone().requires_grad_()
        s, pd = m.stride, m.padding
        t_dnn = time_route(lambda x, w: F.conv2d(x, w, stride=s, padding=pd), x, w, a.reps)
        t_col = time_route(lambda x, w: conv2d_im2col(x, w, None, s, pd), x, w, a.reps)
        Ho, Wo = conv_out_size(*shape[2:], m.kernel_size, s, pd)
        pick = 'im2col' if m.use_im2col(x) else 'oneDNN'
        print(f"| {shape} | {m.out_channels} | {m.kernel_size[0]}, {s[0]} | {shape[0] * Ho * Wo} | {pick} | "
              f"{t_dnn:.1f} | {t_col:.1f} | {t_dnn / t_col:.2f} |", flush=True)


if __name__ == '__main__':
    main()
