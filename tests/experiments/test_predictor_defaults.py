"""``msrcnn.Predictor``'s defaults and the arguments the other tests leave at them: ``device="auto"``,
``batch_size > 1`` and ``mask_threshold``."""

import inspect

import numpy as np
import pytest
import torch

from msrcnn import Predictor
from msrcnn_testing import untrained_checkpoint


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    """An untrained TINY model saved as src/train.py saves it (no training; it still detects)."""
    return untrained_checkpoint(tmp_path_factory.mktemp("ckpt"))


@pytest.fixture(scope="module")
def images():
    rng = np.random.default_rng(0)
    return [rng.integers(0, 255, (64, 64, 3), dtype=np.uint8) for _ in range(3)]  # one size: no padding


def test_device_auto_is_the_default_and_picks_cuda_only_when_there_is_one(checkpoint, monkeypatch):
    assert inspect.signature(Predictor).parameters["device"].default == "auto"
    expected = "cuda" if torch.cuda.is_available() else "cpu"
    predictor = Predictor(checkpoint)
    assert predictor.device.type == expected
    assert next(predictor.model.parameters()).device.type == expected
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    predictor = Predictor(checkpoint)
    assert predictor.device == torch.device("cpu")
    assert next(predictor.model.parameters()).device == torch.device("cpu")


def test_batches_of_several_images_give_the_one_by_one_results(checkpoint, images):
    one = Predictor(checkpoint, device="cpu", batch_size=1)
    two = Predictor(checkpoint, device="cpu", batch_size=2)
    assert inspect.signature(Predictor).parameters["batch_size"].default == 1
    single, batched = one(images), two(images)
    assert len(batched) == 3 and sum(len(p) for p in single) > 0
    for a, b in zip(single, batched, strict=True):
        assert a.image_size == b.image_size and a.class_names == b.class_names
        np.testing.assert_allclose(a.boxes, b.boxes, atol=1e-3)
        np.testing.assert_allclose(a.mask_scores, b.mask_scores, atol=1e-5)
        assert (a.masks != b.masks).mean() < 1e-3
    ids = [record.image_id for record, _ in two.records(images, first_image_id=5)]
    assert ids == [5, 6, 7]


def test_mask_threshold_sets_where_a_mask_pixel_is_on(checkpoint, images):
    assert inspect.signature(Predictor).parameters["mask_threshold"].default == 0.5
    masks = {
        t: Predictor(checkpoint, device="cpu", mask_threshold=t)(images[:1])[0].masks for t in (0.2, 0.5, 0.8)
    }
    assert masks[0.2].shape == masks[0.5].shape == masks[0.8].shape and len(masks[0.5]) > 0
    assert np.all(masks[0.8] <= masks[0.5]) and np.all(masks[0.5] <= masks[0.2])  # nested
    assert masks[0.8].sum() < masks[0.5].sum() < masks[0.2].sum()
