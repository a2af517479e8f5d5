"""Finding, verifying and loading pretrained weights: by name, from a directory or a URL.

A directory's ``SHA256SUMS`` is checked before its card is read, the card may name only the
zoo's own task and data module (``hub.card.check_names``; nothing is built from it here but the
registered network), and the weights are read only as safetensors, after their size and
sha256 match their card, so no file on this path can run code. Remote weights are downloaded
on first use (never at import) into torch's hub cache, ``torch.hub.get_dir()/pnode_zoo/``, and
checked again on every load.
"""

from __future__ import annotations

import dataclasses
import fnmatch
import hashlib
import logging
from pathlib import Path
from urllib.error import URLError

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file
from torch import nn

from pnode_zoo.errors import UserInputError, did_you_mean
from pnode_zoo.hub.card import (
    CARD_FILE,
    MANIFEST_FILE,
    WEIGHTS_FILE,
    ModelCard,
    check_manifest,
    check_names,
    file_sha256,
    read_manifest,
    write_manifest,
)
from pnode_zoo.models import registry

__all__ = [
    "PICKLE_MAGIC",
    "WEIGHTS_DIR",
    "check_card",
    "classifier_layer",
    "create_model",
    "create_pretrained",
    "from_pretrained",
    "list_pretrained",
    "load_pretrained",
    "load_weights",
    "pretrained_card",
    "read_card",
    "read_weights",
    "refuse_pickle",
    "resolve",
    "save_pretrained",
    "shipped",
    "verify",
    "weights_path",
]

#: the weights that ship with the package, one directory per name
WEIGHTS_DIR = Path(__file__).parent / "weights"
PICKLE_MAGIC = (b"PK\x03\x04", b"\x80")  # torch.save's zip archive, a bare pickle
log = logging.getLogger(__name__)


def shipped() -> dict[str, Path]:
    """The directories of the shipped pretrained models, by name."""
    if not WEIGHTS_DIR.is_dir():
        return {}
    return {path.name: path for path in sorted(WEIGHTS_DIR.iterdir())
            if (path / CARD_FILE).is_file()}


def list_pretrained(pattern: str = "*") -> list[str]:
    """Names of the pretrained models (``<architecture>.<data>``) that match a wildcard, sorted.

    Args:
        pattern: shell-style wildcard, e.g. ``"odenet*"`` or ``"*.digits"``.
    """
    return [name for name in shipped() if fnmatch.fnmatch(name, pattern)]


def read_card(directory: str | Path) -> ModelCard:
    """The card (``config.json``) of a pretrained directory, after its ``SHA256SUMS`` matched
    and its class paths were checked (``check_card``).

    Args:
        directory: a directory as ``save_pretrained`` writes it.
    """
    path = Path(directory) / CARD_FILE
    if not path.is_file():
        raise UserInputError(f"{directory} holds no {CARD_FILE}; a pretrained directory holds "
                             f"{CARD_FILE}, {WEIGHTS_FILE} and {MANIFEST_FILE} (see "
                             "save_pretrained)")
    check_manifest(directory)
    return check_card(ModelCard.from_json(path.read_text(), str(path)))


def check_card(card: ModelCard) -> ModelCard:
    """``card`` if its task and data name only the zoo's classes (``hub.card.check_names``);
    UserInputError naming the class otherwise. Imports nothing.

    Args:
        card: a card just read.
    """
    check_names(card.task, f"the card of {card.name}: its task")
    check_names(card.data, f"the card of {card.name}: its data")
    return card


def pretrained_card(name: str) -> ModelCard:
    """The card of a shipped pretrained model; UserInputError listing close names otherwise.

    Args:
        name: a name from ``list_pretrained()``.
    """
    directories = shipped()
    if name not in directories:
        raise UserInputError(f"no pretrained model named {name!r}"
                             f"{did_you_mean(name, directories)}; pretrained: "
                             f"{', '.join(directories) or 'none'}")
    return read_card(directories[name])


def _cache_dir() -> Path:
    return Path(torch.hub.get_dir()) / "pnode_zoo"


def _download(url: str, target: Path, sha256: str | None) -> Path:
    """``url`` downloaded to ``target`` unless already there (and, with ``sha256``, checked)."""
    if target.is_file():
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    try:
        torch.hub.download_url_to_file(url, str(target), hash_prefix=sha256, progress=False)
    except RuntimeError as err:
        if "invalid hash value" in str(err):
            raise UserInputError(f"the download of {url} has another sha256 than its card says "
                                 f"({sha256}); it was discarded") from None
        raise
    except (URLError, OSError) as err:
        raise UserInputError(f"could not download {url} ({err})") from None
    return target


def weights_path(card: ModelCard, directory: Path | None) -> Path:
    """The local weight file of ``card``: beside it in ``directory``, else downloaded once from
    its URL into the hub cache (content-addressed by sha256).

    Args:
        card: the card.
        directory: where the card was found (None for a card from a URL).
    """
    if directory is not None and (directory / WEIGHTS_FILE).is_file():
        return directory / WEIGHTS_FILE
    if card.url is None:
        raise UserInputError(f"{card.name}: no {WEIGHTS_FILE} in {directory} and no url on its "
                             "card")
    target = _cache_dir() / "weights" / f"{card.weights_sha256}.safetensors"
    return _download(card.url, target, card.weights_sha256)


def _from_url(url: str) -> tuple[ModelCard, Path]:
    """Card and weights of a pretrained directory at ``url`` (its card's url, else
    ``<url>/model.safetensors``), card and manifest downloaded once into the cache and the card
    checked against the manifest."""
    base = url.removesuffix(f"/{CARD_FILE}").rstrip("/")
    key = hashlib.sha256(base.encode()).hexdigest()[:16]
    manifest = _download(f"{base}/{MANIFEST_FILE}", _cache_dir() / "cards" / f"{key}.sha256",
                         None)
    digests = read_manifest(manifest.read_text(), f"{base}/{MANIFEST_FILE}")
    card_path = _download(f"{base}/{CARD_FILE}", _cache_dir() / "cards" / f"{key}.json", None)
    if file_sha256(card_path) != digests.get(CARD_FILE):
        card_path.unlink()
        raise UserInputError(f"{base}/{CARD_FILE} does not have the sha256 its {MANIFEST_FILE} "
                             "lists; it was discarded")
    card = check_card(ModelCard.from_json(card_path.read_text(), f"{base}/{CARD_FILE}"))
    if digests.get(WEIGHTS_FILE, card.weights_sha256) != card.weights_sha256:
        raise UserInputError(f"{base}/{MANIFEST_FILE} and its card list different weights; "
                             "they were not loaded")
    if card.url is None:
        card = dataclasses.replace(card, url=f"{base}/{WEIGHTS_FILE}")
    return card, weights_path(card, None)


def resolve(source: str | Path) -> tuple[ModelCard, Path]:
    """The card and the verified local weight file of a name, a directory or a URL.

    Args:
        source: a pretrained name, a directory holding config.json, model.safetensors and SHA256SUMS
            (or its model.safetensors), or the URL of such a directory.
    """
    text = str(source)
    if "://" in text:
        card, path = _from_url(text)
    elif Path(text).exists():
        path = Path(text)
        if path.is_file() and path.name == WEIGHTS_FILE:
            path = path.parent
        elif path.is_file():
            reason = refuse_pickle(path) or f"give the directory of its {CARD_FILE}"
            raise UserInputError(f"{path} is a file, not a pretrained directory; {reason}")
        card = read_card(path)
        path = weights_path(card, path)
    else:
        card = pretrained_card(text)
        path = weights_path(card, shipped()[text])
    verify(card, path)
    return card, path


def refuse_pickle(path: Path) -> str:
    """A sentence saying why ``path`` is not read, if it starts like a pickle; "" otherwise."""
    with path.open("rb") as file:
        head = file.read(4)
    if head.startswith(PICKLE_MAGIC):
        return ("it is a pickle (a Lightning checkpoint or torch.save file), which could run code "
                "when loaded, so it was not opened; convert a checkpoint of yours with "
                "`python -m pnode_zoo export CKPT DIR`")
    return ""


def verify(card: ModelCard, path: Path) -> None:
    """UserInputError unless ``path`` has the size and sha256 on ``card`` and is safetensors.

    Args:
        card: the card.
        path: the weight file.
    """
    digest = file_sha256(path)
    if digest != card.weights_sha256:
        raise UserInputError(f"{path} has sha256 {digest}, but the card of {card.name} says "
                             f"{card.weights_sha256}: the file is damaged or not these weights; it "
                             "was not loaded")
    if path.stat().st_size != card.weights_size:
        raise UserInputError(f"{path} has {path.stat().st_size} bytes, but the card of {card.name} "
                             f"says {card.weights_size}; it was not loaded")
    if reason := refuse_pickle(path):
        raise UserInputError(f"{path} is not safetensors: {reason}")


def read_weights(card: ModelCard, path: Path) -> dict[str, torch.Tensor]:
    """The tensors of a verified safetensors file.

    Args:
        card: its card, for messages.
        path: the file.
    """
    try:
        return load_file(path)
    except SafetensorError as err:
        raise UserInputError(f"{path} ({card.name}) is not a valid safetensors file "
                             f"({err})") from None


def classifier_layer(model: nn.Module) -> str:
    """Name of the model's last linear layer (its classification head)."""
    linear = [name for name, module in model.named_modules() if isinstance(module, nn.Linear)]
    return linear[-1] if linear else ""


def load_weights(model: nn.Module, state: dict[str, torch.Tensor], card: ModelCard,
                 new_head: bool = False) -> None:
    """Copy ``state`` into ``model``; UserInputError naming the first layer that does not fit.

    Args:
        model: a model of the card's architecture.
        state: the weights.
        card: their card, for messages.
        new_head: keep the model's own (freshly initialised) classifier where its shape differs
            from the weights' (another number of classes), saying so in one line.
    """
    expected = model.state_dict()
    head = classifier_layer(model)
    missing = [key for key in expected if key not in state]
    unexpected = [key for key in state if key not in expected]
    if missing or unexpected:
        found = f"missing {missing[0]}" if missing else f"unexpected {unexpected[0]}"
        raise UserInputError(f"the weights of {card.name} do not fit this {type(model).__name__}: "
                             f"{len(missing)} missing and {len(unexpected)} unexpected ({found}); "
                             f"they are for {card.arch}")
    replaced = []
    for key, value in expected.items():
        if state[key].shape == value.shape:
            continue
        if new_head and key.rpartition(".")[0] == head:
            state[key] = value
            replaced.append(key)
            continue
        raise UserInputError(f"layer {key} is {list(state[key].shape)} in the weights of "
                             f"{card.name} but {list(value.shape)} in this model; build it "
                             f"with the card's options ({card.arch}, {card.arch_args})")
    model.load_state_dict(state)
    if replaced:
        classes = card.arch_args.get("num_classes")
        log.warning("%s: new head %s for %s classes (the weights have %s); the rest is "
                    "pretrained", card.name, head, list(expected[replaced[0]].shape)[0], classes)


def create_model(name: str, pretrained: bool = False, **kwargs: object) -> nn.Module:
    """Build the registered model ``name``, or a pretrained name's, with the given options.

    Args:
        name: a registered model name (see ``list_models()``), or a pretrained name
            ``<architecture>.<data>`` (see ``list_pretrained()``), which builds the
            architecture with that card's options.
        pretrained: load pretrained weights (of ``name``, or of the architecture's first
            pretrained name).
        **kwargs: options of that model; unknown ones raise ValueError listing the valid ones.
    """
    if pretrained or "." in name:
        return create_pretrained(name, pretrained, **kwargs)
    return registry.create_model(name, **kwargs)


def create_pretrained(name: str, pretrained: bool = False, **kwargs: object) -> nn.Module:
    """A model of a pretrained name's architecture and options, with its weights if asked.

    After timm: ``odenet.digits`` selects a card; a bare architecture name with
    ``pretrained=True`` takes that architecture's first pretrained name. Options in
    ``kwargs`` override the card's; another ``num_classes`` gets a new head.

    Args:
        name: ``<architecture>.<data>`` or an architecture that has pretrained weights.
        pretrained: load the weights (False: the card's architecture, freshly initialised).
        **kwargs: constructor options that override the card's.
    """
    if "." not in name:
        names = list_pretrained(f"{name}.*")
        if not names:
            raise UserInputError(f"no pretrained weights for {name!r}; pretrained names: "
                                 f"{', '.join(list_pretrained()) or 'none'}")
        name = names[0]
    card = pretrained_card(name)
    model = registry.create_model(card.arch, **{**card.arch_args, **kwargs})
    if pretrained:
        _, path = resolve(name)
        load_weights(model, read_weights(card, path), card, new_head="num_classes" in kwargs)
    return model


def load_pretrained(source: str | Path) -> tuple[nn.Module, ModelCard]:
    """A pretrained model in eval mode and its card, from a name, a directory or a URL.

    Args:
        source: a name from ``list_pretrained()``, a directory as ``save_pretrained`` writes
            it, or the URL of one (``https://``, ``file://``); remote weights are downloaded
            once into ``torch.hub.get_dir()``.
    """
    card, path = resolve(source)
    model = registry.create_model(card.arch, **card.arch_args)
    load_weights(model, read_weights(card, path), card)
    return model.eval(), card


def from_pretrained(directory: str | Path) -> tuple[nn.Module, ModelCard]:
    """The model and card of a directory that ``save_pretrained`` wrote (or a URL of one).

    Args:
        directory: holds ``config.json`` and ``model.safetensors``.
    """
    if "://" not in str(directory) and not Path(directory).is_dir():
        raise UserInputError(f"{directory} is not a directory; give one holding {CARD_FILE} and "
                             f"{WEIGHTS_FILE}")
    return load_pretrained(directory)


def save_pretrained(model: nn.Module, card: ModelCard, directory: str | Path) -> ModelCard:
    """Write ``model.safetensors``, ``config.json`` and their ``SHA256SUMS`` into ``directory``;
    return the card with the weights' size, sha256 and parameter count filled in.

    Args:
        model: the network (a registry model, not the Lightning task).
        card: its card (weight fields are recomputed).
        directory: created if missing.
    """
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    weights = directory / WEIGHTS_FILE
    save_file({key: value.detach().contiguous() for key, value in model.state_dict().items()},
              weights)
    card = dataclasses.replace(
        card, weights_size=weights.stat().st_size, weights_sha256=file_sha256(weights),
        num_parameters=sum(p.numel() for p in model.parameters() if p.requires_grad))
    (directory / CARD_FILE).write_text(card.to_json())
    write_manifest(directory)
    return card
