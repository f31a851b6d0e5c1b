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

.PHONY: setup run test export-check nbtest pytest clean-nbs browser course record-course gpu-check pretrained site
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

# The shipped models of data/pretrained/ (appendix A3): the DAMSM teacher, the SynBirds judge, then the course's GANs
# (StackGAN, StackGAN++, DF-GAN, AttnGAN, which learn from that teacher), each trained, measured and recorded in
# data/pretrained/manifest.json. Resumable: a killed build continues from runs/pretrained/ (the teacher's training state
# every epoch, the GANs' checkpoints); `rm -r runs/pretrained` first to rebuild from nothing. DEVICE=cuda on a GPU;
# PRETRAINED_ONLY="stackgan dfgan" builds only those.
PRETRAINED_DEVICE = $(if $(filter command line,$(origin DEVICE)),$(DEVICE),auto)
pretrained: setup
	OMP_NUM_THREADS=2 $(BIN)/attngan-edu pretrained --work runs/pretrained --device $(PRETRAINED_DEVICE) --threads 2 \
	  $(if $(PRETRAINED_ONLY),--only $(PRETRAINED_ONLY))

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

# The course as a static website in _site/ (.ci/site.py: Sphinx + MyST-NB, the notebooks' stored outputs, nothing
# executed; MathJax served from the site, so _site/index.html reads offline). tests/test_site.py builds and reads it.
site: setup
	$(BIN)/python .ci/site.py

# The course's results table (notebook 13, README): the same data, teacher, step budget and evaluation for every arm;
# every arm as its authors' released code trains it (StackGAN++ with its mismatched pairs); the three AttnGAN arms
# (lam = 5, lam = 0, and a sentence-only stage instead of word attention) and DF-GAN (notebook 12) with two seeds each.
# `make -j2 course` trains two arms at a time. Each arm: 1 CPU thread (COURSE_THREADS), COURSE_STEPS steps.
COURSE_DIR     ?= runs/course
COURSE_STEPS   ?= 2400
COURSE_THREADS ?= 1
COURSE_ARMS    := stackgan attngan attngan-s1 attngan-no-damsm attngan-no-damsm-s1 attngan-no-attn attngan-no-attn-s1 \
                  stackganpp stackganpp-lc dfgan dfgan-s1
# the course's widths: 16 for G and D (the main job trains at 24), DF-GAN its own nf = 8
W16                      := --ngf 16 --ndf 16
ARGS_stackgan            := --model stackgan $(W16) --base_size 64
ARGS_stackganpp          := --model stackganpp $(W16)
ARGS_stackganpp-lc       := --model stackganpp --color_alpha 50 $(W16)
ARGS_attngan             := $(W16)
ARGS_attngan-s1          := --seed 1 $(W16)
ARGS_attngan-no-damsm    := --lam 0 $(W16)
ARGS_attngan-no-damsm-s1 := --lam 0 --seed 1 $(W16)
ARGS_attngan-no-attn     := --word_attention false $(W16)
ARGS_attngan-no-attn-s1  := --word_attention false --seed 1 $(W16)
ARGS_dfgan               := --model dfgan
ARGS_dfgan-s1            := --model dfgan --seed 1
# the shipped teacher (data/pretrained/), for every arm whatever its image size; the step that finds it fails, naming
# what differs, when the data built here is not the data it was trained on
COURSE_TEACHER = $(COURSE_DIR)/teacher.path
COURSE_TRAIN = OMP_NUM_THREADS=$(COURSE_THREADS) $(BIN)/attngan-edu train --preset synbirds-cpu --out_dir $(COURSE_DIR) \
	--threads $(COURSE_THREADS) --max_steps $(COURSE_STEPS) --checkpoint_every 600 --sample_every 600 --progress false \
	--damsm_path "$$(cat $(COURSE_TEACHER))"
# make -j2 starts the arms in this order, the longest first (their training minutes in the README's table), so that
# the two last to finish end close together instead of one running alone at the end
COURSE_ORDER   := stackgan attngan attngan-s1 attngan-no-attn attngan-no-attn-s1 attngan-no-damsm attngan-no-damsm-s1 \
                  dfgan dfgan-s1 stackganpp-lc stackganpp
course: $(COURSE_DIR)/results.md
$(COURSE_DIR)/results.md: $(foreach a,$(COURSE_ORDER),$(COURSE_DIR)/$(a)/metrics.json)
	$(BIN)/attngan-edu compare $(addprefix $(COURSE_DIR)/,$(COURSE_ARMS)) --out $@
$(COURSE_DIR)/%/metrics.json: $(COURSE_TEACHER)
	$(COURSE_TRAIN) --name $* $(ARGS_$*) $$(test -f $(COURSE_DIR)/$*/checkpoint.pt && echo --resume)   # a killed arm continues
	OMP_NUM_THREADS=$(COURSE_THREADS) $(BIN)/attngan-edu evaluate --checkpoint $(COURSE_DIR)/$* --threads $(COURSE_THREADS)
# The course's figures as the notebooks and the README read them: each arm's metrics.json and the table, in data/course/
record-course: course
	mkdir -p data/course
	for a in $(COURSE_ARMS); do cp $(COURSE_DIR)/$$a/metrics.json data/course/$$a.json; done
	cp $(COURSE_DIR)/results.md data/course/results.md
# the teacher found once, and the judge (shipped, or trained here when the data differs) ready before the arms need it
$(COURSE_TEACHER): | $(VENV)/.done
	mkdir -p $(COURSE_DIR)
	OMP_NUM_THREADS=2 $(BIN)/python -c "from attngan_edu.judge import get_judge; get_judge()"
	$(BIN)/python -c "from attngan_edu.pretrained import shipped_teacher; print(shipped_teacher(log=lambda *_: None))" > $@.tmp
	mv $@.tmp $@

# The GPU path in one command (bench/gpu_check.py, bench/README.md "On a GPU"): environment, a CPU-vs-CUDA training
# step, a short real run with kill and --resume, evaluate, and throughput with FLOPs -> gpu_check.json and .md in bench/.
# Where there is no virtualenv (a lent GPU machine with torch installed): make gpu-check PY=python3 WHEELS=<folder of
# wheels of what that python lacks>. DEVICE=cpu runs every part with tiny sizes (what tests/test_gpu_check.py does).
DEVICE ?= cuda
WHEELS ?=
GPU_CHECK_PY = $(if $(WHEELS),$(PY),$(BIN)/python)
gpu-check: $(if $(WHEELS),,setup)
	@site=$$(mktemp -d); status=0; \
	if [ -n "$(WHEELS)" ]; then $(PY) -m pip install -q --no-index --no-deps --no-compile --target $$site $(WHEELS)/*.whl \
	  || { rm -rf $$site; exit 1; }; fi; \
	PYTHONPATH=$$site:$(CURDIR)$${PYTHONPATH:+:$$PYTHONPATH} $(GPU_CHECK_PY) bench/gpu_check.py --device $(DEVICE) \
	  --out bench/gpu_check.json --md bench/gpu_check.md || status=$$?; rm -rf $$site; exit $$status
