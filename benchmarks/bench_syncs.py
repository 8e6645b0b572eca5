"""Host syncs per image: the operations that make the host wait for a GPU (msrcnn.testing.host_syncs), counted
on the CPU on the GPU code paths (msrcnn.testing.gpu_paths.gpu_paths), with torchvision's MaskRCNN twin
(same weights) counted the same way as the baseline."""

from __future__ import annotations

from typing import Any

import torch
from bench_model import NUM_CLASSES, r18_kwargs, synthetic_targets, torchvision_twin
from profiles import HostSyncsSettings

from msrcnn.models import build_model
from msrcnn.testing.gpu_paths import gpu_paths
from msrcnn.testing.host_syncs import count_host_syncs


def _count(fn) -> dict[str, Any]:
    with torch.no_grad(), gpu_paths(), count_host_syncs(sites=False) as syncs:
        fn()
    return {"total": syncs.total, "by_op": dict(syncs.by_op)}


def bench_syncs(cfg: HostSyncsSettings) -> dict[str, Any]:
    height, width = cfg.size
    torch.manual_seed(0)
    kwargs = r18_kwargs((height, width), cfg.detections, None)
    model = build_model(num_classes=NUM_CLASSES, backbone=cfg.backbone, **kwargs).eval()
    soft = build_model(num_classes=NUM_CLASSES, backbone=cfg.backbone, soft_nms=True, **kwargs).eval()
    soft.load_state_dict(model.state_dict())
    twin = torchvision_twin(model, **kwargs).eval()
    image = [torch.rand(3, height, width, generator=torch.Generator().manual_seed(1))]
    out: dict[str, Any] = {"backbone": cfg.backbone, "size": [height, width]}
    with torch.no_grad():
        out["detections"] = int(model(image)[0]["boxes"].shape[0])
    out["inference_image_masks"] = _count(lambda: model(image))
    with model.roi_mask_output():
        out["inference_roi_masks"] = _count(lambda: model(image))
    out["inference_soft_nms"] = _count(lambda: soft(image))
    out["torchvision_inference"] = _count(lambda: twin(image))

    # a training step of batch x gt objects, as the data module delivers them (at the input size)
    t_height, t_width = cfg.train_size
    train = build_model(
        num_classes=NUM_CLASSES, backbone=cfg.backbone, **r18_kwargs((t_height, t_width), 100, None)
    )
    train.train()
    images, targets = synthetic_targets(cfg.train_batch, t_height, t_width, cfg.train_gt)
    twin_train = torchvision_twin(train, **r18_kwargs((t_height, t_width), 100, None)).train()
    for target in targets:
        target["at_input_size"] = True

    def step(model):
        def run():
            with torch.enable_grad():
                sum(model(images, [dict(t) for t in targets]).values()).backward()

        return run

    out["train_step"] = _count(step(train))
    plain = [{k: v for k, v in t.items() if k != "at_input_size"} for t in targets]

    def twin_step():
        with torch.enable_grad():
            sum(twin_train(images, [dict(t) for t in plain]).values()).backward()

    out["torchvision_train_step"] = _count(twin_step)
    out["train_batch"], out["train_gt"], out["train_size"] = (
        cfg.train_batch,
        cfg.train_gt,
        [t_height, t_width],
    )
    return out
