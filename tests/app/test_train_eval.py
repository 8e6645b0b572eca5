"""End to end: src/train.py and src/eval.py as a user runs them, and through the compose API."""

import json

import pytest
import torch
from hydra import compose, initialize_config_dir
from PIL import Image

from msrcnn.app.train import train
from msrcnn.training import MaskScoringModule, NonFiniteLossError
from msrcnn_testing import CONF, TINY, run_script

AP_KEYS = {"AP", "AP50", "AP75", "APs", "APm", "APl"}


@pytest.fixture(scope="module")
def trained_run(tmp_path_factory, shapes_dir):
    """A 2-step training run through the real script; its run directory."""
    out = tmp_path_factory.mktemp("run")
    proc = run_script("train.py", *TINY, f"paths.data_dir={shapes_dir}", f"hydra.run.dir={out}")
    return out, proc


def check_results_schema(results):
    assert set(results) >= {"bbox", "segm", "segm_cls", "segm_oracle", "maskiou_pearson", "num_images"}
    for key in ("bbox", "segm", "segm_cls", "segm_oracle"):
        assert set(results[key]) == AP_KEYS
        assert all(v is None or 0.0 <= v <= 100.0 for v in results[key].values())
    assert results["maskiou_pearson"] is None or -1.0 <= results["maskiou_pearson"] <= 1.0
    for key, (a, b) in (
        ("mask_scoring_gain", ("segm", "segm_cls")),
        ("oracle_headroom", ("segm_oracle", "segm")),
    ):
        diff = results[key]  # the AP difference with its paired bootstrap interval
        assert set(diff) == {"AP", "low", "high", "verdict", "bootstrap"}
        assert diff["AP"] == pytest.approx(results[a]["AP"] - results[b]["AP"], abs=2e-3)
        assert diff["low"] <= diff["high"]
        assert diff["verdict"] in ("helps", "hurts", "no clear difference")
        assert diff["bootstrap"] == {
            "level": 0.95,
            "num_images": results["num_images"],
            "resamples": 1000,
            "seed": 0,
        }


def test_train_script_writes_checkpoints_results_and_detections(trained_run):
    out, proc = trained_run
    assert (out / "checkpoints" / "last.ckpt").is_file()
    results = json.loads((out / "results.json").read_text())
    check_results_schema(results)
    assert results["num_images"] == 4 and results["global_step"] == 2
    segm = json.loads((out / "detections_segm.json").read_text())
    bbox = json.loads((out / "detections_bbox.json").read_text())
    assert len(segm) == len(bbox) == results["num_detections"]
    per_image = {}
    for det in segm:
        per_image[det["image_id"]] = per_image.get(det["image_id"], 0) + 1
        assert abs(det["score"] - det["class_score"] * det["mask_iou"]) < 1e-5
    assert max(per_image.values()) <= 100
    assert "mask, MS R-CNN" in proc.stdout and "Pearson" in proc.stdout
    assert (
        "mask scoring gain: " in proc.stdout
        and "95% interval " in proc.stdout
        and " over 4 images: " in proc.stdout
    )
    # the demo preset's measured spread, at the nearest measured length to the run's 2 steps
    assert "compared with this preset's measured spread (3 seeds at 1,100 steps, the nearest" in proc.stdout
    assert proc.stdout.count("expected ") == 3 and "this run (2 steps) is " in proc.stdout


def test_eval_script_reproduces_the_final_evaluation(trained_run, tmp_path, shapes_dir):
    out, _ = trained_run
    run_script(
        "eval.py",
        f"ckpt_path={out / 'checkpoints' / 'last.ckpt'}",
        f"paths.data_dir={shapes_dir}",
        f"hydra.run.dir={tmp_path}",
        "trainer.enable_progress_bar=false",
    )
    a = json.loads((out / "results.json").read_text())
    b = json.loads((tmp_path / "results.json").read_text())
    for key in (
        "bbox",
        "segm",
        "segm_cls",
        "segm_oracle",
        "num_images",
        "mask_scoring_gain",
        "oracle_headroom",
    ):
        assert a[key] == b[key], key  # the interval too: the same images, the same seed
    # The demo tests with Soft-NMS: its scores, and the MaskIoU head's outputs on the boxes it keeps,
    # can differ between the two processes at float32 rounding level (the APs above are identical);
    # the detections themselves (image, class, mask) are equal.
    assert b["maskiou_pearson"] == pytest.approx(a["maskiou_pearson"], rel=1e-4)
    trained = json.loads((out / "detections_segm.json").read_text())
    evaluated = json.loads((tmp_path / "detections_segm.json").read_text())
    assert len(trained) == len(evaluated) > 0
    floats = ("score", "class_score", "mask_iou")
    for x, y in zip(trained, evaluated):
        assert {k: v for k, v in x.items() if k not in floats} == {
            k: v for k, v in y.items() if k not in floats
        }
        assert [y[k] for k in floats] == pytest.approx([x[k] for k in floats], rel=1e-4, abs=1e-6)


def test_resume_continues_from_the_checkpoint(trained_run, tmp_path, shapes_dir):
    out, _ = trained_run
    ckpt = out / "checkpoints" / "last.ckpt"
    overrides = [o for o in TINY if not o.startswith("trainer.max_steps")]
    run_script(
        "train.py",
        *overrides,
        "trainer.max_steps=3",
        f"ckpt_path={ckpt}",
        f"paths.data_dir={shapes_dir}",
        f"hydra.run.dir={tmp_path}",
    )
    results = json.loads((tmp_path / "results.json").read_text())
    assert results["global_step"] == 3
    # the LR steps follow the resumed run's length (3 steps: 14/18 and 17/18 of it), not the
    # 2-step schedule restored from the checkpoint ([2, 2])
    assert results["training"]["lr_milestones"] == [2, 3]
    assert results["training"]["stop_reason"] == "completed the planned 3 steps"
    state = torch.load(tmp_path / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=True)
    assert state["global_step"] == 3


@pytest.mark.parametrize("precision", ["32-true", "bf16-mixed"])
def test_fast_dev_run_through_the_compose_api(precision, tmp_path, shapes_dir):
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        cfg = compose(
            "train",
            overrides=[
                *TINY,
                "trainer.fast_dev_run=true",
                f"trainer.precision={precision}",
                f"paths.data_dir={shapes_dir}",
                f"paths.output_dir={tmp_path}",
            ],
        )
    results = train(cfg)
    check_results_schema(results)
    assert (tmp_path / "results.json").is_file()


@pytest.mark.parametrize("head", ["none", "maskiou"])
def test_fast_dev_run_script(head, tmp_path, shapes_dir):
    proc = run_script(
        "train.py",
        *TINY,
        f"head={head}",
        "trainer.fast_dev_run=true",
        f"paths.data_dir={shapes_dir}",
        f"hydra.run.dir={tmp_path}",
    )
    results = json.loads((tmp_path / "results.json").read_text())
    if head == "none":  # plain Mask R-CNN: one ranking only
        assert results["segm"] == results["segm_cls"] and results["segm_oracle"] is None
        assert results["mask_scoring_gain"] is None and results["oracle_headroom"] is None
        assert "mask scoring gain: " not in proc.stdout  # no MaskIoU head, no gain (nor interval)
    else:
        assert results["mask_scoring_gain"]["bootstrap"]["resamples"] == 1000
        assert "mask scoring gain: " in proc.stdout
    assert "mask, Mask R-CNN" in proc.stdout


def test_bad_value_fails_before_work_with_the_choices(tmp_path):
    proc = run_script("train.py", "head.input=concatt", f"hydra.run.dir={tmp_path}", check=False)
    assert proc.returncode == 2
    assert "head.input" in proc.stderr and "concat_highres" in proc.stderr
    assert not (tmp_path / "checkpoints").exists()


def test_misspelt_key_fails(tmp_path):
    proc = run_script("train.py", "head.inptu=concat", f"hydra.run.dir={tmp_path}", check=False)
    assert proc.returncode != 0 and "inptu" in proc.stderr


def test_missing_dataset_files_fail_with_the_path(tmp_path):
    proc = run_script(
        "train.py",
        "data=coco_format",
        f"data.train.ann_file={tmp_path}/nope.json",
        f"data.train.img_dir={tmp_path}",
        f"data.val.ann_file={tmp_path}/nope.json",
        f"data.val.img_dir={tmp_path}",
        f"hydra.run.dir={tmp_path}/run",
        check=False,
    )
    assert proc.returncode == 2 and "nope.json" in proc.stderr


def test_non_finite_loss_names_the_step_and_the_loss():
    class Exploding(torch.nn.Module):
        def forward(self, images, targets):
            return {"loss_mask": torch.tensor(0.5), "loss_maskiou": torch.tensor(float("nan"))}

    module = MaskScoringModule(Exploding(), optim={"check_finite_every_n_steps": 1})
    with pytest.raises(NonFiniteLossError, match=r"step 0 .*loss_maskiou=nan"):
        module.training_step(([torch.zeros(3, 8, 8)], [{}]), 0)


def test_eval_on_a_split_without_annotations_writes_detections_only(trained_run, tmp_path, shapes_dir):
    out, _ = trained_run
    val_json = next(shapes_dir.glob("shapes/*/annotations/instances_val.json"))
    info = json.loads(val_json.read_text())
    info.pop("annotations")
    test_json = tmp_path / "image_info_test.json"
    test_json.write_text(json.dumps(info))
    img_dir = val_json.parent.parent / "val"
    run_dir = tmp_path / "run"
    run_script(
        "eval.py",
        f"ckpt_path={out / 'checkpoints' / 'last.ckpt'}",
        "data=coco_format",
        f"data.val.ann_file={val_json}",
        f"data.val.img_dir={img_dir}",
        f"data.test.ann_file={test_json}",
        f"data.test.img_dir={img_dir}",
        "split=test",
        "data.num_workers=0",
        f"hydra.run.dir={run_dir}",
        "trainer.enable_progress_bar=false",
    )
    assert not (run_dir / "results.json").exists()
    segm = json.loads((run_dir / "detections_segm.json").read_text())
    assert {d["image_id"] for d in segm} <= {img["id"] for img in info["images"]}
    assert len(json.loads((run_dir / "detections_bbox.json").read_text())) == len(segm) > 0


def test_a_real_checkpoint_loads_through_both_public_ways(trained_run):
    from msrcnn.models import load_model

    out, _ = trained_run
    ckpt = out / "checkpoints" / "last.ckpt"
    model = load_model(ckpt)
    module = MaskScoringModule.load_from_checkpoint(ckpt, map_location="cpu")
    assert not model.training and model.class_names == list(module.hparams["config"]["class_names"])
    assert model.category_ids == [1, 2, 4, 5, 7, 9]  # the shapes dataset's own ids
    for (name, a), b in zip(model.state_dict().items(), module.model.state_dict().values()):
        assert torch.equal(a, b), name
    # the backbone's defaults are recorded resolved (from scratch: BN, all 5 stages trainable)
    backbone = module.hparams["config"]["backbone"]
    assert (backbone["norm"], backbone["trainable_layers"]) == ("bn", 5)
    assert (model.config["backbone"]["norm"], model.config["backbone"]["trainable_layers"]) == ("bn", 5)


def test_damaged_or_foreign_checkpoints_fail_in_one_line_in_every_script(trained_run, tmp_path, shapes_dir):
    out, _ = trained_run
    data = (out / "checkpoints" / "last.ckpt").read_bytes()
    truncated = tmp_path / "truncated.ckpt"
    truncated.write_bytes(data[: len(data) // 3])
    foreign = tmp_path / "weights.pth"
    torch.save({"conv.weight": torch.zeros(1)}, foreign)
    image = tmp_path / "image.png"
    Image.new("RGB", (32, 32)).save(image)
    runs = {
        "train.py": (
            truncated,
            [*TINY, f"paths.data_dir={shapes_dir}", f"hydra.run.dir={tmp_path / 'train'}"],
        ),
        "eval.py": (foreign, [f"hydra.run.dir={tmp_path / 'eval'}"]),
        "predict.py": (truncated, [f"input={image}", f"output_dir={tmp_path / 'predict'}"]),
    }
    for script, (ckpt, args) in runs.items():
        proc = run_script(script, *args, f"ckpt_path={ckpt}", check=False)
        lines = proc.stderr.strip().splitlines()
        assert proc.returncode == 2, (script, proc.stderr[-2000:])
        assert "Traceback" not in proc.stderr and lines[-1].startswith(f"error: {ckpt}"), (script, lines)
        why = "truncated or corrupt" if ckpt == truncated else "bare state dict"
        assert why in lines[-1], (script, lines[-1])
    assert not (tmp_path / "train" / "checkpoints").exists()  # failed before any work
