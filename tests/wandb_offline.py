"""Read an offline W&B run back from its ``run-<id>.wandb`` file, without a server.

wandb 0.31 ships no Python reader for the file, so this one is written against its format: a
7-byte header (``:W&B``, magic 0xBEE1, version 0), then the LevelDB log format (32 KiB blocks;
each record a 7-byte header of CRC-32 over type and payload, little-endian length and type:
full, first, middle or last fragment; a block's tail shorter than a header is zero padding).
Each assembled record is a ``wandb.proto.wandb_internal_pb2.Record``, decoded with wandb's own
protobuf classes.
"""

from __future__ import annotations

import json
import struct
import zlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from wandb.proto import wandb_internal_pb2

HEADER = b":W&B" + struct.pack("<HB", 0xBEE1, 0)
BLOCK = 32 * 1024
FULL, FIRST, MIDDLE, LAST = 1, 2, 3, 4


def records(path: Path) -> list[wandb_internal_pb2.Record]:
    """Every record of a ``.wandb`` file, in order; raises ValueError on a damaged file."""
    data = Path(path).read_bytes()
    if not data.startswith(HEADER):
        raise ValueError(f"{path}: not a W&B transaction log (header {data[:7]!r})")
    out, pending, offset = [], b"", len(HEADER)
    while offset + 7 <= len(data):
        left_in_block = BLOCK - offset % BLOCK
        if left_in_block < 7:  # zero padding at the end of a block
            offset += left_in_block
            continue
        crc, length, kind = struct.unpack_from("<IHB", data, offset)
        if kind == 0 and length == 0:  # pre-allocated, unwritten space
            break
        payload = data[offset + 7 : offset + 7 + length]
        if zlib.crc32(bytes([kind]) + payload) != crc:
            raise ValueError(f"{path}: checksum mismatch at byte {offset}")
        offset += 7 + length
        pending = payload if kind in (FULL, FIRST) else pending + payload
        if kind in (FULL, LAST):
            record = wandb_internal_pb2.Record()
            record.ParseFromString(pending)
            out.append(record)
            pending = b""
    return out


def _put(into: dict[str, Any], item: Any) -> None:
    """Store an item; a ``nested_key`` (W&B splits dict values, e.g. media) becomes nested dicts."""
    path = list(item.nested_key) or [item.key]
    for part in path[:-1]:
        into = into.setdefault(part, {})
    into[path[-1]] = json.loads(item.value_json)


@dataclass
class OfflineRun:
    """What a run logged: history rows, final summary and config (values JSON-decoded)."""

    run_id: str = ""
    history: list[dict[str, Any]] = field(default_factory=list)
    summary: dict[str, Any] = field(default_factory=dict)
    config: dict[str, Any] = field(default_factory=dict)

    def values(self, key: str) -> list[Any]:
        """Every logged value of ``key``, in order."""
        return [row[key] for row in self.history if key in row]

    def keys(self) -> set[str]:
        """Every key that appears in the history."""
        return {key for row in self.history for key in row}


def read_run(path: Path) -> OfflineRun:
    """Decode the ``.wandb`` file at ``path`` (or the one inside the run folder ``path``)."""
    path = Path(path)
    if path.is_dir():
        (path,) = path.glob("run-*.wandb")
    run = OfflineRun()
    for record in records(path):
        kind = record.WhichOneof("record_type")
        if kind == "run":
            run.run_id = record.run.run_id
            run.config.update(_config_items(record.run.config.update))
        elif kind == "config":
            run.config.update(_config_items(record.config.update))
        elif kind == "history":
            row: dict[str, Any] = {}
            for item in record.history.item:
                _put(row, item)
            run.history.append(row)
        elif kind == "summary":
            for item in record.summary.update:
                _put(run.summary, item)
    return run


def _config_items(items: Any) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for item in items:
        _put(out, item)
    # W&B stores a config entry as {"value": ...} (plus "desc"); keep the value
    return {key: value["value"] if isinstance(value, dict) and "value" in value else value
            for key, value in out.items()}
