# Quick start: `make run` (set up, then the main job) and `make test` (set up, then all tests).
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: setup run test lint bench clean

setup: $(STAMP)

$(STAMP): pyproject.toml constraints.txt
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q -c constraints.txt torch==2.14.1 torchvision==0.29.1
	$(BIN)/pip install -q -c constraints.txt -e ".[all,faces,dev]"
	# facenet-pytorch (MTCNN for attack A6) pins an old torch in its metadata: install it alone.
	$(BIN)/pip install -q --no-deps -c constraints.txt facenet-pytorch==2.6.0
	bash scripts/install-data.sh
	bash scripts/install-browser.sh
	touch $(STAMP)

run: setup
	$(BIN)/visualmixer run --out out/run

test: setup
	$(BIN)/ruff check src tests benchmarks scripts
	$(BIN)/lint-imports
	$(BIN)/python -m pytest -q -n 2 --dist loadfile

lint: setup
	$(BIN)/ruff check src tests benchmarks scripts
	$(BIN)/lint-imports

bench: setup
	$(BIN)/python benchmarks/bench_core.py

clean:
	rm -rf out .pytest_cache
