"""benchmarks/ncde_length.py and ncde_cost_model.py: the warm-start model against a hand-computed
schedule, the dirty-tree refusal, and both scripts end to end at toy sizes (nothing timed is
asserted)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))

import _common  # noqa: E402
import ncde_cost_model  # noqa: E402
import ncde_length  # noqa: E402
from _schedule import CommCosts, SliceCosts  # noqa: E402


def test_warm_start_model_by_hand():
    # N = P = 4, K = 1, F = 1, G = 0.1, latency 0.01, messages of 0 bytes. Warm start: each
    # rank's coarse step of its own chunk (0.1), the non-finite all-reduce (recursive
    # doubling: 2 x 2 rounds, 0.04); iteration 1: every rank's F (1), then ranks 1..3 each wait
    # for the previous one's boundary (0.01) and take a coarse step (0.1): 0.33, the residual's
    # all-reduce (0.04); every boundary all-gathered (3 rounds, 0.03).
    costs = SliceCosts(fine=1.0, coarse=0.1)
    comm = CommCosts(latency=0.01)
    by_hand = 0.1 + 0.04 + 1.0 + 0.33 + 0.04 + 0.03
    assert ncde_cost_model.warm_seconds(costs, 4, 4, 1, comm) == pytest.approx(by_hand)
    # the cold start pays the sweep instead: 4 coarse steps and 3 messages (0.43), its
    # all-reduce (0.04), and only U_N at the end (a broadcast, 2 rounds: 0.02)
    cold = ncde_cost_model.seconds(costs, 4, 4, 1, comm, train=False, warm=False)
    assert cold == pytest.approx(0.43 + 0.04 + 1.0 + 0.33 + 0.04 + 0.02)
    # on one process the batched start costs what the sweep does: N coarse steps
    assert ncde_cost_model.warm_seconds(costs, 4, 1, 1) == pytest.approx(4 * 0.1 + 4 + 3 * 0.1)


def test_chunks_and_series():
    assert [ncde_length.default_slices(L) for L in ncde_length.LENGTHS] == [8, 16, 16, 32, 32]
    x = ncde_length.walk(3, 64)
    assert x.shape == (3, 1, 65) and bool((x[..., -1] == x[..., -2]).all())
    assert x[..., :64].mean(-1).abs().max() < 1e-5 and (x[..., :64].std(-1) - 1).abs().max() < 1e-5
    padded = ncde_cost_model.padded(x, 70)
    assert padded.shape == (3, 1, 71) and bool((padded[..., 64:] == x[..., -1:]).all())


@pytest.mark.parametrize("script", [ncde_length, ncde_cost_model], ids=lambda m: m.__name__)
def test_refuses_a_dirty_tree_before_measuring(script, tmp_path, monkeypatch, capsys):
    git = ["git", "-c", "user.name=t", "-c", "user.email=t@t"]
    subprocess.run([*git, "init", "-q"], cwd=tmp_path, check=True)
    (tmp_path / "a.py").write_text("x = 1\n")
    subprocess.run([*git, "add", "a.py"], cwd=tmp_path, check=True)
    subprocess.run([*git, "commit", "-qm", "one"], cwd=tmp_path, check=True)
    (tmp_path / "a.py").write_text("x = 2\n")
    (tmp_path / "configs" / "acsf1").mkdir(parents=True)
    (tmp_path / "configs" / "acsf1" / "ncde_parareal.yaml").write_text("{}\n")
    monkeypatch.setattr(_common, "ROOT", tmp_path)
    monkeypatch.setattr(sys, "argv", [script.__file__])
    with pytest.raises(SystemExit, match="uncommitted changes.*pass --allow-dirty"):
        script.main()
    assert capsys.readouterr().out == ""


def _run(name: str, args: list[str], out_dir: Path) -> dict:
    env = {**os.environ, "PNODE_BENCH_OUT": str(out_dir), "PYTHONPATH": str(ROOT)}
    done = subprocess.run([sys.executable, str(ROOT / "benchmarks" / name), *args,
                           "--allow-dirty"], cwd=ROOT, env=env, capture_output=True, text=True,
                          timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads((out_dir / name.replace(".py", ".json")).read_text())


@pytest.mark.slow
def test_ncde_length_script_at_toy_size(tmp_path):
    result = _run("ncde_length.py", ["--lengths", "16", "--slices", "4", "--pairs", "1",
                                     "--no-memory"], tmp_path)
    assert list(result["results"]) == ["16"]
    for row in result["results"].values():
        assert row["N"] == 4
        for case in ("forward", "train"):
            c = row[case]
            assert set(c["speedup"]) == set(ncde_length.PARAREAL)
            assert all(1 <= k["max"] <= 4 for k in c["K"].values())
            # every candidate against cdeint at the same weights: the forward within tol (a
            # weight step of 3e-3 apart would show as a larger difference)
            bound = result["tol"] if case == "forward" else 1e-2
            assert set(c["errors"]) == set(ncde_length.PARAREAL)
            assert max(c["errors"].values()) < bound
    text = (tmp_path / "ncde_length.md").read_text()
    assert "| 16 | 4 | " in text and "## Training step" in text
    assert (tmp_path / "ncde_length.png").exists()


@pytest.mark.slow
def test_ncde_cost_model_script_at_toy_size(tmp_path):
    result = _run("ncde_cost_model.py", ["--length", "21", "--pairs", "1", "--number", "1",
                                         "--max-ranks", "4"], tmp_path)
    assert result["comm"]["latency"] > 0
    rows = result["scaling"]
    assert [(r["P"], r["steps"]) for r in rows] == [(2, 20), (4, 20)]
    for r in rows:
        assert 1 <= r["K_warm"] <= r["N"] and 1 <= r["K_cold"] <= r["N"]
        assert max(r["error_cold"], r["error_warm"]) < result["spec"]["tol"]
        assert r["forward_warm"]["speedup_free"] >= r["forward_warm"]["speedup_comm"] > 0
    assert {(c["case"], c["start"]) for c in result["calibration"]["rows"]} == {
        (case, start) for case in ("forward", "train") for start in ("cold", "warm")}
    assert "## Scaling (modelled)" in (tmp_path / "ncde_cost_model.md").read_text()
