# corl — make targets. `make demo` and `make test` set everything up on a fresh machine.
PY ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
CONFIG ?= configs/demo/s1.yaml
MODEL ?= checkpoints/Janus-Pro-1B
DATA ?= data/x2x_rft_22k
LOGDIR ?= runs

.PHONY: install test lint demo stage1 tensorboard bench clean spice

$(BIN)/corl: pyproject.toml
	$(PY) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet torch==2.14.1 torchvision==0.29.1
	$(BIN)/pip install --quiet -e ".[test]"
	touch $(BIN)/corl

install: $(BIN)/corl  ## create .venv and install corl (editable) with its test extras

test: install  ## the whole test suite (CPU, a few minutes)
	$(BIN)/ruff check corl tests benchmarks scripts
	$(BIN)/python -m pytest -q

lint: install
	$(BIN)/ruff check corl tests benchmarks scripts

demo: install  ## stage 1 on the embedded tiny Janus and procedural data, on the CPU
	$(BIN)/corl fit -c $(CONFIG)

stage1: install  ## stage 1 with the paper's settings on real weights and data
	$(BIN)/corl fit -c configs/s1.yaml --model.model $(MODEL) --data.source $(DATA)

tensorboard: install  ## watch runs
	$(BIN)/tensorboard --logdir $(LOGDIR)

clean:
	rm -rf $(LOGDIR) .pytest_cache .ruff_cache

bench: install  ## rollout throughput against transformers' generate (BENCH_ARGS="--device cuda ...")
	$(BIN)/python benchmarks/rollout.py $(BENCH_ARGS)

spice: install  ## SPICE caption metric, once: CoreNLP 3.6.0 jars from Maven Central (SHA-1 checked) + the Java server
	$(BIN)/python -m corl.modules.rewards.spice setup
