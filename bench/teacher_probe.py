"""What limits the DAMSM as a teacher: train one DAMSM variant on the synbirds-cpu data and score it as
`attngan-edu evaluate` scores a run's teacher, at a list of epochs.

    python bench/teacher_probe.py --epochs 15 30 60 --set gamma1=10 --out runs/probe/g10

Each row: the epoch, training seconds, word / sentence R-precision on the 1,280 real test pairs (100 candidates, the
other test images' captions, 10 draws: evaluate's protocol), colour-word pointing (the argmax of eq. 9's attention
touches the named part) and the swapped-colour binding test (`damsm.binding_test`), as `pretrained.teacher_figures`
records them for the shipped teacher, plus pointing by eq. 7 alone and per part. --set takes DAMSMConfig fields
(e.g. lr_decay=0.98, the reference code's decay per epoch); --image and --text swap in other encoders."""
import argparse, json, time
from dataclasses import asdict, replace
from pathlib import Path
import torch
from attngan_edu.config import make_config
from attngan_edu.train import dataset_root, make_dataset, damsm_config
from attngan_edu.damsm import pretrain_damsm, save_damsm, damsm_features, pointing_game
from attngan_edu.pretrained import teacher_figures
from attngan_edu.report import CaptionPairs
from attngan_edu.synbirds import SynBirdsTruth


def raw_pointing(enc, truth, vocab):
    "Colour pointing by the argmax of eq. 7's e_i . v_j alone: without eq. 8's competition between words for a region"
    from attngan_edu.damsm import mention_positions, point_hits
    from attngan_edu.synbirds import PART_NAMES
    Hr, Wr = enc['v'].shape[-2:]
    s = enc['words_emb'].transpose(1, 2) @ enc['v'].flatten(2)                # (N, T, R)
    found = [(n, pos, PART_NAMES.index(part)) for n in range(len(s))
             for pos, part, kind in mention_positions(vocab.decode(enc['caption'][n, :enc['cap_len'][n]]),
                                                      truth.mentions(enc['key'][n], int(enc['cap_idx'][n]))) if kind == 'colour']
    n_i, pos, p_i = (torch.tensor([f[k] for f in found]) for k in range(3))
    return round(point_hits(s[n_i, pos].view(-1, Hr, Wr), enc['masks'][n_i, p_i])[0].float().mean().item(), 4)


def probe_figures(model, test_ds, truth, vocab):
    "The shipped teacher's figures (`pretrained.teacher_figures`) plus pointing by eq. 7 alone and colour pointing per part"
    enc = damsm_features(model, CaptionPairs(test_ds))
    per_part = {r['part']: round(r['hit'], 3) for r in pointing_game(enc, truth, vocab, model.config.gamma1)
                if r['words'] == 'colour' and r['part'] != 'all'}
    return dict(teacher_figures(model, test_ds, truth, vocab, enc=enc), point_raw=raw_pointing(enc, truth, vocab),
                colour_by_part=per_part)


class WindowTextEncoder(torch.nn.Module):
    "Words see only a window of k words (two convolutions), the sentence is their masked mean, projected"
    def __init__(self, vocab_size, emb_dim, D, dropout, k=5):
        super().__init__()
        nn = torch.nn
        self.vocab_size, self.emb_dim, self.D, self.dropout_p = vocab_size, emb_dim, D, dropout
        self.emb = nn.Embedding(vocab_size, emb_dim, padding_idx=0)
        nn.init.uniform_(self.emb.weight, -0.1, 0.1)
        self.drop = nn.Dropout(dropout)
        self.conv = nn.Sequential(nn.Conv1d(emb_dim, D, k, padding=k // 2), nn.LeakyReLU(0.2), nn.Conv1d(D, D, 1))
        self.sent = nn.Linear(D, D)

    def forward(self, captions, cap_lens):
        B, T = captions.shape
        mask = (torch.arange(T)[None] < torch.as_tensor(cap_lens).cpu()[:, None]).to(captions.device)   # (B, T)
        x = self.drop(self.emb(captions)).transpose(1, 2)                  # (B, E, T)
        w = self.conv(x) * mask[:, None]                                   # (B, D, T)
        return w, self.sent(w.sum(-1) / mask.sum(-1, keepdim=True))


class ProbeCNN(torch.nn.Module):
    """CNNImageEncoder's shape with other receptive fields: 'k3' (3x3 kernels, 15 px, 8x8 at 64 px), 's4' (16x16 regions,
    18 px), 's4k3' (16x16, 15 px), 'rf7' (16x16, 7 px)"""
    def __init__(self, D, ndf, kind):
        super().__init__()
        nn = torch.nn
        def blk(i, o, k, s, p, bn=True):
            return [nn.Conv2d(i, o, k, s, p, bias=not bn)] + ([nn.BatchNorm2d(o)] if bn else []) + [nn.LeakyReLU(0.2, inplace=True)]
        if kind == 'k3': body = blk(3, ndf, 3, 2, 1, False) + blk(ndf, 2 * ndf, 3, 2, 1) + blk(2 * ndf, 4 * ndf, 3, 2, 1)
        elif kind == 's4k3': body = blk(3, ndf, 3, 2, 1, False) + blk(ndf, 2 * ndf, 3, 2, 1) + blk(2 * ndf, 4 * ndf, 3, 1, 1)
        elif kind == 'rf7': body = blk(3, ndf, 3, 2, 1, False) + blk(ndf, 2 * ndf, 3, 2, 1) + blk(2 * ndf, 4 * ndf, 1, 1, 0)
        elif kind == 's4': body = blk(3, ndf, 4, 2, 1, False) + blk(ndf, 2 * ndf, 4, 2, 1) + blk(2 * ndf, 4 * ndf, 3, 1, 1)
        else: raise ValueError(kind)
        self.features = nn.Sequential(*body, *blk(4 * ndf, 8 * ndf, 1, 1, 0))
        self.local_proj = nn.Conv2d(8 * ndf, D, 1, bias=False)
        self.global_proj = nn.Linear(8 * ndf, D)

    def forward(self, imgs):
        f = self.features(imgs)
        return self.local_proj(f), self.global_proj(f.mean(dim=(2, 3)))


def parse_set(items):
    out = {}
    for it in items:
        k, v = it.split('=', 1)
        out[k] = json.loads(v) if v not in ('cnn', 'inception', 'mean', 'sum') else v
    return out


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument('--epochs', type=int, nargs='+', required=True, help='score at these epochs (ascending)')
    ap.add_argument('--set', nargs='*', default=[], help='DAMSMConfig overrides, key=value')
    ap.add_argument('--data', nargs='*', default=[], help='synbirds-cpu config overrides, key=value (e.g. synbirds_n_train=6400)')
    ap.add_argument('--threads', type=int, default=1)
    ap.add_argument('--image', default='cnn', help="'cnn' (the package's) or a ProbeCNN kind: 'k3', 's4'")
    ap.add_argument('--freeze_trunk', action='store_true', help="the CNN's convolutions stay at their random start; only v's and v_bar's projections learn")
    ap.add_argument('--text', default='lstm', help="'lstm' (the paper's) or 'windowK': words see K words (WindowTextEncoder)")
    ap.add_argument('--out', required=True)
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    cfg = make_config('synbirds-cpu', overrides=parse_set(a.data))
    root = dataset_root(cfg)
    test_ds = make_dataset(cfg, root, 'test', branch_num=1, with_truth=True)
    vocab = test_ds.vocab
    dcfg = replace(damsm_config(cfg, len(vocab)), **parse_set(a.set)).check()
    train_ds = make_dataset(cfg, root, 'train', base_size=dcfg.image_size, branch_num=1, vocab=vocab)
    test_ds = make_dataset(cfg, root, 'test', base_size=dcfg.image_size, branch_num=1, vocab=vocab, with_truth=True)
    truth = SynBirdsTruth(root)
    out = Path(a.out); out.mkdir(parents=True, exist_ok=True)
    print(json.dumps(asdict(dcfg)), flush=True)
    rows, clock = [], dict(train=0.0, t0=time.time())

    def on_epoch(model, e):
        if e not in a.epochs: return
        clock['train'] += time.time() - clock['t0']
        fig = probe_figures(model, test_ds, truth, vocab)
        rows.append(dict(epoch=e, seconds=round(clock['train'], 1), **fig))
        print(json.dumps(rows[-1]), flush=True)
        if a.text == 'lstm' and a.image == 'cnn' and not a.freeze_trunk: save_damsm(out / f'damsm-e{e}.safetensors', model.text_enc, model.img_enc, vocab, dcfg)
        (out / 'rows.json').write_text(json.dumps(dict(config=asdict(dcfg), data=a.data, rows=rows), indent=1))
        clock['t0'] = time.time()

    model = None
    if a.text != 'lstm' or a.image != 'cnn' or a.freeze_trunk:
        from attngan_edu.damsm import DAMSM
        torch.manual_seed(dcfg.seed)
        model = DAMSM(dcfg)
        if a.image != 'cnn': model.img_enc = ProbeCNN(dcfg.D, dcfg.ndf, a.image)
    if a.freeze_trunk: model.img_enc.features.requires_grad_(False)
    if a.text != 'lstm':
        model.text_enc = WindowTextEncoder(dcfg.vocab_size, dcfg.emb_dim, dcfg.D, dcfg.dropout, int(a.text.removeprefix('window')))
    pretrain_damsm(train_ds, dcfg, model=model, epochs=max(a.epochs), on_epoch=on_epoch)


if __name__ == '__main__':
    main()
