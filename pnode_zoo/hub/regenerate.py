"""Retrain pretrained names with the repository's CLI and write their weights and cards.

``python -m pnode_zoo.hub.regenerate [NAME_OR_PATTERN ...]`` (default: every name in
``catalogue.CONFIGS``) runs ``python -m pnode_zoo fit --config <its config>`` (seeded by the
config, no logger) in a temporary run root, exports the checkpoint that fit tested (the
config's ``final-*`` checkpoint where it keeps one, else the best), measures the test metric on
the exported weights, writes ``pnode_zoo/hub/weights/<name>/`` (card, weights and their
``SHA256SUMS``) and regenerates the README's table. Run it from the repository (it reads
``configs/``).
"""

from __future__ import annotations

import fnmatch
import logging
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml
from jsonargparse import ArgumentParser

from pnode_zoo.hub.card import file_sha256
from pnode_zoo.hub.catalogue import CONFIGS
from pnode_zoo.hub.export import REPO, export_checkpoint, git_commit
from pnode_zoo.hub.store import WEIGHTS_DIR
from pnode_zoo.hub.table import write_readme

__all__ = ["main", "regenerate", "trained_checkpoint"]


def trained_checkpoint(root: Path) -> Path:
    """The checkpoint ``fit`` tested in the one run under ``root``: ``final-*`` or ``best-*``."""
    for pattern in ("final-*.ckpt", "best-*.ckpt"):
        found = sorted(root.glob(f"*/*/checkpoints/{pattern}"))
        if found:
            return found[-1]
    raise FileNotFoundError(f"no final-*.ckpt or best-*.ckpt under {root}")


def regenerate(name: str, commit: str) -> None:
    """Train, export and evaluate one catalogue name into ``WEIGHTS_DIR/name``.

    Args:
        name: a key of ``catalogue.CONFIGS``.
        commit: the repository's commit when the command started.
    """
    config_path = CONFIGS[name]
    provenance = {  # taken before training: the config it ran with
        "command": f"python -m pnode_zoo fit --config {config_path}",
        "config_path": config_path,
        "config": yaml.safe_load((REPO / config_path).read_text()),
        "config_sha256": file_sha256(REPO / config_path),
        "commit": commit,
    }
    command = [sys.executable, "-m", "pnode_zoo", "fit", "--config", config_path]
    root = Path(tempfile.mkdtemp(prefix=f"regenerate-{name}-"))
    env = {**os.environ, "WANDB_MODE": "disabled"}
    start = time.perf_counter()
    result = subprocess.run([*command, "--trainer.default_root_dir", str(root),
                             "--trainer.logger=false"], cwd=REPO, env=env, capture_output=True,
                            text=True)
    seconds = time.perf_counter() - start
    if result.returncode:
        raise SystemExit(f"{name}: training failed (exit {result.returncode}):\n{result.stderr}")
    target = WEIGHTS_DIR / name
    shutil.rmtree(target, ignore_errors=True)
    card = export_checkpoint(trained_checkpoint(root), target, name,
                             {**provenance, "training_seconds": round(seconds, 1)})
    shutil.rmtree(root)
    print(f"{name}: {card.metric} {card.metric_value:.4f}, trained in {seconds:.0f} s, "
          f"{card.weights_size:,} bytes", flush=True)


def main(argv: list[str] | None = None) -> None:
    """Regenerate the named (or matching) catalogue entries, then the README's table."""
    # jsonargparse, as every command of the package parses (pnode_zoo.cli)
    parser = ArgumentParser(prog="python -m pnode_zoo.hub.regenerate",
                            description=__doc__.split("\n\n")[0], env_prefix=False)
    parser.add_argument("names", nargs="*", default=["*"],
                        help="names or wildcards of catalogue entries (all by default)")
    patterns = parser.parse_args(argv).names
    names = list(dict.fromkeys(name for pattern in patterns for name in CONFIGS
                               if fnmatch.fnmatch(name, pattern)))  # in the order asked
    if not names:
        parser.error(f"no catalogue name matches; names: {', '.join(CONFIGS)}")
    for logger in ("pytorch_lightning", "lightning_fabric"):  # one line per name is enough
        logging.getLogger(logger).setLevel(logging.WARNING)
    commit = git_commit()
    for name in names:
        regenerate(name, commit)
    write_readme()


if __name__ == "__main__":
    main()
