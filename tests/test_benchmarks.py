"""The benchmarks' own logic: result and memory parsing, the message-cost fit, the profiler
parsing, and each timing script end to end at toy sizes (nothing timed is asserted)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))

import _common  # noqa: E402
import _schedule  # noqa: E402
import adjoint_micro_batches  # noqa: E402
import comm_model  # noqa: E402
import fine_steps  # noqa: E402
import memory  # noqa: E402
import parareal_convergence  # noqa: E402
import time_parallel  # noqa: E402
import time_to_accuracy  # noqa: E402
import wandb_overhead  # noqa: E402

from pnode_zoo.ode.parareal_block import PararealODEBlock  # noqa: E402
from pnode_zoo.ode.vector_fields import MLPVectorField  # noqa: E402


def test_result_line_of_a_fresh_process():
    out = "warming up\nRESULT {\"peak\": 1}\nnoise\nRESULT {\"peak\": 2, \"before\": 1}\n"
    assert _common.parse_result(out) == {"peak": 2, "before": 1}
    with pytest.raises(ValueError, match="no result line"):
        _common.parse_result("Traceback ...\n")


def test_a_child_process_emits_its_measurement_and_the_parent_gets_the_options(monkeypatch,
                                                                               capsys):
    def child(payload: dict) -> dict:
        return {"twice": 2 * payload["n"]}

    monkeypatch.setattr(sys, "argv", ["script.py", "--child", '{"n": 21}'])
    assert _common.parse_or_run_child(_common.parser("doc"), child) is None
    assert _common.parse_result(capsys.readouterr().out) == {"twice": 42}
    monkeypatch.setattr(sys, "argv", ["script.py", "--no-memory"])
    args = _common.parse_or_run_child(_common.parser("doc"), child)
    assert args.no_memory and args.child is None
    assert capsys.readouterr().out == ""


def test_memory_units():
    assert _common.max_rss_to_bytes(1000, "Linux") == 1024000  # getrusage: KiB on Linux
    assert _common.max_rss_to_bytes(1000, "Darwin") == 1000
    status = "Name:\tpython\nVmHWM:\t  900 kB\nVmRSS:\t  812 kB\nThreads:\t1\n"
    assert _common.current_rss_bytes(status) == 812 * 1024
    with pytest.raises(ValueError, match="no VmRSS"):
        _common.current_rss_bytes("Name:\tpython\n")
    # on this machine: 64 MiB touched and freed raise the peak above what was resident before
    before = _common.current_rss_bytes()
    touched = b"x" * (64 << 20)
    del touched
    assert _common.peak_rss_bytes() >= before + (60 << 20)


def test_machine_description():
    cpuinfo = "processor\t: 0\nmodel name\t: AMD EPYC 7B13\nflags\t: fpu\n"
    assert _common.cpu_model(cpuinfo) == "AMD EPYC 7B13"
    assert _common.command_line([str(ROOT / "benchmarks" / "memory.py"), "--steps", "16"]) == (
        "python benchmarks/memory.py --steps 16")
    s = _common.spread([3.0, 1.0, 2.0])
    assert s == {"median": 2.0, "min": 1.0, "max": 3.0}
    assert _common.fmt_spread(s) == "2.00 (1.00–3.00)"


def _git(repo: Path, *args: str) -> str:
    return subprocess.run(["git", "-c", "user.name=t", "-c", "user.email=t@t", *args], cwd=repo,
                          check=True, capture_output=True, text=True).stdout


@pytest.fixture
def repo(tmp_path: Path) -> Path:
    """A git repository with one commit."""
    _git(tmp_path, "init", "-q")
    (tmp_path / "a.py").write_text("x = 1\n")
    _git(tmp_path, "add", "a.py")
    _git(tmp_path, "commit", "-qm", "one")
    return tmp_path


def test_a_dirty_tree_is_named_by_the_sha256_of_its_diff(repo: Path):
    head = _git(repo, "rev-parse", "--short", "HEAD").strip()
    assert _common.tree_state(repo) == (head, None)
    (repo / "untracked.txt").write_text("not part of the tree's code\n")
    assert _common.tree_state(repo) == (head, None)
    (repo / "a.py").write_text("x = 2\n")
    commit, diff = _common.tree_state(repo)
    # the documented check: `git diff HEAD --binary | sha256sum`
    shell = subprocess.run("git diff HEAD --binary | sha256sum", shell=True, cwd=repo,
                           check=True, capture_output=True, text=True).stdout.split()[0]
    assert (commit, diff) == (head, shell)
    (repo / "a.py").write_text("x = 3\n")
    assert _common.tree_state(repo)[1] not in (None, diff)
    _git(repo, "add", "a.py")  # staged changes are uncommitted too
    assert _common.tree_state(repo)[1] is not None


@pytest.mark.parametrize("script", [adjoint_micro_batches, comm_model, fine_steps, memory,
                                    parareal_convergence, time_parallel, time_to_accuracy,
                                    wandb_overhead], ids=lambda m: m.__name__)
def test_every_benchmark_refuses_a_dirty_tree_before_measuring(script, repo, monkeypatch,
                                                               capsys):
    (repo / "a.py").write_text("x = 2\n")
    monkeypatch.setattr(_common, "ROOT", repo)
    monkeypatch.setattr(sys, "argv", [script.__file__])
    with pytest.raises(SystemExit, match="uncommitted changes.*pass --allow-dirty"):
        script.main()
    assert capsys.readouterr().out == ""  # nothing measured, nothing printed


def test_allow_dirty_records_the_diff_in_the_header(repo, monkeypatch):
    (repo / "a.py").write_text("x = 2\n")
    monkeypatch.setattr(_common, "ROOT", repo)
    env = _common.environment("1 thread", allow_dirty=True)
    diff = _common.tree_state(repo)[1]
    assert env["diff_sha256"] == diff
    assert f"with uncommitted changes (`git diff HEAD --binary` sha256 {diff[:16]})" in (
        _common.header(env))
    assert "--allow-dirty" in _common.parser(memory.__doc__).format_help()


def test_latency_and_bandwidth_fit():
    sizes = [8, 512, 32768, 2097152]
    exact = [20e-6 + n / 2e9 for n in sizes]
    comm = comm_model.fit_hockney(sizes, exact)
    assert comm.latency == pytest.approx(20e-6, rel=1e-6)
    assert comm.bandwidth == pytest.approx(2e9, rel=1e-6)
    # noise that would make the fitted latency negative: fall back to the extremes
    noisy = comm_model.fit_hockney([8, 16, 1024], [5e-6, 1e-6, 1.0e-6 + 1024 / 1e9])
    assert noisy.latency > 0 and noisy.bandwidth > 0


def test_profile_parsing_of_fake_events():
    averages = [SimpleNamespace(key="parareal/fine", cpu_time_total=2500.0, count=3),
                SimpleNamespace(key="aten::mm", cpu_time_total=9.0, count=1)]
    ranges = time_parallel.profile_ranges(averages)
    assert ranges["parareal/fine"] == {"seconds": 0.0025, "calls": 3}
    assert ranges["time_parallel/wait"] == {"seconds": 0.0, "calls": 0}
    child = SimpleNamespace(name="c10d::allreduce_")
    events = [SimpleNamespace(name="time_parallel/comm", cpu_time_total=1000.0,
                              cpu_children=[SimpleNamespace(name="aten::cat"), child]),
              SimpleNamespace(name="time_parallel/comm", cpu_time_total=500.0, cpu_children=[]),
              SimpleNamespace(name="time_parallel/comm", cpu_time_total=250.0,
                              cpu_children=[child])]
    assert time_parallel.comm_by_op(events) == {"allreduce": 0.00125, "wait for sends": 0.0005}


def test_profile_ranges_of_a_real_call_count_every_solve_and_vjp():
    # N = 4, K = 2, graphs kept: forward 2 fine solves and 4 + 3 + 2 coarse steps; backward
    # the pull-backs of the same (the unrolled gradient undoes each level)
    torch.manual_seed(0)
    block = PararealODEBlock(MLPVectorField(3, 8), 0.0, 1.0, num_slices=4, fine_steps=2,
                             max_iters=2, tol=0.0, recompute=False)
    x = torch.randn(2, 3, requires_grad=True)
    with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU]) as prof:
        block(x).sum().backward()
    ranges = time_parallel.profile_ranges(prof.key_averages())
    assert ranges["parareal/fine"]["calls"] == 2 + 2
    assert ranges["parareal/coarse"]["calls"] == 9 + 9
    assert ranges["time_parallel/comm"]["calls"] == 0
    # the profiler and the block's timers see the same solves
    assert ranges["parareal/fine"]["seconds"] > 0 and block.stats.time_fine > 0


def test_model_block_for_a_given_block():
    # the lead's entry point: per-slice costs given (no timing), K measured by running
    torch.manual_seed(0)
    block = PararealODEBlock(MLPVectorField(2, 8), 0.0, 1.0, num_slices=2, fine_steps=8,
                             tol=1e-6)
    measured = {"fine": 8.0, "fine_graph": 9.0, "fine_pull": 8.0, "coarse": 1.0,
                "coarse_graph": 1.0, "coarse_pull": 1.0, "state_bytes": 32, "param_bytes": 400}
    rows = comm_model.model_block(block, torch.randn(4, 2), comm_model.CommCosts(),
                                  ranks=[1, 2, 4, 8, 32], measured=measured)
    assert [r["P"] for r in rows] == [1, 2, 4, 8]  # 16 fine steps: no 32 slices of them
    four = rows[2]
    assert four["N"] == 4 and four["fine_steps_per_slice"] == 4
    assert four["relative_error"] < 1e-5
    costs = _schedule.SliceCosts(4.0, 1.0, state_bytes=32, param_bytes=400)
    assert four["forward"]["seconds_free"] == _schedule.modelled_time(costs, 4, 4,
                                                                      four["K"]).seconds
    assert four["forward"]["speedup_free"] == pytest.approx(16.0 / four["forward"]["seconds_free"])


def _curve(metric: str, points: list[tuple[float, float]]) -> list[dict]:
    return [{"epoch": i, "train_seconds": t, "metric_name": metric, "metric": m}
            for i, (t, m) in enumerate(points)]


def test_time_to_accuracy_targets_and_speedups():
    acc = "test/acc"
    curves = {  # two seeds; seed 0's a2 and seed 1's a1 are the faster plain runs
        "a1": [_curve(acc, [(10, 0.5), (20, 0.9)]), _curve(acc, [(8, 0.6), (16, 0.95)])],
        "a2": [_curve(acc, [(6, 0.5), (12, 0.92)]), _curve(acc, [(9, 0.7), (18, 0.96)])],
        "b": [_curve(acc, [(5, 0.93), (10, 0.94)]), _curve(acc, [(4, 0.8), (8, 0.96)])],
        "c": [_curve(acc, [(3, 0.1), (6, 0.2)]), _curve(acc, [(2, 0.99), (4, 0.99)])],
        "d": [_curve(acc, [(1, 0.5), (2, 0.6)]), _curve(acc, [(1, 0.7), (2, 0.8)])],
    }
    env = {"command": "c", "commit": "abc", "date": "now", "torch": "2", "python": "3",
           "threads": "1", "cores": 2, "cpu": "x"}
    task = time_to_accuracy.summarise("t", curves, env)
    assert task["a_threads"] == ["a2", "a1"]
    assert task["target"] == 0.92  # the worse final metric of (a)
    assert task["runs"]["a"]["times_to_target"] == [12, 16]
    assert task["runs"]["b"]["times_to_target"] == [5, 8]
    assert task["runs"]["b"]["speedup"] == {"median": 2.2, "min": 2.0, "max": 2.4}
    assert task["runs"]["c"]["times_to_target"] == [float("inf"), 2]  # never reached: inf
    assert task["runs"]["d"]["speedup"] == {"median": 0.0, "min": 0.0, "max": 0.0}
    row = time_to_accuracy.markdown({"reps": 2, "tasks": [task]}).splitlines()[6]
    assert row.startswith("| t | test/acc 0.92 | 14.0 s") and "never, test/acc 0.7, 0.00" in row
    # an error metric is reached from above
    mse = _curve("test/mse", [(1, 0.3), (2, 0.1), (3, 0.2)])
    assert time_to_accuracy.reached(mse, 0.15) == 2


def test_fine_steps_needed_steps_and_overrides():
    def row(steps, median, low, high):
        return {"steps": steps, "metric": {"median": median, "min": low, "max": high}}

    # the best median is at 8 steps; 2 steps' median lies within its seed range, 1 step's not
    rows = [row(1, 0.9, 0.8, 1.0), row(2, 0.52, 0.5, 0.6), row(8, 0.5, 0.45, 0.55)]
    assert fine_steps.needed_steps(rows, accuracy=False) == 2
    assert fine_steps.needed_steps(rows, accuracy=True) == 1  # higher is better: 1 is best
    config = {"data": {"init_args": {"dt": 0.1}}, "trainer": {"max_epochs": 100}}
    changed = fine_steps.with_overrides(config, ["--data.init_args.dt=0.5",
                                                 "--trainer.max_epochs=40"])
    assert changed == {"data": {"init_args": {"dt": 0.5}}, "trainer": {"max_epochs": 40}}
    assert config["data"]["init_args"]["dt"] == 0.1  # the original is left alone


@pytest.mark.slow
def test_fine_steps_script_bounds_and_resumes(tmp_path):
    args = ["--tasks", "lotka_volterra_sparser", "--steps", "1", "--reps", "1",
            "--workdir", str(tmp_path / "work")]
    done = _run_script("fine_steps.py", args, tmp_path)
    assert done.returncode == 0, done.stderr[-3000:]
    (task,) = json.loads((tmp_path / "fine_steps.json").read_text())["tasks"]
    assert task["needed_steps"] == 1
    bounds = {row["coarse"]: row for row in task["parareal_bound"]}
    # 4 intervals of one RK4 step: 16 evaluations serially; a coarse step equal to the fine
    # one makes parareal exact after one iteration
    assert {row["serial_nfe"] for row in bounds.values()} == {16}
    assert bounds["rk4"]["K"] == 1
    assert all(1 <= row["K"] <= row["N"] == 4 for row in bounds.values())
    # a rerun finds the fit recorded and trains nothing again
    first = (tmp_path / "work" / "fits.jsonl").read_text()
    again = _run_script("fine_steps.py", args, tmp_path)
    assert again.returncode == 0, again.stderr[-3000:]
    assert (tmp_path / "work" / "fits.jsonl").read_text() == first
    assert "run directory" not in again.stderr


@pytest.mark.slow
def test_peak_memory_of_a_fresh_process():
    setup = time_parallel.Setup(dim=4, batch=2, hidden=8, fine_steps=2)
    out = _common.run_fresh(time_parallel.SCRIPT, {
        "setup": {**setup.__dict__}, "case": "train", "kind": "odeint"}, timeout=300)
    # bytes, not KiB or MiB: torch alone keeps more than 64 MiB resident, and this tiny call
    # stays far below 4 GiB
    assert 64 << 20 < out["before"] <= out["peak"] < 4 << 30


def _run_script(name: str, args: list[str], out_dir: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "PNODE_BENCH_OUT": str(out_dir), "PYTHONPATH": str(ROOT)}
    # the working tree may hold the change under test: --allow-dirty
    return subprocess.run([sys.executable, str(ROOT / "benchmarks" / name), *args,
                           "--allow-dirty"], cwd=ROOT,
                          env=env, capture_output=True, text=True, timeout=900)


@pytest.mark.slow
def test_time_parallel_script_at_toy_size(tmp_path):
    done = _run_script("time_parallel.py", [
        "--dims", "4", "--batch", "2", "--hidden", "8", "--fine-steps", "2", "--pairs", "1",
        "--number", "1", "--no-memory"], tmp_path)
    assert done.returncode == 0, done.stderr[-3000:]
    result = json.loads((tmp_path / "time_parallel.json").read_text())
    train = result["results"]["4"]["2"]["train"]
    assert set(train["speedup"]) == {"parareal_kept", "parareal_recompute"}
    assert train["accuracy"]["parareal_kept"]["gradient"] < 1e-4
    assert [r["stats"]["forward_iters"] for r in train["per_rank"]["parareal_kept"]] == [1, 1]
    text = (tmp_path / "time_parallel.md").read_text()
    assert "## State 4, 2 fine steps per slice" in text
    assert "| 4 | 2 | " in text  # the summary row


@pytest.mark.slow
def test_comm_model_script_at_toy_size(tmp_path):
    done = _run_script("comm_model.py", [
        "--pairs", "1", "--number", "1", "--dim", "4", "--batch", "2", "--steps", "8",
        "--scaling-steps", "16", "--max-ranks", "8"], tmp_path)
    assert done.returncode == 0, done.stderr[-3000:]
    result = json.loads((tmp_path / "comm_model.json").read_text())
    assert [r["P"] for r in result["scaling"]] == [1, 2, 4, 8]
    assert result["comm"]["latency"] > 0
    assert (tmp_path / "comm_model.png").exists()
