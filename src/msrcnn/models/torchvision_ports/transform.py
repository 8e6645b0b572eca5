"""``MaskScoringTransform``: torchvision's ``GeneralizedRCNNTransform`` with a choice of mask output.

Pre-processing (normalisation, resizing, batching) is torchvision's, with one exception: a training
target marked ``at_input_size`` (the data pipeline already resized image, boxes and masks to the
model's input size with torchvision's rule, see :class:`msrcnn.data.ResizeToInput`) is not resized
again, so full-resolution masks never reach the model. ``postprocess``
scales the boxes back to the original image as torchvision does, then, by ``mask_output``:

* ``"image"`` (torchvision's format): ``masks`` ``[K, 1, H, W]`` probabilities pasted into the
  original image, with torchvision's paste or, with ``fast_paste=True``, with
  :func:`msrcnn.ops.paste.paste_masks_in_image` (bit-identical, one output allocation instead of a
  canvas per detection);
* ``"roi"``: no paste; ``roi_masks`` ``[K, 1, M, M]`` are the mask probabilities in box coordinates
  (the mask head's output for each detection's class) and ``image_size`` the original ``(H, W)``.
  This is what the COCO evaluation consumes (``msrcnn.evaluation.encode_roi_masks`` gives the RLEs
  of the pasted masks, bit for bit, without building them): at 100 detections the pasted masks are
  100 x H x W floats per image, most of the inference's memory traffic.
"""

from __future__ import annotations

from typing import Literal

import torch
import torchvision
from torch import Tensor
from torchvision.models.detection.roi_heads import paste_masks_in_image as tv_paste_masks_in_image
from torchvision.models.detection.transform import GeneralizedRCNNTransform, resize_keypoints
from torchvision.models.detection.transform import resize_boxes as tv_resize_boxes

from msrcnn.ops.mask_crops import MaskCrops
from msrcnn.ops.paste import paste_masks_in_image

__all__ = ["MASK_OUTPUTS", "MaskOutput", "MaskScoringTransform"]

MaskOutput = Literal["image", "roi"]
MASK_OUTPUTS: tuple[str, ...] = ("image", "roi")


class MaskScoringTransform(GeneralizedRCNNTransform):
    """``GeneralizedRCNNTransform`` whose ``postprocess`` returns pasted or box-local masks."""

    def __init__(self, *args, fast_paste: bool = False, mask_output: MaskOutput = "image", **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.fast_paste = fast_paste
        self.mask_output = mask_output

    @property
    def mask_output(self) -> MaskOutput:
        return self._mask_output

    @mask_output.setter
    def mask_output(self, value: MaskOutput) -> None:
        if value not in MASK_OUTPUTS:
            raise ValueError(f"mask_output must be one of {MASK_OUTPUTS}, got {value!r}")
        self._mask_output = value

    @classmethod
    def from_transform(
        cls,
        transform: GeneralizedRCNNTransform,
        *,
        fast_paste: bool = False,
        mask_output: MaskOutput = "image",
    ) -> MaskScoringTransform:
        """The same transform (sizes, mean/std, divisibility) with the chosen mask output.

        torchvision's private ``_skip_resize`` flag is not carried over: training targets marked
        ``at_input_size`` are this transform's way of skipping the resize (see :meth:`resize`)."""
        return cls(
            transform.min_size,
            transform.max_size,
            transform.image_mean,
            transform.image_std,
            size_divisible=transform.size_divisible,
            fixed_size=transform.fixed_size,
            fast_paste=fast_paste,
            mask_output=mask_output,
        )

    def normalize(self, image: Tensor) -> Tensor:
        """torchvision's normalisation, with the mean and std passed to the kernels as Python numbers
        (torchvision copies them to the device for every image, a blocking copy on a GPU)."""
        if not image.is_floating_point():
            raise TypeError(
                f"Expected input images to be of floating type (in range [0, 1]), but found type {image.dtype} instead"
            )
        if image.dim() != 3 or image.shape[0] != len(self.image_mean):
            return super().normalize(image)
        # per channel: the same float arithmetic as torchvision's broadcast of [C, 1, 1] tensors
        channels = [(c - m) / s for c, m, s in zip(image.unbind(0), self.image_mean, self.image_std)]
        return torch.stack(channels)

    def resize(
        self, image: Tensor, target: dict[str, Tensor] | None = None
    ) -> tuple[Tensor, dict[str, Tensor] | None]:
        """torchvision's resize, except for training targets marked ``at_input_size``: kept as they are.
        Masks given as :class:`~msrcnn.ops.mask_crops.MaskCrops` are expanded first, on their device."""
        if target is not None and isinstance(target.get("masks"), MaskCrops):
            target = {**target, "masks": target["masks"].dense()}
        if self.training and target is not None and _at_input_size(target):
            return image, target
        return super().resize(image, target)

    def postprocess(
        self,
        result: list[dict[str, Tensor]],
        image_shapes: list[tuple[int, int]],
        original_image_sizes: list[tuple[int, int]],
    ) -> list[dict[str, Tensor]]:
        if self.training:
            return result
        # while tracing (ONNX export) torchvision's own functions, which it keeps traceable: the
        # fast paths read sizes and box corners on the host, which a trace would freeze
        tracing = torchvision._is_tracing()
        paste = paste_masks_in_image if self.fast_paste and not tracing else tv_paste_masks_in_image
        scale_boxes = tv_resize_boxes if tracing else resize_boxes
        for pred, im_s, o_im_s in zip(result, image_shapes, original_image_sizes):
            pred["boxes"] = scale_boxes(pred["boxes"], im_s, o_im_s)
            if "masks" in pred:
                if self.mask_output == "roi":
                    pred["roi_masks"] = pred.pop("masks")
                    pred["image_size"] = (int(o_im_s[0]), int(o_im_s[1]))
                else:
                    pred["masks"] = paste(pred["masks"], pred["boxes"], o_im_s)
            if "keypoints" in pred:
                pred["keypoints"] = resize_keypoints(pred["keypoints"], im_s, o_im_s)
        return result


def resize_boxes(boxes: Tensor, original_size, new_size) -> Tensor:
    """torchvision's ``resize_boxes`` (float32 ratios new / original) with the ratios as Python numbers:
    the same products, without torchvision's two host-to-device copies per call."""
    ratio_h, ratio_w = (
        float(torch.tensor(float(s), dtype=torch.float32) / torch.tensor(float(o), dtype=torch.float32))
        for s, o in zip(new_size, original_size)
    )
    xmin, ymin, xmax, ymax = boxes.unbind(1)
    return torch.stack((xmin * ratio_w, ymin * ratio_h, xmax * ratio_w, ymax * ratio_h), dim=1)


def _at_input_size(target: dict[str, Tensor]) -> bool:
    """Whether the data pipeline marked this target (and its image) as already at the input size."""
    flag = target.get("at_input_size")
    if flag is None:
        return False
    return bool(flag.item()) if isinstance(flag, torch.Tensor) else bool(flag)
