"""Inference on images: :class:`Predictor` (a checkpoint applied to images), its result
:class:`Prediction`, and :mod:`msrcnn.inference.export` (the model as an ONNX file)."""

from msrcnn.inference.prediction import Prediction
from msrcnn.inference.predictor import PRECISIONS, SORT_KEYS, Predictor

__all__ = ["PRECISIONS", "SORT_KEYS", "Prediction", "Predictor"]
