"""Shared fixtures: the repository paths and a tiny, fast configuration of the demo."""

from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
CONF = ROOT / "conf"

# The demo experiment shrunk to seconds: 64 px images, a handful of steps.
TINY = [
    "experiment=demo",
    "logger=none",
    "data.synthetic.num_train=8",
    "data.synthetic.num_val=4",
    "data.synthetic.image_size=64",
    "data.num_workers=0",
    "data.batch_size=2",
    "data.eval_batch_size=2",
    "model.min_size=[64]",
    "model.max_size=64",
    "trainer.max_steps=2",
    "trainer.enable_progress_bar=false",
    "trainer.enable_model_summary=false",
    "trainer.max_time=null",
]


@pytest.fixture(scope="session")
def shapes_dir(tmp_path_factory) -> Path:
    """One data directory for every test that generates the tiny shapes dataset."""
    return tmp_path_factory.mktemp("data")
