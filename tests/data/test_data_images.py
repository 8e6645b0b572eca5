"""Image decoding: every common mode becomes [3, H, W] float32 in [0, 1]; EXIF orientation is applied."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from msrcnn.data import CocoInstanceDataset, DataError, read_image
from msrcnn.data.images import to_image_tensor

pytestmark = pytest.mark.filterwarnings("ignore:__array__ implementation:DeprecationWarning")


@pytest.mark.parametrize(
    ("name", "mode"),
    [
        ("gray.png", "L"),
        ("rgba.png", "RGBA"),
        ("palette.png", "P"),
        ("deep.png", "I;16"),
        ("photo.jpg", "RGB"),
        ("gray.jpg", "L"),
        ("rgb.png", "RGB"),
        ("cmyk.jpg", "CMYK"),
        ("bw.png", "1"),
    ],
)
def test_modes_become_three_channel_float(tmp_path: Path, write_image, name: str, mode: str) -> None:
    path = write_image(tmp_path / name, 12, 7, mode)
    image = read_image(path, image_id=1, expected_hw=(7, 12))
    assert image.shape == (3, 7, 12) and image.dtype == torch.float32
    assert float(image.min()) >= 0.0 and float(image.max()) <= 1.0
    if mode in ("L", "I;16", "1"):
        assert torch.equal(image[0], image[1]) and torch.equal(image[1], image[2])


def test_sixteen_bit_range_is_scaled_not_clipped(tmp_path: Path) -> None:
    values = np.array([[0, 257, 32896, 65535]], dtype=np.uint16)
    Image.fromarray(values).save(tmp_path / "ramp.png")
    assert Image.open(tmp_path / "ramp.png").mode.startswith("I")
    image = read_image(tmp_path / "ramp.png", image_id=1)
    assert (image[0, 0] * 255).round().tolist() == [0.0, 1.0, 128.0, 255.0]


def test_rgba_drops_alpha_and_keeps_colour(tmp_path: Path) -> None:
    Image.new("RGBA", (3, 2), (10, 200, 30, 0)).save(tmp_path / "a.png")
    image = read_image(tmp_path / "a.png", image_id=1)
    assert (image[:, 0, 0] * 255).round().tolist() == [10.0, 200.0, 30.0]


def test_palette_with_transparency(tmp_path: Path) -> None:
    img = Image.new("P", (4, 4), 1)
    img.putpalette([0, 0, 0, 255, 0, 0] + [0] * 762)
    img.save(tmp_path / "p.png", transparency=0)
    image = read_image(tmp_path / "p.png", image_id=1)
    assert (image[:, 0, 0] * 255).round().tolist() == [255.0, 0.0, 0.0]


def _exif_jpeg(path: Path, orientation: int) -> np.ndarray:
    """A 20 x 10 (w x h) JPEG whose EXIF says to rotate it; returns the stored pixels."""
    stored = np.zeros((10, 20, 3), dtype=np.uint8)
    stored[:, :10] = 255  # left half white, so the rotation direction is visible
    exif = Image.Exif()
    exif[0x0112] = orientation
    Image.fromarray(stored).save(path, exif=exif, quality=100)
    return stored


def test_exif_orientation_is_applied(tmp_path: Path) -> None:
    stored = _exif_jpeg(tmp_path / "rot.jpg", orientation=6)  # 6: display rotated 90 degrees clockwise
    image = read_image(tmp_path / "rot.jpg", image_id=5, expected_hw=(20, 10))
    assert image.shape == (3, 20, 10)
    expected = np.rot90(stored, k=-1)  # clockwise
    np.testing.assert_allclose((image.permute(1, 2, 0).numpy() * 255), expected, atol=12)


def test_dataset_uses_displayed_size_convention(tmp_path: Path, write_json) -> None:
    """COCO width/height describe the EXIF-transposed image; the stored size then counts as a mismatch."""
    (tmp_path / "imgs").mkdir()
    _exif_jpeg(tmp_path / "imgs" / "rot.jpg", orientation=8)
    categories = [{"id": 3, "name": "thing"}]
    annotations = [
        {
            "id": 1,
            "image_id": 5,
            "category_id": 3,
            "bbox": [1, 2, 6, 10],
            "iscrowd": 0,
            "segmentation": [[1, 2, 7, 2, 7, 12, 1, 12]],
        }
    ]
    good = {
        "images": [{"id": 5, "file_name": "rot.jpg", "width": 10, "height": 20}],
        "annotations": annotations,
        "categories": categories,
    }
    dataset = CocoInstanceDataset(write_json(tmp_path / "good.json", good), tmp_path / "imgs")
    image, target = dataset[0]
    assert image.shape == (3, 20, 10) and target["masks"].shape == (1, 20, 10)
    stored_size = {
        **good,
        "images": [{"id": 5, "file_name": "rot.jpg", "width": 20, "height": 10}],
        "annotations": [],
    }
    with pytest.raises(DataError, match="10x20 .* says 20x10"):
        CocoInstanceDataset(write_json(tmp_path / "bad.json", stored_size), tmp_path / "imgs")[0]


@pytest.mark.parametrize(("name", "mode"), [("deep.png", "I;16"), ("palette.png", "P"), ("cmyk.jpg", "CMYK")])
def test_user_images_are_decoded_as_the_datasets_are(
    tmp_path: Path, write_image, name: str, mode: str
) -> None:
    """A path or PIL image given to msrcnn.Predictor (or src/predict.py, src/export.py) gives the
    pixels the model was trained on: 16-bit scaled, not clipped."""
    path = write_image(tmp_path / name, 12, 7, mode)
    expected = read_image(path)
    assert torch.equal(to_image_tensor(path), expected) and torch.equal(to_image_tensor(str(path)), expected)
    with Image.open(path) as img:
        assert torch.equal(to_image_tensor(img), expected)


def test_user_image_errors_name_the_file(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="image not found: .*nope.png"):
        to_image_tensor(tmp_path / "nope.png")
    (tmp_path / "x.png").write_bytes(b"not an image")
    with pytest.raises(DataError, match=r"x\.png: cannot read image: cannot identify image file"):
        to_image_tensor(tmp_path / "x.png")


def test_decoding_and_the_predictor_do_not_load_lightning() -> None:
    code = (
        "import sys\n"
        "import msrcnn\n"
        "from msrcnn.data.images import read_image\n"
        "msrcnn.Predictor\n"
        "bad = [n for n in ('lightning', 'hydra', 'omegaconf') if n in sys.modules]\n"
        "assert not bad, bad\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
