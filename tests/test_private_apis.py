"""Private names of third-party packages used by the package: each one allowed by name, with the
reason it stays, and each allowed one still present in the installed version.

A private name (one starting with ``_``, not a dunder) of a library is not part of its API and
can change in any release. ``scan`` finds them in the package's source (its AST):
- imports from a third-party package whose dotted path has a private part
  (``from torchdiffeq._impl.odeint import SOLVERS``);
- attribute chains on a name bound to a third-party module or class (``pl.Trainer._x``);
- in a class derived from a third-party class, a ``self._x`` or a method ``_x`` that one of
  the third-party classes of its MRO defines (an inherited attribute or an overridden hook);
- ``obj._x`` on any other object where ``_x`` is defined nowhere in the package: the receiver's
  class then comes from ``RECEIVERS``.
"""

from __future__ import annotations

import ast
import importlib
import inspect
import re
import sys
from functools import cache
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "pnode_zoo"

#: third-party private name -> why it stays (each one checked to exist by ``test_allowed_exist``)
ALLOWED: dict[str, str] = {
    "pytorch_lightning.strategies.ddp.DDPStrategy._configure_launcher": (
        "the hook that creates a strategy's launcher (Lightning's own strategies override it; "
        "the accelerator connector calls it); TimeParallelStrategy wraps the launcher it makes "
        "so the layout is checked before any rank starts"
    ),
    "pytorch_lightning.strategies.ddp.DDPStrategy._ddp_kwargs": (
        "the only route to DistributedDataParallel's process_group for a group made after the "
        "strategy's construction (the data group); test_strategy checks DDP gets it"
    ),
    "pytorch_lightning.trainer.trainer.Trainer._accelerator_connector": (
        "with one data group TimeParallelStrategy keeps the data module's sampler (the same "
        "batches as a one-process run); Trainer(use_distributed_sampler=...) is read only there"
    ),
    "pytorch_lightning.loggers.wandb.WandbLogger._wandb_init": (
        "Lightning always passes anonymous=None to wandb.init, and wandb 0.31 prints a "
        "deprecation line at every start for it (even with WANDB_SILENT); no constructor "
        "argument drops it (test_wandb_logger_keeps_its_init_arguments_with_anonymous)"
    ),
    "wandb_workspaces.workspaces.Workspace._spec": (
        "the exact JSON that save() sends, written offline by the dashboard; wandb-workspaces "
        "0.4 has no public name for it (test_wandb_workspace_spec_is_the_saved_definition)"
    ),
}

#: attribute -> the third-party class of the objects the package reads it on, for receivers the
#: scan cannot type (``trainer._x`` where ``trainer`` is a parameter, say)
RECEIVERS: dict[str, str] = {
    "_accelerator_connector": "pytorch_lightning.trainer.trainer.Trainer",
    "_wandb_init": "pytorch_lightning.loggers.wandb.WandbLogger",
    "_spec": "wandb_workspaces.workspaces.Workspace",
}


def _private(name: str) -> bool:
    return name.startswith("_") and not (name.startswith("__") and name.endswith("__"))


def _third_party(dotted: str) -> bool:
    root = dotted.split(".")[0]
    return root != "pnode_zoo" and root not in sys.stdlib_module_names and root != "__future__"


def _module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _modules() -> dict[str, ast.Module]:
    return {_module_name(p): ast.parse(p.read_text(), str(p))
            for p in sorted(PACKAGE.rglob("*.py"))}


def _bindings(tree: ast.Module) -> dict[str, str]:
    """Local name -> dotted third-party name, for every import in the module (any depth)."""
    bound = {}
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                if alias.asname:
                    bound[alias.asname] = alias.name
                else:
                    root = alias.name.split(".")[0]
                    bound[root] = root
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            for alias in node.names:
                bound[alias.asname or alias.name] = f"{node.module}.{alias.name}"
    return {name: dotted for name, dotted in bound.items() if _third_party(dotted)}


def _chain(node: ast.AST) -> list[str] | None:
    """``a.b.c`` as ["a", "b", "c"]; None when the chain does not start at a name."""
    parts = []
    while isinstance(node, ast.Attribute):
        parts.append(node.attr)
        node = node.value
    if not isinstance(node, ast.Name):
        return None
    return [node.id, *reversed(parts)]


def _own_names(modules: dict[str, ast.Module]) -> set[str]:
    """Every private name the package defines: functions, classes, attributes it assigns,
    module-level and class-level names."""
    names = set()
    for tree in modules.values():
        for node in ast.walk(tree):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
                names.add(node.name)
            elif isinstance(node, ast.Attribute) and isinstance(node.ctx, ast.Store):
                names.add(node.attr)
            elif isinstance(node, ast.Name) and isinstance(node.ctx, ast.Store):
                names.add(node.id)
            elif isinstance(node, ast.arg):
                names.add(node.arg)
    return {name for name in names if _private(name)}


@cache
def _source(cls: type) -> str:
    try:
        return inspect.getsource(cls)
    except (OSError, TypeError):
        return ""


def _third_party_owner(cls: type, name: str) -> str | None:
    """The first third-party class in ``cls``'s MRO that defines or sets ``name``."""
    for base in cls.__mro__:
        if not _third_party(base.__module__) or base is object:
            continue
        if name in vars(base) or re.search(rf"\bself\.{re.escape(name)}\b", _source(base)):
            return f"{base.__module__}.{base.__qualname__}"
    return None


def scan() -> dict[str, list[str]]:
    """Third-party private name -> the places (``module:line``) that use it."""
    modules = _modules()
    own = _own_names(modules)
    found: dict[str, list[str]] = {}

    def add(name: str, module: str, node: ast.AST) -> None:
        found.setdefault(name, []).append(f"{module}:{node.lineno}")

    for module, tree in modules.items():
        bound = _bindings(tree)
        class_of: dict[int, type] = {}  # id(node) -> the class whose method contains it
        for node in ast.walk(tree):
            if isinstance(node, ast.ClassDef) and node.bases:
                cls = getattr(importlib.import_module(module), node.name, None)
                if isinstance(cls, type) and any(_third_party(b.__module__) for b in cls.__mro__
                                                 if b is not object):
                    for inner in ast.walk(node):
                        class_of.setdefault(id(inner), cls)
                    for item in node.body:
                        if isinstance(item, ast.FunctionDef) and _private(item.name):
                            owner = _third_party_owner(cls, item.name)
                            if owner:
                                add(f"{owner}.{item.name}", module, item)
        for node in ast.walk(tree):
            if isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                for alias in node.names:
                    dotted = f"{node.module}.{alias.name}"
                    if _third_party(dotted) and any(_private(p) for p in dotted.split(".")):
                        add(dotted, module, node)
            elif isinstance(node, ast.Import):
                for alias in node.names:
                    if _third_party(alias.name) and any(map(_private, alias.name.split("."))):
                        add(alias.name, module, node)
            elif isinstance(node, ast.Attribute) and _private(node.attr):
                parts = _chain(node)
                if parts and parts[0] in bound:
                    add(".".join([bound[parts[0]], *parts[1:]]), module, node)
                elif parts and parts[0] in ("self", "cls") and len(parts) == 2:
                    cls = class_of.get(id(node))
                    owner = cls and _third_party_owner(cls, node.attr)
                    if owner:
                        add(f"{owner}.{node.attr}", module, node)
                elif node.attr not in own:
                    receiver = RECEIVERS.get(node.attr, "?")
                    add(f"{receiver}.{node.attr}", module, node)
    return found


def _exists(dotted: str) -> bool:
    parts = dotted.split(".")
    for cut in range(len(parts) - 1, 0, -1):
        try:
            obj = importlib.import_module(".".join(parts[:cut]))
            break
        except ImportError:
            continue
    else:
        return False
    for i, attr in enumerate(parts[cut:], cut):
        if hasattr(obj, attr):
            obj = getattr(obj, attr)
        elif i == len(parts) - 1 and isinstance(obj, type):  # an attribute set on instances
            return any(re.search(rf"\bself\.{re.escape(attr)}\b", _source(base))
                       for base in obj.__mro__)
        else:
            return False
    return True


def test_only_allowed_private_names() -> None:
    found = scan()
    new = {name: places for name, places in found.items() if name not in ALLOWED}
    assert not new, (
        "third-party private names used, not in ALLOWED (use a public route, or allow the name "
        f"with the reason it stays): {new}"
    )


def test_allow_list_is_used() -> None:
    unused = set(ALLOWED) - set(scan())
    assert not unused, f"ALLOWED names the package no longer uses (remove them): {sorted(unused)}"


@pytest.mark.parametrize("name", sorted(ALLOWED))
def test_allowed_exist(name: str) -> None:
    assert _exists(name), (
        f"{name} no longer exists in the installed version: the code that uses it "
        f"({ALLOWED[name]}) must change"
    )


def test_scan_finds_each_kind(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The scan itself, on a small module with one private name of each kind."""
    package = tmp_path / "pnode_zoo"
    package.mkdir()
    (package / "__init__.py").write_text("")
    (package / "probe.py").write_text(
        "import torch\n"
        "from torchdiffeq._impl.odeint import SOLVERS\n"
        "from pytorch_lightning.strategies import DDPStrategy\n"
        "x = torch._C\n"
        "class S(DDPStrategy):\n"
        "    def _configure_launcher(self):\n"
        "        return self._ddp_kwargs, self._mine\n"
        "    def _own(self):\n"
        "        self._mine = trainer._accelerator_connector\n"
    )
    monkeypatch.setattr(sys.modules[__name__], "PACKAGE", package)
    monkeypatch.syspath_prepend(str(tmp_path))
    for name in [m for m in sys.modules if m == "pnode_zoo" or m.startswith("pnode_zoo.")]:
        monkeypatch.delitem(sys.modules, name)
    ddp = "pytorch_lightning.strategies.ddp.DDPStrategy"
    assert set(scan()) == {
        "torchdiffeq._impl.odeint.SOLVERS", "torch._C", f"{ddp}._configure_launcher",
        f"{ddp}._ddp_kwargs", "pytorch_lightning.trainer.trainer.Trainer._accelerator_connector",
    }


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
