"""Time to accuracy of the neural CDE: plain ``torchcde.cdeint`` against parareal, 1 and 2 ranks.

Run from the repository root:

    python benchmarks/ncde_time_to_accuracy.py [--tasks acsf1 osuleaf] [--reps 3]
        [--workdir DIR]

For each task (``configs/<task>/ncde.yaml`` and ``ncde_parareal.yaml``, at their
``max_epochs``, which must agree) and each repetition r (seed r), in this order:
  a1: the plain NCDE (``torchcde.cdeint``), one process, 1 thread;
  a2: the same with 2 threads (repetition 0 only: the faster of a1 and a2 there, by training
      seconds, is the thread count (a) uses for the other repetitions; the table says which);
  b:  the parareal NCDE (tol 1e-3, warm start on), one process, 2 threads;
  c:  the same with ``--trainer.strategy=time_parallel`` on 2 ranks x 1 thread;
  r:  the zoo's series ResNet (``configs/<task>/resnet.yaml``, its 100 epochs, 2 threads),
      repetition 0 only, for its final test accuracy.
Every fit runs without validation; after each epoch the ``LearningCurve`` callback evaluates
the test split (excluded from the timing). The target of a task is (a)'s final test accuracy,
the worst over the repetitions (so it lies within (a)'s seed spread); each run's time to
accuracy is its training time until its test accuracy first reaches the target. Reported:
medians over repetitions, speedups against (a) with min and max, final accuracies beside the
ResNet's and published figures (``PUBLISHED``), and for (b) and (c) the forward's K over
training (median, max) and the warm-start cache's hit rate (``iterations``). Nothing is tuned
on the test split: the configs' settings were chosen on the validation split (see their header
comments).

Sizing: the first end-to-end run took 78 minutes on this 2-core machine, quiet, for both tasks
and 3 repetitions at the configs' 20 epochs (ACSF1 about 55: a plain fit about 7 minutes with
the test split evaluated after every epoch, a parareal one about 2.5, the ResNet's 100 epochs
about 4; OSULeaf about 23). Finished fits are recorded in ``--workdir``'s ``fits.jsonl``
and not trained again, so an interrupted run resumes where it stopped. Writes
docs/benchmarks/ncde_time_to_accuracy.{json,md,png}; the tasks of the last run that ``--tasks``
leaves out keep their results (each says when and where it was measured).
"""

from __future__ import annotations

import json
import statistics
import tempfile
from pathlib import Path

import _common
import yaml
from _common import OUT_DIR, ROOT, fit_curve, fmt_spread, header, previous_tasks, spread
from time_to_accuracy import TWO_RANKS, plot, reached

NAME = "ncde_time_to_accuracy"
TASKS = ("acsf1", "osuleaf")
RUNS = {  # name: (config, threads per process, extra arguments)
    "a1": ("ncde", 1, []),
    "a2": ("ncde", 2, []),
    "b": ("ncde_parareal", 2, []),
    "c": ("ncde_parareal", 1, TWO_RANKS),
    "r": ("resnet", 2, []),
}
LABELS = {"a": "(a) plain NCDE (cdeint)", "b": "(b) parareal, 1 process",
          "c": "(c) parareal, 2 ranks"}
#: Published test accuracies of the ResNet of Wang et al. 2017 on these sets: the five runs of
#: Ismail Fawaz et al. 2019 ("Deep learning for time series classification: a review", Data
#: Min. Knowl. Disc. 33), as their companion repository lists them (github.com/hfawaz/dl-4-tsc,
#: results/results-ucr-128.csv, iterations 0-4, read for this table in December 2026).
PUBLISHED_SOURCE = ("Ismail Fawaz et al. 2019, 'Deep learning for time series classification: a "
                    "review', Data Min. Knowl. Disc. 33: the ResNet of Wang et al. 2017, five "
                    "runs on the official split (results/results-ucr-128.csv of "
                    "github.com/hfawaz/dl-4-tsc)")
PUBLISHED = {
    "acsf1": [0.93, 0.92, 0.93, 0.93, 0.87],
    "osuleaf": [0.9793388429752066, 0.987603305785124, 0.9710743801652892, 0.9793388429752066,
                0.9834710743801652],
}


def config_epochs(task: str) -> int:
    """The NCDE configs' ``trainer.max_epochs`` of ``task`` (plain and parareal must agree)."""
    epochs = {yaml.safe_load((ROOT / f"configs/{task}/{config}.yaml").read_text())["trainer"][
        "max_epochs"] for config in ("ncde", "ncde_parareal")}
    if len(epochs) != 1:
        raise SystemExit(f"configs/{task}: ncde.yaml and ncde_parareal.yaml train for different "
                         f"max_epochs ({sorted(epochs)}); make them equal")
    return epochs.pop()


def run_fit(task: str, run: str, seed: int, epochs: int | None, workdir: Path) -> list[dict]:
    """One fit's learning curve, ``epochs`` epochs (None: the config's); a fit already recorded
    in ``workdir/fits.jsonl`` (by an interrupted run) is read back, not trained again."""
    done = workdir / "fits.jsonl"
    key = {"task": task, "run": run, "seed": seed, "epochs": epochs}
    for line in done.read_text().splitlines() if done.exists() else []:
        row = json.loads(line)
        if {name: row[name] for name in key} == key:
            return row["curve"]
    config, threads, extra = RUNS[run]
    args = [f"--seed_everything={seed}", *extra]
    if epochs is not None:
        args.append(f"--trainer.max_epochs={epochs}")
    root = workdir / f"{task}-{run}-{seed}"
    curve = fit_curve(f"configs/{task}/{config}.yaml", args, threads, root / "curve.jsonl", root)
    with done.open("a") as file:
        file.write(json.dumps({**key, "curve": curve}) + "\n")
    return curve


def faster_plain(curves: dict[str, dict[int, list[dict]]]) -> str:
    """a1 or a2, whichever trained repetition 0 in fewer seconds."""
    return min(("a1", "a2"), key=lambda run: curves[run][0][-1]["train_seconds"])


def summarise(task: str, curves: dict[str, dict[int, list[dict]]], epochs: int,
              env: dict) -> dict:
    """Target, times to it, final accuracies and speedups of one task; ``curves[run][seed]``."""
    faster = faster_plain(curves)
    seeds = sorted(curves["b"])
    plain = {seed: curves[faster][seed] for seed in seeds}
    finals = [plain[seed][-1]["metric"] for seed in seeds]
    target = min(finals)
    rows = {}
    for run, per_seed in {"a": plain, "b": curves["b"], "c": curves["c"]}.items():
        times = [reached(per_seed[seed], target) for seed in seeds]
        rows[run] = {"times_to_target": times,
                     "time_to_target_median": statistics.median(times),
                     "total_train_seconds_median": statistics.median(
                         per_seed[seed][-1]["train_seconds"] for seed in seeds),
                     "final_metrics": [per_seed[seed][-1]["metric"] for seed in seeds],
                     "final_metric_median": statistics.median(
                         per_seed[seed][-1]["metric"] for seed in seeds)}
    for run in ("b", "c"):
        rows[run]["speedup"] = spread([a / x for a, x in zip(
            rows["a"]["times_to_target"], rows[run]["times_to_target"], strict=True)])
        rows[run].update(iterations([curves[run][seed] for seed in seeds]))
    resnet = [curve[-1]["metric"] for curve in curves["r"].values()]
    return {"task": task, "environment": env, "epochs": epochs,
            "resnet_epochs": len(curves["r"][0]), "target": target,
            "a_threads": int(faster[1]),
            "a1_a2_seconds": [curves[run][0][-1]["train_seconds"] for run in ("a1", "a2")],
            "runs": rows, "resnet_final_metrics": resnet,
            "resnet_final_metric_median": statistics.median(resnet),
            "published_resnet": spread(PUBLISHED[task]),
            "curves": {"a": [plain[s] for s in seeds], "b": [curves["b"][s] for s in seeds],
                       "c": [curves["c"][s] for s in seeds]}}


def iterations(curves: list[list[dict]]) -> dict:
    """The parareal runs' forward K over training and cache hit rate, from the learning
    curves' rows (``LearningCurve``): "forward_iters_median", the median over the seeds of the
    median over the epochs of each epoch's median K; "forward_iters_max", the largest K of any
    training call; "cache_hit_rate", the median over the seeds of the mean over the epochs.
    Empty (or without the hit rate) where the rows lack them, as in fits recorded before the
    curves counted K."""
    epochs = [row for curve in curves for row in curve]
    if not epochs or any("forward_iters_median" not in row for row in epochs):
        return {}
    out = {"forward_iters_median": statistics.median(
               statistics.median(row["forward_iters_median"] for row in curve)
               for curve in curves),
           "forward_iters_max": max(row["forward_iters_max"] for row in epochs)}
    if all("cache_hit_rate" in row for row in epochs):
        out["cache_hit_rate"] = statistics.median(
            statistics.mean(row["cache_hit_rate"] for row in curve) for curve in curves)
    return out


def _iterations(run: dict) -> str:
    """``median K (max), hit rate`` of a parareal run's row, "–" for what was not recorded."""
    if "forward_iters_median" not in run:
        return "–"
    text = f"{run['forward_iters_median']:g} ({run['forward_iters_max']:g})"
    return text + (f", {run['cache_hit_rate']:.2f}" if "cache_hit_rate" in run else "")


def _time(seconds: float) -> str:
    return "never" if seconds == float("inf") else f"{seconds:.0f} s"


def markdown(result: dict) -> str:
    reps = result["reps"]
    lines = [
        "# Time to accuracy: plain neural CDE (torchcde.cdeint) against parareal, 1 and 2 ranks",
        "",
        f"{reps} repetitions (seeds 0..{reps - 1}), runs alternating a b c per seed. Times are "
        "training seconds (test evaluation excluded) until the test accuracy first reaches the "
        "target: (a)'s final accuracy, the worst over the seeds. (a) = plain NCDE "
        "(`torchcde.cdeint`, configs/TASK/ncde.yaml) at its faster thread count (1 or 2, "
        "measured on seed 0, column 'threads'); (b) = parareal NCDE (configs/TASK/"
        "ncde_parareal.yaml: tol 1e-3, warm start), 1 process, 2 threads; (c) = the same, "
        "time_parallel, 2 ranks x 1 thread. Both NCDEs run the epochs in column 'epochs' (their "
        "configs'); the zoo's series ResNet (configs/TASK/resnet.yaml, seed 0 only) those in "
        "column 'ResNet epochs' (its config: 100). "
        "Measured; medians (speedup: median (min-max) over the seeds; *never*: the target was "
        "not reached). K (b; c): the parareal forward's iterations over training, the median "
        "over the seeds of the median over the epochs (in brackets the most any training call "
        "took), and the warm-start cache's hit rate (mean over the epochs; rank 0's calls on "
        "2 ranks).",
        "",
        "| task | epochs | target acc | (a) time, final acc | threads | (b) time, final acc, "
        "speedup | (c) time, final acc, speedup | K (max), cache hit: (b); (c) | ResNet epochs, "
        "final acc | published ResNet: median (min–max) of 5 |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for task in result["tasks"]:
        runs = task["runs"]
        cells = [f"{_time(runs['a']['time_to_target_median'])}, "
                 f"{runs['a']['final_metric_median']:.3f}", str(task["a_threads"])]
        cells += [f"{_time(runs[run]['time_to_target_median'])}, "
                  f"{runs[run]['final_metric_median']:.3f}, {fmt_spread(runs[run]['speedup'])}x"
                  for run in ("b", "c")]
        cells.append(f"{_iterations(runs['b'])}; {_iterations(runs['c'])}")
        lines.append(f"| {task['task']} | {task['epochs']} | {task['target']:.3f} | "
                     + " | ".join(cells) + f" | {task['resnet_epochs']}, "
                     f"{task['resnet_final_metric_median']:.3f} | "
                     f"{fmt_spread(task['published_resnet'], 3)} |")
    lines += ["", f"Published figures: {PUBLISHED_SOURCE}."]
    lines += ["", "Where each task was measured:", ""]
    lines += [f"- {task['task']}: {header(task['environment'])}" for task in result["tasks"]]
    lines += ["", f"![test accuracy against training time]({NAME}.png)", ""]
    return "\n".join(lines)


def main() -> None:
    parser = _common.parser(__doc__)
    parser.add_argument("--tasks", nargs="+", default=list(TASKS), choices=list(TASKS))
    parser.add_argument("--reps", type=int, default=3)
    parser.add_argument("--epochs", type=int, help="epochs of every NCDE fit (default: the "
                        "configs' max_epochs)")
    parser.add_argument("--resnet-epochs", type=int,
                        help="epochs of the ResNet fits (default: its config's)")
    parser.add_argument("--workdir", help="keep the fits here; a rerun skips those recorded "
                        "(default: a temporary folder)")
    args = parser.parse_args()
    env = _common.environment("(a) 1 and 2 threads, (b) 2 threads, (c) 2 ranks x 1 thread, "
                              "ResNet 2 threads", args.allow_dirty)
    tasks = {}
    with tempfile.TemporaryDirectory() as tmp:
        workdir = Path(args.workdir or tmp)
        workdir.mkdir(parents=True, exist_ok=True)
        for task in args.tasks:
            epochs = args.epochs or config_epochs(task)
            curves: dict[str, dict[int, list[dict]]] = {run: {} for run in RUNS}
            for seed in range(args.reps):  # alternating: a, b, c (and r) per seed
                runs = ["a1", "a2", "b", "c", "r"] if seed == 0 else [faster_plain(curves), "b",
                                                                       "c"]
                for run in runs:
                    curves[run][seed] = run_fit(task, run, seed,
                                                args.resnet_epochs if run == "r" else epochs,
                                                workdir)
            tasks[task] = summarise(task, curves, epochs, env)
    kept = previous_tasks(NAME, args.reps)
    result = {"environment": env, "reps": args.reps,
              "tasks": [tasks.get(name) or kept[name] for name in TASKS
                        if name in tasks or name in kept]}
    print(_common.write_results(NAME, result, markdown(result)).read_text())
    plot(result, OUT_DIR / f"{NAME}.png", LABELS)


if __name__ == "__main__":
    main()
