"""What every benchmark shares: the machine and commit it ran on, timing loops and summaries of
alternating measurements, result files, peak memory in a fresh process, and 2-rank gloo worlds.

Benchmarks run as scripts from the repository root (``python benchmarks/NAME.py``), so this
module is imported as ``_common`` (the script's folder is on ``sys.path``) and puts the working
tree first on ``sys.path``: the benchmarks measure the checkout they sit in.
"""

from __future__ import annotations

import argparse
import copy
import hashlib
import json
import os
import platform
import resource
import shlex
import socket
import statistics
import subprocess
import sys
import tempfile
from collections.abc import Callable, Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]
#: where results go; PNODE_BENCH_OUT moves them (e.g. for a trial run at toy sizes)
OUT_DIR = Path(os.environ.get("PNODE_BENCH_OUT", ROOT / "docs" / "benchmarks"))
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

#: prefix of the one line of a fresh process's stdout that carries its result
RESULT_PREFIX = "RESULT "


def parser(description: str) -> argparse.ArgumentParser:
    """The script's argument parser, with ``--allow-dirty`` (see ``environment``).

    Args:
        description: the script's docstring; its first line is the parser's description.
    """
    result = argparse.ArgumentParser(description=description.splitlines()[0])
    result.add_argument("--allow-dirty", action="store_true",
                        help="measure a working tree with uncommitted changes (the header then "
                        "records the sha256 of `git diff HEAD --binary`)")
    return result


def tree_state(root: Path) -> tuple[str, str | None]:
    """The commit checked out at ``root`` (short hash, "unknown" outside git) and the sha256 of
    ``git diff HEAD --binary`` when tracked files differ from it (None for a clean tree).

    Args:
        root: a folder of the working tree.
    """
    def git(*args: str) -> bytes:
        try:
            return subprocess.run(["git", *args], cwd=root, capture_output=True,
                                  check=True).stdout
        except (subprocess.CalledProcessError, FileNotFoundError):
            return b""

    commit = git("rev-parse", "--short", "HEAD").decode().strip() or "unknown"
    diff = git("diff", "HEAD", "--binary")
    return commit, hashlib.sha256(diff).hexdigest() if diff else None


def environment(threads: str, allow_dirty: bool = False) -> dict[str, str | int | None]:
    """The run's command, commit, library versions and machine, for the tables' headers.

    Call it before measuring: a tree with uncommitted changes is refused (the table could not
    name the code it measured) unless ``allow_dirty``, and then the diff's sha256 is recorded.

    Args:
        threads: how the run uses threads and processes, in words.
        allow_dirty: measure a dirty tree (the scripts' ``--allow-dirty``).
    """
    import torch

    commit, diff = tree_state(ROOT)
    if diff is not None and not allow_dirty:
        raise SystemExit("error: the working tree has uncommitted changes, so the table could "
                         "not name the code it measured; commit them, or pass --allow-dirty to "
                         "record the diff's sha256 in the table's header")
    return {
        "command": command_line(),
        "commit": commit if diff is None else
        f"{commit} with uncommitted changes (`git diff HEAD --binary` sha256 {diff[:16]})",
        "diff_sha256": diff,
        "date": datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "torch": torch.__version__,
        "python": platform.python_version(),
        "threads": threads,
        "cores": os.cpu_count() or 0,
        "cpu": cpu_model(),
    }


def command_line(argv: Sequence[str] | None = None) -> str:
    """The command that ran this script, from the repository root."""
    argv = list(sys.argv if argv is None else argv)
    script = Path(argv[0]).resolve()
    if script.is_relative_to(ROOT):
        argv[0] = str(script.relative_to(ROOT))
    return shlex.join(["python", *argv])


def cpu_model(cpuinfo: str | None = None) -> str:
    """The CPU's model name (from /proc/cpuinfo on Linux).

    Args:
        cpuinfo: the text of /proc/cpuinfo (None: read it).
    """
    if cpuinfo is None:
        path = Path("/proc/cpuinfo")
        cpuinfo = path.read_text() if path.exists() else ""
    for line in cpuinfo.splitlines():
        if line.startswith("model name"):
            return line.split(":", 1)[1].strip()
    return platform.processor() or "unknown"


def header(env: dict) -> str:
    """The markdown paragraph that says how a table was made."""
    return (
        f"Command: `{env['command']}`; commit {env['commit']}, {env['date']}; torch "
        f"{env['torch']}, Python {env['python']}; {env['threads']}; machine: {env['cores']} "
        f"cores, {env['cpu']}."
    )


def spread(values: Sequence[float]) -> dict[str, float]:
    """Median, min and max of repeated measurements (of ratios, or of seconds)."""
    return {"median": statistics.median(values), "min": min(values), "max": max(values)}


def fmt_spread(s: dict[str, float], digits: int = 2) -> str:
    """``median (min–max)``."""
    return f"{s['median']:.{digits}f} ({s['min']:.{digits}f}–{s['max']:.{digits}f})"


def write_results(name: str, result: dict, markdown: str) -> Path:
    """docs/benchmarks/NAME.json and NAME.md; returns the markdown's path."""
    OUT_DIR.mkdir(parents=True, exist_ok=True)
    (OUT_DIR / f"{name}.json").write_text(json.dumps(result, indent=1) + "\n")
    path = OUT_DIR / f"{name}.md"
    path.write_text(markdown)
    return path


def previous_tasks(name: str, reps: int) -> dict[str, dict]:
    """The tasks of the last written NAME.json with as many repetitions, by task name (none if
    absent), each with the environment it was measured in: a rerun of some tasks keeps the
    others' results.

    Args:
        name: the benchmark's result name (``docs/benchmarks/NAME.json``).
        reps: repetitions of the new run; results with another count are not kept.
    """
    path = OUT_DIR / f"{name}.json"
    last = json.loads(path.read_text()) if path.exists() else {}
    if last.get("reps") != reps:
        return {}
    return {task["task"]: {"environment": last["environment"], **task} for task in last["tasks"]}


def with_overrides(config: dict, overrides: Sequence[str]) -> dict:
    """A parsed YAML config with ``--a.b.c=value`` command-line overrides merged into it (the
    CLI would replace a dict-valued key such as ``arch_args.parareal`` whole).

    Args:
        config: the parsed config (not modified).
        overrides: ``--dotted.key=yaml-value`` strings.
    """
    config = copy.deepcopy(config)
    for override in overrides:
        keys, value = override.removeprefix("--").split("=", 1)
        *parents, last = keys.split(".")
        node = config
        for key in parents:
            node = node.setdefault(key, {})
        node[last] = yaml.safe_load(value)
    return config


def save_figure(fig, axes, path: Path) -> None:
    """Grid and legend on every axis, tight layout, PNG at 120 dpi; closes the figure."""
    import matplotlib.pyplot as plt

    for ax in axes:
        ax.grid(True, which="both", alpha=0.3)
        ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def peak_rss_bytes() -> int:
    """This process's peak resident memory so far (``getrusage`` max RSS), in bytes."""
    return max_rss_to_bytes(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss)


def max_rss_to_bytes(ru_maxrss: int, system: str | None = None) -> int:
    """``ru_maxrss`` in bytes: Linux reports KiB, macOS bytes.

    Args:
        ru_maxrss: the value ``getrusage`` gave.
        system: ``platform.system()`` of the machine that gave it (None: this one).
    """
    return ru_maxrss if (system or platform.system()) == "Darwin" else ru_maxrss * 1024


def current_rss_bytes(status: str | None = None) -> int:
    """This process's resident memory now (VmRSS of /proc/self/status), in bytes.

    Args:
        status: the text of /proc/self/status (None: read it).
    """
    if status is None:
        status = Path("/proc/self/status").read_text()
    for line in status.splitlines():
        if line.startswith("VmRSS:"):
            value, unit = line.split()[1:3]
            if unit != "kB":
                raise ValueError(f"unexpected VmRSS unit {unit!r}")
            return int(value) * 1024
    raise ValueError("no VmRSS line in /proc/self/status")


def emit(result: dict) -> None:
    """Hand a fresh process's result to its parent (one line of stdout)."""
    print(RESULT_PREFIX + json.dumps(result), flush=True)


def parse_result(stdout: str) -> dict:
    """The result a fresh process handed back with ``emit`` (the last such line)."""
    lines = [line for line in stdout.splitlines() if line.startswith(RESULT_PREFIX)]
    if not lines:
        raise ValueError("the process printed no result line")
    return json.loads(lines[-1][len(RESULT_PREFIX):])


def run_fresh(script: Path, payload: dict, timeout: float = 1800.0) -> dict:
    """Run ``script --child PAYLOAD`` in a new interpreter and return what it emitted.

    A peak RSS is a process's high-water mark: every memory figure needs a process of its own.

    Args:
        script: the benchmark script, which must answer ``--child JSON``.
        payload: what to measure, as JSON-able data.
        timeout: seconds before the child is killed.
    """
    done = subprocess.run(
        [sys.executable, str(script), "--child", json.dumps(payload)],
        capture_output=True, text=True, timeout=timeout, cwd=ROOT,
    )
    if done.returncode:
        raise RuntimeError(
            f"{script.name} --child {json.dumps(payload)} failed ({done.returncode}):\n"
            f"{done.stderr[-3000:]}"
        )
    return parse_result(done.stdout)


def parse_or_run_child(parser: argparse.ArgumentParser,
                       child: Callable[[dict], dict]) -> argparse.Namespace | None:
    """Parse the command line of a script with peak-RSS processes: adds ``--no-memory`` (skip
    them) and the hidden ``--child JSON`` that ``run_fresh`` passes. In such a child, emit
    ``child(payload)`` and return None (the script then stops); else the parsed arguments.

    Args:
        parser: the script's parser, its own options added.
        child: the measurement of one fresh process, from its payload.
    """
    parser.add_argument("--no-memory", action="store_true", help="skip the peak-RSS processes")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        emit(child(json.loads(args.child)))
        return None
    return args


def fit_curve(
    config: str, args: Sequence[str], threads: int, curve: Path, workdir: Path
) -> list[dict]:
    """One whole ``python -m pnode_zoo fit`` of ``config`` in a subprocess, without validation
    or loggers, and its learning curve: one row per epoch from ``learning_curve.LearningCurve``
    (the test metric after the epoch, the training seconds so far).

    Args:
        config: the config file, relative to the repository root.
        args: further command-line arguments (seed, overrides, strategy).
        threads: OMP_NUM_THREADS of the fit (per process).
        curve: JSON-lines file the callback writes (replaced).
        workdir: the fit's ``default_root_dir`` lies under it.
    """
    curve.unlink(missing_ok=True)
    callback = json.dumps({"class_path": "benchmarks.learning_curve.LearningCurve",
                           "init_args": {"path": str(curve)}})
    command = [
        sys.executable, "-m", "pnode_zoo", "fit", "--config", config, "--trainer.logger=false",
        "--trainer.limit_val_batches=0", "--trainer.enable_progress_bar=false",
        f"--trainer.default_root_dir={workdir / 'runs'}", f"--trainer.callbacks+={callback}",
        *args,
    ]
    env = {**os.environ, "OMP_NUM_THREADS": str(threads), "PYTHONPATH": str(ROOT),
           "WANDB_MODE": "disabled"}
    subprocess.run(command, cwd=ROOT, env=env, check=True, stdout=subprocess.DEVNULL)
    return [json.loads(line) for line in curve.read_text().splitlines()]


def timed(fn: Callable[[], object], number: int, threads: int = 1) -> float:
    """Seconds per call of ``fn``: ``torch.utils.benchmark.Timer`` over ``number`` calls (after
    its own 2 warm-up calls) with ``threads`` torch threads. The count is fixed, so ranks that
    time a collective call together stay in step.

    Args:
        fn: the call to time.
        number: timed calls.
        threads: torch threads while timing.
    """
    from torch.utils.benchmark import Timer

    return Timer(stmt="fn()", globals={"fn": fn}, num_threads=threads).timeit(number).mean


def run_ranks(
    fn: Callable[..., object],
    args: tuple = (),
    ranks: int = 2,
    timeout_s: float = 3600.0,
    start_method: str = "fork",
) -> list:
    """Run ``fn(rank, *args)`` on ``ranks`` processes joined in a gloo world (1 torch thread
    each); returns what each rank returned (JSON-able), in rank order.

    Args:
        fn: the work of one rank (a module-level function for ``"spawn"``).
        args: its further arguments.
        ranks: world size.
        timeout_s: collective timeout of the world.
        start_method: ``"fork"`` (fast, shares the imports) or ``"spawn"`` (fresh
            interpreters: what a memory figure needs to compare with a fresh process).
    """
    import torch.multiprocessing as mp

    with tempfile.TemporaryDirectory() as tmp:
        mp.start_processes(_rank_main, (fn, args, ranks, free_port(), tmp, timeout_s),
                           nprocs=ranks, start_method=start_method)
        return [json.loads(Path(tmp, f"{rank}.json").read_text()) for rank in range(ranks)]


def _rank_main(rank: int, fn, args, ranks, port, tmp, timeout_s) -> None:
    import torch
    import torch.distributed as dist

    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank,
                            world_size=ranks, timeout=timedelta(seconds=timeout_s))
    try:
        Path(tmp, f"{rank}.json").write_text(json.dumps(fn(rank, *args)))
    finally:
        dist.destroy_process_group()


def free_port() -> int:
    """A TCP port on 127.0.0.1 that is free now (for a process group's rendezvous)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def mib(nbytes: float) -> str:
    return f"{nbytes / 2**20:.1f}"
