"""Export a trained checkpoint: ``python src/export.py ckpt_path=RUN/checkpoints/last.ckpt [format=onnx]``.

Writes an ONNX file (default: next to the checkpoint, ``last.onnx``) that ONNX Runtime runs on one
``float32 [3, H, W]`` RGB image in [0, 1], giving boxes, labels, class scores, masks, MaskIoU and mask
scores (``msrcnn/inference/export.py``), and checks it against the eager model. Other settings: ``output=PATH``,
``image=a.jpg`` (the image to trace and check with), ``opset=17``, ``check=false`` (``conf/export.yaml``;
every key and its default: ``msrcnn.app.schemas.ExportAppConfig``).
"""

import hydra
from omegaconf import DictConfig

from msrcnn.app.errors import report_user_errors, run_cli
from msrcnn.app.export import export
from msrcnn.app.schemas import ExportAppConfig


@hydra.main(version_base="1.3", config_path="../conf", config_name="export")
@report_user_errors
def main(cfg: DictConfig) -> None:
    export(cfg)


if __name__ == "__main__":
    run_cli(main, ExportAppConfig)  # Hydra's errors too as one line, exit 2
