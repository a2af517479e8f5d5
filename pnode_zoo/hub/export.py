"""Lightning checkpoint -> card + safetensors, and the evaluation that measures a card's metric.

A checkpoint is read with ``weights_only=True`` (``training.checkpoints.read_checkpoint``); its run
directory's ``config.yaml`` says which data it was trained on. Both are data: the task and data
module they name are looked up among the zoo's own (``hub.classes``), never imported by name.
The test metric written on the card is measured on the exported weights themselves, so
``pretrained eval`` reproduces it.
"""

from __future__ import annotations

import dataclasses
import inspect
import math
import re
import subprocess
from pathlib import Path
from typing import Any

import pytorch_lightning as pl
import torch
import yaml
from torch import nn

from pnode_zoo import runs
from pnode_zoo.errors import UserInputError
from pnode_zoo.hub.card import ModelCard, Preprocessing, file_sha256
from pnode_zoo.hub.catalogue import DATASETS
from pnode_zoo.hub.classes import resolve_class
from pnode_zoo.hub.solver import describe_solver
from pnode_zoo.hub.store import pretrained_card, save_pretrained
from pnode_zoo.models import create_model, model_entry
from pnode_zoo.tasks.base import Task
from pnode_zoo.training.checkpoints import read_checkpoint

__all__ = [
    "METRIC_RTOL",
    "REPO",
    "build_data",
    "build_task",
    "dataset_name",
    "evaluate",
    "export_checkpoint",
    "git_commit",
    "network_of",
    "reproduces",
]

REPO = Path(__file__).resolve().parents[2]


def dataset_name(data: dict[str, Any]) -> str:
    """A data module's data set as a snake_case name: ``name`` option or class name."""
    init_args = data.get("init_args") or {}
    raw = init_args.get("name") or data["class_path"].rpartition(".")[2].removesuffix("DataModule")
    return re.sub(r"(?<=[a-z0-9])(?=[A-Z])", "_", str(raw)).lower()


def build_data(card: ModelCard) -> pl.LightningDataModule:
    """The card's data module (one of the zoo's), set up for testing."""
    data_class = resolve_class(card.data, "data", f"the card of {card.name}: its data")
    datamodule = data_class(**card.data.get("init_args") or {})
    datamodule.setup("test")
    return datamodule


def build_task(card: ModelCard, net: nn.Module) -> Task:
    """The card's Lightning task (one of the zoo's) holding ``net``'s weights."""
    task_class = resolve_class(card.task, "task", f"the card of {card.name}: its task")
    task = task_class(**card.task["init_args"])
    task.net.load_state_dict(net.state_dict())
    return task


def evaluate(card: ModelCard, net: nn.Module) -> float:
    """The card's test metric measured for ``net`` on the card's data and split (deterministic).

    Args:
        card: the card (its task, data and metric name are used).
        net: the network, e.g. from ``load_pretrained``.
    """
    trainer = pl.Trainer(accelerator="cpu", devices=1, logger=False, enable_checkpointing=False,
                         enable_progress_bar=False, enable_model_summary=False,
                         deterministic=True)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # sums in one order whatever the thread count (see METRIC_RTOL)
    try:
        results = trainer.test(build_task(card, net), datamodule=build_data(card), verbose=False)
    finally:
        torch.set_num_threads(threads)
    return float(results[0][card.metric])


#: how far a measured error metric (e.g. MSE) may lie from its card's, relative: float32 kernels
#: differ in the last digits between CPU types (bit for bit on the same one); accuracy is a count
#: of correct samples and must match exactly
METRIC_RTOL = 1e-5


def reproduces(card: ModelCard, value: float) -> bool:
    """Whether a measured test metric reproduces the card's (see ``METRIC_RTOL``).

    Args:
        card: the model's card.
        value: the metric measured again (``evaluate``).
    """
    if card.metric.endswith("acc"):
        return value == card.metric_value
    return math.isclose(value, card.metric_value, rel_tol=METRIC_RTOL, abs_tol=0.0)


def git_commit() -> str:
    """``git describe --always --dirty`` of the repository the package lies in, or "unknown"."""
    try:
        return subprocess.run(["git", "describe", "--always", "--dirty", "--abbrev=12"],
                              cwd=REPO, capture_output=True, text=True, check=True,
                              timeout=30).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return "unknown"


def network_of(init_args: dict[str, Any]) -> tuple[str, dict[str, Any]]:
    """The architecture and its full constructor options of a task's init args (the linked
    data options included; a ``pretrained`` start resolved to its card's architecture)."""
    arch, arch_args = init_args["arch"], dict(init_args.get("arch_args") or {})
    if init_args.get("pretrained"):
        card = pretrained_card(init_args["pretrained"])
        arch, arch_args = card.arch, {**card.arch_args, **arch_args}
    accepted = inspect.signature(model_entry(arch)).parameters
    linked = {key: value for key, value in init_args.items()
              if key in accepted and key not in ("arch", "arch_args")}
    return arch, {**arch_args, **linked}


def _plain(value: Any) -> Any:
    """Tuples as lists, recursively (a card is JSON)."""
    if isinstance(value, dict):
        return {key: _plain(item) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [_plain(item) for item in value]
    return value


def export_checkpoint(checkpoint_path: str | Path, directory: str | Path,
                      name: str | None = None, provenance: dict[str, Any] | None = None
                      ) -> ModelCard:
    """Write a Lightning checkpoint of any task as ``config.json`` + ``model.safetensors`` (and
    their ``SHA256SUMS``).

    The checkpoint must lie in its run directory (``<run>/checkpoints/``), whose
    ``config.yaml`` names the data. The test metric is measured on the exported weights.

    Args:
        checkpoint_path: a ``.ckpt`` file written by ``fit``.
        directory: the output directory (created).
        name: the pretrained name; default ``<architecture>.<data set>``.
        provenance: card fields that describe the training (``command``, ``config_path``,
            ``config``, ``config_sha256``, ``commit``, ``training_seconds``); default: the
            run's ``config.yaml`` and the repository's commit now.
    """
    checkpoint_path = Path(checkpoint_path)
    checkpoint = read_checkpoint(checkpoint_path)
    run_dir = runs.run_dir_of_checkpoint(checkpoint_path)
    if run_dir is None:
        raise UserInputError(f"{checkpoint_path} does not lie in a run directory "
                         "(runs/<name>/<id>/checkpoints/), so the data it was trained on is "
                         "unknown; export a checkpoint written by `fit`")
    hparams = dict(checkpoint.get("hyper_parameters") or {})
    class_path = hparams.pop("_class_path", None)
    hparams.pop("_instantiator", None)
    if class_path is None or "arch" not in hparams:
        raise UserInputError(f"{checkpoint_path} holds no pnode_zoo task's hyperparameters; export "
                         "a checkpoint written by `python -m pnode_zoo fit`")
    config = yaml.safe_load((run_dir / runs.CONFIG).read_text())
    task_class = resolve_class({"class_path": class_path, "init_args": hparams}, "task",
                               f"checkpoint {checkpoint_path}")
    data_class = resolve_class((config or {}).get("data"), "data",
                               f"{run_dir / runs.CONFIG}: its data")
    arch, arch_args = network_of(hparams)
    net = create_model(arch, **arch_args)
    net.load_state_dict({key.removeprefix("net."): value
                         for key, value in checkpoint["state_dict"].items()
                         if key.startswith("net.")})
    data = {"class_path": config["data"]["class_path"],
            "init_args": config["data"].get("init_args") or {}}
    task_args = {**{key: value for key, value in hparams.items() if key != "pretrained"},
                 "arch": arch, "arch_args": {key: value for key, value in arch_args.items()
                                             if key not in hparams}}
    datamodule = data_class(**data["init_args"])
    datamodule.setup("test")
    prep = datamodule.preprocessing
    classes = getattr(datamodule, "classes", None) or [
        str(k) for k in range(arch_args.get("num_classes", 0))]
    dataset = dataset_name(data)
    licence, citation = DATASETS.get(dataset, ("unknown", "unknown"))
    default_config = run_dir / runs.CONFIG
    provenance = {"command": f"python -m pnode_zoo fit --config {default_config}",
                  "config_path": str(default_config), "config": config,
                  "config_sha256": file_sha256(default_config), "training_seconds": None,
                  "commit": git_commit(), **(provenance or {})}
    card = ModelCard(
        name=name or f"{arch}.{dataset}", arch=arch, arch_args=_plain(arch_args),
        task={"class_path": class_path, "init_args": _plain(task_args)},
        data=_plain(data), dataset=dataset, split="test",
        preprocessing=Preprocessing(
            input_shape=tuple(datamodule.input_shape), label_names=tuple(classes),
            scale=prep.get("scale", 1.0),
            mean=tuple(prep["mean"]) if "mean" in prep else None,
            std=tuple(prep["std"]) if "std" in prep else None,
            channel_axis=prep.get("channel_axis", 0), per_series=prep.get("per_series", False),
            pad=getattr(datamodule, "pad", None)),
        metric=f"test/{task_class.checkpoint_metric[0].partition('/')[2]}", metric_value=0.0,
        num_parameters=0, seed=int(config.get("seed_everything") or 0),
        licence=licence, citation=citation, weights_size=0, weights_sha256="",
        solver=describe_solver(net, datamodule.input_shape), **provenance)
    return save_pretrained(net, dataclasses.replace(card, metric_value=evaluate(card, net)),
                           directory)
