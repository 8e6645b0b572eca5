"""Predict with a trained checkpoint: ``python src/predict.py ckpt_path=RUN/checkpoints/last.ckpt input='imgs/*.jpg'``.

``input``: an image, a folder or a glob. Writes ``predictions.json`` (COCO format with the class score,
predicted MaskIoU and mask score of every detection) and ``overlays/*.png`` into ``output_dir``
(default ``outputs/predict/<date>``). Detections are ranked by mask score (class score x MaskIoU).
Other settings: ``device=cpu``, ``batch_size=8``, ``precision=bf16`` (32 | bf16 | 16), ``max_dets=100``,
``min_mask_score=0.2``, ``score_threshold=0.3`` (class score), ``sort_by=class_score``, ``soft_nms=true``,
``render=false``, ``render_min_score=0.3`` (see ``msrcnn/app/predict.py`` ``PredictConfig``).
Unreadable images are skipped and listed; the run then exits with status 2.
"""

import dataclasses

import hydra
from hydra.core.config_store import ConfigStore
from omegaconf import DictConfig, OmegaConf

from msrcnn.app.errors import report_user_errors, run_cli
from msrcnn.app.predict import PredictConfig, predict

# The schema's fields with their defaults, plus where Hydra puts its own files (the output folder).
_DEFAULTS = OmegaConf.to_container(OmegaConf.structured(PredictConfig))
_DEFAULTS["output_dir"] = "outputs/predict/${now:%Y-%m-%d_%H-%M-%S}"
_DEFAULTS["hydra"] = {"run": {"dir": "${output_dir}"}, "job": {"chdir": False}}
assert {f.name for f in dataclasses.fields(PredictConfig)} <= set(_DEFAULTS)
ConfigStore.instance().store(name="predict", node=_DEFAULTS)


@hydra.main(version_base="1.3", config_path=None, config_name="predict")
@report_user_errors
def main(cfg: DictConfig) -> None:
    predict(cfg)


if __name__ == "__main__":
    run_cli(main, PredictConfig)  # Hydra's errors too as one line, exit 2
