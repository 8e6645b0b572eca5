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
