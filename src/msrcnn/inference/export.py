"""A trained Mask Scoring R-CNN as an ONNX file that ONNX Runtime runs (``src/export.py``).

The graph is traced by ``torch.onnx.export`` (its TorchScript-based exporter, the one torchvision's
detection models are tested with) and takes one image:

* input ``image``: ``float32 [3, H, W]``, RGB in [0, 1], any ``H`` and ``W`` (the graph resizes and
  normalises as the model does);
* outputs, one row per detection: ``boxes`` ``float32 [N, 4]`` (x0, y0, x1, y1 in the input's
  pixels), ``labels`` ``int64 [N]`` (model labels 1..K), ``scores`` (class scores), ``masks``
  ``float32 [N, 1, H, W]`` (mask probabilities; a pixel is on above 0.5), ``mask_ious`` (predicted
  MaskIoU) and ``mask_scores`` (class score x MaskIoU); a plain Mask R-CNN has no ``mask_ious``.
  Detections come in the model's order (class score); sort by ``mask_scores`` to rank them as the
  paper does.

The file's metadata (``metadata_props``) holds ``class_names`` and ``category_ids`` (JSON lists, of
labels 1..K) and ``outputs``. Soft-NMS (a sequential loop) does not trace: the exported graph uses
plain NMS. Needs the ``export`` extra (``onnx``, ``onnxruntime``). Nothing here needs Lightning or Hydra.
"""

from __future__ import annotations

import io
import json
import os
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from msrcnn.atomic import atomic_open
from msrcnn.models import MaskScoringRCNN

__all__ = ["FORMATS", "OUTPUTS", "compare_with_eager", "export_onnx", "onnx_session"]

# The export formats src/export.py writes (format=...).
FORMATS = ("onnx",)
OUTPUTS = ("boxes", "labels", "scores", "masks", "mask_ious", "mask_scores")


class _OneImage(nn.Module):
    """The detector on one ``[3, H, W]`` image, its outputs as a tuple (what the ONNX graph returns)."""

    def __init__(self, model: MaskScoringRCNN, outputs: tuple[str, ...]) -> None:
        super().__init__()
        self.model = model
        self.outputs = outputs

    def forward(self, image: torch.Tensor) -> tuple[torch.Tensor, ...]:
        result = self.model([image])[0]
        return tuple(result[name] for name in self.outputs)


def _require(module: str):
    try:
        return __import__(module)
    except ImportError:
        raise ImportError(
            f"ONNX export needs the {module} package: install the export extra "
            "(uv sync --extra export, or pip install 'msrcnn[export]')"
        ) from None


def model_outputs(model: MaskScoringRCNN) -> tuple[str, ...]:
    """The graph's output names: :data:`OUTPUTS` (without ``mask_ious`` for a plain Mask R-CNN)."""
    return OUTPUTS if model.has_maskiou else tuple(n for n in OUTPUTS if n != "mask_ious")


def export_onnx(
    model: MaskScoringRCNN,
    path: str | os.PathLike,
    example_image: torch.Tensor | None = None,
    opset: int = 17,
) -> Path:
    """Writes ``model`` (on the CPU, float32, plain NMS) to ``path`` as ONNX, atomically.

    ``example_image`` (``[3, H, W]``) is what the trace runs on; the graph works for any size. By
    default a random image of the model's input size.
    """
    onnx = _require("onnx")
    if model.roi_heads.soft_nms.enabled:
        raise ValueError("Soft-NMS does not export (a sequential loop): load the model with soft_nms=False")
    if model.mask_output != "image":
        raise ValueError(
            f"export needs mask_output='image' (masks pasted in the image), not {model.mask_output!r}"
        )
    model = model.eval().cpu().float()
    outputs = model_outputs(model)
    if example_image is None:
        side = int(model.transform.min_size[-1])
        example_image = torch.rand(3, side, side, generator=torch.Generator().manual_seed(0))
    buffer = io.BytesIO()
    with warnings.catch_warnings():  # the tracer's warnings about Python values are expected, and many
        warnings.simplefilter("ignore")
        torch.onnx.export(
            _OneImage(model, outputs).eval(),
            (example_image.float(),),
            buffer,
            opset_version=opset,
            dynamo=False,
            input_names=["image"],
            output_names=list(outputs),
            dynamic_axes={"image": {1: "height", 2: "width"}, **{n: {0: "detections"} for n in outputs}},
        )
    graph = onnx.load_from_string(buffer.getvalue())
    meta = {
        "class_names": json.dumps(list(model.class_names or [])),
        "category_ids": json.dumps([int(i) for i in model.category_ids or []]),
        "outputs": json.dumps(list(outputs)),
        "input": "image: float32 [3, H, W], RGB in [0, 1]",
        "nms": "plain NMS (Soft-NMS does not export)",
    }
    for key, value in meta.items():
        entry = graph.metadata_props.add()
        entry.key, entry.value = key, value
    with atomic_open(path, "wb") as f:
        f.write(graph.SerializeToString())
    return Path(path)


def onnx_session(path: str | os.PathLike):
    """An ONNX Runtime ``InferenceSession`` of an exported file (CPU)."""
    ort = _require("onnxruntime")
    return ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])


def compare_with_eager(
    model: MaskScoringRCNN, path: str | os.PathLike, image: torch.Tensor
) -> dict[str, Any]:
    """Runs the exported file (ONNX Runtime) and ``model`` (eager, float32) on ``image``.

    Returns ``detections`` (eager) and, when both give the same number, the largest absolute
    difference of every output (``max_abs_diff``); ``same_count`` says whether they did.
    """
    session = onnx_session(path)
    names = [o.name for o in session.get_outputs()]
    got = dict(zip(names, session.run(None, {"image": image.float().numpy()})))
    with torch.inference_mode():
        expected = model.eval()([image.float()])[0]
    same = all(got[n].shape == tuple(expected[n].shape) for n in names)
    diffs = {}
    if same:
        for n in names:
            ref = expected[n].float().numpy()
            diffs[n] = float(np.abs(got[n].astype(np.float64) - ref).max()) if ref.size else 0.0
    return {"detections": int(expected["boxes"].shape[0]), "same_count": same, "max_abs_diff": diffs}
