def pytest_configure(config):
    config.addinivalue_line('markers', 'gpu: needs a CUDA GPU (skipped without one; `make gpu-check` runs them on a GPU)')
