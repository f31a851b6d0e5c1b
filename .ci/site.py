"""`make site`: the course as a static website in _site/, from the committed notebooks and their stored outputs (nothing
is executed), readable offline from _site/index.html.

Sphinx with MyST-NB renders the notebooks, autodoc writes the package reference from the exported code, furo is the
theme and sphinx-mathjax-offline serves MathJax from the site itself. The sources are assembled in _site_src/:
README.md becomes the home page, nbs/*.ipynb the lessons and appendices, bench/*.md the measurements.
"""
import argparse, json, re, shutil, subprocess, sys, time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
SRC, OUT = ROOT / '_site_src', ROOT / '_site'
WIDGET = 'application/vnd.jupyter.widget-view+json'

CONF = '''
project = "attngan_edu"
author = "attngan_edu developers"
extensions = ["myst_nb", "sphinx.ext.autodoc", "sphinx-mathjax-offline"]
html_theme = "furo"
html_title = "attngan_edu: text-to-image GANs, step by step"
nb_execution_mode = "off"                     # the stored outputs, as committed
nb_ipywidgets_js = {}                         # widgets are not rendered: no script from a CDN
myst_enable_extensions = ["dollarmath", "amsmath"]
myst_heading_anchors = 3
autodoc_member_order = "bysource"
autodoc_default_options = {"members": True, "undoc-members": False}
exclude_patterns = ["_build"]
suppress_warnings = ["myst.xref_missing", "myst.header", "mystnb.unknown_mime_type", "misc.highlighting_failure",
                     "toc.not_included", "autodoc", "docutils", "ref.python"]
'''

EXPLORER_NOTE = '''> **This page is a static rendering.** The explorer is a live ipywidgets interface: its stored pictures below, and
> this screenshot, show what it draws. To use it, open the notebook in JupyterLab (`jupyter lab nbs/11_explorer.ipynb`,
> then Run All) or as a web page with Voilà (`.venv/bin/voila nbs/11_explorer.ipynb`).

![the explorer on the AttnGAN the course ships](images/explorer.png)
'''


def _links(text: str) -> str:
    "Paths as the repository writes them -> paths inside the site's sources"
    return text.replace('](nbs/images/', '](images/').replace('](../bench/', '](bench/').replace('](nbs/', '](')


def _notebook(src: Path, dst: Path):
    "Copy a notebook with its outputs; widget views (which need a live kernel) are dropped, their text fallback kept"
    nb = json.loads(src.read_text())
    hidden = ('#| hide', '#|hide', '#| default_exp', '#|default_exp')      # as nbdev's own docs: not shown
    nb['cells'] = [c for c in nb['cells'] if not (c['cell_type'] == 'code' and ''.join(c['source']).lstrip().startswith(hidden))]
    for c in nb['cells']:
        if c['cell_type'] == 'markdown': c['source'] = _links(''.join(c['source']))
        for o in c.get('outputs', []):
            if WIDGET in o.get('data', {}): del o['data'][WIDGET]
        if c['cell_type'] == 'code':
            c['outputs'] = [o for o in c['outputs'] if o.get('output_type') not in ('display_data', 'execute_result') or o.get('data')]
    if src.stem == '11_explorer':
        nb['cells'].insert(1, dict(cell_type='markdown', id='static0', metadata={}, source=EXPLORER_NOTE))
    dst.write_text(json.dumps(nb))


def assemble(src: Path):
    if src.exists(): shutil.rmtree(src)
    src.mkdir()
    (src / 'conf.py').write_text(CONF)
    shutil.copytree(ROOT / 'nbs' / 'images', src / 'images')
    lessons = sorted(p.stem for p in (ROOT / 'nbs').glob('[0-9][0-9]_*.ipynb'))
    appendices = sorted(p.stem for p in (ROOT / 'nbs').glob('A[0-9]_*.ipynb'))
    for n in lessons + appendices: _notebook(ROOT / 'nbs' / f'{n}.ipynb', src / f'{n}.ipynb')
    (src / 'bench').mkdir()
    bench = sorted(p.stem for p in (ROOT / 'bench').glob('*.md'))
    for b in bench: shutil.copy(ROOT / 'bench' / f'{b}.md', src / 'bench')
    (src / 'api').mkdir()
    modules = sorted(p.stem for p in (ROOT / 'attngan_edu').glob('*.py') if not p.stem.startswith('_'))
    for m in modules:
        (src / 'api' / f'{m}.rst').write_text(f'attngan_edu.{m}\n{"=" * (12 + len(m))}\n\n.. automodule:: attngan_edu.{m}\n')
    (src / 'api' / 'index.md').write_text('# Package reference\n\nEach module of `attngan_edu`, with its exported functions and classes: '
                                          'signatures and docstrings, as the notebooks export them.\n\n```{toctree}\n:maxdepth: 1\n\n'
                                          + '\n'.join(modules) + '\n```\n')
    def toc(caption, items): return f'\n```{{toctree}}\n:caption: {caption}\n:maxdepth: 1\n\n' + '\n'.join(items) + '\n```\n'
    home = re.sub(r'\| `((?:\d\d|A\d)_[a-z_]+)` \|', r'| [`\1`](\1.ipynb) |', _links((ROOT / 'README.md').read_text()))
    home += toc('Lessons', lessons) + toc('Appendices', appendices) + toc('Package reference', ['api/index']) \
        + toc('Measurements', [f'bench/{b}' for b in bench])
    (src / 'index.md').write_text(home)


def build(out: Path = OUT, src: Path = SRC) -> Path:
    "Assemble the sources in `src` and build the site into `out` (both replaced); returns out/index.html"
    assemble(src)
    if out.exists(): shutil.rmtree(out)
    side = out.parent / 'jupyter_execute'                   # MyST-NB writes this beside the output; nothing is executed
    had_side = side.exists()
    r = subprocess.run([sys.executable, '-m', 'sphinx', '-b', 'html', '-q', str(src), str(out)], capture_output=True, text=True)
    if not had_side and side.is_dir(): shutil.rmtree(side)
    if r.returncode: raise RuntimeError(f'sphinx failed (exit {r.returncode}):\n{r.stderr[-3000:]}')
    return out / 'index.html'


def main():
    ap = argparse.ArgumentParser(description='Build the course website (static, offline) from the notebooks.')
    ap.add_argument('--out', type=Path, default=OUT); ap.add_argument('--src', type=Path, default=SRC)
    a = ap.parse_args()
    t0 = time.perf_counter()
    index = build(a.out, a.src)
    print(f'site built in {time.perf_counter() - t0:.0f} s: open {index}')


if __name__ == '__main__': main()
