"""msrcnn: Mask Scoring R-CNN (Huang et al., CVPR 2019) on torchvision, Lightning and Hydra."""

__version__ = "0.1.0"
