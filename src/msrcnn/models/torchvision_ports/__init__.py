"""What msrcnn adapts from torchvision's internals, and the torchvision versions it is tested with.

Each port subclasses (or copies part of) a torchvision detection component to cut the host syncs
of a GPU run (the host waiting for the device, see :mod:`msrcnn.ops.gpu_paths`) or to add an option;
its results are torchvision's. Several build on torchvision's private modules, so a torchvision
release may change what they adapt: ``tests/models/test_torchvision_parity.py`` compares every
port with the installed torchvision's original, on the CPU and with the GPU variants forced.

The ports (module here -> torchvision original: what differs, and why):

* :mod:`.box_coder` ``BoxCoder`` -> ``torchvision.models.detection._utils.BoxCoder``
  (``encode_single``, ``decode_single``): the weights and 0.5 stay Python numbers instead of
  tensors built on the device (a blocking host-to-device copy per call on a GPU); the same float32
  arithmetic.
* :mod:`.rpn` ``Matcher`` -> ``torchvision.models.detection._utils.Matcher``
  (``set_low_quality_matches_``): a ``torch.where`` over a mask instead of a ``nonzero`` of the IoU
  matrix (no host sync); the same matches.
* :mod:`.rpn` ``RegionProposalNetwork`` -> ``torchvision.models.detection.rpn.RegionProposalNetwork``
  (``filter_proposals``): on the GPU path the images are filtered together (one ``nonzero``, one
  batched NMS, one read of the counts) instead of a ``nonzero`` per filter and an NMS per image and
  level; the same proposals and scores. Uses torchvision's ``_get_top_n_idx``.
* :mod:`.transform` ``MaskScoringTransform`` ->
  ``torchvision.models.detection.transform.GeneralizedRCNNTransform`` (``normalize``, ``resize``,
  ``postprocess``): mean and std as Python numbers; targets marked ``at_input_size`` are not resized
  again; ``postprocess`` pastes with :func:`msrcnn.ops.paste.paste_masks_in_image` (``fast_paste``) or
  returns box-local masks (``mask_output="roi"``); its ``resize_boxes`` is
  ``torchvision.models.detection.transform.resize_boxes`` with Python-number ratios.
* :mod:`.poolers` ``MultiScaleRoIAlign`` -> ``torchvision.ops.poolers.MultiScaleRoIAlign``
  (``forward``, ``_infer_scale``; uses ``torchvision.ops.poolers.LevelMapper``): on the GPU path the
  RoIs are sorted by level and the per-level counts read once instead of a ``torch.where`` per
  level; the same ``roi_align`` calls, so the same output.

Copies that stay elsewhere (next to what they serve):

* :mod:`msrcnn.models.roi_heads`: ``MaskScoringRoIHeads.forward`` (torchvision's
  ``RoIHeads.forward``, box and mask branches, plus the MaskIoU branch) and
  ``postprocess_detections`` (torchvision's ``RoIHeads.postprocess_detections`` with Soft-NMS as an
  option and, on the GPU path, one ``nonzero`` for both filters).
* :mod:`msrcnn.models.mask_scoring_rcnn`: ``MaskScoringRCNN.forward`` (torchvision's
  ``GeneralizedRCNN.forward`` with one check of the target boxes for the whole batch).
* :mod:`msrcnn.ops.paste`: torchvision's paste geometry, with its private
  ``torchvision.models.detection.roi_heads.expand_boxes`` and ``expand_masks``.
* :mod:`msrcnn.data.transforms`: ``GeneralizedRCNNTransform``'s resize rule, applied in the data
  pipeline (``ResizeToInput``).

The tested torchvision range is pyproject.toml's requirement, read from msrcnn's installed metadata
(:func:`torchvision_range`). Importing :mod:`msrcnn.models` with a torchvision outside it fails in one
line (:class:`TorchvisionVersionError`); ``MSRCNN_UNTESTED_TORCHVISION=1`` turns that into one warning.
"""

from __future__ import annotations

import importlib.metadata
import os
import re
import warnings

import torchvision

__all__ = [
    "UNTESTED_TORCHVISION_ENV",
    "TorchvisionVersionError",
    "UntestedTorchvisionWarning",
    "check_torchvision",
    "torchvision_range",
]

UNTESTED_TORCHVISION_ENV = "MSRCNN_UNTESTED_TORCHVISION"

_COMPARE = {
    ">=": lambda a, b: a >= b,
    ">": lambda a, b: a > b,
    "<=": lambda a, b: a <= b,
    "<": lambda a, b: a < b,
    "==": lambda a, b: a == b,
    "!=": lambda a, b: a != b,
}
_SPECIFIER = re.compile(r"\s*(>=|<=|==|!=|>|<)\s*(\d+(?:\.\d+)*)\s*")
_REQUIREMENT = re.compile(r"torchvision\s*\(?([^;()]*)\)?\s*")


class TorchvisionVersionError(ImportError):
    """The installed torchvision is outside the range msrcnn's torchvision ports are tested with."""


class UntestedTorchvisionWarning(UserWarning):
    """The installed torchvision is outside the tested range and ``MSRCNN_UNTESTED_TORCHVISION=1`` is set."""


def torchvision_range() -> str | None:
    """The torchvision requirement of msrcnn's installed metadata (pyproject.toml's ``dependencies``),
    lower bound first, e.g. ``">=0.29.2,<0.30"``; ``None`` when msrcnn is not installed (a source tree
    on ``sys.path``) or its requirement has no version bounds: then nothing is checked."""
    try:
        requirements = importlib.metadata.requires("msrcnn") or []
    except importlib.metadata.PackageNotFoundError:
        return None
    for requirement in requirements:
        match = _REQUIREMENT.fullmatch(requirement)
        if match is None:
            continue
        parts = [p for p in match.group(1).split(",") if p.strip()]
        specifiers = [_SPECIFIER.fullmatch(p) for p in parts]
        if not specifiers or not all(specifiers):
            return None
        lower_first = sorted(specifiers, key=lambda s: not s.group(1).startswith(">"))
        return ",".join(s.group(1) + s.group(2) for s in lower_first)
    return None


def _release(version: str) -> tuple[int, ...]:
    """The release numbers of a version (``"0.29.2+cu132"`` -> ``(0, 29, 2)``)."""
    match = re.match(r"\d+(?:\.\d+)*", version)
    return tuple(int(n) for n in match.group(0).split(".")) if match else ()


def _satisfies(version: str, specifiers: str) -> bool:
    installed = _release(version)
    for specifier in specifiers.split(","):
        op, bound = _SPECIFIER.fullmatch(specifier).groups()
        other = _release(bound)
        width = max(len(installed), len(other))
        padded = (installed + (0,) * width)[:width], (other + (0,) * width)[:width]
        if not _COMPARE[op](*padded):
            return False
    return True


def check_torchvision() -> None:
    """Raises :class:`TorchvisionVersionError` (one line) when the installed torchvision is outside
    :func:`torchvision_range`; with ``MSRCNN_UNTESTED_TORCHVISION=1`` warns once instead."""
    specifiers = torchvision_range()
    installed = torchvision.__version__
    if specifiers is None or _satisfies(installed, specifiers):
        return
    problem = (
        f"torchvision {installed} is outside the range msrcnn is tested with (torchvision{specifiers}): "
        "the torchvision internals it adapts (msrcnn.models.torchvision_ports) may differ"
    )
    if os.environ.get(UNTESTED_TORCHVISION_ENV) == "1":
        warnings.warn(
            f"{problem}; running anyway ({UNTESTED_TORCHVISION_ENV}=1)",
            UntestedTorchvisionWarning,
            stacklevel=2,
        )
        return
    raise TorchvisionVersionError(
        f'{problem}; pip install "torchvision{specifiers}" (or set {UNTESTED_TORCHVISION_ENV}=1 to run anyway)'
    )


check_torchvision()
