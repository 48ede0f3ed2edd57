"""Video files whose display matrix turns the picture (phone videos) are read as a player shows them."""

from __future__ import annotations

from pathlib import Path

import av
import numpy as np
import pytest

from wavecl.data.video_files import iter_video_frames, read_video_frames, read_video_window, write_video

HEIGHT, WIDTH = 32, 48


def stored_frames(count: int = 3) -> list[np.ndarray]:
    """``count`` ``[32, 48, 3]`` frames with flat blocks that survive lossy coding: a white band on the
    left 8 columns, a red top-right quadrant, grey elsewhere, and the frame index in the green level."""
    frames = []
    for index in range(count):
        frame = np.full((HEIGHT, WIDTH, 3), 96, dtype=np.uint8)
        frame[..., 1] = 64 + 32 * index
        frame[: HEIGHT // 2, WIDTH // 2 :] = (224, 32, 32)
        frame[:, :8] = 255
        frames.append(frame)
    return frames


def write_with_display_matrix(path: Path, frames: list[np.ndarray], degrees: int) -> None:
    """Encode ``frames`` unchanged, with a display matrix asking players to turn them ``degrees``
    counter-clockwise, as a phone records portrait video."""
    with av.open(str(path), mode="w", format="mp4") as container:
        stream = container.add_stream("mpeg4", rate=8)
        stream.width, stream.height, stream.pix_fmt = WIDTH, HEIGHT, "yuv420p"
        stream.set_display_rotation(degrees)
        for frame in frames:
            for packet in stream.encode(av.VideoFrame.from_ndarray(frame, format="rgb24")):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)


def plain_decode(path: Path) -> list[np.ndarray]:
    """The stored pixels of every frame, ignoring any display matrix (what torchvision returns)."""
    with av.open(str(path)) as container:
        return [frame.to_ndarray(format="rgb24") for frame in container.decode(video=0)]


@pytest.mark.parametrize("degrees", [0, 90, 180, -90])
def test_every_reader_turns_frames_as_the_display_matrix_says(tmp_path: Path, degrees: int) -> None:
    path = tmp_path / "phone.mp4"
    write_with_display_matrix(path, stored_frames(), degrees)
    with av.open(str(path)) as container:
        assert next(container.decode(video=0)).rotation % 360 == degrees % 360, "the file carries the matrix"
    expected = [np.rot90(frame, k=degrees // 90) for frame in plain_decode(path)]

    read = [np.asarray(image) for image in read_video_frames(path)]
    streamed = [np.asarray(image) for image in iter_video_frames(path)]
    window = [np.asarray(image) for image in read_video_window(path, centre=1, window_size=3)]
    for frames in (read, streamed, window):
        assert len(frames) == len(expected)
        for frame, reference in zip(frames, expected):
            assert frame.shape == reference.shape and (frame == reference).all()

    # where the stored left band ends up on screen, computed from the turn alone
    white = (read[0] > 200).all(axis=-1)
    side = {0: np.s_[:, :8], 90: np.s_[-8:, :], 180: np.s_[:, -8:], -90: np.s_[:8, :]}[degrees]
    band = np.zeros_like(white)
    band[side] = True
    assert (white == band).mean() > 0.98


def test_a_turn_that_is_not_a_quarter_is_refused_naming_the_file(tmp_path: Path) -> None:
    path = tmp_path / "tilted.mp4"
    with av.open(str(path), mode="w", format="mp4") as container:
        stream = container.add_stream("mpeg4", rate=8)
        stream.width, stream.height, stream.pix_fmt = WIDTH, HEIGHT, "yuv420p"
        half = round(np.sqrt(0.5) * 65536)
        stream.set_display_matrix([half, -half, 0, half, half, 0, 0, 0, 1 << 30])
        for packet in stream.encode(av.VideoFrame.from_ndarray(stored_frames(1)[0], format="rgb24")):
            container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    with pytest.raises(ValueError, match=r"tilted\.mp4 .* 45 degrees"):
        read_video_frames(path)


def test_written_videos_carry_no_display_matrix(tmp_path: Path) -> None:
    write_video(tmp_path / "out.mp4", stored_frames(), fps=8)
    with av.open(str(tmp_path / "out.mp4")) as container:
        assert all(frame.rotation == 0 for frame in container.decode(video=0))
    assert np.asarray(read_video_frames(tmp_path / "out.mp4")[0]).shape == (HEIGHT, WIDTH, 3)
