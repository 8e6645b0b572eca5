"""The GPU code paths (msrcnn.ops.gpu_paths), run on the CPU: their host syncs and their outputs.

On a GPU every operation that makes the host wait leaves the device idle; these tests count them
with msrcnn.testing.host_syncs on the GPU variants (forced with ``gpu_paths()``) and check that each GPU
variant computes what torchvision's code does. The ports of torchvision's own components (poolers,
RPN, matcher, box coder, transform, RoI post-processing, the whole model) are compared with the
installed torchvision in test_torchvision_parity.py.
"""

import contextlib
import copy

import pytest
import torch
from torchvision.models.detection.roi_heads import paste_masks_in_image as tv_paste
from torchvision.ops import boxes as box_ops

import msrcnn.ops.nms as nms_module
import msrcnn.ops.paste as paste_module
from model_testing import SMALL, small_model, synthetic_batch
from msrcnn.models import build_model
from msrcnn.ops import batched_soft_nms
from msrcnn.ops.gpu_paths import use_gpu_paths
from msrcnn.ops.nms import batched_nms
from msrcnn.ops.paste import paste_masks_batched
from msrcnn.testing.gpu_paths import gpu_paths
from msrcnn.testing.host_syncs import count_host_syncs


def clustered_boxes(n: int, groups: int, seed: int = 0, size: float = 400.0):
    g = torch.Generator().manual_seed(seed)
    centres = torch.rand(n // 8 + 1, 2, generator=g) * size
    xy = centres[torch.randint(len(centres), (n,), generator=g)] + torch.randn(n, 2, generator=g) * 6
    wh = 10 + torch.rand(n, 2, generator=g) * 40
    boxes = torch.cat([xy, xy + wh], 1)
    return boxes, torch.rand(n, generator=g), torch.randint(groups, (n,), generator=g)


def test_gpu_paths_switch():
    assert not use_gpu_paths("cpu") and use_gpu_paths("cuda") and use_gpu_paths(torch.device("mps"))
    with gpu_paths():
        assert use_gpu_paths("cpu")
    assert not use_gpu_paths("cpu")


# --------------------------------------------------------------------------- the counter itself
def test_counter_sees_what_makes_a_gpu_wait_and_nothing_else():
    x = torch.arange(10.0)
    with count_host_syncs() as syncs:
        x.sum().item()  # 1
        bool(x.max() > 3)  # 1
        torch.nonzero(x > 2)  # 1
        x[x > 2]  # 1: boolean-mask indexing
        torch.repeat_interleave(x[1:3].long())  # 1: output size unknown
        torch.repeat_interleave(x[1:3].long(), output_size=3)  # 0
        x.tolist()  # 1
        torch.tensor([1.0, 2.0], device=x.device)  # 1: a blocking host-to-device copy
        torch.full((3,), 2.0, device=x.device).sum()  # 0: fill kernels, nothing read
        host = torch.tensor([3.0, 4.0])  # host data (no device): stays on the CPU on a GPU run
        host.max().item()  # 0
        int(torch.empty(1).uniform_(0, 3).item())  # 0: torchvision's random input size
    assert syncs.total == 7, syncs.report()
    assert syncs.by_site and all("test_gpu_paths.py" in site for site in syncs.by_site)


# --------------------------------------------------------------------------- the whole model
def r18(**kwargs):
    torch.manual_seed(0)
    # R18-FPN, 81 classes, 320x480, 1,000 proposals, every candidate box kept (100 detections); narrow
    # layers (the count does not depend on the widths) keep it fast
    return build_model(
        backbone={**SMALL["backbone"], "anchor_sizes": [[32], [64], [128], [256], [512]]},
        head=SMALL["head"],
        box_representation_size=64,
        mask_head_channels=16,
        num_classes=81,
        min_size=320,
        max_size=480,
        box_score_thresh=0.0,
        box_detections_per_img=100,
        **kwargs,
    )


@pytest.fixture(scope="module")
def inference_image():
    return [torch.rand(3, 320, 480, generator=torch.Generator().manual_seed(1))]


@pytest.mark.parametrize(
    ("options", "budget"),
    [({}, 20), ({"mask_output": "roi"}, 20), ({"soft_nms": True}, 30)],
    ids=["image-masks", "roi-masks", "soft-nms"],
)
def test_inference_host_syncs(inference_image, options, budget):
    model = r18(**options).eval()
    with torch.no_grad(), gpu_paths():
        with count_host_syncs() as syncs:
            out = model(inference_image)[0]
    assert len(out["boxes"]) == 100
    assert syncs.total <= budget, syncs.report()


def test_counter_sees_torchvision_paste(inference_image):
    """The same count with torchvision's paste: 8 host reads per mask (the box corners, as ints)."""
    model = r18(fast_mask_paste=False).eval()
    with torch.no_grad(), gpu_paths():
        with count_host_syncs(sites=False) as syncs:
            model(inference_image)
    assert syncs.total >= 800


def test_training_step_host_syncs():
    """One training step of 4 images with 12 objects each, as the data module delivers them (already at
    the input size), forward and backward."""
    model = r18().train()
    images, targets = synthetic_batch(4, size=320, seed=0)
    g = torch.Generator().manual_seed(3)
    for target in targets:
        n = 12
        xy = torch.rand(n, 2, generator=g) * 250
        wh = 12 + torch.rand(n, 2, generator=g) * 60
        target["boxes"] = torch.cat([xy, xy + wh], 1)
        target["labels"] = torch.randint(1, 81, (n,), generator=g)
        masks = torch.zeros(n, 320, 320, dtype=torch.uint8)
        for i, (x0, y0, x1, y1) in enumerate(target["boxes"].round().long().tolist()):
            masks[i, y0:y1, x0:x1] = 1
        target["masks"] = masks
        target["at_input_size"] = True
    with gpu_paths():
        with count_host_syncs() as syncs:
            losses = model(images, targets)
            sum(losses.values()).backward()
    assert "loss_maskiou" in losses
    assert syncs.total <= 40, syncs.report()


def test_gpu_paths_give_the_same_training_losses():
    images, targets = synthetic_batch(3)
    losses = {}
    for name, context in (("cpu", contextlib.nullcontext), ("gpu", gpu_paths)):
        model = small_model().train()
        torch.manual_seed(5)  # the same RoI sampling
        with context():
            losses[name] = {k: float(v.detach()) for k, v in model(images, copy.deepcopy(targets)).items()}
    assert losses["cpu"].keys() == losses["gpu"].keys()
    for key, value in losses["cpu"].items():
        assert losses["gpu"][key] == pytest.approx(value, rel=1e-5, abs=1e-7), key


# --------------------------------------------------------------------------- the operations
@pytest.mark.parametrize("per_call", [None, 700], ids=["one-call", "chunked"])
def test_batched_nms_gpu_path_equals_torchvision(monkeypatch, per_call):
    boxes, scores, groups = clustered_boxes(3000, 40)
    expected = box_ops.batched_nms(boxes, scores, groups, 0.5)
    if per_call is not None:
        monkeypatch.setattr(nms_module, "BOXES_PER_CALL", per_call)
    with gpu_paths(), count_host_syncs() as syncs:
        got = batched_nms(boxes, scores, groups, 0.5)
    assert torch.equal(got, expected)
    calls = syncs.by_op["torchvision.nms.default"]
    assert calls == (1 if per_call is None else 5), syncs.report()  # 3000 boxes in chunks of <= 700
    assert batched_nms(boxes[:0], scores[:0], groups[:0], 0.5).shape == (0,)


def test_batched_paste_equals_torchvision(monkeypatch):
    g = torch.Generator().manual_seed(0)
    height, width, n = 90, 130, 40
    xy = torch.rand(n, 2, generator=g) * torch.tensor([width - 10.0, height - 10.0]) - 5
    boxes = torch.cat([xy, xy + 0.3 + torch.rand(n, 2, generator=g) * 80], 1)  # partly outside, tiny
    masks = torch.rand(n, 1, 28, 28, generator=g)
    expected = tv_paste(masks, boxes, (height, width))
    monkeypatch.setattr(paste_module, "_PIXELS_PER_CHUNK", 7 * height * width)  # 6 chunks
    with count_host_syncs() as syncs:
        got = paste_masks_batched(masks, boxes, (height, width))
    assert syncs.total == 0
    assert got.shape == expected.shape and (got - expected).abs().max() <= 1e-6
    assert ((got > 0.5) != (expected > 0.5)).sum() == 0
    # boxes that miss the image (torchvision fails on them) give empty masks
    far = torch.tensor([[-40.0, -40, -10, -10], [width + 5.0, 3, width + 30, 20]])
    assert not paste_masks_batched(masks[:2], far, (height, width)).any()
    assert paste_masks_batched(masks[:0], boxes[:0], (height, width)).shape == (0, 1, height, width)


@pytest.mark.parametrize("method", ["linear", "gaussian"])
def test_soft_nms_gpu_path_checks_rarely_and_gives_the_same_result(method):
    boxes, scores, groups = clustered_boxes(1500, 4)
    with count_host_syncs() as cpu:
        expected = batched_soft_nms(boxes, scores, groups, method=method)
    with gpu_paths(), count_host_syncs() as gpu:
        got = batched_soft_nms(boxes, scores, groups, method=method)
    assert torch.equal(got[0], expected[0]) and torch.equal(got[1], expected[1])
    rounds = cpu.by_op["aten._local_scalar_dense.default"]  # one check per round on the CPU
    assert rounds >= 7
    # on the GPU path after rounds 4, 8, 16, ...: at most log2(rounds) + 2 checks
    assert gpu.by_op["aten._local_scalar_dense.default"] <= rounds.bit_length() + 1
    assert gpu.total <= 10, gpu.report()
