"""The web app's work without a browser: input checks, results, temporary files, the request queue."""

from __future__ import annotations

import io
import os
import re
import threading
import time
import zipfile
from pathlib import Path

import av
import numpy as np
import pytest
import torch
from PIL import Image

from wavecl.app import AppConfig, InputError, Segmenter, build_app, launch_options
from wavecl.app import page as page_module
from wavecl.app import segmenter as segmenter_module
from wavecl.app import uploads as uploads_module
from wavecl.app.results import legend_html
from wavecl.app.uploads import parse_sentences
from wavecl.data.synthetic import sample_synthetic_video
from wavecl.data.video_files import read_video_frames, write_video
from wavecl.inference.overlay import sentence_colors
from wavecl.inference.prediction_folder import sentence_slug
from wavecl.inference.predictor import VideoPredictor, VideoSource
from wavecl.inference_settings import InferenceSettings
from wavecl.model.wavecl import WaveCL
from wavecl.testing.serve import free_port

HEIGHT, WIDTH = 45, 63  # odd: the enlarged overlay video is padded to even sizes
NUM_FRAMES = 7
SENTENCES = ["the red circle moving to the left", "a blue square"]


pytestmark = pytest.mark.usefixtures("single_thread")


@pytest.fixture(scope="module")
def frames() -> np.ndarray:
    """``[7, 45, 63, 3]`` uint8: moving coloured shapes."""
    video, _ = sample_synthetic_video(
        seed=5, split="test", index=0, num_frames=NUM_FRAMES, size=(HEIGHT, WIDTH)
    ).render()
    return video


@pytest.fixture()
def config(tmp_path: Path) -> AppConfig:
    return AppConfig(
        InferenceSettings(short_size=40, max_size=64, window=4), max_frames=20, temp_parent=tmp_path, examples=False
    )


@pytest.fixture()
def segmenter(tiny_eval_model: WaveCL, config: AppConfig):
    segmenter = Segmenter(tiny_eval_model, config)
    yield segmenter
    segmenter.close()


def reference_masks(model: WaveCL, video: np.ndarray | Path, threshold: float = 0.5) -> torch.Tensor:
    """``[N, T, H, W]`` masks straight from the predictor, with the app's default settings."""
    predictor = VideoPredictor(model, short_size=40, max_size=64, window=4, progress=False, threshold=threshold)
    return predictor(video, SENTENCES)


def zipped_masks(archive: Path) -> dict[str, np.ndarray]:
    with zipfile.ZipFile(archive) as bundle:
        return {name: np.asarray(Image.open(io.BytesIO(bundle.read(name)))) for name in bundle.namelist()}


def video_frame_names(num_frames: int, fps: float = 8) -> list[str]:
    """How ``wavecl predict`` names the masks of a video file's frames: index and presentation time."""
    return [f"{frame:05d}_{frame / fps:.3f}s" for frame in range(num_frames)]


def expected_names(frame_names: list[str]) -> list[str]:
    return sorted(
        f"{index}_{sentence_slug(text)}/{name}.png" for index, text in enumerate(SENTENCES) for name in frame_names
    )


def request_folders(segmenter: Segmenter) -> list[Path]:
    return list(segmenter.workspace.requests.iterdir())


# ------------------------------------------------------------------------------------------- helpers


def test_parse_sentences_one_per_non_blank_line() -> None:
    assert parse_sentences("  the dog \n\n   \na cat\n", 8) == ["the dog", "a cat"]
    for empty in (None, "", "  \n \n"):
        with pytest.raises(InputError, match="at least one sentence"):
            parse_sentences(empty, 8)
    with pytest.raises(InputError, match="3 sentences given; .* at most 2"):
        parse_sentences("a\nb\nc", 2)


def test_legend_lists_each_sentence_in_its_overlay_colour_escaped() -> None:
    colors = sentence_colors(2)
    legend = legend_html(["the <b>dog</b>", "a cat"], colors)
    assert "the &lt;b&gt;dog&lt;/b&gt;" in legend and "<b>" not in legend
    assert legend.index("0: the") < legend.index("1: a cat")
    for red, green, blue in colors:
        assert f"rgb({red},{green},{blue})" in legend


def test_app_config_rejects_bad_values() -> None:
    with pytest.raises(ValueError, match="max_frames"):
        AppConfig(max_frames=0)
    with pytest.raises(ValueError, match="max_queue"):
        AppConfig(max_queue=0)
    with pytest.raises(ValueError, match="max_upload_mb"):
        AppConfig(max_upload_mb=0)
    assert AppConfig(max_upload_mb=2.5).max_upload_bytes == 2_621_440


# ------------------------------------------------------------------------------------------- results


def test_segment_video_gives_playable_overlay_contact_sheet_and_masks_zip(
    segmenter: Segmenter, tiny_eval_model: WaveCL, frames: np.ndarray, tmp_path: Path
) -> None:
    video = tmp_path / "clip.mp4"
    write_video(video, list(frames), fps=8)
    reports = []
    result = segmenter.segment(str(video), None, "\n".join(SENTENCES), progress=lambda *a, **k: reports.append(a[0]))

    assert reports == [(index, NUM_FRAMES) for index in range(NUM_FRAMES + 1)]
    with av.open(str(result.overlay_video)) as container:
        stream = container.streams.video[0]
        assert (stream.codec_context.name, stream.codec_context.pix_fmt) == ("h264", "yuv420p")
        enlarged = 480 // WIDTH  # a small video is enlarged by a whole factor, its legend under it, even sizes
        assert stream.width == enlarged * WIDTH + 1 and stream.height > enlarged * HEIGHT and stream.height % 2 == 0
    assert len(read_video_frames(result.overlay_video)) == NUM_FRAMES

    masks = zipped_masks(result.masks_zip)
    assert sorted(masks) == expected_names(video_frame_names(NUM_FRAMES))
    reference = reference_masks(tiny_eval_model, video).numpy()
    assert 0 < reference.mean() < 1, "the reference masks are not trivially constant"
    for index, text in enumerate(SENTENCES):
        for frame, name in enumerate(video_frame_names(NUM_FRAMES)):
            png = masks[f"{index}_{sentence_slug(text)}/{name}.png"]
            assert png.shape == (HEIGHT, WIDTH) and set(np.unique(png)) <= {0, 255}
            assert np.array_equal(png == 255, reference[index, frame])

    sheet = Image.open(result.contact_sheet)
    assert sheet.format == "PNG" and sheet.width > WIDTH
    assert result.masks_zip.name == "clip_masks.zip"
    swatches = re.findall(r"rgb\((\d+),(\d+),(\d+)\)", result.legend)
    assert len(swatches) == 2 and "0: the red circle" in result.legend and "1: a blue square" in result.legend
    for swatch in swatches:  # the page's legend shows the colours of the pictures
        assert (np.asarray(sheet) == tuple(map(int, swatch))).all(axis=-1).sum() >= 12 * 12
    assert result.summary.startswith(f"{NUM_FRAMES} frames × 2 sentences")
    assert not (result.overlay_video.parent / "masks").exists(), "the PNGs are only kept in the zip"


def test_frames_from_zip_and_folder_give_the_masks_of_the_frames(
    segmenter: Segmenter, tiny_eval_model: WaveCL, frames: np.ndarray, tmp_path: Path
) -> None:
    folder = tmp_path / "upload"
    folder.mkdir()
    paths = []
    archive = tmp_path / "frames.zip"
    with zipfile.ZipFile(archive, "w") as bundle:
        for index, frame in enumerate(frames):
            path = folder / f"frame{index}.png"  # frame10 after frame9: natural order
            Image.fromarray(frame).save(path)
            paths.append(str(path))
            bundle.write(path, f"clip/{path.name}")
            bundle.writestr(f"__MACOSX/clip/._{path.name}", b"resource fork, not a frame")
        bundle.writestr("clip/notes.txt", "not a frame")
    (folder / "Thumbs.db").write_bytes(b"not a frame")
    paths.append(str(folder / "Thumbs.db"))

    reference = reference_masks(tiny_eval_model, frames)
    for upload, files in ((str(archive), None), (None, paths)):
        result = segmenter.segment(upload, files, "\n".join(SENTENCES), window=4, short_size=40, threshold=0.5)
        masks = zipped_masks(result.masks_zip)
        names = [f"frame{index}" for index in range(NUM_FRAMES)]  # each mask is named after its frame
        assert sorted(masks) == expected_names(names)
        folders = [f"{index}_{sentence_slug(text)}" for index, text in enumerate(SENTENCES)]
        got = np.stack([[masks[f"{folder}/{name}.png"] == 255 for name in names] for folder in folders])
        assert np.array_equal(got, reference.numpy())


def sentence_masks(result) -> np.ndarray:
    """``[2, T, H, W]`` bool: the zipped masks of the two sentences, frames in name order."""
    masks = zipped_masks(result.masks_zip)
    return np.stack([[masks[name] == 255 for name in sorted(masks) if name.startswith(f"{i}_")] for i in range(2)])


def test_controls_change_the_threshold(segmenter: Segmenter, tiny_eval_model: WaveCL, frames: np.ndarray) -> None:
    video = segmenter.workspace.root / "clip.mp4"
    write_video(video, list(frames), fps=8)
    result = segmenter.segment(str(video), None, "\n".join(SENTENCES), window=4, short_size=40, threshold=0.3)
    assert np.array_equal(sentence_masks(result), reference_masks(tiny_eval_model, video, threshold=0.3).numpy())


def test_controls_change_the_window_and_the_resize(
    segmenter: Segmenter, tiny_eval_model: WaveCL, frames: np.ndarray
) -> None:
    """A window of 2 frames (the configured overlap of 1 still fits) at a short side of 32 px, the long side
    capped at 51 px: the configured cap (64) in proportion to the configured short side (40)."""
    video = segmenter.workspace.root / "clip.mp4"
    write_video(video, list(frames), fps=8)
    result = segmenter.segment(str(video), None, "\n".join(SENTENCES), window=2, short_size=32, threshold=0.5)
    predictor = VideoPredictor(tiny_eval_model, short_size=32, max_size=51, window=2, overlap=1, progress=False)
    expected = predictor(video, SENTENCES).numpy()
    assert np.array_equal(sentence_masks(result), expected)
    assert not np.array_equal(expected, reference_masks(tiny_eval_model, video).numpy())  # the controls matter


@pytest.mark.parametrize(("window", "short_size", "threshold"), [(0, 40, 0.5), (4, 0, 0.5), (4, 40, 1.5)])
def test_controls_out_of_range_are_explained(
    segmenter: Segmenter, window: int, short_size: int, threshold: float
) -> None:
    message = rf"Window \({window}\) and resize \({short_size}\) must be positive and the threshold \({threshold}\)"
    with pytest.raises(InputError, match=message):
        segmenter.segment(None, None, "a sentence", window=window, short_size=short_size, threshold=threshold)


# ----------------------------------------------------------------------------------------- bad input


def test_bad_input_is_explained_and_leaves_no_files(
    segmenter: Segmenter, frames: np.ndarray, tmp_path: Path, config: AppConfig
) -> None:
    video = tmp_path / "clip.mp4"
    write_video(video, list(frames), fps=8)
    garbage = tmp_path / "holiday.mp4"
    garbage.write_bytes(np.random.default_rng(0).integers(0, 256, 4096, dtype=np.uint8).tobytes())
    empty = tmp_path / "empty.mp4"
    empty.touch()
    long_video = tmp_path / "long.mp4"
    write_video(long_video, [frames[0]] * 21, fps=10)
    not_zip = tmp_path / "frames.zip"
    not_zip.write_bytes(b"PK but not really")
    no_frames = tmp_path / "texts.zip"
    with zipfile.ZipFile(no_frames, "w") as bundle:
        bundle.writestr("a.txt", "hello")
    twice = tmp_path / "twice.zip"
    with zipfile.ZipFile(twice, "w") as bundle:
        for folder in ("a", "b"):
            bundle.writestr(f"{folder}/0.png", video.read_bytes())

    cases = [
        ((str(video), None, ""), "Enter at least one sentence"),
        ((str(video), None, "\n".join("abcdefghi")), "9 sentences given; this server segments at most 8"),
        ((None, None, "a dog"), "Upload a video"),
        ((str(video), [str(video)], "a dog"), "either a video .* or a folder"),
        (
            (str(garbage), None, "a dog"),
            r"^Cannot read holiday.mp4 as a video: Invalid data found when processing input$",
        ),
        ((str(empty), None, "a dog"), r"empty.mp4 is empty"),
        ((str(long_video), None, "a dog"), r"long.mp4 has 21 frames \(2.1 s at 10 fps\); .* at most 20 frames"),
        ((str(not_zip), None, "a dog"), "frames.zip is not a readable zip"),
        ((str(no_frames), None, "a dog"), r"texts.zip holds no frames \(.jpg, .jpeg, .png"),
        ((str(twice), None, "a dog"), "several frames named 0.png"),
        ((None, [str(garbage)], "a dog"), "The folder holds no frames"),
    ]
    for arguments, message in cases:
        with pytest.raises(InputError, match=message) as caught:
            segmenter.segment(*arguments)
        assert str(tmp_path) not in str(caught.value), "server-side paths are not shown"
        assert request_folders(segmenter) == []

    small = Segmenter(segmenter.model, AppConfig(max_upload_mb=0.01, temp_parent=tmp_path, examples=False))
    try:
        big_video = tmp_path / "big.mp4"
        big_video.write_bytes(b"\0" * 20_000)
        with pytest.raises(InputError, match=r"The upload is 0.0191 MB; this server accepts at most 0.01 MB"):
            small.segment(str(big_video), None, "a dog")
        big_frames = tmp_path / "big.zip"
        with zipfile.ZipFile(big_frames, "w", compression=zipfile.ZIP_DEFLATED) as bundle:
            bundle.writestr("0.png", b"\0" * (2 << 20))  # compresses to a few kB
        assert big_frames.stat().st_size < 10_000
        with pytest.raises(InputError, match="big.zip unpacks to 2 MB of frames; .* at most 0.01 MB"):
            small.segment(str(big_frames), None, "a dog")
        assert request_folders(small) == []
    finally:
        small.close()


def test_frame_limit_holds_when_the_file_does_not_record_its_length(
    segmenter: Segmenter, frames: np.ndarray, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    video = tmp_path / "stream.mp4"
    write_video(video, [frames[0]] * 25, fps=10)

    def without_count(path):
        return VideoSource(iter([]), None, None, str(path))

    monkeypatch.setattr(uploads_module, "open_video", without_count)
    with pytest.raises(InputError, match="stream.mp4 is longer than 20 frames"):
        segmenter.segment(str(video), None, "a dog")
    assert request_folders(segmenter) == []


# ------------------------------------------------------------------------------------------- files


def test_requests_clean_up_after_themselves_and_close_removes_everything(
    tiny_eval_model: WaveCL, frames: np.ndarray, tmp_path: Path
) -> None:
    parent = tmp_path / "parent"
    parent.mkdir()
    video = tmp_path / "clip.mp4"
    write_video(video, list(frames[:3]), fps=8)
    segmenter = Segmenter(
        tiny_eval_model, AppConfig(InferenceSettings(short_size=40, max_size=64), temp_parent=parent, examples=False)
    )
    assert [p.name for p in parent.iterdir()] == [segmenter.workspace.root.name]
    first = segmenter.segment(str(video), None, "a dog")
    assert first.overlay_video.is_relative_to(segmenter.workspace.root)
    second = segmenter.segment(str(video), None, "a dog")
    assert request_folders(segmenter) == [second.overlay_video.parents[1]], "the finished request is deleted"
    assert not first.overlay_video.exists()
    segmenter.close()
    assert list(parent.iterdir()) == []


def test_build_app_keeps_gradio_files_in_its_folder(
    tiny_eval_model: WaveCL, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("GRADIO_TEMP_DIR", raising=False)
    app = build_app(tiny_eval_model, AppConfig(temp_parent=tmp_path, max_upload_mb=3))
    root = app.segmenter.workspace.root
    try:
        assert root.parent == tmp_path
        assert Path(os.environ["GRADIO_TEMP_DIR"]) == root / "gradio"
        assert sorted(p.name for p in (root / "examples").iterdir()) == ["shapes_0.mp4", "shapes_1.mp4"]
        assert len(read_video_frames(root / "examples" / "shapes_0.mp4")) == page_module.EXAMPLE_FRAMES
        options = launch_options(app.segmenter.config)
        assert options["server_name"] == "127.0.0.1" and options["max_file_size"] == 3 << 20
    finally:
        app.segmenter.close()
    assert not root.exists()


# ------------------------------------------------------------------------------------------- queue


def test_second_request_waits_in_the_queue_with_its_position(
    tiny_eval_model: WaveCL, frames: np.ndarray, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from gradio_client import Client, handle_file
    from gradio_client.utils import Status

    monkeypatch.delenv("GRADIO_TEMP_DIR", raising=False)
    started, release = threading.Event(), threading.Event()
    write = segmenter_module.write_predictions

    def held_write(*args, **kwargs):
        started.set()
        assert release.wait(60), "the test never released the first request"
        return write(*args, **kwargs)

    monkeypatch.setattr(segmenter_module, "write_predictions", held_write)
    video = tmp_path / "clip.mp4"
    write_video(video, list(frames[:2]), fps=8)
    config = AppConfig(InferenceSettings(short_size=40, max_size=64), max_queue=1, temp_parent=tmp_path, examples=False)
    app = build_app(tiny_eval_model, config)
    port = free_port()
    app.launch(**launch_options(config, port=port), prevent_thread_lock=True, quiet=True)
    try:
        client = Client(f"http://127.0.0.1:{port}/", verbose=False, download_files=False, analytics_enabled=False)
        arguments = (handle_file(str(video)), None, "a dog", 4, 40, 0.5)
        first = client.submit(*arguments, api_name="/segment")
        assert started.wait(60), "the first request never started"
        second = client.submit(*arguments, api_name="/segment")
        deadline = time.monotonic() + 30
        while (status := second.status()).code != Status.IN_QUEUE and time.monotonic() < deadline:
            time.sleep(0.05)
        assert (status.code, status.rank, status.queue_size) == (Status.IN_QUEUE, 0, 1)  # shown as "queue: 1/1"
        third = client.submit(*arguments, api_name="/segment")
        with pytest.raises(Exception, match="[Qq]ueue is full"):
            third.result(timeout=30)
        release.set()
        for job in (first, second):
            overlay, _, legend, _, summary = job.result(timeout=60)
            assert "0: a dog" in legend and summary.startswith("2 frames")
    finally:
        release.set()
        app.close()
        app.segmenter.close()


# ------------------------------------------------------------------------------------------- command


def test_serve_command_passes_its_flags_and_the_checkpoint_size(
    tiny_eval_model: WaveCL, tiny_config, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture
) -> None:
    from wavecl import app as app_package
    from wavecl.cli import main
    from wavecl.model import pretrained

    recorded = InferenceSettings(short_size=64, max_size=96, window=6)
    source = pretrained.PretrainedSource(tmp_path / "model.safetensors", tiny_config, None, recorded)
    monkeypatch.setattr(pretrained, "resolve_pretrained", lambda path: source)
    monkeypatch.setattr(pretrained, "build_pretrained", lambda model_class, found, device: tiny_eval_model)
    served = []
    monkeypatch.setattr(app_package, "serve", lambda *args, **kwargs: served.append((args, kwargs)))

    main(["serve", "--checkpoint", "run", "--device", "cpu", "--max-frames", "50", "--max-upload-mb", "2"])
    (model, config), options = served[0]
    assert model is tiny_eval_model and options == {"host": "127.0.0.1", "port": 7860}
    assert (config.inference.short_size, config.inference.max_size, config.inference.window) == (
        64,
        96,
        6,
    )  # the checkpoint's
    assert (config.max_frames, config.max_upload_mb) == (50, 2.0)
    assert capsys.readouterr().err == ""

    main(
        ["serve", "--checkpoint", "run", "--device", "cpu", "--short-size", "80", "--window", "3", "--host", "0.0.0.0"]
    )
    (_, config), options = served[1]
    settings = config.inference
    assert (settings.short_size, settings.max_size, settings.window, options["host"]) == (80, 96, 3, "0.0.0.0")
    assert "reachable from other machines" in capsys.readouterr().err

    with pytest.raises(SystemExit) as stopped:
        main(["serve", "--checkpoint", "run", "--device", "cpu", "--max-frames", "0"])
    assert stopped.value.code == 2 and "max_frames must be at least 1" in capsys.readouterr().err
    assert len(served) == 2
