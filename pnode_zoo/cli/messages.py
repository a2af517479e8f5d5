"""jsonargparse's errors as one sentence: the option, what was given, what was expected.

jsonargparse reports a bad value as a dump of every union member it tried (``Parser key "model":
Does not validate against any of the Union subtypes ...``). ``explain_argument_error`` reads
the option, the value and the expected types out of that text; each message shape it rewrites
has a golden test in ``tests/test_cli_messages.py``. No Lightning here: the subcommands that
are not training parse with jsonargparse too.
"""

from __future__ import annotations

import inspect
import re
from collections.abc import Collection
from typing import Any

from pnode_zoo.errors import did_you_mean

__all__ = ["explain_argument_error"]

#: abstract bases, never a class a user names
BASE_CLASSES = {"Task", "TensorDataModule", "ImageDataModule", "TrajectoryDataModule"}


def _import(path: str) -> Any:
    module, _, name = path.rpartition(".")
    return getattr(__import__(module, fromlist=[name]), name)


def _subclass_names(base_path: str) -> list[str]:
    """Names of the imported subclasses of ``base_path`` (what a short class name may be)."""
    try:
        base = _import(base_path)
    except (ImportError, AttributeError, ValueError):
        return []
    found, todo = set(), [base]
    while todo:
        for sub in todo.pop().__subclasses__():
            if sub not in found:
                found.add(sub)
                todo.append(sub)
    return sorted({sub.__name__ for sub in found} - BASE_CLASSES)


def _block(message: str, heading: str) -> str:
    """The last line of ``message`` holding ``heading`` and the more indented lines below it."""
    lines = message.splitlines()
    start = max(i for i, line in enumerate(lines) if heading in line)
    indent = len(lines[start]) - len(lines[start].lstrip())
    block = [lines[start]]
    for line in lines[start + 1:]:
        if line.strip() and len(line) - len(line.lstrip()) <= indent:
            break
        block.append(line)
    return "\n".join(block)


def _first_line(first: str, options: list[str]) -> str | None:
    """The shapes told by the first line alone: unknown options and subcommands, missing
    arguments (an option if ``options`` has it, else a positional, named in capitals)."""
    if match := re.match(r"unrecognized arguments: (\S+)", first, re.IGNORECASE):
        option = match.group(1).split("=", 1)[0]
        if not option.startswith("-"):
            return f"unexpected argument {option!r}"
        return f"unknown option {option}{did_you_mean(option, options)}"
    if match := re.match(r"Group '([^']+)' does not accept option '([^']+)'|"
                         r"Option '([^']+)' is not accepted", first):
        group, key, top = match.groups()
        option = f"--{group}.{key}" if group else f"--{top}"
        return f"unknown option {option} in the config{did_you_mean(option, options)}"
    if match := re.search(r"invalid choice: '([^']+)' \(choose from (.*)\)", first):
        choices = re.findall(r"'([^']+)'", match.group(2))
        return f"unknown subcommand {match.group(1)!r}{did_you_mean(match.group(1), choices)}"
    if match := re.match(r"the following arguments are required: (.*)", first):
        names = [name.rsplit(".", 1)[-1] for name in match.group(1).split(", ")]
        given = [f"--{name}" if f"--{name}" in options else name.upper() for name in names]
        return f"{' and '.join(given)} {'is' if len(given) == 1 else 'are'} required"
    return None


def _class_problem(message: str, key: str, hidden: Collection[str]) -> str | None:
    """The shapes of a class option: an option its class lacks, a class that does not exist."""
    class_path = re.search(r"Problem with given class_path '([^']+)'", message)
    if (match := re.search(r"Option '([^']+)' is not accepted", message)) and class_path:
        cls = _import(class_path.group(1))
        accepted = [name for name in inspect.signature(cls).parameters if name not in hidden]
        return (f"unknown option --{key}.{match.group(1)}: {cls.__name__} has no option "
                f"{match.group(1)!r}{did_you_mean(match.group(1), accepted)}; its options: "
                f"{', '.join(accepted)}")
    nested = re.search(r"NestedArg\(key='([^']*)'", message)
    if (match := re.search(r"Expected a dot import path string: (\S+)", message)) and nested:
        return (f"--{key}.{nested.group(1)}: options of --{key} need its class name, not "
                f"{match.group(1)!r} (e.g. --trainer.strategy=TimeParallelStrategy)")
    if match:
        subtypes = re.search(r"Subtypes: \[.*?<class '(\w+\.[\w.]+)'>", message)
        choices = _subclass_names(subtypes.group(1)) if subtypes else []
        known = f"; known: {', '.join(choices)}" if choices else ""
        return (f"--{key}: no class named {match.group(1)!r}"
                f"{did_you_mean(match.group(1), choices)}{known}")
    return None


def _wrong_value(message: str, keys: list[str]) -> str:
    """The shape of a value of the wrong type: ``--option: expected T, got V``."""
    inner_key = ".".join(keys[1:])
    option = f"--{keys[0]}.{inner_key}" if inner_key else f"--{keys[0]}"
    innermost = _block(message, f'Parser key "{keys[-1]}"')  # the option's own errors
    given = re.findall(r"(?:Got value|Given value): (.*)", innermost)
    value = given[-1].strip() if given else "?"
    if nested := re.fullmatch(r"NestedArg\(key='[^']*', val=(.*)\)", value):
        value = nested.group(1)
    types = re.findall(r"Expected a <class '(?:[\w.]+\.)?(\w+)'>", innermost)
    literals = re.findall(r"Expected a typing\.Literal\[(.*)\]", innermost)
    names = [name for name in dict.fromkeys(types) if name != "NoneType"]
    if literals:
        names.append(f"one of {', '.join(dict.fromkeys(', '.join(literals).split(', ')))}")
    if "NoneType" in types:
        names.append("null")
    wanted = " or ".join(names) if names else "another value"
    return f"{option}: expected {wanted}, got {value}"


def explain_argument_error(message: str, options: list[str],
                           hidden: Collection[str] = ()) -> str:
    """One sentence for a jsonargparse error: the option, what was given, what was expected.

    Args:
        message: the text of jsonargparse's ArgumentError (often a dump of nested attempts).
        options: the option strings of the command, for close-match suggestions.
        hidden: a class's parameters not to list among its options (those the CLI links).
    """
    first = message.strip().splitlines()[0] if message.strip() else "invalid arguments"
    if (sentence := _first_line(first, options)) is not None:
        return sentence
    keys = re.findall(r'Parser key "([^"]+)"', message)
    if not keys:
        return first
    return _class_problem(message, keys[0], hidden) or _wrong_value(message, keys)
