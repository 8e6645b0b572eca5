"""TF32 on CUDA for float32 matmuls and convolutions: the ``float32_matmul_precision`` key of the apps."""

from __future__ import annotations

import torch

FLOAT32_MATMUL_PRECISIONS = ("highest", "high", "medium")


def set_float32_matmul_precision(precision: str) -> None:
    """``torch.set_float32_matmul_precision(precision)`` on CUDA, and cuDNN's TF32 convolutions with it.

    ``high`` (the apps' default) and ``medium`` let float32 matmuls and convolutions run on TF32 tensor
    cores (10-bit mantissa products, float32 accumulation), several times faster on Ampere and later
    GPUs; ``highest`` keeps full float32. No effect without CUDA.
    """
    if precision not in FLOAT32_MATMUL_PRECISIONS:
        raise ValueError(
            f"float32_matmul_precision={precision!r} is not valid; expected one of {', '.join(FLOAT32_MATMUL_PRECISIONS)}"
        )
    if not torch.cuda.is_available():
        return
    torch.set_float32_matmul_precision(precision)
    torch.backends.cudnn.allow_tf32 = precision != "highest"
