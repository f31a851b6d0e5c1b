"""Time eq. 10 for every (image, caption) pair, as `attngan-edu evaluate` scores its R-precision: `pair_scores` on N
random images and captions at the synbirds-cpu DAMSM's sizes (D 64, 8x8 regions, T = 18), in blocks of
--chunk IMAGES CAPTIONS. Prints the seconds for the whole N x N matrix. Freed memory is kept for reuse, as the command
does (`--malloc default` turns that off).

  python bench/pair_scores.py --threads 1                      # evaluate's blocks (4 images x 128 captions)
  python bench/pair_scores.py --threads 1 --chunk 16 1280      # the blocks before 2026-12-01: 16 images x all captions
"""
import argparse, time
import torch
from attngan_edu.damsm import pair_scores
from attngan_edu.distributed import keep_freed_memory

p = argparse.ArgumentParser(description=__doc__.split('\n')[0])
p.add_argument('--n', type=int, default=1280, help='images = captions (evaluate: 1,280 test pairs)')
p.add_argument('--chunk', type=int, nargs=2, default=(4, 128), metavar=('IMAGES', 'CAPTIONS'))
p.add_argument('--threads', type=int, default=1)
p.add_argument('--malloc', default='kept', choices=['kept', 'default'], help="glibc's default, or freed memory kept (the command's)")
a = p.parse_args()
if a.malloc == 'kept' and not keep_freed_memory(): raise SystemExit('--malloc kept needs Linux with glibc')
torch.set_num_threads(a.threads)
g = torch.Generator().manual_seed(0)
D, T, R = 64, 18, 8
enc = dict(words_emb=torch.randn(a.n, D, T, generator=g), v=torch.randn(a.n, D, R, R, generator=g),
           cap_len=torch.randint(5, T + 1, (a.n,), generator=g))
t = time.perf_counter()
pair_scores(enc, chunk=tuple(a.chunk))
print(f"pair_scores, {a.n} x {a.n} pairs, chunk {a.chunk[0]} images x {a.chunk[1]} captions, {a.threads} thread(s), malloc {a.malloc}: "
      f"{time.perf_counter() - t:.1f} s")
