"""benchmarks/device_check.py: its one line without a CUDA device, and its checks and table on
the CPU at toy size (the same code a GPU runs, with gloo for NCCL and wall clocks for events)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]


def _run(args: list[str], out_dir: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "PNODE_BENCH_OUT": str(out_dir), "PYTHONPATH": str(ROOT)}
    return subprocess.run([sys.executable, str(ROOT / "benchmarks" / "device_check.py"), *args],
                          cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has a CUDA device")
def test_without_a_device_one_line_and_exit_0(tmp_path):
    done = _run([], tmp_path)
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.strip().splitlines() == [
        "device_check: no CUDA device on this machine; nothing checked, nothing written."]
    assert not list(tmp_path.iterdir())


@pytest.mark.slow
def test_checks_and_table_on_the_cpu(tmp_path):
    done = _run(["--device", "cpu", "--slices", "2", "--dims", "4", "--batch", "2",
                 "--rounds", "1", "--allow-dirty"], tmp_path)
    assert done.returncode == 0, done.stderr[-3000:]
    result = json.loads((tmp_path / "gpu.json").read_text())
    checks = result["equivalence"]
    # every backward mode, without a time group and with a one-rank one
    assert sorted((c["backward"], c["time_group"]) for c in checks) == sorted(
        (mode, group) for mode in ("unrolled", "fine_adjoint", "parareal_adjoint")
        for group in (False, True))
    assert max(max(c["output"], c["gradient"]) for c in checks) <= 1e-10
    assert [(r["case"], r["slices"], r["dim"]) for r in result["speed"]] == [
        ("forward", 2, 4), ("train", 2, 4)]
    # K = 2 of N = 2 slices is the serial fine solve: the same output as odeint to rounding
    assert all(r["error"] < 1e-5 for r in result["speed"])
    assert "| train | 2 | 4 |" in (tmp_path / "gpu.md").read_text()
