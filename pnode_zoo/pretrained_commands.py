"""``pretrained list | show NAME | eval NAME|DIR`` and ``export CKPT DIR``: the hub on the
command line.

Handlers of ``cli.SUBCOMMANDS``; ``list`` and ``show`` import no Lightning. A bad name or path,
a damaged directory or a card naming a class the zoo does not have is the hub's
``UserInputError`` (one line, exit 2).
"""

from __future__ import annotations

import sys

from pnode_zoo.errors import UserInputError

PRETRAINED_USAGE = ("usage: python -m pnode_zoo pretrained {list [PATTERN] | show NAME | "
                    "eval NAME|DIR}")
EXPORT_USAGE = "usage: python -m pnode_zoo export CKPT DIR [--name NAME]"


def pretrained_command(args: list[str]) -> None:
    """``pretrained list [PATTERN]``, ``show NAME`` (the card) or ``eval NAME|DIR`` (its
    metric; a directory as ``save_pretrained`` or ``export`` writes it)."""
    from pnode_zoo.hub import list_pretrained, pretrained_card

    action, rest = (args[0], args[1:]) if args else ("list", [])
    if action in ("-h", "--help"):
        print(PRETRAINED_USAGE)
        return
    if action == "list" and len(rest) <= 1:
        print(f"{'name':<40} {'data set':<20} {'test metric':<20} {'parameters':>10} "
              f"{'file':>9}")
        for name in list_pretrained(*rest):
            card = pretrained_card(name)
            metric = f"{card.metric} {card.metric_value:.4f}"
            print(f"{name:<40} {card.dataset:<20} {metric:<20} {card.num_parameters:>10,} "
                  f"{card.weights_size / 1024:>6.0f} KB")
        return
    if action not in ("show", "eval") or len(rest) != 1:
        raise UserInputError(f"pretrained {' '.join(args)}: {PRETRAINED_USAGE}")
    if action == "show":
        print(pretrained_card(rest[0]).to_json(), end="")
        return
    evaluate_command(rest[0])


def evaluate_command(source: str) -> None:
    """Measure a pretrained model's test metric and compare it with its card's (exit 1 if it
    does not reproduce it: ``hub.export.reproduces``)."""
    from pnode_zoo.hub import load_pretrained
    from pnode_zoo.hub.export import evaluate, reproduces
    from pnode_zoo.lightning_cli import quiet

    quiet()
    model, card = load_pretrained(source)
    value = evaluate(card, model)
    print(f"{card.name}: {card.metric} {value!r} on the {card.dataset} {card.split} split "
          f"(card: {card.metric_value!r})")
    if not reproduces(card, value):
        sys.exit(f"error: {card.name} does not reproduce its card's {card.metric}")


def export_command(args: list[str]) -> None:
    """``export CKPT DIR [--name NAME]``: a Lightning checkpoint as card + safetensors."""
    name = None
    if len(args) == 4 and args[2] == "--name":
        name, args = args[3], args[:2]
    if args[:1] in (["-h"], ["--help"]):
        print(EXPORT_USAGE)
        return
    if len(args) != 2:
        raise UserInputError(f"export {' '.join(args)}: {EXPORT_USAGE}")
    from pnode_zoo.hub.export import export_checkpoint
    from pnode_zoo.lightning_cli import quiet

    quiet()
    card = export_checkpoint(args[0], args[1], name)
    print(f"{card.name}: {card.metric} {card.metric_value:.4f}, {card.weights_size:,} bytes "
          f"-> {args[1]} (load it with pnode_zoo.from_pretrained({args[1]!r}))")
