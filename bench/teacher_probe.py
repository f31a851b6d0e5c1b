"""What limits the DAMSM as a teacher: train one DAMSM variant on the synbirds-cpu data and score it as
`attngan-edu evaluate` scores a run's teacher, at a list of epochs.

    python bench/teacher_probe.py --epochs 15 30 60 --set gamma1=10 --out runs/probe/g10

Each row: the epoch, training seconds, word / sentence R-precision on the 1,280 real test pairs (100 candidates, the
other test images' captions, 10 draws: evaluate's protocol), colour-word pointing (the argmax of eq. 9's attention
touches the named part) and the swapped-colour binding test (`damsm.binding_test`). --set takes DAMSMConfig fields;
--lr_decay multiplies the learning rate by that factor each epoch (the reference code's 0.98)."""
import argparse, json, time
from dataclasses import asdict, replace
from pathlib import Path
import torch
from attngan_edu.config import make_config
from attngan_edu.train import dataset_root, make_dataset, damsm_config
from attngan_edu.damsm import pretrain_damsm, save_damsm, damsm_features, pair_scores, r_precision, pointing_game, binding_test
from attngan_edu.report import CaptionPairs
from attngan_edu.synbirds import SynBirdsTruth


def teacher_figures(model, test_ds, truth, vocab, draws=10, seed=0):
    "The teacher's figures in evaluate's protocol on every real test pair"
    c = model.config
    pairs = CaptionPairs(test_ds)
    enc = damsm_features(model, pairs)
    key_image = {k: i for i, k in enumerate(test_ds.keys)}
    image = torch.tensor([key_image[k] for k in enc['key']])
    rp = lambda lvl: round(r_precision(pair_scores(enc, c.gamma1, c.gamma2, lvl), 100, draws, seed, image)[0], 4)
    point = {r['words']: round(r['hit'], 4) for r in pointing_game(enc, truth, vocab, c.gamma1) if r['part'] == 'all'}
    b = binding_test(model, enc, vocab)
    return dict(r_word=rp('word'), r_sentence=rp('sentence'), point_colour=point['colour'], point_part=point['part'],
                bind_word=round(b['word'], 4), bind_sentence=round(b['sentence'], 4))


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
        fig = teacher_figures(model, test_ds, truth, vocab)
        rows.append(dict(epoch=e, seconds=round(clock['train'], 1), **fig))
        print(json.dumps(rows[-1]), flush=True)
        save_damsm(out / f'damsm-e{e}.safetensors', model.text_enc, model.img_enc, vocab, dcfg)
        (out / 'rows.json').write_text(json.dumps(dict(config=asdict(dcfg), data=a.data, rows=rows), indent=1))
        clock['t0'] = time.time()

    pretrain_damsm(train_ds, dcfg, epochs=max(a.epochs), on_epoch=on_epoch)


if __name__ == '__main__':
    main()
