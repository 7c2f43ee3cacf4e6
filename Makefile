# The two front-door commands: `make train` and `make test`. Both set up .venv first.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: setup test train ablate bench clean

setup: $(STAMP)

# constraints.txt pins the tested torch/torchvision pair; pyproject.toml holds the ranges.
$(STAMP): pyproject.toml constraints.txt
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --upgrade --quiet pip
	$(PY) -m pip install --quiet -c constraints.txt -e ".[test,fast-eval,export]"
	touch $(STAMP)

# pytest exits 5 when it collected no test: that must fail, and it does (any non-zero fails make).
test: setup
	$(PY) -m pytest -q

RUN := runs/synthetic

data/synthetic/train.json: | setup
	$(PY) scripts/make_synthetic.py --out data/synthetic --no-progress

# Train on the CPU (configs/synthetic.yaml), evaluate the best checkpoint on the val split, print
# the AP table, write the HTML report ($(RUN)/report/index.html); the last line printed is the
# path of the metrics JSON.
train: setup data/synthetic/train.json
	$(PY) scripts/train.py fit --config configs/synthetic.yaml
	$(PY) scripts/evaluate.py --checkpoint $(RUN)/checkpoints/best.ckpt --config configs/synthetic.yaml \
		--report $(RUN)/report --out $(RUN)/metrics.json

# The loss study's quick preset (its time: docs/ablation.md): docs/ablation/quick (table and plots).
ablate: setup
	$(PY) scripts/ablate.py --preset quick --out docs/ablation/quick

# This project against torchvision's RetinaNet, side by side (docs/benchmarks.md).
bench: setup
	$(PY) scripts/bench.py --quick --out runs/bench/bench.json --table runs/bench/table.md

clean:
	rm -rf $(VENV) runs lightning_logs data/synthetic
