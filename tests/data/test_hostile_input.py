"""Hostile and careless input: identifiers that would leave their folder, images in formats that are not
read or too large to decode, repeated keys in JSON and YAML. Each is refused with an error naming the
file and the key, and nothing outside the output folder changes."""

from __future__ import annotations

import hashlib
import io
import json
import re
import struct
import zipfile
import zlib
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from support import TINY_CONFIG, run_cli

import wavecl.data.paths
from wavecl.app import AppConfig, InputError, Segmenter
from wavecl.config import load_config
from wavecl.data.a2d import build_a2d_samples
from wavecl.data.davis import convert_davis, davis_result_path
from wavecl.data.identifiers import UnsafeIdentifierError, check_identifier
from wavecl.data.jhmdb import build_jhmdb_samples
from wavecl.data.paths import UnsupportedImageError, open_image, read_image
from wavecl.data.refcoco import read_refcoco_json, refcoco_annotation_path
from wavecl.data.video_files import iter_video_frames, read_video_frames, write_video
from wavecl.evaluation.coco import load_coco_ground_truth
from wavecl.evaluation.davis import read_sequence_list
from wavecl.evaluation.ytvos import write_ytvos_masks
from wavecl.inference_settings import InferenceSettings
from wavecl.jsonio import DuplicateKeyError, read_json
from wavecl.model.pretrained import resolve_pretrained
from wavecl.testing.a2d import write_a2d_fixture
from wavecl.testing.davis import write_davis_fixture
from wavecl.testing.jhmdb import write_jhmdb_fixture
from wavecl.testing.refcoco import write_refcoco_fixture
from wavecl.testing.ytvos import write_ytvos_fixture

pytestmark = pytest.mark.usefixtures("single_thread")

EPS = b"%!PS-Adobe-3.0 EPSF-3.0\n%%BoundingBox: 0 0 8 8\n0 0 moveto 8 8 lineto stroke\nshowpage\n"
"""A PostScript file: Pillow's EPS decoder would hand it to Ghostscript."""


def tree_state(root: Path) -> dict[str, str]:
    """``{relative path: content digest}`` of every file under ``root`` (``"dir"`` for folders)."""
    state = {}
    for path in sorted(root.rglob("*")):
        key = path.relative_to(root).as_posix()
        state[key] = "dir" if path.is_dir() else hashlib.sha256(path.read_bytes()).hexdigest()
    return state


def changes_outside(before: dict[str, str], after: dict[str, str], inside: str) -> dict[str, tuple]:
    """Entries added, removed or modified between two :func:`tree_state` calls, except under ``inside``."""
    keys = set(before) | set(after)
    return {
        key: (before.get(key), after.get(key))
        for key in sorted(keys)
        if before.get(key) != after.get(key) and not (key == inside or key.startswith(f"{inside}/"))
    }


def png_header(width: int, height: int) -> bytes:
    """A PNG whose header declares ``width x height`` RGB pixels and whose data is empty: opening it reads
    the declared size; decoding it would need ``3 * width * height`` bytes."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(b"")) + chunk(b"IEND", b"")


# ------------------------------------------------------------------------------------------ identifiers


@pytest.mark.parametrize(
    ("value", "reason"),
    [
        ("", "is empty"),
        ("..", "names a folder itself"),
        (".", "names a folder itself"),
        ("../x", "path separator"),
        ("/etc/passwd", "path separator"),
        ("a\\b", "path separator"),
        ("a\0b", "NUL"),
        ("C:x", "drive"),
        (7, "must be a string"),
    ],
)
def test_identifiers_that_are_no_file_name_are_refused(value, reason) -> None:
    with pytest.raises(UnsafeIdentifierError, match=reason) as caught:
        check_identifier(value, "data/meta.json", "video 'v' frame name")
    assert str(caught.value).startswith("data/meta.json: video 'v' frame name")


@pytest.mark.parametrize("value", ["00005", "frame..1", "clip 3", "-2oX7jAbMNg", ".hidden"])
def test_ordinary_identifiers_pass_unchanged(value) -> None:
    assert check_identifier(value, "data/meta.json", "video id") is value


def hostile_ytvos(root: Path, target: str, value: str) -> Path:
    """The tiny Ref-YouTube-VOS copy with ``value`` as the ``target`` (video id, expression id or frame
    name) of the first valid video; returns its valid ``meta_expressions.json``."""
    write_ytvos_fixture(root)
    path = root / "meta_expressions" / "valid" / "meta_expressions.json"
    content = json.loads(path.read_text())
    videos = content["videos"]
    video_id = next(iter(videos))
    if target == "video id":
        videos[value] = videos.pop(video_id)
    elif target == "expression id":
        expressions = videos[video_id]["expressions"]
        expressions[value] = expressions.pop(next(iter(expressions)))
    else:
        videos[video_id]["frames"][0] = value
    path.write_text(json.dumps(content))
    return path


@pytest.mark.parametrize(
    ("target", "value"),
    [
        ("expression id", "../../../escaped"),
        ("expression id", "ABSOLUTE"),
        ("video id", "val_a/../../../escaped"),
        ("frame name", "../../../../escaped"),
        ("frame name", ".."),
    ],
)
def test_evaluate_refuses_ids_that_leave_the_output_folder(tiny_pretrained, tmp_path, capsys, target, value) -> None:
    value = str(tmp_path / "escaped") if value == "ABSOLUTE" else value
    meta = hostile_ytvos(tmp_path / "ref-youtube-vos", target, value)
    before = tree_state(tmp_path)
    argv = ["evaluate", "-c", str(TINY_CONFIG), "--dataset", "ref_youtube_vos", "--data-root", str(tmp_path)]
    argv += ["--checkpoint", str(tiny_pretrained), "--out-dir", str(tmp_path / "out"), "--device", "cpu"]
    argv += ["--set", "data.window_size=2", "--set", "data.eval_short_size=32", "--set", "data.eval_max_size=48"]
    code, _, err = run_cli(argv, capsys)
    assert code == 2
    assert str(meta) in err and target in err and repr(value) in " ".join(err.split())
    assert changes_outside(before, tree_state(tmp_path), "out") == {}
    assert not (tmp_path / "escaped").exists()


def test_the_mask_writers_refuse_ids_before_writing(tmp_path) -> None:
    masks = torch.ones(2, 4, 4, dtype=torch.bool)
    for video, exp_id, frames in [("../v", "0", ["a", "b"]), ("v", "/x", ["a", "b"]), ("v", "0", ["a", "../b"])]:
        with pytest.raises(UnsafeIdentifierError, match=f"predictions in {tmp_path / 'out'}"):
            write_ytvos_masks(tmp_path / "out", video, exp_id, frames, masks)
    with pytest.raises(UnsafeIdentifierError, match="video '..'"):
        davis_result_path(tmp_path / "out", 0, "..", "00000")
    assert list(tmp_path.iterdir()) == []


def test_davis_conversion_refuses_a_video_name_with_a_separator(tmp_path) -> None:
    write_davis_fixture(tmp_path / "refer-davis")
    image_set = tmp_path / "refer-davis" / "DAVIS" / "ImageSets" / "2017" / "val.txt"
    image_set.write_text(image_set.read_text() + "../../../escaped\n")
    before = tree_state(tmp_path)
    with pytest.raises(UnsafeIdentifierError, match=r"val\.txt:\d+: video '\.\./\.\./\.\./escaped' holds a path"):
        convert_davis(tmp_path / "refer-davis", tmp_path / "out")
    assert changes_outside(before, tree_state(tmp_path), "out") == {}
    with pytest.raises(UnsafeIdentifierError, match=r"val\.txt:\d+: video '\.\./\.\./\.\./escaped'"):
        read_sequence_list(tmp_path / "refer-davis" / "DAVIS", "val")
    expression_file = tmp_path / "refer-davis" / "davis_text_annotations" / "Davis17_annot1.txt"
    expression_file.write_text('/tmp/x 1 "a dog"\n')
    with pytest.raises(UnsafeIdentifierError, match=r"Davis17_annot1\.txt:1: video '/tmp/x'"):
        convert_davis(tmp_path / "refer-davis", tmp_path / "out")


def test_a2d_refuses_a_video_id_with_a_separator(tmp_path) -> None:
    write_a2d_fixture(tmp_path / "a2d_sentences")
    videoset = tmp_path / "a2d_sentences" / "Release" / "videoset.csv"
    lines = videoset.read_text().splitlines()
    lines[1] = "../escaped," + lines[1].partition(",")[2]
    videoset.write_text("\n".join(lines) + "\n")
    with pytest.raises(UnsafeIdentifierError, match=r"videoset\.csv:2: video id '\.\./escaped' holds a path"):
        build_a2d_samples(tmp_path, "test")


def test_jhmdb_refuses_hostile_ids_in_the_annotations_and_the_sample_list(tmp_path) -> None:
    fixture = write_jhmdb_fixture(tmp_path / "jhmdb_sentences")
    annotations = tmp_path / "jhmdb_sentences" / "jhmdb_annotation.txt"
    original = annotations.read_text()
    annotations.write_text(original.rstrip("\n") + "\n..,a person\n")
    with pytest.raises(UnsafeIdentifierError, match=r"jhmdb_annotation\.txt:\d+: video id '\.\.' names a folder"):
        build_jhmdb_samples(tmp_path)
    annotations.write_text(original)
    entries = json.loads(fixture.samples_metadata.read_text())
    video_id = entries[0][0]
    entries[0][1] = f"./jhmdb_sentences/Rename_Images/../{video_id}/00001.png"
    fixture.samples_metadata.write_text(json.dumps(entries))
    with pytest.raises(UnsafeIdentifierError, match=r"entry 0 action folder '\.\.'"):
        build_jhmdb_samples(tmp_path, fixture.samples_metadata)


def test_refcoco_refuses_a_file_name_outside_the_image_folder(tmp_path) -> None:
    write_refcoco_fixture(tmp_path)
    path = refcoco_annotation_path(tmp_path, "refcoco", "val")
    content = json.loads(path.read_text())
    content["images"][0]["file_name"] = "../../secret.jpg"
    path.write_text(json.dumps(content))
    with pytest.raises(UnsafeIdentifierError, match=r"images\[0\] file_name '\.\./\.\./secret\.jpg'"):
        read_refcoco_json(path)


# ---------------------------------------------------------------------------------------------- images


@pytest.mark.parametrize("name", ["frame.png", "frame.jpg"])
def test_a_postscript_file_named_as_an_image_is_refused(tmp_path, name) -> None:
    (tmp_path / name).write_bytes(EPS)
    with pytest.raises(UnsupportedImageError, match=rf"{name} holds EPS data; wavecl reads JPEG or PNG only"):
        read_image(tmp_path / name)


@pytest.mark.parametrize("kind", ["GIF", "BMP", "WEBP", "TIFF"])
def test_other_image_formats_are_refused_naming_the_format(tmp_path, kind) -> None:
    Image.new("RGB", (8, 8), (200, 10, 10)).save(tmp_path / "frame.png", format=kind)
    with pytest.raises(UnsupportedImageError, match=rf"frame\.png holds {kind} data"):
        read_image(tmp_path / "frame.png")
    (tmp_path / "empty.png").touch()
    with pytest.raises(UnsupportedImageError, match=r"empty\.png holds an empty file"):
        read_image(tmp_path / "empty.png")


@pytest.mark.parametrize(("width", "height"), [(20000, 20000), (10000, 6000), (50_000_001, 1)])
def test_images_over_the_pixel_limit_are_refused_from_the_header(tmp_path, width, height) -> None:
    (tmp_path / "big.png").write_bytes(png_header(width, height))
    megapixels = f"{width * height / 1e6:.1f}"
    message = rf"big\.png is {width}x{height} pixels \({megapixels} megapixels\); wavecl reads at most 50 megapixels"
    with pytest.raises(UnsupportedImageError, match=message):
        read_image(tmp_path / "big.png")
    with pytest.raises(UnsupportedImageError, match=rf"in\.zip: big\.png is {width}x{height}"):
        with open_image(io.BytesIO(png_header(width, height)), "in.zip: big.png"):
            pass


def test_an_image_at_the_pixel_limit_opens(tmp_path) -> None:
    (tmp_path / "edge.png").write_bytes(png_header(10_000, 5_000))
    with open_image(tmp_path / "edge.png") as image:
        assert image.size == (10_000, 5_000) and image.width * image.height == wavecl.data.paths.MAX_IMAGE_PIXELS


def test_video_frames_over_the_pixel_limit_are_refused(tmp_path, monkeypatch) -> None:
    video = tmp_path / "clip.mp4"
    write_video(video, [np.zeros((16, 24, 3), np.uint8)] * 2, fps=4)
    assert len(read_video_frames(video)) == 2
    monkeypatch.setattr(wavecl.data.paths, "MAX_IMAGE_PIXELS", 16 * 24 - 1)
    for read in (read_video_frames, lambda path: list(iter_video_frames(path))):
        with pytest.raises(UnsupportedImageError, match=rf"video {video} is 24x16 pixels"):
            read(video)


@pytest.mark.parametrize(
    ("frame", "message"),
    [
        (png_header(20000, 20000), r"big\.png is 20000x20000 pixels .* at most 50 megapixels"),
        (EPS, r"big\.png holds EPS data"),
        ("1x5000", r"frame 0 \(big\) of .*frames: a 1x5000 picture .* short side of less than one pixel"),
    ],
)
def test_predict_reports_a_refused_frame_as_an_error(tiny_pretrained, tmp_path, capsys, frame, message) -> None:
    frames = tmp_path / "frames"
    frames.mkdir()
    if frame == "1x5000":
        Image.new("RGB", (1, 5000)).save(frames / "big.png")
    else:
        (frames / "big.png").write_bytes(frame)
    before = tree_state(tmp_path)
    argv = ["predict", str(frames), "--checkpoint", str(tiny_pretrained), "--text", "a dog", "--device", "cpu"]
    code, _, err = run_cli([*argv, "--out-dir", str(tmp_path / "out")], capsys)
    assert code == 2
    assert "error: " in err and "Traceback" not in err
    assert re.search(message, " ".join(err.split()))
    assert changes_outside(before, tree_state(tmp_path), "out") == {}


def test_the_web_page_refuses_a_pixel_bomb_in_a_zip(tiny_model, tmp_path) -> None:
    archive = tmp_path / "frames.zip"
    with zipfile.ZipFile(archive, "w", compression=zipfile.ZIP_DEFLATED) as bundle:
        bundle.writestr("0.png", png_header(20000, 20000))
    segmenter = Segmenter(
        tiny_model.eval(),
        AppConfig(InferenceSettings(short_size=32, max_size=48), temp_parent=tmp_path, examples=False),
    )
    try:
        with pytest.raises(InputError, match=r"0\.png is 20000x20000 pixels .* at most 50 megapixels") as caught:
            segmenter.segment(str(archive), None, "a dog")
        assert str(tmp_path) not in str(caught.value)
        assert list(segmenter.workspace.requests.iterdir()) == []
    finally:
        segmenter.close()


# ------------------------------------------------------------------------------------- JSON and YAML


def test_a_repeated_json_key_is_refused_naming_file_and_key(tmp_path) -> None:
    path = tmp_path / "meta.json"
    path.write_text('{"videos": {"v1": {"frames": ["0"]}, "v2": {}, "v1": {"frames": ["1"]}}}')
    with pytest.raises(DuplicateKeyError, match=rf"{path}: key 'v1' appears twice"):
        read_json(path)
    path.write_text('{"videos": {"v1": {"frames": ["0"]}, "v2": {}}}')
    assert read_json(path) == {"videos": {"v1": {"frames": ["0"]}, "v2": {}}}


def test_a_coco_ground_truth_with_a_repeated_key_is_refused(tmp_path) -> None:
    path = tmp_path / "gt.json"
    path.write_text('{"images": [{"id": 1}], "annotations": [], "categories": [], "images": []}')
    with pytest.raises(DuplicateKeyError, match=rf"{path}: key 'images' appears twice"):
        load_coco_ground_truth(path)
    path.write_text('{"images": [{"id": 1}], "annotations": [], "categories": []}')
    assert load_coco_ground_truth(path).getImgIds() == [1]


def test_evaluate_refuses_a_repeated_expression_id(tiny_pretrained, tmp_path, capsys) -> None:
    write_ytvos_fixture(tmp_path / "ref-youtube-vos")
    path = tmp_path / "ref-youtube-vos" / "meta_expressions" / "valid" / "meta_expressions.json"
    text = path.read_text()
    assert text.count('"0": {"exp": "a cat"}') == 1
    path.write_text(text.replace('"0": {"exp": "a cat"}', '"0": {"exp": "a cat"}, "0": {"exp": "a dog"}'))
    argv = ["evaluate", "-c", str(TINY_CONFIG), "--dataset", "ref_youtube_vos", "--data-root", str(tmp_path)]
    code, _, err = run_cli([*argv, "--checkpoint", str(tiny_pretrained), "--out-dir", str(tmp_path / "out")], capsys)
    assert code == 2 and str(path) in err and "key '0' appears twice" in err


def test_a_pretrained_config_with_a_repeated_key_is_refused(tiny_pretrained, tmp_path) -> None:
    folder = tmp_path / "copy"
    folder.mkdir()
    for item in tiny_pretrained.iterdir():
        (folder / item.name).symlink_to(item)
    config = folder / "config.json"
    config.unlink()
    text = (tiny_pretrained / "config.json").read_text()
    assert '"d_model"' in text
    config.write_text(text.replace("{", '{\n  "d_model": 1,', 1))
    with pytest.raises(DuplicateKeyError, match=rf"{config}: key 'd_model' appears twice"):
        resolve_pretrained(folder)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("train:\n  lr: 1.0e-4\n  epochs: 2\n  lr: 5.0e-4\n", r"key 'lr' appears twice .*line 4"),
        ("train:\n  lr: 1.0e-4\ntrain:\n  epochs: 2\n", r"key 'train' appears twice .*line 3"),
        ("train: &t {lr: 1.0e-4}\ndata: *t\n", r"alias \*t found: aliases are not accepted"),
        ("train:\n  lr: !!python/object/apply:os.system [echo]\n", r"could not determine a constructor for the tag"),
    ],
)
def test_configs_refuse_repeated_keys_aliases_and_python_tags(tmp_path, text, message) -> None:
    path = tmp_path / "config.yaml"
    path.write_text(text)
    with pytest.raises(ValueError, match=rf"{path}: malformed YAML: ") as caught:
        load_config(path)
    assert re.search(message, " ".join(str(caught.value).split()))


def test_a_yaml_alias_bomb_fails_at_its_first_alias(tmp_path) -> None:
    names = "abcdefghi"
    levels = ['a: &a ["lol"]'] + [
        f"{name}: &{name} [{','.join([f'*{names[i]}'] * 9)}]" for i, name in enumerate(names[1:])
    ]
    path = tmp_path / "bomb.yaml"
    path.write_text("\n".join(levels) + "\n")
    assert len(path.read_bytes()) < 334  # 9^8 = 43 million strings once expanded
    with pytest.raises(ValueError, match=rf"(?s){path}: malformed YAML: alias \*a found.*line 2"):
        load_config(path)


def test_set_overrides_with_a_tag_or_given_twice_are_cli_errors(capsys) -> None:
    code, _, err = run_cli(["info", "-c", str(TINY_CONFIG), "--set", "train.lr=!!python/name:os.system"], capsys)
    assert code == 2 and err.startswith("error: override 'train.lr=!!python/name:os.system': malformed YAML")
    code, _, err = run_cli(["info", "-c", str(TINY_CONFIG), "--set", "train.lr={a: 1, a: 2}"], capsys)
    assert code == 2 and "key 'a' appears twice" in err
    code, _, err = run_cli(["info", "-c", str(TINY_CONFIG), "--set", "train.lr=1", "--set", "train.lr=2"], capsys)
    assert code == 2 and "--set 'train.lr=1' and --set 'train.lr=2' both set train.lr" in err
