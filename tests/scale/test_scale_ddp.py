"""Two DDP processes on CPU (gloo) through src/train.py: the evaluation counts every image exactly once."""

import json
from collections import Counter

import pytest

from msrcnn_testing import TINY, run_script

KEYS = ("bbox", "segm", "segm_cls", "segm_oracle")


def _per_image(path):
    detections = json.loads(path.read_text())
    return detections, Counter(d["image_id"] for d in detections)


@pytest.mark.slow
def test_two_cpu_processes_evaluate_exactly_like_one(tmp_path, shapes_dir):
    # 5 val images in batches of 2 over 2 ranks: rank 0 gets 3 images (2 batches), rank 1 gets 2 (1 batch).
    # Validation also runs during training (limit_val_batches=1.0) through DDP's wrapper with uneven batches.
    overrides = [o for o in TINY if not o.startswith("data.synthetic.num_val")]
    run, single = tmp_path / "ddp", tmp_path / "eval"
    proc = run_script(
        "train.py",
        *overrides,
        "data.synthetic.num_val=5",
        "trainer=ddp",
        "trainer.devices=2",
        "trainer.accelerator=cpu",
        "trainer.limit_val_batches=1.0",
        "trainer.max_steps=4",
        f"paths.data_dir={shapes_dir}",
        f"hydra.run.dir={run}",
    )
    output = proc.stdout + proc.stderr
    assert "Initializing distributed: GLOBAL_RANK: 1, MEMBER: 2/2" in output
    assert "for a total batch of 4" in output  # 2 images x 2 processes: the LR is scaled for 4
    assert (run / "train_ddp_process_1.log").is_file()  # rank 1 ran in the same Hydra run directory
    assert output.count("results: ") == 1  # only rank 0 reports and writes results
    ddp = json.loads((run / "results.json").read_text())
    assert ddp["num_images"] == 5 and ddp["global_step"] == 4

    run_script(
        "eval.py",
        f"ckpt_path={run / 'checkpoints' / 'last.ckpt'}",
        f"paths.data_dir={shapes_dir}",
        f"hydra.run.dir={single}",
        "trainer.enable_progress_bar=false",
    )
    one = json.loads((single / "results.json").read_text())
    for key in (*KEYS, "num_images", "num_detections"):
        assert ddp[key] == one[key], key
    assert ddp["maskiou_pearson"] == pytest.approx(one["maskiou_pearson"], abs=1e-5)

    # Batches of different composition may differ in the last float bits, nothing more.
    for name in ("detections_bbox.json", "detections_segm.json"):
        (a, count_a), (b, count_b) = _per_image(run / name), _per_image(single / name)
        assert count_a == count_b and sorted(count_a) == [1, 2, 3, 4, 5]
        for image_id in count_a:
            mine = [d for d in a if d["image_id"] == image_id]
            theirs = [d for d in b if d["image_id"] == image_id]
            assert sorted(d["score"] for d in mine) == pytest.approx(
                sorted(d["score"] for d in theirs), abs=1e-4
            )
