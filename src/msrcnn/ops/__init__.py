"""Detection operators that torchvision does not provide."""

from msrcnn.ops.soft_nms import SOFT_NMS_METHODS, batched_soft_nms, soft_nms

__all__ = ["SOFT_NMS_METHODS", "batched_soft_nms", "soft_nms"]
