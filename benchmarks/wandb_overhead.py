"""Per-step cost of logging to W&B (offline) against logging to CSV, with the CLI's callbacks.

Run from the repository root, on a machine with no other jobs:

    python benchmarks/wandb_overhead.py [--pairs 5] [--epochs 3] [--log-every 10]

Model and data: the default fit (``configs/digits/node_parareal.yaml``: parareal ODE-Net on
scikit-learn's digits, batch 64), trained through the Python API with the CLI's default
``RunMonitor`` (parareal and system metrics, residual table and pictures every epoch).
Baseline: ``CSVLogger``; candidate: ``WandbLogger`` in offline mode (W&B's files in a temporary
folder). Runs alternate (CSV, W&B, CSV, W&B, ...) so that drifting machine load hits both. The
time of a step is the wall time between consecutive ``on_train_batch_start`` calls (forward,
backward, optimiser, callbacks and the loggers' work in between), averaged over every step
after the first epoch, without the steps that straddle validation. Reported: the W&B/CSV ratio
of the mean step time per pair, its median and range over the pairs.

Writes docs/benchmarks/wandb_overhead.{json,md}.
"""

from __future__ import annotations

import os
import statistics
import tempfile
from pathlib import Path
from time import perf_counter
from typing import Any

import _common
import pytorch_lightning as pl
import torch
import yaml
from pytorch_lightning.loggers import CSVLogger, WandbLogger

from pnode_zoo.data import DigitsDataModule
from pnode_zoo.tasks import Classifier
from pnode_zoo.training.monitor import RunMonitor

NAME = "wandb_overhead"
CONFIG = _common.ROOT / "configs" / "digits" / "node_parareal.yaml"


class StepTimer(pl.Callback):
    """Wall time between consecutive training-batch starts, within an epoch, after epoch 0."""

    def __init__(self) -> None:
        self.steps: list[float] = []
        self._last: float | None = None

    def on_train_epoch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._last = None  # the step before this one straddled validation

    def on_train_batch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule,
                             batch: Any, batch_idx: int) -> None:
        now = perf_counter()
        if self._last is not None and trainer.current_epoch > 0:
            self.steps.append(now - self._last)
        self._last = now


def mean_step_seconds(logger_name: str, epochs: int, log_every: int, batches: int | None,
                      folder: Path) -> float:
    """Train the default model once with ``logger_name`` ("csv" or "wandb"); mean step time."""
    config = yaml.safe_load(CONFIG.read_text())
    model = config["model"]["init_args"]
    pl.seed_everything(0, verbose=False)
    data = DigitsDataModule(**config["data"]["init_args"])
    task = Classifier(arch=model["arch"], arch_args=model["arch_args"], lr=model["lr"])
    if logger_name == "wandb":
        logger = WandbLogger(project="pnode_zoo_benchmark", save_dir=str(folder))
    else:
        logger = CSVLogger(save_dir=str(folder))
    timer = StepTimer()
    trainer = pl.Trainer(max_epochs=epochs, logger=logger, log_every_n_steps=log_every,
                         limit_train_batches=batches, limit_val_batches=batches,
                         callbacks=[RunMonitor(), timer], default_root_dir=folder,
                         enable_progress_bar=False, enable_model_summary=False,
                         enable_checkpointing=False, deterministic=True)
    try:
        trainer.fit(task, datamodule=data)
    finally:
        if logger_name == "wandb":
            import wandb

            wandb.finish()
    return statistics.fmean(timer.steps)


def main() -> None:
    parser = _common.parser(__doc__)
    parser.add_argument("--pairs", type=int, default=5)
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--log-every", type=int, default=10, help="log_every_n_steps")
    parser.add_argument("--batches", type=int, default=None,
                        help="training and validation batches per epoch (default: all)")
    args = parser.parse_args()
    env = _common.environment(f"1 process, {torch.get_num_threads()} torch threads",
                              args.allow_dirty)
    with tempfile.TemporaryDirectory() as scratch:
        for variable, sub in (("WANDB_DIR", ""), ("WANDB_CACHE_DIR", "cache"),
                              ("WANDB_CONFIG_DIR", "config"), ("WANDB_DATA_DIR", "data")):
            os.environ[variable] = str(Path(scratch) / sub)
            Path(os.environ[variable]).mkdir(parents=True, exist_ok=True)
        os.environ["WANDB_MODE"] = "offline"
        pairs = []
        for pair in range(args.pairs):
            times = {name: mean_step_seconds(name, args.epochs, args.log_every, args.batches,
                                             Path(scratch) / f"{name}{pair}")
                     for name in ("csv", "wandb")}
            pairs.append(times)
            print(f"pair {pair}: CSV {1e3 * times['csv']:.1f} ms/step, "
                  f"W&B {1e3 * times['wandb']:.1f} ms/step, "
                  f"ratio {times['wandb'] / times['csv']:.3f}", flush=True)
    ratios = [p["wandb"] / p["csv"] for p in pairs]
    result = {
        "environment": env,
        "epochs": args.epochs, "log_every_n_steps": args.log_every, "pairs": pairs,
        "ratio_median": statistics.median(ratios), "ratio_min": min(ratios),
        "ratio_max": max(ratios),
    }
    path = _common.write_results(NAME, result, (
        "# W&B (offline) against CSV logging, per training step\n\n"
        f"{_common.header(env)}\n\nThe default digits parareal fit with the CLI's RunMonitor, "
        f"{args.epochs} epochs, log_every_n_steps={args.log_every}, {args.pairs} alternating "
        "pairs.\n\n"
        "| pair | CSV ms/step | W&B ms/step | W&B / CSV |\n|---|---|---|---|\n"
        + "".join(f"| {i} | {1e3 * p['csv']:.1f} | {1e3 * p['wandb']:.1f} | "
                  f"{p['wandb'] / p['csv']:.3f} |\n" for i, p in enumerate(pairs))
        + f"\nMedian ratio {result['ratio_median']:.3f} "
          f"(range {result['ratio_min']:.3f}–{result['ratio_max']:.3f}).\n"
    ))
    print(f"W&B / CSV per step: median {result['ratio_median']:.3f} "
          f"({result['ratio_min']:.3f}-{result['ratio_max']:.3f}); wrote {path}")



if __name__ == "__main__":
    main()
