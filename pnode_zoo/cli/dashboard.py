"""``python -m pnode_zoo dashboard``: the W&B workspace of pnode_zoo's panels, defined as code.

One W&B section per section of ``pnode_zoo.training.panels.SECTIONS`` and one panel per ``Panel``
(built with ``wandb-workspaces``). With a W&B API key it saves the workspace in ENTITY/PROJECT
and prints its address; offline (no key, or ``WANDB_MODE`` offline or disabled) it writes the
workspace's definition as JSON and says so.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from jsonargparse import ArgumentParser, Namespace

from pnode_zoo.cli.console import wandb_has_api_key
from pnode_zoo.errors import UserInputError

__all__ = ["dashboard_command", "dashboard_parser", "workspace"]

DEFAULT_OUTPUT = "runs/dashboard.json"


def dashboard_parser() -> ArgumentParser:
    """The options of ``dashboard``."""
    parser = ArgumentParser(
        usage="python -m pnode_zoo dashboard --entity E [--project P] [--name NAME] "
              "[--output FILE]",
        description="Build the W&B workspace of pnode_zoo's panels (parareal diagnostics, "
                    "time-parallel timings, pictures) in ENTITY/PROJECT; offline, write its "
                    "definition to a file.",
    )
    parser.add_argument("--entity", required=True, help="W&B entity (user or team)")
    parser.add_argument("--project", default="pnode_zoo",
                        help="W&B project the runs log to (the CLI's default)")
    parser.add_argument("--name", default="pnode_zoo", help="the workspace's name")
    parser.add_argument("--output", default=DEFAULT_OUTPUT,
                        help="where the definition goes offline")
    return parser


def workspace(entity: str, project: str, name: str) -> Any:
    """A ``wandb_workspaces`` Workspace with one open section per ``SECTIONS`` entry.

    Args:
        entity: the W&B entity (user or team).
        project: the W&B project.
        name: the workspace's name.
    """
    try:
        import wandb_workspaces.reports.v2 as wr
        import wandb_workspaces.workspaces as ws
    except ImportError as err:
        raise UserInputError(
            "the dashboard needs wandb-workspaces: pip install 'pnode_zoo[dashboard]'") from err
    from pnode_zoo.training.panels import SECTIONS, Panel

    def build(panel: Panel) -> Any:
        if panel.kind == "image":
            return wr.MediaBrowser(title=panel.title, media_keys=list(panel.keys))
        if panel.kind == "table":
            (key,) = panel.keys
            return wr.WeavePanelSummaryTable(table_name=key)
        if panel.kind == "scalar":
            (key,) = panel.keys
            return wr.ScalarChart(title=panel.title, metric=key)
        if any("{" in key for key in panel.keys):
            (pattern,) = panel.patterns()
            return wr.LinePlot(title=panel.title, metric_regex=f"^{pattern.pattern}$")
        return wr.LinePlot(title=panel.title, y=list(panel.keys), log_y=panel.log_y or None)

    return ws.Workspace(
        entity=entity,
        project=project,
        name=name,
        settings=ws.WorkspaceSettings(x_axis="trainer/global_step"),
        sections=[ws.Section(name=section, panels=[build(p) for p in section_panels],
                             is_open=True)
                  for section, section_panels in SECTIONS.items()],
    )


def dashboard_command(options: Namespace) -> None:
    """Save the workspace online, or write its definition offline (see the module doc).

    Args:
        options: ``dashboard``'s parsed options.
    """
    view = workspace(options.entity, options.project, options.name)
    mode = os.environ.get("WANDB_MODE", "online")
    if wandb_has_api_key() and mode not in ("offline", "dryrun", "disabled"):
        try:
            view.save()
        except Exception as err:  # wandb raises several types for refusals and network errors
            raise UserInputError(
                f"W&B did not save the workspace in {options.entity}/{options.project}: {err}"
            ) from err
        print(f"W&B workspace saved: {view.url}")
        return
    output = Path(options.output)
    output.parent.mkdir(parents=True, exist_ok=True)
    # Private, and kept on purpose: `_spec` is the exact JSON that `save()` sends to W&B (the
    # definition a user can check or post later); wandb-workspaces 0.4 has no public name for
    # it. tests/test_private_apis.py fails, naming it, if it changes.
    output.write_text(json.dumps(view._spec, indent=1) + "\n")
    why = f"WANDB_MODE={mode}" if mode != "online" else "no API key found"
    print(f"W&B: {why}, so the workspace was not created; its definition is in {output} "
          f"(run this command again with a key to create it in "
          f"{options.entity}/{options.project}).")
