import pytest

from model_testing import synthetic_batch


@pytest.fixture
def batch():
    return synthetic_batch()
