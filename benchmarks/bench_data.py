"""Data loading: training images/s of ``DetectionDataModule`` (synthetic shapes, the demo's data
settings) with 0/1/2 workers, against the appetite of the demo's training step."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import torch
from common import median
from hydra import compose, initialize_config_dir

from msrcnn.app.builders import build_datamodule, build_detector
from msrcnn.config import to_plain, validate

CONF = Path(__file__).resolve().parents[1] / "conf"


def demo_config(data_dir: Path, num_train: int, image_size: int | None):
    overrides = [
        "experiment=demo",
        "logger=none",
        f"paths.data_dir={data_dir}",
        f"paths.output_dir={data_dir / 'run'}",
        f"data.synthetic.num_train={num_train}",
        "data.synthetic.num_val=2",
    ]
    if image_size is not None:
        overrides += [
            f"data.synthetic.image_size={image_size}",
            f"model.min_size=[{image_size}]",
            f"model.max_size={image_size}",
        ]
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        return validate(compose("train", overrides=overrides))


def loader_throughput(datamodule, workers: int, batches: int) -> dict[str, Any]:
    """Images/s of the training loader alone, after its first batch (which includes worker start-up)."""
    datamodule.num_workers = workers
    loader = datamodule.train_dataloader()
    start = time.perf_counter()
    iterator = iter(loader)
    images = len(next(iterator)[0])
    first = time.perf_counter() - start
    start = time.perf_counter()
    count = 0
    for _ in range(batches):
        try:
            count += len(next(iterator)[0])
        except StopIteration:
            iterator = iter(loader)
            count += len(next(iterator)[0])
    seconds = time.perf_counter() - start
    del iterator, loader
    return {
        "workers": workers,
        "first_batch_s": first,
        "batch_images": images,
        "images": count,
        "images_per_s": count / seconds,
    }


def bench_data(
    data_dir: Path,
    num_train: int,
    image_size: int | None,
    workers: list[int],
    batches: int,
    steps: int,
    fed_steps: int,
) -> dict[str, Any]:
    cfg = demo_config(data_dir, num_train, image_size)
    start = time.perf_counter()
    datamodule = build_datamodule(cfg)
    datamodule.prepare_data()
    datamodule.setup("fit")
    generate_s = time.perf_counter() - start
    loaders = [loader_throughput(datamodule, w, batches) for w in workers]

    # the demo's training step on one cached batch: its appetite in images/s
    model = build_detector(to_plain(cfg), datamodule.num_classes).train()
    optimizer = torch.optim.AdamW(model.parameters(), lr=cfg.optim.lr, weight_decay=cfg.optim.weight_decay)
    datamodule.num_workers = 0
    images, targets = next(iter(datamodule.train_dataloader()))

    def step(images, targets):
        loss = sum(model(images, targets).values())
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()

    step(images, targets)  # warm-up
    times = []
    for _ in range(steps):
        start = time.perf_counter()
        step(images, targets)
        times.append(time.perf_counter() - start)
    appetite = len(images) / median(times)

    # the same step fed by the loader with the demo's worker count (loading and training share the CPU)
    demo_workers = int(cfg.data.num_workers)
    datamodule.num_workers = demo_workers
    iterator = iter(datamodule.train_dataloader())
    step(*next(iterator))  # warm-up, includes worker start-up
    count, start = 0, time.perf_counter()
    for _ in range(fed_steps):
        try:
            batch = next(iterator)
        except StopIteration:
            iterator = iter(datamodule.train_dataloader())
            batch = next(iterator)
        step(*batch)
        count += len(batch[0])
    fed = count / (time.perf_counter() - start)
    del iterator
    best_loader = max(loaders, key=lambda r: r["images_per_s"])
    demo_loader = next((r for r in loaders if r["workers"] == demo_workers), best_loader)
    return {
        "image_size": int(cfg.data.synthetic.image_size),
        "batch_size": int(cfg.data.batch_size),
        "train_images": num_train,
        "generate_and_setup_s": generate_s,
        "loaders": loaders,
        "train_step_s": median(times),
        "train_step_images_per_s": appetite,
        "demo_workers": demo_workers,
        "fed_images_per_s": fed,
        "fed_over_appetite": fed / appetite,
        "loader_over_appetite_demo_workers": demo_loader["images_per_s"] / appetite,
    }


def _fed_step_seconds(cfg, steps: int, full_resolution_masks: bool = False) -> dict[str, Any]:
    """Median seconds of the demo's training step fed by its own loader (the demo's worker count),
    after two warm-up steps. ``full_resolution_masks``: the pipeline before issue 16 (masks decoded at
    full size in the workers and resized by the model's transform in the training process)."""
    datamodule = build_datamodule(cfg)
    datamodule.prepare_data()
    datamodule.setup("fit")
    if full_resolution_masks:
        datamodule.set_input_size(None, None)
    model = build_detector(to_plain(cfg), datamodule.num_classes).train()
    optimizer = torch.optim.AdamW(model.parameters(), lr=cfg.optim.lr, weight_decay=cfg.optim.weight_decay)
    iterator = iter(datamodule.train_dataloader())

    def batch():
        nonlocal iterator
        try:
            return next(iterator)
        except StopIteration:
            iterator = iter(datamodule.train_dataloader())
            return next(iterator)

    times, instances = [], 0
    for index in range(steps + 2):
        start = time.perf_counter()
        images, targets = batch()
        loss = sum(model(images, targets).values())
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        if index >= 2:
            times.append(time.perf_counter() - start)
            instances += sum(len(t["labels"]) for t in targets)
    del iterator
    return {
        "step_s": median(times),
        "instances_per_step": instances / steps,
        "batch_size": int(cfg.data.batch_size),
    }


def bench_crowded(data_dir: Path, images: int = 8, steps: int = 10) -> dict[str, Any]:
    """Issue 16: the demo preset (160 px input) on many-instance microscopy-like data (700 x 1100 px,
    80-190 instances, COCO json with polygons and RLE) against the same step on the shapes.

    Target: crowded step <= 1.5 x shapes step. ``before`` is the full-resolution-mask pipeline."""
    from msrcnn.data.crowded import generate_crowded

    root = data_dir / "crowded"
    ann_file, img_dir = generate_crowded(root, num_images=images)
    shapes = demo_config(data_dir, 64, None)
    overrides = [
        "experiment=demo",
        "logger=none",
        "data=coco_format",
        f"data.batch_size={int(shapes.data.batch_size)}",  # the same images per step as the shapes
        f"data.num_workers={int(shapes.data.num_workers)}",
        f"paths.output_dir={data_dir / 'run'}",
    ] + [
        f"data.{split}.{key}={value}"
        for split in ("train", "val")
        for key, value in (("ann_file", ann_file), ("img_dir", img_dir))
    ]
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        crowded = validate(compose("train", overrides=overrides))
    result_shapes = _fed_step_seconds(shapes, steps)
    result_crowded = _fed_step_seconds(crowded, steps)
    result_before = _fed_step_seconds(crowded, steps, full_resolution_masks=True)
    return {
        "shapes": result_shapes,
        "crowded": result_crowded,
        "crowded_full_resolution_masks": result_before,
        "ratio": result_crowded["step_s"] / result_shapes["step_s"],
        "ratio_before": result_before["step_s"] / result_shapes["step_s"],
        "target_ratio": 1.5,
    }


if __name__ == "__main__":
    import argparse
    import json
    import tempfile

    parser = argparse.ArgumentParser(
        description="many-instance data at the demo preset vs the shapes (issue 16)"
    )
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--images", type=int, default=8)
    args = parser.parse_args()
    torch.set_num_threads(2)
    with tempfile.TemporaryDirectory() as tmp:
        print(json.dumps(bench_crowded(Path(tmp), images=args.images, steps=args.steps), indent=2))
