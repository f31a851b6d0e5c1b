"""`make site` (.ci/site.py): the course as a static website, built from the committed notebooks into a temporary folder
and read in headless Chromium from file:// — offline, as a learner opens _site/index.html. Every lesson, appendix and
index page loads with no console error and no request beyond file://, every image on it loads, the navigation links every
lesson and appendix, and notebook 06's equations (MathJax, served from the site) and notebook 04's figures are visible:
tests/artifacts/site_06_attention.png. Needs sphinx, myst-nb, furo, sphinx-mathjax-offline and playwright (dev
requirements) and Debian's `chromium`; without them the test is skipped with the reason."""
import importlib.util, shutil
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
ARTIFACTS = ROOT / 'tests' / 'artifacts'


def _site_module():
    spec = importlib.util.spec_from_file_location('site_builder', ROOT / '.ci' / 'site.py')
    mod = importlib.util.module_from_spec(spec); spec.loader.exec_module(mod)
    return mod


@pytest.fixture(scope='module')
def site(tmp_path_factory):
    for mod in ('sphinx', 'myst_nb', 'furo', 'playwright.sync_api'):
        if importlib.util.find_spec(mod.split('.')[0]) is None: pytest.skip(f'{mod} is not installed (a dev requirement)')
    if shutil.which('chromium') is None: pytest.skip('no `chromium` on PATH (CI: apt-get install -y chromium)')
    tmp = tmp_path_factory.mktemp('site')
    return _site_module().build(tmp / 'out', tmp / 'src').parent


def _pages(site: Path) -> list[Path]:
    nbs = sorted(p.stem for p in (ROOT / 'nbs').glob('*.ipynb') if p.stem != 'index')
    return [site / 'index.html', site / 'search.html', site / 'api' / 'index.html'] + [site / f'{n}.html' for n in nbs]


def test_site_offline_in_chromium(site):
    from playwright.sync_api import sync_playwright
    pages = _pages(site)
    missing = [p.name for p in pages if not p.is_file()]
    assert not missing, f'pages not built: {missing}'
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=shutil.which('chromium'), args=['--no-sandbox', '--disable-gpu'])
        page = browser.new_page(viewport={'width': 1280, 'height': 900})
        errors, remote = [], []
        page.on('console', lambda m: errors.append(f'{page.url}: {m.text}') if m.type == 'error' else None)
        page.on('pageerror', lambda e: errors.append(f'{page.url}: {e}'))
        page.on('request', lambda r: None if r.url.startswith(('file:', 'data:', 'blob:', 'about:')) else remote.append(r.url))
        broken = {}
        for p in pages:
            page.goto(p.as_uri()); page.wait_for_load_state('load'); page.wait_for_timeout(300)
            bad = page.evaluate("[...document.images].filter(i => !(i.complete && i.naturalWidth > 0)).map(i => i.src)")
            if bad: broken[p.name] = bad
        assert not errors, f'console errors: {errors[:5]}'
        assert not remote, f'requests beyond file:// (the site must work offline): {remote[:5]}'
        assert not broken, f'images that did not load: {broken}'

        page.goto((site / 'index.html').as_uri())              # the navigation reaches every lesson and appendix
        linked = {Path(h.split('#')[0]).stem for h in page.eval_on_selector_all('.sidebar-tree a', 'as => as.map(a => a.href)')}
        want = {p.stem for p in (ROOT / 'nbs').glob('*.ipynb') if p.stem != 'index'}
        assert want <= linked, f'not in the navigation: {sorted(want - linked)}'

        page.goto((site / '06_attention.html').as_uri()); page.wait_for_timeout(2000)   # MathJax typesets after load
        maths = page.locator('mjx-container')
        assert maths.count() > 0 and maths.first.is_visible(), 'no typeset equation on 06_attention.html'
        maths.first.scroll_into_view_if_needed(); page.screenshot(path=str(ARTIFACTS / 'site_06_attention.png'))
        page.goto((site / '04_stackgan.html').as_uri())
        figs = page.locator('img')
        assert figs.count() > 0 and figs.first.is_visible()
        assert page.evaluate("document.images[0].naturalWidth") > 100, 'a figure of 04_stackgan did not render'
        browser.close()


def test_site_search_and_reference(site):
    "The search index knows the lessons, and the package reference shows an exported function with its signature"
    index = (site / 'searchindex.js').read_text()
    assert 'Conditioning' in index and 'DAMSM' in index
    ref = (site / 'api' / 'attention.html').read_text()
    assert 'word_context' in ref and 'e_prime' in ref           # show_doc's content: the signature, from the code
