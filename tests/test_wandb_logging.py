"""What a run logs to W&B, read back from the offline run file (no server), and the dashboard.

Short fits of the CLI, as a user runs them, in a subprocess with HOME in a separate folder and
no W&B key: a parareal classifier (1 process), a parareal trajectory model and the classifier
under ``time_parallel`` on 2 ranks. References are computed here independently: the parareal
cost model on a block run alone, the parameter count of the network built alone, the step
values against the epoch tables.
"""

from __future__ import annotations

import json
import math
import re
import statistics
from pathlib import Path

import pytest
import torch
from clitools import REPO
from matplotlib.image import imread
from wandb_offline import OfflineRun, read_run

from pnode_zoo import create_model
from pnode_zoo.ode import MLPVectorField, PararealODEBlock, PararealStats
from pnode_zoo.training import panels

pytestmark = pytest.mark.slow

EPOCHS = 2
SHORT = [f"--trainer.max_epochs={EPOCHS}", "--trainer.limit_train_batches=3",
         "--trainer.limit_val_batches=2", "--trainer.limit_test_batches=1",
         "--trainer.log_every_n_steps=1", "--trainer.accelerator=cpu"]
# tol 1e-3 is out of reach in 2 iterations: every call misses it (the once-per-epoch line)
PARAREAL = {"num_slices": 4, "coarse": "euler", "fine": "rk4", "fine_steps": 1,
            "max_iters": 2, "tol": 1.0e-3, "backward": "parareal_adjoint"}
ARCH_ARGS = {"width": 8, "parareal": PARAREAL}
CLASSIFIER = ["fit", "--config", str(REPO / "configs/digits/node_parareal.yaml"), *SHORT,
              f"--model.init_args.arch_args={json.dumps(ARCH_ARGS)}"]
TRAJECTORY = ["fit", "--config", str(REPO / "configs/lotka_volterra/node_parareal.yaml"), *SHORT,
              "--data.init_args.num_points=120", "--data.init_args.horizon=4"]
TIME_PARALLEL = [*CLASSIFIER, "--trainer.strategy=time_parallel", "--trainer.devices=2"]
# 27 training series (val_fraction 0.9): 2 batches, every series seen once per epoch
CDE = ["fit", "--config", str(REPO / "configs/japanese_vowels/ncde_parareal.yaml"), *SHORT,
       "--data.init_args.val_fraction=0.9"]


class Fit:
    """One CLI fit in ``root/work`` with HOME at ``root/home``, W&B left to choose its mode."""

    def __init__(self, run_cli, root: Path, args: list[str],
                 env: dict[str, str | None] | None = None):
        self.work, self.home = root / "work", root / "home"
        self.work.mkdir(parents=True)
        self.home.mkdir()
        environment = {"WANDB_MODE": None, "HOME": str(self.home), **(env or {})}
        self.result = run_cli(args, self.work, environment)
        assert self.result.returncode == 0, self.result.stderr[-4000:]

    @property
    def run_dirs(self) -> list[Path]:
        return sorted(self.work.glob("runs/*/*/wandb/offline-run-*"))

    @property
    def run(self) -> OfflineRun:
        (run_dir,) = self.run_dirs
        return read_run(run_dir)

    def media(self, key: str) -> list[Path]:
        """The files W&B stored for the image or table ``key``, in logging order."""
        (run_dir,) = self.run_dirs
        paths = []
        for value in self.run.values(key):
            paths += value.get("filenames", [value["path"]] if "path" in value else [])
        return [run_dir / "files" / path for path in paths]


@pytest.fixture(scope="module")
def classifier(pnode, tmp_path_factory) -> Fit:
    return Fit(pnode, tmp_path_factory.mktemp("classifier"), CLASSIFIER)


@pytest.fixture(scope="module")
def trajectory(pnode, tmp_path_factory) -> Fit:
    return Fit(pnode, tmp_path_factory.mktemp("trajectory"), TRAJECTORY)


@pytest.fixture(scope="module")
def two_ranks(pnode, tmp_path_factory) -> Fit:
    return Fit(pnode, tmp_path_factory.mktemp("two_ranks"), TIME_PARALLEL)


@pytest.fixture(scope="module")
def cde(pnode, tmp_path_factory) -> Fit:
    return Fit(pnode, tmp_path_factory.mktemp("cde"), CDE)


def _reference_block() -> PararealStats:
    """The forward's statistics of a block with PARAREAL's options, run alone, one process."""
    block = PararealODEBlock(MLPVectorField(dim=3), 0.0, 1.0, options={**PARAREAL, "tol": 0.0})
    block(torch.randn(5, 3))
    return block.stats


def _finite(values: list) -> bool:
    return bool(values) and all(isinstance(v, (int, float)) and math.isfinite(v) for v in values)


def test_offline_without_key_said_once_and_nothing_in_home(classifier: Fit) -> None:
    assert classifier.result.stderr.count("W&B: no API key found, logging offline") == 1
    assert len(classifier.run_dirs) == 1
    assert not [p for p in classifier.home.rglob("*") if "wandb" in p.name.lower()]


def test_metrics_of_every_section_have_sane_values(classifier: Fit) -> None:
    run = classifier.run
    for key in ("train/loss_step", "val/loss", panels.EPOCH_TIME, panels.SAMPLES_PER_SECOND):
        assert _finite(run.values(key)) and min(run.values(key)) > 0, key
    assert all(0 <= a <= 1 for a in run.values("val/acc") + run.values("test/acc"))
    learning_rates = run.values(panels.LEARNING_RATE)
    assert len(learning_rates) == EPOCHS * 3 and 0 < min(learning_rates) <= max(learning_rates)
    assert max(learning_rates) <= 0.01  # the config's peak learning rate
    net = create_model("odenet_parareal", num_classes=10, input_shape=(1, 8, 8), **ARCH_ARGS)
    assert run.values(panels.NUM_PARAMETERS) == [sum(p.numel() for p in net.parameters())]
    assert run.values("train/nfe_step") and min(run.values("train/nfe_step")) > 0


def test_parareal_metrics_match_the_cost_model_of_a_block_run_alone(classifier: Fit) -> None:
    run = classifier.run
    reference = _reference_block()
    assert run.values(panels.FORWARD_ITERS) == [2] * (EPOCHS * 3)  # every step, both epochs
    assert all(k >= 1 for k in run.values(panels.BACKWARD_ITERS))
    assert run.values(panels.NFE_CRITICAL_PATH) == [reference.critical_path_nfe(1)] * EPOCHS
    for nfe, fine, coarse in zip(run.values(panels.NFE), run.values(panels.NFE_FINE),
                                 run.values(panels.NFE_COARSE), strict=True):
        assert nfe == fine + coarse and fine >= reference.nfe_fine
    assert run.values(panels.LINEAR_SOLVES) == [0] * EPOCHS  # explicit methods
    assert _finite(run.values(panels.FORWARD_RESIDUAL) + run.values(panels.BACKWARD_RESIDUAL))


def test_missed_tolerance_is_logged_and_said_once_per_epoch(classifier: Fit) -> None:
    run = classifier.run
    converged = run.values(panels.CONVERGED)
    assert converged == [0] * (EPOCHS * 3)
    assert run.values(panels.MISSED_TOL) == [3] * EPOCHS
    assert run.values(panels.VAL_MISSED_TOL) == [2] * EPOCHS  # 2 validation batches
    lines = [line for line in classifier.result.stderr.splitlines()
             if "stopped at max_iters=2 with the residual above tol=0.001" in line]
    assert len(lines) == EPOCHS + 1  # each epoch, and the test
    assert "in epoch 0, 3 of 3 training and 2 of 2 validation forward calls" in lines[0]


def test_residual_table_has_one_row_per_iteration(classifier: Fit) -> None:
    run = classifier.run
    tables = classifier.media(panels.RESIDUALS)
    assert len(tables) == EPOCHS
    steps = run.values(panels.FORWARD_RESIDUAL)
    backward_iters = run.values(panels.BACKWARD_ITERS)
    for epoch, path in enumerate(tables):
        table = json.loads(path.read_text())
        assert table["columns"] == ["epoch", "iteration", "forward_residual",
                                    "backward_residual"]
        rows = table["data"]
        iterations = max(2, *backward_iters[3 * epoch: 3 * epoch + 3])
        assert [row[:2] for row in rows] == [[epoch, k] for k in range(1, iterations + 1)]
        forward = [row[2] for row in rows if row[2] is not None]
        backward = [row[3] for row in rows if row[3] is not None]
        assert len(forward) == 2 and forward[0] > forward[1] > 0  # parareal converges
        # the last iteration's median is the median of the steps' final residuals
        assert forward[-1] == pytest.approx(statistics.median(steps[3 * epoch: 3 * epoch + 3]))
        assert len(backward) == max(backward_iters[3 * epoch: 3 * epoch + 3])
        assert min(backward) >= 0


def test_pictures_are_logged_and_written_to_the_run_directory(classifier: Fit) -> None:
    plots = {p.name for p in classifier.work.glob("runs/*/*/plots/*.png")}
    for key, epochs in ((panels.RESIDUALS_PLOT, EPOCHS), ("val/confusion_matrix", EPOCHS),
                        ("test/confusion_matrix", 1)):
        images = classifier.media(key)
        assert len(images) == epochs, key
        for image in images:
            height, width, _ = imread(image).shape
            assert height > 100 and width > 100
        stem = key.replace("/", "_")
        assert len([name for name in plots if name.startswith(stem)]) == epochs


def test_config_holds_the_parareal_options_and_the_command_line(classifier: Fit) -> None:
    config = classifier.run.config
    for name, value in PARAREAL.items():
        assert config["parareal"][name] == value
    assert config["parareal"]["backward_tol"] is None and "warm_start" in config["parareal"]
    assert config["cli"]["model"]["init_args"]["arch_args"] == ARCH_ARGS
    assert config["cli"]["trainer"]["logger"]["init_args"]["log_model"] is False  # offline


def test_neural_cde_logs_k_and_the_warm_start_cache_hit_rate(cde: Fit) -> None:
    run = cde.run
    # epoch 0 meets every training series for the first time, epoch 1 finds all in the cache
    assert run.values(panels.CACHE_HIT_RATE) == [0, 0, 1, 1]
    assert run.values(panels.EPOCH_CACHE_HIT_RATE) == [0, 1]
    iterations = run.values(panels.FORWARD_ITERS)
    assert len(iterations) == 4 and all(1 <= k <= 4 for k in iterations)  # N = 4 chunks
    assert run.values(panels.FORWARD_ITERS_MEDIAN) == [
        statistics.median(iterations[:2]), statistics.median(iterations[2:])]


def test_trajectory_run_logs_forecasts(trajectory: Fit) -> None:
    run = trajectory.run
    assert len(trajectory.media("val/forecast")) == EPOCHS
    assert len(trajectory.media("test/forecast")) == 1
    assert _finite(run.values("val/mse")) and _finite(run.values("train/loss_step"))
    assert list(trajectory.work.glob("runs/*/*/plots/test_forecast.png"))


def test_two_ranks_make_one_run_holding_both_ranks_timings(two_ranks: Fit) -> None:
    assert len(two_ranks.run_dirs) == 1
    run = two_ranks.run
    for rank in (0, 1):
        for timer in panels.RANK_TIMERS:
            values = run.values(panels.RANK_TIMER.format(rank=rank, timer=timer))
            assert len(values) == EPOCHS and _finite(values) and min(values) >= 0
        fine = run.values(panels.RANK_TIMER.format(rank=rank, timer="time_fine"))
        assert min(fine) > 0
    comm = run.values(panels.RANK_TIMER.format(rank=0, timer="time_comm"))
    assert min(comm) > 0  # rank 0 sends its boundary state
    # the cost model of a one-process call, evaluated for 2 ranks
    modelled = _reference_block().modelled_speedup(2)
    assert run.values(panels.MODELLED_SPEEDUP) == [pytest.approx(modelled)] * EPOCHS
    estimated = run.values(panels.SPEEDUP_VS_ESTIMATED_SERIAL)
    assert _finite(estimated) and min(estimated) > 0
    assert run.values(panels.NFE_CRITICAL_PATH) == [_reference_block().critical_path_nfe(2)] * 2


def test_two_ranks_timeline_picture(two_ranks: Fit) -> None:
    images = two_ranks.media(panels.TIMELINE)
    assert len(images) == EPOCHS
    assert len(list(two_ranks.work.glob("runs/*/*/plots/time_parallel_timeline_*.png"))
               ) == EPOCHS


def _panel_keys(panel: dict) -> list[str]:
    """The keys (or patterns) one panel of the W&B definition shows."""
    config = panel["config"]
    if panel["viewType"] == "Run History Line Plot":
        return config["metrics"] or [config["metricRegex"]]
    if panel["viewType"] == "Scalar Chart":
        return config["metrics"]
    if panel["viewType"] == "Media Browser":
        return config["mediaKeys"]
    if panel["viewType"] == "Weave":  # summary table: runs.summary[KEY]
        return re.findall(r'"key": \{[^{}]*"val": "([^"]+)"', json.dumps(config))
    raise AssertionError(f"unexpected panel type {panel['viewType']}")


def test_every_dashboard_panel_names_a_logged_key(pnode, tmp_path: Path, classifier: Fit,
                                                  trajectory: Fit, two_ranks: Fit,
                                                  cde: Fit) -> None:
    result = pnode(["dashboard", "--entity", "someone", "--project", "pnode_zoo",
                      "--output", "board.json"], tmp_path, {"WANDB_MODE": None})
    assert result.returncode == 0, result.stderr
    assert "W&B: no API key found, so the workspace was not created" in result.stdout
    definition = json.loads((tmp_path / "board.json").read_text())
    assert definition["entity"] == "someone" and definition["project"] == "pnode_zoo"
    logged = (classifier.run.keys() | trajectory.run.keys() | two_ranks.run.keys()
              | cde.run.keys())
    sections = definition["spec"]["section"]["panelBankConfig"]["sections"]
    assert [s["name"] for s in sections] == list(panels.SECTIONS)
    count = 0
    for section in sections:
        for panel in section["panels"]:
            keys = _panel_keys(panel)
            assert keys, panel
            for key in keys:
                pattern = re.compile(key if key.startswith("^") else re.escape(key))
                assert any(pattern.fullmatch(k) for k in logged), (section["name"], key)
            count += 1
    assert count == sum(len(p) for p in panels.SECTIONS.values())


@pytest.mark.parametrize("logger", ["WANDB_MODE=disabled", "CSVLogger", "TensorBoardLogger"])
def test_without_wandb_the_numbers_and_pictures_still_come(pnode, tmp_path: Path,
                                                           logger: str) -> None:
    args = [*CLASSIFIER, "--trainer.max_epochs=1"]
    env = {}
    if logger.startswith("WANDB_MODE"):
        env["WANDB_MODE"] = "disabled"
    else:
        args.append(f"--trainer.logger={logger}")
    fit = Fit(pnode, tmp_path, args, env)
    assert not list(fit.work.rglob("offline-run-*"))
    assert not [p for p in fit.home.rglob("*") if "wandb" in p.name.lower()]
    (plots,) = fit.work.glob("runs/**/plots")
    names = {p.name for p in plots.glob("*.png")}
    assert {"parareal_residuals_plot_epoch000.png", "val_confusion_matrix_epoch000.png",
            "test_confusion_matrix.png"} <= names
    if logger == "CSVLogger":
        (metrics,) = fit.work.glob("runs/**/metrics.csv")
        header = metrics.read_text().splitlines()[0].split(",")
        assert {panels.FORWARD_ITERS, panels.NFE_CRITICAL_PATH, panels.LEARNING_RATE,
                panels.MISSED_TOL, "val/acc"} <= set(header)
    if logger == "TensorBoardLogger":
        from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

        tags: dict[str, set[str]] = {"scalars": set(), "images": set()}
        for events in fit.work.glob("runs/**/events.out.tfevents.*"):
            accumulator = EventAccumulator(str(events), size_guidance={"images": 0})
            accumulator.Reload()
            for kind, found in tags.items():
                found.update(accumulator.Tags()[kind])
        assert {panels.FORWARD_ITERS, panels.NFE_CRITICAL_PATH} <= tags["scalars"]
        assert {"val/confusion_matrix", "test/confusion_matrix",
                panels.RESIDUALS_PLOT} <= tags["images"]
