"""Close-match suggestions for error messages (no imports beyond the standard library, so every
layer may use it)."""

from __future__ import annotations

import difflib
from collections.abc import Iterable


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
