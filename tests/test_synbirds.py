"SynBirds: layout, determinism, masks consistent with pixels, truthful captions, cached builds."
import hashlib, json, multiprocessing as mp, os, pickle, re
from pathlib import Path
import numpy as np
import pytest
from PIL import Image
from attngan_edu.synbirds import (ATTRIBUTES, CLASS_DIRS, COLORS, COLOR_RGB, PART_NAMES, PART_WORDS, SPECIES, SIZE_WORDS,
    BEAK_LENGTH_WORDS, SynBirdsTruth, color_of_word, get_synbirds, make_captions, make_synbirds, render_bird, sample_attributes)
from attngan_edu.text import clean_caption, tokenize

N_TRAIN, N_TEST, SIZE = 24, 12, 64

@pytest.fixture(scope='module')
def tiny(tmp_path_factory):
    return make_synbirds(tmp_path_factory.mktemp('sb')/'a', N_TRAIN, N_TEST, SIZE, seed=0)

def tree_hashes(root):
    return {str(p.relative_to(root)): hashlib.sha1(p.read_bytes()).hexdigest() for p in sorted(Path(root).rglob('*')) if p.is_file()}

def test_palette_species_parts():
    assert {'red', 'orange', 'yellow', 'green', 'blue', 'purple', 'brown', 'black', 'white', 'grey'} <= set(COLORS)
    assert len(SPECIES) >= 20 and len({tuple(a.values()) for _, a in SPECIES}) == len(SPECIES)
    assert all(re.fullmatch(r'\d{3}\.[A-Za-z_]+', d) for d in CLASS_DIRS)
    assert {'crown', 'head', 'eye', 'beak', 'wing', 'belly', 'tail', 'legs', 'body'} == set(PART_NAMES)

def test_layout(tiny):
    cub = tiny/'CUB_200_2011'
    images = cub.joinpath('images.txt').read_text().splitlines()
    boxes = cub.joinpath('bounding_boxes.txt').read_text().splitlines()
    assert len(images) == len(boxes) == N_TRAIN + N_TEST
    train = pickle.loads((tiny/'train/filenames.pickle').read_bytes())
    test = pickle.loads((tiny/'test/filenames.pickle').read_bytes())
    assert (len(train), len(test)) == (N_TRAIN, N_TEST) and not set(train) & set(test)
    assert [l.split()[1] for l in images] == [k + '.jpg' for k in train + test]
    for k in train + test:
        d = k.split('/')[0]
        assert d in CLASS_DIRS
        im = Image.open(cub/'images'/f'{k}.jpg'); assert im.size == (SIZE, SIZE) and im.format == 'JPEG'
        lines = (tiny/'text'/f'{k}.txt').read_text(encoding='utf-8').splitlines()
        assert len(lines) == 10 and all(l.strip() for l in lines)
        assert (tiny/'synbirds/masks'/f'{k}.png').is_file()
    for l in boxes:
        i, x, y, w, h = l.split(); x, y, w, h = map(float, (x, y, w, h))
        assert 0 <= x and 0 <= y and w > 4 and h > 4 and x + w <= SIZE and y + h <= SIZE
    # every species appears in both splits
    assert {k.split('/')[0] for k in train} == set(CLASS_DIRS)

def test_same_seed_same_bytes_and_parallel(tmp_path, tiny):
    b = make_synbirds(tmp_path/'b', N_TRAIN, N_TEST, SIZE, seed=0, workers=2)   # other process layout, same bytes
    assert tree_hashes(tiny) == tree_hashes(b)
    c = make_synbirds(tmp_path/'c', N_TRAIN, N_TEST, SIZE, seed=1)
    hc, ht = tree_hashes(c), tree_hashes(tiny)
    assert hc.keys() == ht.keys() and sum(hc[k] != ht[k] for k in hc) > N_TRAIN   # another seed, other images

def _erode(m, r):
    "Binary erosion by a (2r+1)^2 square, with numpy only."
    out = m.copy()
    H, W = m.shape
    p = np.pad(m, r, constant_values=False)
    for dy in range(-r, r + 1):
        for dx in range(-r, r + 1): out &= p[r + dy:r + dy + H, r + dx:r + dx + W]
    return out

@pytest.mark.parametrize('seed', range(6))
def test_masks_consistent_with_pixels_in_renderer(seed):
    "Before JPEG: the pixels inside each part's mask carry that part's colour."
    rng = np.random.default_rng(seed)
    r = render_bird(sample_attributes(seed * 5 % len(SPECIES), rng), rng, 128)
    img = np.asarray(r['image']).astype(int)
    masks = {p: r['labels'] == i + 1 for i, p in enumerate(PART_NAMES)}
    assert sum(m.astype(int) for m in masks.values()).max() <= 1           # visible parts do not overlap
    checked = 0
    for p, m in masks.items():
        core = _erode(m, 2)                     # away from the anti-aliased edges
        if core.sum() < 5: continue
        err = np.abs(img[core] - np.array(r['part_rgb'][p])).max(1)
        assert np.mean(err <= 12) > 0.95, (p, np.median(err))
        checked += 1
        # and every mask pixel, edges included, is closer to its part colour than to the background it covers
        assert np.median(np.abs(img[m] - np.array(r['part_rgb'][p])).max(1)) <= 12, p
    assert checked >= 4
    x, y, w, h = r['bbox']
    ys, xs = np.nonzero(r['labels'][..., None] == np.arange(1, len(PART_NAMES) + 1)).__getitem__(slice(0, 2))
    assert xs.min() == x and ys.min() == y and xs.max() == x + w - 1 and ys.max() == y + h - 1

def test_masks_consistent_with_saved_jpeg(tiny):
    truth = SynBirdsTruth(tiny)
    for key in truth.keys()[:12]:
        img = np.asarray(Image.open(tiny/'CUB_200_2011/images'/f'{key}.jpg')).astype(int)
        masks, rgb = truth.masks(key), truth.part_rgb(key)
        assert set(masks) == set(PART_NAMES) and all(m.shape == img.shape[:2] and m.dtype == bool for m in masks.values())
        for p, m in masks.items():
            core = _erode(m, 1)
            if core.sum() < 8: continue
            assert np.abs(np.median(img[core], 0) - rgb[p]).max() <= 20, (key, p)

WORD2ATTR = {t: a for a, ws in PART_WORDS.items() for w in ws for t in w.split() if t not in ('feathers',)}
MODIFIERS = {'bright', 'dark', 'light', 'jet', 'snow', 'olive', 'pointy', 'pointed', 'sharp', 'thin', 'curved', 'straight',
             'short', 'stubby', 'long', 'elongated', 'feathers'}

def _part_for_colour(tokens, i):
    "The part a colour word at position i describes: '<colour> <part>' or '<part> is/are [.. and] <colour>'."
    j = i + 1
    while j < len(tokens) and tokens[j] in MODIFIERS: j += 1
    if j < len(tokens) and tokens[j] in WORD2ATTR: return WORD2ATTR[tokens[j]]
    j = i - 1
    while j >= 0 and (tokens[j] in MODIFIERS or tokens[j] in ('is', 'are', 'and', 'amp')): j -= 1   # 'amp': &amp; left raw
    return WORD2ATTR.get(tokens[j]) if j >= 0 else None

def check_caption(raw, mentions, attrs):
    assert 2 <= len(mentions) <= 4 and len({a for a, _ in mentions}) == len(mentions)
    assert all(attrs[a] == v for a, v in mentions), 'a mention contradicts the attributes'
    for toks in (tokenize(clean_caption(raw)), tokenize(raw)):
        mentioned = dict(mentions)
        for i, t in enumerate(toks):
            c = color_of_word(t)
            if c is None: continue
            assert c in {v for a, v in mentions if a.endswith('_color')}, (raw, t)
            part = _part_for_colour(toks, i)
            assert part is not None and mentioned.get(part) == c, (raw, t, part)
        for a, v in mentions:
            if a.endswith('_color'):
                assert v in {color_of_word(t) for t in toks}, (raw, a)
                assert any(WORD2ATTR.get(t) == a for t in toks), (raw, a)
        sizes = {s for s, ws in SIZE_WORDS.items() for w in ws if re.search(rf'\b{w}\b', ' '.join(toks))}
        assert sizes == ({mentioned['size']} if 'size' in mentioned else set()), raw
        lens = {s for s, ws in BEAK_LENGTH_WORDS.items() for w in ws if w in toks}
        assert lens == ({mentioned['beak_length']} if 'beak_length' in mentioned else set()), raw

def test_captions_truthful_on_disk(tiny):
    truth = SynBirdsTruth(tiny)
    for key in truth.keys():
        lines = (tiny/'text'/f'{key}.txt').read_text(encoding='utf-8').splitlines()
        for i, raw in enumerate(lines): check_caption(raw, truth.mentions(key, i), truth.attributes(key))

def test_captions_truthful_and_noisy_many():
    rng = np.random.default_rng(123)
    caps = []
    for i in range(400):
        attrs = sample_attributes(i % len(SPECIES), rng)
        cs, ms = make_captions(attrs, rng, 10)
        assert len(set(cs)) == 10
        for c, m in zip(cs, ms): check_caption(c, m, attrs)
        caps += cs
    text = '\n'.join(caps)
    # the noise real captions carry is there
    assert '\ufffd\ufffd' in text and ('&amp;' in text or '&#39;' in text) and '  ' in text
    assert any(c.isupper() for c in caps) and any(c[0].isupper() for c in caps) and any(c.endswith(' .') for c in caps)
    words = {w for c in caps for w in tokenize(clean_caption(c))}
    assert {'breast', 'belly', 'chest', 'crown', 'head', 'pointy', 'pointed', 'bill', 'beak'} <= words
    assert len({c.split(' ')[0].lower() for c in caps}) >= 4          # many templates

def test_truth_api(tiny):
    truth = SynBirdsTruth(tiny)
    key = truth.keys()[0]
    assert set(truth.attributes(key)) == set(ATTRIBUTES)
    assert truth.labels(key).shape == (SIZE, SIZE)
    with pytest.raises(KeyError, match='nope'): truth.attributes('nope')
    with pytest.raises(FileNotFoundError, match='SynBirds'): SynBirdsTruth(tiny/'text')

def _race(args):
    root, q = args
    return str(get_synbirds(12, 4, 32, seed=3, root=root))

def test_get_synbirds_cached_and_race_safe(tmp_path, monkeypatch):
    with mp.get_context('fork').Pool(2) as pool: paths = pool.map(_race, [(tmp_path, 0), (tmp_path, 1)])
    assert paths[0] == paths[1]
    out = Path(paths[0])
    assert (out/'synbirds/truth.json').is_file() and len(list((out/'text').rglob('*.txt'))) == 16
    assert [p.name for p in tmp_path.iterdir()] == [out.name]            # no temporary folder left behind
    mtime = (out/'synbirds/truth.json').stat().st_mtime_ns
    assert get_synbirds(12, 4, 32, seed=3, root=tmp_path) == out
    assert (out/'synbirds/truth.json').stat().st_mtime_ns == mtime        # not rebuilt
    monkeypatch.setenv('ATTNGAN_EDU_DATA', str(tmp_path/'env'))
    assert get_synbirds(12, 4, 32, seed=3).parent == tmp_path/'env'

def test_bad_arguments(tmp_path):
    with pytest.raises(ValueError, match='n_train'): make_synbirds(tmp_path, 0, 1)
    with pytest.raises(ValueError, match='image_size'): make_synbirds(tmp_path, 2, 1, image_size=8)
