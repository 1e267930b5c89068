# Quickstart targets: each one creates the environment first when it is missing.
#   make demo   runs the main job (credit-risk cleaning + training) on embedded data
#   make test   runs the test suite
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

.PHONY: demo test bench acceptance clean

$(STAMP): pyproject.toml examples/domains
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	# torch first, pinned: a CPU build where one is on disk, else PyPI's default build
	$(BIN)/python -m pip install -q "torch==2.13.0"
	$(BIN)/python -m pip install -q -e ".[all]"
	@for d in examples/domains/*/; do if [ -f "$$d/pyproject.toml" ]; then $(BIN)/python -m pip install -q -e "$$d" || exit 1; fi; done
	touch $(STAMP)

demo: $(STAMP)
	$(BIN)/forgeline run examples/pipelines/credit-risk.yaml

test: $(STAMP)
	$(BIN)/python -m pytest -q -n 2 --dist loadfile

acceptance: $(STAMP)
	PATH=$(CURDIR)/$(BIN):$$PATH ../shared/acceptance/engine

bench: $(STAMP)
	$(BIN)/python benchmarks/clean.py
	$(BIN)/python benchmarks/train_overhead.py

clean:
	rm -rf $(VENV) runs
