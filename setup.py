"""Builds the compiled parts of msrcnn (everything else is in pyproject.toml): two small C kernels.

* ``msrcnn.ops._soft_nms_cpu``: Soft-NMS on the CPU (``msrcnn.ops.batched_soft_nms``);
* ``msrcnn.evaluation._rle_cpu``: COCO RLE strings of mask crops (``msrcnn.evaluation.encode_roi_masks``).

``make install`` builds them with ``tools/build_kernels.py``; ``pip install .`` builds them too.
Without them the Python code runs its vectorised PyTorch / NumPy paths, which give the same results.
"""

from setuptools import Extension, setup

setup(
    ext_modules=[
        Extension(
            "msrcnn.ops._soft_nms_cpu",
            sources=["src/msrcnn/ops/_soft_nms_cpu.c"],
            # No fused multiply-adds: the IoU must round exactly as torchvision's box_iou does.
            extra_compile_args=["-O3", "-ffp-contract=off"],
        ),
        Extension(
            "msrcnn.evaluation._rle_cpu",
            sources=["src/msrcnn/evaluation/_rle_cpu.c"],
            extra_compile_args=["-O3"],
        ),
    ]
)
