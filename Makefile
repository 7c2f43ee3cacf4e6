# The two front-door commands: `make train` and `make test`. Both set up .venv first.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: setup test train clean

setup: $(STAMP)

$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --upgrade --quiet pip
	$(PY) -m pip install --quiet -e ".[test]"
	touch $(STAMP)

# pytest exits 5 when it collected no test: that must fail, and it does (any non-zero fails make).
test: setup
	$(PY) -m pytest -q

data/synthetic/train.json: | setup
	$(PY) scripts/make_synthetic.py --out data/synthetic

train: setup data/synthetic/train.json
	$(PY) scripts/train_and_evaluate.py --config configs/synthetic.yaml

clean:
	rm -rf $(VENV) runs lightning_logs data/synthetic
