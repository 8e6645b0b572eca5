"""msrcnn.ops.paste and the model's mask outputs: torchvision's pasted masks, bit for bit, or box-local masks."""

import pytest
import torch
from torchvision.models.detection.roi_heads import paste_masks_in_image as tv_paste

from model_testing import SMALL as MODEL_SMALL
from msrcnn.evaluation import encode_masks, make_record
from msrcnn.models import build_model
from msrcnn.models.torchvision_ports.transform import MaskScoringTransform
from msrcnn.ops.paste import paste_masks_in_image, resize_masks_into_boxes


def random_case(n, h, w, seed):
    g = torch.Generator().manual_seed(seed)
    xy = torch.rand(n, 2, generator=g) * torch.tensor([w, h]) * 1.2 - 0.1 * torch.tensor([w, h])
    wh = torch.rand(n, 2, generator=g) * torch.tensor([w, h]) * 0.6
    boxes = torch.cat([xy, xy + wh], 1)
    return torch.rand(n, 1, 28, 28, generator=g), boxes


@pytest.mark.parametrize("n,h,w,seed", [(1, 32, 48, 0), (17, 97, 131, 1), (50, 200, 150, 2)])
def test_paste_is_bit_identical_to_torchvision(n, h, w, seed):
    masks, boxes = random_case(n, h, w, seed)
    boxes[:, 0::2] = boxes[:, 0::2].clamp(0, w)  # as the model clips them
    boxes[:, 1::2] = boxes[:, 1::2].clamp(0, h)
    ours, theirs = paste_masks_in_image(masks, boxes, (h, w)), tv_paste(masks, boxes, (h, w))
    assert ours.shape == theirs.shape == (n, 1, h, w)
    assert torch.equal(ours, theirs)
    # what the issue asks at least (binarised agreement > 99.5%) follows from the equality
    assert ((ours > 0.5) == (theirs > 0.5)).float().mean() > 0.995


def test_paste_edge_cases_match_torchvision():
    h, w = 40, 60
    boxes = torch.tensor(
        [
            [-15.0, -8.0, 20.0, 30.0],  # over the top-left corner
            [50.0, 30.0, 75.0, 52.0],  # over the bottom-right corner
            [10.0, 10.0, 10.0, 10.0],  # zero size
            [3.2, 4.7, 3.9, 5.1],  # under one pixel
            [0.0, 0.0, 60.0, 40.0],  # the whole image
            [-30.0, 5.0, 90.0, 20.0],  # wider than the image
        ]
    )
    masks = torch.rand(boxes.shape[0], 1, 28, 28, generator=torch.Generator().manual_seed(3))
    assert torch.equal(paste_masks_in_image(masks, boxes, (h, w)), tv_paste(masks, boxes, (h, w)))
    for padding in (0, 2):
        assert torch.equal(
            paste_masks_in_image(masks, boxes, (h, w), padding=padding),
            tv_paste(masks, boxes, (h, w), padding=padding),
        )


def test_paste_without_detections():
    out = paste_masks_in_image(torch.zeros(0, 1, 28, 28), torch.zeros(0, 4), (30, 40))
    assert out.shape == (0, 1, 30, 40) and out.dtype == torch.float32


SMALL = {**MODEL_SMALL, "box_score_thresh": 0.0}  # every detection kept: 100 masks to paste


def test_model_option_gives_the_same_outputs():
    torch.manual_seed(0)
    default = build_model(num_classes=4, **SMALL).eval()  # the fast paste is the default
    torchvision_paste = build_model(num_classes=4, fast_mask_paste=False, **SMALL).eval()
    assert default.transform.fast_paste and not torchvision_paste.transform.fast_paste
    assert default.state_dict().keys() == torchvision_paste.state_dict().keys()  # interchangeable
    torchvision_paste.load_state_dict(default.state_dict())
    fast, default = default, torchvision_paste
    g = torch.Generator().manual_seed(0)
    images = [torch.rand(3, 96, 120, generator=g), torch.rand(3, 110, 90, generator=g)]  # resized and back
    with torch.no_grad():
        a, b = default(images), fast(images)
    for x, y in zip(a, b):
        assert len(x["boxes"]) > 0 and x["masks"].shape[-2:] == y["masks"].shape[-2:]
        assert x.keys() == y.keys()
        for key in x:
            assert torch.equal(x[key], y[key]), key


def test_transform_keeps_torchvision_preprocessing():
    torch.manual_seed(0)
    model = build_model(num_classes=4, **SMALL)
    fast = MaskScoringTransform.from_transform(model.transform, fast_paste=True)
    images = [torch.rand(3, 70, 100)]
    a, _ = model.transform(images)
    b, _ = fast(images)
    assert torch.equal(a.tensors, b.tensors) and a.image_sizes == b.image_sizes


def test_boxes_outside_the_image_give_empty_crops():
    # torchvision's slicing fails on these; the crops are empty and the pasted masks all background
    boxes = torch.tensor([[-30.0, 2.0, -10.0, 9.0], [70.0, 2.0, 90.0, 9.0], [5.0, 50.0, 9.0, 70.0]])
    masks = torch.ones(3, 1, 28, 28)
    crops = resize_masks_into_boxes(masks, boxes, (40, 60))
    assert [c.values.numel() for c in crops] == [0, 0, 0]
    assert not paste_masks_in_image(masks, boxes, (40, 60)).any()


def test_roi_mask_output_gives_the_same_records_without_pasting():
    torch.manual_seed(0)
    model = build_model(num_classes=4, **SMALL).eval()
    assert model.mask_output == "image"
    g = torch.Generator().manual_seed(1)
    images = [torch.rand(3, 96, 120, generator=g), torch.rand(3, 110, 90, generator=g)]
    with torch.no_grad():
        pasted = model(images)
        with model.roi_mask_output():
            assert model.mask_output == "roi"
            roi = model(images)
        assert model.mask_output == "image"  # restored
    for image, a, b in zip(images, pasted, roi):
        assert "masks" not in b and b["roi_masks"].shape == (len(a["boxes"]), 1, 28, 28)
        assert b["image_size"] == tuple(image.shape[-2:])
        assert len(a["boxes"]) > 0
        for key in ("boxes", "labels", "scores", "mask_ious", "mask_scores"):
            assert torch.equal(a[key], b[key]), key
        # the evaluator's RLEs are those of torchvision's pasted masks, bit for bit
        table = [0, 1, 2, 3, 4]
        ra, rb = make_record(a, 1, table), make_record(b, 1, table)
        assert ra.rles == rb.rles and ra.rles == encode_masks(
            a["masks"][torch.argsort(a["scores"], descending=True, stable=True)]
        )
    with pytest.raises(ValueError, match="mask_output"):
        model.mask_output = "full"
