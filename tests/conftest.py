"""Session fixtures shared by every test folder (helpers live in ``msrcnn_testing``)."""

from pathlib import Path

import pytest

import msrcnn.app.schemas  # noqa: F401 - registers the schemas conf/ composes onto (ConfigStore)


@pytest.fixture(scope="session")
def shapes_dir(tmp_path_factory) -> Path:
    """One data directory for every test that generates the tiny shapes dataset."""
    return tmp_path_factory.mktemp("data")
