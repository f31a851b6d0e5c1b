"""Every number a lesson's text states with two or more decimals is shown by a cell of that lesson: it stands in a code
cell's source or stored output, or an output number rounds to it. The allowed exceptions are listed with their reason:
a paper's figure named as such, a setting stated in prose, a version, or hand arithmetic whose derivation is on the line."""
import json, re
from pathlib import Path
import pytest

NBS = Path(__file__).resolve().parent.parent / 'nbs'
NUM = re.compile(r'(?<![\w.])(\d+\.\d{2,})(?!\d)')
ALLOWED = {
    '01_captions.ipynb': {'3.10': 'an nltk version', '3.11': 'a Python version', '0.005': "an exercise's expected tolerance"},
    '04_stackgan.ipynb': {'0.4541': 'hand arithmetic, derivation on the line', '0.05': "read off the slow run's stored KL curve"},
    '05_stackganpp.ipynb': {'1.386': '2 log 2, hand arithmetic on the line'},
    '08_objective.ipynb': {'0.69': 'log 2', '1.39': '2 log 2', '0.02': 'an init setting (the reference code)',
                           '0.001': '1 - 0.999, the EMA decay'},
    '12_dfgan.ipynb': {'14.81': "DF-GAN paper's FID on CUB", '23.98': "AttnGAN's FID on CUB in DF-GAN's table",
                       '16.52': "DF-GAN paper's ablation", '0.65': 'hand arithmetic on the line'},
    'index.ipynb': {'0.999': 'the EMA decay setting', '0.02': 'an init setting', '0.98': "the DAMSM code's lr decay",
                    '2.13': 'the torch version pinned', '3.10': 'the Python version required'},
}


def shown(nb: dict) -> tuple[str, list[float]]:
    "The text of every code cell's source and stored outputs, and every decimal number in it"
    parts = []
    for c in nb['cells']:
        if c['cell_type'] != 'code': continue
        parts.append(''.join(c['source']))
        for o in c.get('outputs', []):
            parts.append(''.join(o.get('text', '')))
            parts += [''.join(v) for k, v in o.get('data', {}).items() if k.startswith('text/')]
    text = '\n'.join(parts)
    return text, [float(m) for m in re.findall(r'-?\d+\.\d+(?:e-?\d+)?', text)]


def unshown(path: Path) -> list[str]:
    nb = json.loads(path.read_text(encoding='utf-8'))
    text, values = shown(nb)
    allowed = ALLOWED.get(path.name, {})
    out = []
    for c in nb['cells']:
        if c['cell_type'] != 'markdown': continue
        for n in NUM.findall(''.join(c['source'])):
            d, x = len(n.split('.')[1]), float(n)
            if n in allowed or n in text or any(abs(round(v, d) - x) < 1e-9 for v in values): continue
            out.append(f"{n} (cell {c.get('id')})")
    return out


@pytest.mark.parametrize('path', sorted(NBS.glob('*.ipynb')), ids=lambda p: p.name)
def test_lesson_numbers_are_shown(path):
    missing = unshown(path)
    assert not missing, f"{path.name}: numbers its text states but no cell shows: {missing}"


def test_the_check_can_fail(tmp_path):
    nb = {'cells': [{'cell_type': 'markdown', 'source': ['accuracy 0.731, IS 10.55'], 'id': 'm'},
                    {'cell_type': 'code', 'source': ['x = 1'], 'outputs': [{'data': {'text/plain': ['10.5512']}}], 'id': 'c'}]}
    (tmp_path / 'x.ipynb').write_text(json.dumps(nb))
    assert unshown(tmp_path / 'x.ipynb') == ['0.731 (cell m)']          # 10.55 is an output, rounded; 0.731 is nowhere
