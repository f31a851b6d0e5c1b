"""The README's tables are the records they quote: the course table is `data/course/results.md` as `attngan-edu
compare` wrote it, the seed table is `seed_spread` over the same reports, and every report is the arm's `evaluate`
output (its run, model and steps)."""
from pathlib import Path
from attngan_edu.report import load_report, compare_runs, seed_spread

ROOT = Path(__file__).resolve().parent.parent
README = (ROOT / 'README.md').read_text(encoding='utf-8')
COURSE = ROOT / 'data' / 'course'
ARMS = ['stackgan', 'attngan', 'attngan-s1', 'attngan-no-damsm', 'attngan-no-damsm-s1', 'attngan-no-attn', 'attngan-no-attn-s1',
        'stackganpp', 'stackganpp-lc', 'dfgan', 'dfgan-s1']      # the Makefile's COURSE_ARMS, in its order


def test_course_reports_are_the_arms():
    for arm in ARMS:
        rep = load_report(COURSE / f'{arm}.json')
        assert rep['run'] == arm and rep['step'] == 2400 and rep['n_images'] == 1280, arm


def test_readme_course_table_is_the_record():
    table = (COURSE / 'results.md').read_text(encoding='utf-8').strip()
    assert table == compare_runs([COURSE / f'{a}.json' for a in ARMS]).strip()      # results.md is compare's output
    assert table in README, "README's course table differs from data/course/results.md"


def test_readme_seed_table_is_the_record():
    order = ['stackgan', 'stackganpp', 'stackganpp-lc', 'attngan-no-damsm', 'attngan-no-damsm-s1', 'attngan-no-attn',
             'attngan-no-attn-s1', 'attngan', 'attngan-s1', 'dfgan', 'dfgan-s1']          # notebook 13's, one row per arm
    assert sorted(order) == sorted(ARMS)
    assert seed_spread([COURSE / f'{a}.json' for a in order]).strip() in README, "README's seed table differs from the reports"


def test_readme_shipped_gans_are_the_manifest():
    "Each shipped GAN's row in the README quotes its manifest's figures"
    from attngan_edu.pretrained import read_manifest
    gans = {n: e for n, e in read_manifest()['files'].items() if e['kind'] not in ('damsm', 'judge')}
    assert gans
    for name, e in gans.items():
        row = next((l for l in README.splitlines() if l.startswith(f'| `{name}`')), None)
        assert row is not None, f"README has no row for {name}"
        f = e['figures']
        assert f"| {f['step']} |" in row and f"| {f['attribute_accuracy']:.3f} | {f['R_word']:.3f} | {f['IS']:.2f} / {f['FID']:.2f} |" in row, row
