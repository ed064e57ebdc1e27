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

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PY) -m venv $(VENV)
	$(BIN)/pip install -q --disable-pip-version-check "torch==2.13.0"
	$(BIN)/pip install -q --disable-pip-version-check -e ".[dev]"
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
