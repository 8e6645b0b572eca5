"""The settings of ``benchmarks/run.py``: one dataclass per section, and the two profiles that fill them.

``full`` is ``make bench``; ``quick`` (``--quick``) is a smoke run on tiny sizes with one repeat, whose
numbers mean nothing. Sizes are ``(height, width)``. ``results.json`` records the profile it ran
(:meth:`Profile.settings`).
"""

from __future__ import annotations

from dataclasses import MISSING, dataclass, fields, is_dataclass
from typing import Any

Size = tuple[int, int]


@dataclass(frozen=True)
class InferenceSettings:
    sizes: list[Size]
    detections: int  # detections per image (box_detections_per_img)
    proposals: int | None  # RPN proposals before and after NMS; None: the model's default


@dataclass(frozen=True)
class TrainStepSettings:
    sizes: list[Size]
    batch: int
    gt: int  # objects per image
    model_kwargs: dict[str, int] | None = None  # build_model overrides (quick: fewer RPN proposals and RoIs)


@dataclass(frozen=True)
class MaskIoUTargetsSettings:
    rois: int
    gt: int  # ground-truth masks
    size: Size
    repeats: int


@dataclass(frozen=True)
class SoftNMSSettings:
    boxes: list[int]  # one figure per number of candidate boxes
    repeats: int


@dataclass(frozen=True)
class PasteSettings:
    masks: int
    size: Size
    repeats: int


@dataclass(frozen=True)
class EvaluationSettings:
    images: int
    size: Size
    detections: int  # per image


@dataclass(frozen=True)
class GPUSettings:
    backbone: str
    size: Size
    detections: int  # per image
    batch: int  # images per training step
    gt: int  # objects per image
    amp_dtypes: list[str]  # autocast dtypes of the training step
    throughput_batches: list[int]
    cpu_smoke: bool  # without CUDA, run on the CPU (a smoke test) instead of reporting the section skipped


@dataclass(frozen=True)
class LoaderSettings:
    images: int  # crowded frames generated
    size: Size  # (short side, long-side cap)
    batches: int


@dataclass(frozen=True)
class HostSyncsSettings:
    backbone: str
    size: Size  # inference
    detections: int
    train_size: Size
    train_batch: int
    train_gt: int  # objects per training image


@dataclass(frozen=True)
class DataLoadingSettings:
    num_train: int  # synthetic shapes images
    image_size: int | None  # None: the demo's
    workers: list[int]  # one loader figure per number of workers
    batches: int  # batches timed per loader
    steps: int  # training steps timed on one cached batch
    fed_steps: int  # training steps fed by the loader


@dataclass(frozen=True)
class Profile:
    repeats: int  # timed repeats per figure (``--repeats`` overrides it)
    warmup: int
    inference: InferenceSettings
    train_step: TrainStepSettings
    maskiou_targets: MaskIoUTargetsSettings
    soft_nms: SoftNMSSettings
    paste: PasteSettings
    evaluation: EvaluationSettings
    gpu: GPUSettings
    loader: LoaderSettings
    host_syncs: HostSyncsSettings
    data_loading: DataLoadingSettings

    def settings(self) -> dict[str, Any]:
        """The profile as ``results.json`` records it: every field, but those left at their default."""
        return _stated(self)


def _stated(settings: Any) -> dict[str, Any]:
    out = {}
    for f in fields(settings):
        value = getattr(settings, f.name)
        if is_dataclass(value):
            value = _stated(value)
        elif f.default is not MISSING and value == f.default:
            continue
        out[f.name] = value
    return out


# fmt: off
PROFILES = {
    "full": Profile(
        repeats=3,
        warmup=1,
        inference=InferenceSettings(sizes=[(384, 384), (600, 1000)], detections=100, proposals=None),
        train_step=TrainStepSettings(sizes=[(384, 384), (600, 1000)], batch=2, gt=10),
        maskiou_targets=MaskIoUTargetsSettings(rois=512, gt=20, size=(800, 1333), repeats=5),
        soft_nms=SoftNMSSettings(boxes=[1000, 2000], repeats=10),
        paste=PasteSettings(masks=100, size=(800, 1333), repeats=5),
        evaluation=EvaluationSettings(images=500, size=(480, 640), detections=100),
        gpu=GPUSettings(
            backbone="r50_fpn", size=(800, 1333), detections=100, batch=2, gt=10,
            amp_dtypes=["bfloat16", "float16"], throughput_batches=[2, 8, 16], cpu_smoke=False,
        ),
        loader=LoaderSettings(images=12, size=(512, 832), batches=12),
        host_syncs=HostSyncsSettings(
            backbone="r50_fpn", size=(800, 1333), detections=100,
            train_size=(512, 832), train_batch=4, train_gt=12,
        ),
        data_loading=DataLoadingSettings(
            num_train=96, image_size=None, workers=[0, 1, 2], batches=20, steps=5, fed_steps=10
        ),
    ),
    "quick": Profile(
        repeats=1,
        warmup=0,
        inference=InferenceSettings(sizes=[(128, 128)], detections=10, proposals=100),
        train_step=TrainStepSettings(
            sizes=[(128, 128)], batch=1, gt=3,
            model_kwargs={
                "rpn_pre_nms_top_n_train": 200, "rpn_post_nms_top_n_train": 200, "box_batch_size_per_image": 64
            },
        ),
        maskiou_targets=MaskIoUTargetsSettings(rois=32, gt=4, size=(128, 160), repeats=1),
        soft_nms=SoftNMSSettings(boxes=[200], repeats=1),
        paste=PasteSettings(masks=10, size=(128, 160), repeats=1),
        evaluation=EvaluationSettings(images=6, size=(96, 128), detections=20),
        gpu=GPUSettings(
            backbone="r18_fpn", size=(128, 128), detections=10, batch=1, gt=3,
            amp_dtypes=["bfloat16"], throughput_batches=[1, 2], cpu_smoke=True,
        ),
        loader=LoaderSettings(images=2, size=(128, 208), batches=2),
        host_syncs=HostSyncsSettings(
            backbone="r18_fpn", size=(128, 192), detections=10,
            train_size=(128, 192), train_batch=2, train_gt=3,
        ),
        data_loading=DataLoadingSettings(
            num_train=8, image_size=64, workers=[0, 1, 2], batches=2, steps=1, fed_steps=2
        ),
    ),
}
# fmt: on
