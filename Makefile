# Two entry points: `make demo` and `make test`. Both create or reuse .venv and install what they need.
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
export HF_HUB_OFFLINE := 1
export TRANSFORMERS_OFFLINE := 1
export TOKENIZERS_PARALLELISM := false

.PHONY: venv test demo demo-copy quick clean

venv: $(STAMP)

# Everything but torch from the hashed lock (requirements/lock.txt, see requirements/compile.py);
# torch pinned in pyproject.toml (the local CPU wheel here: its hash is not PyPI's); then this
# project without dependencies. Re-runs when pyproject.toml or the lock changes.
$(STAMP): pyproject.toml requirements/lock.txt
	test -x $(BIN)/python || $(PY) -m venv $(VENV)
	$(BIN)/pip install -q --disable-pip-version-check --require-hashes --no-deps -r requirements/lock.txt
	$(BIN)/pip install -q --disable-pip-version-check "torch==2.13.0"
	$(BIN)/pip install -q --disable-pip-version-check --no-deps --no-build-isolation -e .
	$(BIN)/pip check
	touch $(STAMP)

test: $(STAMP)
	$(BIN)/python -m pytest -q

demo: $(STAMP)
	$(BIN)/rlhf pipeline --config configs/demo.yaml --out runs/demo

demo-copy: $(STAMP)
	$(BIN)/rlhf pipeline --config configs/demo_copy.yaml --out runs/demo_copy

quick: $(STAMP)
	$(BIN)/rlhf pipeline --config configs/quick.yaml --out runs/quick

clean:
	rm -rf runs
