"""RLE masks decoded directly at the model's input size equal full decoding followed by the model's
nearest resize, bit for bit; and the crowded many-instance pipeline gives the targets the old one did."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from pycocotools import mask as mask_utils

from msrcnn.data import CocoInstanceDataset, EncodedMasks, ResizeToInput
from msrcnn.data.masks import nearest_source_indices, rle_runs
from msrcnn.data.rle import rle_string_counts
from msrcnn.models.torchvision_ports.transform import MaskScoringTransform
from msrcnn.testing.crowded import generate_crowded


def _random_rles(height: int, width: int, count: int, seed: int = 0) -> list[dict]:
    """Blobs of all sizes, some touching the borders and the first pixel, one empty."""
    rng = np.random.default_rng(seed)
    masks = np.zeros((height, width, count), dtype=np.uint8, order="F")
    yy, xx = np.mgrid[:height, :width]
    for k in range(count - 1):
        cy, cx = rng.uniform(-5, height + 5), rng.uniform(-5, width + 5)
        ry, rx = rng.uniform(0.5, height / 3), rng.uniform(0.5, width / 3)
        masks[:, :, k] = ((yy - cy) / ry) ** 2 + ((xx - cx) / rx) ** 2 <= 1
    masks[0, 0, 0] = 1
    masks[-1, -1, 1] = 1
    return mask_utils.encode(masks)


def test_rle_runs_match_the_string_decoder() -> None:
    rles = _random_rles(37, 53, 12)
    runs, per_string = rle_runs([rle["counts"] for rle in rles])
    expected = [rle_string_counts(rle["counts"].decode("ascii")) for rle in rles]
    assert per_string.tolist() == [len(e) for e in expected]
    assert runs.tolist() == [v for e in expected for v in e]


def test_full_decode_matches_pycocotools() -> None:
    rles = _random_rles(37, 53, 12)
    decoded = EncodedMasks(rles, 37, 53).decode()
    reference = torch.from_numpy(mask_utils.decode(rles).transpose(2, 0, 1).copy())
    assert decoded.dtype == torch.uint8 and torch.equal(decoded, reference)
    # json files hold the counts as str
    as_str = [{"size": rle["size"], "counts": rle["counts"].decode("ascii")} for rle in rles]
    assert torch.equal(EncodedMasks(as_str, 37, 53).decode(), reference)


@pytest.mark.parametrize("size", [(10, 14), (37, 53), (74, 106), (23, 101), (5, 3), (200, 61)])
def test_decoding_at_a_size_equals_nearest_resize(size: tuple[int, int]) -> None:
    rles = _random_rles(37, 53, 12, seed=size[0])
    full = EncodedMasks(rles, 37, 53).decode()
    reference = F.interpolate(full[:, None].float(), size=size, mode="nearest")[:, 0].to(torch.uint8)
    assert torch.equal(EncodedMasks(rles, 37, 53).decode(size), reference)


def test_nearest_indices_and_empty_sets() -> None:
    assert nearest_source_indices(4, 8).tolist() == [0, 0, 1, 1, 2, 2, 3, 3]
    assert nearest_source_indices(10, 4).tolist() == [0, 2, 5, 7]
    assert EncodedMasks([], 30, 50).decode((6, 10)).shape == (0, 6, 10)
    assert EncodedMasks([], 30, 50).area().shape == (0,)


@pytest.fixture(scope="module")
def crowded(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    return generate_crowded(
        tmp_path_factory.mktemp("crowded"),
        num_images=2,
        height=350,
        width=550,
        min_instances=60,
        max_instances=90,
        radius=(4.0, 7.0),
    )


@pytest.mark.parametrize(("min_size", "max_size"), [(160, 160), (160, 1333), (300, 1000), (700, 1100)])
def test_input_size_pipeline_gives_the_models_targets(crowded, min_size: int, max_size: int) -> None:
    """New pipeline (workers resize, model skips) vs the previous one (full-resolution masks, model resizes)."""
    ann_file, img_dir = crowded
    previous = CocoInstanceDataset(ann_file, img_dir)
    current = CocoInstanceDataset(ann_file, img_dir, resize=ResizeToInput([min_size], max_size))
    model_transform = MaskScoringTransform([min_size], max_size, [0.5] * 3, [0.25] * 3).train()
    for index in range(len(previous)):
        full_image, full_target = previous[index]
        assert full_target["masks"].shape[0] > 50
        image, target = current[index]
        assert (
            bool(target["at_input_size"])
            and type(image) is torch.Tensor
            and type(target["boxes"]) is torch.Tensor
        )
        ref_image, ref = model_transform.resize(model_transform.normalize(full_image), dict(full_target))
        got_image, got = model_transform.resize(model_transform.normalize(image), dict(target))
        assert torch.equal(got["boxes"], ref["boxes"])
        assert got["masks"].dtype == torch.uint8 and torch.equal(got["masks"], ref["masks"])
        for key in ("labels", "area", "image_id", "iscrowd", "orig_size"):
            assert torch.equal(got[key], ref[key]), key
        # resizing before normalising instead of after: equal up to float rounding
        assert got_image.shape == ref_image.shape
        assert torch.allclose(got_image, ref_image, atol=1e-5)
