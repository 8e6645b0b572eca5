#!/usr/bin/env python
"""``make bench``: the speed of every hot path of msrcnn, each against its baseline in one run.

    python benchmarks/run.py [--quick] [--threads N] [--only SECTION,...] [--repeats N] [--output PATH]

Sections: inference, train_step, maskiou_targets, soft_nms, paste, evaluation, data_loading, loader,
host_syncs, gpu
(the GPU checks: run on a CUDA device, reported as skipped without one; ``--quick`` runs them on
the CPU as a smoke test).
Each section is a ``run_*`` function that returns its :class:`common.Section` (figures, table,
targets); the sizes and repeats of both profiles are in ``profiles.py``.
Prints one table per section and the targets of issue #6 (met or not), and writes
``benchmarks/results.json`` (atomically) with the machine and every figure. Timings are wall-clock
medians of interleaved repeats after warm-up (``time.perf_counter``). ``--quick`` is a smoke run
on tiny sizes with one repeat; its numbers mean nothing.

Set ``GOMP_SPINCOUNT=200000`` (the Makefile does): torch's OpenMP threads otherwise spin-wait, and
on a small shared machine every parallel region then waits for a descheduled spinning thread.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from common import Section, Table, Target, fmt_ratio, machine_info, ms  # benchmarks/, the script's folder
from profiles import (
    PROFILES,
    DataLoadingSettings,
    EvaluationSettings,
    GPUSettings,
    HostSyncsSettings,
    InferenceSettings,
    LoaderSettings,
    MaskIoUTargetsSettings,
    PasteSettings,
    SoftNMSSettings,
    TrainStepSettings,
)

from msrcnn.evaluation import write_json_atomic

HERE = Path(__file__).resolve().parent

SECTIONS = (
    "inference",
    "train_step",
    "maskiou_targets",
    "soft_nms",
    "paste",
    "evaluation",
    "data_loading",
    "loader",
    "host_syncs",
    "gpu",
)

# issue #6 targets
INFERENCE_SLACK = 1.05  # time ratio within 5% of the FLOP bound
SOFT_NMS_SPEEDUP = 10.0
SOFT_NMS_SHARE = 0.10
EVAL_SPEEDUP = 4.0


def size_key(size) -> str:
    return f"{size[0]}x{size[1]}"


# --------------------------------------------------------------------------- sections
def run_inference(cfg: InferenceSettings, repeats: int, warmup: int) -> Section:
    from bench_model import bench_inference

    out = {}
    targets = []
    table = Table("inference: MaskScoringRCNN vs torchvision MaskRCNN, same weights, R18-FPN, 81 classes")
    for size in cfg.sizes:
        r = bench_inference(tuple(size), cfg.detections, cfg.proposals, repeats, warmup)
        out[size_key(size)] = r
        k = size_key(size)
        table.add(
            f"{k}: MS R-CNN",
            ms(r["ms_s"]),
            f"{r['detections']} detections, outputs equal torchvision: {r['outputs_equal_torchvision']}",
        )
        table.add(f"{k}: torchvision MaskRCNN", ms(r["torchvision_s"]))
        table.add(
            f"{k}: time ratio",
            fmt_ratio(r["time_ratio"]),
            f"FLOP bound {r['flop_bound']:.3f} = 1 + {r['gflops_maskiou_head']:.1f} / "
            f"{r['gflops_torchvision']:.1f} GFLOP (MaskIoU head {100 * r['maskiou_flop_share']:.1f}% of FLOPs; "
            f"the head module alone: {r['gflops_maskiou_head_module']:.1f} GFLOP)",
        )
        table.add(
            f"{k}: GFLOP/s MaskIoU head vs mask head",
            f"{r['maskiou_head_gflops_per_s']:.0f}",
            f"vs {r['mask_head_gflops_per_s']:.0f}",
        )
        table.add(
            f"{k}: MS R-CNN, fast_mask_paste=True",
            ms(r["ms_fast_paste_s"]),
            f"{fmt_ratio(r['fast_paste_speedup'])} faster, outputs identical: {r['fast_paste_outputs_equal']}",
        )
        total = sum(r["stages_s"].values())
        for stage, seconds in sorted(r["stages_s"].items(), key=lambda kv: -kv[1]):
            table.add(f"{k}:   stage {stage}", ms(seconds), f"{100 * seconds / total:.1f}%")
        targets.append(
            Target(
                f"inference {k}: time ratio <= 1.05 x FLOP bound",
                r["time_ratio"],
                INFERENCE_SLACK * r["flop_bound"],
                "<=",
                "x",
            )
        )
    return Section(out, table, targets)


def run_train_step(cfg: TrainStepSettings, repeats: int, warmup: int) -> Section:
    from bench_model import bench_train_step, bench_train_step_samples

    out = {}
    targets = []
    table = Table(f"training step (forward + backward + SGD), batch {cfg.batch}: MS R-CNN vs no MaskIoU head")
    for size in cfg.sizes:
        r = bench_train_step(tuple(size), cfg.batch, cfg.gt, repeats, warmup, cfg.model_kwargs)
        k = size_key(size)
        out[k] = r
        table.add(f"{k}: MS R-CNN", ms(r["ms_s"]), f"{r['images_per_s']:.2f} images/s")
        table.add(f"{k}: without MaskIoU head", ms(r["no_maskiou_s"]))
        table.add(
            f"{k}: time ratio",
            fmt_ratio(r["time_ratio"]),
            f"FLOP bound {r['flop_bound']:.3f} (MaskIoU {100 * r['maskiou_flop_share']:.1f}% of "
            f"{r['gflops_ms']:.0f} GFLOP)",
        )
        table.add(
            f"{k}: MaskIoU targets in the step",
            ms(r["maskiou_targets_in_step_s"]),
            f"{100 * r['maskiou_targets_share']:.2f}% of the step",
        )
        targets.append(
            Target(
                f"train step {k}: time ratio <= 1.05 x FLOP bound",
                r["time_ratio"],
                INFERENCE_SLACK * r["flop_bound"],
                "<=",
                "x",
            )
        )
        # head.samples=detections (beyond the paper) against the paper's positives, same weights and RoIs
        rs = bench_train_step_samples(tuple(size), cfg.batch, cfg.gt, repeats, warmup, cfg.model_kwargs)
        r["samples_detections"] = rs
        table.add(
            f"{k}: head.samples=detections / positives",
            fmt_ratio(rs["time_ratio"]),
            f"FLOP bound {rs['flop_bound']:.3f} ({ms(rs['detections_s'])} vs {ms(rs['positives_s'])})",
        )
        targets.append(
            Target(
                f"train step {k}: samples=detections time ratio <= 1.05 x FLOP bound",
                rs["time_ratio"],
                INFERENCE_SLACK * rs["flop_bound"],
                "<=",
                "x",
            )
        )
    return Section(out, table, targets)


def run_maskiou_targets(cfg: MaskIoUTargetsSettings, warmup: int, train_step: dict | None) -> Section:
    """``train_step``: the figures of the train_step section, if it ran (the targets' share of its step)."""
    from bench_model import bench_maskiou_targets

    r = bench_maskiou_targets(cfg.rois, cfg.gt, tuple(cfg.size), cfg.repeats, warmup)
    if train_step:
        largest = list(train_step.values())[-1]
        r["share_of_train_step_in_step"] = largest["maskiou_targets_share"]
    table = Table(f"MaskIoU targets: {cfg.rois} RoIs, {cfg.gt} GT masks of {size_key(cfg.size)}")
    table.add("mask_iou_targets_matched", ms(r["seconds"]), f"{r['per_roi_us']:.0f} us per RoI")
    for name, seconds in r["breakdown_s"].items():
        table.add(f"  of which {name}", ms(seconds), f"{100 * seconds / r['seconds']:.0f}%")
    if "share_of_train_step_in_step" in r:
        table.add(
            "share of a training step (measured inside the step)",
            f"{100 * r['share_of_train_step_in_step']:.2f}%",
            "see train_step",
        )
    return Section(r, table)


def run_soft_nms(cfg: SoftNMSSettings, warmup: int, inference: dict | None) -> Section:
    """``inference``: the figures of the inference section, if it ran (Soft-NMS's share of an inference)."""
    from bench_softnms import bench_soft_nms

    out = {}
    targets = []
    table = Table("Soft-NMS (linear, Nt 0.5, Detectron's test values) over 80 classes")
    infer_s = list(inference.values())[-1]["ms_s"] if inference else None
    for n in cfg.boxes:
        r = bench_soft_nms(n, cfg.repeats, max(warmup, 1))
        if infer_s:
            r["share_of_inference"] = r["soft_nms_s"] / infer_s
        out[str(n)] = r
        table.add(
            f"{n} boxes: batched_soft_nms",
            ms(r["soft_nms_s"]),
            f"max {r['max_boxes_per_class']} boxes/class, {r['kept']} kept, "
            f"same as the loops: {r['same_as_loops']} (max score difference {r['max_score_diff_vs_loop']})",
        )
        table.add(
            f"{n} boxes: plain per-box Python loop",
            ms(r["plain_loop_s"]),
            f"batched is {fmt_ratio(r['speedup_vs_plain_loop'])} faster",
        )
        table.add(
            f"{n} boxes: per-box loop, numpy inside",
            ms(r["numpy_loop_s"]),
            f"batched is {fmt_ratio(r['speedup_vs_numpy_loop'])} faster",
        )
        table.add(
            f"{n} boxes: torchvision batched_nms (hard NMS)",
            ms(r["hard_nms_s"]),
            f"Soft-NMS costs {fmt_ratio(r['vs_hard_nms'])} hard NMS",
        )
        if infer_s:
            table.add(
                f"{n} boxes: share of an MS R-CNN inference",
                f"{100 * r['share_of_inference']:.2f}%",
                f"of {ms(infer_s)} ({list(inference)[-1]})",
            )
        targets.append(
            Target(
                f"Soft-NMS {n} boxes: speed-up over the plain per-box loop",
                r["speedup_vs_plain_loop"],
                SOFT_NMS_SPEEDUP,
                ">=",
                "x",
                note=f"{r['speedup_vs_numpy_loop']:.1f}x over the numpy per-box loop",
            )
        )
        if infer_s:
            targets.append(
                Target(
                    f"Soft-NMS {n} boxes: share of an inference",
                    r["share_of_inference"],
                    SOFT_NMS_SHARE,
                    "<=",
                    "fraction",
                )
            )
    return Section(out, table, targets)


def _paste_under_thp(args: argparse.Namespace) -> dict | None:
    """The paste benchmark again in a child process with PyTorch's huge-page allocation
    (``THP_MEM_ALLOC_ENABLE=1``), which removes most of the page faults of the large outputs."""
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "thp.json"
        cmd = [sys.executable, str(HERE / "run.py"), "--only", "paste", "--output", str(out)]
        if args.quick:
            cmd.append("--quick")
        if args.threads:
            cmd += ["--threads", str(args.threads)]
        env = {**os.environ, "THP_MEM_ALLOC_ENABLE": "1"}
        proc = subprocess.run(cmd, env=env, capture_output=True, text=True)
        if proc.returncode != 0 or not out.is_file():
            print(f"(paste under THP_MEM_ALLOC_ENABLE=1 failed: {proc.stderr[-500:]})", file=sys.stderr)
            return None
        return json.loads(out.read_text())["paste"]


def run_paste(cfg: PasteSettings, warmup: int, args: argparse.Namespace) -> Section:
    from bench_model import bench_paste, bench_zeros

    size = tuple(cfg.size)
    r = bench_paste(cfg.masks, size, cfg.repeats, max(warmup, 1))
    r["zeros_only_s"] = bench_zeros(cfg.masks, size, cfg.repeats)
    if os.environ.get("THP_MEM_ALLOC_ENABLE") != "1" and not args.no_subprocess:
        r["with_THP_MEM_ALLOC_ENABLE"] = _paste_under_thp(args)
    table = Table(f"mask paste: {cfg.masks} masks into {size_key(size)} ({r['output_mb']:.0f} MiB of output)")
    table.add("torchvision paste_masks_in_image", ms(r["torchvision_s"]))
    table.add(
        "msrcnn.ops.paste (fast_mask_paste)",
        ms(r["msrcnn_s"]),
        f"{fmt_ratio(r['speedup'])} faster, identical output: {r['equal_to_torchvision']}",
    )
    grid = r["timings"].get("grid_sample (detectron2-style)")
    if grid:
        table.add(
            "grid_sample paste (detectron2-style)",
            ms(grid["median_s"]),
            f"binarised pixels equal to torchvision: {100 * r['grid_sample_pixel_agreement']:.2f}%",
        )
    table.add("torch.zeros of the output alone", ms(r["zeros_only_s"]), "floor of any paste")
    thp = r.get("with_THP_MEM_ALLOC_ENABLE")
    if thp:
        table.add("with THP_MEM_ALLOC_ENABLE=1: torchvision", ms(thp["torchvision_s"]))
        table.add(
            "with THP_MEM_ALLOC_ENABLE=1: msrcnn", ms(thp["msrcnn_s"]), f"{fmt_ratio(thp['speedup'])} faster"
        )
    return Section(r, table)


def run_evaluation(cfg: EvaluationSettings) -> Section:
    from bench_eval import bench_evaluation

    with tempfile.TemporaryDirectory() as tmp:
        r = bench_evaluation(Path(tmp), cfg.images, tuple(cfg.size), cfg.detections)
    ours = r["msrcnn"]
    table = Table(
        f"COCO evaluation, bbox + segm: {r['images']} images of {size_key(r['image_size'])}, "
        f"{r['detections_per_image']} detections each, from model outputs (28x28 mask probabilities)"
    )
    table.add(
        "msrcnn make_record + evaluate_records",
        ms(ours["total_all_rankings_s"]),
        f"3 segm rankings + oracle + Pearson; APs equal pycocotools: {r['ap_agree']}",
    )
    table.add("  of which make_record (RLEs from the roi masks)", ms(ours["encode_s"]))
    table.add("  of which evaluate_records", ms(ours["evaluate_all_rankings_s"]))
    table.add(
        "make_record from pasted masks instead",
        ms(ours["encode_from_pasted_masks_s"]),
        f"the same RLEs: {ours['same_rles_from_pasted_masks']}; "
        f"roi masks are {fmt_ratio(ours['encode_from_pasted_masks_s'] / ours['encode_s'])} as fast",
    )
    table.add(
        "torchvision paste of the masks (in the forward; not counted)",
        ms(ours["paste_s"]),
        "what a model with mask_output='image' spends on the baselines' input",
    )
    table.add(
        "msrcnn, one segm ranking",
        ms(ours["total_one_ranking_s"]),
        f"evaluate_records {ms(ours['evaluate_one_ranking_s'])}",
    )
    for key, label in (
        ("torchmetrics_pycocotools", "torchmetrics MeanAveragePrecision, pycocotools"),
        ("torchmetrics_faster_coco_eval", "torchmetrics MeanAveragePrecision, faster_coco_eval"),
    ):
        t = r[key]
        table.add(
            label,
            ms(t["total_s"]),
            f"update {ms(t['update_s'])} + compute {ms(t['compute_s'])}; msrcnn is "
            f"{fmt_ratio(t['total_s'] / ours['total_all_rankings_s'])} "
            f"(one ranking {fmt_ratio(t['total_s'] / ours['total_one_ranking_s'])}) as fast",
        )
    pc = r["pycocotools"]
    table.add(
        "pycocotools COCOeval",
        ms(pc["total_s"]),
        f"encode {ms(pc['encode_s'])} + evaluate "
        f"{ms(pc['evaluate_s'])}; msrcnn is {fmt_ratio(r['speedup_vs_pycocotools'])} as fast",
    )
    table.add(
        "evaluation alone: evaluate_records vs pycocotools COCOeval",
        fmt_ratio(pc["evaluate_s"] / ours["evaluate_all_rankings_s"]),
        f"one ranking {fmt_ratio(pc['evaluate_s'] / ours['evaluate_one_ranking_s'])}",
    )
    tm_compute = r["torchmetrics_pycocotools"]["compute_s"]
    alone = tm_compute / ours["evaluate_all_rankings_s"]
    alone_one = tm_compute / ours["evaluate_one_ranking_s"]
    r["evaluate_only_speedup_vs_torchmetrics_pycocotools_compute"] = alone
    r["evaluate_only_one_ranking_speedup_vs_torchmetrics_pycocotools_compute"] = alone_one
    table.add(
        "evaluation alone: evaluate_records vs torchmetrics compute (pycocotools)",
        fmt_ratio(alone),
        f"one ranking {fmt_ratio(alone_one)}",
    )
    boot = ours["bootstrap"]
    table.add(
        f"paired bootstrap of the gain and headroom ({boot['resamples']} resamples)",
        ms(boot["bootstrap_s"]),
        f"read matches {ms(boot['collect_matches_s'])} + resample {ms(boot['resampling_s'])}; "
        f"{boot['fraction_of_evaluate_records']:.0%} of evaluate_records without it "
        f"({ms(boot['evaluate_records_without_bootstrap_s'])}), "
        f"{boot['fraction_of_cocoeval_3_rankings']:.0%} of COCOeval's 3 segm rankings "
        f"({ms(boot['cocoeval_3_segm_rankings_s'])})",
    )
    targets = [
        Target(
            "evaluation: the gain's bootstrap (1,000 resamples) as a share of evaluate_records",
            boot["fraction_of_evaluate_records"] * 100,
            20.0,
            "<=",
            "%",
            note=f"{boot['fraction_of_cocoeval_3_rankings']:.0%} of COCOeval on the 3 segm rankings alone",
        ),
        Target(
            # Like for like: torchmetrics evaluates bbox + one segm ranking, and so does this figure.
            "evaluation: speed-up over torchmetrics (pycocotools backend), from model outputs, same work",
            r["one_ranking_speedup_vs_torchmetrics_pycocotools"],
            EVAL_SPEEDUP,
            ">=",
            "x",
            note=f"with the paper's 3 segm rankings + oracle + Pearson {r['speedup_vs_torchmetrics_pycocotools']:.2f}x; "
            f"evaluate_records alone vs torchmetrics compute {alone_one:.2f}x (all rankings {alone:.2f}x)",
        ),
    ]
    return Section(r, table, targets)


def run_data_loading(cfg: DataLoadingSettings) -> Section:
    from bench_data import bench_data

    with tempfile.TemporaryDirectory() as tmp:
        r = bench_data(
            Path(tmp), cfg.num_train, cfg.image_size, cfg.workers, cfg.batches, cfg.steps, cfg.fed_steps
        )
    table = Table(
        f"data loading: synthetic shapes {r['image_size']} px, batch {r['batch_size']} (demo settings)"
    )
    for lr in r["loaders"]:
        table.add(
            f"train loader, {lr['workers']} workers",
            f"{lr['images_per_s']:.0f} images/s",
            f"first batch {ms(lr['first_batch_s'])}",
        )
    table.add(
        "demo training step (appetite)",
        f"{r['train_step_images_per_s']:.1f} images/s",
        f"{ms(r['train_step_s'])} per step",
    )
    table.add(
        f"demo training fed by the loader ({r['demo_workers']} worker)",
        f"{r['fed_images_per_s']:.1f} images/s",
        f"{100 * r['fed_over_appetite']:.0f}% of the appetite",
    )
    return Section(r, table)


LOADER_SAMPLES_PER_S = 15.0  # one worker: 8 feed > 100 images/s
SYNC_BUDGETS = {
    "inference_image_masks": 20,
    "inference_roi_masks": 20,
    "inference_soft_nms": 30,
    "train_step": 40,
}


def run_loader(cfg: LoaderSettings) -> Section:
    from bench_data import bench_crowded_loader

    with tempfile.TemporaryDirectory() as tmp:
        r = bench_crowded_loader(Path(tmp), cfg.images, tuple(cfg.size), cfg.batches)
    table = Table(
        f"loader: one worker, crowded 700x1100 frames (80-190 instances) at {r['input_size'][0]}x{r['input_size'][1]}, uncached"
    )
    table.add(
        "masks as box-local crops (now)",
        f"{r['crops']['samples_per_s']:.1f} samples/s",
        f"{r['speedup']:.1f}x",
    )
    table.add("masks as full-image planes (before)", f"{r['dense']['samples_per_s']:.1f} samples/s")
    target = Target(
        "loader samples/s per worker, crowded frames", r["crops"]["samples_per_s"], LOADER_SAMPLES_PER_S, ">="
    )
    return Section(r, table, [target])


def run_host_syncs(cfg: HostSyncsSettings) -> Section:
    from bench_syncs import bench_syncs

    r = bench_syncs(cfg)
    h, w = r["size"]
    table = Table(
        f"host syncs (counted on the CPU, GPU code paths): {r['backbone']}, {h}x{w}, {r['detections']} detections"
    )
    table.add("inference, pasted masks", str(r["inference_image_masks"]["total"]), "per image")
    table.add("inference, roi masks", str(r["inference_roi_masks"]["total"]), "per image")
    table.add("inference, Soft-NMS", str(r["inference_soft_nms"]["total"]), "per image")
    table.add("torchvision MaskRCNN inference", str(r["torchvision_inference"]["total"]), "same counter")
    tb, (th, tw) = r["train_batch"], r["train_size"]
    table.add(
        f"training step, {tb} images {th}x{tw}, {r['train_gt']} objects each", str(r["train_step"]["total"])
    )
    table.add("torchvision MaskRCNN training step", str(r["torchvision_train_step"]["total"]), "same counter")
    targets = [
        Target(f"host syncs: {key.replace('_', ' ')}", r[key]["total"], budget, "<=")
        for key, budget in SYNC_BUDGETS.items()
    ]
    return Section(r, table, targets)


GPU_RATIO = 1.05


def run_gpu(cfg: GPUSettings, repeats: int, warmup: int) -> Section:
    from bench_gpu import bench_gpu

    height, width = cfg.size
    table = Table(f"GPU checks: {cfg.backbone} at {height}x{width}, {cfg.detections} detections")
    if torch.cuda.is_available():
        device = torch.device("cuda")
        if not torch.cuda.is_bf16_supported():
            cfg = dataclasses.replace(cfg, amp_dtypes=[d for d in cfg.amp_dtypes if d != "bfloat16"])
    elif cfg.cpu_smoke:
        device = torch.device("cpu")
    else:
        table.add("skipped", "no CUDA device", "run `make bench ARGS='--only gpu'` on a machine with one")
        return Section({"skipped": "no CUDA device (torch.cuda.is_available() is False)"}, table)
    r = bench_gpu(device, cfg, repeats, warmup)
    targets = []
    inf = r["inference"]
    table.add("device", r.get("device_name", r["device"]))
    table.add("inference: MS R-CNN", ms(inf["ms_s"]), f"{inf['detections']} detections")
    table.add("inference: torchvision MaskRCNN", ms(inf["torchvision_s"]))
    table.add("inference: time ratio", fmt_ratio(inf["time_ratio"]), f"target <= {GPU_RATIO}")
    table.add(
        "inference: channels_last",
        ms(inf["channels_last_s"]),
        f"{fmt_ratio(inf['channels_last_speedup'])} faster",
    )
    for name, mode in r["train_step"]["modes"].items():
        table.add(
            f"train step, batch {r['train_step']['batch']}: {name}",
            ms(mode["step_s"]),
            f"{fmt_ratio(mode['speedup_over_float32'])} the speed of float32; losses finite: {mode['losses_finite']}",
        )
    for output, seconds in r["inference_per_image"].items():
        syncs = r.get("cuda_syncs_per_image", {}).get(output)
        table.add(
            f"inference per image, {output} masks",
            ms(seconds),
            "" if syncs is None else f"{syncs} synchronizing CUDA calls (torch.cuda.set_sync_debug_mode)",
        )
    for row in r["train_throughput"]:
        table.add(f"training, batch {row['batch']}, {row['dtype']}", f"{row['images_per_s']:.1f} img/s")
    if device.type == "cuda":
        targets.append(
            Target(
                f"GPU inference ratio, {cfg.backbone} at {height}x{width}",
                inf["time_ratio"],
                GPU_RATIO,
                "<=",
                "x",
            )
        )
        for name in cfg.amp_dtypes:
            mode = r["train_step"]["modes"][name]
            targets.append(
                Target(
                    f"GPU {name} autocast training step: finite losses",
                    float(mode["losses_finite"]),
                    1.0,
                    ">=",
                    "",
                    note=f"{mode['speedup_over_float32']:.2f}x the speed of float32",
                )
            )
    return Section(r, table, targets)


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--quick", action="store_true", help="smoke run: tiny sizes, one repeat")
    parser.add_argument("--threads", type=int, default=None, help="torch.set_num_threads (default: torch's)")
    parser.add_argument("--only", default=None, help=f"comma-separated sections out of {','.join(SECTIONS)}")
    parser.add_argument(
        "--repeats", type=int, default=None, help="timed repeats per figure (default: 3; quick: 1)"
    )
    parser.add_argument("--output", type=Path, default=HERE / "results.json", help="where to write the JSON")
    parser.add_argument(
        "--no-subprocess",
        action="store_true",
        help="skip the paste re-run under THP_MEM_ALLOC_ENABLE=1 in a child process",
    )
    args = parser.parse_args(argv)
    sections = SECTIONS if args.only is None else tuple(s.strip() for s in args.only.split(",") if s.strip())
    unknown = [s for s in sections if s not in SECTIONS]
    if unknown:
        parser.error(f"unknown section(s) {unknown}; choose from {', '.join(SECTIONS)}")
    args.sections = sections
    return args


def main(argv=None) -> int:
    args = parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    if not os.environ.get("GOMP_SPINCOUNT"):
        print(
            "warning: GOMP_SPINCOUNT is not set; on a small shared machine OpenMP spin-waiting can make "
            "timings 10-20x off (make bench sets it)",
            file=sys.stderr,
        )
    profile = PROFILES["quick" if args.quick else "full"]
    repeats = args.repeats or profile.repeats
    warmup = profile.warmup
    results: dict[str, Any] = {
        "machine": machine_info(),
        "settings": {
            "quick": args.quick,
            "repeats": repeats,
            "warmup": warmup,
            "sections": list(args.sections),
            "profile": profile.settings(),
        },
    }
    targets: list[Target] = []
    started = time.perf_counter()
    m = results["machine"]
    print(
        f"machine: {m['cpu_model']}, {m['cpu_cores_usable']} cores usable, torch {m['torch']}, "
        f"{m['torch_threads']} threads, load {m['load_average_at_start']}",
        flush=True,
    )
    # in SECTIONS' order: maskiou_targets and soft_nms state their shares of figures run before them
    runners: dict[str, Callable[[], Section]] = {
        "inference": lambda: run_inference(profile.inference, repeats, warmup),
        "train_step": lambda: run_train_step(profile.train_step, repeats, warmup),
        "maskiou_targets": lambda: run_maskiou_targets(
            profile.maskiou_targets, warmup, train_step=results.get("train_step")
        ),
        "soft_nms": lambda: run_soft_nms(profile.soft_nms, warmup, inference=results.get("inference")),
        "paste": lambda: run_paste(profile.paste, warmup, args),
        "evaluation": lambda: run_evaluation(profile.evaluation),
        "data_loading": lambda: run_data_loading(profile.data_loading),
        "loader": lambda: run_loader(profile.loader),
        "host_syncs": lambda: run_host_syncs(profile.host_syncs),
        "gpu": lambda: run_gpu(profile.gpu, repeats, warmup),
    }
    for section in SECTIONS:
        if section not in args.sections:
            continue
        t0 = time.perf_counter()
        print(f"[{section}] ...", flush=True)
        done = runners[section]()
        results[section] = done.results
        targets += done.targets
        results.setdefault("section_seconds", {})[section] = round(time.perf_counter() - t0, 2)
        print(done.table.render() + "\n", flush=True)
        # a run stopped half-way keeps the sections it finished
        partial = {**results, "targets": [t.as_dict() for t in targets], "complete": False}
        write_json_atomic(args.output, partial, indent=2)
    results["targets"] = [t.as_dict() for t in targets]
    results["complete"] = True
    results["total_seconds"] = round(time.perf_counter() - started, 1)
    if targets:
        table = Table("targets (issue #6)")
        for t in targets:
            value = f"{100 * t.value:.2f}%" if t.unit == "fraction" else f"{t.value:.3f}{t.unit}"
            limit = f"{100 * t.limit:.0f}%" if t.unit == "fraction" else f"{t.limit:.3f}{t.unit}"
            table.add(
                t.name,
                value,
                f"{t.op} {limit}: {'MET' if t.met else 'NOT MET'}" + (f" ({t.note})" if t.note else ""),
            )
        print(table.render())
    path = write_json_atomic(args.output, results, indent=2)
    print(f"\nwrote {path} in {results['total_seconds']} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
