"""src/export.py and msrcnn.inference.export: a checkpoint as an ONNX file that ONNX Runtime runs like the eager model."""

import json

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch
from omegaconf import OmegaConf
from PIL import Image

from msrcnn.app.export import export
from msrcnn.config import ConfigError
from msrcnn.data import SHAPES_CATEGORIES
from msrcnn.inference.export import OUTPUTS, export_onnx
from msrcnn.models import load_model
from msrcnn.testing.gpu_paths import gpu_paths
from msrcnn_testing import run_script, untrained_checkpoint

CLASS_NAMES = [name for _, name in SHAPES_CATEGORIES]


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    """A TINY model (Soft-NMS at test time, as the demo) saved like src/train.py's checkpoints; its MaskIoU
    head's last layer set so that the predicted MaskIoU varies inside (0, 1) (an untrained head clamps to 0)."""

    def vary_maskiou(model):
        last = [m for m in model.roi_heads.maskiou_head.modules() if isinstance(m, torch.nn.Linear)][-1]
        with torch.no_grad():
            last.bias.fill_(0.5)
            last.weight.mul_(0.3)

    return untrained_checkpoint(tmp_path_factory.mktemp("ckpt"), prepare=vary_maskiou)


def images():
    g = torch.Generator().manual_seed(3)
    return [torch.rand(3, 64, 80, generator=g), torch.rand(3, 72, 48, generator=g) * 0.5]


def run_onnx(path, image):
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    names = [o.name for o in session.get_outputs()]
    return dict(zip(names, session.run(None, {"image": image.numpy()})))


def set_threshold_between_images(model):
    """A score threshold in the widest gap between the two images' middle scores: fewer than 100
    detections, a different count per image, and no score within float rounding of the threshold."""
    first, second = images()
    with torch.inference_mode():
        scores = torch.cat([model([image])[0]["scores"] for image in (first, second)]).sort().values
    middle = scores[len(scores) // 4 : 3 * len(scores) // 4]
    k = int(torch.argmax(middle[1:] - middle[:-1]))
    model.roi_heads.score_thresh = float(middle[k] + middle[k + 1]) / 2


def assert_onnx_runtime_gives_the_eager_outputs(path, model):
    """On both images: ONNX Runtime's outputs equal the eager model's, and their counts differ."""
    counts = []
    for image in images():
        got = run_onnx(path, image)
        with torch.inference_mode():
            expected = {k: v.numpy() for k, v in model([image])[0].items()}
        assert list(got) == list(OUTPUTS)
        counts.append(len(got["boxes"]))
        for name in OUTPUTS:
            assert got[name].shape == expected[name].shape, name
        assert np.array_equal(got["labels"], expected["labels"])
        np.testing.assert_allclose(got["boxes"], expected["boxes"], atol=2e-3)
        np.testing.assert_allclose(got["masks"], expected["masks"], atol=1e-4)
        np.testing.assert_allclose(got["scores"], expected["scores"], atol=1e-5)
        np.testing.assert_allclose(got["mask_ious"], expected["mask_ious"], atol=1e-5)
        np.testing.assert_allclose(got["mask_scores"], expected["mask_scores"], atol=1e-5)
        ious = expected["mask_ious"]
        assert len(ious) and 0.05 < ious.min() and ious.max() < 0.95 and np.unique(ious).size > 1
    assert counts[0] != counts[1] and min(counts) > 0  # the count is not frozen at the trace's


def test_onnx_runtime_gives_the_eager_models_boxes_masks_maskiou_and_mask_scores(checkpoint, tmp_path):
    model = load_model(checkpoint, soft_nms=False)
    set_threshold_between_images(model)
    path = export_onnx(model, tmp_path / "model.onnx", example_image=images()[1])  # traced on the other image
    assert_onnx_runtime_gives_the_eager_outputs(path, model)
    meta = {p.key: p.value for p in onnx.load(str(path)).metadata_props}
    assert json.loads(meta["class_names"]) == CLASS_NAMES
    assert json.loads(meta["category_ids"]) == [i for i, _ in SHAPES_CATEGORIES]
    with pytest.raises(ValueError, match="Soft-NMS does not export"):
        export_onnx(load_model(checkpoint), tmp_path / "soft.onnx")
    assert not (tmp_path / "soft.onnx").exists()


def test_an_export_with_the_gpu_paths_on_traces_torchvisions_code(checkpoint, tmp_path):
    """A model on a GPU exports with the GPU code paths on (msrcnn.ops.gpu_paths): while tracing they
    give way to torchvision's traceable code, so the file still matches the eager model (GPU paths on)."""
    model = load_model(checkpoint, soft_nms=False)
    with gpu_paths():
        set_threshold_between_images(model)
        path = export_onnx(model, tmp_path / "model.onnx", example_image=images()[1])
        assert_onnx_runtime_gives_the_eager_outputs(path, model)


def test_export_script_writes_and_checks_the_file(checkpoint, tmp_path):
    image = tmp_path / "a.png"
    Image.fromarray((images()[0].permute(1, 2, 0).numpy() * 255).astype(np.uint8)).save(image)
    out = tmp_path / "deploy" / "tiny.onnx"
    proc = run_script(
        "export.py",
        f"ckpt_path={checkpoint}",
        "format=onnx",
        f"output={out}",
        f"image={image}",
        f"hydra.run.dir={tmp_path / 'run'}",
    )
    assert f"onnx: {out}" in proc.stdout and "uses plain NMS" in proc.stdout
    assert "check (ONNX Runtime vs PyTorch, " in proc.stdout
    eager = load_model(checkpoint, soft_nms=False)
    pixels = torch.from_numpy(np.array(Image.open(image))).permute(2, 0, 1).float() / 255
    got = run_onnx(out, pixels)
    with torch.inference_mode():
        expected = eager([pixels])[0]
    np.testing.assert_allclose(got["mask_scores"], expected["mask_scores"].numpy(), atol=1e-5)


def test_export_refuses_an_unknown_format_in_one_line(checkpoint, tmp_path):
    cfg = OmegaConf.create({"ckpt_path": str(checkpoint), "format": "tflite"})
    with pytest.raises(ConfigError, match="format=tflite is not valid; expected one of onnx"):
        export(cfg)
