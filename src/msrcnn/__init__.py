"""msrcnn: Mask Scoring R-CNN (Huang et al., CVPR 2019) on torchvision, Lightning and Hydra."""

__version__ = "0.1.0"

__all__ = ["Predictor", "__version__"]


def __getattr__(name: str):
    """``msrcnn.Predictor`` is imported on first use (``import msrcnn`` stays light)."""
    if name == "Predictor":
        from msrcnn.predictor import Predictor

        return Predictor
    raise AttributeError(f"module 'msrcnn' has no attribute {name!r}")
