"""The pictures draw what they are given (read back from the matplotlib artists)."""

from __future__ import annotations

import pytest
import torch
from matplotlib.colors import to_hex

from pnode_zoo.training.figures import (
    TIMELINE_COLORS,
    confusion_figure,
    residual_figure,
    timeline_figure,
)


def test_timeline_puts_each_event_in_its_ranks_lane_in_milliseconds():
    timelines = [
        [("coarse", 10.000, 10.001), ("fine", 10.001, 10.004), ("comm", 10.004, 10.0045)],
        [("wait", 10.0005, 10.0045), ("fine", 10.0045, 10.0075)],
    ]
    figure = timeline_figure(timelines, "one step")
    axis = figure.axes[0]
    kinds = {to_hex(color): kind for kind, color in TIMELINE_COLORS.items()}
    bars = {}
    for collection in axis.collections:
        kind = kinds[to_hex(collection.get_facecolor()[0])]
        for path in collection.get_paths():
            (x0, y0), (x1, y1) = path.vertices.min(axis=0), path.vertices.max(axis=0)
            bars[(kind, round((y0 + y1) / 2))] = (x0, x1 - x0)
    assert bars == {
        ("coarse", 0): pytest.approx((0.0, 1.0)),
        ("fine", 0): pytest.approx((1.0, 3.0)),
        ("comm", 0): pytest.approx((4.0, 0.5)),
        ("wait", 1): pytest.approx((0.5, 4.0)),
        ("fine", 1): pytest.approx((4.5, 3.0)),
    }
    (legend,) = figure.legends
    assert sorted(t.get_text() for t in legend.get_texts()) == [
        "coarse", "comm", "fine", "wait"]


def test_residual_figure_has_one_line_per_epoch_and_the_tolerance():
    curves = [(0, [1e-1, 1e-2], [3e-1, 2e-2, 1e-3]), (1, [5e-2, 4e-3], [2e-1, 1e-2, 5e-4])]
    forward, backward = residual_figure(curves, tol=1e-3).axes
    lines = [line for line in forward.get_lines() if line.get_label().startswith("epoch")]
    assert [list(line.get_ydata()) for line in lines] == [[1e-1, 1e-2], [5e-2, 4e-3]]
    assert [list(line.get_ydata()) for line in backward.get_lines()] == [c[2] for c in curves]
    assert any(list(line.get_ydata()) == [1e-3, 1e-3] for line in forward.get_lines())


def test_confusion_figure_writes_the_counts_and_the_total():
    matrix = torch.tensor([[5, 1], [0, 4]])
    axis = confusion_figure(matrix, "validation").axes[0]
    assert sorted(t.get_text() for t in axis.texts) == ["1", "4", "5"]
    assert axis.get_title() == "validation: 9 of 10 right"
