"""End to end: Voilà serves nbs/11_explorer.ipynb, headless Chromium (Playwright) types a caption, clicks a word and sees
the picture change.

Needs the dev requirements voila and playwright (the Python package only: the browser is the system's Chromium, found as
`chromium` on PATH — never `playwright install`). Without them the test is skipped with the reason. The server runs on
127.0.0.1 on a free port with IN_TEST=1 (the notebook then explores its cached tiny run; set ATTNGAN_EDU_RUN=runs/<name>
to serve a trained run instead), and is always terminated. Screenshot: tests/artifacts/explorer.png; it is also copied to
nbs/images/explorer.png (the README's picture) when that file is missing or UPDATE_README_SHOT=1."""
import io, os, shutil, signal, socket, subprocess, sys, time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
NB = ROOT / 'nbs' / '11_explorer.ipynb'
ARTIFACTS = ROOT / 'tests' / 'artifacts'
README_SHOT = ROOT / 'nbs' / 'images' / 'explorer.png'
CHROMIUM_ARGS = ['--no-sandbox', '--disable-gpu', '--no-first-run', '--disable-background-networking',
                 '--disable-component-update', '--disable-sync']
SERVER_START_S, NOTEBOOK_RUN_S, UPDATE_S = 60, 300, 60           # bounded waits


def _chromium() -> str:
    path = shutil.which('chromium')
    if path is None: pytest.skip('no `chromium` on PATH (CI: apt-get install -y chromium)')
    for mod in ('voila', 'playwright.sync_api'):
        try: __import__(mod)
        except ImportError: pytest.skip(f'{mod.split(".")[0]} is not installed (a dev requirement: pip install -e ".[dev]")')
    return path


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(('127.0.0.1', 0))
        return s.getsockname()[1]


def _stop(proc: subprocess.Popen):
    "SIGTERM lets Voilà shut its kernels down; then SIGKILL whatever is left of its process group"
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try: proc.wait(timeout=15)
        except subprocess.TimeoutExpired: pass
    try: os.killpg(proc.pid, signal.SIGKILL)
    except ProcessLookupError: pass
    proc.wait(timeout=10)


@pytest.fixture(scope='module')
def voila_url(tmp_path_factory):
    _chromium()
    port = _free_port()
    log_path = tmp_path_factory.mktemp('voila') / 'voila.log'
    env = dict(os.environ, IN_TEST=os.environ.get('IN_TEST', '1'), PYTHONUNBUFFERED='1')
    cmd = [sys.executable, '-m', 'voila', str(NB), '--no-browser', f'--port={port}', '--Voila.ip=127.0.0.1',
           f'--VoilaExecutor.timeout={NOTEBOOK_RUN_S}', '--show_tracebacks=True']
    with open(log_path, 'wb') as log:
        proc = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        deadline = time.monotonic() + SERVER_START_S
        while True:
            if proc.poll() is not None: pytest.fail(f"voila exited with {proc.returncode}:\n{log_path.read_text()[-3000:]}")
            try:
                with socket.create_connection(('127.0.0.1', port), timeout=1): break
            except OSError:
                if time.monotonic() > deadline: pytest.fail(f"voila did not listen on port {port} within {SERVER_START_S} s")
                time.sleep(0.3)
        yield f'http://127.0.0.1:{port}/', log_path
    finally:
        _stop(proc)


JS_IMG_BASE64 = """async (img) => {
  const bytes = new Uint8Array(await (await fetch(img.src)).arrayBuffer());
  let s = ''; for (let i = 0; i < bytes.length; i += 8192) s += String.fromCharCode(...bytes.subarray(i, i + 8192));
  return btoa(s);
}"""


def _img(locator) -> str:
    "The PNG shown by an ipywidgets.Image (its src is a blob: URL, new on every update) as base64"
    return locator.evaluate(JS_IMG_BASE64)


def _wait_change(locator, before: str, what: str) -> str:
    deadline = time.monotonic() + UPDATE_S
    while time.monotonic() < deadline:
        now = _img(locator)
        if now != before: return now
        time.sleep(0.25)
    pytest.fail(f"the picture did not change within {UPDATE_S} s after {what}")


def _save_readme_shot(png: bytes):
    "A copy for the README, at most ~200 KB (downscaled if needed)"
    if README_SHOT.exists() and os.environ.get('UPDATE_README_SHOT') != '1': return
    from PIL import Image
    img = Image.open(io.BytesIO(png)).convert('RGB')
    README_SHOT.parent.mkdir(parents=True, exist_ok=True)
    while True:
        buf = io.BytesIO(); img.save(buf, format='png', optimize=True)
        if len(buf.getvalue()) < 200_000 or img.width < 300: break
        img = img.resize((img.width * 4 // 5, img.height * 4 // 5), Image.LANCZOS)
    README_SHOT.write_bytes(buf.getvalue())


def test_explorer_in_voila(voila_url):
    url, log_path = voila_url
    from playwright.sync_api import sync_playwright
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=_chromium(), args=CHROMIUM_ARGS, headless=True)
        try:
            page = browser.new_page(viewport={'width': 1100, 'height': 1000})
            page.set_default_timeout(UPDATE_S * 1000)
            page.goto(url, wait_until='commit', timeout=SERVER_START_S * 1000)
            app = page.locator('.explorer-app').first                     # the box at the top of the notebook
            stages = app.locator('img.explorer-stages')
            try: stages.wait_for(state='visible', timeout=NOTEBOOK_RUN_S * 1000)
            except Exception:
                pytest.fail(f"the explorer did not appear within {NOTEBOOK_RUN_S} s; voila log:\n{log_path.read_text()[-3000:]}")
            page.wait_for_function("(img) => img.src && img.src.startsWith('blob:') && img.naturalWidth > 0",
                                   arg=stages.element_handle())
            status = app.locator('.explorer-status')
            assert 'ms' in status.inner_text(), status.inner_text()

            # type a caption: tokens and word toggles follow, the picture changes
            before = _img(stages)
            app.locator('.explorer-caption input').fill('this bird has a white crown and black wings')
            after_caption = _wait_change(stages, before, 'typing a caption')
            words = app.locator('.explorer-words button')
            page.wait_for_function("(el) => [...el.querySelectorAll('button')].map(b => b.textContent).join(' ') === "
                                   "'this bird has a white crown and black wings'",
                                   arg=app.locator('.explorer-words').element_handle())
            assert 'white' in app.locator('.explorer-tokens').inner_text()

            # click a word toggle: only the attention overlay changes, so the picture changes
            crown = words.nth(5)                                          # this bird has a white *crown*
            assert crown.inner_text() == 'crown'
            crown.click()
            page.wait_for_function("(el) => el.querySelector('button.mod-active') && "
                                   "el.querySelector('button.mod-active').textContent === 'crown'",
                                   arg=app.locator('.explorer-words').element_handle())
            after_word = _wait_change(stages, after_caption, 'clicking the word "crown"')
            assert after_word != before
            assert 'ms' in status.inner_text() and 'vocabulary' not in status.inner_text(), status.inner_text()

            ARTIFACTS.mkdir(parents=True, exist_ok=True)
            shot = app.screenshot(path=str(ARTIFACTS / 'explorer.png'))
            _save_readme_shot(shot)
        finally:
            browser.close()
