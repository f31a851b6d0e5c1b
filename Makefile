# Two commands do everything from a fresh clone:  `make run`  and  `make test`.
# Set-up lives in .venv/ (created on first use). On a machine without an NVIDIA GPU
# torch is pinned to a CPU build first, so pip never pulls the multi-GB CUDA wheels.
PY      ?= python3
VENV    := .venv
BIN     := $(VENV)/bin
# A CPU machine gets TORCH_CPU; a GPU machine (nvidia-smi works) gets TORCH_GPU.
TORCH_CPU ?= torch==2.13.0
TORCH_GPU ?= torch
TORCH   ?= $(shell nvidia-smi -L >/dev/null 2>&1 && echo '$(TORCH_GPU)' || echo '$(TORCH_CPU)')
PRESET  ?= synbirds-cpu

.PHONY: setup run test export-check nbtest pytest clean-nbs browser
setup: $(VENV)/.done
$(VENV)/.done: setup.py settings.ini
	test -x $(BIN)/python || $(PY) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q '$(TORCH)'
	$(BIN)/python -m pip install -q -e '.[dev]'
	touch $@

# The main job on the embedded default data set (SynBirds), on whatever device is there.
run: setup
	$(BIN)/attngan-edu train --preset $(PRESET)

# The whole test suite: notebooks are the only source, then every notebook, then tests/.
test: setup export-check nbtest pytest
export-check: setup
	$(BIN)/nbdev_export
	@git diff --quiet -- attngan_edu && test -z "$$(git status --porcelain -- attngan_edu pyproject.toml)" \
	  || { git status --short -- attngan_edu; echo 'nbdev_export changed attngan_edu/: export the notebooks and commit the package'; exit 1; }
nbtest: setup
	OMP_NUM_THREADS=1 IN_TEST=1 $(BIN)/nbdev_test --n_workers 2 --timing
# The explorer's browser test needs Debian's chromium (never a downloaded browser). Installed when we are
# root with apt-get (CI, containers); elsewhere install it yourself, or the test reports that it skipped.
browser:
	@command -v chromium >/dev/null 2>&1 || { [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1 \
	  && (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null) \
	  || echo 'chromium not installed: the browser test will skip'; }
pytest: setup browser
	$(BIN)/python -m pytest -q tests/

clean-nbs: setup
	$(BIN)/nbdev_clean
