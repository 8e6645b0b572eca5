"""``tools/convert_microscopy.py``: the real nucleus + cell set from the label images that the
``stardist``, ``ngio`` and ``ndev-sampledata`` wheels ship (dev group), checked against its sources."""

from __future__ import annotations

import importlib.util
import json
import re
import sys
from collections import defaultdict

import numpy as np
import pytest
from PIL import Image
from pycocotools import mask as mask_utils

from msrcnn_testing import ROOT, run_script

PACKAGES = ("stardist", "ngio", "ndev_sampledata")
pytestmark = [
    pytest.mark.skipif(
        any(importlib.util.find_spec(name) is None for name in PACKAGES),
        reason="stardist, ngio (Python >= 3.11) and ndev-sampledata (dev group) ship the label images",
    ),
    # pycocotools' decode under numpy 2, once per call
    pytest.mark.filterwarnings("ignore:__array__ implementation:DeprecationWarning"),
]
NAME = re.compile(r"^(train|val)_(\w+)_y(\d{3})_x(\d{3})\.png$")
SUMMARY = re.compile(
    r"^train: (\d+) images \((\d+) nucleus, (\d+) cell\), (\d+) instances \((\d+) nucleus, (\d+) cell\); "
    r"val: (\d+) images \((\d+) nucleus, (\d+) cell\), (\d+) instances \((\d+) nucleus, (\d+) cell\) -> "
)


def _tool():
    """The tool as a module (its dataclass needs it registered in ``sys.modules``)."""
    if "convert_microscopy" not in sys.modules:
        path = ROOT / "tools" / "convert_microscopy.py"
        spec = importlib.util.spec_from_file_location("convert_microscopy", path)
        module = importlib.util.module_from_spec(spec)
        sys.modules["convert_microscopy"] = module
        spec.loader.exec_module(module)
    return sys.modules["convert_microscopy"]


@pytest.fixture(scope="module")
def converted(tmp_path_factory: pytest.TempPathFactory):
    out = tmp_path_factory.mktemp("microscopy")
    proc = run_script("tools/convert_microscopy.py", str(out))
    assert proc.stdout.count("\n") == 1 and not proc.stderr, (proc.stdout, proc.stderr)
    data = {split: json.loads((out / f"{split}.json").read_text()) for split in ("train", "val")}
    return out, proc.stdout, data


def test_summary_counts_match_the_files(converted) -> None:
    _, stdout, data = converted
    match = SUMMARY.match(stdout)
    assert match, stdout
    counts = [int(v) for v in match.groups()]
    for split, (images, img_nuc, img_cell, inst, inst_nuc, inst_cell) in zip(
        ("train", "val"), (counts[:6], counts[6:])
    ):
        payload = data[split]
        by_cat = defaultdict(int)
        for ann in payload["annotations"]:
            by_cat[ann["category_id"]] += 1
        assert (images, inst) == (len(payload["images"]), len(payload["annotations"]))
        assert (img_nuc + img_cell, inst_nuc, inst_cell) == (images, by_cat[1], by_cat[2])
        assert payload["categories"] == [{"id": 1, "name": "nucleus"}, {"id": 2, "name": "cell"}]
    # a few hundred training crops and a few dozen validation strips, many instances of both kinds
    assert counts[0] >= 300 and counts[4] >= 1500 and counts[5] >= 1500, stdout
    assert counts[6] >= 40 and counts[10] >= 200 and counts[11] >= 200, stdout


def test_every_rle_decodes_to_a_mask_inside_its_image(converted) -> None:
    out, _, data = converted
    for split, payload in data.items():
        images = {image["id"]: image for image in payload["images"]}
        for image in images.values():
            with Image.open(out / "images" / image["file_name"]) as png:
                assert png.mode == "L" and png.size == (image["width"], image["height"]), image
        ids = [ann["id"] for ann in payload["annotations"]]
        assert sorted(ids) == list(range(1, len(ids) + 1))
        per_image = defaultdict(list)
        for ann in payload["annotations"]:
            per_image[ann["image_id"]].append(ann)
        for image_id, anns in per_image.items():
            image = images[image_id]
            size = [image["height"], image["width"]]
            assert all(ann["segmentation"]["size"] == size for ann in anns), (split, image)
            masks = mask_utils.decode(
                [{"size": size, "counts": a["segmentation"]["counts"].encode()} for a in anns]
            )
            assert masks.shape == (*size, len(anns)), (split, image)
            areas = masks.sum(axis=(0, 1))
            assert (areas == [a["area"] for a in anns]).all() and areas.min() >= 16, (split, image)
            for k, ann in enumerate(anns):  # each box is its mask's extent
                ys, xs = np.nonzero(masks[:, :, k])
                x, y, w, h = ann["bbox"]
                assert (x, y, x + w, y + h) == (xs.min(), ys.min(), xs.max() + 1, ys.max() + 1), (split, ann)


def test_val_pixels_are_never_trained_on(converted) -> None:
    """Per source image: training crops end left of the split line, validation strips tile the band
    right of it exactly once, and their pixels are the source's."""
    out, _, data = converted
    frames = {frame.name: frame for loader in _tool().SOURCES.values() for frame in loader()}
    assert len(frames) == 22  # stardist, ngio, 10 time points x (nuclei, cells)
    covered = {name: np.zeros(frame.image.shape, np.int32) for name, frame in frames.items()}
    for split, payload in data.items():
        for image in payload["images"]:
            match = NAME.match(image["file_name"])
            assert match and match[1] == split, image
            frame = frames[match[2]]
            y, x, h, w = int(match[3]), int(match[4]), image["height"], image["width"]
            if split == "train":
                assert x + w <= frame.split_x, image
            else:
                assert x == frame.split_x and x + w == frame.image.shape[1], image
                covered[match[2]][y : y + h, x : x + w] += 1
            pixels = np.array(Image.open(out / "images" / image["file_name"]))
            np.testing.assert_array_equal(pixels, frame.image[y : y + h, x : x + w])
    for name, frame in frames.items():
        assert (covered[name][:, frame.split_x :] == 1).all() and not covered[name][:, : frame.split_x].any()


def test_loads_through_the_coco_format_data_module(converted) -> None:
    from msrcnn.data import DetectionDataModule

    out, _, data = converted
    module = DetectionDataModule(
        train={"ann_file": out / "train.json", "img_dir": out / "images"},
        val={"ann_file": out / "val.json", "img_dir": out / "images"},
        batch_size=4,
        eval_batch_size=4,
        num_workers=0,
        train_min_size=[128],
        max_size=256,
        persistent_workers=False,
    )
    module.setup("fit")
    assert module.class_names == ["nucleus", "cell"]
    images, targets = next(iter(module.train_dataloader()))
    assert len(images) == 4 and all(image.shape[0] == 3 for image in images)
    for image, target in zip(images, targets):
        assert target["masks"].shape[-2:] == image.shape[-2:] and len(target["masks"]) == len(
            target["labels"]
        )
    val_loader = module.val_dataloader()
    val_images, _ = next(iter(val_loader))
    assert len(val_images) == 4 and len(val_loader.dataset) == len(data["val"]["images"])


@pytest.mark.parametrize("missing", PACKAGES)
def test_a_missing_package_is_one_line_and_nothing_written(missing, tmp_path, monkeypatch, capsys) -> None:
    real_find_spec = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util, "find_spec", lambda name, *a: None if name == missing else real_find_spec(name, *a)
    )
    out = tmp_path / "out"
    assert _tool().main([str(out)]) == 2
    err = capsys.readouterr()
    assert not err.out and err.err.count("\n") == 1, err
    assert err.err.startswith("error: the '") and "package is not installed" in err.err, err.err
    assert missing.replace("_", "-") in err.err and not out.exists()


def test_unwritable_output_is_one_line(tmp_path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("not a folder")
    proc = run_script("tools/convert_microscopy.py", str(blocker / "out"), "--sources", "ngio", check=False)
    assert proc.returncode == 2 and proc.stderr.count("\n") == 1 and not proc.stdout, proc.stderr
    assert proc.stderr.startswith(f"error: {blocker / 'out'}: cannot write the dataset"), proc.stderr
