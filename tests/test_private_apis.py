"""The private third-party names pnode_zoo's command line still uses, each checked here so that
a library update that removes or changes one fails by name instead of deep inside a run.

Each name's comment at its use says why no public route serves (pnode_zoo/cli/).
"""

from __future__ import annotations

import pytest


def test_wandb_logger_keeps_its_init_arguments_with_anonymous(tmp_path, monkeypatch):
    # pnode_zoo/cli/lightning_cli.py pops "anonymous" from WandbLogger._wandb_init
    monkeypatch.setenv("WANDB_MODE", "offline")
    from pytorch_lightning.loggers import WandbLogger

    logger = WandbLogger(project="p", save_dir=str(tmp_path))
    init = getattr(logger, "_wandb_init", None)
    if not isinstance(init, dict) or "anonymous" not in init:
        pytest.fail("pytorch_lightning's WandbLogger._wandb_init (a dict of wandb.init's "
                    "arguments holding 'anonymous') changed: revisit PnodeCLI._check_and_prepare")


def test_wandb_workspace_spec_is_the_saved_definition():
    # pnode_zoo/cli/dashboard.py writes Workspace._spec offline
    from pnode_zoo.cli.dashboard import workspace

    spec = getattr(workspace("e", "p", "n"), "_spec", None)
    if not isinstance(spec, dict) or "sections" not in spec.get("spec", {}).get(
            "section", {}).get("panelBankConfig", {}):
        pytest.fail("wandb_workspaces' Workspace._spec (the JSON save() sends) changed: "
                    "revisit dashboard_command's offline definition")
