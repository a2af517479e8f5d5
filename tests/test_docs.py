"""The README and the docs pages hold no figure that no command wrote, and name no file that the
repository does not have.

A figure is a number with a decimal point or an exponent, or one with a unit (%, ×, a time, a
size). Each must appear, as the same value, in a generated file: the benchmark tables
(docs/benchmarks/*.md, written by benchmarks/*.py), the pretrained cards or the pretrained table
(written by ``python -m pnode_zoo.hub.regenerate`` and ``.table``). Fenced code blocks and
inline code are commands, options and code, not figures. The few figures that are not
measurements (versions, a configured value, a tolerance a test asserts) are listed in EXEMPT,
each with the reason and the exact text it excuses; an unused or unneeded exemption fails
too.
"""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

import pytest
from clitools import DOC_PAGES, REPO

from pnode_zoo.hub.table import section, table

GENERATED_PAGES = sorted((REPO / "docs" / "benchmarks").glob("*.md"))
CARDS = sorted((REPO / "pnode_zoo" / "hub" / "weights").glob("*/config.json"))

# the exact text (on one line of the page) -> why its figures need no generated source
EXEMPT = {
    "every gradient to ≤ 1e-10": "a tolerance tests/distributed asserts",
    "Tested to 1e-10 in float64": "the same tolerance (docs/ARCHITECTURE.md)",
    "values to 1e-11, gradients of every mode to 1e-9": "tolerances tests/ode/test_fuzz.py asserts",
    "20 s deadline each": "a setting of tests/ode/test_fuzz.py (hypothesis' deadline)",
    "The collective timeout (default 300 s)": "a configured default (TimeParallelStrategy)",
    "collective timeout (default 300 s, five minutes)": "the same default (docs/RELIABILITY.md)",
    "a 2-rank fit ends within 20 s": "the bound tests/distributed/test_failure.py asserts",
}

NUMBER = r"\d+(?:,\d{3})*(?:\.\d+)?(?:e[-+]?\d+)?"
UNIT = r"(?:%|×(?!\d)|µs|ms|s|min|minutes?|h|hours?|seconds|GB/s|GB|MB|KB|kB|MiB|GiB)(?![\w])"
FIGURE = re.compile(rf"(?<![\w.\-/])(?:\d+ min \d\d s|{NUMBER}(?:\s?{UNIT})?)")


def _prose(text: str) -> str:
    """The page without its fenced blocks, inline code, HTML comments and link targets."""
    text = re.sub(r"^```.*?^```", "", text, flags=re.M | re.S)
    text = re.sub(r"<!--.*?-->", "", text, flags=re.S)
    text = re.sub(r"`[^`\n]*`", "``", text)
    return re.sub(r"\]\([^)]*\)", "]()", text)


def _value(number: str) -> float:
    return float(number.replace(",", ""))


def figures(text: str) -> list[tuple[str, str]]:
    """(figure, its line) of every figure in a page's prose."""
    found = []
    for line in _prose(text).splitlines():
        for match in FIGURE.finditer(line):
            token = match.group(0)
            if re.fullmatch(NUMBER, token) and not re.search(r"[.e]", token):
                continue  # an integer without a unit is a count or a setting, not a figure
            found.append((token, line))
    return found


def _sources() -> tuple[set[float], set[str]]:
    """The values of every number in the generated files, and their figures with a unit."""
    text = "\n".join([p.read_text() for p in [*GENERATED_PAGES, *CARDS]] + [table()])
    return ({_value(n) for n in re.findall(NUMBER, text)},
            {re.sub(r"\s", "", m.group(0)) for m in FIGURE.finditer(text)})


def _sourced(token: str, values: set[float], figures_with_units: set[str]) -> bool:
    """A decimal figure by its value; a whole number only with its unit ("12 min", not 12)."""
    number = re.match(NUMBER, token).group(0)
    if re.search(r"[.e]", number):
        return _value(number) in values
    return re.sub(r"\s", "", token) in figures_with_units


def _page_text(page: Path) -> str:
    text = page.read_text()
    generated = section(text)
    return text.replace(generated, "") if generated else text


@pytest.mark.parametrize("page", DOC_PAGES, ids=lambda p: str(p.relative_to(REPO)))
def test_every_figure_comes_from_a_generated_file(page: Path) -> None:
    sources = _sources()
    missing = []
    for token, line in figures(_page_text(page)):
        if any(phrase in line for phrase in EXEMPT):
            continue
        if not _sourced(token, *sources):
            missing.append(f"{token!r} in: {line.strip()[:160]}")
    assert not missing, (
        f"{page.name}: figures that no generated file holds (quote a table under docs/benchmarks/"
        "or the pretrained table, or drop the figure):\n" + "\n".join(missing))


def test_every_exemption_is_used_once_and_needed() -> None:
    texts = [_prose(p.read_text()) for p in DOC_PAGES]
    sources = _sources()
    for phrase in EXEMPT:
        assert sum(t.count(phrase) for t in texts) == 1, f"EXEMPT phrase {phrase!r}"
        assert not all(_sourced(t, *sources) for t, _ in figures(phrase)), (
            f"EXEMPT phrase {phrase!r}: its figures are in generated files, drop the exemption")


def test_a_typed_figure_is_caught() -> None:
    page = "The fit took 4 min 08 s, test accuracy 98.61 %, 1.7× faster; `--lr 0.25` is code."
    assert [t for t, _ in figures(page)] == ["4 min 08 s", "98.61 %", "1.7×"]
    sources = _sources()
    assert not any(_sourced(t, *sources) for t in ["4 min 08 s", "98.61 %", "12 min"])
    # the pretrained table's first row, and adjoint_micro_batches.md's 1.23
    assert all(_sourced(t, *sources) for t in ["6 min 44 s", "99.17 %", "1.23×"])
    assert [t for t, _ in figures("8×8 digits, 2 ranks, N = 8, commit 72b2698")] == []


def test_a_dirty_header_is_quoted_as_it_is() -> None:
    dirty = {h for page in GENERATED_PAGES
             for h in re.findall(r"commit (\w+) \(?with uncommitted changes", page.read_text())}
    assert dirty  # four tables were measured on a dirty tree (docs/PERFORMANCE.md)
    for page in DOC_PAGES:
        text = " ".join(page.read_text().split())
        for commit in dirty:
            for match in re.finditer(rf"commit {commit}\b(.{{0,30}})", text):
                assert "with uncommitted changes" in match.group(1), (
                    f"{page.name} cites commit {commit} without its header's qualifier")


# --- file references -------------------------------------------------------------------------

LINK = re.compile(r"\]\(([^)\s]+)\)")
# a path in prose or inline code: a folder of the repository and what follows, or a file name
PATH = re.compile(r"(?<![\w/.<-])((?:\.ci|benchmarks|configs|datasets|docs|pnode_zoo|tests)/"
                  r"[\w./-]*|[\w-]+\.(?:md|py|toml|txt))(?![\w/])")


def _tracked() -> list[str]:
    return subprocess.run(["git", "ls-files", "--cached", "--others", "--exclude-standard"],
                          cwd=REPO, capture_output=True, text=True, check=True).stdout.splitlines()


def _exists(reference: str, page: Path, tracked: list[str]) -> bool:
    reference = reference.split("::")[0].split("#")[0]
    if not reference or any((base / reference).exists() for base in (page.parent, REPO)):
        return True
    # a bare file name ("monitor.py"): some file of the repository has it
    return "/" not in reference and any(Path(p).name == reference for p in tracked)


def references(text: str) -> list[str]:
    """Relative link targets and file paths a page names (fenced code blocks left out: a
    command's paths are checked by running it, tests/test_readme.py)."""
    text = re.sub(r"^```.*?^```", "", text, flags=re.M | re.S)
    links = [t for t in LINK.findall(text) if not re.match(r"[a-z]+:", t)]
    spans = [m.group(1) for m in PATH.finditer(text)
             if not re.search(r"[<*{]|NAME|TASK|/runs?/", m.group(1))]
    return links + spans


@pytest.mark.parametrize("page", [*DOC_PAGES, *GENERATED_PAGES],
                         ids=lambda p: str(p.relative_to(REPO)))
def test_every_file_a_page_names_is_in_the_repository(page: Path) -> None:
    tracked = _tracked()
    missing = [r for r in references(page.read_text()) if not _exists(r, page, tracked)]
    assert not missing, f"{page.name} names files the repository lacks: {missing}"


def test_a_missing_file_is_caught() -> None:
    page = ("Formulas from BENCHMARKING.md; see [memory](docs/benchmarks/memory.md) and "
            "`tests/nope.py`.")
    tracked = _tracked()
    missing = [r for r in references(page) if not _exists(r, REPO / "README.md", tracked)]
    assert missing == ["BENCHMARKING.md", "tests/nope.py"]
