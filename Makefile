# Developer commands; each is also written out in the README.
PY ?= .venv/bin/python

.PHONY: setup lint test bench time-to-accuracy fine-steps adjoint-micro-batches device-check \
	cde-coarse ncde-steps ncde-length ncde-cost-model ncde-time-to-accuracy
setup:
	python3 -m venv .venv && .venv/bin/pip install -c constraints.txt -e '.[dev]'
lint:
	$(PY) -m ruff check .
test:
	$(PY) -m ruff check . && $(PY) -m pytest -q -n auto --dist loadfile
# Every benchmark table under docs/benchmarks/ (about 25 minutes on a 2-core machine;
# BENCH_ARGS is passed to the time-parallel scripts, e.g. BENCH_ARGS="--pairs 9").
bench:
	$(PY) benchmarks/parareal_convergence.py
	$(PY) benchmarks/time_parallel.py $(BENCH_ARGS)
	$(PY) benchmarks/memory.py
	$(PY) benchmarks/comm_model.py $(BENCH_ARGS)
	$(PY) benchmarks/wandb_overhead.py
# Whole fits, plain NODE against parareal on 1 and 2 ranks, 3 tasks x 3 seeds (about 1 h 45 min; not in bench).
time-to-accuracy:
	$(PY) benchmarks/time_to_accuracy.py
# The plain NODE's final test metric against RK4 steps per interval, 3 seeds (about 80 minutes).
fine-steps:
	$(PY) benchmarks/fine_steps.py
# The fine adjoint's chain pipelined over parts of the batch on 2 ranks (about 6 minutes).
adjoint-micro-batches:
	$(PY) benchmarks/adjoint_micro_batches.py
# On a machine with a CUDA device: the block's equivalence checks and its speed against odeint
# there (docs/benchmarks/gpu.md); elsewhere one line and exit 0.
device-check:
	$(PY) benchmarks/device_check.py
# Parareal iterations K of the neural CDE per coarse propagator and fine step, ACSF1 and a walk (about 10 minutes).
cde-coarse:
	$(PY) benchmarks/cde_coarse.py
# Training steps of the parareal NCDE (warm start on, off) against cdeint, ACSF1 and OSULeaf (about 5 minutes).
ncde-steps:
	$(PY) benchmarks/ncde_steps.py
# The parareal NCDE against cdeint at series lengths 256..4096, 1 process and 2 ranks (about 15 minutes).
ncde-length:
	$(PY) benchmarks/ncde_length.py
# The ACSF1 NCDE modelled on P = 2..1024 ranks from costs and messages measured here (about 5 minutes).
ncde-cost-model:
	$(PY) benchmarks/ncde_cost_model.py
# Whole fits of the plain NCDE (cdeint) against parareal on 1 and 2 ranks, ACSF1 and OSULeaf, 3 seeds
# (about 80 minutes quiet; resumable: NCDE_TTA_ARGS="--workdir DIR" keeps finished fits).
ncde-time-to-accuracy:
	$(PY) benchmarks/ncde_time_to_accuracy.py $(NCDE_TTA_ARGS)
