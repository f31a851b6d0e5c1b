"""The shipped models of data/pretrained/: each file is the one its manifest describes (bytes, config, vocabulary, data
fingerprint) and measures, on a subset of the test set, what the manifest says it measured; the run's lookup uses them."""
import json
from dataclasses import asdict
import pytest
import torch

from attngan_edu.pretrained import (read_manifest, check_file, data_fingerprint, vocab_sha256, teacher_figures,
                                    judge_figures, find_pretrained, pretrained_dir, TEACHER_RECIPE, JUDGE_RECIPE)
from attngan_edu.config import make_config

MAN = read_manifest()


def entry(kind):
    found = [(n, e) for n, e in MAN['files'].items() if e['kind'] == kind]
    assert len(found) == 1, f"data/pretrained/manifest.json should list one {kind}, lists {len(found)}"
    return found[0]


def close(got: dict, want: dict, tol: float):
    bad = {k: (got[k], w) for k, w in want.items() if isinstance(w, float) and abs(got[k] - w) > tol}
    assert not bad, f"figures off by more than {tol}: {bad} (measured, recorded)"


def test_folder_is_small():
    assert sum(e['bytes'] for e in MAN['files'].values()) < 30e6
    assert (pretrained_dir() / 'README.md').read_text() .count('## `') == len(MAN['files'])


@pytest.fixture(scope='module')
def teacher_env():
    from attngan_edu.train import dataset_root, make_dataset, teacher_match
    preset, over = TEACHER_RECIPE
    cfg = make_config(preset, overrides=over)
    root = dataset_root(cfg)
    return cfg, root, make_dataset(cfg, root, 'train').vocab


def test_teacher_is_its_manifest(teacher_env):
    from attngan_edu.damsm import load_damsm
    from attngan_edu.train import make_dataset, teacher_match
    from attngan_edu.synbirds import SynBirdsTruth
    cfg, root, vocab = teacher_env
    name, e = entry('damsm')
    path = check_file(name, e)                                              # size and SHA-256
    model, dvocab = load_damsm(path)
    assert asdict(model.config) == e['config']
    assert vocab_sha256(dvocab.itos) == e['match']['vocab_sha256'] == vocab_sha256(vocab.itos)
    assert data_fingerprint(root) == e['data']['fingerprint']               # the data the recipe builds here
    assert teacher_match(cfg, vocab) == e['match']
    test_ds = make_dataset(cfg, root, 'test', base_size=model.config.image_size, branch_num=1, vocab=vocab, with_truth=True)
    chk = e['check']
    got = teacher_figures(model, test_ds, SynBirdsTruth(root), vocab, n=chk['pairs'], draws=2)
    close(got, chk['figures'], chk['tolerance'])


def test_run_uses_shipped_teacher(teacher_env, tmp_path):
    from attngan_edu.train import get_damsm
    cfg, root, vocab = teacher_env
    lines = []
    _, path = get_damsm(cfg, root, vocab, torch.device('cpu'), log=lines.append)
    assert path == pretrained_dir() / entry('damsm')[0] and not lines
    # another vocabulary (another data set): one line says why, and nothing shipped is returned
    other = dict(entry('damsm')[1]['match'], vocab_sha256='0' * 64)
    assert find_pretrained('damsm', other, root, log=lines.append) is None
    assert len(lines) == 1 and 'vocab_sha256' in lines[0]


def test_judge_is_its_manifest():
    from attngan_edu.judge import load_judge, load_judge_data, judge_match, get_judge
    from attngan_edu.synbirds import get_synbirds
    name, e = entry('judge')
    judge = load_judge(check_file(name, e))
    assert e['match'] == judge_match(**JUDGE_RECIPE)
    assert dict(size=judge.size, channels=list(judge.channels)) == e['config']
    r = JUDGE_RECIPE
    root = get_synbirds(r['n_train'], r['n_test'], r['image_size'], r['data_seed'])
    assert data_fingerprint(root) == e['data']['fingerprint']
    chk = e['check']
    got = judge_figures(judge, load_judge_data(root, 'test', size=r['size'], with_parts=False), chk['images'])
    close(got, chk['figures'], chk['tolerance'])
    shipped = get_judge(verbose=False)                                   # what evaluate uses: the shipped file
    assert all(torch.equal(a, b) for a, b in zip(shipped.state_dict().values(), judge.state_dict().values()))


def test_pretraining_resumes_exactly(tmp_path):
    "A DAMSM pretraining killed after an epoch and continued from its state file ends where an unbroken one does"
    from attngan_edu.synbirds import make_synbirds
    from attngan_edu.data import TextImageDataset
    from attngan_edu.damsm import DAMSMConfig, pretrain_damsm
    root = make_synbirds(tmp_path / 'data', n_train=24, n_test=8, image_size=64, seed=0)
    ds = TextImageDataset(root, 'train', base_size=32, branch_num=1)
    cfg = DAMSMConfig(vocab_size=len(ds.vocab), emb_dim=8, D=16, ndf=4, image_size=32, batch_size=8, epochs=2, lr_decay=0.9)
    whole, hist = pretrain_damsm(ds, cfg)
    state = tmp_path / 'state.pt'
    pretrain_damsm(ds, cfg, epochs=1, state_path=state)                  # "killed" after epoch 1
    resumed, hist2 = pretrain_damsm(ds, cfg, state_path=state)            # continues with epoch 2
    assert [h['loss'] for h in hist2] == [h['loss'] for h in hist]
    assert all(torch.equal(a, b) for a, b in zip(whole.state_dict().values(), resumed.state_dict().values()))
    other = DAMSMConfig(**{**asdict(cfg), 'lr': 1e-3})
    with pytest.raises(ValueError, match='other settings'): pretrain_damsm(ds, other, state_path=state)


def test_build_and_use_tiny_models(tmp_path, monkeypatch):
    "The builders on tiny recipes: files, manifest and README written; runs and get_judge then find them, and only them"
    from attngan_edu.pretrained import build_teacher, build_judge
    from attngan_edu.train import dataset_root, make_dataset, get_damsm
    from attngan_edu.judge import get_judge, load_judge
    out = tmp_path / 'shipped'
    teacher = ('tiny', dict(data_dir=str(tmp_path / 'data'), damsm_epochs=1))
    judge = dict(n_train=24, n_test=12, image_size=64, data_seed=2, steps=3, size=32, seed=0, batch_size=8, lr=3e-3)
    build_teacher(tmp_path / 'work', out, 'cpu', 'test', log=lambda m: None, recipe=teacher)
    build_judge(tmp_path / 'work', out, 'cpu', 'test', log=lambda m: None, recipe=judge, data_dir=tmp_path / 'jdata')
    man = read_manifest(out)
    assert sorted(e['kind'] for e in man['files'].values()) == ['damsm', 'judge']
    assert all(set(e['figures']) and e['command'] == 'test' for e in man['files'].values())
    monkeypatch.setenv('ATTNGAN_EDU_PRETRAINED', str(out))
    cfg = make_config('tiny', overrides=teacher[1])
    root = dataset_root(cfg)
    vocab = make_dataset(cfg, root).vocab
    assert get_damsm(cfg, root, vocab, torch.device('cpu'), log=print)[1] == out / 'damsm-synbirds.safetensors'
    lines = []                                                            # other data: the run trains its own
    cfg2 = make_config('tiny', overrides=dict(teacher[1], synbirds_seed=5, out_dir=str(tmp_path / 'runs')))
    root2 = dataset_root(cfg2)
    _, path2 = get_damsm(cfg2, root2, make_dataset(cfg2, root2).vocab, torch.device('cpu'), log=lines.append)
    assert path2.parent.name == '_damsm' and lines[0].startswith('shipped damsm not used: ')
    j = get_judge(**{k: v for k, v in judge.items() if k != 'data_seed'}, data_seed=2, root=tmp_path / 'jdata', verbose=False)
    shipped = load_judge(out / 'judge-synbirds.safetensors')
    assert all(torch.equal(a, b) for a, b in zip(j.state_dict().values(), shipped.state_dict().values()))
    # a GAN learns from the shipped teacher, is evaluated, installed, found, and opens as a run does
    from attngan_edu.pretrained import build_gan
    from attngan_edu.train import load_run
    from attngan_edu.report import evaluate_run
    gan = build_gan('attngan', tmp_path / 'work', out, 'cpu', 'test', log=lambda m: None, judge=shipped,
                    recipe=('tiny', dict(teacher[1], max_steps=2)))
    e = read_manifest(out)['files'][gan.name]
    assert e['kind'] == 'attngan' and e['teacher']['name'] == 'damsm-synbirds.safetensors' and e['config']['damsm_path'] == e['teacher']['name']
    assert e['figures']['step'] == 2 and 0 <= e['check']['figures']['attribute_accuracy'] <= 1
    cfg_g, G, damsm, vocab_g, ck, _ = load_run(gan)
    assert cfg_g.model == 'attngan' and ck['step'] == 2 and vocab_g.itos == vocab.itos
    again = evaluate_run(gan, n=e['check']['pairs'], seed=0, judge=shipped, device='cpu', log=lambda m: None)
    assert again['judge']['attribute_accuracy']['all'] == e['check']['figures']['attribute_accuracy']
    (out / 'judge-synbirds.safetensors').write_bytes(b'not the file')  # a changed file is refused by name
    with pytest.raises(ValueError, match='sha256'):
        get_judge(**{k: v for k, v in judge.items() if k != 'data_seed'}, data_seed=2, root=tmp_path / 'jdata', verbose=False)


def test_course_finds_shipped_teacher(teacher_env):
    from attngan_edu.pretrained import shipped_teacher
    assert shipped_teacher(log=lambda *_: None) == pretrained_dir() / entry('damsm')[0]
    # other SynBirds (another seed, so another vocabulary and fingerprint): an error that names what differs
    with pytest.raises(FileNotFoundError, match='no shipped teacher fits.*vocab_sha256'):
        shipped_teacher(overrides=dict(synbirds_seed=5, synbirds_n_train=16, synbirds_n_test=16), log=lambda *_: None)


# The course's GANs the folder ships now (appendix A3's GAN_RECIPES lists how each is made)
SHIPPED_GANS = sorted(e['kind'] for e in MAN['files'].values() if e['kind'] not in ('damsm', 'judge'))


def test_shipped_gans_are_the_recipes():
    from attngan_edu.pretrained import GAN_RECIPES
    assert SHIPPED_GANS == sorted(GAN_RECIPES), f"shipped {SHIPPED_GANS}, recipes {sorted(GAN_RECIPES)}: run `make pretrained`"


@pytest.mark.parametrize('model', SHIPPED_GANS)
def test_gan_is_its_manifest(model):
    "Each shipped GAN: its bytes, the teacher it learned from, and its check figures measured again on the CPU"
    from attngan_edu.pretrained import gan_figures, open_shipped, file_sha256, GAN_RECIPES
    from attngan_edu.report import evaluate_run
    name, e = entry(model)
    path = check_file(name, e)
    t_name, t = entry('damsm')
    assert e['teacher'] == dict(name=t_name, sha256=t['sha256']), "a GAN must have learned from the shipped teacher"
    assert e['recipe'] == dict(preset=GAN_RECIPES[model][0], overrides=GAN_RECIPES[model][1])
    got = gan_figures(evaluate_run(path, n=e['check']['pairs'], seed=0, device='cpu', log=lambda m: None))
    close(got, e['check']['figures'], e['check']['tolerance'])
    s = open_shipped(model, n=4)
    assert s['step'] == e['figures']['step'] == e['config']['max_steps'] and len(s['captions']) == len(s['imgs'][0]) == 4


def test_cli_builds_what_the_recipes_list():
    "attngan-edu pretrained --only offers the teacher, the judge and every GAN recipe, and nothing else"
    import argparse
    from attngan_edu.cli import build_parser
    from attngan_edu.pretrained import GAN_RECIPES
    sub = next(a for a in build_parser()._actions if isinstance(a, argparse._SubParsersAction))
    only = next(a for a in sub.choices['pretrained']._actions if a.dest == 'only')
    assert set(only.choices) == {'teacher', 'judge', *GAN_RECIPES}
