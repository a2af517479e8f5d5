"""benchmarks/cde_coarse.py end to end at a toy size: its files and their consistency."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.slow
def test_cde_coarse_script_at_toy_size(tmp_path):
    env = {**os.environ, "PNODE_BENCH_OUT": str(tmp_path), "PYTHONPATH": str(ROOT)}
    args = ["--seeds", "1", "--batch", "2", "--tasks", "walk3:0.1:1", "--allow-dirty"]
    done = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "cde_coarse.py"), *args],
                          cwd=ROOT, env=env, capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, done.stderr[-3000:]
    result = json.loads((tmp_path / "cde_coarse.json").read_text())
    rows = result["rows"]
    assert {(r["coarse_field"], r["coarse"]) for r in rows} == {
        (f, m) for f in ("log_ode", "increment") for m in ("euler", "rk4")}
    for row in rows:
        assert 1 <= row["k_cold"] <= result["num_slices"] and row["k_warm"] <= row["k_cold"]
        # converged to tol means within a few tol of the serial solve (the measured truth)
        assert row["error_cold"] <= 10 * result["tol"]
        assert row["errors_at_k"][0] > row["errors_at_k"][2]
    text = (tmp_path / "cde_coarse.md").read_text()
    assert "| walk3 | 0.1 | 1 | log_ode | euler |" in text
    assert "Command: `python benchmarks/cde_coarse.py" in text
