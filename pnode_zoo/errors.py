"""The project's user-error class and close-match suggestions (standard library only, so every
layer may use them).

A ``UserInputError`` is a mistake in what the user asked for (an option out of range, a missing
or damaged file, a card naming a class the zoo does not have); the command line reports it as
one line and exit status 2. Any other exception is a bug, reported with its traceback. It is a
``ValueError``, so code that catches ValueError from the Python API keeps working.
"""

from __future__ import annotations

import difflib
from collections.abc import Iterable

__all__ = ["UserInputError", "did_you_mean"]


class UserInputError(ValueError):
    """A mistake in what the user asked for; reported as one line and exit status 2."""


def did_you_mean(word: str, choices: Iterable[str]) -> str:
    """`` (did you mean X?)`` for the closest of ``choices`` to ``word``, or "" if none is close.

    Args:
        word: what the user wrote.
        choices: the valid names.
    """
    choices = list(choices)
    lowered = {choice.lower(): choice for choice in choices}
    matches = difflib.get_close_matches(word.lower(), list(lowered), n=1, cutoff=0.6)
    return f" (did you mean {lowered[matches[0]]}?)" if matches else ""
