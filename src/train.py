"""Train Mask Scoring R-CNN: ``python src/train.py [group=option ...] [key=value ...]``.

Examples::

    python src/train.py experiment=demo                      # the CPU demo on synthetic shapes
    python src/train.py backbone=r18_fpn head.input=concat   # configs under conf/, schema-checked
    python src/train.py -m experiment=demo head.input=concat,multiply,concat_all,concat_highres
"""

import hydra
from omegaconf import DictConfig

from msrcnn.app.errors import report_user_errors, run_cli
from msrcnn.app.schemas import Config
from msrcnn.app.train import train


@hydra.main(version_base="1.3", config_path="../conf", config_name="train")
@report_user_errors
def main(cfg: DictConfig) -> float | None:
    results = train(cfg)
    segm = (results or {}).get("segm") or {}
    return segm.get("AP")  # the value Hydra sweepers optimise


if __name__ == "__main__":
    run_cli(main, Config)  # Hydra's errors too as one line, exit 2
