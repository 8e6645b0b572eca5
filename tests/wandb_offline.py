"""Reads W&B offline runs back for the tests: the ``run-<id>.wandb`` files a run writes under
``<run dir>/wandb/offline-run-*`` (config, summary, name, group, tags, exit code, artifacts).

It parses W&B's own record format (a LevelDB-style log of ``wandb_internal_pb2.Record`` protobufs),
which W&B does not document as an interface: test code, not part of the package.
"""

from __future__ import annotations

import json
import os
import struct
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any


@dataclass
class OfflineRun:
    """What an offline run recorded: the last value of every config and summary key."""

    path: Path
    id: str
    name: str
    group: str
    tags: list[str]
    job_type: str
    config: dict[str, Any]
    summary: dict[str, Any]
    exit_code: int | None
    artifacts: list[dict[str, Any]]


_HEADER = struct.Struct("<4sHB")  # ":W&B", 0xBEE1, version 0: W&B's LevelDB-log file format
_RECORD = struct.Struct("<IHB")  # crc32, length, type (1 full, 2 first, 3 middle, 4 last)
_BLOCK = 32768


def wandb_records(path: str | os.PathLike) -> Iterator[Any]:
    """The ``wandb_internal_pb2.Record`` s of a ``run-<id>.wandb`` file, in order."""
    from wandb.proto import wandb_internal_pb2 as pb

    data = Path(path).read_bytes()
    ident, magic, _ = _HEADER.unpack_from(data, 0) if len(data) >= _HEADER.size else (b"", 0, 0)
    if ident != b":W&B" or magic != 0xBEE1:
        raise ValueError(f"{path} is not a W&B run file (no ':W&B' header)")
    pos, pending = _HEADER.size, b""
    while pos + _RECORD.size <= len(data):
        left = _BLOCK - pos % _BLOCK
        if left < _RECORD.size:  # a block's zero-padded tail
            pos += left
            continue
        _, length, kind = _RECORD.unpack_from(data, pos)
        if kind == 0:  # padding up to the block's end (or an unfinished file)
            pos += left
            continue
        chunk = data[pos + _RECORD.size : pos + _RECORD.size + length]
        pos += _RECORD.size + length
        pending = chunk if kind in (1, 2) else pending + chunk
        if kind in (1, 4):
            record = pb.Record()
            record.ParseFromString(pending)
            yield record


def _apply(target: dict[str, Any], item) -> None:
    keys = list(item.nested_key) or [item.key]
    node = target
    for key in keys[:-1]:
        node = node.setdefault(key, {})
    node[keys[-1]] = json.loads(item.value_json)


def read_offline_run(run_dir: str | os.PathLike) -> OfflineRun:
    """Reads ``<run_dir>/run-<id>.wandb`` (``run_dir``: a ``wandb/offline-run-*`` folder)."""
    run_dir = Path(run_dir)
    files = sorted(run_dir.glob("run-*.wandb"))
    if len(files) != 1:
        raise FileNotFoundError(f"{run_dir}: expected one run-<id>.wandb file, found {len(files)}")
    config: dict[str, Any] = {}
    summary: dict[str, Any] = {}
    info: dict[str, Any] = {}
    exit_code = None
    artifacts = []
    for record in wandb_records(files[0]):
        kind = record.WhichOneof("record_type")
        if kind == "run":
            r = record.run
            info = {"id": r.run_id, "name": r.display_name, "group": r.run_group, "job_type": r.job_type}
            info["tags"] = list(r.tags)
            for item in r.config.update:
                _apply(config, item)
        elif kind == "config":
            for item in record.config.update:
                _apply(config, item)
            for item in record.config.remove:
                config.pop(item.key, None)
        elif kind == "summary":
            for item in record.summary.update:
                _apply(summary, item)
            for item in record.summary.remove:
                summary.pop(item.key, None)
        elif kind == "exit":
            exit_code = record.exit.exit_code
        elif kind == "artifact":
            a = record.artifact
            entries = [e.path for e in a.manifest.contents]
            metadata = json.loads(a.metadata) if a.metadata else {}
            artifacts.append(
                {
                    "name": a.name,
                    "type": a.type,
                    "aliases": list(a.aliases),
                    "files": entries,
                    "metadata": metadata,
                }
            )
    config.pop("_wandb", None)
    if not info:
        raise ValueError(f"{files[0]} holds no run record")
    return OfflineRun(
        path=run_dir, config=config, summary=summary, exit_code=exit_code, artifacts=artifacts, **info
    )


def offline_runs(directory: str | os.PathLike) -> list[OfflineRun]:
    """Every offline run under ``directory`` (e.g. a sweep dir), in the order they started."""
    runs = [read_offline_run(p) for p in sorted(Path(directory).glob("**/wandb/offline-run-*"))]
    return sorted(runs, key=lambda r: r.path.name)
