"""Time-parallel forward and gradients equal the one-process reference (float64, gloo, CPU)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from clitools import REPO, TIMEOUT
from equivalence_worker import CASES  # tests/distributed is on sys.path (rootdir imports)

WORKER = Path(__file__).with_name("equivalence_worker.py")
TOLERANCE = 1e-10


def _run(world: int, specs: list[str], tmp_path: Path) -> dict[str, float]:
    out = tmp_path / "errors.json"
    subprocess.run([sys.executable, str(WORKER), str(world), str(out), *specs], cwd=REPO,
                   check=True, timeout=TIMEOUT)
    return json.loads(out.read_text())


@pytest.mark.slow
def test_two_ranks_every_case(tmp_path: Path) -> None:
    errors = _run(2, [f"2:{case}" for case in CASES], tmp_path)
    assert set(errors) == {f"2:{case}" for case in CASES}
    assert all(e <= TOLERANCE for e in errors.values()), errors


@pytest.mark.slow
def test_four_ranks_time_and_data_groups(tmp_path: Path) -> None:
    specs = ["4:shared_fine_adjoint", "4:shared_parareal_adjoint",
             "4:per_slice_parareal_adjoint_trajectory", "4:shared_inexact",
             "4:shared_unrolled_k1", "4:per_slice_unrolled_k2_trajectory",
             "4:shared_unrolled_tol_vmap", "2:shared_parareal_adjoint",
             "2:per_slice_fine_adjoint_trajectory", "2:per_slice_unrolled_kn",
             "4:per_slice_unrolled_kept_graphs_trajectory", "4:shared_fine_adjoint_micro_batches",
             "2:per_slice_fine_adjoint_trajectory_micro_batches"]
    errors = _run(4, specs, tmp_path)
    assert set(errors) == set(specs)
    assert all(e <= TOLERANCE for e in errors.values()), errors
