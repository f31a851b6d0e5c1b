import torch


def pytest_configure(config):
    config.addinivalue_line('markers', 'gpu: needs a CUDA GPU (skipped without one; `make gpu-check` runs them on a GPU)')


def tiny_env(base, device: str | None = None) -> dict:
    """A tiny SynBirds under base/data and a DAMSM pretrained on it, shared by the tests of a file (test_train, test_cuda).
    device: the runs' device; None leaves the config's 'auto' and pretrains the DAMSM on the CPU."""
    from attngan_edu.config import make_config
    from attngan_edu import train as T
    over = {'out_dir': str(base / 'runs'), 'data_dir': str(base / 'data')} | ({'device': device} if device else {})
    cfg = make_config('tiny', overrides=over)
    root = T.dataset_root(cfg)
    _, damsm_path = T.get_damsm(cfg, root, T.make_dataset(cfg, root).vocab, torch.device(device or 'cpu'), log=lambda m: None)
    return dict(base=base, data_dir=str(base / 'data'), damsm_path=str(damsm_path), device=device)


def tiny_config(env, name, **kw):
    "The tiny preset for run `name` on tiny_env's data, DAMSM and device, one log line per step; kw: more overrides"
    from attngan_edu.config import make_config
    over = {'out_dir': str(env['base'] / 'runs'), 'data_dir': env['data_dir'], 'damsm_path': env['damsm_path'], 'name': name,
            'print_every': 1} | ({'device': env['device']} if env['device'] else {})
    return make_config('tiny', overrides={**over, **kw})
