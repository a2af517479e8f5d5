"""Model cards: what a weight file is, how it was made and how well it does, as data.

A card is stored as ``config.json`` beside its ``model.safetensors``, the layout of a Hugging
Face Hub repository, with ``SHA256SUMS`` (``sha256sum``'s format) covering both, so a directory
of the three is all it takes to share a model. A card is data: it names the zoo's own task and
data module by class path and the network by registry name, and nothing else is built from it
(``check_names``, ``hub.classes``).
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from pnode_zoo.errors import UserInputError

__all__ = [
    "CARD_FILE",
    "MANIFEST_FILE",
    "ModelCard",
    "PACKAGE",
    "Preprocessing",
    "WEIGHTS_FILE",
    "check_manifest",
    "check_names",
    "create_transform",
    "file_sha256",
    "read_manifest",
    "write_manifest",
]

CARD_FILE = "config.json"
WEIGHTS_FILE = "model.safetensors"
MANIFEST_FILE = "SHA256SUMS"  # `sha256sum -c SHA256SUMS` checks a directory by hand
PACKAGE = __name__.partition(".")[0]  # the only package whose classes a card may name


def _nested(value: Any, where: str) -> Iterator[tuple[str, str]]:
    """(place, class path) of every mapping with a ``class_path`` inside ``value``."""
    if isinstance(value, dict):
        if "class_path" in value:
            yield where, str(value["class_path"])
        for key, item in value.items():
            yield from _nested(item, f"{where}.{key}")
    elif isinstance(value, list | tuple):
        for index, item in enumerate(value):
            yield from _nested(item, f"{where}[{index}]")


def check_names(spec: Any, where: str) -> str:
    """The class path of ``spec`` (``{"class_path": ..., "init_args": ...}``) if it may name one
    of the zoo's classes; UserInputError otherwise. Imports nothing.

    Args:
        spec: a card's ``task`` or ``data`` entry, or a run config's ``data``.
        where: what holds it, for messages (e.g. "the card of odenet.digits's task").
    """
    if not isinstance(spec, dict) or not isinstance(spec.get("class_path"), str):
        raise UserInputError(f"{where} is not a mapping with a class_path; it was not loaded")
    class_path = spec["class_path"]
    if "." in class_path and class_path.partition(".")[0] != PACKAGE:  # a bare name is looked up
        raise UserInputError(f"{where} names the class {class_path!r}, which is not one of "
                             f"{PACKAGE}'s tasks or data modules; it was not imported")
    nested = next(_nested(spec.get("init_args") or {}, "init_args"), None)
    if nested is not None:
        raise UserInputError(f"{where} names the class {nested[1]!r} in its {nested[0]}; only the "
                             "task and data module themselves are named by class, so it was not "
                             "imported")
    return class_path


@dataclass(frozen=True)
class Preprocessing:
    """How raw samples become the inputs the weights were trained on.

    Args:
        input_shape: shape of one sample, e.g. (1, 8, 8) or (channels, length).
        label_names: the class names in output order (empty for regression).
        scale: factor applied to the raw values first (1/255 for 8-bit images).
        mean: per-channel mean subtracted after scaling (None: none).
        std: per-channel standard deviation divided by after centring (None: none).
        channel_axis: axis of a sample that ``mean``/``std`` run along (0, or -1 for the
            state dimension of trajectories).
        per_series: z-normalise every channel of every series on its own (the UCR convention).
        pad: how a series shorter than ``input_shape`` is padded at the end, after its
            normalisation (as the UCR data module does): "zeros", "last" (its last observation
            repeated) or None (no padding: shorter samples are refused).
    """

    input_shape: tuple[int, ...]
    label_names: tuple[str, ...] = ()
    scale: float = 1.0
    mean: tuple[float, ...] | None = None
    std: tuple[float, ...] | None = None
    channel_axis: int = 0
    per_series: bool = False
    pad: str | None = None


@dataclass(frozen=True)
class ModelCard:
    """One pretrained model: architecture, data, preprocessing, result, provenance, weights.

    Args:
        name: the pretrained name, ``<architecture>.<data>``, e.g. ``odenet.digits``.
        arch: registered architecture (``pnode_zoo.list_models()``).
        arch_args: its constructor arguments, ``num_classes``/``input_shape`` and the
            ``parareal`` options included.
        task: the Lightning task it was trained in, ``{"class_path": ..., "init_args": ...}``.
        data: the data module, ``{"class_path": ..., "init_args": ...}``.
        dataset: the data set's name.
        split: the split ``metric`` was measured on.
        preprocessing: how raw samples become inputs.
        metric: the logged test metric, e.g. ``test/acc``.
        metric_value: its value for these weights (``pretrained eval`` reproduces it).
        num_parameters: trainable parameters.
        command: the command that trained the weights.
        config_path: the config file it used, relative to the repository.
        config: that file's content.
        config_sha256: that file's sha256 when the weights were made.
        seed: the training seed.
        commit: the repository's commit (``-dirty`` when it had local changes).
        training_seconds: wall time of the training command.
        licence: the data set's licence.
        citation: how to cite the data set.
        weights_size: bytes of ``model.safetensors``.
        weights_sha256: its sha256.
        url: where the weights can be downloaded when they do not ship (None: they ship).
        solver: how the network solves its differential equation, read off the built network
            at export (``hub.solver.describe_solver``: a neural CDE's path, solver, steps,
            readout and parareal options); None for other networks.
    """

    name: str
    arch: str
    arch_args: dict[str, Any]
    task: dict[str, Any]
    data: dict[str, Any]
    dataset: str
    split: str
    preprocessing: Preprocessing
    metric: str
    metric_value: float
    num_parameters: int
    command: str
    config_path: str
    config: dict[str, Any]
    config_sha256: str
    seed: int
    commit: str
    training_seconds: float | None
    licence: str
    citation: str
    weights_size: int
    weights_sha256: str
    url: str | None = None
    solver: dict[str, Any] | None = None

    def to_json(self) -> str:
        """The card as indented JSON (keys in declaration order)."""
        return json.dumps(dataclasses.asdict(self), indent=2) + "\n"

    @classmethod
    def from_json(cls, text: str, source: str = "card") -> ModelCard:
        """A card from JSON; UserInputError naming ``source`` if fields are missing or unknown.

        Args:
            text: the JSON text.
            source: where it came from, for messages.
        """
        try:
            values = json.loads(text)
        except json.JSONDecodeError as err:
            raise UserInputError(f"{source} is not valid JSON ({err}); not a model card") from None
        names = {f.name for f in dataclasses.fields(cls)}
        required = {f.name for f in dataclasses.fields(cls) if f.default is dataclasses.MISSING}
        if not isinstance(values, dict) or not required <= set(values) or set(values) - names:
            keys = set(values) if isinstance(values, dict) else set()
            problems = [f"missing {', '.join(sorted(required - keys))}" if required - keys else "",
                        f"unknown {', '.join(sorted(keys - names))}" if keys - names else ""]
            raise UserInputError(f"{source} is not a pnode_zoo model card "
                                 f"({'; '.join(p for p in problems if p) or 'not a JSON object'})")
        prep = dict(values["preprocessing"])
        for key in ("input_shape", "label_names", "mean", "std"):
            if prep.get(key) is not None:
                prep[key] = tuple(prep[key])
        return cls(**{**values, "preprocessing": Preprocessing(**prep)})


def file_sha256(path: str | Path) -> str:
    """The sha256 of a file, in hex.

    Args:
        path: the file.
    """
    with Path(path).open("rb") as file:
        return hashlib.file_digest(file, "sha256").hexdigest()


def write_manifest(directory: str | Path) -> Path:
    """Write ``SHA256SUMS``: the sha256 of every other file of ``directory`` (``sha256sum``'s
    format), so a change to the card is found as a change to the weights is.

    Args:
        directory: a pretrained directory (its card and weights written).
    """
    directory = Path(directory)
    lines = [f"{file_sha256(path)}  {path.name}\n" for path in sorted(directory.iterdir())
             if path.is_file() and path.name != MANIFEST_FILE]
    manifest = directory / MANIFEST_FILE
    manifest.write_text("".join(lines))
    return manifest


def read_manifest(text: str, source: str) -> dict[str, str]:
    """File name -> sha256 of a ``SHA256SUMS`` text; UserInputError for a malformed line.

    Args:
        text: the manifest's content.
        source: where it came from, for messages.
    """
    digests = {}
    for number, line in enumerate(text.splitlines(), 1):
        digest, _, name = line.partition("  ")
        if len(digest) != 64 or not name or "/" in name or name.startswith("."):
            raise UserInputError(f"{source} line {number} is not `<sha256>  <file name>`; the "
                                 "directory was not loaded")
        digests[name] = digest
    return digests


def check_manifest(directory: str | Path) -> None:
    """UserInputError unless ``directory``'s ``SHA256SUMS`` lists its card (and its weights,
    where they lie beside the card) and every file it lists has that sha256.

    Args:
        directory: a pretrained directory.
    """
    directory = Path(directory)
    manifest = directory / MANIFEST_FILE
    if not manifest.is_file():
        raise UserInputError(f"{directory} holds no {MANIFEST_FILE}, so its card cannot be "
                             "checked; it was not loaded (save_pretrained and `python -m "
                             "pnode_zoo export` write one)")
    digests = read_manifest(manifest.read_text(), str(manifest))
    read = [CARD_FILE, *([WEIGHTS_FILE] if (directory / WEIGHTS_FILE).is_file() else [])]
    for name in [name for name in read if name not in digests]:
        raise UserInputError(f"{directory / name} is not listed in {manifest}; the directory "
                             "was not loaded")
    for name, expected in digests.items():
        path = directory / name
        if not path.is_file():
            raise UserInputError(f"{path} is listed in {manifest} but missing; the directory was "
                                 "not loaded")
        if (digest := file_sha256(path)) != expected:
            raise UserInputError(f"{path} has sha256 {digest}, but {manifest} says {expected}: "
                                 "the file was changed after it was saved; the directory was not "
                                 "loaded")


def create_transform(card: ModelCard) -> Callable[[Any], torch.Tensor]:
    """A function turning raw samples (array-like, one sample or a batch) into model inputs.

    It applies the card's preprocessing: float32, reshape of flat samples to the input shape
    (e.g. 64 pixel values to 1x8x8), ``scale``, then per-series z-normalisation or the
    per-channel mean and standard deviation, then (with ``pad``) the padding of a shorter series
    to the input length.

    Args:
        card: the model's card.
    """
    prep = card.preprocessing
    shape = tuple(prep.input_shape)
    size = int(torch.Size(shape).numel())

    def transform(samples: Any) -> torch.Tensor:
        x = torch.as_tensor(samples, dtype=torch.float32)
        short = (prep.pad is not None and x.dim() >= len(shape) and x.shape[-1] < shape[-1]
                 and tuple(x.shape[-len(shape):-1]) == shape[:-1])
        if not short and tuple(x.shape[-len(shape):]) != shape:
            if x.numel() % size:
                raise UserInputError(f"{card.name} takes samples of shape {list(shape)}, got "
                                     f"{list(x.shape)}")
            x = x.reshape(-1, *shape)
        x = x * prep.scale
        if prep.per_series:
            std = x.std(dim=-1, unbiased=False, keepdim=True)
            x = (x - x.mean(dim=-1, keepdim=True)) / torch.where(std > 0, std, 1.0)
        if prep.mean is not None and prep.std is not None:
            axis = prep.channel_axis % len(shape) - len(shape)  # counted from the end
            view = [1] * len(shape)
            view[axis] = -1
            x = (x - torch.tensor(prep.mean).view(view)) / torch.tensor(prep.std).view(view)
        if short:
            fill = x[..., -1:] if prep.pad == "last" else torch.zeros_like(x[..., :1])
            x = torch.cat([x, fill.expand(*x.shape[:-1], shape[-1] - x.shape[-1])], dim=-1)
        return x

    return transform
