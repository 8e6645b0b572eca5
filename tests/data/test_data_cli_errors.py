"""Data errors end a run as one line naming the file and the id, exit status 2, no traceback, whether
they happen at set-up or in a DataLoader worker; HYDRA_FULL_ERROR=1 brings the traceback back."""

from __future__ import annotations

import pytest

from msrcnn.testing.crowded import generate_crowded
from msrcnn_testing import run_script

BASE = [
    "experiment=demo",
    "logger=none",
    "data=coco_format",
    "data.batch_size=2",
    "model.min_size=[64]",
    "model.max_size=96",
    "trainer.max_steps=2",
    "trainer.enable_progress_bar=false",
    "trainer.enable_model_summary=false",
    "trainer.max_time=null",
]


@pytest.fixture(scope="module")
def broken(tmp_path_factory: pytest.TempPathFactory):
    root = tmp_path_factory.mktemp("broken")
    ann_file, img_dir = generate_crowded(
        root, num_images=2, height=120, width=160, min_instances=3, max_instances=6, radius=(4.0, 8.0)
    )
    (img_dir / "0002.png").write_bytes(b"\x89PNG\r\n\x1a\n not really a png")
    splits = [
        f"data.{split}.{key}={value}"
        for split in ("train", "val")
        for key, value in (("ann_file", ann_file), ("img_dir", img_dir))
    ]
    return img_dir / "0002.png", [*BASE, *splits, f"paths.output_dir={root / 'run'}"]


@pytest.mark.parametrize("workers", [1, pytest.param(0, marks=pytest.mark.slow)])
def test_corrupt_image_in_training_is_one_line(broken, workers: int) -> None:
    path, args = broken
    proc = run_script("train.py", *args, f"data.num_workers={workers}", check=False)
    assert proc.returncode == 2, proc.stderr[-2000:]
    output = proc.stdout + proc.stderr
    assert "Traceback" not in output
    last = proc.stderr.strip().splitlines()[-1]
    assert last.startswith(f"error: {path}: cannot read image (image id 2)"), last


@pytest.mark.slow
def test_full_error_shows_the_traceback(broken) -> None:
    _, args = broken
    proc = run_script("train.py", *args, "data.num_workers=1", check=False, env={"HYDRA_FULL_ERROR": "1"})
    assert proc.returncode != 0 and proc.returncode != 2
    assert "Traceback" in proc.stderr and "DataLoader worker" in proc.stderr
