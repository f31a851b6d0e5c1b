"""Time one training step of the ORIGINAL AttnGAN code (github.com/taoxugit/AttnGAN, `code/`) with the protocol of
bench/train_step.py, so that the two can be compared on the same machine (issue #8).

None of the original code is part of this repository: clone it yourself and point `--reference` at its `code/` folder.
The script imports the original `model.py`, `GlobalAttention.py`, `miscc/config.py` and `miscc/losses.py` from there
(never modifying them) and times, on random tensors (the same `random_batch` as bench/train_step.py):

  1. the original RNN_ENCODER (frozen, eval, under no_grad; `init_hidden` every step as in trainer.py),
     mask = (captions == 0) cut to the longest caption, as trainer.py does;
  2. the original G_NET forward (noise.normal_() every step);
  3. for every scale i: netsD[i].zero_grad(), the original `discriminator_loss` (real / wrong / fake terms, conditional
     and unconditional logits, BCE on sigmoid outputs), backward, one Adam step per D (one optimiser per D, as the
     original);
  4. netG.zero_grad(), the adversarial part of the original `generator_loss` (written out here line by line as in the
     original loop: netsD[i](fake_imgs[i]), COND_DNET + UNCOND_DNET, BCELoss against real labels, summed over scales)
     plus the original `KL_loss`, backward, Adam step. The DAMSM words/sentence terms of the original generator_loss are
     left out (they need the Inception CNN_ENCODER, which is never built or timed here); this matches
     `bench/train_step.py --no-damsm`. As in the original trainer the D parameters keep requires_grad=True during the G
     backward (their gradients are computed and thrown away by the next zero_grad);
  5. the generator EMA of trainer.py: avg_p.mul_(0.999).add_(0.001 * p.data) for every G parameter.

Settings follow code/cfg/bird_attn2.yml: GF_DIM 32, DF_DIM 64, Z_DIM 100, CONDITION_DIM 100, R_NUM 2, EMBEDDING_DIM 256,
WORDS_NUM 18, BASE_SIZE 64, B_ATTENTION True, B_DCGAN False, BRANCH_NUM = --branches; Adam lr 2e-4, betas (0.5, 0.999);
text encoder RNN_ENCODER(5450 words, nhidden=256) as trainer.py builds it. Prints the median s/step after the warm-up
steps, images/s, peak memory, G/D parameter counts and the load average, like bench/train_step.py.

Adaptations, all made from the outside at import/run time (the original files are not changed):
  * torchvision missing: a stub `torchvision` module (with an empty `models`) is put in sys.modules so that
    `from torchvision import models` in model.py succeeds; only CNN_ENCODER (Inception-v3, DAMSM image encoder) uses it
    and it is not built or timed. A real torchvision is used when installed.
  * easydict missing: a minimal attribute-dict stand-in `easydict.EasyDict` is put in sys.modules (config.py only needs
    attribute get/set on a dict).
  * `miscc.utils` is not imported (it needs scikit-image and PIL for figures); `weights_init` is re-created here (orthogonal
    Conv/Linear weights, BatchNorm N(1, 0.02)) — initial values do not change the step's cost.
  * `logs += ... g_loss.data[0]` in some versions of generator_loss fails on 0-dim tensors in torch >= 0.5; our written-out
    G loss uses `.item()` for the same log line instead. trainer.py's `avg_p.mul_(0.999).add_(0.001, p.data)` uses the
    deprecated add_(scalar, tensor) overload (still accepted, with a warning); we call add_(p.data, alpha=0.001), the
    same operation.
  * `nn.Softmax()` without dim in GlobalAttention.py only warns (implicit dim 1 for 2-D input, which is what the original
    meant); the warning is silenced. A ByteTensor attention mask would be rejected by masked_fill_ in modern torch; the
    mask is built as in trainer.py, `captions == 0`, which is a bool tensor in modern torch, so nothing is patched.
  * some forks' CA_NET reads cfg.TEXT.ZLS_GAN_EMBEDDING_DIM; if that key exists it is set to EMBEDDING_DIM so that the
    upstream architecture is built.
  * `netsD[i].zero_grad()` / `netG.zero_grad()` set gradients to None in torch >= 2.0 (they were zeroed in place in the
    torch 0.4 the original was written for); we keep the calls as they are.

  python bench/reference_step.py --reference /path/to/AttnGAN/code --branches 2 --batch 4 --threads 2
  python bench/reference_step.py --reference /path/to/AttnGAN/code --branches 3 --batch 4 --threads 2 --json
"""
import argparse, json, os, resource, statistics, sys, time, types, warnings
os.environ.setdefault('OMP_WAIT_POLICY', 'PASSIVE')   # fixed, as in bench/train_step.py
import torch
from torch import nn


def _install_import_stubs() -> list[str]:
    "Stand-ins for torchvision / easydict when they are not installed -> names of the stubs installed"
    stubs = []
    try:
        import torchvision  # noqa: F401
    except ImportError:
        tv, models = types.ModuleType('torchvision'), types.ModuleType('torchvision.models')
        def inception_v3(*a, **k):
            raise RuntimeError('torchvision stub (bench/reference_step.py): CNN_ENCODER is not timed and cannot be built')
        models.inception_v3 = inception_v3
        tv.models = models
        sys.modules['torchvision'], sys.modules['torchvision.models'] = tv, models
        stubs.append('torchvision')
    try:
        import easydict  # noqa: F401
    except ImportError:
        class EasyDict(dict):
            "Minimal stand-in: a dict whose keys are also attributes"
            def __getattr__(self, k):
                try: return self[k]
                except KeyError: raise AttributeError(k) from None
            def __setattr__(self, k, v): self[k] = v
        mod = types.ModuleType('easydict'); mod.EasyDict = EasyDict
        sys.modules['easydict'] = mod
        stubs.append('easydict')
    return stubs


def load_reference(ref_dir: str, branches: int, device: torch.device):
    "Import the original modules from ref_dir and configure cfg like cfg/bird_attn2.yml -> (cfg, model, losses, stubs)"
    ref_dir = os.path.abspath(ref_dir)
    for f in ('model.py', 'GlobalAttention.py', os.path.join('miscc', 'config.py'), os.path.join('miscc', 'losses.py')):
        if not os.path.isfile(os.path.join(ref_dir, f)):
            raise SystemExit(f"--reference {ref_dir}: no {f} there; point it at the code/ folder of a taoxugit/AttnGAN checkout")
    stubs = _install_import_stubs()
    warnings.filterwarnings('ignore', message='Implicit dimension choice for softmax')
    warnings.filterwarnings('ignore', message='dropout option adds dropout after all but last recurrent layer')
    warnings.filterwarnings('ignore', message='.*nn.functional.sigmoid is deprecated')
    sys.path.insert(0, ref_dir)
    from miscc.config import cfg
    cfg.CUDA = device.type == 'cuda'
    cfg.RNN_TYPE = 'LSTM'
    cfg.TREE.BRANCH_NUM, cfg.TREE.BASE_SIZE = branches, 64
    cfg.GAN.GF_DIM, cfg.GAN.DF_DIM, cfg.GAN.Z_DIM, cfg.GAN.CONDITION_DIM, cfg.GAN.R_NUM = 32, 64, 100, 100, 2
    cfg.GAN.B_ATTENTION, cfg.GAN.B_DCGAN = True, False
    cfg.TEXT.EMBEDDING_DIM, cfg.TEXT.WORDS_NUM = 256, 18
    if 'ZLS_GAN_EMBEDDING_DIM' in cfg.TEXT: cfg.TEXT.ZLS_GAN_EMBEDDING_DIM = cfg.TEXT.EMBEDDING_DIM
    cfg.TRAIN.FLAG = True
    cfg.TRAIN.DISCRIMINATOR_LR = cfg.TRAIN.GENERATOR_LR = 2e-4
    cfg.TRAIN.SMOOTH.GAMMA1, cfg.TRAIN.SMOOTH.GAMMA2, cfg.TRAIN.SMOOTH.GAMMA3, cfg.TRAIN.SMOOTH.LAMBDA = 4.0, 5.0, 10.0, 5.0
    import model, miscc.losses as losses
    return cfg, model, losses, stubs


def weights_init(m):
    "The initialisation trainer.py applies (miscc.utils.weights_init is not imported: it needs scikit-image)"
    name = m.__class__.__name__
    if 'Conv' in name: nn.init.orthogonal_(m.weight.data, 1.0)
    elif 'BatchNorm' in name: m.weight.data.normal_(1.0, 0.02); m.bias.data.fill_(0)
    elif 'Linear' in name:
        nn.init.orthogonal_(m.weight.data, 1.0)
        if m.bias is not None: m.bias.data.fill_(0.0)


def random_batch(T: int, base_size: int, branches: int, vocab_size: int, B: int, g: torch.Generator) -> dict:
    "The same tensors as bench/train_step.py's random_batch (same generator calls in the same order)"
    cap_len = torch.randint(max(2, T // 3), T + 1, (B,), generator=g).sort(descending=True).values
    caption = torch.randint(2, vocab_size, (B, T), generator=g)
    caption[torch.arange(T)[None] >= cap_len[:, None]] = 0
    return dict(imgs=[torch.rand(B, 3, base_size * 2 ** i, base_size * 2 ** i, generator=g) * 2 - 1 for i in range(branches)],
                caption=caption, cap_len=cap_len, class_id=torch.arange(B))


class ReferenceState:
    "What the original trainer.py builds: text encoder, G_NET, D_NET64/128/256, optimisers, labels, noise, EMA copy"
    def __init__(self, cfg, model, losses, B: int, vocab_size: int, device: torch.device):
        self.cfg, self.losses, self.B, self.device = cfg, losses, B, device
        te = model.RNN_ENCODER(vocab_size, nhidden=cfg.TEXT.EMBEDDING_DIM)
        for p in te.parameters(): p.requires_grad = False
        self.text_encoder = te.to(device).eval()
        self.netG = model.G_NET()
        self.netsD = [D() for D in (model.D_NET64, model.D_NET128, model.D_NET256)[:cfg.TREE.BRANCH_NUM]]
        self.netG.apply(weights_init)
        for D in self.netsD: D.apply(weights_init)
        self.netG.to(device)
        for D in self.netsD: D.to(device)
        self.avg_param_G = [p.data.clone() for p in self.netG.parameters()]          # copy_G_params
        self.optimizersD = [torch.optim.Adam(D.parameters(), lr=cfg.TRAIN.DISCRIMINATOR_LR, betas=(0.5, 0.999)) for D in self.netsD]
        self.optimizerG = torch.optim.Adam(self.netG.parameters(), lr=cfg.TRAIN.GENERATOR_LR, betas=(0.5, 0.999))
        self.real_labels = torch.ones(B, device=device)                                # prepare_labels
        self.fake_labels = torch.zeros(B, device=device)
        self.noise = torch.empty(B, cfg.GAN.Z_DIM, device=device)


def reference_step(s: ReferenceState, imgs: list, captions: torch.Tensor, cap_lens: torch.Tensor) -> tuple[float, float]:
    "One iteration of the inner loop of the original condGANTrainer.train without DAMSM -> (errD_total, errG_total)"
    cfg, L, bce = s.cfg, s.losses, nn.BCELoss()
    with torch.no_grad():
        hidden = s.text_encoder.init_hidden(s.B)
        words_embs, sent_emb = s.text_encoder(captions, cap_lens, hidden)
    words_embs, sent_emb = words_embs.detach(), sent_emb.detach()
    mask = (captions == 0)
    num_words = words_embs.size(2)
    if mask.size(1) > num_words: mask = mask[:, :num_words]
    s.noise.data.normal_(0, 1)
    fake_imgs, _, mu, logvar = s.netG(s.noise, sent_emb, words_embs, mask)
    # (3) update every D with the original discriminator_loss
    errD_total, D_logs = 0, ''
    for i in range(len(s.netsD)):
        s.netsD[i].zero_grad()
        errD = L.discriminator_loss(s.netsD[i], imgs[i], fake_imgs[i], sent_emb, s.real_labels, s.fake_labels)
        errD.backward()
        s.optimizersD[i].step()
        errD_total += errD
        D_logs += 'errD%d: %.2f ' % (i, errD.item())
    # (4) update G: the adversarial terms of the original generator_loss (its loop without the DAMSM branch) + KL_loss
    s.netG.zero_grad()
    errG_total, G_logs = 0, ''
    for i in range(len(s.netsD)):
        features = s.netsD[i](fake_imgs[i])
        cond_logits = s.netsD[i].COND_DNET(features, sent_emb)
        cond_errG = bce(cond_logits, s.real_labels)
        if s.netsD[i].UNCOND_DNET is not None:
            logits = s.netsD[i].UNCOND_DNET(features)
            errG = bce(logits, s.real_labels)
            g_loss = errG + cond_errG
        else:
            g_loss = cond_errG
        errG_total += g_loss
        G_logs += 'g_loss%d: %.2f ' % (i, g_loss.item())
    kl_loss = L.KL_loss(mu, logvar)
    errG_total += kl_loss
    G_logs += 'kl_loss: %.2f ' % kl_loss.item()
    errG_total.backward()
    s.optimizerG.step()
    for p, avg_p in zip(s.netG.parameters(), s.avg_param_G):
        avg_p.mul_(0.999).add_(p.data, alpha=0.001)
    return float(errD_total.detach()), float(errG_total.detach())


def time_steps(ref_dir: str, branches: int, B: int, device, warmup: int, steps: int, vocab_size: int = 5450) -> dict:
    "Median s/step of reference_step after `warmup` steps, images/s, peak memory, parameter counts"
    cfg, model, losses, stubs = load_reference(ref_dir, branches, device)
    torch.manual_seed(0)
    s = ReferenceState(cfg, model, losses, B, vocab_size, device)
    g = torch.Generator().manual_seed(0)
    batch = random_batch(cfg.TEXT.WORDS_NUM, cfg.TREE.BASE_SIZE, branches, vocab_size, B, g)
    imgs = [x.to(device) for x in batch['imgs']]
    captions, cap_lens = batch['caption'].to(device), batch['cap_len']     # pack_padded_sequence wants CPU lengths
    sync = (lambda: torch.cuda.synchronize(device)) if device.type == 'cuda' else (lambda: None)
    if device.type == 'cuda': torch.cuda.reset_peak_memory_stats(device)
    times = []
    for i in range(warmup + steps):
        sync(); t = time.perf_counter()
        errD, errG = reference_step(s, imgs, captions, cap_lens)
        sync(); times.append(time.perf_counter() - t)
    assert all(map(lambda v: v == v and abs(v) != float('inf'), (errD, errG))), (errD, errG)
    med = statistics.median(times[warmup:])
    peak = (torch.cuda.max_memory_allocated(device) if device.type == 'cuda'
            else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024)   # CPU: peak RSS of this process (Linux: KiB)
    return dict(s_per_step=med, imgs_per_s=B / med, peak_mem_gib=peak / 2 ** 30, warmup_s=sum(times[:warmup]),
                all_s=[round(t, 4) for t in times],
                G_params=sum(p.numel() for p in s.netG.parameters()),
                D_params=sum(p.numel() for D in s.netsD for p in D.parameters()),
                text_enc_params=sum(p.numel() for p in s.text_encoder.parameters()), stubs=stubs)


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument('--reference', required=True, help="the code/ folder of a taoxugit/AttnGAN checkout")
    p.add_argument('--model', default='attngan', choices=['attngan'], help='only AttnGAN (for symmetry with train_step.py)')
    p.add_argument('--branches', type=int, default=2, choices=[1, 2, 3])
    p.add_argument('--batch', type=int, default=4)
    p.add_argument('--threads', type=int, default=0, help='torch.set_num_threads (0: leave the default)')
    p.add_argument('--no-damsm', action='store_true', default=True,
                   help='always on: the DAMSM terms of the original generator_loss are left out (see the docstring)')
    p.add_argument('--device', default='cpu')
    p.add_argument('--vocab', type=int, default=5450, help='text encoder vocabulary size (CUB: 5450)')
    p.add_argument('--warmup', type=int, default=2)
    p.add_argument('--steps', type=int, default=5)
    p.add_argument('--malloc', default='default', choices=['kept', 'default'],
                   help="kept: glibc keeps freed memory, set up by the same function our CLI calls "
                        "(attngan_edu.train.keep_freed_memory; nothing else of ours is used); default: glibc's own behaviour")
    p.add_argument('--json', action='store_true', help='print one JSON line')
    a = p.parse_args(argv)
    if a.malloc == 'kept':
        from attngan_edu.train import keep_freed_memory
        if not keep_freed_memory(): raise SystemExit('--malloc kept needs Linux with glibc')
    if a.threads: torch.set_num_threads(a.threads)
    device = torch.device(a.device)
    r = time_steps(a.reference, a.branches, a.batch, device, a.warmup, a.steps, a.vocab)
    info = dict(model='attngan-reference', branches=a.branches, size=64 * 2 ** (a.branches - 1), batch=a.batch,
                threads=torch.get_num_threads(), device=str(device), dtype='float32', damsm=False,
                reference=os.path.abspath(a.reference), omp_wait_policy=os.environ.get('OMP_WAIT_POLICY'), malloc=a.malloc,
                loadavg=os.getloadavg()[0], **r)
    if a.json: print(json.dumps(info))
    else:
        print(f"original AttnGAN {a.branches} branch(es) -> {info['size']}px, batch {a.batch}, {info['device']} float32, "
              f"{info['threads']} thread(s), DAMSM off, malloc {a.malloc}: median {r['s_per_step']:.3f} s/step, {r['imgs_per_s']:.2f} images/s, "
              f"peak {r['peak_mem_gib']:.2f} GiB, G {r['G_params'] / 1e6:.2f} M / D {r['D_params'] / 1e6:.2f} M params "
              f"(load average {info['loadavg']:.1f}; stubs: {', '.join(r['stubs']) or 'none'})")
    return info


if __name__ == '__main__':
    main()
