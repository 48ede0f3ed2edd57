"""Image files read as a viewer shows them: 16-bit grey frames scaled to 8 bits, EXIF orientation for user
frames, and files in formats other than JPEG and PNG refused by name."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from wavecl.data.index_png import read_index_mask
from wavecl.data.paths import UnsupportedImageError, read_image
from wavecl.inference.predictor import open_video


def sixteen_bit_ramp(path: Path) -> np.ndarray:
    """Write a ``[40, 64]`` 16-bit grey PNG covering the whole range and return its values."""
    values = np.linspace(0, 65535, 40 * 64).round().astype(np.uint16).reshape(40, 64)
    Image.fromarray(values).save(path)
    assert Image.open(path).mode.startswith("I;16"), "Pillow stores the ramp with 16 bits"
    return values


def test_sixteen_bit_grey_frames_are_scaled_to_eight_bits(tmp_path: Path) -> None:
    values = sixteen_bit_ramp(tmp_path / "frame.png")
    rgb = np.asarray(read_image(tmp_path / "frame.png"))
    assert rgb.shape == (40, 64, 3) and rgb.dtype == np.uint8
    expected = np.floor(values.astype(float) * 255 / 65535 + 0.5)
    for channel in range(3):
        assert (rgb[..., channel] == expected).all()
    assert abs(rgb.mean() - 127.5) < 0.5 and (rgb == 255).mean() < 0.01, "not clipped to white"
    assert (np.asarray(read_image(tmp_path / "frame.png", mode="L")) == expected).all()


def test_sixteen_bit_frames_in_a_folder_are_segmented_as_seen(tmp_path: Path) -> None:
    values = sixteen_bit_ramp(tmp_path / "0.png")
    (frame,) = list(open_video(tmp_path).frames)
    assert np.abs(np.asarray(frame)[..., 0].astype(float) - values / 257).max() <= 0.5


def test_sixteen_bit_masks_are_refused_not_scaled(tmp_path: Path) -> None:
    Image.fromarray(np.array([[0, 1], [2, 3]], dtype=np.uint16)).save(tmp_path / "mask.png")
    assert np.asarray(read_image(tmp_path / "mask.png", mode=None)).max() == 3, "mode=None keeps the ids"
    with pytest.raises(ValueError, match=r"mask\.png.*mode I;16"):
        read_index_mask(tmp_path / "mask.png")


@pytest.mark.parametrize("mode", ["F", "I"])
def test_deep_tiff_images_are_refused_by_name_and_format(tmp_path: Path, mode: str) -> None:
    Image.fromarray(np.full((4, 4), 1000, dtype=np.float32 if mode == "F" else np.int32), mode=mode).save(
        tmp_path / "deep.tif"
    )
    with pytest.raises(UnsupportedImageError, match=r"deep\.tif holds TIFF data; wavecl reads JPEG or PNG only"):
        read_image(tmp_path / "deep.tif")


def test_exif_orientation_turns_user_frames_but_not_dataset_frames(tmp_path: Path) -> None:
    stored = np.zeros((30, 50, 3), dtype=np.uint8)
    stored[:, :10] = 255  # white band on the stored left
    exif = Image.Exif()
    exif[0x0112] = 6  # Orientation 6: a viewer turns the picture 90 degrees clockwise
    Image.fromarray(stored).save(tmp_path / "0.jpg", quality=95, exif=exif)

    assert np.asarray(read_image(tmp_path / "0.jpg")).shape == (30, 50, 3), "datasets read the stored pixels"
    (frame,) = list(open_video(tmp_path).frames)
    shown = np.asarray(frame)
    assert shown.shape == (50, 30, 3)
    assert shown[:10].mean() > 240 and shown[12:].mean() < 15, "the stored left band is on top once turned clockwise"
