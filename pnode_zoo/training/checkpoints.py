"""Training checkpoints that survive a kill, are read without running code from them, and
resume a seeded run exactly where it stopped."""

from __future__ import annotations

import os
import pickle
import random
import zipfile
from pathlib import Path
from typing import Any

import numpy as np
import pytorch_lightning as pl
import torch
from lightning_fabric.plugins.io.torch_io import TorchCheckpointIO
from pytorch_lightning.callbacks import ModelCheckpoint
from torch import nn

from pnode_zoo.errors import UserInputError
from pnode_zoo.runs import BEST_PREFIX

__all__ = [
    "AtomicCheckpointIO",
    "RandomStateCheckpoint",
    "best_and_last",
    "check_fits",
    "last_only",
    "read_checkpoint",
]


def best_and_last(metric: str, mode: str) -> ModelCheckpoint:
    """Keep ``last.ckpt`` (the final epoch, the resume point) and ``best-...ckpt`` (the best by
    ``metric``, whose value is in the name), e.g. ``best-epoch012-val_acc0.9833.ckpt``.

    Args:
        metric: the logged validation metric, e.g. ``val/acc``.
        mode: "max" or "min": which value of ``metric`` is best.
    """
    return ModelCheckpoint(
        monitor=metric,
        mode=mode,
        filename=f"{BEST_PREFIX}epoch{{epoch:03d}}-{metric.replace('/', '_')}{{{metric}:.4f}}",
        auto_insert_metric_name=False,  # a "/" in the name would make folders
        save_last=True,
        enable_version_counter=False,  # a resumed run overwrites its last.ckpt, no last-v1.ckpt
    )


def last_only() -> ModelCheckpoint:
    """Keep ``last.ckpt`` alone: the checkpointing of a run that never validates."""
    return ModelCheckpoint(save_top_k=0, save_last=True, enable_version_counter=False)


class AtomicCheckpointIO(TorchCheckpointIO):
    """Lightning's checkpoint writer, made atomic on a local disk.

    Hand-written because Lightning's writer stages the file in the system's temporary folder
    and moves it into place, which is a copy over the old file (not a rename) when the
    temporary folder is on another file system, and leaves the staged file behind when the
    process is killed. Here the file is written beside its destination, flushed to disk and
    renamed over it: a kill at any moment leaves either the old checkpoint or the new one.
    """

    def save_checkpoint(
        self, checkpoint: dict[str, Any], path: str | Path, storage_options: Any | None = None
    ) -> None:
        if storage_options is not None:
            raise TypeError(f"{type(self).__name__} takes no storage_options")
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        partial = path.with_name(f".{path.name}.partial-{os.getpid()}")
        try:
            with partial.open("wb") as file:
                torch.save(checkpoint, file)
                file.flush()
                os.fsync(file.fileno())
            os.replace(partial, path)
        finally:
            partial.unlink(missing_ok=True)
        directory = os.open(path.parent, os.O_RDONLY)
        try:
            os.fsync(directory)  # the rename itself reaches the disk
        finally:
            os.close(directory)


def read_checkpoint(path: str | Path) -> dict[str, Any]:
    """A training checkpoint, read with ``weights_only=True`` (no code in the file ever runs).

    Raises ValueError with one sentence naming the problem for a missing, empty, truncated or
    corrupt file, a file holding Python objects other than tensors and plain data (a pickle
    that could run code is refused unread), and a file without a ``state_dict``.

    Args:
        path: the checkpoint file.
    """
    path = Path(path)
    if not path.is_file():
        raise UserInputError(f"checkpoint {path} does not exist; give the path of a .ckpt file")
    if path.stat().st_size == 0:
        raise UserInputError(f"checkpoint {path} is empty (a save was cut short?); use another one")
    try:
        checkpoint = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as err:
        if "Unsupported global" in str(err):  # torch's weights-only unpickler met a callable
            raise UserInputError(
                f"checkpoint {path} was refused: it holds Python objects other than tensors and "
                "plain data, and loading those could run code; use a checkpoint written by "
                "pnode_zoo"
            ) from None
        raise UserInputError(
            f"checkpoint {path} is truncated or corrupt; use another one") from None
    except (RuntimeError, EOFError, OSError, zipfile.BadZipFile, ValueError) as err:
        reason = str(err).splitlines()[0] if str(err) else type(err).__name__
        raise UserInputError(
            f"checkpoint {path} is truncated or corrupt ({reason}); use another one"
        ) from None
    if not isinstance(checkpoint, dict) or not isinstance(checkpoint.get("state_dict"), dict):
        raise UserInputError(
            f"checkpoint {path} is not a training checkpoint (it has no state_dict); give a "
            ".ckpt file written by `fit`"
        )
    return checkpoint


def check_fits(model: nn.Module, checkpoint: dict[str, Any], path: str | Path) -> None:
    """ValueError naming the differences if the checkpoint's weights do not fit ``model``.

    Args:
        model: the module the weights are for (a LightningModule).
        checkpoint: a checkpoint from ``read_checkpoint``.
        path: the checkpoint's path, for the message.
    """
    saved = checkpoint["state_dict"]
    expected = model.state_dict()
    missing = [key for key in expected if key not in saved]
    unexpected = [key for key in saved if key not in expected]
    reshaped = [
        f"{key} is {list(saved[key].shape)} in the checkpoint but {list(value.shape)} here"
        for key, value in expected.items()
        if key in saved and hasattr(saved[key], "shape") and saved[key].shape != value.shape
    ]
    problems = []
    if missing:
        problems.append(f"{len(missing)} weights missing (e.g. {missing[0]})")
    if unexpected:
        problems.append(f"{len(unexpected)} unexpected (e.g. {unexpected[0]})")
    if reshaped:
        problems.append(f"{len(reshaped)} of another shape ({reshaped[0]})")
    if problems:
        trained = checkpoint.get("hyper_parameters", {}).get("arch", "another model")
        raise UserInputError(
            f"checkpoint {path} does not fit this model: {'; '.join(problems)}; it was trained "
            f"as {trained}: drop the model options (the checkpoint's own model is rebuilt) or "
            "give a checkpoint of this model"
        )


def _random_state() -> dict[str, Any]:
    """Every generator a training epoch draws from, as tensors and plain data."""
    keys, position, has_gauss, cached = np.random.get_state()[1:]
    return {
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
        "numpy": {"keys": torch.from_numpy(keys.astype(np.int64)), "position": int(position),
                  "has_gauss": int(has_gauss), "cached": float(cached)},
        "python": random.getstate(),
    }


def _set_random_state(state: dict[str, Any]) -> None:
    torch.set_rng_state(state["torch"])
    if state["cuda"] and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])
    numpy = state["numpy"]
    np.random.set_state(("MT19937", numpy["keys"].numpy().astype(np.uint32), numpy["position"],
                         numpy["has_gauss"], numpy["cached"]))
    version, internal, gauss = state["python"]
    random.setstate((version, tuple(internal), gauss))


class RandomStateCheckpoint(pl.Callback):
    """Save the random generators with every checkpoint; restore them when training resumes.

    Hand-written because Lightning's checkpoints hold no random state and restore a data
    loader's state only when a run stopped mid-epoch, so after a resumption from an epoch's
    end the shuffle order, augmentation and dropout of the following epochs would differ from
    an uninterrupted run. The state is taken when a checkpoint is written (at the end of an
    epoch): the torch, CUDA, NumPy and Python generators, set back when the next training epoch
    starts, and the data module's ``train_generator`` (the training loader's, see
    ``TensorDataModule``), set back as soon as the checkpoint is loaded, before Lightning
    builds the training loader and draws from it. A resumed seeded run then trains on exactly
    the batches of an uninterrupted one.
    """

    def __init__(self) -> None:
        self._trainer: pl.Trainer | None = None
        self._pending: dict[str, Any] | None = None

    def _loader_generator(self) -> torch.Generator | None:
        datamodule = getattr(self._trainer, "datamodule", None)
        return getattr(datamodule, "train_generator", None)

    def setup(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        self._trainer = trainer

    def state_dict(self) -> dict[str, Any]:
        state = _random_state()
        generator = self._loader_generator()
        state["loader"] = generator.get_state() if generator is not None else None
        return state

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        # Lightning loads callback states after `setup` and before it first asks the data
        # module for the training loader (to count the steps, or to train).
        generator = self._loader_generator()
        if generator is not None and state_dict["loader"] is not None:
            generator.set_state(state_dict["loader"])
        self._pending = state_dict

    def on_train_epoch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if self._pending is not None:
            _set_random_state(self._pending)
            self._pending = None
