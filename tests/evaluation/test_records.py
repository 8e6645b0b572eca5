"""Model output -> DetectionRecord conversion and RLE encoding."""

from __future__ import annotations

import importlib
import json

import numpy as np
import pytest
import torch
from pycocotools import mask as pmask
from torchvision.models.detection.roi_heads import paste_masks_in_image as tv_paste

from msrcnn.evaluation import DetectionRecord, encode_masks, encode_roi_masks, make_record

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning:pycocotools")

LABEL_TO_CAT = [0, 1, 7, 90]
RLE = importlib.import_module("msrcnn.evaluation.rle")


@pytest.fixture(params=["numpy", "torch"])
def binarise_path(request, monkeypatch):
    """Runs a test on both ways of binarising roi masks: NumPy (CPU masks) and torch (the path of
    GPU masks), forced by emptying the NumPy dtypes."""
    if request.param == "torch":
        monkeypatch.setattr(RLE, "_NUMPY_DTYPES", ())
    return request.param


def fake_output(k: int, h: int = 24, w: int = 32, seed: int = 0) -> dict[str, torch.Tensor]:
    """A torchvision-style MS R-CNN output with ``k`` random detections."""
    g = torch.Generator().manual_seed(seed)
    xy = torch.rand(k, 2, generator=g) * 20
    scores = torch.rand(k, generator=g)
    mask_ious = torch.rand(k, generator=g) * 1.4 - 0.2
    return {
        "boxes": torch.cat([xy, xy + 5], 1),
        "labels": torch.randint(1, 4, (k,), generator=g),
        "scores": scores,
        "mask_ious": mask_ious,
        "mask_scores": scores * mask_ious,
        "masks": torch.rand(k, 1, h, w, generator=g),
    }


def test_encode_masks_round_trip_and_threshold():
    probs = torch.rand(5, 1, 17, 23, generator=torch.Generator().manual_seed(1))
    probs[0, 0, 3, 4] = 0.5  # exactly the threshold: background (torchvision's `> 0.5`)
    rles = encode_masks(probs)
    assert len(rles) == 5
    assert all(isinstance(r["counts"], str) and list(r["size"]) == [17, 23] for r in rles)
    json.dumps(rles)
    decoded = pmask.decode([{"size": r["size"], "counts": r["counts"].encode()} for r in rles])
    np.testing.assert_array_equal(decoded.transpose(2, 0, 1), (probs[:, 0] > 0.5).numpy())
    assert decoded[3, 4, 0] == 0
    # [K, H, W] input and another threshold.
    decoded = pmask.decode(encode_masks(probs[:, 0], threshold=0.8))
    np.testing.assert_array_equal(decoded.transpose(2, 0, 1), (probs[:, 0] > 0.8).numpy())


def test_encode_masks_empty_and_bad_shape():
    assert encode_masks(torch.zeros(0, 1, 8, 8)) == []
    with pytest.raises(ValueError, match="shape"):
        encode_masks(torch.zeros(2, 3, 8, 8))
    with pytest.raises(ValueError, match="shape"):
        encode_masks(torch.zeros(8, 8))


def _roi_case(k: int, h: int, w: int, seed: int, smooth: bool):
    g = torch.Generator().manual_seed(seed)
    # boxes overlapping the image partly or wholly, some spanning its full height or width
    xy = torch.rand(k, 2, generator=g) * torch.tensor([w, h]) * 0.9 - 0.3 * torch.tensor([w, h])
    wh = torch.rand(k, 2, generator=g) * torch.tensor([w, h]) * 1.3 + 0.3 * torch.tensor([w, h])
    boxes = torch.cat([xy, xy + wh], 1)
    boxes[: k // 3, 1], boxes[: k // 3, 3] = -2.0, h + 3.0
    if smooth:
        grid = torch.linspace(-1, 1, 28)
        radius = grid[None, :] ** 2 + grid[:, None] ** 2
        masks = (2 - radius * torch.rand(k, 1, 1, 1, generator=g) * 4).sigmoid()
    else:
        masks = torch.rand(k, 1, 28, 28, generator=g)  # many short runs
    return masks, boxes


@pytest.mark.parametrize("smooth", [True, False])
@pytest.mark.parametrize("k,h,w,seed", [(1, 5, 7, 0), (9, 31, 17, 1), (25, 64, 80, 2), (40, 13, 90, 3)])
def test_encode_roi_masks_equals_encoding_the_pasted_masks(k, h, w, seed, smooth, binarise_path):
    masks, boxes = _roi_case(k, h, w, seed, smooth)
    pasted = tv_paste(masks, boxes, (h, w))
    for threshold in (0.5, 0.8, 0.3):  # 0.3 is not a float32: compared as float32(0.3), as torch does
        assert encode_roi_masks(masks, boxes, (h, w), threshold) == encode_masks(pasted, threshold)


def test_encode_roi_masks_large_image_long_runs(binarise_path):
    """Counts of many 5-bit groups and negative differences in the compressed string."""
    h, w = 700, 1100
    masks, boxes = _roi_case(6, h, w, 8, smooth=True)
    masks[0] = 1.0  # one box-filling mask: runs of hundreds of pixels
    pasted = tv_paste(masks, boxes, (h, w))
    assert encode_roi_masks(masks, boxes, (h, w)) == encode_masks(pasted)


@pytest.mark.parametrize("smooth", [True, False])
@pytest.mark.parametrize("k,h,w,seed", [(9, 31, 17, 1), (40, 13, 90, 3), (25, 64, 80, 2), (30, 1, 40, 5)])
def test_record_mask_areas_and_boxes_are_coco_area_and_to_bbox(k, h, w, seed, smooth, binarise_path):
    """Records from roi masks carry each mask's area and box, equal to COCO's ``area`` / ``toBbox``
    of its RLE: empty masks, masks filling the image, runs crossing columns, single-row images."""
    masks, boxes = _roi_case(k, h, w, seed, smooth=smooth)
    masks[0] = 0.0  # an empty mask: area 0, box [0, 0, 0, 0]
    masks[1:3] = 1.0  # box-filling masks (some boxes span the image's full height) ...
    boxes[2] = torch.tensor([-5.0, -5.0, w + 5.0, h + 5.0])  # ... and one filling the image
    output = {"boxes": boxes, "labels": torch.ones(k, dtype=torch.int64), "scores": torch.rand(k)}
    for threshold in (0.5, 0.9):
        record = make_record(
            {**output, "roi_masks": masks, "image_size": (h, w)}, 3, LABEL_TO_CAT, mask_threshold=threshold
        )
        assert record.mask_areas.dtype == np.float64 and record.mask_boxes.dtype == np.float64
        np.testing.assert_array_equal(record.mask_areas, pmask.area(record.rles))
        np.testing.assert_array_equal(record.mask_boxes, pmask.toBbox(record.rles))
        assert record.mask_areas.min() == 0 and record.mask_areas.max() == h * w
        assert [0.0, 0.0, 0.0, 0.0] in record.mask_boxes.tolist()
        assert [0.0, 0.0, float(w), float(h)] in record.mask_boxes.tolist()
    # From pasted masks, the evaluation computes them from the RLEs.
    pasted = make_record({**output, "masks": tv_paste(masks, boxes, (h, w))}, 3, LABEL_TO_CAT)
    assert pasted.mask_areas is None and pasted.mask_boxes is None


def test_encode_roi_masks_corner_cases(binarise_path):
    h, w = 6, 5
    boxes = torch.tensor([[0.0, 0.0, 5.0, 6.0], [1.0, 1.0, 3.0, 3.0], [-9.0, 0.0, -4.0, 6.0]])
    full = torch.ones(3, 1, 28, 28)
    rles = encode_roi_masks(full, boxes, (h, w))
    # a mask covering the whole image is one foreground run after an empty background run
    assert pmask.decode([{"size": [h, w], "counts": rles[0]["counts"].encode()}]).all()
    assert [rles[0]] == encode_masks(torch.ones(1, 1, h, w))
    assert [rles[2]] == encode_masks(torch.zeros(1, 1, h, w))  # outside the image: empty
    assert rles == encode_masks(tv_paste(full[:2], boxes[:2], (h, w))) + [rles[2]]
    assert encode_roi_masks(torch.zeros(0, 1, 28, 28), torch.zeros(0, 4), (h, w)) == []
    with pytest.raises(ValueError, match="roi_masks"):
        encode_roi_masks(torch.zeros(2, 28, 28), torch.zeros(2, 4), (h, w))
    with pytest.raises(ValueError, match="boxes"):
        encode_roi_masks(torch.zeros(2, 1, 28, 28), torch.zeros(3, 4), (h, w))


def test_make_record_from_roi_masks_needs_the_image_size():
    masks, boxes = _roi_case(12, 30, 40, 4, smooth=True)
    output = {
        "boxes": boxes,
        "labels": torch.ones(12, dtype=torch.int64),
        "scores": torch.rand(12),
        "roi_masks": masks,
    }
    with pytest.raises(ValueError, match="image_size"):
        make_record(output, 3, LABEL_TO_CAT)
    record = make_record({**output, "image_size": (30, 40)}, 3, LABEL_TO_CAT, max_dets=7)
    pasted = make_record({**output, "masks": tv_paste(masks, boxes, (30, 40))}, 3, LABEL_TO_CAT, max_dets=7)
    assert len(record) == 7 and record.rles == pasted.rles


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64, torch.float16, torch.bfloat16])
def test_binarising_compares_in_the_mask_dtype_as_torch(dtype):
    """The NumPy path (CPU masks) binarises as torch does, ``values > threshold`` with the threshold
    rounded to the masks' dtype: 0.3 and 0.7 round up in some dtypes, and a value equal to the
    rounded threshold is background."""
    from msrcnn.ops.paste import MaskCrop

    for threshold in (0.5, 0.3, 0.7):
        at = torch.tensor(threshold, dtype=dtype)
        near = torch.stack(
            [at, at.nextafter(torch.tensor(1.0, dtype=dtype)), at.nextafter(torch.tensor(0.0, dtype=dtype))]
        )
        g = torch.Generator().manual_seed(int(threshold * 10))
        crops = [
            MaskCrop(0, 0, near[torch.randint(0, 3, (h, w), generator=g)])
            for h, w in [(3, 4), (1, 7), (9, 2)]
        ]
        sizes = [w * (h + 1) + 1 for h, w in (c.values.shape for c in crops)]
        padded = RLE._padded_crops_torch(crops, sizes, threshold)
        if dtype != torch.bfloat16:  # NumPy has no bfloat16: such masks take the torch path
            np.testing.assert_array_equal(RLE._padded_crops_numpy(crops, sizes, threshold), padded)
        start = 0
        for crop, size in zip(crops, sizes):  # and torch's own comparison, column-major, padded
            h, w = crop.values.shape
            columns = padded[start : start + w * (h + 1)].reshape(w, h + 1)
            np.testing.assert_array_equal(columns[:, 1:], (crop.values > threshold).t().numpy())
            assert not columns[:, 0].any() and not padded[start + size - 1]
            assert (crop.values == at).any() and not columns[:, 1:][(crop.values == at).t().numpy()].any()
            start += size


@pytest.mark.parametrize("dtype", [torch.float64, torch.float16])
def test_encode_roi_masks_other_dtypes_numpy_equals_torch(dtype, monkeypatch):
    masks, boxes = _roi_case(12, 40, 50, 6, smooth=False)
    masks = masks.to(dtype)
    numpy_rles = encode_roi_masks(masks, boxes, (40, 50), 0.7)
    monkeypatch.setattr(RLE, "_NUMPY_DTYPES", ())
    assert numpy_rles == encode_roi_masks(masks, boxes, (40, 50), 0.7)


def test_make_record_caps_to_top_max_dets_by_class_score():
    output = fake_output(150)
    record = make_record(output, 5, LABEL_TO_CAT)
    top = torch.argsort(output["scores"], descending=True)[:100]
    assert len(record) == 100 and record.image_id == 5
    np.testing.assert_array_equal(record.scores, output["scores"][top].numpy())
    assert np.all(np.diff(record.scores) <= 0)
    np.testing.assert_array_equal(record.boxes, output["boxes"][top].numpy())
    np.testing.assert_array_equal(record.labels, np.array(LABEL_TO_CAT)[output["labels"][top].numpy()])
    np.testing.assert_allclose(record.mask_ious, output["mask_ious"][top].clamp(0, 1).numpy())
    assert record.mask_ious.min() >= 0 and record.mask_ious.max() <= 1
    np.testing.assert_allclose(record.mask_scores, record.scores * record.mask_ious)
    decoded = pmask.decode(record.rles).transpose(2, 0, 1)
    np.testing.assert_array_equal(decoded, (output["masks"][top, 0] > 0.5).numpy())
    assert record.boxes.dtype == np.float32 and record.scores.dtype == np.float32
    assert record.labels.dtype == np.int64
    assert len(make_record(output, 5, LABEL_TO_CAT, max_dets=7)) == 7


def test_make_record_plain_mask_rcnn_and_tensor_mapping():
    output = fake_output(6)
    del output["mask_ious"], output["mask_scores"]
    output = {k: v.half() if v.is_floating_point() else v for k, v in output.items()}
    record = make_record(output, 9, torch.tensor(LABEL_TO_CAT))
    assert record.mask_ious is None
    np.testing.assert_array_equal(record.mask_scores, record.scores)
    assert set(record.labels.tolist()) <= {1, 7, 90}
    del output["masks"]
    assert make_record(output, 9, LABEL_TO_CAT).rles is None


def test_make_record_rejects_labels_outside_the_table():
    output = fake_output(4)
    output["labels"][0] = 4
    with pytest.raises(ValueError, match=r"1\.\.3"):
        make_record(output, 1, LABEL_TO_CAT)
    output["labels"][0] = 0
    with pytest.raises(ValueError, match="background"):
        make_record(output, 1, LABEL_TO_CAT)


def test_make_record_empty_output():
    output = fake_output(0)
    record = make_record(output, 3, LABEL_TO_CAT)
    assert len(record) == 0 and record.rles == [] and record.boxes.shape == (0, 4)


def test_record_length_mismatch_raises():
    with pytest.raises(ValueError, match="labels"):
        DetectionRecord(1, np.zeros((2, 4), np.float32), np.zeros(2, np.float32), np.zeros(3, np.int64))
