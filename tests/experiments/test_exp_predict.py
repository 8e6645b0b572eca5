"""src/predict.py and msrcnn.app.predict: images in, COCO-format JSON and overlays out."""

import json

import numpy as np
import pytest
import torch
from omegaconf import OmegaConf
from PIL import Image

from exp_helpers import QUIET_WANDB, run_script, tiny_wandb_run
from msrcnn import Predictor
from msrcnn.app.predict import list_images, predict
from msrcnn.data import SHAPES_CATEGORIES
from msrcnn_testing import untrained_checkpoint

CLASS_NAMES = [name for _, name in SHAPES_CATEGORIES]


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    """An untrained TINY model saved like a Lightning checkpoint of src/train.py (no training)."""
    return untrained_checkpoint(tmp_path_factory.mktemp("ckpt"))


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
        assert set(a["segmentation"]) == {"size", "counts"} and a["iscrowd"] == 0
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


def test_every_predictor_argument_is_a_predict_key_that_reaches_it(monkeypatch, images, tmp_path):
    """src/predict.py's settings are msrcnn.Predictor's arguments: each one set reaches the Predictor."""
    import inspect

    import msrcnn.app.predict as app

    class Reached(Exception):
        pass

    def capture(*args, **kwargs):
        raise Reached(kwargs)

    monkeypatch.setattr(app, "Predictor", capture)
    values = {
        "ckpt_path": "run/last.ckpt",
        "max_dets": 7,
        "score_threshold": 0.25,
        "min_mask_score": 0.125,
        "sort_by": "class_score",
        "soft_nms": True,
        "mask_threshold": 0.75,
        "batch_size": 3,
        "precision": "bf16",
    }
    assert set(values) | {"device"} == set(inspect.signature(Predictor).parameters) - {"self"}
    with pytest.raises(Reached) as reached:
        run_predict(tmp_path, input=str(images), **values)
    assert reached.value.args[0] == {**values, "device": "cpu"}


def test_missing_input_and_empty_folder_fail_clearly(tmp_path):
    with pytest.raises(FileNotFoundError, match="input not found"):
        list_images(tmp_path / "nope.png")
    with pytest.raises(FileNotFoundError, match="no image files"):
        list_images(tmp_path)
    with pytest.raises(FileNotFoundError, match="no image files match"):
        list_images(str(tmp_path / "*.jpg"))


def test_predictor_takes_paths_pil_numpy_and_tensors_and_returns_one_result_each(checkpoint, images):
    predictor = Predictor(checkpoint, device="cpu", max_dets=7)
    path = images / "b.jpg"
    pil = Image.open(path)
    array = np.asarray(pil.convert("RGB"))
    tensor = torch.from_numpy(array.copy()).permute(2, 0, 1).float() / 255
    results = predictor([path, str(path), pil, array, tensor])
    assert len(results) == 5 and len(predictor([])) == 0
    first = results[0]
    assert 0 < len(first) <= 7 and first.image_size == (48, 80)
    names = dict(SHAPES_CATEGORIES)
    assert first.class_names == [names[int(c)] for c in first.category_ids]
    assert first.masks.shape == (len(first), 48, 80) and first.masks.dtype == bool and first.rles is None
    assert np.allclose(first.mask_scores, first.class_scores * first.mask_ious)
    assert np.all(np.diff(first.mask_scores) <= 0) and first.boxes.shape == (len(first), 4)
    for other in results[1:]:  # the same pixels, whatever the input type
        assert np.array_equal(other.boxes, first.boxes) and np.array_equal(other.masks, first.masks)
    [encoded] = predictor(array, rle=True)  # one image: a list of one
    assert encoded.masks is None and len(encoded.rles) == len(first)
    from faster_coco_eval.core import mask as mask_utils

    decoded = mask_utils.decode([dict(r, counts=r["counts"].encode()) for r in encoded.rles])
    assert np.array_equal(decoded.transpose(2, 0, 1).astype(bool), first.masks)
    strict = Predictor(checkpoint, device="cpu", score_threshold=float(first.class_scores[2]))([array])[0]
    assert len(strict) >= 3 and strict.class_scores.min() >= first.class_scores[2]


def test_predictor_refuses_what_is_not_an_image(checkpoint, tmp_path):
    predictor = Predictor(checkpoint, device="cpu")
    with pytest.raises(TypeError, match="uint8"):
        predictor([np.zeros((8, 8, 3), dtype=np.float32)])
    with pytest.raises(ValueError, match="CxHxW"):
        predictor([torch.zeros(8, 8)])
    with pytest.raises(FileNotFoundError, match="image not found"):
        predictor([tmp_path / "nope.png"])
    with pytest.raises(TypeError, match="cannot use a int"):
        predictor([3])


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


def test_detections_are_ranked_by_mask_score_and_filtered_on_either_score(checkpoint, images):
    path = images / "a.png"
    [ranked] = Predictor(checkpoint, device="cpu")([path])
    [by_class] = Predictor(checkpoint, device="cpu", sort_by="class_score")([path])
    assert len(ranked) == len(by_class) > 3
    assert np.all(np.diff(ranked.mask_scores) <= 0) and np.all(np.diff(by_class.class_scores) <= 0)
    # the two orders differ for this model: the ranking is not the class score's
    assert not np.array_equal(ranked.class_scores, by_class.class_scores)
    assert sorted(ranked.mask_scores.tolist()) == sorted(by_class.mask_scores.tolist())
    cut = float(np.median(ranked.mask_scores))
    [strict] = Predictor(checkpoint, device="cpu", min_mask_score=cut)([path])
    assert len(strict) == int((ranked.mask_scores >= cut).sum()) and strict.mask_scores.min() >= cut
    with pytest.raises(
        ValueError, match="sort_by='iou' is not valid; expected one of mask_score, class_score"
    ):
        Predictor(checkpoint, device="cpu", sort_by="iou")
    with pytest.raises(ValueError, match="precision='8' is not valid; expected one of 32, bf16, 16"):
        Predictor(checkpoint, device="cpu", precision=8)


def test_prediction_converts_to_coco_and_json_and_draws_itself(checkpoint, images, tmp_path):
    from faster_coco_eval.core import mask as mask_utils

    from msrcnn.evaluation.plots import draw_detections, figure_to_array

    path = images / "b.jpg"
    [pred] = Predictor(checkpoint, device="cpu", max_dets=6)([path])
    coco = pred.to_coco(image_id=7)
    json.dumps(coco)  # plain Python
    assert len(coco) == len(pred) and {a["image_id"] for a in coco} == {7}
    for k, ann in enumerate(coco):
        assert ann["score"] == ann["mask_score"] == pytest.approx(float(pred.mask_scores[k]))
        assert ann["class_score"] == pytest.approx(float(pred.class_scores[k]))
        assert ann["mask_iou"] == pytest.approx(float(pred.mask_ious[k]))
        x0, y0, x1, y1 = pred.boxes[k]
        assert ann["bbox"] == pytest.approx([x0, y0, x1 - x0, y1 - y0])
        decoded = mask_utils.decode(
            [dict(ann["segmentation"], counts=ann["segmentation"]["counts"].encode())]
        )
        assert np.array_equal(decoded[..., 0].astype(bool), pred.masks[k])
        assert ann["area"] == pred.masks[k].sum()
    plain = json.loads(pred.to_json())
    assert plain == pred.to_dict() and plain["category_ids"] == pred.category_ids.tolist()
    assert plain["mask_scores"] == pytest.approx(pred.mask_scores.tolist())
    assert plain["rles"] == [a["segmentation"] for a in coco] and plain["source"] == str(path)

    bare = pred.draw(min_mask_score=2.0, min_instances=0)  # nothing drawn: the image alone
    drawn = pred.draw(min_mask_score=2.0, min_instances=len(pred))
    assert drawn.dtype == np.uint8 and drawn.shape == bare.shape and drawn.shape[2] == 3
    assert (drawn != bare).any(axis=2).mean() > 0.01  # masks, boxes and labels
    # the default keeps a weak model's overlay from being blank: this one's mask scores are all < 0.3
    assert pred.mask_scores.max() < 0.3 and (pred.draw() != bare).any()
    saved = pred.save(tmp_path / "b_overlay.png", min_mask_score=2.0, min_instances=len(pred))
    assert np.array_equal(np.asarray(Image.open(saved).convert("RGB")), drawn)
    # the plotting code takes a Prediction where it took an internal record
    fig = draw_detections(Image.open(path), pred, max_instances=len(pred), min_instances=len(pred))
    assert np.array_equal(figure_to_array(fig), drawn)
    with pytest.raises(ValueError, match="is of a"):
        pred.draw(images / "a.png")


def test_predictor_precision_autocasts_the_model(checkpoint, images):
    seen = []
    predictor = Predictor(checkpoint, device="cpu", precision="bf16")
    handle = predictor.model.roi_heads.box_head.register_forward_hook(lambda m, i, o: seen.append(o.dtype))
    [pred] = predictor([images / "a.png"])
    handle.remove()
    assert (
        seen == [torch.bfloat16]
        and predictor.model.roi_heads.box_predictor.cls_score.weight.dtype == torch.float32
    )
    assert pred.boxes.dtype == np.float32 and pred.mask_scores.dtype == np.float32
    assert np.all(np.diff(pred.mask_scores) <= 0)
    seen.clear()
    full = Predictor(checkpoint, device="cpu")
    full.model.roi_heads.box_head.register_forward_hook(lambda m, i, o: seen.append(o.dtype))
    full([images / "a.png"])
    assert seen == [torch.float32]


def test_predict_batches_skips_unreadable_images_and_fails_at_the_end(checkpoint, images, tmp_path):
    from msrcnn.data import DataError

    folder = tmp_path / "mixed"
    folder.mkdir()
    for name in ("a.png", "b.jpg", "c.png"):
        (folder / name).write_bytes((images / name).read_bytes())
    (folder / "broken.png").write_bytes(b"\x89PNG not really")
    with pytest.raises(DataError, match=r"1 of 4 images could not be read and were skipped .*broken\.png"):
        run_predict(tmp_path, ckpt_path=str(checkpoint), input=str(folder), batch_size=3, max_dets=4)
    result = json.loads((tmp_path / "out" / "predictions.json").read_text())
    assert [i["file_name"].rsplit("/", 1)[1] for i in result["images"]] == ["a.png", "b.jpg", "c.png"]
    assert [i["id"] for i in result["images"]] == [1, 2, 4]  # ids follow the listing; 3 was skipped
    assert result["info"]["skipped"] == [str(folder / "broken.png")]
    assert {a["image_id"] for a in result["annotations"]} == {1, 2, 4}
    assert sorted(p.name for p in (tmp_path / "out" / "overlays").iterdir()) == ["a.png", "b.png", "c.png"]
    # batches of 3 give each image the detections it gets alone, up to padding effects on the scores
    single = json.loads(
        run_predict(tmp_path / "one", ckpt_path=str(checkpoint), input=str(images), max_dets=4).read_text()
    )
    assert len(single["annotations"]) == len(result["annotations"])
    ranked = [a["score"] for a in result["annotations"] if a["image_id"] == 1]
    assert ranked == sorted(ranked, reverse=True)


def test_a_bracket_glob_needs_hydra_quotes_as_the_readme_says():
    """The shell removes one level of quotes; Hydra parses what is left. README: "input='imgs/00000[1-3].png'"."""
    import shlex

    from hydra.core.override_parser.overrides_parser import OverridesParser
    from hydra.errors import OverrideParseException

    parser = OverridesParser.create()
    for command in (
        """src/predict.py "input='imgs/00000[1-3].png'" """,
        r"""src/predict.py 'input=imgs/00000\[1-3\].png'""",
    ):
        [override] = parser.parse_overrides(shlex.split(command)[1:])
        assert override.value() == "imgs/00000[1-3].png", command
    with pytest.raises(OverrideParseException):  # what the shell leaves of input='imgs/00000[1-3].png'
        parser.parse_overrides(shlex.split("input='imgs/00000[1-3].png'"))


@pytest.mark.slow
def test_predict_script_with_a_bracket_glob_skips_an_unreadable_image_and_exits_2(
    checkpoint, images, tmp_path
):
    folder = tmp_path / "imgs"
    folder.mkdir()
    for k, name in enumerate(("a.png", "c.png"), start=1):
        (folder / f"00000{k}.png").write_bytes((images / name).read_bytes())
    (folder / "000003.png").write_bytes(b"not a png")
    (folder / "000004.png").write_bytes((images / "a.png").read_bytes())  # outside the glob
    proc = run_script(
        "predict.py",
        f"ckpt_path={checkpoint}",
        f"input='{folder}/00000[1-3].png'",  # as "input='imgs/00000[1-3].png'" in a shell
        f"output_dir={tmp_path / 'out'}",
        "batch_size=2",
        check=False,
    )
    assert proc.returncode == 2, proc.stderr[-2000:]
    assert f"skipped: {folder / '000003.png'}: cannot read image" in proc.stderr
    assert proc.stderr.strip().splitlines()[-1].startswith("error: 1 of 3 images could not be read")
    result = json.loads((tmp_path / "out" / "predictions.json").read_text())
    assert [i["file_name"] for i in result["images"]] == [
        str(folder / "000001.png"),
        str(folder / "000002.png"),
    ]
