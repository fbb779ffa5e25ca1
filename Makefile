PY ?= python3
VENV ?= .venv
BIN := $(VENV)/bin

.PHONY: install test demo tensorboard lint clean

$(BIN)/corl: pyproject.toml
	$(PY) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet torch==2.14.1 torchvision==0.29.1
	$(BIN)/pip install --quiet -e ".[test]"
	touch $(BIN)/corl

install: $(BIN)/corl
