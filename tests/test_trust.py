"""Cards and run configs are data: a class they name that is not the zoo's own is refused before
it is imported, a changed card is found by its SHA256SUMS, and nothing in either runs.

Every refusal is checked twice over: the payload would create the file PWNED (``os.system``
with ``touch PWNED``, or a module ``pwned_marker`` on the import path that creates it when
imported), and after the refusal that file does not exist and the module is not imported.
"""

from __future__ import annotations

import dataclasses
import shutil
import sys
from pathlib import Path

import pytest
import torch
import yaml
from clitools import run_cli

from pnode_zoo.errors import UserInputError
from pnode_zoo.hub import load_pretrained, store
from pnode_zoo.hub.card import CARD_FILE, MANIFEST_FILE, write_manifest
from pnode_zoo.hub.export import evaluate, export_checkpoint

SHIPPED = "odenet.digits"
pytestmark = pytest.mark.skipif(SHIPPED not in store.list_pretrained(),
                                reason=f"{SHIPPED} does not ship")
MARKER = "pwned_marker"
SYSTEM = {"class_path": "os.system", "init_args": {"command": "touch PWNED"}}
#: where a foreign class is put -> the class named in the refusal
VARIANTS = {
    "task": "os.system",
    "data": "os.system",
    "nested": "os.system",  # inside the task's arch_args, as a vector field entry would be
    "module": f"{MARKER}.Evil",  # a module that runs code when imported
}


@pytest.fixture
def trap(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """``tmp_path`` as the working directory, with ``pwned_marker.py`` importable from it; the
    path of the file either payload would create."""
    (tmp_path / f"{MARKER}.py").write_text(
        "from pathlib import Path\n"
        f"Path({str(tmp_path / 'PWNED')!r}).touch()\n"
        "class Evil:\n    pass\n")
    monkeypatch.chdir(tmp_path)
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.delitem(sys.modules, MARKER, raising=False)
    return tmp_path / "PWNED"


def _untouched(pwned: Path) -> None:
    assert not pwned.exists(), "the payload ran"
    assert MARKER not in sys.modules, f"{MARKER} was imported"


def _tampered(card: store.ModelCard, variant: str) -> store.ModelCard:
    """``card`` with a foreign class where ``variant`` says."""
    if variant == "task":
        return dataclasses.replace(card, task=SYSTEM)
    if variant == "data":
        return dataclasses.replace(card, data=SYSTEM)
    if variant == "nested":
        init_args = card.task["init_args"]
        arch_args = {**init_args["arch_args"], "vector_field": SYSTEM}
        return dataclasses.replace(card, task={**card.task, "init_args": {
            **init_args, "arch_args": arch_args}})
    return dataclasses.replace(card, data={**card.data, "class_path": f"{MARKER}.Evil"})


def _copy(tmp_path: Path, variant: str | None = None) -> Path:
    """A copy of the shipped directory, its card tampered with (and its manifest rewritten, as
    an attacker who writes the directory would)."""
    directory = tmp_path / "copy"
    shutil.copytree(store.shipped()[SHIPPED], directory)
    if variant is not None:
        card = _tampered(store.read_card(directory), variant)
        (directory / CARD_FILE).write_text(card.to_json())
        write_manifest(directory)
    return directory


@pytest.mark.parametrize("variant", list(VARIANTS))
def test_a_card_naming_a_foreign_class_is_refused_before_its_import(trap: Path, tmp_path: Path,
                                                                    variant: str) -> None:
    directory = _copy(tmp_path, variant)
    with pytest.raises(UserInputError, match=f"names the class '{VARIANTS[variant]}'"):
        load_pretrained(directory)
    _untouched(trap)
    # the evaluation, handed such a card directly, refuses it too
    model, card = load_pretrained(SHIPPED)
    with pytest.raises(UserInputError, match=f"names the class '{VARIANTS[variant]}'.* not "
                                             "imported"):
        evaluate(_tampered(card, variant), model)
    _untouched(trap)


def test_a_card_naming_a_class_the_zoo_does_not_have_is_refused(trap: Path) -> None:
    model, card = load_pretrained(SHIPPED)
    unknown = dataclasses.replace(card, task={**card.task, "class_path": "pnode_zoo.tasks.Evil"})
    with pytest.raises(UserInputError, match=r"'pnode_zoo.tasks.Evil', which is not one of "
                                             r"pnode_zoo's tasks \(Classifier, "
                                             r"TrajectoryRegressor\)"):
        evaluate(unknown, model)


@pytest.mark.parametrize("variant", ["task", "module"])
def test_pretrained_eval_refuses_a_foreign_card_in_one_line(trap: Path, tmp_path: Path,
                                                            variant: str) -> None:
    # a real process, started in the folder that holds pwned_marker.py (so it is importable)
    directory = _copy(tmp_path, variant)
    result = run_cli(["pretrained", "eval", str(directory)], tmp_path)
    assert result.returncode == 2, result.stderr[-3000:]
    (line,) = result.stderr.strip().splitlines()
    assert line.startswith("error: the card of odenet.digits: its ")
    assert f"names the class '{VARIANTS[variant]}'" in line and "not imported" in line
    assert not trap.exists()


def test_a_changed_card_is_refused_by_its_manifest(tmp_path: Path, cli_here,
                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    directory = _copy(tmp_path)
    card = store.read_card(directory)
    (directory / CARD_FILE).write_text(dataclasses.replace(card, metric_value=1.0).to_json())
    message = (f"config.json has sha256 [0-9a-f]{{64}}, but {directory / MANIFEST_FILE} says "
               "[0-9a-f]{64}: the file was changed after it was saved")
    with pytest.raises(UserInputError, match=message):
        load_pretrained(directory)
    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(tmp_path / "torch-hub"))
    with pytest.raises(UserInputError, match=f"config.json does not have the sha256 its "
                                             f"{MANIFEST_FILE} lists; it was discarded"):
        load_pretrained(directory.as_uri())  # the same directory at a URL
    assert not list((tmp_path / "torch-hub").rglob("*.json"))
    result = cli_here(["pretrained", "eval", str(directory)])
    assert result.returncode == 2
    assert result.stderr.count("\n") == 1 and "the file was changed after it was saved" in (
        result.stderr)
    (directory / MANIFEST_FILE).unlink()
    with pytest.raises(UserInputError, match=f"holds no {MANIFEST_FILE}, so its card cannot be "
                                             "checked"):
        load_pretrained(directory)
    write_manifest(directory)  # what the user vouches for loads
    assert load_pretrained(directory)[1].metric_value == 1.0


def _fake_run(root: Path, data_class: str, task_class: str = "pnode_zoo.tasks.Classifier",
              nested: bool = False) -> Path:
    """A run directory whose config.yaml and last.ckpt (plain data) name the given classes."""
    run = root / "runs" / "digits-odenet" / "20260101-000000-abcdef"
    (run / "checkpoints").mkdir(parents=True)
    data = {"class_path": data_class, "init_args": {"batch_size": 64}}
    (run / "config.yaml").write_text(yaml.safe_dump({"data": data, "model": {}}))
    arch_args = {"width": 8, **({"vector_field": SYSTEM} if nested else {})}
    hparams = {"_class_path": task_class, "arch": "odenet", "arch_args": arch_args,
               "num_classes": 10, "input_shape": [1, 8, 8]}
    checkpoint = run / "checkpoints" / "last.ckpt"
    torch.save({"state_dict": {"net.w": torch.zeros(1)}, "hyper_parameters": hparams},
               checkpoint)
    return checkpoint


RUN_VARIANTS = {  # -> (data class, task class, nested, the class named)
    "config_data": ("os.system", "pnode_zoo.tasks.Classifier", False, "os.system"),
    "config_module": (f"{MARKER}.Data", "pnode_zoo.tasks.Classifier", False, f"{MARKER}.Data"),
    "checkpoint_task": ("pnode_zoo.data.DigitsDataModule", f"{MARKER}.Task", False,
                        f"{MARKER}.Task"),
    "checkpoint_nested": ("pnode_zoo.data.DigitsDataModule", "pnode_zoo.tasks.Classifier", True,
                          "os.system"),
}


@pytest.mark.parametrize("variant", list(RUN_VARIANTS))
def test_a_run_naming_a_foreign_class_is_refused_by_test_and_export(trap: Path, tmp_path: Path,
                                                                     cli_here, variant) -> None:
    data_class, task_class, nested, named = RUN_VARIANTS[variant]
    checkpoint = _fake_run(tmp_path, data_class, task_class, nested)
    before = set(tmp_path.rglob("*"))
    for args in (["test", "--ckpt_path", str(checkpoint), "--trainer.logger=false"],
                 ["export", str(checkpoint), str(tmp_path / "exported")]):
        result = cli_here(args)
        assert result.returncode == 2, result.stderr[-3000:]
        (line,) = result.stderr.strip().splitlines()
        assert f"names the class '{named}'" in line and "not imported" in line, line
    with pytest.raises(UserInputError, match=f"names the class '{named}'"):
        export_checkpoint(checkpoint, tmp_path / "exported")
    _untouched(trap)
    assert set(tmp_path.rglob("*")) == before  # no run directory, no export


def test_a_foreign_run_config_never_runs_in_a_real_process(trap: Path, tmp_path: Path) -> None:
    checkpoint = _fake_run(tmp_path, f"{MARKER}.Data")
    result = run_cli(["test", "--ckpt_path", str(checkpoint), "--trainer.logger=false"],
                     tmp_path)
    assert result.returncode == 2, result.stderr[-3000:]
    assert f"names the class '{MARKER}.Data'" in result.stderr
    assert not trap.exists()
