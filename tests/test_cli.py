"""Every `attngan-edu` command end to end on tiny data in a temporary folder (data synbirds, data prepare-cub,
train-damsm, train, train --resume, sample, evaluate), and the command line's config errors."""
import json, os, subprocess, sys, tarfile, time, zipfile
from pathlib import Path
import pytest
import torch
from attngan_edu.cli import main

ROOT = Path(__file__).resolve().parents[1]


def run(capsys, *argv):
    "main(argv) in this process -> (exit code, stdout, stderr)"
    code = main([str(a) for a in argv])
    out = capsys.readouterr()
    return code, out.out, out.err


@pytest.fixture(scope='module')
def work(tmp_path_factory):
    torch.set_num_threads(1)
    return tmp_path_factory.mktemp('cli')


def test_console_script_help():
    exe = Path(sys.executable).with_name('attngan-edu')
    cmd = [str(exe)] if exe.exists() else [sys.executable, '-m', 'attngan_edu.cli']
    r = subprocess.run(cmd + ['train', '--help'], capture_output=True, text=True, timeout=120, cwd=ROOT)
    assert r.returncode == 0 and '--preset' in r.stdout and '--resume' in r.stdout and 'synbirds-cpu' in r.stdout


def test_data_synbirds(work, capsys):
    code, out, _ = run(capsys, 'data', 'synbirds', '--out', work / 'sb', '--n-train', 12, '--n-test', 4, '--size', 64, '--seed', 3)
    assert code == 0 and 'written to' in out
    assert (work / 'sb' / 'train' / 'filenames.pickle').is_file() and (work / 'sb' / 'CUB_200_2011' / 'images.txt').is_file()


def test_full_pipeline(work, capsys):
    "train-damsm -> train -> train --resume -> sample -> evaluate, on the tiny preset"
    common = ['--preset', 'tiny', '--out_dir', work / 'runs', '--data_dir', work / 'data']
    code, out, err = run(capsys, 'train-damsm', *common, '--out', work / 'damsm.safetensors')
    assert code == 0, err
    assert (work / 'damsm.safetensors').is_file() and 'DAMSM trained' in out
    code, out, err = run(capsys, 'train', *common, '--damsm_path', work / 'damsm.safetensors', '--max_steps', 4, '--sample_every', 0)
    assert code == 0, err
    run_dir = work / 'runs' / 'tiny'
    assert json.loads((run_dir / 'log.jsonl').read_text().splitlines()[-1])['step'] == 4
    # the run exists: a second plain `train` refuses, --resume continues (with a new max_steps override)
    code, _, err = run(capsys, 'train', *common, '--damsm_path', work / 'damsm.safetensors')
    assert code == 2 and '--resume' in err
    code, out, err = run(capsys, 'train', *common, '--resume', '--max_steps', 6)
    assert code == 0, err
    steps = [json.loads(l)['step'] for l in (run_dir / 'log.jsonl').read_text().splitlines()]
    assert steps == [2, 4, 6]
    assert torch.load(run_dir / 'checkpoint.pt', weights_only=True)['step'] == 6
    # sample: free-text captions (one unknown word), attention figure; and the run's fixed captions
    code, out, err = run(capsys, 'sample', '--checkpoint', run_dir, '--caption', 'a small bird with a red crown',
                         '--caption', 'this bird has a zorblax wing', '--n', 2, '--out', work / 's.png', '--attention', work / 'a.png')
    assert code == 0, err
    assert '4 samples' in out and 'zorblax' in err
    assert (work / 's.png').stat().st_size > 1000 and (work / 'a.png').stat().st_size > 1000
    code, _, err = run(capsys, 'sample', '--checkpoint', run_dir / 'checkpoint.pt', '--out', work / 'fixed.png')
    assert code == 0, err
    # evaluate without a judge: R-precision over every (test image, caption) pair: 8 images x 10 captions
    code, out, err = run(capsys, 'evaluate', '--checkpoint', run_dir / 'checkpoint.pt', '--draws', 2, '--judge', 'none')
    assert code == 0, err
    m = json.loads((run_dir / 'metrics.json').read_text())
    assert m['step'] == 6 and m['n_images'] == 80 and m['r_precision']['candidates'] == 71 and 'judge' not in m
    assert all(0 <= m['r_precision'][k][0] <= 1 for k in ('word', 'sentence'))
    assert (run_dir / 'metrics.md').read_text().startswith('# Evaluation of `tiny`')


def test_sample_is_reproducible_and_says_what_it_did(work, capsys):
    run_dir = work / 'runs' / 'tiny'
    if not (run_dir / 'checkpoint.pt').exists(): pytest.skip('needs test_full_pipeline')
    long = 'this bird has a red crown black wings a white belly a short beak grey feet a long tail and small eyes too'
    outs = []
    for k in range(3):                                   # the tiny preset reads 12 words: the cut is seeded by --seed
        code, out, err = run(capsys, 'sample', '--checkpoint', run_dir, '--caption', long, '--seed', 3, '--out', work / f'long{k}')
        assert code == 0 and 'the model reads 12: kept (seed 3)' in err and f'long{k}.png' in out, err
        outs.append((work / f'long{k}.png').read_bytes())
    assert outs[0] == outs[1] == outs[2]
    code, _, err = run(capsys, 'sample', '--checkpoint', run_dir, '--caption', 'a red bird with a naïve café crown', '--out', work / 'na.png')
    assert code == 0 and 'dropped' not in err                # letters beyond ASCII are dropped from a word, not the word
    code, _, err = run(capsys, 'sample', '--checkpoint', run_dir, '--caption', 'a red bird 鳥', '--out', work / 'na.png')
    assert code == 0 and 'dropped, as in training: 鳥' in err, err
    code, _, err = run(capsys, 'sample', '--checkpoint', run_dir, '--n', 0)
    assert code == 2 and '--n (images per caption) must be >= 1' in err


def _one_line(err):
    return len(err.strip().splitlines()) == 1 and 'Traceback' not in err


def test_damaged_checkpoints_and_bad_arguments_are_one_named_line(work, capsys, tmp_path):
    run_dir = work / 'runs' / 'tiny'
    if not (run_dir / 'checkpoint.pt').exists(): pytest.skip('needs test_full_pipeline')
    good = (run_dir / 'checkpoint.pt').read_bytes()
    ck = torch.load(run_dir / 'checkpoint.pt', weights_only=True)
    class Evil:
        def __reduce__(self): return (print, ('pwned',))
    bad = {'truncated': good[: len(good) // 2], 'random': bytes(range(256)) * 64}
    for name, data in bad.items(): (tmp_path / f'{name}.pt').write_bytes(data)
    torch.save({'format': 'something else'}, tmp_path / 'other.pt')
    torch.save({k: v for k, v in ck.items() if k != 'damsm'}, tmp_path / 'no_damsm.pt')
    torch.save(dict(ck, config=dict(ck['config'], ngf=ck['config']['ngf'] * 2)), tmp_path / 'mismatch.pt')
    import pickle
    (tmp_path / 'evil.pt').write_bytes(pickle.dumps(Evil()))
    expect = {'truncated': 'cannot be read', 'random': 'cannot be read', 'evil': 'cannot be read', 'other': 'not an attngan_edu training checkpoint',
              'no_damsm': 'without damsm', 'mismatch': 'do not fit its config'}
    for name, message in expect.items():
        code, out, err = run(capsys, 'sample', '--checkpoint', tmp_path / f'{name}.pt', '--out', tmp_path / 's.png')
        assert code == 2 and message in err and _one_line(err) and 'weights_only=False' not in err and 'pwned' not in out, (name, err)
    if not torch.cuda.is_available():
        code, _, err = run(capsys, 'sample', '--checkpoint', run_dir, '--device', 'cuda', '--out', tmp_path / 's.png')
        assert code == 2 and 'no CUDA GPU' in err and _one_line(err), err
    code, _, err = run(capsys, 'evaluate', '--checkpoint', run_dir, '--draws', 0, '--judge', 'none')
    assert code == 2 and '--draws' in err
    code, _, err = run(capsys, 'compare', run_dir, '--out', tmp_path)
    assert code == 2 and 'is a folder' in err
    m = json.loads((run_dir / 'metrics.json').read_text()); del m['r_precision']
    (tmp_path / 'metrics.json').write_text(json.dumps(m))
    code, _, err = run(capsys, 'compare', tmp_path / 'metrics.json')
    assert code == 2 and 'without r_precision' in err and _one_line(err), err
    assert (run_dir / 'checkpoint.pt').read_bytes() == good


def test_evaluate_prints_its_results_when_it_cannot_write_them(work, capsys, tmp_path):
    run_dir = work / 'runs' / 'tiny'
    if not (run_dir / 'checkpoint.pt').exists(): pytest.skip('needs test_full_pipeline')
    (tmp_path / 'afile').write_text('x')          # a folder that cannot be made (root too cannot make it): the write fails
    code, out, err = run(capsys, 'evaluate', '--checkpoint', run_dir, '--draws', 2, '--judge', 'none', '--out', tmp_path / 'afile' / 'sub')
    assert code == 2 and 'R-prec' in out and '"r_precision"' in out and 'could not be written' in err and _one_line(err), err

def test_evaluate_with_judge_and_compare(work, capsys):
    "evaluate --judge FILE (a judge trained briefly here) on two seeds, then compare the two reports"
    from attngan_edu.config import make_config
    from attngan_edu.train import dataset_root
    from attngan_edu.judge import train_judge, save_judge
    run_dir = work / 'runs' / 'tiny'
    if not (run_dir / 'checkpoint.pt').exists(): pytest.skip('needs test_full_pipeline')
    root = dataset_root(make_config('tiny', overrides={'data_dir': str(work / 'data')}))
    judge, _ = train_judge(root, steps=10, batch_size=16, verbose=False)
    save_judge(judge, work / 'judge.pt')
    for seed in (0, 1):
        code, out, err = run(capsys, 'evaluate', '--checkpoint', run_dir, '--draws', 2, '--judge', work / 'judge.pt',
                             '--n', 40, '--seed', seed, '--out', work / f'eval{seed}')
        assert code == 0, err
    m = json.loads((work / 'eval0' / 'metrics.json').read_text())
    assert m['n_images'] == 40 and m['seed'] == 0
    assert 0 <= m['judge']['attribute_accuracy']['all'] <= 1 and m['judge']['FID'] >= 0 and 1 <= m['judge']['IS'][0]
    assert m['grounding']['colour']['n'] + m['grounding']['part']['n'] + m['grounding']['no_part'] > 0
    code, out, err = run(capsys, 'compare', work / 'eval0', work / 'eval1' / 'metrics.json', '--out', work / 'table.md')
    assert code == 0, err
    lines = (work / 'table.md').read_text().splitlines()
    assert len(lines) == 7 and lines[-3].startswith('| real test images')          # header, rule, 2 runs, 2 real rows, oracle
    assert lines[-1].startswith('| oracle (true attributes)')
    rp = m['r_precision']           # the same candidates scored by the DAMSM on real images and by the oracle
    assert all(0 <= rp[k][0] <= 1 for k in ('real_word', 'real_sentence', 'oracle', 'oracle_agreement'))
    assert rp['oracle_agreement'][0] <= rp['oracle'][0]       # the tie-breaking by specificity only turns misses into hits
    assert set(m['damsm_pointing']) == {'colour', 'part'} and 0 <= m['damsm_pointing']['colour']['hit'] <= 1
    b = m['damsm_binding']                                   # the swapped-colour test of notebook 07, beside pointing
    assert b['n'] > 0 and 0 <= b['word'] <= 1 and 0 <= b['sentence'] <= 1
    code, _, err = run(capsys, 'compare', work / 'runs')                             # no metrics.json there
    assert code == 2 and 'no evaluation report' in err


def test_evaluate_trains_the_judge_on_a_fresh_machine(work, capsys, tmp_path, monkeypatch):
    "evaluate with the default judge when none is cached: it is trained inside evaluate's no_grad (this used to crash)"
    import functools
    import attngan_edu.judge as J
    run_dir = work / 'runs' / 'tiny'
    if not (run_dir / 'checkpoint.pt').exists(): pytest.skip('needs test_full_pipeline')
    monkeypatch.setenv('ATTNGAN_EDU_DATA', str(tmp_path))                      # an empty cache: no judge, no judge data
    small = dict(n_train=48, n_test=24, image_size=64, steps=3, batch_size=8, verbose=False)
    monkeypatch.setattr(J, 'get_judge', functools.partial(J.get_judge, **small))   # the standard judge, but tiny
    assert not J.judge_path(48, 24, 64, steps=3).exists()
    code, out, err = run(capsys, 'evaluate', '--checkpoint', run_dir, '--draws', 2, '--n', 20, '--out', tmp_path / 'eval')
    assert code == 0, err
    assert J.judge_path(48, 24, 64, steps=3).is_file()                           # trained and cached by evaluate
    assert 0 <= json.loads((tmp_path / 'eval' / 'metrics.json').read_text())['judge']['attribute_accuracy']['all'] <= 1


def test_prepare_cub_and_train_on_birds_layout(work, capsys):
    "Pack a tiny SynBirds as CUB_200_2011.tgz + a birds caption zip, lay it out with prepare-cub, train dataset=birds on it"
    sb = work / 'sb'
    if not sb.exists(): run(capsys, 'data', 'synbirds', '--out', sb, '--n-train', 12, '--n-test', 4, '--size', 64, '--seed', 3)
    with tarfile.open(work / 'CUB_200_2011.tgz', 'w:gz') as t: t.add(sb / 'CUB_200_2011', arcname='CUB_200_2011')
    with zipfile.ZipFile(work / 'birds.zip', 'w') as z:
        for p in sb.rglob('*'):
            rel = p.relative_to(sb)
            if p.is_file() and rel.parts[0] in ('text', 'train', 'test'): z.write(p, f'birds/{rel.as_posix()}')
    code, out, err = run(capsys, 'data', 'prepare-cub', '--cub-archive', work / 'CUB_200_2011.tgz',
                         '--captions-archive', work / 'birds.zip', '--out', work / 'cub')
    assert code == 0, out + err
    code, out, err = run(capsys, 'train', '--preset', 'tiny', '--dataset', 'birds', '--data_dir', work / 'cub',
                         '--out_dir', work / 'runs', '--name', 'cub', '--max_steps', 2, '--batch_size', 4,
                         '--damsm_epochs', 1, '--damsm_batch_size', 4, '--sample_every', 0, '--n_samples', 2)
    assert code == 0, err
    assert (work / 'runs' / 'cub' / 'checkpoint.pt').is_file()


def test_prepare_cub_missing_archive(work, capsys):
    code, _, err = run(capsys, 'data', 'prepare-cub', '--cub-archive', work / 'nope.tgz', '--captions-archive', work / 'nope.zip',
                       '--out', work / 'x')
    assert code == 2 and 'nope' in err


@pytest.mark.parametrize('argv, message', [
    (['--lamda', '5'], "unknown config key 'lamda'; did you mean lam"),
    (['--set', 'lamda=5'], "unknown config key 'lamda'"),
    (['--batch_size', '2.5'], 'batch_size must be int'),
    (['--compile', 'yes-please'], 'compile must be true or false'),
    (['--compile'], 'expects a value'),
    (['--set', 'lam'], '--set expects key=value'),
    (['--model', 'attngan2'], "model must be one of"),
    (['--lam', 'five'], 'lam must be float'),
    (['stray'], "unexpected argument 'stray'"),
    (['--base_size', '48'], 'base_size must be a power of 2 >= 32'),
    (['--model', 'stackgan', '--base_size', '32'], "model 'stackgan' needs base_size 64"),
])
def test_override_errors(work, capsys, argv, message):
    code, _, err = run(capsys, 'train', '--preset', 'tiny', '--out_dir', work / 'never', *argv)
    assert code == 2 and message in err, err
    assert not (work / 'never').exists()


def test_config_file_errors(work, capsys):
    bad = work / 'bad.toml'
    for text, message in [('lam = "five"\n', 'bad.toml: lam must be float'), ('[train]\nlam = 5\n', '[train] is a table'),
                          ('lam = \n', 'not valid TOML'), ('lamda = 5.0\n', "unknown config key 'lamda'")]:
        bad.write_text(text)
        code, _, err = run(capsys, 'train', '--config', bad, '--out_dir', work / 'never')
        assert code == 2 and message in err, err
    code, _, err = run(capsys, 'train', '--config', work / 'missing.toml')
    assert code == 2 and 'missing.toml does not exist' in err
    with pytest.raises(SystemExit) as e: main(['train', '--preset', 'no-such-preset'])
    assert e.value.code == 2


@pytest.mark.parametrize('env, calls', [(None, 1), ('1', 1), ('0', 0)])
def test_cli_keeps_freed_memory_unless_told_not_to(monkeypatch, capsys, env, calls):
    import attngan_edu.train as train
    seen = []
    monkeypatch.setattr(train, 'keep_freed_memory', lambda: seen.append(1) or True)
    if env is None: monkeypatch.delenv('ATTNGAN_EDU_KEEP_FREED', raising=False)
    else: monkeypatch.setenv('ATTNGAN_EDU_KEEP_FREED', env)
    assert main(['compare', 'no-such-run']) == 2          # fails on the missing report, after the start-up
    assert len(seen) == calls


def test_omp_wait_policy_follows_the_cpu_load():
    "the CLI picks OpenMP's wait policy before torch loads it: sleep on a busy CPU, and an explicit setting wins"
    import os
    import attngan_edu.cli as cli
    assert 0.0 <= cli._cpu_busy(0.05) <= 1.0
    code = "import os, attngan_edu.cli; print(os.environ['OMP_WAIT_POLICY'])"
    def policy(**env):
        e = {k: v for k, v in os.environ.items() if k != 'OMP_WAIT_POLICY'} | env
        r = subprocess.run([sys.executable, '-c', code], capture_output=True, text=True, env=e, timeout=120, cwd=ROOT)
        assert r.returncode == 0, r.stderr
        return r.stdout.strip()
    assert policy(OMP_WAIT_POLICY='ACTIVE') == 'ACTIVE'
    spin = [subprocess.Popen([sys.executable, '-c', 'while True: pass']) for _ in range(os.cpu_count() or 2)]
    try:
        time.sleep(0.5)
        assert cli._cpu_busy(0.2) > 0.5 and policy() == 'PASSIVE'      # every core busy: threads must not spin
    finally:
        for p in spin: p.kill()


@pytest.mark.parametrize('name', ['../victim', 'a/../../x', '/tmp/attngan-edu-abs-run'])
def test_a_run_name_cannot_leave_out_dir(tmp_path, capsys, name):
    before = sorted(p.name for p in tmp_path.iterdir())
    code, _, err = run(capsys, 'train', '--preset', 'tiny', '--out_dir', tmp_path / 'runs', '--name', name)
    assert code == 2 and 'must stay inside' in err and repr(name) in err, err
    assert sorted(p.name for p in tmp_path.iterdir()) == before and not Path('/tmp/attngan-edu-abs-run').exists()


def test_a_run_folder_has_one_owner(tmp_path):
    "Two real `attngan-edu train` processes on one run: the second is refused, naming the first's PID, and changes nothing"
    env = dict(os.environ, OMP_NUM_THREADS='1', ATTNGAN_EDU_DATA=str(tmp_path / 'data'))
    cmd = [sys.executable, '-m', 'attngan_edu.cli', 'train', '--preset', 'tiny', '--out_dir', str(tmp_path / 'runs'),
           '--name', 'shared', '--max_steps', '100000', '--epochs', '0', '--checkpoint_every', '100000', '--sample_every', '0']
    first = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    run_dir = tmp_path / 'runs' / 'shared'
    try:
        for _ in range(600):                       # until the first process has started training (its log exists)
            if (run_dir / 'log.jsonl').exists(): break
            assert first.poll() is None, 'the first train ended early'
            time.sleep(0.1)
        mine = lambda: {n: (run_dir / n).read_bytes() for n in ('.lock', 'config.toml')}   # what a second owner would rewrite
        before = mine()
        second = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=120)
        assert second.returncode == 2 and f'in use by process {first.pid}' in second.stderr, second.stderr
        assert mine() == before and before['.lock'].decode().strip() == str(first.pid)
    finally:
        first.kill(); first.wait()
    from attngan_edu.train import RunLock                     # killed (-9 too): the kernel has dropped the lock
    RunLock(run_dir).release()


def test_os_errors_are_one_line_and_debug_shows_the_traceback(tmp_path, capsys):
    (tmp_path / 'afile').write_text('not a folder')
    args = ['train', '--preset', 'tiny', '--out_dir', tmp_path / 'afile', '--name', 'r']
    code, _, err = run(capsys, *args)                     # refused before any data or DAMSM work
    assert code == 2 and 'afile' in err and 'Traceback' not in err and len(err.strip().splitlines()) == 1, err
    assert not (tmp_path / 'data').exists()
    with pytest.raises(OSError): main([str(a) for a in args] + ['--debug'])


@pytest.mark.parametrize('argv, message', [
    (['--branch_num', '7'], 'branch_num must lie in [1, 3], got 7'),
    (['--lr_g', '-1e-4'], 'lr_g must lie in [0, 1]'),
    (['--gamma1', '0'], 'gamma1 must be > 0'),
    (['--synbirds_size', '8'], 'synbirds_size must lie in [32, 1024]'),
    (['--base_size', '512', '--branch_num', '3'], 'the last stage would be 2048 px'),
])
def test_ranges_are_checked_before_any_data(tmp_path, capsys, argv, message):
    code, _, err = run(capsys, 'train', '--preset', 'tiny', '--out_dir', tmp_path / 'runs', *argv)
    assert code == 2 and message in err, err
    assert list(tmp_path.iterdir()) == []


def test_resume_refuses_other_data_and_keeps_the_checkpoint(tmp_path, capsys):
    base = ['train', '--preset', 'tiny', '--out_dir', tmp_path / 'runs', '--name', 'r']
    assert run(capsys, *base)[0] == 0
    ckpt = tmp_path / 'runs' / 'r' / 'checkpoint.pt'
    before = ckpt.read_bytes()
    code, _, err = run(capsys, *base, '--resume', '--synbirds_n_train', '48', '--max_steps', '12')
    assert code == 2 and 'synbirds_n_train 32 -> 48' in err and 'another --name' in err, err
    assert ckpt.read_bytes() == before
    from attngan_edu.train import check_resume, load_checkpoint
    from attngan_edu.config import make_config
    from attngan_edu.text import Vocab
    c = load_checkpoint(ckpt)
    with pytest.raises(ValueError, match="vocabulary"):
        check_resume(make_config(overrides=c['config']), c, ckpt, Vocab(['<pad>', '<unk>', 'bird']))


def test_small_things_are_said_or_cleaned(tmp_path, capsys):
    (tmp_path / 'bin.toml').write_bytes(bytes(range(256)))
    code, _, err = run(capsys, 'train', '--config', tmp_path / 'bin.toml', '--out_dir', tmp_path / 'runs')
    assert code == 2 and 'bin.toml' in err and 'not UTF-8' in err, err
    (tmp_path / 'full').mkdir(); (tmp_path / 'full' / 'mine.txt').write_text('keep me')
    code, _, err = run(capsys, 'data', 'synbirds', '--out', tmp_path / 'full', '--n-train', 4, '--n-test', 2, '--size', 64)
    assert code == 2 and 'not empty' in err and '--overwrite' in err
    assert [p.name for p in (tmp_path / 'full').iterdir()] == ['mine.txt']
    run_dir = tmp_path / 'runs' / 'r'; run_dir.mkdir(parents=True)
    (run_dir / '.checkpoint.pt.abc123.tmp').write_bytes(b'half a checkpoint')   # what a kill during a save leaves
    code, _, err = run(capsys, 'train', '--preset', 'tiny', '--out_dir', tmp_path / 'runs', '--name', 'r', '--max_steps', 2)
    assert code == 0, err
    assert not list(run_dir.glob('.checkpoint.pt.*.tmp')) and (run_dir / 'checkpoint.pt').is_file()


def test_a_full_disk_is_named_and_leaves_no_half_written_file(tmp_path, capsys):
    disk = tmp_path / 'small'; disk.mkdir()
    if subprocess.run(['mount', '-t', 'tmpfs', '-o', 'size=160k', 'tmpfs', str(disk)], capture_output=True).returncode:
        pytest.skip('cannot mount a small tmpfs here (needs root and mount rights)')
    try:
        code, out, err = run(capsys, 'train', '--preset', 'tiny', '--out_dir', disk, '--name', 'r', '--data_dir', tmp_path / 'data',
                             '--max_steps', 6, '--checkpoint_every', 3, '--sample_every', 0)
        assert code == 2 and 'cannot write checkpoint' in err and 'the disk is full' in err and _one_line(err), err
        assert not list((disk / 'r').glob('.checkpoint.pt.*.tmp'))           # the half-written file is gone
    finally: subprocess.run(['umount', str(disk)])


def test_sample_says_when_a_model_has_no_attention(tmp_path, capsys):
    code, _, err = run(capsys, 'train', '--preset', 'tiny', '--model', 'stackganpp', '--out_dir', tmp_path, '--name', 'pp', '--max_steps', 2)
    assert code == 0, err
    code, out, err = run(capsys, 'sample', '--checkpoint', tmp_path / 'pp', '--out', tmp_path / 's', '--attention', tmp_path / 'a.png')
    assert code == 0 and 'no attention figure: a stackganpp model has no word attention' in err and not (tmp_path / 'a.png').exists()


def test_a_read_only_disk_is_named(tmp_path, capsys):
    disk = tmp_path / 'ro'; disk.mkdir()
    if subprocess.run(['mount', '-t', 'tmpfs', '-o', 'size=1m,ro', 'tmpfs', str(disk)], capture_output=True).returncode:
        pytest.skip('cannot mount a read-only tmpfs here (needs root and mount rights)')
    try:
        code, _, err = run(capsys, 'train', '--preset', 'tiny', '--out_dir', disk, '--name', 'r', '--data_dir', tmp_path / 'data')
        assert code == 2 and 'read-only' in err and str(disk) in err and _one_line(err), err
        assert not (tmp_path / 'data').exists()                   # refused before any data was built
    finally: subprocess.run(['umount', str(disk)])


def test_train_damsm_does_not_overwrite_a_file_unasked(tmp_path, capsys):
    (tmp_path / 'd.safetensors').write_bytes(b'mine')
    code, _, err = run(capsys, 'train-damsm', '--preset', 'tiny', '--out', tmp_path / 'd.safetensors', '--data_dir', tmp_path / 'data')
    assert code == 2 and '--overwrite' in err and (tmp_path / 'd.safetensors').read_bytes() == b'mine'
    assert not (tmp_path / 'data').exists()                                         # refused before any work


def test_make_course_trains_every_arm_once_longest_first(tmp_path):
    "COURSE_ORDER (the order make -j2 starts the arms) holds exactly the arms the table compares, each once"
    import re, shutil
    if not shutil.which('make'): pytest.skip('no make')
    plan = subprocess.run(['make', '-n', 'course', f'COURSE_DIR={tmp_path}'], cwd=ROOT, capture_output=True, text=True, check=True).stdout
    trained = re.findall(r'attngan-edu train --preset .*? --name (\S+)', plan)
    compared = [Path(p).name for p in re.search(r'attngan-edu compare (.*) --out', plan).group(1).split()]
    assert sorted(trained) == sorted(compared) and len(set(trained)) == len(trained), (trained, compared)
    assert trained[:3] == ['stackgan', 'attngan', 'attngan-s1'] and trained[-1] == 'stackganpp'
