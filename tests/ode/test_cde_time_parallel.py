"""NeuralCDEBlock on a 2-rank time group equals the one-process block: output and gradients of
every backward mode, and the warm start's outputs, iterations and hit rates; and the zoo's
``ncde_parareal`` with ``readout: boundaries`` its logits and gradients (float64, gloo)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from cde_worker import CASES, READOUT_CASES, SLICES

WORKER = Path(__file__).with_name("cde_worker.py")
TOLERANCE = 1e-10


@pytest.mark.slow
def test_two_ranks_equal_one_process(tmp_path: Path) -> None:
    out = tmp_path / "cde.json"
    subprocess.run([sys.executable, str(WORKER), str(out)], cwd=Path(__file__).parents[2],
                   check=True, timeout=600)
    ranks = json.loads(out.read_text())
    for rank in ranks:
        assert all(rank[case] <= TOLERANCE for case in CASES), rank
        warm = rank["warm"]
        assert warm["max_difference"] <= TOLERANCE, warm
        assert all(grouped == single for grouped, single in warm["iterations"]), warm
        assert warm["hit_rates"] == [[0.0, 0.0], [1.0, 1.0], [0.5, 0.5]]
        assert warm["iterations"][1][0] < warm["iterations"][0][0]
        assert warm["cached_rows"] == SLICES // 2  # its own chunks' jumps only


def test_boundaries_readout_on_two_ranks_equals_one_process(tmp_path: Path) -> None:
    out = tmp_path / "readout.json"
    subprocess.run([sys.executable, str(WORKER), str(out), "readout"],
                   cwd=Path(__file__).parents[2], check=True, timeout=300)
    for rank in json.loads(out.read_text()):
        assert all(rank[case] <= TOLERANCE for case in READOUT_CASES), rank
        # solved on the time group; the warm case's second call started from the cache
        assert [rank[f"{case}_stats"][0] for case in READOUT_CASES] == [2, 2, 2]
        assert rank["unrolled_warm_stats"][1] == 1.0
