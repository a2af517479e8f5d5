# Developer commands; each is also written out in the README.
PY ?= .venv/bin/python

.PHONY: setup lint test bench
setup:
	python3 -m venv .venv && .venv/bin/pip install -e '.[dev]'
lint:
	$(PY) -m ruff check .
test:
	$(PY) -m ruff check . && $(PY) -m pytest -q
bench:
	$(PY) benchmarks/parareal_convergence.py
