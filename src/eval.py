"""Evaluate a checkpoint: ``python src/eval.py ckpt_path=RUN/checkpoints/last.ckpt [data=...] [split=test]``.

Writes results.json (annotated splits) and detections_{bbox,segm}.json into the run directory.
"""

import hydra
from omegaconf import DictConfig

from msrcnn.app.errors import report_user_errors, run_cli
from msrcnn.app.evaluate import evaluate
from msrcnn.app.schemas import EvalAppConfig


@hydra.main(version_base="1.3", config_path="../conf", config_name="evaluate")
@report_user_errors
def main(cfg: DictConfig) -> None:
    evaluate(cfg)


if __name__ == "__main__":
    run_cli(main, EvalAppConfig)  # Hydra's errors too as one line, exit 2
