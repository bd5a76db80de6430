# Two commands on a fresh machine (Python >= 3.10 and make):
#   make demo   create .venv, install the package, run the demo on synthetic data
#   make test   create .venv, install the package with test extras, run the test suite
#   make notebooks  quick runs of the experiments the notebooks read, then every notebook executed headless
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed
DEMO_OUT ?= demo_out
PYTEST_ARGS ?= -n 2 --dist loadgroup
EXPERIMENTS_OUT ?= experiments_out
NOTEBOOKS_OUT ?= notebooks_out

.PHONY: install demo test bench notebooks clean

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

# The --quick runs (one left-out subject, one epoch, 32 px) only show that the pipeline runs; rerunning reuses
# their finished folds. The executed copies (figures included) go to $(NOTEBOOKS_OUT); notebooks/ stays clean.
notebooks: $(STAMP)
	$(BIN)/python experiments/04_off_tanet_table2.py --quick --no-progress --out $(EXPERIMENTS_OUT)/04_off_tanet_table2
	$(BIN)/python experiments/07_off_tanet_table5_attention.py --quick --no-progress \
		--out $(EXPERIMENTS_OUT)/07_off_tanet_table5_attention
	mkdir -p $(NOTEBOOKS_OUT)
	cp notebooks/*.ipynb $(NOTEBOOKS_OUT)/
	MER_KERAS_RESULTS=$(abspath $(EXPERIMENTS_OUT)/04_off_tanet_table2) $(BIN)/jupyter-execute --inplace \
		--kernel_name=python3 $(NOTEBOOKS_OUT)/confusion_matrices.ipynb $(NOTEBOOKS_OUT)/training_curves.ipynb
	MER_KERAS_RESULTS=$(abspath $(EXPERIMENTS_OUT)/07_off_tanet_table5_attention) $(BIN)/jupyter-execute --inplace \
		--kernel_name=python3 $(NOTEBOOKS_OUT)/attention_maps.ipynb
	@echo "executed notebooks (with their figures) in $(NOTEBOOKS_OUT)/"

clean:
	rm -rf $(VENV) $(DEMO_OUT) $(NOTEBOOKS_OUT) .pytest_cache build *.egg-info
