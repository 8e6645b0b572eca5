"""COCO loading: category mapping, crowds, every segmentation encoding, degenerate drops, empty images."""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pytest
import torch
from pycocotools import mask as mask_utils
from pycocotools.coco import COCO

from msrcnn.data import CategoryMap, CocoInstanceDataset, DataError, SplitSpec, coco2017_splits
from msrcnn.data.rle import rle_string_counts

pytestmark = pytest.mark.filterwarnings("ignore:__array__ implementation:DeprecationWarning")


def test_category_map_is_contiguous_over_sorted_non_contiguous_ids() -> None:
    cmap = CategoryMap.from_categories(
        [{"id": 90, "name": "c"}, {"id": 1, "name": "a"}, {"id": 5, "name": "b"}]
    )
    assert cmap.cat_ids == (1, 5, 90)
    assert cmap.names == ("a", "b", "c")
    assert len(cmap) == 3 and cmap.num_classes == 4
    assert [cmap.cat_id_to_label(c) for c in (1, 5, 90)] == [1, 2, 3]
    assert [cmap.label_to_cat_id(label) for label in (1, 2, 3)] == [1, 5, 90]
    with pytest.raises(KeyError):
        cmap.cat_id_to_label(2)
    with pytest.raises(KeyError):
        cmap.label_to_cat_id(0)


def test_category_map_refuses_duplicate_and_empty_categories() -> None:
    with pytest.raises(DataError, match="duplicate category id 3"):
        CategoryMap.from_categories([{"id": 3, "name": "a"}, {"id": 3, "name": "b"}], "x.json")
    with pytest.raises(DataError, match="non-empty"):
        CategoryMap.from_categories([], "x.json")


def test_coco2017_layout(tmp_path: Path) -> None:
    splits = coco2017_splits(tmp_path)
    assert splits["train"] == SplitSpec(
        str(tmp_path / "annotations" / "instances_train2017.json"), str(tmp_path / "train2017")
    )
    assert splits["val"].ann_file.endswith("annotations/instances_val2017.json")
    assert splits["val"].img_dir == str(tmp_path / "val2017")
    assert splits["test"].ann_file.endswith("annotations/image_info_test-dev2017.json")
    assert splits["test"].img_dir == str(tmp_path / "test2017")


def _by_image_id(dataset: CocoInstanceDataset) -> dict[int, dict[str, torch.Tensor]]:
    return {int(target["image_id"]): target for _, target in (dataset[i] for i in range(len(dataset)))}


def test_val_targets_keep_empty_images_and_drop_crowds_and_degenerates(tiny_coco) -> None:
    dataset = CocoInstanceDataset(tiny_coco.ann_file, tiny_coco.img_dir)
    targets = _by_image_id(dataset)
    assert sorted(targets) == [11, 22, 33, 44]
    assert targets[11]["labels"].tolist() == [3, 1]  # category ids 90 and 1; the crowd (id 3) is left out
    assert targets[22]["labels"].tolist() == [2]  # only the uncompressed RLE survives
    for empty in (33, 44):
        target = targets[empty]
        height, width = target["orig_size"].tolist()
        assert target["boxes"].shape == (0, 4) and target["boxes"].dtype == torch.float32
        assert target["labels"].shape == (0,) and target["labels"].dtype == torch.int64
        assert target["masks"].shape == (0, height, width) and target["masks"].dtype == torch.uint8
        assert target["area"].shape == (0,) and target["iscrowd"].shape == (0,)
    stats = dataset.stats
    assert (stats.images, stats.kept_images, stats.empty_images, stats.instances) == (4, 4, 2, 3)
    assert (stats.crowd, stats.degenerate_boxes, stats.degenerate_polygons) == (2, 1, 1)


def test_training_drops_images_without_non_crowd_annotations(tiny_coco) -> None:
    dataset = CocoInstanceDataset(tiny_coco.ann_file, tiny_coco.img_dir, drop_empty=True)
    assert dataset.image_ids.tolist() == [11, 22]
    assert all(len(target["labels"]) for _, target in (dataset[i] for i in range(len(dataset))))
    assert dataset.aspect_ratios().tolist() == pytest.approx([40 / 30, 48 / 32])


def test_target_format(tiny_coco) -> None:
    dataset = CocoInstanceDataset(tiny_coco.ann_file, tiny_coco.img_dir)
    image, target = dataset[0]
    assert image.dtype == torch.float32 and image.shape == (3, 30, 40)
    assert 0.0 <= float(image.min()) and float(image.max()) <= 1.0
    assert (
        target["image_id"].dtype == torch.int64
        and target["image_id"].shape == ()
        and int(target["image_id"]) == 11
    )
    assert target["orig_size"].tolist() == [30, 40] and target["orig_size"].dtype == torch.int64
    assert target["boxes"].tolist() == [[2.0, 2.0, 22.0, 14.0], [25.0, 10.0, 33.0, 18.0]]  # xywh -> xyxy
    assert target["masks"].shape == (2, 30, 40)
    assert target["area"].dtype == torch.float32
    assert target["area"].tolist() == target["masks"].flatten(1).sum(1).float().tolist()
    assert target["iscrowd"].tolist() == [0, 0] and target["iscrowd"].dtype == torch.int64


def test_masks_match_pycocotools_ann_to_mask(tiny_coco) -> None:
    """Multi-part polygons, compressed and uncompressed RLE decode exactly like pycocotools' annToMask."""
    coco = COCO(str(tiny_coco.ann_file))
    dataset = CocoInstanceDataset(tiny_coco.ann_file, tiny_coco.img_dir)
    targets = _by_image_id(dataset)
    for image_id, ann_ids in ((11, [1, 2]), (22, [4])):
        expected = np.stack([coco.annToMask(coco.anns[ann_id]) for ann_id in ann_ids])
        np.testing.assert_array_equal(targets[image_id]["masks"].numpy(), expected)
    assert targets[11]["masks"][0].sum() > 0 and targets[22]["masks"][0].sum() == 63


def test_crowd_regions_stay_in_the_json(tiny_coco) -> None:
    """Crowds are excluded from targets only; the evaluator reads them from the untouched file."""
    before = tiny_coco.ann_file.read_bytes()
    CocoInstanceDataset(tiny_coco.ann_file, tiny_coco.img_dir)
    assert tiny_coco.ann_file.read_bytes() == before
    assert sum(ann["iscrowd"] for ann in COCO(str(tiny_coco.ann_file)).anns.values()) == 2


def test_degenerate_drops_are_logged_with_counts(tiny_coco, caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.INFO, logger="msrcnn.data"):
        CocoInstanceDataset(tiny_coco.ann_file, tiny_coco.img_dir, drop_empty=True, name="train")
    records = [r for r in caplog.records if r.name == "msrcnn.data" and "train" in r.getMessage()]
    assert len(records) == 1 and records[0].levelno == logging.WARNING
    message = records[0].getMessage()
    assert "1 degenerate boxes" in message and "1 degenerate polygons" in message
    assert "2 crowd regions" in message and "2 of 4 images used" in message and "dropped" in message


def test_degenerate_polygon_parts_are_removed_and_counted(
    tiny_coco, caplog: pytest.LogCaptureFixture
) -> None:
    annotations = [
        {
            "id": 1,
            "image_id": 11,
            "category_id": 1,
            "bbox": [2, 2, 10, 10],
            "iscrowd": 0,
            "segmentation": [[2, 2, 12, 2, 12, 12, 2, 12], [1, 1, 2, 2], [3, 3, 4, 4, 5, 5]],
        },
        {"id": 2, "image_id": 11, "category_id": 1, "bbox": [2, 2, 10, 10], "iscrowd": 0, "segmentation": []},
        {
            "id": 3,
            "image_id": 11,
            "category_id": 1,
            "bbox": [2, 2, 10, 10],
            "iscrowd": 0,
            "segmentation": {"size": [30, 40], "counts": [1200]},
        },
    ]
    ann_file = tiny_coco.variant("parts.json", annotations=annotations)
    with caplog.at_level(logging.INFO, logger="msrcnn.data"):
        dataset = CocoInstanceDataset(ann_file, tiny_coco.img_dir)
    assert (dataset.stats.instances, dataset.stats.degenerate_polygon_parts) == (1, 2)
    assert (dataset.stats.degenerate_polygons, dataset.stats.empty_rles) == (1, 1)
    assert "2 degenerate polygon parts" in caplog.text and "1 empty RLE masks" in caplog.text
    assert dataset[0][1]["masks"][0].sum() == 100


def test_boxes_are_clipped_to_the_image(tiny_coco) -> None:
    annotations = [
        {
            "id": 1,
            "image_id": 44,
            "category_id": 5,
            "bbox": [-4, 10, 50, 30],
            "iscrowd": 0,
            "segmentation": [[0, 10, 32, 10, 32, 20, 0, 20]],
        }
    ]
    dataset = CocoInstanceDataset(tiny_coco.variant("clip.json", annotations=annotations), tiny_coco.img_dir)
    assert _by_image_id(dataset)[44]["boxes"].tolist() == [[0.0, 10.0, 32.0, 20.0]]


def test_image_info_file_without_annotations_gives_empty_targets(tiny_coco, write_json) -> None:
    info = {"images": tiny_coco.data["images"], "categories": tiny_coco.data["categories"]}
    ann_file = write_json(tiny_coco.root / "annotations" / "image_info.json", info)
    dataset = CocoInstanceDataset(ann_file, tiny_coco.img_dir, require_annotations=False)
    assert len(dataset) == 4 and not dataset.has_annotations
    assert all(target["boxes"].shape == (0, 4) for _, target in (dataset[i] for i in range(4)))
    with pytest.raises(DataError, match="annotations"):
        CocoInstanceDataset(ann_file, tiny_coco.img_dir)


def test_splits_must_declare_identical_categories(tiny_coco) -> None:
    reference = CategoryMap.from_categories(tiny_coco.data["categories"])
    renamed = [{**c, "name": c["name"].upper()} for c in tiny_coco.data["categories"]]
    ann_file = tiny_coco.variant("renamed.json", categories=renamed)
    with pytest.raises(DataError, match="categories differ") as info:
        CocoInstanceDataset(ann_file, tiny_coco.img_dir, category_map=reference)
    assert "renamed.json" in str(info.value)
    same = CocoInstanceDataset(tiny_coco.ann_file, tiny_coco.img_dir, category_map=reference)
    assert same.category_map == reference


def test_rle_string_decoder_matches_pycocotools() -> None:
    rng = np.random.default_rng(0)
    for _ in range(20):
        mask = (rng.random((37, 23)) < rng.uniform(0.05, 0.95)).astype(np.uint8)
        rle = mask_utils.encode(np.asfortranarray(mask))
        counts = rle_string_counts(rle["counts"].decode("ascii"))
        assert sum(counts) == mask.size
        uncompressed = mask_utils.frPyObjects({"size": [37, 23], "counts": counts}, 37, 23)
        np.testing.assert_array_equal(mask_utils.decode(uncompressed), mask)
