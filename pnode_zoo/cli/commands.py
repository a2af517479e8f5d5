"""``models [NAME]``, ``pretrained list | show | eval`` and ``export CKPT DIR``: the registry and
the hub on the command line.

Each subcommand is a jsonargparse parser (``*_parser``) and a handler of its parsed options
(``*_command``), put together in ``app.COMMANDS``. ``models``, ``pretrained list`` and ``show``
import no Lightning. A bad name or path, a damaged directory or a card naming a class the zoo
does not have is a ``UserInputError`` (one line, exit 2).
"""

from __future__ import annotations

import inspect
import re
import shutil
import sys
import textwrap
from collections.abc import Callable

from jsonargparse import ArgumentParser, Namespace

from pnode_zoo.cli.console import quiet
from pnode_zoo.errors import UserInputError

__all__ = ["PRETRAINED_ACTIONS", "add_pretrained_actions", "export_command", "export_parser",
           "first_sentences", "models_command", "models_parser", "pretrained_command",
           "pretrained_parser"]

PROG = "python -m pnode_zoo"
NAME_WIDTH = 24  # the models listing's name column
ABBREVIATIONS = ("e.g.", "i.e.", "al.", "vs.", "cf.")  # a full stop that ends no sentence


def first_sentences(doc: str) -> str:
    """The first sentence of a docstring's first paragraph, whole (its lines joined).

    Args:
        doc: the docstring.
    """
    paragraph = " ".join(doc.split("\n\n", 1)[0].split())
    for end in re.finditer(r"[.!?](?=\s+[A-Z`])", paragraph):
        if not paragraph[:end.end()].endswith(ABBREVIATIONS):
            return paragraph[:end.end()]
    return paragraph


def models_parser() -> ArgumentParser:
    """The options of ``models``."""
    parser = ArgumentParser(usage=f"{PROG} models [NAME]",
                            description="List the registered models, each with the first "
                                        "sentence of its description; `models NAME` prints "
                                        "one model's signature and options (its Args).")
    parser.add_argument("name", nargs="?", help="a registered model (default: list them all)")
    return parser


def models_command(options: Namespace) -> None:
    """Print the registry, or the options of one model (its docstring's Args).

    Args:
        options: ``models``' parsed options.
    """
    from pnode_zoo.models import list_models, model_entry

    if options.name is None:
        width = min(shutil.get_terminal_size().columns, 100)
        for name in list_models():
            print(textwrap.fill(first_sentences(inspect.getdoc(model_entry(name)) or ""), width,
                                initial_indent=f"{name:<{NAME_WIDTH}} ",
                                subsequent_indent=" " * (NAME_WIDTH + 1),
                                break_on_hyphens=False, break_long_words=False))
        return
    try:
        entry = model_entry(options.name)
    except ValueError as err:
        raise UserInputError(str(err)) from err
    print(f"{options.name}{inspect.signature(entry)}\n\n{inspect.getdoc(entry)}")


def _named(action: str, description: str) -> ArgumentParser:
    """A parser of one pretrained model, named by position or by ``--name``."""
    parser = ArgumentParser(usage=f"{PROG} pretrained {action} (NAME | --name NAME)",
                            description=description)
    parser.add_argument("source", nargs="?", metavar="NAME",
                        help="a pretrained name (see `pretrained list`) or a directory as "
                             "`export` or save_pretrained writes it")
    parser.add_argument("--name", help="the same, as an option")
    return parser


def _listing() -> ArgumentParser:
    parser = ArgumentParser(usage=f"{PROG} pretrained list [PATTERN]",
                            description="List the pretrained models: name, data set, test "
                                        "metric, parameters, file size.")
    parser.add_argument("pattern", nargs="?", default="*",
                        help="a wildcard over the names (default: all)")
    return parser


#: the actions of ``pretrained``: name -> (summary, its parser)
PRETRAINED_ACTIONS: dict[str, tuple[str, Callable[[], ArgumentParser]]] = {
    "list": ("the pretrained models (the default)", _listing),
    "show": ("one model's card", lambda: _named("show", "Print a pretrained model's card "
                                                "(config.json).")),
    "eval": ("measure one model's test metric again",
             lambda: _named("eval", "Measure a pretrained model's test metric and compare it "
                                    "with its card's (exit status 1 if it does not reproduce "
                                    "it).")),
}


def pretrained_parser() -> ArgumentParser:
    """The options of ``pretrained``; its actions come with ``add_pretrained_actions``."""
    return ArgumentParser(usage=f"{PROG} pretrained {{list [PATTERN] | show NAME | eval NAME|DIR}}",
                          description="The pretrained weights that ship with pnode_zoo: list "
                                      "them (the default), show one's card, or evaluate one.")


def add_pretrained_actions(parser: ArgumentParser) -> None:
    """Add the actions of ``pretrained`` to its parser, once that parser is a subcommand of
    the program's (jsonargparse adds nested subcommands level by level).

    Args:
        parser: ``pretrained_parser()``'s parser.
    """
    actions = parser.add_subcommands(dest="action", required=False)
    for name, (summary, make_parser) in PRETRAINED_ACTIONS.items():
        actions.add_subcommand(name, make_parser(), help=summary)


def pretrained_command(options: Namespace) -> None:
    """``pretrained list [PATTERN]``, ``show NAME`` (the card) or ``eval NAME|DIR`` (its
    metric; a directory as ``save_pretrained`` or ``export`` writes it).

    Args:
        options: ``pretrained``'s parsed options.
    """
    from pnode_zoo.hub import list_pretrained, pretrained_card

    action = options.action or "list"
    if action == "list":
        print(f"{'name':<40} {'data set':<20} {'test metric':<20} {'parameters':>10} "
              f"{'file':>9}")
        for name in list_pretrained(options.list.pattern if options.list else "*"):
            card = pretrained_card(name)
            metric = f"{card.metric} {card.metric_value:.4f}"
            print(f"{name:<40} {card.dataset:<20} {metric:<20} {card.num_parameters:>10,} "
                  f"{card.weights_size / 1024:>6.0f} KB")
        return
    chosen = options[action]
    given = [value for value in (chosen.source, chosen.name) if value]
    if len(given) != 1:
        usage = PRETRAINED_ACTIONS[action][1]().format_usage().strip()
        raise UserInputError(f"pretrained {action} takes one pretrained model; {usage}")
    if action == "show":
        print(pretrained_card(given[0]).to_json(), end="")
        return
    evaluate_command(given[0])


def evaluate_command(source: str) -> None:
    """Measure a pretrained model's test metric and compare it with its card's (exit 1 if it
    does not reproduce it: ``hub.export.reproduces``).

    Args:
        source: a pretrained name or directory.
    """
    from pnode_zoo.hub import load_pretrained
    from pnode_zoo.hub.export import evaluate, reproduces

    quiet()
    model, card = load_pretrained(source)
    value = evaluate(card, model)
    print(f"{card.name}: {card.metric} {value!r} on the {card.dataset} {card.split} split "
          f"(card: {card.metric_value!r})")
    if not reproduces(card, value):
        sys.exit(f"error: {card.name} does not reproduce its card's {card.metric}")


def export_parser() -> ArgumentParser:
    """The options of ``export``."""
    parser = ArgumentParser(usage=f"{PROG} export CKPT DIR [--name NAME]",
                            description="Turn a Lightning checkpoint written by `fit` into a "
                                        "pretrained directory: config.json (the card, with the "
                                        "test metric measured on the exported weights) + "
                                        "model.safetensors + SHA256SUMS.")
    parser.add_argument("ckpt", metavar="CKPT", help="the checkpoint (.ckpt) in a run directory")
    parser.add_argument("dir", metavar="DIR", help="the directory to write")
    parser.add_argument("--name", help="the pretrained name (default: <arch>.<data>)")
    return parser


def export_command(options: Namespace) -> None:
    """``export CKPT DIR [--name NAME]``: a Lightning checkpoint as card + safetensors.

    Args:
        options: ``export``'s parsed options.
    """
    from pnode_zoo.hub.export import export_checkpoint

    quiet()
    card = export_checkpoint(options.ckpt, options.dir, options.name)
    print(f"{card.name}: {card.metric} {card.metric_value:.4f}, {card.weights_size:,} bytes "
          f"-> {options.dir} (load it with pnode_zoo.from_pretrained({options.dir!r}))")
