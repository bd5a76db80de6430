# Two commands on a fresh machine (Python >= 3.10 and make):
#   make demo   create .venv, install the package, run the demo on synthetic data
#   make test   create .venv, install the package with test extras, run the test suite
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed
DEMO_OUT ?= demo_out
PYTEST_ARGS ?= -n 2 --dist loadgroup

.PHONY: install demo test bench clean

$(STAMP): setup.cfg setup.py
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip setuptools wheel
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	touch $(STAMP)

install: $(STAMP)

demo: $(STAMP)
	$(BIN)/mer-keras demo --out $(DEMO_OUT)

test: $(STAMP)
	$(BIN)/python -m pytest -q $(PYTEST_ARGS)

bench: $(STAMP)
	$(BIN)/mer-keras bench preprocess

clean:
	rm -rf $(VENV) $(DEMO_OUT) .pytest_cache build *.egg-info
