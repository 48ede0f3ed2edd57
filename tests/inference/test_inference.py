"""Inference on your own video: pretrained folders, the windowed predictor, pictures and `wavecl predict`."""

from __future__ import annotations

import copy
import io
import json
from pathlib import Path

import av
import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image
from safetensors import safe_open
from safetensors.torch import load_file, save_file
from scipy import ndimage

import wavecl.amp
import wavecl.inference.prediction_folder as folder_module
from wavecl.amp import decide_precision
from wavecl.checkpoint import save_checkpoint
from wavecl.config import apply_overrides, load_config
from wavecl.data.synthetic import sample_synthetic_video
from wavecl.data.video_files import VideoWriter, iter_video_frames, read_video_frames, write_video
from wavecl.inference.overlay import (
    contact_sheet,
    legend_height,
    overlay_masks,
    save_png,
    sentence_colors,
    title_height,
)
from wavecl.inference.prediction_folder import EvenSample, predict_video, sentence_slug, sheet_title
from wavecl.inference.predictor import VideoPredictor
from wavecl.inference_settings import InferenceSettings
from wavecl.model.output import NonFiniteOutputError
from wavecl.model.pretrained import resolve_pretrained, save_pretrained
from wavecl.model.wavecl import WaveCL
from wavecl.model.weights import CheckpointMismatchError
from wavecl.progress import progress_bar

TINY_CONFIG = "tiny"
HEIGHT, WIDTH = 48, 64
SHORT_SIZE, MAX_SIZE = 40, 64  # resizes 48x64 frames to 40x53: the resize and the way back are exercised
SENTENCES = ["the red circle moving to the left", "a blue square"]
SETTINGS = InferenceSettings(short_size=SHORT_SIZE, max_size=MAX_SIZE)  # recorded in pretrained_dir; linked windows
IMAGENET_MEAN = torch.tensor([0.485, 0.456, 0.406])
IMAGENET_STD = torch.tensor([0.229, 0.224, 0.225])


pytestmark = pytest.mark.usefixtures("single_thread")


@pytest.fixture(scope="module")
def frames() -> np.ndarray:
    """``[7, 48, 64, 3]`` uint8: moving coloured shapes over a textured background."""
    video, _ = sample_synthetic_video(seed=3, split="test", index=0, num_frames=7, size=(HEIGHT, WIDTH)).render()
    return video


@pytest.fixture(scope="module")
def pretrained_dir(tiny_eval_model: WaveCL, tmp_path_factory: pytest.TempPathFactory) -> Path:
    return save_pretrained(tiny_eval_model, tmp_path_factory.mktemp("pretrained") / "tiny", SETTINGS)


def predictor(model: WaveCL, window: int, **changes: object) -> VideoPredictor:
    return VideoPredictor(model, SETTINGS, progress=False, window=window, **changes)


def model_outputs(model: WaveCL, frames: np.ndarray) -> tuple[torch.Tensor, torch.Tensor]:
    """Raw mask and class logits for a fixed clip of 3 frames and both sentences."""
    clip = torch.from_numpy(frames[:3]).permute(0, 3, 1, 2).float() / 255
    clip = (clip - IMAGENET_MEAN[:, None, None]) / IMAGENET_STD[:, None, None]
    inputs = clip[:, None].expand(3, 2, 3, HEIGHT, WIDTH)
    with torch.inference_mode():
        output = model(
            inputs, torch.zeros(3, 2, HEIGHT, WIDTH, dtype=torch.bool), SENTENCES, torch.tensor([[HEIGHT, WIDTH]] * 2)
        )
    return output.pred_masks, output.pred_cls


def reference_window_masks(
    model: WaveCL, clip: np.ndarray, sentences: list[str], threshold: float = 0.5
) -> torch.Tensor:
    """``[N, T, H, W]`` masks of one window, computed step by step (docs/architecture.md#post-processing)."""
    resized_h, resized_w = 40, 53  # short side 40, long side int(40 * 64 / 48)
    tensors = [
        torch.from_numpy(np.array(Image.fromarray(frame).resize((resized_w, resized_h), Image.Resampling.BILINEAR)))
        for frame in clip
    ]
    video = torch.stack(tensors).permute(0, 3, 1, 2).float() / 255
    video = (video - IMAGENET_MEAN[:, None, None]) / IMAGENET_STD[:, None, None]
    T, N = len(clip), len(sentences)
    with torch.inference_mode():
        output = model(
            video[:, None].expand(T, N, 3, resized_h, resized_w),
            torch.zeros(T, N, resized_h, resized_w, dtype=torch.bool),
            [s.lower() for s in sentences],
            torch.tensor([[resized_h, resized_w]] * N),
        )
    masks = []
    for b in range(N):
        scores = output.pred_cls[:, b].sigmoid().mean(dim=0).max(dim=-1).values
        query = int(scores.argmax())
        logits = F.interpolate(
            output.pred_masks[:, b, query][None], size=(resized_h, resized_w), mode="bilinear", align_corners=False
        )
        binary = (logits.sigmoid() > threshold).float()
        masks.append(F.interpolate(binary, size=(HEIGHT, WIDTH), mode="nearest")[0] > 0.5)
    return torch.stack(masks)


# ----------------------------------------------------------------------------------------------- pictures


def outside_ring(mask: np.ndarray) -> np.ndarray:
    """Pixels outside ``mask`` with a 4-neighbour inside it, computed naively."""
    inside = np.pad(mask, 1, constant_values=False)
    touches = inside[:-2, 1:-1] | inside[2:, 1:-1] | inside[1:-1, :-2] | inside[1:-1, 2:]
    return ~mask & touches


def inner_contour(mask: np.ndarray) -> np.ndarray:
    """Pixels of ``mask`` with a 4-neighbour outside it (the image border counts as outside)."""
    outside = np.pad(~mask, 1, constant_values=True)
    return mask & (outside[:-2, 1:-1] | outside[2:, 1:-1] | outside[1:-1, :-2] | outside[1:-1, 2:])


def test_overlay_blends_fill_draws_opaque_contours_and_a_halo() -> None:
    frame = np.full((10, 12, 3), 100, dtype=np.uint8)
    masks = np.zeros((1, 10, 12), dtype=bool)
    masks[0, 3:7, 4:9] = True
    color = np.array([[200, 0, 40]], dtype=np.uint8)
    image = overlay_masks(frame, masks, color, alpha=0.5)

    contour = inner_contour(masks[0])
    interior = masks[0] & ~contour
    ring = outside_ring(masks[0])
    assert contour.sum() == 2 * 4 + 2 * 5 - 4 and interior.sum() == 2 * 3 and ring.sum() == 2 * 4 + 2 * 5
    assert (image[contour] == [200, 0, 40]).all()
    assert (image[interior] == [150, 50, 70]).all()
    assert (image[ring] == 255).all(), "a white halo around the mask on a dark frame"
    assert (image[~masks[0] & ~ring] == 100).all()
    assert (overlay_masks(np.full_like(frame, 200), masks, color)[ring] == 0).all(), "black on a light frame"
    assert (frame == 100).all(), "the input frame is not modified"


def test_overlay_keeps_two_sentences_on_one_object_apart() -> None:
    """Two sentences with the same mask: fill and outline alternate between both colours in stripes."""
    colors = sentence_colors(12)
    assert len({tuple(c) for c in colors}) == 12 and not (colors == 0).all(axis=1).any()
    frame = np.zeros((24, 24, 3), dtype=np.uint8)
    masks = np.zeros((2, 24, 24), dtype=bool)
    masks[:, 4:20, 4:20] = True
    image = overlay_masks(frame, masks, colors[:2], alpha=1.0)
    for region in (masks[0], inner_contour(masks[0])):
        shown = image[region]
        for color in colors[:2]:
            assert (shown == color).all(axis=1).mean() > 0.3, "each sentence's colour covers a good share"
        assert ((shown == colors[0]).all(axis=1) | (shown == colors[1]).all(axis=1)).all()
    with pytest.raises(ValueError, match=r"masks must be \[N, 24, 24\]"):
        overlay_masks(frame, np.ones((1, 24, 25), dtype=bool))


def test_overlay_on_an_object_of_the_mask_colour_stays_visible() -> None:
    """A mask over an object painted in the sentence's own colour: its halo still marks its extent."""
    color = sentence_colors(1)
    frame = np.full((20, 20, 3), 90, dtype=np.uint8)
    frame[2:18, 2:18] = color[0]  # the object
    mask = np.zeros((1, 20, 20), dtype=bool)
    mask[0, 5:15, 5:15] = True  # the predicted part of the object
    image = overlay_masks(frame, mask, color)
    ring = outside_ring(mask[0])
    difference = np.abs(image.astype(int) - frame.astype(int)).max(axis=-1)
    assert (difference[ring] >= 100).all(), "every halo pixel stands out from the object"


def test_contact_sheet_grid_title_legend_and_size() -> None:
    tiles = [np.full((6, 50, 3), (40 * (i + 1), 200, 30), dtype=np.uint8) for i in range(5)]  # not grey like text
    colors = np.array([[255, 0, 0], [0, 255, 0]], dtype=np.uint8)
    captions = [f"f{i}" for i in range(5)]
    sheet = contact_sheet(tiles, 2, ["first sentence", "second"], colors, captions, title="5 frames")
    top, legend = title_height("5 frames"), legend_height(2)
    assert legend >= 2 * 14 and top >= 14
    rows = (sheet.shape[0] - top - legend) // 3
    assert rows >= 6 + 14 and sheet.shape[0] == top + 3 * rows + legend and sheet.shape[1] > 2 * 50
    assert (sheet[:top] > 200).any(), "the title is written"
    for index, tile in enumerate(tiles):
        found = np.argwhere((sheet == tile[0, 0]).all(axis=-1))
        (y0, x0), (y1, x1) = found.min(axis=0), found.max(axis=0)
        assert (y1 - y0 + 1, x1 - x0 + 1) == (6, 50) and len(found) == 6 * 50, f"tile {index} is whole"
        assert (y0 - top) // rows == index // 2, "tiles fill rows in order"
        assert (x0 < sheet.shape[1] // 2) == (index % 2 == 0), "two tiles per row, left then right"
        assert (sheet[y0 - 14 : y0, x0 : x0 + 50] > 200).any(), f"caption {index} is written above its tile"
    assert (sheet[top + 2 * rows : top + 3 * rows, sheet.shape[1] // 2 :] == 0).all(), "the unused cell is black"
    band = sheet[sheet.shape[0] - legend :]
    for color in colors:
        assert (band == color).all(axis=-1).sum() >= 12 * 12, "a full swatch of each sentence's colour"
    grey = (band[..., 0] == band[..., 1]) & (band[..., 1] == band[..., 2])
    assert (grey & (band[..., 0] > 200)).sum() > 20, "legend text is drawn (light grey, anti-aliased)"
    plain = contact_sheet(tiles[:2], columns=3)
    assert plain.shape[1] > 3 * 50 and plain.shape[0] < top + rows + 1


def test_save_png_is_atomic_and_lossless(tmp_path: Path) -> None:
    image = np.random.default_rng(0).integers(0, 256, (5, 7, 3), dtype=np.uint8)
    save_png(tmp_path / "a" / "image.png", image)
    assert (np.asarray(Image.open(tmp_path / "a" / "image.png")) == image).all()
    assert [p.name for p in (tmp_path / "a").iterdir()] == ["image.png"]
    with pytest.raises(ValueError, match="image.png"):
        save_png(tmp_path / "image.png", image.astype(np.float32))


def test_even_sample_is_bounded_and_spread() -> None:
    for count in (1, 5, 8, 9, 100, 1001):
        sample = EvenSample(8)
        built = []
        for index in range(count):
            sample.offer(index, lambda index=index, built=built: built.append(index) or np.array([index]))
            assert len(sample._kept) <= 16
        picked = [index for index, _ in sample.items()]
        assert len(picked) == min(8, count)
        assert picked == sorted(set(picked)) and picked[0] == 0
        if count >= 8:
            assert picked[-1] >= 0.75 * count and max(np.diff(picked)) <= count / 4
        assert len(built) <= count


def test_sentence_slug() -> None:
    assert sentence_slug("A man, falls down   suddenly!") == "a_man_falls_down_suddenly"
    assert sentence_slug("???") == "sentence"
    assert len(sentence_slug("word " * 30)) <= 40


# ------------------------------------------------------------------------------------------- video I/O


def test_streaming_reader_and_writer_match_whole_video_io(tmp_path: Path, frames: np.ndarray) -> None:
    with VideoWriter(tmp_path / "stream.mp4", fps=10) as writer:
        for frame in frames:
            writer.write(frame)
    write_video(tmp_path / "whole.mp4", list(frames), fps=10)
    streamed = [np.asarray(image) for image in iter_video_frames(tmp_path / "stream.mp4")]
    whole = [np.asarray(image) for image in read_video_frames(tmp_path / "whole.mp4")]
    assert len(streamed) == len(whole) == len(frames)
    assert all((a == b).all() for a, b in zip(streamed, whole))

    with pytest.raises(RuntimeError):
        with VideoWriter(tmp_path / "aborted.mp4", fps=10) as writer:
            writer.write(frames[0])
            raise RuntimeError("stop")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["stream.mp4", "whole.mp4"]


def test_video_writer_pads_odd_sizes_to_even_yuv420p_for_browsers(tmp_path: Path) -> None:
    frame = np.zeros((15, 21, 3), np.uint8)
    frame[-1], frame[:, -1] = 200, 80  # the last row and column, which the padding repeats
    with VideoWriter(tmp_path / "even.mp4", fps=10, pad_to_even=True) as writer:
        for _ in range(3):
            writer.write(frame)
        with pytest.raises(ValueError, match=r"frame 3 .*even.mp4 must be uint8 \[15, 21, 3\]"):
            writer.write(np.zeros((16, 22, 3), np.uint8))
    with av.open(str(tmp_path / "even.mp4")) as container:
        stream = container.streams.video[0]
        assert (stream.codec_context.name, stream.codec_context.pix_fmt) == ("h264", "yuv420p")
        assert (stream.width, stream.height) == (22, 16)
    decoded = np.asarray(read_video_frames(tmp_path / "even.mp4")[0], dtype=int)
    assert decoded.shape == (16, 22, 3)
    assert np.abs(decoded[-1, :-2] - 200).max() <= 12 and np.abs(decoded[1:-2, -1] - 80).max() <= 12


# ---------------------------------------------------------------------------------- pretrained folders


def test_save_then_load_pretrained_gives_identical_outputs(
    tiny_eval_model: WaveCL, pretrained_dir: Path, frames: np.ndarray
) -> None:
    assert sorted(p.name for p in pretrained_dir.iterdir()) == [
        "README.md",
        "config.json",
        "model.safetensors",
        "preprocessor_config.json",
        "text_encoder",
    ]
    assert not list((pretrained_dir / "text_encoder").glob("*.safetensors")) and not list(
        (pretrained_dir / "text_encoder").glob("*.bin")
    )
    with safe_open(pretrained_dir / "model.safetensors", "pt") as handle:
        keys = set(handle.keys())
    assert "bbox_embed.0.layers.0.weight" in keys and not any(
        k.startswith("transformer.decoder.bbox_embed") for k in keys
    )
    assert any(k.startswith("text_encoder.") for k in keys)

    loaded = WaveCL.from_pretrained(pretrained_dir)
    assert not loaded.training
    for name, tensor in tiny_eval_model.state_dict().items():
        assert torch.equal(loaded.state_dict()[name], tensor), name
    for expected, actual in zip(model_outputs(tiny_eval_model, frames), model_outputs(loaded, frames)):
        assert torch.equal(expected, actual)


def test_save_pretrained_replaces_its_own_folder_but_not_foreign_files(tiny_eval_model: WaveCL, tmp_path: Path) -> None:
    target = tmp_path / "model"
    save_pretrained(tiny_eval_model, target, SETTINGS)
    tiny_eval_model.save_pretrained(target)  # the model's own settings
    assert sorted(p.name for p in target.iterdir()) == [
        "README.md",
        "config.json",
        "model.safetensors",
        "preprocessor_config.json",
        "text_encoder",
    ]
    assert [p.name for p in tmp_path.iterdir()] == ["model"], "no temporary folder is left behind"
    (target / "notes.txt").write_text("mine")
    with pytest.raises(ValueError, match=r"refusing to overwrite .*notes\.txt"):
        save_pretrained(tiny_eval_model, target, SETTINGS)
    assert (target / "notes.txt").read_text() == "mine"


def test_load_from_training_run_resolves_last_or_newest_checkpoint(
    tiny_eval_model: WaveCL, tmp_path: Path, frames: np.ndarray
) -> None:
    run = tmp_path / "run"
    run.mkdir()
    (run / "config.yaml").write_text(load_config(TINY_CONFIG).to_yaml())
    state = tiny_eval_model.state_dict()
    older = {name: tensor + 1 if name == "query_embed.weight" else tensor for name, tensor in state.items()}
    save_checkpoint(run / "checkpoints", 1, older, {"epoch": 1})
    save_checkpoint(run / "checkpoints", 2, state, {"epoch": 2})
    (run / "checkpoints" / "last").write_text("epoch_0001\n")
    from_last = WaveCL.from_pretrained(run)
    assert torch.equal(from_last.query_embed.weight, older["query_embed.weight"])

    (run / "checkpoints" / "last").unlink()
    from_newest = WaveCL.from_pretrained(run)
    for expected, actual in zip(model_outputs(tiny_eval_model, frames), model_outputs(from_newest, frames)):
        assert torch.equal(expected, actual)
    from_file = WaveCL.from_pretrained(run / "checkpoints" / "epoch_0001" / "model.safetensors")
    assert torch.equal(from_file.query_embed.weight, older["query_embed.weight"])

    exported = WaveCL.export_pretrained(run, tmp_path / "exported")
    recorded = resolve_pretrained(exported).inference_settings
    assert (recorded.short_size, recorded.max_size) == (64, 96), "the run's eval resize travels with the weights"
    assert recorded.window == resolve_pretrained(run).inference_settings.window == 4, "and its window"
    assert WaveCL.from_pretrained(exported).inference_settings == recorded, "the loaded model remembers them"
    for expected, actual in zip(
        model_outputs(tiny_eval_model, frames), model_outputs(WaveCL.from_pretrained(exported), frames)
    ):
        assert torch.equal(expected, actual)


def test_mismatched_checkpoint_lists_keys_and_names_the_file(pretrained_dir: Path, tmp_path: Path) -> None:
    wrong_config = tmp_path / "wrong_config"
    wrong_config.mkdir()
    for name in ("model.safetensors", "text_encoder"):
        (wrong_config / name).symlink_to(pretrained_dir / name)
    config = json.loads((pretrained_dir / "config.json").read_text())
    config["num_queries"] = 7
    (wrong_config / "config.json").write_text(json.dumps(config))
    with pytest.raises(
        CheckpointMismatchError,
        match=r"(?s)wrong_config/model\.safetensors.*shape mismatch"
        r".*query_embed\.weight: file \[5, 128\], model \[7, 128\]",
    ):
        WaveCL.from_pretrained(wrong_config)

    edited = tmp_path / "edited"
    edited.mkdir()
    for name in ("config.json", "text_encoder"):
        (edited / name).symlink_to(pretrained_dir / name)
    tensors = load_file(pretrained_dir / "model.safetensors")
    del tensors["controller.layers.0.weight"]
    tensors["extra.weight"] = torch.zeros(2)
    save_file(tensors, edited / "model.safetensors")
    with pytest.raises(
        CheckpointMismatchError,
        match=r"(?s)missing: 1 key.*controller\.layers\.0\.weight.*unexpected: 1 key.*extra\.weight",
    ):
        WaveCL.from_pretrained(edited)


def test_a_loaded_model_runs_at_its_recorded_size_unless_told_otherwise(
    tiny_eval_model: WaveCL, tmp_path: Path, frames: np.ndarray
) -> None:
    """A model saved with small sizes is run at those sizes by ``VideoPredictor(model)`` (README's route)."""
    small = InferenceSettings(short_size=24, max_size=40, window=5)
    folder = save_pretrained(tiny_eval_model, tmp_path / "small", small)
    assert json.loads((folder / "preprocessor_config.json").read_text()) == {
        "short_size": 24,
        "max_size": 40,
        "window": 5,
    }
    loaded = WaveCL.from_pretrained(folder)
    assert loaded.inference_settings == small
    clips = []
    hook = loaded.backbone.register_forward_hook(lambda module, inputs, output: clips.append(inputs[0].shape))
    try:
        own = VideoPredictor(loaded, progress=False)
        own(frames, SENTENCES)
        VideoPredictor(loaded, progress=False, short_size=32, overlap=0)(frames, SENTENCES)
    finally:
        hook.remove()
    assert own.settings == small
    # [B, T, 3, H, W]: 48x64 frames at short side 24 are 24x32 (32 asked: 30x40 under the recorded cap of 40);
    # windows of 5 sharing 1 frame cover frames 0-4 and 4-6, disjoint ones 0-4 and 5-6
    assert [tuple(shape[1:2]) + tuple(shape[-2:]) for shape in clips] == [
        (5, 24, 32),
        (3, 24, 32),
        (5, 30, 40),
        (2, 30, 40),
    ]
    (folder / "preprocessor_config.json").write_text(json.dumps({"short_size": 24, "max_size": "wide"}))
    with pytest.raises(ValueError, match=r"preprocessor_config\.json: 'max_size' must be an integer or null"):
        WaveCL.from_pretrained(folder)
    (folder / "preprocessor_config.json").write_text(json.dumps({"short_size": 24, "max_size": 16}))
    with pytest.raises(ValueError, match=r"preprocessor_config\.json: .*max_size must be None or >= short_size"):
        WaveCL.from_pretrained(folder)


def test_load_pretrained_errors_name_the_path(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="nowhere"):
        WaveCL.from_pretrained(tmp_path / "nowhere")
    (tmp_path / "empty").mkdir()
    with pytest.raises(FileNotFoundError, match="empty"):
        WaveCL.from_pretrained(tmp_path / "empty")


# ----------------------------------------------------------------------------------------- the predictor


def test_predictor_on_mp4_and_frame_folder_gives_original_size_masks(
    tiny_eval_model: WaveCL, frames: np.ndarray, tmp_path: Path
) -> None:
    write_video(tmp_path / "clip.mp4", list(frames), fps=8)
    folder = tmp_path / "frames"
    for index, frame in enumerate(frames):
        save_png(folder / f"{index}.png", frame)  # 10.png must not sort before 2.png: natural order
    model = predictor(tiny_eval_model, window=4)
    from_mp4 = model(tmp_path / "clip.mp4", SENTENCES)
    from_folder = model(folder, SENTENCES)
    from_array = model(frames, SENTENCES)
    for masks in (from_mp4, from_folder, from_array):
        assert masks.shape == (2, len(frames), HEIGHT, WIDTH) and masks.dtype == torch.bool
    assert torch.equal(from_folder, from_array), "PNG frames are lossless"


@pytest.mark.parametrize("link_weight", [0.0, 1.0])
def test_disjoint_windows_equal_the_window_by_window_reference(
    tiny_eval_model: WaveCL, frames: np.ndarray, link_weight: float
) -> None:
    """Without overlap nothing links the windows, whatever the weight: each picks its own best query."""
    masks = predictor(tiny_eval_model, window=3, overlap=0, link_weight=link_weight)(frames, SENTENCES)
    reference = torch.cat(
        [reference_window_masks(tiny_eval_model, frames[s : s + 3], SENTENCES) for s in (0, 3, 6)], dim=1
    )
    assert 0 < reference.float().mean() < 1, "the reference masks are not trivially constant"
    assert torch.equal(masks, reference)
    separately = torch.cat(
        [predictor(tiny_eval_model, window=8)(frames[s : s + 3], SENTENCES) for s in (0, 3, 6)], dim=1
    )
    assert torch.equal(masks, separately)


def test_predictor_threshold_matches_the_reference(tiny_eval_model: WaveCL, frames: np.ndarray) -> None:
    low, high = (
        VideoPredictor(tiny_eval_model, SETTINGS, progress=False, threshold=t)(frames, SENTENCES) for t in (0.3, 0.7)
    )
    assert torch.equal(low, reference_window_masks(tiny_eval_model, frames, SENTENCES, threshold=0.3))
    assert torch.equal(high, reference_window_masks(tiny_eval_model, frames, SENTENCES, threshold=0.7))
    assert high.sum() < low.sum()
    with pytest.raises(ValueError, match="threshold"):
        VideoPredictor(tiny_eval_model, threshold=1.0)


def test_predictor_runs_the_backbone_once_per_window_whatever_the_sentences(
    tiny_eval_model: WaveCL, frames: np.ndarray
) -> None:
    """7 frames in windows of 3: three backbone passes on one clip each, for 3 sentences sent 2 at a time;
    the masks equal the per-sentence computation."""
    sentences = [*SENTENCES, "the background"]
    calls = []
    hook = tiny_eval_model.backbone.register_forward_hook(lambda module, inputs, output: calls.append(inputs[0].shape))
    try:
        chunked = VideoPredictor(tiny_eval_model, SETTINGS, progress=False, window=3, overlap=0, sentences_per_pass=2)(
            frames, sentences
        )
    finally:
        hook.remove()
    assert [tuple(shape[:2]) for shape in calls] == [(1, 3), (1, 3), (1, 1)]  # [B, T]: one clip per window
    alone = [
        torch.cat([reference_window_masks(tiny_eval_model, frames[s : s + 3], [text]) for s in (0, 3, 6)], dim=1)
        for text in sentences
    ]
    assert torch.equal(chunked, torch.cat(alone))
    with pytest.raises(ValueError, match="sentences_per_pass must be a positive integer"):
        VideoPredictor(tiny_eval_model, sentences_per_pass=0)


def test_predict_stream_yields_every_frame_in_order(tiny_eval_model: WaveCL, frames: np.ndarray) -> None:
    stream = list(predictor(tiny_eval_model, window=3).predict_stream(frames, "a blue square"))
    assert [index for index, _, _ in stream] == list(range(len(frames)))
    for index, frame, masks in stream:
        assert (np.asarray(frame) == frames[index]).all()
        assert masks.shape == (1, HEIGHT, WIDTH)


def test_predictor_errors_name_the_problem(tiny_eval_model: WaveCL, frames: np.ndarray, tmp_path: Path) -> None:
    model = predictor(tiny_eval_model, window=4)
    corrupt = tmp_path / "corrupt.mp4"
    corrupt.write_bytes(np.random.default_rng(0).integers(0, 256, 4096, dtype=np.uint8).tobytes())
    with pytest.raises(ValueError, match="corrupt.mp4"):
        model(corrupt, SENTENCES)
    with pytest.raises(FileNotFoundError, match="missing.mp4"):
        model(tmp_path / "missing.mp4", SENTENCES)
    with pytest.raises(ValueError, match=r"sentence 1 \('   '\)"):
        model(frames, ["a dog", "   "])
    with pytest.raises(ValueError, match="no sentences"):
        model(frames, [])
    with pytest.raises(ValueError, match="no frames"):
        model(frames[:0], SENTENCES)
    (tmp_path / "empty").mkdir()
    with pytest.raises(ValueError, match="no frames .* in folder .*empty"):
        model(tmp_path / "empty", SENTENCES)
    mixed = tmp_path / "mixed"
    save_png(mixed / "0.png", frames[0])
    save_png(mixed / "1.png", frames[1][:, :32])
    with pytest.raises(ValueError, match="frame 1 of .*mixed is 32x48"):
        model(mixed, SENTENCES)
    with pytest.raises(ValueError, match="window"):
        VideoPredictor(tiny_eval_model, window=0)
    with pytest.raises(ValueError, match=r"overlap must be in \[0, window=4\), got 4"):
        VideoPredictor(tiny_eval_model, window=4, overlap=4)
    with pytest.raises(TypeError, match="unknown inference settings: windows"):
        VideoPredictor(tiny_eval_model, windows=4)


def test_predictor_refuses_nonfinite_outputs_naming_the_frames(tiny_eval_model: WaveCL, frames: np.ndarray) -> None:
    broken = copy.deepcopy(tiny_eval_model)
    with torch.no_grad():
        for head in broken.class_embed:
            head.bias.fill_(float("nan"))
    with pytest.raises(NonFiniteOutputError, match=r"\['pred_cls'\] .* frames 0 to 3 of video array"):
        predictor(broken, window=4)(frames, SENTENCES)


def test_predictor_casts_each_weight_once_under_cpu_bfloat16(
    tiny_eval_model: WaveCL, frames: np.ndarray, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Under CPU bfloat16 autocast the linear weights are cast once for the predictor's life: the copies of
    the first call's windows are those of the second call; in float32 there are none."""
    monkeypatch.setattr(wavecl.amp, "cpu_bf16_is_native", lambda: True)
    bf16 = predictor(tiny_eval_model, window=2, amp="bf16")
    assert bf16.precision.autocast_dtype == torch.bfloat16

    def copies() -> dict[int, int]:
        return {id(weight): id(kept) for weight, (_, kept) in bf16.bfloat16_weights.copies.items()}

    bf16(frames, SENTENCES)
    first = copies()
    linears = [module.weight for module in tiny_eval_model.modules() if isinstance(module, torch.nn.Linear)]
    assert sum(id(weight) in first for weight in linears) > 50
    bf16(frames, SENTENCES)
    assert copies() == first
    off = predictor(tiny_eval_model, window=2)
    off(frames, SENTENCES)
    assert len(off.bfloat16_weights.copies) == 0


def test_cuda_request_without_cuda_is_an_error(tiny_eval_model: WaveCL, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with pytest.raises(ValueError, match="device 'cuda' was requested but this process sees no GPU"):
        VideoPredictor(tiny_eval_model, device="cuda", amp="bf16", progress=False)
    automatic = VideoPredictor(tiny_eval_model, device="auto", amp="bf16", progress=False)
    # the CPU's policy: bf16 where this CPU has bfloat16 instructions, float32 elsewhere (tests/test_amp.py)
    assert automatic.device == torch.device("cpu") and automatic.precision == decide_precision("bf16", automatic.device)


def test_predict_video_refuses_cuda_before_reading_weights(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    missing = tmp_path / "no_such_checkpoint"  # the device is checked first, so this is never opened
    with pytest.raises(ValueError, match="device 'cuda' was requested"):
        predict_video(missing, tmp_path / "clip.mp4", ["a dog"], tmp_path / "out", device="cuda", progress=False)
    assert not (tmp_path / "out").exists()


# ------------------------------------------------------------------------------------- wavecl predict


def test_predict_video_writes_masks_overlay_video_and_contact_sheet(
    tiny_eval_model: WaveCL, pretrained_dir: Path, frames: np.ndarray, tmp_path: Path
) -> None:
    write_video(tmp_path / "clip.mp4", list(frames), fps=8)
    paths = predict_video(pretrained_dir, tmp_path / "clip.mp4", SENTENCES, tmp_path / "out", window=4, progress=False)

    assert paths.num_frames == len(frames)
    assert [p.name for p in paths.mask_dirs] == ["0_the_red_circle_moving_to_the_left", "1_a_blue_square"]
    decoded = np.stack([np.asarray(image) for image in read_video_frames(tmp_path / "clip.mp4")])
    expected = predictor(tiny_eval_model, window=4)(decoded, SENTENCES)
    for sentence, mask_dir in enumerate(paths.mask_dirs):
        files = sorted(mask_dir.iterdir())
        # a video file's frames are named by index and presentation time (8 frames per second)
        assert [f.name for f in files] == [f"{t:05d}_{t / 8:.3f}s.png" for t in range(len(frames))]
        for t, file in enumerate(files):
            image = Image.open(file)
            assert image.mode == "L"
            pixels = np.asarray(image)
            assert set(np.unique(pixels)) <= {0, 255}
            assert ((pixels == 255) == expected[sentence, t].numpy()).all()

    overlay = read_video_frames(paths.overlay_video)
    enlarged = 480 // WIDTH  # a small video is enlarged by a whole factor up to 480 pixels, legend under it
    assert len(overlay) == len(frames) and overlay[0].width == enlarged * WIDTH
    assert overlay[0].height > enlarged * HEIGHT + 2 * 14

    sheet = np.asarray(Image.open(paths.contact_sheet))
    tile = 320 // WIDTH  # tiles are enlarged up to 320 pixels
    assert sheet.shape[1] > 4 * tile * WIDTH and sheet.shape[0] > 2 * tile * HEIGHT + title_height("x") + legend_height(
        2
    )
    assert paths.sheet_frames == [f.stem for f in files] and paths.settings.window == 4
    assert sorted(p.name for p in paths.out_dir.iterdir()) == ["contact_sheet.png", "masks", "overlay.mp4"]


def test_interrupted_predict_leaves_the_previous_output_whole(
    pretrained_dir: Path, frames: np.ndarray, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A prediction stopped half-way changes nothing; a finished one replaces the previous masks whole
    (no sentence of the earlier prediction is left beside the new one) and leaves other files alone."""
    write_video(tmp_path / "clip.mp4", list(frames), fps=8)
    out = tmp_path / "out"
    predict_video(pretrained_dir, tmp_path / "clip.mp4", SENTENCES, out, window=4, progress=False)
    (out / "notes.txt").write_text("mine")

    def files() -> dict[str, bytes]:
        return {str(path.relative_to(out)): path.read_bytes() for path in sorted(out.rglob("*")) if path.is_file()}

    before = files()
    write, calls = folder_module.save_png, []

    def interrupt_midway(path, image):
        calls.append(path)
        if len(calls) == 3:
            raise KeyboardInterrupt
        write(path, image)

    with monkeypatch.context() as patch:
        patch.setattr(folder_module, "save_png", interrupt_midway)
        with pytest.raises(KeyboardInterrupt):
            predict_video(pretrained_dir, tmp_path / "clip.mp4", ["a green ball"], out, window=4, progress=False)
    assert files() == before  # hidden temporaries included

    paths = predict_video(pretrained_dir, tmp_path / "clip.mp4", ["a green ball"], out, window=4, progress=False)
    assert [path.name for path in (out / "masks").iterdir()] == ["0_a_green_ball"] == [p.name for p in paths.mask_dirs]
    assert len(list(paths.mask_dirs[0].iterdir())) == len(frames)
    assert sorted(path.name for path in out.iterdir()) == ["contact_sheet.png", "masks", "notes.txt", "overlay.mp4"]
    assert (out / "notes.txt").read_text() == "mine"
    assert files()["overlay.mp4"] != before["overlay.mp4"]


def test_predict_video_on_a_turned_phone_video_writes_upright_masks_and_overlay(
    tiny_eval_model: WaveCL, pretrained_dir: Path, frames: np.ndarray, tmp_path: Path
) -> None:
    """The stored frames are sideways and the file asks to be shown turned 90 degrees counter-clockwise:
    masks and overlay must be those of the upright video, not of the stored pixels."""
    write_video(tmp_path / "stored.mp4", list(frames), fps=8)
    with av.open(str(tmp_path / "stored.mp4")) as source, av.open(str(tmp_path / "phone.mp4"), "w") as target:
        stream = target.add_stream_from_template(source.streams.video[0])
        stream.set_display_rotation(90)
        for packet in source.demux(source.streams.video[0]):
            if packet.dts is not None:
                packet.stream = stream
                target.mux(packet)
    stored = np.stack([np.asarray(image) for image in read_video_frames(tmp_path / "stored.mp4")])
    upright = np.ascontiguousarray(np.rot90(stored, k=1, axes=(1, 2)))  # [T, W, H, 3]

    paths = predict_video(pretrained_dir, tmp_path / "phone.mp4", SENTENCES, tmp_path / "out", window=4, progress=False)
    expected = predictor(tiny_eval_model, window=4)(upright, SENTENCES)
    assert expected.shape == (2, len(frames), WIDTH, HEIGHT)
    for sentence, mask_dir in enumerate(paths.mask_dirs):
        for t in range(len(frames)):
            pixels = np.asarray(Image.open(mask_dir / f"{t:05d}_{t / 8:.3f}s.png"))
            assert pixels.shape == (WIDTH, HEIGHT) and ((pixels == 255) == expected[sentence, t].numpy()).all()

    overlay = np.stack([np.asarray(image) for image in read_video_frames(paths.overlay_video)]).astype(float)
    enlarged = 480 // WIDTH  # the upright frames are WIDTH tall: enlarged by a whole factor, legend under them
    assert overlay.shape[1] > enlarged * WIDTH and overlay.shape[2] == enlarged * HEIGHT
    picture = overlay[:, : enlarged * WIDTH]
    reference = upright.repeat(enlarged, axis=1).repeat(enlarged, axis=2).astype(float)
    near_masks = ndimage.binary_dilation(expected.any(dim=0).numpy(), structure=np.ones((1, 3, 3)), iterations=2)
    away = ~near_masks.repeat(enlarged, axis=1).repeat(enlarged, axis=2)
    assert away.mean() > 0.2, "enough of the frames is left unpainted to compare"
    error = np.abs(picture - reference)[away].mean()
    upside_down = np.abs(picture - reference[:, ::-1, ::-1])[away].mean()
    assert error < 8 and error < upside_down / 3, "the overlay is the upright video, up to lossy coding"


def test_predict_names_masks_after_the_frames_of_a_folder(
    tiny_eval_model: WaveCL, frames: np.ndarray, tmp_path: Path
) -> None:
    """A folder of non-contiguous frame names: each mask is named after its frame (natural order), the
    window and the resize come from the run, and the contact sheet lists the frames it shows."""
    folder = tmp_path / "frames"
    folder.mkdir()
    names = ["img_7", "img_12", "img_100", "img_1005", "img_2000"]  # natural order, not the sorted-string one
    for name, frame in zip(names, frames):
        Image.fromarray(frame).save(folder / f"{name}.png")
    run = tmp_path / "run"
    config = apply_overrides(
        load_config(TINY_CONFIG),
        {"data.window_size": 3, "data.eval_short_size": SHORT_SIZE, "data.eval_max_size": MAX_SIZE},
    )
    save_checkpoint(run / "checkpoints", 0, tiny_eval_model.state_dict(), {"epoch": 0})
    (run / "config.yaml").write_text(config.to_yaml())

    paths = predict_video(run, folder, SENTENCES, tmp_path / "out", progress=False)
    assert paths.settings.window == 3 and paths.num_frames == len(names)
    expected = predictor(tiny_eval_model, window=3)(frames[: len(names)], SENTENCES)
    for sentence, mask_dir in enumerate(paths.mask_dirs):
        assert sorted(p.name for p in mask_dir.iterdir()) == sorted(f"{name}.png" for name in names)
        for t, name in enumerate(names):
            assert ((np.asarray(Image.open(mask_dir / f"{name}.png")) == 255) == expected[sentence, t].numpy()).all()
    assert paths.sheet_frames == names
    assert sheet_title(5, 5) == "all 5 frames" and sheet_title(8, 240).startswith("8 of 240 frames")

    Image.fromarray(frames[0]).save(folder / "img_7.jpg")
    with pytest.raises(ValueError, match=r"frames img_7.jpg and img_7.png in .*frames have the same name 'img_7'"):
        predict_video(run, folder, SENTENCES, tmp_path / "again", progress=False)


def test_progress_is_a_live_bar_on_a_terminal_and_lines_in_a_log() -> None:
    class Terminal(io.StringIO):
        def isatty(self) -> bool:
            return True

    log = io.StringIO()
    with progress_bar(total=2000, desc="frames", stream=log) as bar:
        for _ in range(2000):
            bar.update(1)
    written = log.getvalue()
    assert "\r" not in written and written.endswith("\n")
    lines = written.splitlines()
    assert 1 <= len(lines) <= 3 and "2000/2000" in lines[-1], lines
    terminal = Terminal()
    with progress_bar(total=20, desc="frames", stream=terminal, mininterval=0) as bar:
        for _ in range(20):
            bar.update(1)
    assert terminal.getvalue().count("\r") >= 10, "a terminal gets a bar redrawn in place"
