"""experiment=smoke: a complete train + evaluate as a user runs it, every step's losses logged (its speed is
not asserted here: a loaded CI host would make a timed test flaky; the preset is 6 steps at 64 px)."""

import csv
import json

from msrcnn_testing import run_script


def test_smoke_trains_evaluates_and_logs_every_step(shapes_dir, tmp_path):
    proc = run_script(
        "train.py", "experiment=smoke", f"paths.data_dir={shapes_dir}", f"hydra.run.dir={tmp_path}"
    )
    steps = [line for line in (tmp_path / "train.log").read_text().splitlines() if "loss_maskiou" in line]
    assert len(steps) == 6 and all(f"step {k}/6" in line for k, line in enumerate(steps, start=1))
    with open(tmp_path / "csv" / "metrics.csv") as f:
        losses = [row for row in csv.DictReader(f) if row["train/loss"]]
    assert [int(row["step"]) for row in losses] == list(range(6))  # one loss row per step: a loss curve
    results = json.loads((tmp_path / "results.json").read_text())
    assert (
        results["global_step"] == 6 and results["num_images"] == 4 and results["experiment_name"] == "smoke"
    )
    assert "mask, MS R-CNN (class x MaskIoU)" in proc.stdout
    assert proc.stderr.strip() == "", proc.stderr  # no third-party line (tip, deprecation, device chatter)
    evaluated = tmp_path / "eval"
    run_script(
        "eval.py",
        f"ckpt_path={tmp_path / 'checkpoints' / 'last.ckpt'}",
        f"paths.data_dir={shapes_dir}",
        f"hydra.run.dir={evaluated}",
        "trainer.enable_progress_bar=false",
    )
    again = json.loads((evaluated / "results.json").read_text())
    assert again["segm"] == results["segm"] and again["bbox"] == results["bbox"]
