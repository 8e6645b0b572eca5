"""src/predict.py and msrcnn.app.predict: images in, COCO-format JSON and overlays out."""

import json

import numpy as np
import pytest
import torch
from hydra import compose, initialize_config_dir
from omegaconf import OmegaConf
from PIL import Image

from exp_helpers import CONF, QUIET_WANDB, TINY, run_script, tiny_wandb_run
from msrcnn.app.builders import build_detector
from msrcnn.app.predict import checkpoint_categories, list_images, load_predictor, predict
from msrcnn.config import to_plain, validate
from msrcnn.data import SHAPES_CATEGORIES

CLASS_NAMES = [name for _, name in SHAPES_CATEGORIES]


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    """An untrained TINY model saved like a Lightning checkpoint of src/train.py (no training)."""
    out = tmp_path_factory.mktemp("ckpt")
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        cfg = compose("train", overrides=[*TINY, f"paths.output_dir={out}"])
    plain = to_plain(validate(cfg))
    torch.manual_seed(0)
    model = build_detector(plain, len(CLASS_NAMES) + 1)
    path = out / "last.ckpt"
    torch.save(
        {
            "state_dict": {f"model.{k}": v for k, v in model.state_dict().items()},
            "hyper_parameters": {
                "config": {**plain, "num_classes": len(CLASS_NAMES) + 1, "class_names": CLASS_NAMES}
            },
        },
        path,
    )
    return path


@pytest.fixture(scope="module")
def images(tmp_path_factory):
    folder = tmp_path_factory.mktemp("imgs")
    rng = np.random.default_rng(0)
    for name, size in (("a.png", (64, 64)), ("b.jpg", (48, 80)), ("c.png", (64, 40))):
        Image.fromarray(rng.integers(0, 255, (*size, 3), dtype=np.uint8)).save(folder / name)
    (folder / "notes.txt").write_text("not an image")
    return folder


def run_predict(tmp_path, **overrides):
    cfg = OmegaConf.create(
        {"output_dir": str(tmp_path / "out"), "device": "cpu", "render_min_score": 0.0, **overrides}
    )
    return predict(cfg)


def test_predict_writes_coco_json_with_the_three_scores_and_overlays(checkpoint, images, tmp_path):
    path = run_predict(tmp_path, ckpt_path=str(checkpoint), input=str(images), max_dets=5)
    result = json.loads(path.read_text())
    assert [i["file_name"].rsplit("/", 1)[1] for i in result["images"]] == ["a.png", "b.jpg", "c.png"]
    assert [(i["height"], i["width"]) for i in result["images"]] == [(64, 64), (48, 80), (64, 40)]
    assert result["categories"] == [{"id": i, "name": n} for i, n in SHAPES_CATEGORIES]  # the file's own ids
    anns = result["annotations"]
    assert anns and len({a["id"] for a in anns}) == len(anns)
    per_image = {}
    for a in anns:
        per_image[a["image_id"]] = per_image.get(a["image_id"], 0) + 1
        assert a["category_id"] in {i for i, _ in SHAPES_CATEGORIES}
        assert 0.0 <= a["mask_iou"] <= 1.0 and abs(a["mask_score"] - a["class_score"] * a["mask_iou"]) < 1e-5
        assert a["score"] == a["mask_score"] and len(a["bbox"]) == 4 and a["area"] >= 0
        assert set(a["segmentation"]) == {"size", "counts"}
    assert max(per_image.values()) <= 5
    overlays = sorted(p.name for p in (tmp_path / "out" / "overlays").iterdir())
    assert overlays == ["a.png", "b.png", "c.png"]
    assert np.asarray(Image.open(tmp_path / "out" / "overlays" / "b.png")).shape[2] in (3, 4)


def test_glob_single_file_threshold_and_no_render(checkpoint, images, tmp_path):
    path = run_predict(
        tmp_path, ckpt_path=str(checkpoint), input=str(images / "*.png"), render=False, score_threshold=0.5
    )
    result = json.loads(path.read_text())
    assert len(result["images"]) == 2 and all(a["class_score"] >= 0.5 for a in result["annotations"])
    assert not (tmp_path / "out" / "overlays").exists()
    assert list_images(images / "a.png") == [images / "a.png"]


def test_missing_input_and_empty_folder_fail_clearly(tmp_path):
    with pytest.raises(FileNotFoundError, match="input not found"):
        list_images(tmp_path / "nope.png")
    with pytest.raises(FileNotFoundError, match="no image files"):
        list_images(tmp_path)
    with pytest.raises(FileNotFoundError, match="no image files match"):
        list_images(str(tmp_path / "*.jpg"))


def test_categories_fall_back_to_the_annotation_file_then_to_label_order(tmp_path):
    ann = tmp_path / "val.json"
    ann.write_text(json.dumps({"categories": [{"id": 90, "name": "b"}, {"id": 3, "name": "a"}]}))
    trained = {"class_names": ["a", "b"], "data": {"name": "coco_format", "val": {"ann_file": str(ann)}}}
    assert checkpoint_categories(trained) == [(3, "a"), (90, "b")]
    assert checkpoint_categories({**trained, "category_ids": [5, 6]}) == [(5, "a"), (6, "b")]
    assert checkpoint_categories({"class_names": ["a", "b"], "data": {"name": "coco_format"}}) == [
        (1, "a"),
        (2, "b"),
    ]


def test_predictor_loads_a_checkpoint_trained_from_pretrained_weights(tmp_path):
    """backbone.pretrained=imagenet is not read again (no weights cache needed): the frozen BN it
    implied is rebuilt, so the checkpoint's state dict fits exactly."""
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        cfg = compose(
            "train",
            overrides=[
                *TINY,
                f"paths.output_dir={tmp_path}",
                "backbone.norm=frozen_bn",
                "backbone.trainable_layers=3",
            ],
        )
    plain = to_plain(validate(cfg))
    model = build_detector(plain, len(CLASS_NAMES) + 1)
    plain["backbone"].update(pretrained="imagenet", norm=None, trainable_layers=None)  # as trained
    path = tmp_path / "pretrained.ckpt"
    torch.save(
        {
            "state_dict": {f"model.{k}": v for k, v in model.state_dict().items()},
            "hyper_parameters": {
                "config": {**plain, "num_classes": len(CLASS_NAMES) + 1, "class_names": CLASS_NAMES}
            },
        },
        path,
    )
    loaded, trained = load_predictor(path, soft_nms=True)
    assert loaded.roi_heads.soft_nms.enabled and not loaded.training
    assert trained["backbone"]["pretrained"] == "imagenet"


@pytest.mark.slow
def test_predict_script_on_the_images_of_a_tiny_run(tmp_path_factory, shapes_dir, tmp_path):
    out = tiny_wandb_run(tmp_path_factory, shapes_dir)
    val_images = next(shapes_dir.glob("shapes/*/val"))
    proc = run_script(
        "predict.py",
        f"ckpt_path={out / 'checkpoints' / 'last.ckpt'}",
        f"input={val_images}/*.png",
        f"output_dir={tmp_path}",
        env=QUIET_WANDB,
    )
    assert "predictions:" in proc.stdout
    result = json.loads((tmp_path / "predictions.json").read_text())
    assert len(result["images"]) == 4 and len(list((tmp_path / "overlays").glob("*.png"))) == 4
    assert result["categories"] == [{"id": i, "name": n} for i, n in SHAPES_CATEGORIES]
    assert (tmp_path / ".hydra" / "config.yaml").is_file()
    bad = run_script(
        "predict.py",
        f"ckpt_path={out / 'checkpoints' / 'last.ckpt'}",
        f"input={tmp_path}/nope",
        f"output_dir={tmp_path / 'bad'}",
        check=False,
    )
    assert bad.returncode == 2 and "input not found" in bad.stderr
