"""Atomic JSON writing."""

from __future__ import annotations

import json

import numpy as np
import pytest

from msrcnn.evaluation import write_json_atomic


def test_writes_and_replaces_without_leftovers(tmp_path):
    path = tmp_path / "sub" / "metrics.json"
    write_json_atomic(path, {"a": 1})
    write_json_atomic(path, {"ap": np.float32(0.5), "ids": np.arange(3), "n": np.int64(4)})
    assert json.loads(path.read_text()) == {"ap": 0.5, "ids": [0, 1, 2], "n": 4}
    assert sorted(p.name for p in path.parent.iterdir()) == ["metrics.json"]


def test_failed_serialisation_keeps_the_old_file(tmp_path):
    path = tmp_path / "results.json"
    write_json_atomic(path, [{"score": 0.9}])
    before = path.read_bytes()
    # Many serialisable entries first, so part of the new JSON is written before the failure.
    broken = [{"score": float(i)} for i in range(10_000)] + [{"bad": object()}]
    with pytest.raises(TypeError, match="not JSON serializable"):
        write_json_atomic(path, broken)
    assert path.read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["results.json"]
