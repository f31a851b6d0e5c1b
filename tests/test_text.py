"""Tests for attngan_edu.text (notebook nbs/01_captions.ipynb): the regex constructs it teaches,
AttnGAN's reference tokenizer, clean_caption, and Vocab (encode/decode, truncation rule, JSON round trips)."""
import json, random, re

import pytest
import torch

from attngan_edu.text import PAD, PAD_ID, UNK, UNK_ID, Vocab, clean_caption, tokenize


# ---------------------------------------------------------------- regex constructs (mirror the notebook)
def test_raw_strings():
    assert re.search(r'\bbird\b', 'a bird') and re.search('\bbird\b', 'a bird') is None

def test_literals_and_dot():
    assert re.findall(r'b..l', 'white belly and bill') == ['bell', 'bill']
    assert re.search(r'crown.and', 'crown\nand') is None and re.search(r'crown.and', 'crown\nand', re.S)

def test_escapes():
    assert re.findall(r'\.', 'a. b.') == ['.', '.'] and len(re.findall(r'.', 'a. b.')) == 5
    assert re.escape('bill (black).') == r'bill\ \(black\)\.'
    assert re.search(re.escape('(black).'), 'a bill (black).')

def test_sets_and_negated_sets():
    assert re.findall(r'[^a-z ]', 'red crown ,red bill .') == [',', '.']
    assert re.findall(r'[.!?]+', 'crown!! bill...') == ['!!', '...']
    assert re.findall(r'[-a]', 'a-b') == ['a', '-'] and re.findall(r'[]a]', ']a') == [']', 'a']

def test_shorthand_classes_and_negations():
    assert re.findall(r'\d+', 'about 5 inches, 10cm') == ['5', '10']
    assert re.findall(r'\D+', 'a1b') == ['a', 'b']
    assert re.findall(r'\w+', 'wing_bars, 2') == ['wing_bars', '2']
    assert re.findall(r'\W+', 'a, b') == [', ']
    assert re.findall(r'\s+', 'a\tb  c\nd') == ['\t', '  ', '\n']
    assert re.findall(r'\S+', ' grey  wings ') == ['grey', 'wings']
    assert re.fullmatch(r'\w+', 'café') and re.fullmatch(r'\w+', 'café', re.ASCII) is None
    assert re.fullmatch(r'\d', '٣') and re.fullmatch(r'\d', '٣', re.ASCII) is None

@pytest.mark.parametrize('pattern,text,expected', [
    (r'wingx*', 'wing wingxx', ['wing', 'wingxx']),                       # *
    (r' +', 'a   b', ['   ']),                                           # +
    (r'colou?r', 'colour color', ['colour', 'color']),                    # ?
    (r'\b\w{4}\b', 'a long bill and grey', ['long', 'bill', 'grey']),     # {m}
    (r'\b\d{1,2}\b', '5 10 100', ['5', '10']),                            # {m,n}
    (r'\d{2,}', '5 10 100', ['10', '100']),                               # {m,}
    (r'<b>.*</b>', '<b>a</b> <b>b</b>', ['<b>a</b> <b>b</b>']),           # greedy
    (r'<b>.*?</b>', '<b>a</b> <b>b</b>', ['<b>a</b>', '<b>b</b>']),       # *?
    (r'\d+?', '100', ['1', '0', '0']),                                    # +?
    (r'ab??', 'ab', ['a']),                                               # ??
    (r'\w{2,4}?', 'wings', ['wi', 'ng']),                                 # {m,n}?
])
def test_quantifiers(pattern, text, expected):
    assert re.findall(pattern, text) == expected

def test_anchors():
    lines = 'this bird is red\nthe bird is blue'
    assert re.findall(r'^\w+', lines) == ['this'] and re.findall(r'^\w+', lines, re.M) == ['this', 'the']
    assert re.findall(r'\w+$', lines) == ['blue'] and re.findall(r'\w+$', lines, re.M) == ['red', 'blue']
    assert re.findall(r'\A\w+', lines, re.M) == ['this'] and re.findall(r'\w+\Z', lines, re.M) == ['blue']
    assert re.search(r'red$', 'red\n') and re.search(r'red\Z', 'red\n') is None
    assert re.findall(r'\bbill\b', 'a bill, billed') == ['bill']
    assert re.findall(r'\w+\Bbird\b', 'a hummingbird and a bird') == ['hummingbird']

def test_alternation_precedence():
    assert re.search(r'^red|blue$', 'red and green')
    assert re.fullmatch(r'red|blue', 'red and blue') is None and re.fullmatch(r'(?:red|blue)', 'blue')

def test_groups_named_groups_and_backreferences():
    m = re.search(r'(\w+) (wings|belly)', 'a white belly')
    assert m.groups() == ('white', 'belly') and m.group(0) == 'white belly'
    assert re.findall(r'(\w+) (wings|belly)', 'white belly, brown wings') == [('white', 'belly'), ('brown', 'wings')]
    m = re.search(r'(?P<color>\w+)\s+(?P<part>breast)', 'a red  breast')
    assert m.groupdict() == {'color': 'red', 'part': 'breast'}
    assert re.sub(r'\b(\w+)\s+\1\b', r'\1', 'the the bird', flags=re.I) == 'the bird'
    assert re.search(r'\b(\w+)\s+\1\b', 'the theory') is None
    assert re.search(r'\b(?P<w>\w+) (?P=w)\b', 'a very very long bill')['w'] == 'very'
    assert re.sub(r'(?P<c>\w+)-(?P<d>\w+)', r'\g<d> \g<c>', 'red-orange') == 'orange red'

def test_non_capturing_groups():
    text = 'a light brown crown and a dark grey back'
    assert re.findall(r'(?:light|dark) (\w+)', text) == ['brown', 'grey']
    assert re.findall(r'(light|dark) (\w+)', text) == [('light', 'brown'), ('dark', 'grey')]

def test_inline_flags():
    assert re.findall(r'(?i)bird', 'Bird BIRD') == ['Bird', 'BIRD']
    assert re.findall(r'(?i:black) wings', 'BLACK wings, BLACK WINGS') == ['BLACK wings']
    assert re.findall(r'(?m)^\w+', 'one\ntwo') == ['one', 'two']
    assert re.fullmatch(r'(?s).+', 'a\nb') and re.fullmatch(r'.+', 'a\nb') is None
    assert re.fullmatch(r'(?a)\w+', 'café') is None
    assert re.search(r'(?x) (?P<size> small | large ) \s+ bird  # comment', 'a large bird')['size'] == 'large'
    with pytest.raises(re.error, match='global flags'): re.compile(r'bird(?i)')

def test_lookarounds():
    assert re.findall(r'\w+(?= wings)', 'brown wings and grey wings') == ['brown', 'grey']
    assert re.search(r'\bwhite\b(?! belly)', 'white belly, white throat').start() == 13
    assert re.findall(r'(?<=has a )\w+', 'this bird has a white belly') == ['white']
    assert re.findall(r'(?<!very )\bshort\b', 'a short bill and a very short tail') == ['short']
    with pytest.raises(re.error, match='fixed-width'): re.compile(r'(?<=a+)b')

# ---------------------------------------------------------------- validation pitfalls
INTEGER = re.compile(r'[+-]?\d+', re.ASCII)
DECIMAL = re.compile(r'[+-]?(?:\d+(?:\.\d+)?|\.\d+)', re.ASCII)
WORD = re.compile(r"[A-Za-z]+(?:['-][A-Za-z]+)*")

@pytest.mark.parametrize('pat,good,bad', [
    (INTEGER, ['0', '-7', '+13', '007'], ['', '-', '4.2', '42\n', ' 42', '٣٤', '12abc', '1_000']),
    (DECIMAL, ['3', '3.14', '-0.5', '.5'], ['', '.', '3.', '1.2.3', '1e-3', 'nan', '3.14\n']),
    (WORD, ['bird', "don't", 'yellow-throated'], ['', 'café', 'wing_bar', '-bird', "bird'", 'a--b', 'b1rd']),
])
def test_validation_patterns(pat, good, bad):
    assert all(pat.fullmatch(s) for s in good)
    assert not any(pat.fullmatch(s) for s in bad)

def test_validation_pitfalls():
    assert re.match(r'\d+', '12abc') and re.fullmatch(r'\d+', '12abc') is None
    assert re.match(r'\d+$', '42\n') and re.fullmatch(r'\d+', '42\n') is None
    assert re.fullmatch(r'\d+', '٣٤') and re.fullmatch(r'[0-9]+', '٣٤') is None
    assert re.fullmatch(r'[A-z]+', 'a_b^c') and re.fullmatch(r'[A-Za-z]+', 'a_b^c') is None
    assert re.fullmatch(r'[a-z]', '\u212a', re.I) and re.fullmatch(r'[a-z]', '\u212a', re.I | re.A) is None

# ---------------------------------------------------------------- tokenize: AttnGAN reference rules
TRICKY = [
    ('This bird has a WHITE belly.', ['this', 'bird', 'has', 'a', 'white', 'belly']),
    ('a caf\u00e9-coloured bird', ['a', 'caf', 'coloured', 'bird']),               # composed accent dropped
    ('cafe\u0301 bird', ['cafe', 'bird']),                                        # combining accent = separator
    ('na\u00efve \u00c9T\u00c9', ['nave', 't']),
    ('\u00e0 \u00e9\u00e8', []),                                                  # all tokens become empty
    ('small\ufffd\ufffdbird', ['small', 'bird']),                                 # U+FFFD pair -> space
    ('small\ufffdbird', ['small', 'bird']),                                       # lone U+FFFD is a separator
    ('bird\ufffd\ufffd\ufffdwing', ['bird', 'wing']),
    ('\ufffd\ufffd', []),
    ('it has 2 wings and 10 feathers', ['it', 'has', '2', 'wings', 'and', '10', 'feathers']),
    ('a wing_bar and tail__feathers _', ['a', 'wing_bar', 'and', 'tail__feathers', '_']),
    ("the bird's bill, don't", ['the', 'bird', 's', 'bill', 'don', 't']),
    ('don\u2019t', ['don', 't']),
    ('', []),
    ('   ', []),
    ('\tthis\nbird\r\n', ['this', 'bird']),
    ('black &amp; white &#39;', ['black', 'amp', 'white', '39']),                 # entities are NOT decoded
    ('a \U0001f426 bird \U0001f600!', ['a', 'bird']),                             # emoji are not \w
    ('\ufb01nch', ['nch']),                                                       # ligature fi is one letter
    ('x\u00b2 \u0663 birds', ['x', 'birds']),                                     # superscript 2, Arabic-Indic 3
    ('\u212a', ['k']),                                                            # Kelvin sign lowers to ASCII k
    ('\u0130stanbul', ['i', 'stanbul']),                                          # İ lowers to i + combining dot
    ('dark\u2013brown\u00a0crown', ['dark', 'brown', 'crown']),
    ('RED-ORANGE patch!!!', ['red', 'orange', 'patch']),
]

@pytest.mark.parametrize('raw,expected', TRICKY)
def test_tokenize_tricky(raw, expected):
    assert tokenize(raw) == expected

@pytest.mark.parametrize('bad,name', [(None, 'NoneType'), (b'a bird', 'bytes'), (3, 'int'), (['a', 'bird'], 'list')])
def test_tokenize_rejects_non_str(bad, name):
    with pytest.raises(TypeError, match=name): tokenize(bad)

def _reference_tokens(cap):
    "Independent restatement of AttnGAN's load_captions rules with plain re (no nltk)."
    cap = cap.replace('\ufffd\ufffd', ' ')
    out = []
    for t in re.findall(r'\w+', cap.lower()):
        t = t.encode('ascii', 'ignore').decode('ascii')
        if len(t) > 0: out.append(t)
    return out

def test_tokenize_matches_reference_on_random_strings():
    alphabet = list('abcXYZ019_ \t\n.,;:!?\'"-&#') + ['\ufffd', '\u00e9', '\u00c9', 'e\u0301', '\u2019', '\u2013',
                                                    '\u00a0', '\U0001f426', '\u0663', '\u00b2', '\u212a', '\u0130', '\ufb01']
    rnd = random.Random(0)
    for _ in range(2000):
        s = ''.join(rnd.choice(alphabet) for _ in range(rnd.randint(0, 30)))
        assert tokenize(s) == _reference_tokens(s), repr(s)

def test_tokenize_agrees_with_installed_nltk_on_ordinary_text():
    # Without combining marks or number signs like '²' the regex engine nltk now uses and stdlib re agree on \w.
    from nltk.tokenize import RegexpTokenizer
    nltk_tok = RegexpTokenizer(r'\w+')
    alphabet = list('abcXYZ019_ \t\n.,;:!?\'"-&#') + ['\ufffd', '\u00e9', '\u00c9', '\u2019', '\u2013', '\u00a0',
                                                    '\U0001f426', '\u0663', '\u212a', '\ufb01']
    rnd = random.Random(2)
    for _ in range(300):
        s = ''.join(rnd.choice(alphabet) for _ in range(rnd.randint(0, 30)))
        ref = [t.encode('ascii', 'ignore').decode('ascii') for t in nltk_tok.tokenize(s.replace('\ufffd\ufffd', ' ').lower())]
        assert tokenize(s) == [t for t in ref if t], repr(s)

def test_tokenize_uses_stdlib_re_word_semantics():
    # AttnGAN's captions were tokenized by an nltk that compiled with stdlib re: a combining mark separates,
    # a superscript digit glues (the installed nltk's regex engine would do the opposite).
    assert tokenize('cafe\u0301s') == ['cafe', 's']
    assert tokenize('x\u00b2y') == ['xy']

def test_tokens_are_ascii_nonempty_lowercase():
    rnd = random.Random(1)
    for _ in range(500):
        s = ''.join(chr(rnd.randint(0, 0x2FFF)) for _ in range(rnd.randint(0, 40)))
        for t in tokenize(s):
            assert t and t.isascii() and t == t.lower() and re.fullmatch(r'\w+', t, re.A)

# ---------------------------------------------------------------- clean_caption
@pytest.mark.parametrize('raw,expected', [
    ('  a black &amp; white\ufffd\ufffdbird\u2014with a \u201cred\u201d cap\u2026 ', 'a black & white bird-with a "red" cap...'),
    ('don&#39;t', "don't"),
    ('don\u2019t', "don't"),
    ('caf&eacute;', 'caf\u00e9'),
    ('&amp;amp;', '&amp;'),                       # one unescaping pass only
    ('it\u2019s\ta\n\u00a0bird', "it's a bird"),
    ('lone\ufffdreplacement', 'lone replacement'),
    ('A  Bird\n', 'A Bird'),                      # case is kept
    ('dark\u2013brown \u2212 \u2010', 'dark-brown - -'),
    ('', ''), ('  \t ', ''),
])
def test_clean_caption(raw, expected):
    assert clean_caption(raw) == expected

def test_clean_caption_vs_tokenize():
    assert tokenize('black &amp; white') == ['black', 'amp', 'white']
    assert tokenize(clean_caption('black &amp; white')) == ['black', 'white']
    assert tokenize("don&#39;t") == ['don', '39', 't'] and tokenize(clean_caption("don&#39;t")) == ['don', 't']
    for s in ['don\u2019t', 'dark\u2013brown', 'A  Bird\n', 'white\ufffd\ufffdbelly', 'x\ufffdy', '\u201cblue\u201d\u2026']:
        assert tokenize(clean_caption(s)) == tokenize(s)

def test_clean_caption_rejects_non_str():
    with pytest.raises(TypeError, match='int'): clean_caption(3)

# ---------------------------------------------------------------- Vocab
CAPTIONS = ['a red bird', 'a blue bird', 'the bird is red', 'a tiny bird']

@pytest.fixture
def vocab():
    return Vocab.build([tokenize(c) for c in CAPTIONS])

def test_vocab_layout_and_order(vocab):
    assert vocab.itos[:2] == [PAD, UNK] and (PAD_ID, UNK_ID) == (0, 1)
    assert vocab.itos == ['<pad>', '<unk>', 'bird', 'a', 'red', 'blue', 'is', 'the', 'tiny']   # count desc, then alpha
    assert all(vocab.stoi[w] == i for i, w in enumerate(vocab.itos)) and len(vocab) == 9
    assert Vocab.build([tokenize(c) for c in reversed(CAPTIONS)]) == vocab
    r = repr(vocab)
    assert r.startswith('Vocab(9 entries') and 'bird' in r

def test_vocab_min_count():
    tl = [tokenize(c) for c in CAPTIONS]
    assert Vocab.build(tl, min_count=2).itos == ['<pad>', '<unk>', 'bird', 'a', 'red']
    assert Vocab.build(tl, min_count=4).itos == ['<pad>', '<unk>', 'bird']
    assert Vocab.build(tl, min_count=5).itos == ['<pad>', '<unk>']
    for bad in [0, -1, 1.5, True, '2']:
        with pytest.raises(ValueError, match='min_count'): Vocab.build(tl, min_count=bad)

def test_vocab_build_errors():
    with pytest.raises(TypeError, match=r'token_lists\[1\] is a str'): Vocab.build([['a'], 'a red bird'])
    with pytest.raises(ValueError, match='reserved'): Vocab.build([['a', '<unk>']])
    with pytest.raises(ValueError, match='itos'): Vocab(['<unk>', '<pad>'])
    with pytest.raises(ValueError, match='duplicate'): Vocab(['<pad>', '<unk>', 'a', 'a'])

def test_encode_pads_and_decode_round_trip(vocab):
    for cap in CAPTIONS:
        toks = tokenize(cap)
        x, n = vocab.encode(toks, words_num=6)
        assert x.dtype == torch.long and x.shape == (6,) and n == len(toks)
        assert (x[n:] == PAD_ID).all() and (x[:n] != PAD_ID).all()
        assert vocab.decode(x) == toks and vocab.decode(x.tolist()) == toks
    x, n = vocab.encode(['a', 'red', 'bird'], words_num=3)
    assert x.tolist() == [3, 4, 2] and n == 3               # exactly words_num: no truncation, no padding

def test_encode_unknown_words(vocab):
    x, n = vocab.encode(['a', 'purple', 'xyzzy', 'bird'], words_num=5)
    assert x.tolist() == [3, UNK_ID, UNK_ID, 2, 0] and n == 4
    assert vocab.decode(x) == ['a', '<unk>', '<unk>', 'bird']
    x, n = vocab.encode([], 3)
    assert x.tolist() == [0, 0, 0] and n == 0

def test_encode_truncation_keeps_order_and_is_deterministic():
    words = [f'w{i}' for i in range(30)]
    v = Vocab.build([words])
    for seed in range(20):
        x1, n1 = v.encode(words, 18, rng=torch.Generator().manual_seed(seed))
        x2, n2 = v.encode(words, 18, rng=torch.Generator().manual_seed(seed))
        assert torch.equal(x1, x2) and n1 == n2 == 18
        kept = v.decode(x1)
        pos = [words.index(w) for w in kept]
        assert len(kept) == 18 and pos == sorted(pos) and len(set(pos)) == 18   # a sub-sequence, in order
        ref = torch.randperm(30, generator=torch.Generator().manual_seed(seed))[:18].sort().values
        assert pos == ref.tolist()                                               # AttnGAN's rule exactly
    picks = {tuple(v.encode(words, 18, rng=torch.Generator().manual_seed(s))[0].tolist()) for s in range(20)}
    assert len(picks) > 1                                                        # the choice does depend on the seed

def test_encode_truncation_is_uniform_over_positions():
    words = [f'w{i}' for i in range(10)]
    v = Vocab.build([words])
    g = torch.Generator().manual_seed(0)
    hits = torch.zeros(10)
    for _ in range(2000):
        x, _ = v.encode(words, 4, rng=g)
        hits[x - 2] += 1          # ids 2..11 are w0..w9 (all count 1, alphabetical: w0, w1, ..., w9)
    freq = hits / 2000
    assert torch.allclose(freq, torch.full((10,), 0.4), atol=0.05), freq

def test_encode_global_rng_reproducible(vocab):
    toks = tokenize('the tiny red bird is a blue bird the red bird')
    torch.manual_seed(3); a = vocab.encode(toks, 4)[0]
    torch.manual_seed(3); b = vocab.encode(toks, 4)[0]
    assert torch.equal(a, b)

def test_encode_decode_errors(vocab):
    with pytest.raises(TypeError, match='got a str'): vocab.encode('a red bird', 5)
    with pytest.raises(TypeError, match=r'tokens\[1\]'): vocab.encode(['a', 3], 5)
    with pytest.raises(TypeError, match='Generator'): vocab.encode(['a'], 5, rng=0)
    for bad in [0, -3, 2.0, True]:
        with pytest.raises(ValueError, match='words_num'): vocab.encode(['a'], bad)
    with pytest.raises(IndexError, match='99'): vocab.decode([2, 99])
    with pytest.raises(IndexError, match='-1'): vocab.decode(torch.tensor([-1]))
    with pytest.raises(ValueError, match='1-D'): vocab.decode(torch.zeros(2, 3, dtype=torch.long))

def test_save_load_round_trip(vocab, tmp_path):
    p = vocab.save(tmp_path / 'sub' / 'vocab.json')
    assert p == tmp_path / 'sub' / 'vocab.json'
    assert [q.name for q in p.parent.iterdir()] == ['vocab.json']          # no temporary file left behind
    obj = json.loads(p.read_text())
    assert obj['itos'] == vocab.itos and obj['format'] == 'attngan_edu.Vocab'
    v2 = Vocab.load(p)
    assert v2 == vocab and v2.stoi == vocab.stoi and v2.min_count == vocab.min_count
    toks = tokenize('the tiny red bird')
    assert torch.equal(v2.encode(toks, 6)[0], vocab.encode(toks, 6)[0])
    assert not p.read_bytes().startswith(b'\x80')                           # not a pickle
    vocab.save(p)                                                            # overwriting works
    assert Vocab.load(p) == vocab

@pytest.mark.parametrize('content,msg', [
    ('not json', 'not a JSON vocabulary'),
    (b'\xff\xfe\x00', 'not a JSON vocabulary'),
    ('[1, 2]', 'format'),
    ('{"format": "something else", "version": 1, "itos": ["<pad>", "<unk>"]}', 'format'),
    ('{"format": "attngan_edu.Vocab", "version": 2, "itos": ["<pad>", "<unk>"]}', 'version'),
    ('{"format": "attngan_edu.Vocab", "version": 1}', 'itos'),
    ('{"format": "attngan_edu.Vocab", "version": 1, "itos": ["bird"]}', 'itos must start'),
    ('{"format": "attngan_edu.Vocab", "version": 1, "itos": ["<pad>", "<unk>", "a", "a"]}', 'duplicate'),
    ('{"format": "attngan_edu.Vocab", "version": 1, "itos": ["<pad>", "<unk>", 7]}', r'itos\[2\]'),
    ('{"format": "attngan_edu.Vocab", "version": 1, "itos": ["<pad>", "<unk>"], "min_count": "2"}', 'min_count'),
])
def test_load_malformed_names_path(tmp_path, content, msg):
    p = tmp_path / 'bad.json'
    p.write_bytes(content if isinstance(content, bytes) else content.encode())
    with pytest.raises(ValueError, match=msg) as e: Vocab.load(p)
    assert str(p) in str(e.value)

def test_load_missing_file(tmp_path):
    with pytest.raises(FileNotFoundError, match='nope.json'): Vocab.load(tmp_path / 'nope.json')
