"""Export a trained checkpoint: ``python src/export.py ckpt_path=RUN/checkpoints/last.ckpt [format=onnx]``.

Writes an ONNX file (default: next to the checkpoint, ``last.onnx``) that ONNX Runtime runs on one
``float32 [3, H, W]`` RGB image in [0, 1], giving boxes, labels, class scores, masks, MaskIoU and mask
scores (``msrcnn/inference/export.py``), and checks it against the eager model. Other settings: ``output=PATH``,
``image=a.jpg`` (the image to trace and check with), ``opset=17``, ``check=false``.
"""

import hydra
from hydra.core.config_store import ConfigStore
from omegaconf import DictConfig, OmegaConf

from msrcnn.app.errors import report_user_errors  # importing msrcnn.app bounds GOMP_SPINCOUNT first
from msrcnn.app.export import export
from msrcnn.config.schema import ExportAppConfig

# The schema's fields with their defaults; Hydra's own files (config, log) go to outputs/export/<date>.
_DEFAULTS = OmegaConf.to_container(OmegaConf.structured(ExportAppConfig))
_DEFAULTS["hydra"] = {"run": {"dir": "outputs/export/${now:%Y-%m-%d_%H-%M-%S}"}, "job": {"chdir": False}}
ConfigStore.instance().store(name="export", node=_DEFAULTS)


@hydra.main(version_base="1.3", config_path=None, config_name="export")
@report_user_errors
def main(cfg: DictConfig) -> None:
    export(cfg)


if __name__ == "__main__":
    main()
