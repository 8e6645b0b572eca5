"""Train Mask Scoring R-CNN: ``python src/train.py [group=option ...] [key=value ...]``.

Examples::

    python src/train.py experiment=demo                      # the CPU demo on synthetic shapes
    python src/train.py backbone=r18_fpn head.input=concat   # configs under conf/, schema-checked
    python src/train.py -m experiment=demo head.input=concat,multiply,concat_all,concat_highres
"""

import os

# libgomp's threads spin-wait for each other; on a small CPU shared with another busy process the
# default makes every op wait on a descheduled thread (many times slower steps; benchmarks/README.md).
# A bounded spin keeps the idle speed and degrades gracefully. Set it yourself to override.
os.environ.setdefault("GOMP_SPINCOUNT", "200000")

import hydra  # noqa: E402
from omegaconf import DictConfig  # noqa: E402

from msrcnn.app.errors import report_user_errors  # noqa: E402
from msrcnn.app.train import train  # noqa: E402


@hydra.main(version_base="1.3", config_path="../conf", config_name="train")
@report_user_errors
def main(cfg: DictConfig) -> float | None:
    results = train(cfg)
    segm = (results or {}).get("segm") or {}
    return segm.get("AP")  # the value Hydra sweepers optimise


if __name__ == "__main__":
    main()
