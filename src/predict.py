"""Predict with a trained checkpoint: ``python src/predict.py ckpt_path=RUN/checkpoints/last.ckpt input='imgs/*.jpg'``.

``input``: an image, a folder or a glob. Writes ``predictions.json`` (COCO format with the class score,
predicted MaskIoU and mask score of every detection) and ``overlays/*.png`` into ``output_dir``
(default ``outputs/predict/<date>``). Detections are ranked by mask score (class score x MaskIoU).
Other settings: ``device=cpu``, ``batch_size=8``, ``precision=bf16`` (32 | bf16 | 16), ``max_dets=100``,
``min_mask_score=0.2``, ``score_threshold=0.3`` (class score), ``sort_by=class_score``, ``soft_nms=true``,
``render=false``, ``render_min_score=0.3`` (``conf/predict.yaml``; every key and its default:
``msrcnn.app.schemas.PredictConfig``, derived from ``msrcnn.Predictor``).
Unreadable images are skipped and listed; the run then exits with status 2.
"""

import hydra
from omegaconf import DictConfig

from msrcnn.app.errors import report_user_errors, run_cli
from msrcnn.app.predict import predict
from msrcnn.app.schemas import PredictConfig


@hydra.main(version_base="1.3", config_path="../conf", config_name="predict")
@report_user_errors
def main(cfg: DictConfig) -> None:
    predict(cfg)


if __name__ == "__main__":
    run_cli(main, PredictConfig)  # Hydra's errors too as one line, exit 2
