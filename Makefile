# The README's two commands. Each installs what it needs into .venv first (Python 3.11, PyPI only).
#   make demo   - the embedded demo: snakemake --cores 2 on config/config.yaml, writing results/demo/ and
#                 figures/demo/ (ignored by git), then `qd diff`: the run beside reference/demo/
#   make test   - the test suite (fast CPU tier; `make test-slow` adds the slow tier)
#   make rehearse - each paper preset's whole workflow on stand-in data, checked (docs/rehearsals.md;
#                 up to 10 minutes each on 2 cores; .ci/run runs it after `make test`)
#   make paper  - every paper preset, one after another (GPUs and the datasets needed: see README)
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
CORES  ?= 2

.PHONY: demo test test-slow rehearse paper install clean-results

PAPER_PRESETS ?= cifar10 cifar100 imagenet onmt-integ wmt13

install: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml
	@$(PYTHON) -c 'import sys; assert sys.version_info[:2] == (3, 11), f"Python 3.11 needed, found {sys.version.split()[0]} (set PYTHON=...)"'
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[test]'
	@touch $@

demo: install
	PATH="$(CURDIR)/$(BIN):$$PATH" $(BIN)/snakemake --workflow-profile workflow/profiles/default --cores $(CORES)
	$(BIN)/qd diff --preset demo --out results/demo/diff.md

test: install
	PATH="$(CURDIR)/$(BIN):$$PATH" $(BIN)/pytest -q

# every tier but the rehearsals (make rehearse runs those)
test-slow: install
	PATH="$(CURDIR)/$(BIN):$$PATH" $(BIN)/pytest -q -m "not rehearsal"

# the paper presets' rehearsals (tests/test_rehearsals.py, marker `rehearsal`): one test per preset
rehearse: install
	PATH="$(CURDIR)/$(BIN):$$PATH" $(BIN)/pytest -q -m rehearsal tests/test_rehearsals.py

paper: install
	for preset in $(PAPER_PRESETS); do \
	  PATH="$(CURDIR)/$(BIN):$$PATH" $(BIN)/snakemake --workflow-profile workflow/profiles/default \
	    --cores $(CORES) --config preset=$$preset || exit 1; \
	done

clean-results:
	rm -rf results figures .snakemake
