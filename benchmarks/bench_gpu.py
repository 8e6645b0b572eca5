"""The GPU checks of issue #6: the inference ratio at R50-FPN 800/1333, mixed-precision training
steps, and channels_last.

On a CUDA device (the ``gpu`` section of ``make bench`` when ``torch.cuda.is_available()``):

* inference, ``MaskScoringRCNN`` vs its torchvision ``MaskRCNN`` twin (same weights), R50-FPN at
  800/1333 with 100 detections: the time ratio (target <= 1.05);
* a training step (forward, backward, SGD) in float32, under bf16 autocast and under fp16
  autocast with a ``GradScaler``: the losses are checked finite and the speed-ups recorded;
* channels_last (``model.to(memory_format=torch.channels_last)``): inference and the float32 and
  bf16 training steps against the default layout.

Every timed call ends with ``torch.cuda.synchronize()``. ``--quick`` runs the same code on the CPU
with a small R18-FPN (bf16 only), as a smoke test of the section; its numbers mean nothing.
"""

from __future__ import annotations

import contextlib
import copy
import math
from collections.abc import Callable
from typing import Any

import torch
from bench_model import NUM_CLASSES, r18_kwargs, synthetic_targets, torchvision_twin
from common import compare, measure, paired_ratio
from profiles import GPUSettings

from msrcnn.models import build_model


def _synced(fn: Callable[[], Any], device: torch.device) -> Callable[[], Any]:
    """``fn`` followed by a device synchronisation, so that wall time covers the device's work."""
    if device.type != "cuda":
        return fn

    def run() -> Any:
        out = fn()
        torch.cuda.synchronize(device)
        return out

    return run


def _train_step(model, images, targets, dtype: torch.dtype | None, scaler=None) -> Callable[[], float]:
    """One forward + backward + SGD step, under autocast to ``dtype`` (None: float32)."""
    optimizer = torch.optim.SGD(model.parameters(), lr=1e-4, momentum=0.9)
    device_type = images[0].device.type

    def step() -> float:
        optimizer.zero_grad(set_to_none=True)
        autocast = contextlib.nullcontext() if dtype is None else torch.autocast(device_type, dtype=dtype)
        with autocast:
            losses = model(images, targets)
        loss = sum(losses.values())
        if scaler is not None:
            scaler.scale(loss).backward()
            scaler.step(optimizer)
            scaler.update()
        else:
            loss.backward()
            optimizer.step()
        return float(loss.detach())  # also a sync; the loss is checked finite

    return step


def bench_gpu(device: torch.device, cfg: GPUSettings, repeats: int, warmup: int) -> dict[str, Any]:
    height, width = cfg.size
    torch.manual_seed(0)
    kwargs = r18_kwargs((height, width), cfg.detections, None)
    model = build_model(num_classes=NUM_CLASSES, backbone=cfg.backbone, **kwargs).to(device)
    twin = torchvision_twin(model, **kwargs).to(device)
    images, targets = synthetic_targets(cfg.batch, height, width, cfg.gt)
    images = [im.to(device) for im in images]
    targets = [{k: v.to(device) for k, v in t.items()} for t in targets]
    out: dict[str, Any] = {"device": str(device), "backbone": cfg.backbone, "size": [height, width]}
    if device.type == "cuda":
        out["device_name"] = torch.cuda.get_device_name(device)

    # inference: MS R-CNN vs torchvision, then channels_last
    model.eval()
    twin.eval()
    last = copy.deepcopy(model).to(memory_format=torch.channels_last)
    image = images[:1]
    with torch.no_grad():
        t = compare(
            {
                "msrcnn": _synced(lambda: model(image), device),
                "torchvision": _synced(lambda: twin(image), device),
                "msrcnn channels_last": _synced(lambda: last(image), device),
            },
            repeats,
            warmup,
        )
        detections = int(model(image)[0]["boxes"].shape[0])
    out["inference"] = {
        "detections": detections,
        "ms_s": t["msrcnn"]["median_s"],
        "torchvision_s": t["torchvision"]["median_s"],
        "time_ratio": paired_ratio(t["msrcnn"], t["torchvision"]),
        "channels_last_s": t["msrcnn channels_last"]["median_s"],
        "channels_last_speedup": paired_ratio(t["msrcnn"], t["msrcnn channels_last"]),
        "timings": t,
    }

    # training steps: float32, bf16, fp16 (+ GradScaler); channels_last for float32 and bf16
    model.train()
    last.train()
    steps: dict[str, Callable[[], float]] = {"float32": _train_step(model, images, targets, None)}
    for name in cfg.amp_dtypes:
        dtype = getattr(torch, name)
        scaler = torch.amp.GradScaler(device.type) if dtype == torch.float16 else None
        steps[name] = _train_step(model, images, targets, dtype, scaler)
    steps["float32 channels_last"] = _train_step(last, images, targets, None)
    if "bfloat16" in cfg.amp_dtypes:
        steps["bfloat16 channels_last"] = _train_step(last, images, targets, torch.bfloat16)
    losses: dict[str, list[float]] = {name: [] for name in steps}

    def recorded(name: str) -> Callable[[], float]:
        def run() -> float:
            value = steps[name]()
            losses[name].append(value)
            return value

        return run

    t = compare({name: recorded(name) for name in steps}, repeats, warmup)
    train = {
        name: {
            "step_s": t[name]["median_s"],
            "losses_finite": all(math.isfinite(v) for v in losses[name]),
            "speedup_over_float32": paired_ratio(t["float32"], t[name]),
        }
        for name in steps
    }
    out["train_step"] = {"batch": cfg.batch, "modes": train, "timings": t}

    # what users compare: inference ms/image for each mask output, and training images/s
    model.eval()
    per_image: dict[str, float] = {}
    cuda_syncs: dict[str, int] = {}
    for output in ("image", "roi"):
        model.mask_output = output
        with torch.no_grad():
            per_image[output] = measure(_synced(lambda: model(image), device), repeats, warmup)["median_s"]
            if device.type == "cuda":
                cuda_syncs[output] = _cuda_syncs(lambda: model(image))
    model.mask_output = "image"
    out["inference_per_image"] = per_image
    if cuda_syncs:
        out["cuda_syncs_per_image"] = cuda_syncs
    model.train()
    rows = []
    for batch in cfg.throughput_batches:
        b_images, b_targets = synthetic_targets(batch, height, width, cfg.gt, seed=1)
        b_images = [im.to(device) for im in b_images]
        b_targets = [{k: v.to(device) for k, v in t.items()} for t in b_targets]
        for name in ("float32", "bfloat16"):
            dtype = None if name == "float32" else torch.bfloat16
            if dtype is not None and name not in cfg.amp_dtypes:
                continue
            seconds = measure(_train_step(model, b_images, b_targets, dtype), repeats, warmup)["median_s"]
            rows.append({"batch": batch, "dtype": name, "step_s": seconds, "images_per_s": batch / seconds})
    out["train_throughput"] = rows
    return out


def _cuda_syncs(fn: Callable[[], Any]) -> int:
    """The synchronizing CUDA calls of ``fn()``, as ``torch.cuda.set_sync_debug_mode("warn")`` reports them."""
    import warnings

    previous = torch.cuda.get_sync_debug_mode()
    torch.cuda.synchronize()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        torch.cuda.set_sync_debug_mode("warn")
        try:
            fn()
        finally:
            torch.cuda.set_sync_debug_mode(previous)
    return sum("synchroniz" in str(w.message) for w in caught)
