"Loaders on hand-built CUB and COCO fixtures, SynBirds with truth, safe pickles, bad data, caption cache, prepare_cub."
import io, json, os, pickle, tarfile, warnings, zipfile
from pathlib import Path
import numpy as np
import pytest
import torch
from PIL import Image
from attngan_edu.data import CocoTextImageDataset, TextImageDataset, collate_sorted, crop_around_bbox
from attngan_edu.safe_io import UnsafePickleError, safe_load_pickle
from attngan_edu.cub import check_birds_layout, prepare_cub
from attngan_edu.synbirds import PART_NAMES, SynBirdsTruth, make_synbirds
from attngan_edu.text import tokenize, clean_caption

COLOURS = {'001.Red_Bird': ((210, 30, 30), 'red'), '002.Blue_Bird': ((30, 60, 210), 'blue')}
# Python 2's pickle.dump(['002.Blue_Bird/Blue_Bird_0004', ...], f, 2): str items as SHORT_BINSTRING ('U')
def py2_pickle(strs):
    body = b''.join(b'U' + bytes([len(s)]) + s.encode('latin1') for s in strs)
    return b'\x80\x02](' + body + b'e.'

def make_cub_fixture(root, n_per_class=3, n_captions=10):
    "A CUB-layout folder written by hand: 2 classes, JPEGs of different sizes with a coloured bird-box, 10 captions each."
    root = Path(root); cub = root/'CUB_200_2011'
    images, boxes, train, test = [], [], [], []
    rng = np.random.default_rng(0)
    for c, (cls, (rgb, word)) in enumerate(COLOURS.items()):
        for j in range(n_per_class):
            name = f'{cls.split(".")[1]}_{j+1:04d}'; key = f'{cls}/{name}'
            W, H = 120 + 20 * j, 90 + 10 * c
            arr = np.full((H, W, 3), 235, np.uint8); x, y, w, h = 30 + 5 * j, 20, 50, 30
            arr[y:y + h, x:x + w] = rgb
            (cub/'images'/cls).mkdir(parents=True, exist_ok=True)
            Image.fromarray(arr).save(cub/'images'/f'{key}.jpg', quality=95)
            images.append(f'{len(images) + 1} {key}.jpg'); boxes.append(f'{len(boxes) + 1} {x}.0 {y}.0 {w}.0 {h}.0')
            (root/'text'/cls).mkdir(parents=True, exist_ok=True)
            caps = [f'This bird is {word} with a {"small" if i % 2 else "pointy"} beak' + ' and long wings' * (i % 4) + '.'
                    for i in range(n_captions)]
            caps[1] = caps[1].upper() + '  '; caps[2] = caps[2].replace('is', 'is\ufffd\ufffd')
            (root/'text'/f'{key}.txt').write_text('\n'.join(caps) + '\n', encoding='utf-8')
            (train if j < n_per_class - 1 else test).append(key)
    cub.joinpath('images.txt').write_text('\n'.join(images) + '\n')
    cub.joinpath('bounding_boxes.txt').write_text('\n'.join(boxes) + '\n')
    (root/'train').mkdir(); (root/'test').mkdir()
    (root/'train/filenames.pickle').write_bytes(pickle.dumps(train, protocol=2))
    (root/'test/filenames.pickle').write_bytes(py2_pickle(test))
    return root

@pytest.fixture
def cub(tmp_path): return make_cub_fixture(tmp_path/'birds')

@pytest.fixture(scope='module')
def synbirds(tmp_path_factory): return make_synbirds(tmp_path_factory.mktemp('sb')/'s', 24, 12, 64, seed=0)

def test_hand_built_cub(cub):
    ds = TextImageDataset(cub, 'train', base_size=16, branch_num=3, words_num=8)
    assert len(ds) == 4 and ds.n_classes == 2 and ds.sizes == [16, 32, 64]
    assert {'red', 'blue', 'bird', 'beak'} <= set(ds.vocab.itos)
    for i in range(len(ds)):
        it = ds[i]
        assert [tuple(x.shape) for x in it['imgs']] == [(3, 16, 16), (3, 32, 32), (3, 64, 64)]
        assert all(x.min() >= -1 and x.max() <= 1 for x in it['imgs'])
        assert it['caption'].shape == (8,) and it['caption'].dtype == torch.long and 1 <= it['cap_len'] <= 8
        assert (it['caption'][it['cap_len']:] == 0).all() and (it['caption'][:it['cap_len']] > 1).all()
        assert it['class_id'] == (0 if it['key'].startswith('001') else 1)
        raw = ds.raw_captions(i)[it['cap_idx']]
        words = ds.vocab.decode(it['caption'])
        assert set(words) <= set(tokenize(clean_caption(raw)))
        # the crop is centred on the bird box: the centre of the 64px image has the bird's colour
        rgb = np.array(COLOURS[it['key'].split('/')[0]][0]) / 127.5 - 1
        assert np.abs(it['imgs'][-1][:, 32, 32].numpy() - rgb).max() < 0.1
    test = TextImageDataset(cub, 'test', base_size=16, branch_num=2)      # Python 2 pickle of str
    assert len(test) == 2 and test.vocab == ds.vocab and test.keys[0].startswith('001')

def test_caption_choice_and_determinism(cub):
    test = TextImageDataset(cub, 'test', base_size=16, branch_num=2)
    a, b = test[0], test[0]
    assert all(torch.equal(x, y) for x, y in zip(a['imgs'], b['imgs'])) and torch.equal(a['caption'], b['caption'])
    train = TextImageDataset(cub, 'train', base_size=16, branch_num=2, words_num=30)
    torch.manual_seed(0)
    items = [train[0] for _ in range(12)]
    assert len({it['cap_idx'] for it in items}) > 3                      # random caption of the ten
    assert len({it['imgs'][-1].sum().item() for it in items}) > 1          # random crop / flip
    torch.manual_seed(0)
    assert [train[0]['cap_idx'] for _ in range(12)] == [it['cap_idx'] for it in items]   # reproducible
    fixed = TextImageDataset(cub, 'train', base_size=16, branch_num=2, cap_choice=3)
    assert {fixed[0]['cap_idx'] for _ in range(5)} == {3}

def test_crop_semantics():
    img = Image.new('RGB', (200, 100))
    crop, box = crop_around_bbox(img, (150, 40, 40, 20))
    # r = int(40 * 0.75) = 30 around the centre (170, 50), clipped to the 200 x 100 image
    assert box == (140, 20, 200, 80) and crop.size == (60, 60)
    crop, box = crop_around_bbox(img, (0, 0, 100, 100))
    assert box == (0, 0, 125, 100)

def test_pyramid_and_collate(cub):
    ds = TextImageDataset(cub, 'train', base_size=16, branch_num=3, words_num=6)
    dl = torch.utils.data.DataLoader(ds, batch_size=4, num_workers=2, collate_fn=collate_sorted)
    b = next(iter(dl))
    assert [tuple(x.shape) for x in b['imgs']] == [(4, 3, 16, 16), (4, 3, 32, 32), (4, 3, 64, 64)]
    assert b['caption'].shape == (4, 6) and b['cap_len'].dtype == torch.long
    assert (b['cap_len'][:-1] >= b['cap_len'][1:]).all()
    assert [b['caption'][i].ne(0).sum().item() for i in range(4)] == b['cap_len'].tolist()
    small = torch.nn.functional.avg_pool2d(b['imgs'][-1], 4)
    assert (small - b['imgs'][0]).abs().mean() < 0.1                      # each level is the same picture
    items = [dict(ds[i], cap_len=l) for i, l in zip(range(4), [3, 5, 5, 1])]
    out = collate_sorted(items)
    assert out['cap_len'].tolist() == [5, 5, 3, 1] and out['key'] == [items[i]['key'] for i in (1, 2, 0, 3)]

def test_wrong_caption(cub):
    ds = TextImageDataset(cub, 'train', base_size=16, branch_num=1, words_num=30)
    g = torch.Generator().manual_seed(0)
    for cls, other in ((0, 'blue'), (1, 'red')):
        for _ in range(10):
            cap, n = ds.wrong_caption(cls, g)
            assert other in ds.vocab.decode(cap[:n])

def test_caption_cache(cub, monkeypatch):
    TextImageDataset(cub, 'train', base_size=16, branch_num=1)
    files = sorted((cub/'cache').glob('captions-*.json'))
    assert len(files) == 1 and json.loads(files[0].read_text())['data']['captions']
    import attngan_edu.data as D
    def boom(*a, **k): raise AssertionError('the cache should have been used')
    monkeypatch.setattr(D, 'parse_caption_file', boom)
    TextImageDataset(cub, 'train', base_size=16, branch_num=1)              # served from the cache
    monkeypatch.undo()
    key = pickle.loads((cub/'train/filenames.pickle').read_bytes())[0]
    p = cub/'text'/f'{key}.txt'
    p.write_text('\n'.join(['a zebra striped bird'] * 10) + '\n'); os.utime(p, ns=(1, 1))
    ds = TextImageDataset(cub, 'train', base_size=16, branch_num=1)
    assert 'zebra' in ds.vocab.itos and len(list((cub/'cache').glob('captions-*.json'))) == 1

class Evil:
    def __init__(self, path): self.path = path
    def __reduce__(self): return (os.system, (f'touch {self.path}',))

def test_safe_load_pickle(tmp_path):
    flag = tmp_path/'pwned'
    bad = tmp_path/'filenames.pickle'; bad.write_bytes(pickle.dumps(['a/b', Evil(flag)], protocol=2))
    with pytest.raises(UnsafePickleError, match=str(bad)): safe_load_pickle(bad)
    assert not flag.exists()
    bad.write_bytes(pickle.dumps(Evil(flag)))
    with pytest.raises(UnsafePickleError, match='system'): safe_load_pickle(bad)
    assert not flag.exists()
    # plain pickle would have run it: the test's payload is real
    pickle.loads(bad.read_bytes()); assert flag.exists()
    ok = tmp_path/'ok.pickle'; ok.write_bytes(py2_pickle(['001.A/a_1', '001.A/a_2']))
    assert safe_load_pickle(ok) == ['001.A/a_1', '001.A/a_2']
    ok.write_bytes(pickle.dumps(('x', 3), protocol=0)); assert safe_load_pickle(ok) == ['x', 3]
    ok.write_bytes(pickle.dumps({'a': 1})); 
    with pytest.raises(ValueError, match='list'): safe_load_pickle(ok)
    ok.write_bytes(pickle.dumps(['a', 1.5]))
    with pytest.raises(ValueError, match='item 1'): safe_load_pickle(ok)
    ok.write_bytes(b'not a pickle')
    with pytest.raises(pickle.UnpicklingError, match='ok.pickle'): safe_load_pickle(ok)

def test_dataset_refuses_malicious_split(cub, tmp_path):
    flag = tmp_path/'pwned'
    (cub/'train/filenames.pickle').write_bytes(pickle.dumps([Evil(flag)]))
    with pytest.raises(UnsafePickleError, match='filenames.pickle'): TextImageDataset(cub, 'train')
    assert not flag.exists()

def truncated(jpeg):
    "The JPEG cut a little after its start-of-scan marker: the header reads, the pixels do not."
    return jpeg[:jpeg.index(b'\xff\xda') + 40]

def _train_keys(cub): return pickle.loads((cub/'train/filenames.pickle').read_bytes())

def test_bad_data_errors_name_the_file(cub):
    k0, k1, k2, _ = _train_keys(cub)
    img = cub/'CUB_200_2011/images'/f'{k0}.jpg'; img.unlink()
    with pytest.raises(FileNotFoundError, match=str(img)): TextImageDataset(cub, 'train')
    img.write_bytes(b'\xff\xd8 this is not a jpeg')
    with pytest.raises(ValueError, match=str(img)): TextImageDataset(cub, 'train')
    data = (cub/'CUB_200_2011/images'/f'{k1}.jpg').read_bytes()
    img.write_bytes(truncated(data))                                       # header fine, pixels missing
    ds = TextImageDataset(cub, 'train')
    with pytest.raises(ValueError, match=str(img)): ds.get(ds.keys.index(k0))
    img.write_bytes(data)
    txt = cub/'text'/f'{k1}.txt'; txt.write_text('one caption\ntwo captions\n')
    with pytest.raises(ValueError, match=rf'{txt}.*expected at least 10 captions, found 2'): TextImageDataset(cub, 'train')
    txt.write_text('\n'.join(['a bird'] * 10))
    bb = cub/'CUB_200_2011/bounding_boxes.txt'
    img_id = next(l.split()[0] for l in (cub/'CUB_200_2011/images.txt').read_text().splitlines() if k2 in l)
    bb.write_text('\n'.join(l for l in bb.read_text().splitlines() if l.split()[0] != img_id) + '\n')
    with pytest.raises(ValueError, match=k2): TextImageDataset(cub, 'train')

def test_skip_bad(cub):
    k0, k1, k2, _ = _train_keys(cub)
    (cub/'CUB_200_2011/images'/f'{k0}.jpg').unlink()
    (cub/'text'/f'{k1}.txt').write_text('only one\n')
    with pytest.warns(UserWarning, match='skipped 2'): ds = TextImageDataset(cub, 'train', skip_bad=True)
    assert len(ds) == 2 and ds.n_skipped == 2 and {k for k, _ in ds.skipped} == {k0, k1}
    data = (cub/'CUB_200_2011/images'/f'{k2}.jpg').read_bytes()
    (cub/'CUB_200_2011/images'/f'{k2}.jpg').write_bytes(truncated(data))
    with pytest.warns(UserWarning, match='skipping'): it = ds.get(ds.keys.index(k2))
    assert it["key"] != k2 and ds.n_skipped == 3

def test_empty_split(cub):
    (cub/'test/filenames.pickle').write_bytes(pickle.dumps([], protocol=2))
    with pytest.raises(ValueError, match=r'test.filenames\.pickle.*empty'): TextImageDataset(cub, 'test')

def test_synbirds_with_truth(synbirds):
    truth = SynBirdsTruth(synbirds)
    for split in ('train', 'test'):
        ds = TextImageDataset(synbirds, split, base_size=32, branch_num=2, with_truth=True)
        assert ds.n_classes == 24
        torch.manual_seed(1)
        for i in range(len(ds)):
            it = ds[i]
            m = it['masks']
            assert m.shape == (len(PART_NAMES), 64, 64) and m.dtype == torch.bool and m.sum(0).max() <= 1
            assert it['attrs'] == truth.attributes(it['key'])
            rgb = truth.part_rgb(it['key'])
            img = (it['imgs'][-1] + 1) * 127.5                            # (3, 64, 64)
            core = -torch.nn.functional.max_pool2d(-(m[:, None].float()), 3, 1, 1)[:, 0] > 0.5   # eroded: off the edges
            for p, mp in zip(PART_NAMES, core):                            # masks follow the crop, resize and flip
                if mp.sum() < 20: continue
                med = img[:, mp].median(1).values.numpy()
                assert np.abs(med - rgb[p]).max() < 30, (it['key'], p, med, rgb[p])

def test_coco(tmp_path):
    root = tmp_path/'coco'
    for split, ids in (('train2014', [1, 2, 3]), ('val2014', [7, 8])):
        (root/split).mkdir(parents=True)
        images, anns = [], []
        for i in ids:
            fn = f'COCO_{split}_{i:012d}.jpg'
            Image.fromarray(np.full((48, 64, 3), 30 * i, np.uint8)).save(root/split/fn)
            images.append(dict(id=i, file_name=fn, width=64, height=48))
            n = 4 if i == 3 else 6
            anns += [dict(id=100 * i + j, image_id=i, caption=f'A {["red", "green", "dog"][j % 3]} thing number {j} &amp; more.')
                     for j in range(n)]
        (root/'annotations').mkdir(exist_ok=True)
        (root/'annotations'/f'captions_{split}.json').write_text(json.dumps(dict(images=images, annotations=anns)))
    with pytest.raises(ValueError, match='has 4 captions, expected at least 5'): CocoTextImageDataset(root, 'train')
    with pytest.warns(UserWarning, match='skipped 1'): ds = CocoTextImageDataset(root, 'train', base_size=16, branch_num=2, skip_bad=True)
    assert len(ds) == 2 and ds.class_ids == [1, 2] and 'amp' not in ds.vocab.itos and 'dog' in ds.vocab.itos
    it = ds[0]
    assert [tuple(x.shape) for x in it['imgs']] == [(3, 16, 16), (3, 32, 32)] and it['class_id'] == 1
    b = collate_sorted([ds[0], ds[1]]); assert b['caption'].shape == (2, 18)
    cap, n = ds.wrong_caption(1); assert n > 0
    val = CocoTextImageDataset(root, 'test', base_size=16, branch_num=1)
    assert len(val) == 2 and val.vocab == ds.vocab and val[1]['key'] == 'COCO_val2014_000000000008'

def _tar_add(t, name, data):
    info = tarfile.TarInfo(name); info.size = len(data); t.addfile(info, io.BytesIO(data))

def _cub_archives(tmp_path):
    "A CUB_200_2011.tgz and an AttnGAN birds caption zip made from the hand-built fixture -> (tgz, zip)"
    src = make_cub_fixture(tmp_path/'src')
    cub_tgz = tmp_path/'CUB_200_2011.tgz'
    with tarfile.open(cub_tgz, 'w:gz') as t:
        _tar_add(t, 'attributes.txt', b'1 has_bill_shape::curved\n')       # the real archive has this at top level
        for p in sorted((src/'CUB_200_2011').rglob('*')):
            if p.is_file(): _tar_add(t, str(p.relative_to(src)), p.read_bytes())
    caps_zip = tmp_path/'birds.zip'
    with zipfile.ZipFile(caps_zip, 'w') as z:
        for p in sorted(src.rglob('*')):
            rel = p.relative_to(src)
            if p.is_file() and rel.parts[0] in ('text', 'train', 'test'): z.write(p, f'birds/{rel}')
        z.writestr('birds/train/char-CNN-RNN-embeddings.pickle', b'ignored')
    return cub_tgz, caps_zip


def test_prepare_cub(tmp_path):
    cub_tgz, caps_zip = _cub_archives(tmp_path)
    rep = prepare_cub(cub_tgz, caps_zip, tmp_path/'out')
    assert rep.ok, str(rep)
    assert (rep.n_images, rep.n_classes, rep.n_train, rep.n_test) == (6, 2, 4, 2)
    assert not (tmp_path/'out/attributes.txt').exists() and not (tmp_path/'out/train/char-CNN-RNN-embeddings.pickle').exists()
    ds = TextImageDataset(tmp_path/'out', 'train', base_size=16, branch_num=1)
    assert len(ds) == 4
    # check_birds_layout reports what is broken, by file
    (tmp_path/'out/CUB_200_2011/images'/f'{ds.keys[0]}.jpg').unlink()
    rep = check_birds_layout(tmp_path/'out')
    assert not rep.ok and any(ds.keys[0] in p and 'not found' in p for p in rep.problems) and 'problem' in str(rep)

def test_prepare_cub_refuses_path_traversal(tmp_path):
    evil = tmp_path/'evil.tgz'
    with tarfile.open(evil, 'w:gz') as t: _tar_add(t, '../CUB_200_2011/images.txt', b'1 x.jpg\n')
    with pytest.raises(ValueError, match='unsafe'): prepare_cub(evil, evil, tmp_path/'out')
    assert not (tmp_path/'CUB_200_2011').exists()


def test_cache_images_gives_the_same_items(cub):
    "cache_images keeps each decoded (and resized) image after its first read; items are the same, random crops included"
    plain = TextImageDataset(cub, 'train', base_size=16, branch_num=2, words_num=6)
    cached = TextImageDataset(cub, 'train', base_size=16, branch_num=2, words_num=6, cache_images=True)
    for rnd in range(2):                                                  # the second pass reads from memory
        for i in range(len(plain)):
            torch.manual_seed(rnd * 100 + i); a = plain.get(i, cap_idx=0)
            torch.manual_seed(rnd * 100 + i); b = cached.get(i, cap_idx=0)
            assert all(torch.equal(x, y) for x, y in zip(a['imgs'], b['imgs']))
    assert len(cached._images) == len(plain) and plain._images is None and plain._resized_images is None
    assert len(cached._resized_images) == len(plain) and all(isinstance(k, tuple) for k in cached._resized_images)   # (index, size)


@pytest.mark.parametrize('key', ['../outside/x', '001.A/../../../etc/passwd', '/etc/passwd'])
def test_a_data_key_cannot_leave_the_data_folder(cub, key):
    (cub/'train/filenames.pickle').write_bytes(pickle.dumps(_train_keys(cub) + [key], protocol=2))
    with pytest.raises(ValueError, match="must stay inside"): TextImageDataset(cub, 'train')


def test_prepare_cub_writes_nothing_before_it_refuses_an_archive(tmp_path):
    "A safe member first, then an unsafe one: the check comes before any write (the old code wrote the first)"
    evil = tmp_path/'evil.tgz'
    with tarfile.open(evil, 'w:gz') as t:
        _tar_add(t, 'CUB_200_2011/images.txt', b'1 x.jpg\n'); _tar_add(t, '../escape.txt', b'x')
    with pytest.raises(ValueError, match='unsafe member path'): prepare_cub(evil, evil, tmp_path/'out')
    assert not (tmp_path/'out').exists() and not (tmp_path/'escape.txt').exists()


def test_data_writers_refuse_a_folder_that_is_not_empty(cub, tmp_path):
    from attngan_edu.synbirds import make_synbirds
    hashes = lambda root: {p: p.read_bytes() for p in sorted(root.rglob('*')) if p.is_file()}
    before = hashes(cub)
    with pytest.raises(FileExistsError, match='not empty'): make_synbirds(cub, 4, 2, 64)
    cub_tgz, caps_zip = _cub_archives(tmp_path)
    with pytest.raises(FileExistsError, match='not empty'): prepare_cub(cub_tgz, caps_zip, cub)
    assert hashes(cub) == before
    assert prepare_cub(cub_tgz, caps_zip, cub, overwrite=True).ok                  # when told to
