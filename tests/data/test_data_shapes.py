"""The synthetic shapes generator: deterministic, cached, atomic, and hard in the intended ways."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from pycocotools import mask as mask_utils
from pycocotools.coco import COCO

from msrcnn.data import SHAPES_CATEGORIES, CocoInstanceDataset, generate_shapes, shapes_splits
from msrcnn.data import shapes as shapes_module

pytestmark = pytest.mark.filterwarnings("ignore:__array__ implementation:DeprecationWarning")

TINY = {"num_train": 6, "num_val": 3, "image_size": 64}


def _files(root: Path) -> dict[str, bytes]:
    return {
        str(path.relative_to(root)): path.read_bytes() for path in sorted(root.rglob("*")) if path.is_file()
    }


def _coco(root: Path, split: str = "train") -> dict:
    return json.loads((root / "annotations" / f"instances_{split}.json").read_text())


def test_layout_and_loader_compatibility(shapes_dir: Path) -> None:
    for split, count in (("train", 24), ("val", 8)):
        data = _coco(shapes_dir, split)
        assert len(data["images"]) == count
        assert len(list((shapes_dir / split).glob("*.png"))) == count
        assert [(c["id"], c["name"]) for c in data["categories"]] == list(SHAPES_CATEGORIES)
    spec = shapes_splits(shapes_dir)["val"]
    dataset = CocoInstanceDataset(spec.ann_file, spec.img_dir)
    assert len(dataset.category_map) == len(SHAPES_CATEGORIES) >= 5
    assert dataset.category_map.cat_ids != tuple(range(1, len(SHAPES_CATEGORIES) + 1))  # non-contiguous ids
    image, target = dataset[0]
    assert image.shape == (3, 160, 160) and target["masks"].shape[1:] == (160, 160)
    assert dataset.stats.degenerate_boxes == dataset.stats.degenerate_polygons == 0


def test_same_parameters_give_identical_bytes(tmp_path: Path) -> None:
    first = generate_shapes(tmp_path / "a", seed=3, **TINY)
    second = generate_shapes(tmp_path / "b", seed=3, **TINY)
    assert first.name == second.name
    assert _files(first) == _files(second)


def test_different_seed_or_parameters_differ(tmp_path: Path) -> None:
    base = generate_shapes(tmp_path, seed=3, **TINY)
    other_seed = generate_shapes(tmp_path, seed=4, **TINY)
    other_size = generate_shapes(tmp_path, seed=3, **{**TINY, "image_size": 72})
    assert len({base.name, other_seed.name, other_size.name}) == 3
    assert _coco(base)["annotations"] != _coco(other_seed)["annotations"]
    assert (base / "train" / "000001.png").read_bytes() != (other_seed / "train" / "000001.png").read_bytes()


def test_generation_is_cached_and_atomic(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = generate_shapes(tmp_path, seed=5, **TINY)
    stamp = (path / "annotations" / "instances_train.json").stat().st_mtime_ns

    def no_regeneration(*args, **kwargs):
        raise AssertionError("a cached dataset must not be generated again")

    with monkeypatch.context() as patch:
        patch.setattr(shapes_module, "_write_split", no_regeneration)
        assert generate_shapes(tmp_path, seed=5, **TINY) == path
    assert (path / "annotations" / "instances_train.json").stat().st_mtime_ns == stamp
    assert [p.name for p in tmp_path.iterdir()] == [path.name]  # no temporary folders left behind

    def crash(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(shapes_module, "_write_split", crash)
    with pytest.raises(KeyboardInterrupt):
        generate_shapes(tmp_path, seed=6, **TINY)
    assert [p.name for p in tmp_path.iterdir()] == [path.name]  # an interrupted run leaves nothing


def test_losing_a_generation_race_keeps_the_winner(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    winner = generate_shapes(tmp_path / "winner", seed=7, **TINY)
    final = tmp_path / "race" / winner.name
    real_write = shapes_module._write_split

    def write_then_lose_race(out_dir: Path, split: str, num_images: int, params: dict) -> None:
        real_write(out_dir, split, num_images, params)
        if split == "val":  # another process finishes first
            final.parent.mkdir(exist_ok=True)
            winner.rename(final)

    monkeypatch.setattr(shapes_module, "_write_split", write_then_lose_race)
    assert generate_shapes(tmp_path / "race", seed=7, **TINY) == final
    assert [p.name for p in (tmp_path / "race").iterdir()] == [final.name]


def test_all_size_buckets_and_some_empty_images(tmp_path: Path) -> None:
    # 100 images at the default parameters: large objects are a few percent of the instances (they
    # are the ones most often occluded by the later, denser objects), too few for the 24-image fixture
    data = _coco(generate_shapes(tmp_path, num_train=100, num_val=4, image_size=160, seed=0))
    areas = np.array([ann["area"] for ann in data["annotations"]])
    assert (areas < 32**2).sum() > 0
    assert ((areas >= 32**2) & (areas < 96**2)).sum() > 0
    assert (areas >= 96**2).sum() > 0
    annotated = {ann["image_id"] for ann in data["annotations"]}
    empty_images = len(data["images"]) - len(annotated)
    assert 5 <= empty_images <= 8  # 5% chosen empty, plus any whose objects all failed placement


def test_both_polygons_and_rle_are_written(shapes_dir: Path) -> None:
    segmentations = [ann["segmentation"] for ann in _coco(shapes_dir)["annotations"]]
    assert any(isinstance(s, list) and len(s) > 1 for s in segmentations)  # multi-part polygons (the "L")
    assert any(isinstance(s, list) and len(s) == 1 for s in segmentations)
    assert any(isinstance(s, dict) and isinstance(s["counts"], str) for s in segmentations)


def test_masks_are_visible_parts(shapes_dir: Path) -> None:
    """Later objects occlude earlier ones: no pixel belongs to two instances, and the json's areas and
    boxes describe the visible masks."""
    spec = shapes_splits(shapes_dir)["train"]
    dataset = CocoInstanceDataset(spec.ann_file, spec.img_dir)
    coco = COCO(spec.ann_file)
    for index in range(len(dataset)):
        _, target = dataset[index]
        masks = target["masks"]
        assert int(masks.sum(0).max()) <= 1
        anns = coco.imgToAnns[int(target["image_id"])]
        assert target["area"].tolist() == [ann["area"] for ann in anns]
        assert all(ann["area"] >= 12 for ann in anns)
        assert [mask_utils.toBbox(coco.annToRLE(ann)).tolist() for ann in anns] == [
            ann["bbox"] for ann in anns
        ]


def test_parameters_are_validated(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="image_size"):
        generate_shapes(tmp_path, image_size=8)
    with pytest.raises(ValueError, match="empty_fraction"):
        generate_shapes(tmp_path, empty_fraction=1.5)
    with pytest.raises(ValueError, match="num_train"):
        generate_shapes(tmp_path, num_train=0)
    with pytest.raises(ValueError, match="seed"):
        generate_shapes(tmp_path, seed=-1)


def test_occlusion_is_partial_and_common(shapes_dir: Path) -> None:
    """Occluded instances (RLE, since their visible part is not the drawn polygon) are common, and
    a later object never hides more than half of what an earlier one shows (``_max_occlusion``)."""
    from msrcnn.data.shapes import _max_occlusion

    owner = np.full((8, 8), -1, dtype=np.int16)
    owner[:4, :4], owner[4:, 4:] = 0, 1
    new = np.zeros((8, 8), dtype=bool)
    new[:2, :4] = True  # half of object 0, none of object 1
    assert _max_occlusion(owner, new, 2) == 0.5
    assert _max_occlusion(owner, new, 0) == 0.0
    anns = _coco(shapes_dir)["annotations"]
    rle = sum(isinstance(a["segmentation"], dict) for a in anns)
    assert 0.2 < rle / len(anns) < 0.9


def test_each_class_has_its_own_hue(tmp_path: Path) -> None:
    """The classifier can be sure of the class (hue family and shape), so mask quality, not class
    confidence, is what varies: the mean hue of an instance's pixels identifies its class."""
    import colorsys

    from PIL import Image

    root = generate_shapes(tmp_path, num_train=30, num_val=1, image_size=96, seed=3)
    coco = COCO(str(root / "annotations" / "instances_train.json"))
    hues: dict[int, list[float]] = {}
    for ann in coco.dataset["annotations"]:
        if ann["area"] < 200:
            continue
        image = np.asarray(
            Image.open(root / "train" / coco.imgs[ann["image_id"]]["file_name"]), dtype=np.float64
        )
        mask = mask_utils.decode(coco.annToRLE(ann)).astype(bool)
        r, g, b = image[mask].mean(axis=0) / 255.0
        hues.setdefault(ann["category_id"], []).append(colorsys.rgb_to_hsv(r, g, b)[0])

    def circular_mean(h: list[float]) -> float:  # hue is an angle: the red family straddles 0 / 1
        angles = 2.0 * np.pi * np.asarray(h)
        return float(np.arctan2(np.sin(angles).mean(), np.cos(angles).mean()) / (2.0 * np.pi)) % 1.0

    medians = {cat: circular_mean(h) for cat, h in hues.items()}
    assert len(medians) >= 5
    ordered = sorted(medians.values())
    gaps = np.diff(ordered + [ordered[0] + 1.0])
    assert gaps.min() > 0.08  # distinct hue families (1/6 of the circle apart by design)


def test_count_components_is_8_connected() -> None:
    mask = np.zeros((12, 12), dtype=bool)
    assert shapes_module._num_components(mask) == 0
    mask[1:4, 1:9] = True  # a bar
    mask[6:8, 2:9] = True  # a second bar, apart
    assert shapes_module._num_components(mask) == 2
    mask[4, 8] = mask[5, 7] = True  # joined through a diagonal step
    assert shapes_module._num_components(mask) == 1
    mask[5, 7] = False
    assert shapes_module._num_components(mask) == 2
    yy, xx = np.mgrid[:40, :40]
    ring = (np.hypot(yy - 20, xx - 20) < 16) & (np.hypot(yy - 20, xx - 20) > 9)
    assert shapes_module._num_components(ring) == 1
    ring[:, 19:22] = False  # cut across: two arcs
    assert shapes_module._num_components(ring) == 2


def test_every_instance_is_one_piece(shapes_dir: Path) -> None:
    """Occluders and the image border never cut an object in pieces: each piece would be a detection of
    its own whose mask covers only part of the object, a box that no RoI head trains on."""
    coco = COCO(str(shapes_dir / "annotations" / "instances_train.json"))
    pieces = [
        shapes_module._num_components(mask_utils.decode(coco.annToRLE(ann)).astype(bool))
        for ann in coco.dataset["annotations"]
    ]
    assert len(pieces) > 50
    assert pieces == [1] * len(pieces)
