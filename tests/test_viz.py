"""attngan_edu.viz and .explorer: the pure `explore*` functions, the PNG drawing, and the AttentionExplorer widgets driven from code.

The widgets are ipywidgets objects: setting `.value` runs the observers synchronously, so a test can type a caption,
toggle a word or click "new sample" and read the PNG bytes of the pictures right after. Pictures are compared as decoded
arrays where only a part of them should change."""
import numpy as np
import pytest
import torch

from attngan_edu.text import Vocab, tokenize
from attngan_edu.attngan import AttnGANGenerator, AttnGANConfig
from attngan_edu.encoders import TextEncoder, CNNImageEncoder
from attngan_edu.synbirds import get_synbirds, PART_NAMES
from attngan_edu.data import TextImageDataset
from attngan_edu import explorer as explorer_module
from attngan_edu.viz import (caption_tokens, explore, explore_words, swap_word, render_stages, render_swap, render_damsm,
                             damsm_view, png_array, png_bytes)
from attngan_edu.explorer import AttentionExplorer, find_run, tiny_run, TINY_RUN

WORDS = 'this bird has a red blue green crown black white wings and belly small tail'
CAPTION = 'this bird has a red crown and black wings'
TILE = 64


@pytest.fixture(scope='module', autouse=True)
def one_thread():
    "These models are tiny: one thread avoids the cost of thread hand-offs (and of oversubscription on a busy machine)"
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


@pytest.fixture(scope='module')
def models():
    "A random 3-stage AttnGAN (64, 128, 256 px) and text encoder: enough to test the plumbing, fast on a CPU"
    torch.manual_seed(0)
    vocab = Vocab.build([tokenize(WORDS)])
    G = AttnGANGenerator(AttnGANConfig(ngf=4, ndf=4, D=16, cond_dim=8, z_dim=8, r_num=1, branch_num=3)).eval()
    te = TextEncoder(len(vocab), emb_dim=8, D=16).eval()
    return G, te, vocab


@pytest.fixture(scope='module')
def synbirds(tmp_path_factory):
    root = get_synbirds(n_train=16, n_test=8, image_size=64, root=tmp_path_factory.mktemp('data'))
    return TextImageDataset(root, 'test', base_size=64, branch_num=1, with_truth=True)


@pytest.fixture
def explorer(models):
    G, te, vocab = models
    return AttentionExplorer(G, te, vocab, caption=CAPTION, tile=TILE)


def tile_x(col):
    "x of the left edge of column `col` in a compose() picture (pad 4)"
    return 4 + col * (TILE + 4)


# --- the pure layer -----------------------------------------------------------------------------------------------

def test_caption_tokens_marks_unknown_and_cut(models):
    _, _, vocab = models
    ct = caption_tokens('This  bird has a zorgle RED crown &amp; wings', vocab, words_num=5)
    assert ct.cleaned == 'This bird has a zorgle RED crown & wings'
    assert ct.words == ['this', 'bird', 'has', 'a', 'red']
    assert ct.status == ['ok', 'ok', 'ok', 'ok', 'unknown', 'ok', 'cut', 'cut']


def test_explore_shapes_and_attention_sums(models):
    G, te, vocab = models
    ex = explore(G, te, vocab, CAPTION, seed=1)
    n = len(ex.words)
    assert [x.shape for x in ex.imgs] == [(64, 64, 3), (128, 128, 3), (256, 256, 3)]
    assert [a.shape for a in ex.att] == [(n, 64, 64), (n, 128, 128)]          # on the grids of h_0 and h_1
    for a, top in zip(ex.att, ex.top):
        np.testing.assert_allclose(a.sum(0), 1, atol=1e-5)                     # softmax over words in every region
        shares = a.mean(axis=(1, 2))
        assert [t for t, _ in top] == list(np.argsort(-shares, kind='stable')[:5])
        np.testing.assert_allclose([s for _, s in top], np.sort(shares)[::-1][:5], atol=1e-6)


def test_explore_seed_determinism_and_unknown_words(models):
    G, te, vocab = models
    a = explore(G, te, vocab, CAPTION, seed=3)
    b = explore(G, te, vocab, 'This zorgle bird has a RED crown, and black wings!', seed=3)   # same known words
    assert b.words == a.words and b.caption.status.count('unknown') == 1
    for x, y in zip(a.imgs + a.att, b.imgs + b.att): np.testing.assert_array_equal(x, y)
    c = explore(G, te, vocab, CAPTION, seed=4)
    assert not np.allclose(a.imgs[-1], c.imgs[-1])


def test_explore_words_batch_matches_single_and_keeps_noise(models):
    G, te, vocab = models
    words = caption_tokens(CAPTION, vocab).words
    short = ['a', 'small', 'bird']                                             # a shorter caption: padding + mask
    single = [explore_words(G, te, vocab, [w], seed=5)[0] for w in (words, short)]
    batch = explore_words(G, te, vocab, [words, short], seed=5)
    for s, b in zip(single, batch):
        for x, y in zip(s.imgs + s.att, b.imgs + b.att): np.testing.assert_allclose(x, y, atol=1e-5)
    # swapping one word changes the images but not the noise: x_0 depends on z and the sentence only,
    # so the change at stage 0 comes through the sentence feature; all stages differ, none is identical
    blue = explore_words(G, te, vocab, [swap_word(words, words.index('red'), 'blue')], seed=5)[0]
    assert blue.words[words.index('red')] == 'blue'
    assert not np.allclose(blue.imgs[-1], batch[0].imgs[-1])


def test_explore_errors(models):
    G, te, vocab = models
    with pytest.raises(ValueError, match='no word of'): explore(G, te, vocab, 'zorgle glorp')
    with pytest.raises(ValueError, match=r"\['zorgle'\] are not in the vocabulary"): explore_words(G, te, vocab, [['a', 'zorgle']])
    with pytest.raises(IndexError, match='position 9'): swap_word(['a', 'bird'], 9, 'red')
    G.train()
    try:
        with pytest.raises(ValueError, match='eval mode'): explore(G, te, vocab, CAPTION)
    finally: G.eval()


def test_render_stages_only_overlay_depends_on_word(models):
    G, te, vocab = models
    ex = explore(G, te, vocab, CAPTION, seed=0)
    pics = [png_array(png_bytes(render_stages(ex, stage=2, word=w, opacity=0.6, tile=TILE))) for w in (0, 4)]
    assert not np.array_equal(pics[0], pics[1])
    np.testing.assert_array_equal(pics[0][:, :tile_x(3)], pics[1][:, :tile_x(3)])   # the three stage images
    # opacity 0: the overlay tile is the plain stage image, whatever the word
    plain = [png_array(png_bytes(render_stages(ex, stage=2, word=w, opacity=0., tile=TILE))) for w in (0, 4)]
    h = plain[0].shape[0]
    np.testing.assert_array_equal(plain[0][h - TILE - 4:, tile_x(3):], plain[1][h - TILE - 4:, tile_x(3):])
    np.testing.assert_array_equal(plain[0][h - TILE - 4:, tile_x(3):tile_x(4)], plain[0][h - TILE - 4:, tile_x(2):tile_x(3)])
    with pytest.raises(ValueError, match='stage must be 1..2'): render_stages(ex, stage=0)
    with pytest.raises(ValueError, match='word must be'): render_stages(ex, word=99)


# --- the widgets --------------------------------------------------------------------------------------------------

def test_explorer_initial_state(explorer):
    assert [o[0] for o in explorer.word.options] == caption_tokens(CAPTION, explorer.vocab).words
    assert [o[1] for o in explorer.stage.options] == [1, 2] and explorer.stage.value == 2
    for img in (explorer.stage_img, explorer.top_img): assert img.value[:8] == b'\x89PNG\r\n\x1a\n'
    assert explorer.swap_img.layout.display == 'none'
    assert explorer.mode.options == ('generate',)                    # no image encoder: no DAMSM mode
    assert explorer.status.value.startswith('<small>') and 'total' in explorer.timings


def test_word_toggle_redraws_without_recomputing(explorer):
    ex, before, top = explorer.exploration, explorer.stage_img.value, explorer.top_img.value
    explorer.word.value = explorer.exploration.words.index('red')
    assert explorer.exploration is ex                                # cached: the generator did not run again
    assert 'compute' in explorer.timings and explorer.stage_img.value != before
    a, b = png_array(before), png_array(explorer.stage_img.value)
    np.testing.assert_array_equal(a[:, :tile_x(3)], b[:, :tile_x(3)])
    assert not np.array_equal(a[:, tile_x(3):], b[:, tile_x(3):])
    assert explorer.top_img.value == top                             # the top words do not depend on the word
    explorer.word.value = 0
    assert explorer.stage_img.value == before                        # back: the very same picture


def test_stage_selector_changes_the_map(explorer):
    before = explorer.stage_img.value
    explorer.stage.value = 1
    assert explorer.stage_img.value != before
    explorer.stage.value = 2
    assert explorer.stage_img.value == before


def test_opacity_slider(explorer):
    ex, before = explorer.exploration, explorer.stage_img.value
    explorer.opacity.value = 0.
    assert explorer.exploration is ex and explorer.stage_img.value != before
    pic = png_array(explorer.stage_img.value)
    h = pic.shape[0]
    np.testing.assert_array_equal(pic[h - TILE - 4:, tile_x(3):tile_x(4)], pic[h - TILE - 4:, tile_x(2):tile_x(3)])  # = x_2


def test_seed_and_new_sample(explorer):
    before, seed = explorer.stage_img.value, explorer.seed.value
    imgs_before = [x.copy() for x in explorer.exploration.imgs]
    explorer.new_sample.click()
    assert explorer.seed.value == seed + 1
    assert explorer.stage_img.value != before
    assert all(not np.allclose(x, y) for x, y in zip(imgs_before, explorer.exploration.imgs))
    explorer.seed.value = seed
    assert explorer.stage_img.value == before


def test_caption_typing_updates_tokens_words_and_pictures(explorer):
    before = explorer.stage_img.value
    explorer.caption.value = CAPTION + ' zorgle'                     # an unknown word: shown, dropped, same picture
    assert 'line-through' in explorer.tokens.value and 'zorgle' in explorer.tokens.value
    assert explorer.stage_img.value == before
    explorer.word.value = 3
    explorer.caption.value = 'a small bird with a blue tail'         # 'with' is unknown
    assert [o[0] for o in explorer.word.options] == ['a', 'small', 'bird', 'a', 'blue', 'tail']
    assert explorer.word.value == 3                                   # the selected position is kept
    assert explorer.exploration.words == ['a', 'small', 'bird', 'a', 'blue', 'tail']
    assert explorer.stage_img.value != before
    last = explorer.stage_img.value
    explorer.caption.value = 'zorgle glorp'                          # nothing known: an error, the pictures stay
    assert 'no word of the caption' in explorer.status.value
    assert explorer.stage_img.value == last
    explorer.caption.value = CAPTION
    assert explorer.status.value.startswith('<small>')


def test_swap_word_side_by_side(explorer):
    red = explorer.exploration.words.index('red')
    explorer.word.value = red
    main = explorer.stage_img.value
    explorer.swap_to.value = 'blue'
    assert explorer.swap_img.layout.display == '' and explorer.swap_img.value[:4] == b'\x89PNG'
    assert explorer.swapped.words == swap_word(explorer.exploration.words, red, 'blue')
    assert explorer.swapped.seed == explorer.exploration.seed
    assert not np.allclose(explorer.swapped.imgs[-1], explorer.exploration.imgs[-1])
    assert explorer.stage_img.value == main                          # the main picture is untouched
    # the left half of the comparison is the original caption, the right half the swapped one
    pic = png_array(explorer.swap_img.value)
    expected = png_array(png_bytes(render_swap(explorer.exploration, explorer.swapped, red, 2, 0.6, TILE)))
    np.testing.assert_array_equal(pic, expected)
    explorer.swap_to.value = 'zorgle'
    assert explorer.swapped is None and explorer.swap_img.layout.display == 'none'
    assert '"zorgle" is not in the vocabulary' in explorer.status.value
    explorer.swap_to.value = ''
    assert explorer.status.value.startswith('<small>')


def test_cache_is_bounded(models):
    G, te, vocab = models
    ex = AttentionExplorer(G, te, vocab, caption=CAPTION, tile=TILE, cache_size=2)
    for s in range(1, 4): ex.seed.value = s
    assert [k[1] for k in ex._cache] == [2, 3]                        # least recently used first out


# --- DAMSM mode ---------------------------------------------------------------------------------------------------

def test_damsm_view_and_mode(models, synbirds):
    G, _, _ = models
    torch.manual_seed(0)
    te = TextEncoder(len(synbirds.vocab), emb_dim=8, D=16).eval()
    ie = CNNImageEncoder(D=16, ndf=8).eval()
    view = damsm_view(te, ie, synbirds, 0, cap_idx=1)
    assert view.alpha.shape == (len(view.words), 4, 4)
    np.testing.assert_allclose(view.alpha.sum(axis=(1, 2)), 1, atol=1e-5)
    assert set(view.masks) == set(PART_NAMES) and view.masks['body'].shape == (64, 64)
    for w, part in zip(view.words, view.named):                      # only colour and part words name a part
        if part is not None: assert part in PART_NAMES
    assert any(view.named)

    G16 = AttnGANGenerator(AttnGANConfig(ngf=4, ndf=4, D=16, cond_dim=8, z_dim=8, r_num=1, branch_num=2)).eval()
    ex = AttentionExplorer(G16, te, synbirds.vocab, ie, synbirds, caption='a bird with a red crown', tile=TILE)
    assert ex.mode.options == ('generate', 'DAMSM')
    gen_pic = ex.stage_img.value
    ex.mode.value = 'DAMSM'
    assert ex.gen_box.layout.display == 'none' and ex.damsm_box.layout.display == ''
    first = ex.damsm_img.value
    assert first[:4] == b'\x89PNG' and ex.damsm.key == synbirds.keys[0]
    np.testing.assert_array_equal(png_array(first), png_array(png_bytes(render_damsm(ex.damsm, 0.6, tile=TILE * 3 // 4))))
    ex.item.value = 1
    assert ex.damsm.key == synbirds.keys[1] and ex.damsm_img.value != first
    ex.cap_idx.value = 2
    assert ex.damsm.cap_idx == 2
    ex.item.value, ex.cap_idx.value = 0, 0
    assert ex.damsm_img.value == first                                # cached, identical
    ex.opacity.value = 0.2
    assert ex.damsm_img.value != first
    ex.mode.value = 'generate'
    assert ex.stage_img.value != gen_pic                              # redrawn with the new opacity


# --- runs ---------------------------------------------------------------------------------------------------------

def _fake_run(d, model, mtime):
    d.mkdir(parents=True)
    (d / 'config.toml').write_text(f'model = "{model}"\n')
    ck = d / 'checkpoint.pt'; ck.write_bytes(b'')
    import os; os.utime(ck, (mtime, mtime))


def test_find_run_picks_newest_attngan_run(tmp_path):
    assert find_run(tmp_path) is None
    _fake_run(tmp_path / 'old', 'attngan', 1000)
    _fake_run(tmp_path / 'new', 'attngan', 2000)
    _fake_run(tmp_path / 'newer-stackganpp', 'stackganpp', 3000)
    _fake_run(tmp_path / '.tmp-partial', 'attngan', 4000)
    (tmp_path / 'broken').mkdir(); (tmp_path / 'broken' / 'checkpoint.pt').write_bytes(b'')   # no config.toml
    assert find_run(tmp_path, tmp_path / 'missing') == tmp_path / 'new'


def test_from_run_loads_a_cli_run():
    "The cached tiny run (trained by the CLI's train() the first time, ~10 s) drives a full explorer incl. DAMSM mode"
    run = tiny_run()
    assert run.name.startswith(TINY_RUN + '-') and (run / 'checkpoint.pt').is_file()
    assert tiny_run() == run                                          # cached: the same folder, no training
    ex = AttentionExplorer.from_run(run, tile=TILE)
    assert ex.mode.options == ('generate', 'DAMSM')
    assert ex.status.value.startswith('<small>'), ex.status.value
    before = ex.stage_img.value
    ex.word.value = 1
    assert ex.stage_img.value != before
    ex.mode.value = 'DAMSM'
    assert ex.damsm_img.value[:4] == b'\x89PNG' and ex.damsm.masks     # SynBirds: part masks present


def test_from_run_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match='does not exist'): AttentionExplorer.from_run(tmp_path / 'nope')


def test_from_run_without_test_data_starts_without_damsm(monkeypatch):
    "A run whose data is not on this machine (CUB not prepared, say) still explores; the DAMSM mode is left out"
    def missing(cfg): raise FileNotFoundError('config: data_dir /nowhere is not a folder')
    monkeypatch.setattr(explorer_module, "dataset_root", missing)
    with pytest.warns(UserWarning, match='no test data for the DAMSM mode'):
        ex = AttentionExplorer.from_run(tiny_run(), tile=TILE)
    assert ex.mode.options == ('generate',) and ex.stage_img.value[:4] == b'\x89PNG'
