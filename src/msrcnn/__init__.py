"""msrcnn: Mask Scoring R-CNN (Huang et al., CVPR 2019) on torchvision, Lightning and Hydra."""

__version__ = "0.1.0"

__all__ = ["Prediction", "Predictor", "__version__"]


def __getattr__(name: str):
    """``msrcnn.Predictor`` and ``msrcnn.Prediction`` are imported on first use (``import msrcnn`` stays light)."""
    if name in ("Predictor", "Prediction"):
        from msrcnn import inference

        return getattr(inference, name)
    raise AttributeError(f"module 'msrcnn' has no attribute {name!r}")
