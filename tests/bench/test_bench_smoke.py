"""``benchmarks/run.py --quick``: the smoke run completes and writes every section and target."""

import json
import subprocess
import sys
from pathlib import Path

from msrcnn_testing import script_env

ROOT = Path(__file__).resolve().parents[2]
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


def test_quick_benchmark_writes_every_section(tmp_path):
    out = tmp_path / "results.json"
    env = script_env(WANDB_SILENT="true")
    env.setdefault("GOMP_SPINCOUNT", "200000")
    proc = subprocess.run(
        [
            sys.executable,
            str(ROOT / "benchmarks" / "run.py"),
            "--quick",
            "--threads",
            "1",
            "--output",
            str(out),
        ],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
        cwd=tmp_path,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "targets (issue #6)" in proc.stdout
    results = json.loads(out.read_text())
    for key in ("machine", "settings", "targets", *SECTIONS):
        assert key in results, key
    machine = results["machine"]
    assert (
        machine["cpu_model"]
        and machine["cpu_cores"] >= 1
        and machine["torch"]
        and machine["torch_threads"] == 1
    )

    for figures in results["inference"].values():
        assert figures["outputs_equal_torchvision"] and figures["fast_paste_outputs_equal"]
        assert figures["flop_bound"] > 1.0 and figures["time_ratio"] > 0
    for figures in results["train_step"].values():
        assert figures["flop_bound"] > 1.0 and figures["maskiou_targets_in_step_s"] > 0
    assert results["maskiou_targets"]["seconds"] > 0
    assert all(r["same_as_loops"] for r in results["soft_nms"].values())
    assert results["paste"]["equal_to_torchvision"]
    assert results["evaluation"]["ap_agree"]
    assert results["evaluation"]["msrcnn"]["same_rles_from_pasted_masks"]
    assert [r["workers"] for r in results["data_loading"]["loaders"]] == [0, 1, 2]
    # the GPU checks, on the CPU in a quick run (on a CUDA machine: on the GPU)
    gpu = results["gpu"]
    assert gpu["inference"]["time_ratio"] > 0 and gpu["inference"]["channels_last_s"] > 0
    assert set(gpu["train_step"]["modes"]) >= {"float32", "bfloat16", "float32 channels_last"}
    assert all(mode["losses_finite"] for mode in gpu["train_step"]["modes"].values())
    assert {row["batch"] for row in gpu["train_throughput"]} == {1, 2}
    assert set(gpu["inference_per_image"]) == {"image", "roi"}
    loader = results["loader"]
    assert loader["crops"]["samples_per_s"] > 0 and loader["dense"]["samples_per_s"] > 0
    syncs = results["host_syncs"]
    # the GPU paths against torchvision's code, counted alike
    assert syncs["inference_image_masks"]["total"] < syncs["torchvision_inference"]["total"]
    assert syncs["train_step"]["total"] < syncs["torchvision_train_step"]["total"]
    names = [t["name"] for t in results["targets"]]
    for fragment in (
        "inference",
        "train step",
        "Soft-NMS",
        "share of an inference",
        "evaluation",
        "host syncs",
        "loader",
    ):
        assert any(fragment in n for n in names), fragment
    assert all(isinstance(t["met"], bool) for t in results["targets"])
