"""Data loading: training images/s of ``DetectionDataModule`` (synthetic shapes, the demo's data
settings) with 0/1/2 workers, against the appetite of the demo's training step."""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any

import torch
from common import median
from hydra import compose, initialize_config_dir

from msrcnn.app.builders import build_datamodule, build_detector
from msrcnn.app.schemas import validate
from msrcnn.config import to_plain

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


def _worker_cpu_s(loader_iterator) -> float:
    """CPU seconds (user + system) used so far by a loader iterator's worker processes (Linux /proc)."""
    ticks = os.sysconf("SC_CLK_TCK")
    total = 0.0
    for worker in getattr(loader_iterator, "_workers", []):
        try:
            fields = Path(f"/proc/{worker.pid}/stat").read_text().rsplit(")", 1)[1].split()
        except (OSError, IndexError):
            continue
        total += (int(fields[11]) + int(fields[12])) / ticks
    return total


class _FedPipeline:
    """The demo's training step fed by its own loader (the demo's worker count). The DataLoader is
    built once and iterated again at each epoch, as Lightning's fit loop does (persistent workers
    survive the epoch boundary); each epoch's first batch is therefore not prefetched.

    ``full_resolution_masks``: the pipeline before issue 16 (masks decoded at full size in the
    workers and resized by the model's transform in the training process); ``cache=False``: every
    epoch decodes again (no cache of the resized samples, see ``CocoInstanceDataset``)."""

    def __init__(self, cfg, full_resolution_masks: bool = False, cache: bool = True) -> None:
        datamodule = build_datamodule(cfg)
        datamodule.prepare_data()
        datamodule.setup("fit")
        if full_resolution_masks:
            datamodule.set_input_size(None, None)
        if not cache:
            datamodule.train_dataset.cache_bytes = 0
        self.model = build_detector(to_plain(cfg), datamodule.num_classes).train()
        self.optimizer = torch.optim.AdamW(
            self.model.parameters(), lr=cfg.optim.lr, weight_decay=cfg.optim.weight_decay
        )
        self.loader = datamodule.train_dataloader()
        self.iterator = iter(self.loader)
        self.batch_size = int(cfg.data.batch_size)
        self.times: list[float] = []
        self.instances = 0
        self.worker_cpu = 0.0
        self.epochs = 0

    def _batch(self):
        try:
            return next(self.iterator)
        except StopIteration:
            self.epochs += 1
            self.iterator = iter(self.loader)
            return next(self.iterator)

    def run(self, steps: int, record: bool = True) -> None:
        for _ in range(steps):
            cpu = _worker_cpu_s(self.iterator)
            start = time.perf_counter()
            images, targets = self._batch()
            loss = sum(self.model(images, targets).values())
            self.optimizer.zero_grad(set_to_none=True)
            loss.backward()
            self.optimizer.step()
            if record:
                self.times.append(time.perf_counter() - start)
                self.instances += sum(len(t["labels"]) for t in targets)
                self.worker_cpu += _worker_cpu_s(self.iterator) - cpu

    def result(self) -> dict[str, Any]:
        steps = len(self.times)
        return {
            "step_s": median(self.times),
            "mean_step_s": sum(self.times) / steps,
            "worker_cpu_s_per_step": self.worker_cpu / steps,
            "instances_per_step": self.instances / steps,
            "batch_size": self.batch_size,
            "steps": steps,
        }

    def close(self) -> None:
        del self.iterator, self.loader


def bench_crowded(
    data_dir: Path, images: int = 32, steps: int = 10, rounds: int = 3, before: bool = True
) -> dict[str, Any]:
    """Issue 16: the demo preset (160 px input) on many-instance microscopy-like data (700 x 1100 px,
    80-190 instances, COCO json with polygons and RLE) against the same step on the shapes.

    Target: crowded step <= 1.5 x shapes step. ``crowded_uncached`` is the same without the cache of
    resized samples; ``before`` adds the full-resolution-mask pipeline.
    The pipelines run in ``rounds`` interleaved blocks of ``steps`` steps (A B C A B C ...) after
    two warm-up steps each, so that the machine's load drifts hit them alike; each keeps its
    loader (and worker) throughout. ``step_s`` is the median step, ``mean_step_s`` the mean (it
    includes the epoch boundaries, where the first batch is loaded while the step waits)."""
    from msrcnn.testing.crowded import generate_crowded

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
    pipelines = {
        "shapes": _FedPipeline(shapes),
        "crowded": _FedPipeline(crowded),
        "crowded_uncached": _FedPipeline(crowded, cache=False),
    }
    if before:
        pipelines["crowded_full_resolution_masks"] = _FedPipeline(crowded, full_resolution_masks=True)
    for pipeline in pipelines.values():
        pipeline.run(2, record=False)
    for _ in range(rounds):
        for pipeline in pipelines.values():
            pipeline.run(steps)
    results = {name: pipeline.result() for name, pipeline in pipelines.items()}
    for pipeline in pipelines.values():
        pipeline.close()
    out: dict[str, Any] = {
        **results,
        "train_images": images,
        "ratio": results["crowded"]["step_s"] / results["shapes"]["step_s"],
        "ratio_mean": results["crowded"]["mean_step_s"] / results["shapes"]["mean_step_s"],
        "ratio_uncached": results["crowded_uncached"]["step_s"] / results["shapes"]["step_s"],
        "target_ratio": 1.5,
    }
    if before:
        out["ratio_before"] = results["crowded_full_resolution_masks"]["step_s"] / results["shapes"]["step_s"]
    return out


def bench_crowded_loader(data_dir: Path, images: int, size: tuple[int, int], batches: int) -> dict[str, Any]:
    """Training samples/s that ONE DataLoader worker delivers on crowded frames (700 x 1100, 80-190
    instances) resized to ``size`` = (short side, long-side cap), uncached (a set too large for the
    cache): masks as box-local crops (the training loader's format) and as full-image planes (before)."""
    from msrcnn.data import DetectionDataModule, SplitSpec
    from msrcnn.testing.crowded import generate_crowded

    ann_file, img_dir = generate_crowded(data_dir / "crowded_loader", num_images=images)
    out: dict[str, Any] = {"images": images, "input_size": list(size)}
    for name, crops in (("crops", True), ("dense", False)):
        module = DetectionDataModule(
            train=SplitSpec(str(ann_file), str(img_dir)),
            val=SplitSpec(str(ann_file), str(img_dir)),
            batch_size=4,
            num_workers=1,
            train_min_size=[size[0]],
            max_size=size[1],
            hflip_prob=0.5,
        )
        module.setup("fit")
        module.train_dataset.cache_bytes = 0
        module.train_dataset.resize.mask_crops = crops
        loader = module.train_dataloader()
        iterator = iter(loader)
        next(iterator)  # worker start-up
        count, start = 0, time.perf_counter()
        for _ in range(batches):
            try:
                batch = next(iterator)
            except StopIteration:
                iterator = iter(loader)
                batch = next(iterator)
            count += len(batch[0])
        seconds = time.perf_counter() - start
        instances = sum(len(t["labels"]) for t in batch[1])
        out[name] = {"samples_per_s": count / seconds, "instances_per_batch": instances}
        del iterator, loader
    out["speedup"] = out["crops"]["samples_per_s"] / out["dense"]["samples_per_s"]
    return out


if __name__ == "__main__":
    import argparse
    import json
    import tempfile

    parser = argparse.ArgumentParser(
        description="many-instance data at the demo preset vs the shapes (issue 16)"
    )
    parser.add_argument("--steps", type=int, default=10, help="steps per pipeline and round")
    parser.add_argument("--rounds", type=int, default=3, help="interleaved rounds")
    parser.add_argument("--images", type=int, default=32, help="many-instance training images")
    parser.add_argument("--no-before", action="store_true", help="skip the full-resolution-mask pipeline")
    args = parser.parse_args()
    torch.set_num_threads(2)
    with tempfile.TemporaryDirectory() as tmp:
        result = bench_crowded(
            Path(tmp), images=args.images, steps=args.steps, rounds=args.rounds, before=not args.no_before
        )
        print(json.dumps(result, indent=2))
