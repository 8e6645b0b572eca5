"""Evaluate a checkpoint: ``python src/eval.py ckpt_path=RUN/checkpoints/last.ckpt [data=...] [split=test]``.

Writes results.json (annotated splits) and detections_{bbox,segm}.json into the run directory.
"""

import os

# libgomp's threads spin-wait for each other; on a small CPU shared with another busy process the
# default makes every op wait on a descheduled thread (many times slower steps; benchmarks/README.md).
# A bounded spin keeps the idle speed and degrades gracefully. Set it yourself to override.
os.environ.setdefault("GOMP_SPINCOUNT", "200000")

import hydra  # noqa: E402
from omegaconf import DictConfig  # noqa: E402

from msrcnn.app.errors import report_user_errors  # noqa: E402
from msrcnn.app.evaluate import evaluate  # noqa: E402


@hydra.main(version_base="1.3", config_path="../conf", config_name="evaluate")
@report_user_errors
def main(cfg: DictConfig) -> None:
    evaluate(cfg)


if __name__ == "__main__":
    main()
