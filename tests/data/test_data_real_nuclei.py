"""Real data end to end: the DSB2018 nuclei image shipped by the ``stardist`` wheel, converted to COCO
by ``tools/convert_microscopy.py --sources stardist --tile 256 --val-height 256``, trained with
``experiment=custom_cpu`` for a few minutes and evaluated on held-out crops (experiments/README.md,
"Your own data: real nuclei")."""

from __future__ import annotations

import importlib.util
import json

import pytest

from msrcnn_testing import run_script

pytestmark = pytest.mark.skipif(
    importlib.util.find_spec("stardist") is None,
    reason="the stardist package (dev group) ships the nuclei image",
)

STEPS = 600


@pytest.fixture(scope="module")
def nuclei(tmp_path_factory: pytest.TempPathFactory):
    out = tmp_path_factory.mktemp("nuclei")
    proc = run_script(
        "tools/convert_microscopy.py",
        str(out),
        "--sources",
        "stardist",
        "--tile",
        "256",
        "--val-height",
        "256",
    )
    assert "train: 15 images" in proc.stdout and "val: 2 images" in proc.stdout
    return out


def test_conversion_is_valid_coco(nuclei) -> None:
    from msrcnn.data import CocoInstanceDataset

    train = CocoInstanceDataset(nuclei / "train.json", nuclei / "images")
    val = json.loads((nuclei / "val.json").read_text())
    assert len(train) == 15 and train.stats.instances > 400 and len(val["annotations"]) >= 25
    image, target = train[0]
    assert image.shape == (3, 256, 256) and target["masks"].shape[-2:] == (256, 256)
    assert train.category_map.names == ("nucleus",)


def test_bad_output_folder_is_one_line(tmp_path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("not a folder")
    proc = run_script(
        "tools/convert_microscopy.py", str(blocker / "out"), "--sources", "stardist", check=False
    )
    assert proc.returncode == 2 and proc.stderr.startswith("error: ") and proc.stderr.count("\n") == 1, (
        proc.stderr
    )


@pytest.mark.slow
def test_custom_cpu_learns_real_nuclei(nuclei, tmp_path) -> None:
    out = tmp_path / "run"
    proc = run_script(
        "train.py",
        "experiment=custom_cpu",
        "logger=none",
        f"data.train.ann_file={nuclei / 'train.json'}",
        f"data.train.img_dir={nuclei / 'images'}",
        f"data.val.ann_file={nuclei / 'val.json'}",
        f"data.val.img_dir={nuclei / 'images'}",
        f"trainer.max_steps={STEPS}",
        "callbacks.time_budget.seconds=180",  # a slow host trains fewer steps but completes its LR schedule
        "trainer.max_time=00:00:05:00",
        "trainer.enable_progress_bar=false",
        "trainer.enable_model_summary=false",
        f"paths.output_dir={out}",
        timeout=900,
    )
    assert "input size from the data: 15 training images, median 256x256" in proc.stdout
    results = json.loads((out / "results.json").read_text())
    assert results["global_step"] >= 10 and results["num_images"] == 2
    # minutes from scratch on 15 crops of one image: above chance (0), far from converged
    assert results["bbox"]["AP50"] > 1.0 and results["segm_cls"]["AP50"] > 1.0, results
