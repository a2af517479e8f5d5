"""The project's user-error class (standard library only, so every layer may raise it).

A ``UserInputError`` is a mistake in what the user asked for (an option out of range, a missing
or damaged file, a card naming a class the zoo does not have); the command line reports it as
one line and exit status 2. Any other exception is a bug, reported with its traceback. It is a
``ValueError``, so code that catches ValueError from the Python API keeps working.
"""

from __future__ import annotations

__all__ = ["UserInputError"]


class UserInputError(ValueError):
    """A mistake in what the user asked for; reported as one line and exit status 2."""
