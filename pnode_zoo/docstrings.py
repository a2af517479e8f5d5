"""Google-style ``Args:`` sections read as data, so that a docstring assembled from several
places documents each argument once (standard library only, so every layer may use it):
``models.common.register_twins`` joins a builder's and its recipes' entries, the data modules
take the entries they do not write from their base classes."""

from __future__ import annotations

__all__ = ["split_args"]


def split_args(doc: str) -> tuple[str, dict[str, list[str]], str]:
    """A cleaned docstring (``inspect.cleandoc``) cut at its ``Args:`` section.

    Args:
        doc: the docstring, its ``Args:`` entries indented by four spaces and their
            continuation lines by eight.

    Returns:
        The text before ``Args:``, the section's entries by name (each its lines, continuation
        lines included) and the text after the section ("" where there is none).
    """
    head, _, section = doc.partition("Args:\n")
    entries: dict[str, list[str]] = {}
    key = ""
    lines = section.splitlines()
    for end, line in enumerate(lines):
        if not line.startswith("    "):
            return head, entries, "\n".join(lines[end:])
        if line.startswith("        "):
            entries[key].append(line)
        else:
            key = line.strip().partition(":")[0]
            entries[key] = [line]
    return head, entries, ""
