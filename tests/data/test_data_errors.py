"""Broken input is refused with a DataError naming the file, the ids involved and the problem."""

from __future__ import annotations

import copy

import pytest
from PIL import Image

from msrcnn.data import CocoInstanceDataset, DataError, DetectionDataModule, SplitSpec
from msrcnn_testing import user_error_line

pytestmark = pytest.mark.filterwarnings("ignore:__array__ implementation:DeprecationWarning")


def _load(ann_file, img_dir, **kwargs) -> str:
    with pytest.raises(DataError) as info:
        CocoInstanceDataset(ann_file, img_dir, **kwargs)[0]
    return str(info.value)


def test_data_error_is_a_value_error() -> None:
    assert issubclass(DataError, ValueError)


def test_missing_annotation_file(tiny_coco) -> None:
    missing = tiny_coco.root / "annotations" / "nope.json"
    message = _load(missing, tiny_coco.img_dir)
    assert "nope.json" in message and "not found" in message


def test_truncated_json_reports_position(tiny_coco) -> None:
    broken = tiny_coco.root / "annotations" / "truncated.json"
    broken.write_text(tiny_coco.ann_file.read_text()[:150])
    message = _load(broken, tiny_coco.img_dir)
    assert "truncated.json" in message and "not valid JSON" in message
    assert "line 1" in message and "char" in message


def test_malformed_json(tiny_coco) -> None:
    broken = tiny_coco.root / "annotations" / "malformed.json"
    broken.write_text('{"images": [}\n')
    message = _load(broken, tiny_coco.img_dir)
    assert "malformed.json" in message and "not valid JSON" in message and "column 13" in message


def test_top_level_must_be_an_object(tiny_coco, write_json) -> None:
    ann_file = write_json(tiny_coco.root / "annotations" / "list.json", [1, 2])
    assert "top level must be a JSON object" in _load(ann_file, tiny_coco.img_dir)


@pytest.mark.parametrize("key", ["images", "annotations", "categories"])
def test_missing_top_level_key(tiny_coco, write_json, key: str) -> None:
    data = {k: v for k, v in tiny_coco.data.items() if k != key}
    ann_file = write_json(tiny_coco.root / "annotations" / f"no_{key}.json", data)
    message = _load(ann_file, tiny_coco.img_dir)
    assert f"no_{key}.json" in message and "missing required top-level key" in message and key in message


def test_missing_image_files_are_counted_and_listed(tiny_coco) -> None:
    for name in ("img_22.png", "img_44.png"):
        (tiny_coco.img_dir / name).unlink()
    message = _load(tiny_coco.ann_file, tiny_coco.img_dir)
    assert "instances.json" in message and "2 of 4 image files are missing" in message
    assert "img_22.png" in message and "img_44.png" in message
    (tiny_coco.img_dir / "img_22.png").write_bytes((tiny_coco.img_dir / "img_11.png").read_bytes())
    message = _load(tiny_coco.ann_file, tiny_coco.img_dir, drop_empty=True)
    assert "1 of 4 image files are missing" in message  # even images training would drop are checked


def test_missing_image_files_list_only_the_first_few(tiny_coco, write_json) -> None:
    images = [{"id": i, "file_name": f"gone_{i}.jpg", "width": 8, "height": 8} for i in range(1, 10)]
    ann_file = write_json(
        tiny_coco.root / "annotations" / "gone.json", {**tiny_coco.data, "images": images, "annotations": []}
    )
    message = _load(ann_file, tiny_coco.img_dir)
    assert "9 of 9 image files are missing" in message
    assert "gone_5.jpg" in message and "gone_6.jpg" not in message


def test_unknown_category_id(tiny_coco) -> None:
    annotations = copy.deepcopy(tiny_coco.data["annotations"])
    annotations[3]["category_id"] = 77
    message = _load(tiny_coco.variant("badcat.json", annotations=annotations), tiny_coco.img_dir)
    assert "badcat.json" in message and "annotation id 4" in message and "unknown category id 77" in message


def test_annotation_for_unknown_image(tiny_coco) -> None:
    annotations = copy.deepcopy(tiny_coco.data["annotations"])
    annotations[1]["image_id"] = 999
    message = _load(tiny_coco.variant("badimg.json", annotations=annotations), tiny_coco.img_dir)
    assert "badimg.json" in message and "annotation id 2" in message and "image id 999" in message


def test_corrupt_rle(tiny_coco) -> None:
    annotations = copy.deepcopy(tiny_coco.data["annotations"])
    annotations[3]["segmentation"]["counts"][-1] += 5
    message = _load(tiny_coco.variant("badrle.json", annotations=annotations), tiny_coco.img_dir)
    assert "badrle.json" in message and "annotation id 4" in message and "corrupt RLE" in message


def test_rle_size_mismatch(tiny_coco) -> None:
    annotations = copy.deepcopy(tiny_coco.data["annotations"])
    annotations[1]["segmentation"]["size"] = [40, 30]
    message = _load(tiny_coco.variant("rlesize.json", annotations=annotations), tiny_coco.img_dir)
    assert "annotation id 2" in message and "RLE size" in message


def test_malformed_bbox_and_segmentation(tiny_coco) -> None:
    annotations = copy.deepcopy(tiny_coco.data["annotations"])
    annotations[0]["bbox"] = [1, 2, 3]
    assert "malformed bbox" in _load(
        tiny_coco.variant("bbox.json", annotations=annotations), tiny_coco.img_dir
    )
    annotations = copy.deepcopy(tiny_coco.data["annotations"])
    annotations[0]["segmentation"] = "polygon"
    message = _load(tiny_coco.variant("seg.json", annotations=annotations), tiny_coco.img_dir)
    assert "annotation id 1" in message and "neither polygons nor RLE" in message


def test_duplicate_ids(tiny_coco) -> None:
    annotations = copy.deepcopy(tiny_coco.data["annotations"])
    annotations[1]["id"] = 1
    assert "annotation id 1 is duplicated" in _load(
        tiny_coco.variant("dupann.json", annotations=annotations), tiny_coco.img_dir
    )
    images = copy.deepcopy(tiny_coco.data["images"])
    images[1]["id"] = 11
    assert "duplicate image id 11" in _load(
        tiny_coco.variant("dupimg.json", images=images), tiny_coco.img_dir
    )


def test_corrupt_image_is_reported_at_load(tiny_coco) -> None:
    (tiny_coco.img_dir / "img_33.png").write_bytes(b"\x89PNG\r\n\x1a\n not really a png")
    dataset = CocoInstanceDataset(tiny_coco.ann_file, tiny_coco.img_dir)
    with pytest.raises(DataError) as info:
        dataset[int((dataset.image_ids == 33).nonzero()[0][0])]
    assert "img_33.png" in str(info.value) and "image id 33" in str(info.value)


def test_truncated_image_is_reported_at_load(tiny_coco) -> None:
    path = tiny_coco.img_dir / "img_11.png"
    path.write_bytes(path.read_bytes()[:200])
    message = _load(tiny_coco.ann_file, tiny_coco.img_dir)
    assert "img_11.png" in message and "image id 11" in message and "cannot read image" in message


def test_image_size_must_match_the_json(tiny_coco) -> None:
    Image.new("RGB", (41, 30)).save(tiny_coco.img_dir / "img_11.png")
    message = _load(tiny_coco.ann_file, tiny_coco.img_dir)
    assert "img_11.png" in message and "image id 11" in message
    assert "41x30" in message and "40x30" in message


def test_datamodule_setup_refuses_broken_splits(tiny_coco) -> None:
    spec = SplitSpec(str(tiny_coco.root / "annotations" / "missing.json"), str(tiny_coco.img_dir))
    module = DetectionDataModule(train=SplitSpec(str(tiny_coco.ann_file), str(tiny_coco.img_dir)), val=spec)
    with pytest.raises(DataError, match="missing.json"):
        module.setup("fit")


def _corrupt_train_module(tiny_coco, num_workers: int) -> DetectionDataModule:
    (tiny_coco.img_dir / "img_11.png").write_bytes(b"\x89PNG\r\n\x1a\n not really a png")
    split = SplitSpec(str(tiny_coco.ann_file), str(tiny_coco.img_dir))
    module = DetectionDataModule(
        train=split,
        val=split,
        batch_size=4,
        num_workers=num_workers,
        persistent_workers=False,
        train_min_size=[32],
        max_size=64,
    )
    module.setup("fit")
    return module


@pytest.mark.parametrize("num_workers", [0, 1])
def test_a_worker_data_error_arrives_as_the_original_one_line_message(tiny_coco, num_workers: int) -> None:
    module = _corrupt_train_module(tiny_coco, num_workers)
    with pytest.raises(DataError) as info:
        next(iter(module.train_dataloader()))
    message = str(info.value)
    assert "\n" not in message and "Traceback" not in message
    assert message.startswith(str(tiny_coco.img_dir / "img_11.png")) and "image id 11" in message
    if num_workers:
        assert "DataLoader worker" in info.value.worker_traceback and message in info.value.worker_traceback
    else:
        assert info.value.worker_traceback is None


def test_data_error_keeps_ordinary_messages() -> None:
    assert str(DataError("a.json: bad")) == "a.json: bad"
    assert DataError("a.json: bad").worker_traceback is None


# The annotation checks' one-line errors, as a script reports them (report_user_errors: exit status 2).
def _line(ann_file, img_dir) -> str:
    return user_error_line(lambda: CocoInstanceDataset(ann_file, img_dir)[0])


def test_categories_need_integer_ids(tiny_coco) -> None:
    categories = [{"id": "1", "name": "person"}, *tiny_coco.data["categories"][1:]]
    line = _line(tiny_coco.variant("catid.json", categories=categories), tiny_coco.img_dir)
    assert "catid.json: categories[0] needs an integer 'id' and a 'name'" in line


def test_a_non_utf8_annotation_file(tiny_coco) -> None:
    path = tiny_coco.root / "annotations" / "latin1.json"
    path.write_bytes('{"images": [], "info": "caf\u00e9"}'.encode("latin-1"))
    line = _line(path, tiny_coco.img_dir)
    assert "latin1.json: not valid JSON (not UTF-8 text" in line


@pytest.mark.parametrize("key", ["images", "annotations"])
def test_an_entry_that_is_not_an_object(tiny_coco, key: str) -> None:
    entries = [7, *tiny_coco.data[key]]
    line = _line(tiny_coco.variant(f"{key}_int.json", **{key: entries}), tiny_coco.img_dir)
    assert f"{key}_int.json: {key}[0] is not an object" in line


def test_entries_that_lack_keys(tiny_coco) -> None:
    annotations = copy.deepcopy(tiny_coco.data["annotations"])
    del annotations[1]["bbox"]
    line = _line(tiny_coco.variant("nobbox.json", annotations=annotations), tiny_coco.img_dir)
    assert "nobbox.json: annotations[1] (annotation id 2) lacks ['bbox']" in line
    images = copy.deepcopy(tiny_coco.data["images"])
    del images[0]["file_name"]
    line = _line(tiny_coco.variant("nofile.json", images=images), tiny_coco.img_dir)
    assert "nofile.json: images[0] (image id" in line and "lacks ['file_name']" in line


def test_a_malformed_polygon(tiny_coco) -> None:
    annotations = copy.deepcopy(tiny_coco.data["annotations"])
    annotations[0]["segmentation"] = [[1.0, "two", 3.0, 4.0, 5.0, 6.0]]
    line = _line(tiny_coco.variant("poly.json", annotations=annotations), tiny_coco.img_dir)
    assert "poly.json: annotation id 1 has a malformed polygon" in line


def test_a_corrupt_compressed_rle(tiny_coco) -> None:
    annotations = copy.deepcopy(tiny_coco.data["annotations"])
    rle = next(
        a
        for a in annotations
        if isinstance(a["segmentation"], dict) and isinstance(a["segmentation"]["counts"], str)
    )
    rle["segmentation"]["counts"] = rle["segmentation"]["counts"][:3] + "\u00ff"
    line = _line(tiny_coco.variant("crle.json", annotations=annotations), tiny_coco.img_dir)
    assert f"crle.json: annotation id {rle['id']} has a corrupt compressed RLE: invalid character" in line
