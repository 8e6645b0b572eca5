"""Model benchmarks: inference and the training step against their MaskIoU-free twins (with the
analytic FLOP bound), the MaskIoU training targets, and pasting masks into the image."""

from __future__ import annotations

import contextlib
import copy
import time
from collections import defaultdict
from typing import Any

import torch
import torch.nn.functional as F
from common import compare, measure, median, paired_ratio
from torch.utils.flop_counter import FlopCounterMode
from torchvision.models.detection import MaskRCNN
from torchvision.models.detection.roi_heads import paste_masks_in_image as tv_paste_masks

import msrcnn.models.roi_heads as roi_heads_module
from msrcnn.models import MaskScoringRCNN, build_model
from msrcnn.models.maskiou import crop_masks, mask_iou_targets_matched, summed_area_table
from msrcnn.ops.paste import paste_masks_in_image as fast_paste_masks

NUM_CLASSES = 81  # COCO: 80 classes + background
OUTPUT_KEYS = ("boxes", "labels", "scores", "masks")


# --------------------------------------------------------------------------- synthetic inputs
def random_boxes(
    n: int, height: int, width: int, g: torch.Generator, min_side: float = 16.0, max_frac: float = 0.35
) -> torch.Tensor:
    """``n`` boxes (xyxy) inside a ``height x width`` image, sides 16 px .. 35% of the image."""
    size = torch.tensor([width, height], dtype=torch.float32)
    wh = min_side + torch.rand(n, 2, generator=g) * (size * max_frac - min_side).clamp(min=1.0)
    xy = torch.rand(n, 2, generator=g) * (size - wh)
    return torch.cat([xy, xy + wh], dim=1)


def box_masks(boxes: torch.Tensor, height: int, width: int, g: torch.Generator) -> torch.Tensor:
    """A rectangle or an inscribed ellipse per box, ``uint8 [n, H, W]``."""
    masks = torch.zeros((boxes.shape[0], height, width), dtype=torch.uint8)
    ys = torch.arange(height, dtype=torch.float32)[:, None] + 0.5
    xs = torch.arange(width, dtype=torch.float32)[None, :] + 0.5
    ellipse = torch.rand(boxes.shape[0], generator=g) < 0.5
    for i, (x0, y0, x1, y1) in enumerate(boxes.tolist()):
        if ellipse[i]:
            cx, cy, rx, ry = (x0 + x1) / 2, (y0 + y1) / 2, (x1 - x0) / 2, (y1 - y0) / 2
            masks[i] = (((xs - cx) / rx) ** 2 + ((ys - cy) / ry) ** 2 <= 1.0).to(torch.uint8)
        else:
            masks[i, round(y0) : round(y1), round(x0) : round(x1)] = 1
    return masks


def synthetic_targets(batch: int, height: int, width: int, num_gt: int, seed: int = 0):
    """Random images with ``num_gt`` rectangle/ellipse instances each, in torchvision's target format."""
    g = torch.Generator().manual_seed(seed)
    images, targets = [], []
    for _ in range(batch):
        boxes = random_boxes(num_gt, height, width, g)
        images.append(torch.rand(3, height, width, generator=g))
        targets.append(
            {
                "boxes": boxes,
                "labels": torch.randint(1, NUM_CLASSES, (num_gt,), generator=g),
                "masks": box_masks(boxes, height, width, g),
            }
        )
    return images, targets


# --------------------------------------------------------------------------- models
def r18_kwargs(size: tuple[int, int], detections: int, proposals: int | None) -> dict[str, Any]:
    kwargs: dict[str, Any] = {
        "min_size": min(size),
        "max_size": max(size),
        "box_score_thresh": 0.0,  # with random weights no class score reaches torchvision's 0.05
        "box_detections_per_img": detections,
    }
    if proposals is not None:
        kwargs["rpn_post_nms_top_n_test"] = proposals
        kwargs["rpn_pre_nms_top_n_test"] = proposals
    return kwargs


def torchvision_twin(ms: MaskScoringRCNN, **kwargs) -> MaskRCNN:
    """torchvision's ``MaskRCNN`` from the same backbone and heads, loaded with the MS state dict."""
    heads = ms.roi_heads
    tv = MaskRCNN(
        copy.deepcopy(ms.backbone),
        num_classes=None,
        rpn_anchor_generator=copy.deepcopy(ms.rpn.anchor_generator),
        rpn_head=copy.deepcopy(ms.rpn.head),
        box_roi_pool=copy.deepcopy(heads.box_roi_pool),
        box_head=copy.deepcopy(heads.box_head),
        box_predictor=copy.deepcopy(heads.box_predictor),
        mask_roi_pool=copy.deepcopy(heads.mask_roi_pool),
        mask_head=copy.deepcopy(heads.mask_head),
        mask_predictor=copy.deepcopy(heads.mask_predictor),
        **kwargs,
    )
    missing, unexpected = tv.load_state_dict(ms.state_dict(), strict=False)
    if missing or not all("maskiou" in k for k in unexpected):
        raise RuntimeError(
            f"torchvision twin does not match: missing {missing[:3]}, unexpected {unexpected[:3]}"
        )
    return tv


def count_flops(fn) -> tuple[int, dict[str, int]]:
    """Total FLOPs of ``fn()`` and the FLOPs per module (``torch.utils.flop_counter``; 2 per MAC)."""
    counter = FlopCounterMode(display=False)
    with counter:
        fn()
    per_module = {name: int(sum(ops.values())) for name, ops in counter.get_flop_counts().items()}
    return int(counter.get_total_flops()), per_module


def module_flops(per_module: dict[str, int], suffix: str) -> int:
    return sum(v for k, v in per_module.items() if k.endswith(suffix))


@contextlib.contextmanager
def stage_timer(model: MaskScoringRCNN):
    """Wall time per stage of one forward (hooks on the sub-modules, wrappers on the post-processing)."""
    times: dict[str, float] = defaultdict(float)
    starts: dict[str, float] = {}
    handles = []
    stages = {
        "transform (normalise, resize)": model.transform,
        "backbone + FPN": model.backbone,
        "RPN": model.rpn,
        "box RoIAlign": model.roi_heads.box_roi_pool,
        "box head + predictor": [model.roi_heads.box_head, model.roi_heads.box_predictor],
        "mask RoIAlign": model.roi_heads.mask_roi_pool,
        "mask head + predictor": [model.roi_heads.mask_head, model.roi_heads.mask_predictor],
    }
    if model.roi_heads.maskiou_head is not None:
        stages["MaskIoU head"] = model.roi_heads.maskiou_head
    for name, modules in stages.items():
        for module in modules if isinstance(modules, list) else [modules]:

            def pre(_m, _a, name=name):
                starts[name] = time.perf_counter()

            def post(_m, _a, _o, name=name):
                times[name] += time.perf_counter() - starts[name]

            handles += [module.register_forward_pre_hook(pre), module.register_forward_hook(post)]
    patched = [
        (model.roi_heads, "postprocess_detections", "box decode + NMS (postprocess_detections)"),
        (model.transform, "postprocess", "mask paste (transform.postprocess)"),
    ]
    for obj, attr, name in patched:
        original = getattr(obj, attr)

        def wrapper(*args, _f=original, _n=name, **kwargs):
            start = time.perf_counter()
            out = _f(*args, **kwargs)
            times[_n] += time.perf_counter() - start
            return out

        setattr(obj, attr, wrapper)
    try:
        yield times
    finally:
        for h in handles:
            h.remove()
        for obj, attr, _ in patched:
            delattr(obj, attr)  # back to the class's method


# --------------------------------------------------------------------------- inference
def bench_inference(
    size: tuple[int, int], detections: int, proposals: int | None, repeats: int, warmup: int
) -> dict[str, Any]:
    """MaskScoringRCNN vs torchvision's MaskRCNN with identical weights, one image of ``size`` (H, W)."""
    torch.manual_seed(0)
    kwargs = r18_kwargs(size, detections, proposals)
    ms = build_model(backbone="r18_fpn", num_classes=NUM_CLASSES, **kwargs).eval()
    tv = torchvision_twin(ms, **kwargs).eval()
    fast = build_model(backbone="r18_fpn", num_classes=NUM_CLASSES, fast_mask_paste=True, **kwargs).eval()
    fast.load_state_dict(ms.state_dict())
    image = [torch.rand(3, *size, generator=torch.Generator().manual_seed(1))]

    with torch.no_grad():
        out_ms, out_tv, out_fast = ms(image)[0], tv(image)[0], fast(image)[0]
        flops_ms, per_module = count_flops(lambda: ms(image))
        flops_tv, _ = count_flops(lambda: tv(image))
        timings = compare(
            {"ms": lambda: ms(image), "torchvision": lambda: tv(image), "ms_fast_paste": lambda: fast(image)},
            repeats,
            warmup,
        )
        with stage_timer(ms) as stages:
            ms(image)
    head_flops = flops_ms - flops_tv
    bound = flops_ms / flops_tv
    ratio = paired_ratio(timings["ms"], timings["torchvision"])
    mask_flops = module_flops(per_module, "roi_heads.mask_head") + module_flops(
        per_module, "roi_heads.mask_predictor"
    )
    head_module_flops = module_flops(per_module, "roi_heads.maskiou_head")
    stages = dict(stages)
    return {
        "image_size": list(size),
        "detections": int(out_ms["boxes"].shape[0]),
        "proposals": proposals or 1000,
        "outputs_equal_torchvision": all(torch.equal(out_ms[k], out_tv[k]) for k in OUTPUT_KEYS),
        "fast_paste_outputs_equal": all(torch.equal(out_ms[k], out_fast[k]) for k in out_ms),
        "ms_s": timings["ms"]["median_s"],
        "torchvision_s": timings["torchvision"]["median_s"],
        "ms_fast_paste_s": timings["ms_fast_paste"]["median_s"],
        "time_ratio": ratio,
        "fast_paste_speedup": paired_ratio(timings["ms"], timings["ms_fast_paste"]),
        "gflops_ms": flops_ms / 1e9,
        "gflops_torchvision": flops_tv / 1e9,
        "gflops_maskiou_head": head_flops / 1e9,
        "gflops_maskiou_head_module": head_module_flops / 1e9,
        "maskiou_flop_share": head_flops / flops_ms,
        "flop_bound": bound,
        "ratio_over_bound": ratio / bound,
        "stages_s": stages,
        "maskiou_head_gflops_per_s": head_module_flops / 1e9 / max(stages.get("MaskIoU head", 0.0), 1e-9),
        "mask_head_gflops_per_s": mask_flops / 1e9 / max(stages.get("mask head + predictor", 0.0), 1e-9),
        "timings": timings,
    }


# --------------------------------------------------------------------------- training step
def sgd_step(model: torch.nn.Module, images, targets):
    """A training step of ``model`` (paper recipe: momentum 0.9, weight decay 1e-4; a tiny LR keeps random
    weights finite); round k seeds the RoI sampling with 1000 + k, so two models sample the same RoIs."""
    opt = torch.optim.SGD(model.parameters(), lr=1e-6, momentum=0.9, weight_decay=1e-4)
    calls = [0]

    def step():
        torch.manual_seed(1000 + calls[0])
        calls[0] += 1
        loss = sum(model(images, targets).values())
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    return step


def forward_backward_once(model: torch.nn.Module, images, targets) -> None:
    """One seeded forward and backward (what the FLOP counts measure)."""
    torch.manual_seed(999)
    sum(model(images, targets).values()).backward()
    model.zero_grad(set_to_none=True)


def bench_train_step(
    size: tuple[int, int],
    batch: int,
    num_gt: int,
    repeats: int,
    warmup: int,
    model_kwargs: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Forward + backward + SGD step of MaskScoringRCNN vs the same model without the MaskIoU head
    (torchvision's training defaults: 2000 proposals, 512 sampled RoIs per image, 25% positive)."""
    torch.manual_seed(0)
    kwargs = {"min_size": min(size), "max_size": max(size), **(model_kwargs or {})}
    ms = build_model(backbone="r18_fpn", num_classes=NUM_CLASSES, **kwargs).train()
    plain = build_model(backbone="r18_fpn", num_classes=NUM_CLASSES, head=None, **kwargs).train()
    _, unexpected = plain.load_state_dict(ms.state_dict(), strict=False)
    assert all("maskiou" in k for k in unexpected)
    images, targets = synthetic_targets(batch, *size, num_gt=num_gt, seed=2)
    flops_ms, _ = count_flops(lambda: forward_backward_once(ms, images, targets))
    flops_plain, _ = count_flops(lambda: forward_backward_once(plain, images, targets))

    target_times: list[float] = []
    original = roi_heads_module.mask_iou_targets_matched

    def timed_targets(*args, **kw):
        start = time.perf_counter()
        out = original(*args, **kw)
        target_times.append(time.perf_counter() - start)
        return out

    step_ms, step_plain = sgd_step(ms, images, targets), sgd_step(plain, images, targets)
    roi_heads_module.mask_iou_targets_matched = timed_targets
    try:
        timings = compare({"ms": step_ms, "no_maskiou": step_plain}, repeats, warmup)
    finally:
        roi_heads_module.mask_iou_targets_matched = original
    per_step_targets = [sum(target_times[i : i + batch]) for i in range(0, len(target_times), batch)]
    per_step_targets = per_step_targets[warmup:] or per_step_targets
    bound = flops_ms / flops_plain
    ratio = paired_ratio(timings["ms"], timings["no_maskiou"])
    return {
        "image_size": list(size),
        "batch": batch,
        "gt_per_image": num_gt,
        "ms_s": timings["ms"]["median_s"],
        "no_maskiou_s": timings["no_maskiou"]["median_s"],
        "time_ratio": ratio,
        "gflops_ms": flops_ms / 1e9,
        "gflops_no_maskiou": flops_plain / 1e9,
        "gflops_maskiou": (flops_ms - flops_plain) / 1e9,
        "maskiou_flop_share": (flops_ms - flops_plain) / flops_ms,
        "flop_bound": bound,
        "ratio_over_bound": ratio / bound,
        "maskiou_targets_in_step_s": median(per_step_targets),
        "maskiou_targets_share": median(per_step_targets) / timings["ms"]["median_s"],
        "images_per_s": batch / timings["ms"]["median_s"],
        "timings": timings,
    }


def bench_train_step_samples(
    size: tuple[int, int],
    batch: int,
    num_gt: int,
    repeats: int,
    warmup: int,
    model_kwargs: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """The training step with ``head.samples=detections`` against the paper's ``positives`` (same weights,
    same sampled RoIs): the time ratio and its FLOP bound (the extra RoIs through the mask head, forward
    only, and through the MaskIoU head, forward and backward)."""
    kwargs = {"min_size": min(size), "max_size": max(size), **(model_kwargs or {})}
    models = {}
    for samples in ("positives", "detections"):
        torch.manual_seed(0)
        models[samples] = build_model(
            backbone="r18_fpn", num_classes=NUM_CLASSES, head={"samples": samples}, **kwargs
        ).train()
    images, targets = synthetic_targets(batch, *size, num_gt=num_gt, seed=2)
    flops = {
        k: count_flops(lambda m=m: forward_backward_once(m, images, targets))[0] for k, m in models.items()
    }
    timings = compare({k: sgd_step(m, images, targets) for k, m in models.items()}, repeats, warmup)
    bound = flops["detections"] / flops["positives"]
    ratio = paired_ratio(timings["detections"], timings["positives"])
    return {
        "image_size": list(size),
        "batch": batch,
        "detections_s": timings["detections"]["median_s"],
        "positives_s": timings["positives"]["median_s"],
        "time_ratio": ratio,
        "flop_bound": bound,
        "ratio_over_bound": ratio / bound,
        "timings": timings,
    }


# --------------------------------------------------------------------------- MaskIoU targets
def bench_maskiou_targets(
    num_rois: int, num_gt: int, size: tuple[int, int], repeats: int, warmup: int
) -> dict[str, Any]:
    """``mask_iou_targets_matched`` for ``num_rois`` positive-like RoIs over ``num_gt`` full-image masks."""
    g = torch.Generator().manual_seed(3)
    h, w = size
    gt_boxes = random_boxes(num_gt, h, w, g)
    gt_masks = box_masks(gt_boxes, h, w, g)
    idx = torch.randint(0, num_gt, (num_rois,), generator=g)
    sides = (gt_boxes[idx, 2:] - gt_boxes[idx, :2]).repeat(1, 2)
    proposals = gt_boxes[idx] + torch.randn(num_rois, 4, generator=g) * 0.15 * sides  # IoU ~0.5-0.9
    logits = torch.randn(num_rois, 28, 28, generator=g)
    timings = compare(
        {
            "total": lambda: mask_iou_targets_matched(logits, proposals, gt_masks, idx),
            "summed_area_table": lambda: summed_area_table(gt_masks),
            "crop_masks (RoIAlign of the GT masks)": lambda: crop_masks(gt_masks, proposals.float(), idx, 28),
        },
        repeats,
        warmup,
    )
    return {
        "rois": num_rois,
        "gt_masks": num_gt,
        "mask_size": list(size),
        "seconds": timings["total"]["median_s"],
        "per_roi_us": timings["total"]["median_s"] / num_rois * 1e6,
        "breakdown_s": {k: v["median_s"] for k, v in timings.items() if k != "total"},
        "timings": timings,
    }


# --------------------------------------------------------------------------- mask paste
def grid_sample_paste(
    masks: torch.Tensor, boxes: torch.Tensor, img_shape: tuple[int, int], chunk: int = 8
) -> torch.Tensor:
    """A batched paste in the style of detectron2's ``_do_paste_mask``: every image pixel samples
    its mask through ``grid_sample`` (chunks of ``chunk`` masks over the whole image). A
    reference point for the design of ``msrcnn.ops.paste``; not the same pixels as torchvision."""
    n = masks.shape[0]
    h, w = img_shape
    out = masks.new_empty((n, 1, h, w))
    ys = torch.arange(h, dtype=torch.float32) + 0.5
    xs = torch.arange(w, dtype=torch.float32) + 0.5
    for s in range(0, n, chunk):
        x0, y0, x1, y1 = (c[:, None] for c in boxes[s : s + chunk].float().unbind(1))
        gy = (ys[None] - y0) / (y1 - y0) * 2 - 1
        gx = (xs[None] - x0) / (x1 - x0) * 2 - 1
        k = gy.shape[0]
        grid = torch.stack([gx[:, None, :].expand(k, h, w), gy[:, :, None].expand(k, h, w)], dim=3)
        out[s : s + k] = F.grid_sample(masks[s : s + k], grid, align_corners=False)
    return out


def paste_inputs(num: int, size: tuple[int, int], seed: int = 4):
    g = torch.Generator().manual_seed(seed)
    boxes = random_boxes(num, *size, g, max_frac=0.5)
    return torch.rand(num, 1, 28, 28, generator=g), boxes


def bench_paste(
    num: int, size: tuple[int, int], repeats: int, warmup: int, grid: bool = True
) -> dict[str, Any]:
    """torchvision's ``paste_masks_in_image`` vs ``msrcnn.ops.paste`` (and a grid_sample paste)."""
    masks, boxes = paste_inputs(num, size)
    a = tv_paste_masks(masks, boxes, size)
    b = fast_paste_masks(masks, boxes, size)
    equal = torch.equal(a, b)
    fns = {
        "torchvision": lambda: tv_paste_masks(masks, boxes, size),
        "msrcnn": lambda: fast_paste_masks(masks, boxes, size),
    }
    agreement = None
    if grid:
        c = grid_sample_paste(masks, boxes, size)
        agreement = float(((a > 0.5) == (c > 0.5)).float().mean())
        del c
        fns["grid_sample (detectron2-style)"] = lambda: grid_sample_paste(masks, boxes, size)
    del a, b
    timings = compare(fns, repeats, warmup)
    return {
        "masks": num,
        "image_size": list(size),
        "output_mb": num * size[0] * size[1] * 4 / 2**20,
        "equal_to_torchvision": equal,
        "grid_sample_pixel_agreement": agreement,
        "torchvision_s": timings["torchvision"]["median_s"],
        "msrcnn_s": timings["msrcnn"]["median_s"],
        "speedup": paired_ratio(timings["torchvision"], timings["msrcnn"]),
        "timings": timings,
    }


def bench_zeros(num: int, size: tuple[int, int], repeats: int) -> float:
    """Time to allocate and zero the ``[num, 1, H, W]`` float output alone (the floor of any paste)."""
    return measure(lambda: torch.zeros(num, 1, *size), repeats, warmup=1)["median_s"]
