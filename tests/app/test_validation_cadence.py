"""experiment=custom_gpu validates on a time cadence, not after every (possibly 8-step) epoch."""

from hydra import compose, initialize_config_dir
from hydra.utils import instantiate

from msrcnn.app.schemas import validate
from msrcnn_testing import CONF


def test_custom_gpu_validates_every_ten_minutes_whatever_the_epoch_length():
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        cfg = compose(
            "train",
            overrides=[
                "experiment=custom_gpu",
                "trainer.accelerator=cpu",
                "logger=none",
                "paths.output_dir=/tmp/msrcnn-cadence",
                *(f"data.{s}.{k}=/x/{k}" for s in ("train", "val") for k in ("ann_file", "img_dir")),
            ],
        )
    cfg = validate(cfg)
    assert cfg.trainer.check_val_every_n_epoch is None
    trainer = instantiate(cfg.trainer, logger=False, callbacks=[], _convert_="all")
    assert trainer.check_val_every_n_epoch is None
    assert trainer._val_check_time_interval == 600.0  # Lightning's parsed "00:00:10:00"
