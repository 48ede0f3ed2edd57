"""Odd but honest input (issue 20, item 5): macOS copies in frame folders, MPEG-TS timestamps, damaged
video packets and over-long sentences; each is accepted or refused before anything is written, and the
message names the file, frame or sentence."""

from __future__ import annotations

import json
import logging
import re
from fractions import Fraction
from pathlib import Path

import av
import numpy as np
import pytest
from PIL import Image
from support import TINY_CONFIG, run_cli

from wavecl.app import AppConfig, InputError, Segmenter
from wavecl.app.uploads import collect_frames
from wavecl.config import DataConfig
from wavecl.data.datasets import build_dataset
from wavecl.data.davis import convert_davis
from wavecl.data.video_files import iter_video_frames, read_video_frames, write_video
from wavecl.evaluation.loop import dataset_sentences
from wavecl.inference.predictor import frame_files
from wavecl.inference_settings import InferenceSettings
from wavecl.model.text import max_text_tokens
from wavecl.model.wavecl import WaveCL
from wavecl.testing.a2d import write_a2d_fixture
from wavecl.testing.davis import write_davis_fixture
from wavecl.testing.jhmdb import write_jhmdb_fixture
from wavecl.testing.refcoco import write_refcoco_fixture
from wavecl.testing.ytvos import write_ytvos_fixture

APPLE_DOUBLE = b"\x00\x05\x16\x07\x00\x02\x00\x00Mac OS X        " + bytes(64)
"""The start of a macOS AppleDouble file (the ``._name`` copy a Mac writes beside ``name`` on foreign disks)."""


def frame_folder_with_mac_copies(folder: Path) -> list[str]:
    """Three frames, each with its AppleDouble copy, and a hidden PNG; returns the frame names."""
    folder.mkdir()
    rng = np.random.default_rng(0)
    names = ["f1", "f2", "f10"]
    for name in names:
        Image.fromarray(rng.integers(0, 256, (24, 32, 3), dtype=np.uint8)).save(folder / f"{name}.jpg")
        (folder / f"._{name}.jpg").write_bytes(APPLE_DOUBLE)
    Image.new("RGB", (8, 8)).save(folder / ".thumbnail.png")
    return names


def predict_a_dog(video: Path, checkpoint: Path, out: Path, capsys) -> tuple[int, str, list[str]]:
    """``wavecl predict video --text "a dog"`` on the CPU into ``out``: exit code, stderr and the sorted mask
    file stems (empty when no mask folder was written)."""
    argv = ["predict", str(video), "--checkpoint", str(checkpoint), "--text", "a dog", "--device", "cpu"]
    code, _, err = run_cli([*argv, "--out-dir", str(out)], capsys)
    masks = out / "masks" / "0_a_dog"
    return code, err, sorted(file.stem for file in masks.iterdir()) if masks.is_dir() else []


def test_predict_ignores_macos_copies_and_hidden_files_as_the_web_page_does(tiny_pretrained, tmp_path, capsys) -> None:
    frames = tmp_path / "frames"
    names = frame_folder_with_mac_copies(frames)
    assert [path.stem for path in frame_files(frames)] == names  # natural order: f10 last
    uploaded = sorted(str(path) for path in frames.iterdir())
    (tmp_path / "page").mkdir()
    collected = collect_frames(uploaded, tmp_path / "page", max_frames=10)
    assert sorted(path.stem for path in collected.iterdir()) == sorted(names)
    code, err, masks = predict_a_dog(frames, tiny_pretrained, tmp_path / "out", capsys)
    assert code == 0, err
    assert masks == sorted(names)


def test_davis_conversion_ignores_macos_copies_of_frames(tmp_path) -> None:
    write_davis_fixture(tmp_path / "refer-davis", num_frames=3)
    frames = tmp_path / "refer-davis" / "DAVIS" / "JPEGImages" / "480p" / "blackswan"
    (frames / "._00000.jpg").write_bytes(APPLE_DOUBLE)
    (frames / ".DS_Store.jpg").write_bytes(b"")
    conversion = convert_davis(tmp_path / "refer-davis", tmp_path / "out", mode="copy")
    meta = json.loads(conversion.meta_expressions["valid"].read_text())
    assert meta["videos"]["blackswan"]["frames"] == ["00000", "00001", "00002"]


# ------------------------------------------------------------------------------------------ videos

FPS = 8


def gradient_frames(count: int) -> list[np.ndarray]:
    """``count`` 48x64 RGB frames of rising brightness (frame ``i`` has value ``10 i``)."""
    return [np.full((48, 64, 3), 10 * i, np.uint8) for i in range(count)]


def damage_packets(path: Path, which: list[int]) -> list[int]:
    """Overwrite the payload of the ``which``-th packets (decoding order) of ``path`` with 0xFF bytes, which
    the H.264 decoder refuses; returns the presentation-order indices of the frames they carried."""
    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        packets = [(packet.pts, packet.pos, packet.size) for packet in container.demux(stream) if packet.size]
    data = bytearray(path.read_bytes())
    for k in which:
        _, position, size = packets[k]
        data[position + 4 : position + size] = b"\xff" * (size - 4)  # keep the 4-byte NAL length
    path.write_bytes(bytes(data))
    order = sorted(pts for pts, _, _ in packets)
    return sorted(order.index(packets[k][0]) for k in which)


@pytest.fixture
def damaged_video(tmp_path) -> tuple[Path, int]:
    """A 24-frame H.264 mp4 at 8 fps whose 13th packet is damaged; returns its path and the damaged frame."""
    path = tmp_path / "damaged.mp4"
    write_video(path, gradient_frames(24), FPS)
    (index,) = damage_packets(path, [12])
    return path, index


def test_a_damaged_packet_repeats_the_frame_before_it_with_a_warning(damaged_video, caplog) -> None:
    path, damaged = damaged_video
    with caplog.at_level(logging.WARNING, logger="wavecl.data.video_files"):
        frames = list(iter_video_frames(path))
    assert len(frames) == 24
    assert [frame.info["time"] for frame in frames] == pytest.approx([i / FPS for i in range(24)])
    assert [i for i, frame in enumerate(frames) if frame.info.get("damaged")] == [damaged]
    assert np.array_equal(np.asarray(frames[damaged]), np.asarray(frames[damaged - 1]))
    (record,) = caplog.records
    assert str(path) in record.getMessage()
    assert f"frames {damaged} ({damaged / FPS:.3f} s)" in record.getMessage()
    with pytest.raises(ValueError, match=rf"cannot decode video {re.escape(str(path))}"):
        read_video_frames(path)  # the dataset readers stay strict: frame numbers must not shift


def test_predict_segments_a_video_with_a_damaged_packet(tiny_pretrained, damaged_video, tmp_path, capsys) -> None:
    path, damaged = damaged_video
    code, err, names = predict_a_dog(path, tiny_pretrained, tmp_path / "out", capsys)
    assert code == 0, err
    assert names == [f"{i:05d}_{i / FPS:.3f}s" for i in range(24)]
    assert f"{damaged:05d}_{damaged / FPS:.3f}s" in names


def test_too_many_damaged_frames_refuse_the_video_naming_them(tiny_pretrained, tmp_path, capsys) -> None:
    path = tmp_path / "broken.mp4"
    write_video(path, gradient_frames(24), FPS)
    damaged = damage_packets(path, [6, 12, 18])  # 3 of 24: more than 10 %
    out = tmp_path / "out"
    code, err, _ = predict_a_dog(path, tiny_pretrained, out, capsys)
    assert code == 2
    message = " ".join(err.split())
    assert f"3 of the 24 frames of video {path} do not decode" in message
    for index in damaged:
        assert f"{index} ({index / FPS:.3f} s)" in message
    assert not (out / "masks").exists()


def write_mpegts(path: Path, frames: list[np.ndarray], fps: int) -> None:
    """An MPEG-TS file of H.264 frames, as PyAV's muxer writes it (its clock does not start at 0)."""
    with av.open(str(path), "w", format="mpegts") as container:
        stream = container.add_stream("h264", rate=Fraction(fps))
        stream.width, stream.height, stream.pix_fmt = frames[0].shape[1], frames[0].shape[0], "yuv420p"
        for frame in frames:
            container.mux(stream.encode(av.VideoFrame.from_ndarray(frame, format="rgb24")))
        container.mux(stream.encode())


def test_mpegts_frame_times_start_at_zero(tiny_pretrained, tmp_path, capsys) -> None:
    path = tmp_path / "clip.ts"
    write_mpegts(path, gradient_frames(6), 25)
    with av.open(str(path)) as container:
        raw = [frame.time for frame in container.decode(video=0)]
    assert raw[0] > 0  # the transport stream's clock: what the mask names used to carry
    assert [frame.info["time"] for frame in iter_video_frames(path)] == pytest.approx([i / 25 for i in range(6)])
    code, err, names = predict_a_dog(path, tiny_pretrained, tmp_path / "out", capsys)
    assert code == 0, err
    assert names == [f"{i:05d}_{i / 25:.3f}s" for i in range(6)]


# ------------------------------------------------------------------------------------------ sentences

LONG = " ".join(["the small brown dog that runs after the red ball"] * 60)  # 600 words
"""A 600-word expression: more tokens than any text encoder of the package accepts."""


def token_count(tiny_pretrained: Path, text: str) -> tuple[int, int]:
    """``(tokens of text, most the encoder accepts)`` for the tiny_pretrained model, counted here."""
    model = WaveCL.from_pretrained(tiny_pretrained)
    return len(model.tokenizer(text)["input_ids"]), max_text_tokens(model.text_encoder)


def test_predict_refuses_a_long_sentence_by_its_text_flag_before_writing(tiny_pretrained, tmp_path, capsys) -> None:
    count, limit = token_count(tiny_pretrained, LONG.lower())
    assert count > limit
    frames = tmp_path / "frames"
    frame_folder_with_mac_copies(frames)
    out = tmp_path / "out"
    argv = ["predict", str(frames), "--checkpoint", str(tiny_pretrained), "--device", "cpu", "--out-dir", str(out)]
    code, _, err = run_cli([*argv, "--text", "a dog", "--text", LONG], capsys)
    assert code == 2
    message = " ".join(err.split())
    assert f"--text #2 has {count} tokens, more than the {limit} the text encoder accepts" in message
    assert repr(LONG.lower()[:60]) in message
    assert not out.exists()


def test_the_web_page_refuses_a_long_sentence_by_its_line(tiny_model, tmp_path) -> None:
    segmenter = Segmenter(
        tiny_model.eval(),
        AppConfig(InferenceSettings(short_size=32, max_size=48), temp_parent=tmp_path, examples=False),
    )
    try:
        with pytest.raises(InputError, match=r"Sentence 3 has \d+ tokens, more than the \d+ the text encoder"):
            segmenter.segment(None, None, f"a dog\n\na cat\n{LONG}")
        assert list(segmenter.workspace.requests.iterdir()) == []
    finally:
        segmenter.close()


def test_evaluate_refuses_a_long_expression_by_file_and_id_before_writing(tiny_pretrained, tmp_path, capsys) -> None:
    root = tmp_path / "ref-youtube-vos"
    write_ytvos_fixture(root)
    meta = root / "meta_expressions" / "valid" / "meta_expressions.json"
    content = json.loads(meta.read_text())
    video_id, video = next(iter(content["videos"].items()))
    exp_id = sorted(video["expressions"])[-1]
    video["expressions"][exp_id]["exp"] = LONG
    meta.write_text(json.dumps(content))
    out = tmp_path / "out"
    argv = ["evaluate", "-c", str(TINY_CONFIG), "--dataset", "ref_youtube_vos", "--data-root", str(tmp_path)]
    argv += ["--checkpoint", str(tiny_pretrained), "--out-dir", str(out), "--device", "cpu"]
    argv += ["--set", "data.window_size=2", "--set", "data.eval_short_size=32", "--set", "data.eval_max_size=48"]
    code, _, err = run_cli(argv, capsys)
    assert code == 2
    message = " ".join(err.split())
    count, limit = token_count(tiny_pretrained, LONG.lower())
    assert f"{meta}: video {video_id}, expression {exp_id} has {count} tokens, more than the {limit}" in message
    assert not out.exists() and not any(path.name.startswith(".out") for path in tmp_path.iterdir())


def every_evaluation_dataset(root: Path) -> dict[str, DataConfig]:
    """The fixtures of every dataset kind with an evaluation, and the config that evaluates each."""
    write_a2d_fixture(root / "a2d_sentences")
    write_jhmdb_fixture(root / "jhmdb_sentences")
    write_ytvos_fixture(root / "ref-youtube-vos")
    write_davis_fixture(root / "refer-davis")
    convert_davis(root / "refer-davis", root / "refer-davis")
    write_refcoco_fixture(root / "coco")
    names = ["a2d_sentences", "jhmdb_sentences", "ref_youtube_vos", "davis", "coco"]
    configs = {name: DataConfig(dataset_name=name, root=str(root), window_size=2) for name in names}
    configs["coco"].root, configs["coco"].coco_datasets = str(root / "coco"), ["refcoco"]
    return configs


def test_every_evaluation_dataset_names_each_sentence_by_file_and_expression(tmp_path) -> None:
    """The check before an evaluation sees every sentence, each with the file it comes from."""
    for name, config in every_evaluation_dataset(tmp_path).items():
        dataset = build_dataset(config, "eval")
        sentences = list(dataset_sentences(dataset))
        assert len(sentences) == len(dataset), name
        for index in (0, len(dataset) - 1):
            text, where = sentences[index]
            assert " ".join(text.lower().split()) == dataset[index].text, name
            assert Path(where.split(": ")[0]).is_file(), (name, where)
