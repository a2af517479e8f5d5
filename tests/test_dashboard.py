"""The dashboard subcommand in one process: online it saves the workspace, offline it writes it.

That every panel names a key a real run logs is checked in test_wandb_logging.py.
"""

from __future__ import annotations

import json

import pytest
import wandb_workspaces.workspaces as ws

from pnode_zoo.cli import dashboard
from pnode_zoo.errors import UserInputError
from pnode_zoo.training import panels


def run(args: list[str]) -> None:
    """The dashboard subcommand's handler on these options."""
    dashboard.dashboard_command(dashboard.dashboard_parser().parse_args(args))


def test_rank_patterns_match_every_rank_and_nothing_else():
    (pattern,) = panels.Panel("t", (panels.RANK_TIMER.format(rank="{rank}", timer="time_fine"),)
                              ).patterns()
    assert pattern.fullmatch("time_parallel/rank0/time_fine")
    assert pattern.fullmatch("time_parallel/rank12/time_fine")
    assert not pattern.fullmatch("time_parallel/rank0/time_wait")
    assert not pattern.fullmatch("time_parallel/rank0/x/time_fine")


def test_offline_writes_the_definition_and_says_so(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("WANDB_MODE", "offline")
    output = tmp_path / "sub" / "board.json"
    run(["--entity", "e", "--project", "p", "--output", str(output)])
    assert "WANDB_MODE=offline, so the workspace was not created" in capsys.readouterr().out
    spec = json.loads(output.read_text())
    sections = spec["spec"]["section"]["panelBankConfig"]["sections"]
    assert [s["name"] for s in sections] == list(panels.SECTIONS)
    assert [len(s["panels"]) for s in sections] == [len(p) for p in panels.SECTIONS.values()]


def test_online_saves_the_workspace(monkeypatch, capsys):
    saved = []
    monkeypatch.delenv("WANDB_MODE", raising=False)
    monkeypatch.setattr(dashboard, "wandb_has_api_key", lambda: True)
    monkeypatch.setattr(ws.Workspace, "save", lambda self: saved.append(self) or self)
    monkeypatch.setattr(ws.Workspace, "url", property(lambda self: "https://example/ws"))
    run(["--entity", "e", "--project", "p"])
    (view,) = saved
    assert (view.entity, view.project, view.name) == ("e", "p", "pnode_zoo")
    assert "W&B workspace saved: https://example/ws" in capsys.readouterr().out


def test_a_refused_save_is_one_clear_error(monkeypatch):
    monkeypatch.delenv("WANDB_MODE", raising=False)
    monkeypatch.setattr(dashboard, "wandb_has_api_key", lambda: True)

    def refuse(self):
        raise ValueError("entity not found")

    monkeypatch.setattr(ws.Workspace, "save", refuse)
    with pytest.raises(UserInputError, match="did not save the workspace in e/p: entity not"):
        run(["--entity", "e", "--project", "p"])


def test_entity_is_required(cli):
    result = cli(["dashboard"])
    assert result.returncode == 2 and "--entity" in result.stderr
