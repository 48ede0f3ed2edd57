"""Linked windows on controlled model outputs: a stub network sees two look-alike objects and, in some
windows, scores the wrong one higher; linking keeps the object, weight 0 chooses window by window."""

from __future__ import annotations

import dataclasses
import math
import weakref
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from torch import Tensor, nn

from wavecl.config import Config, DataConfig
from wavecl.data.synthetic import write_synthetic_ytvos
from wavecl.distributed import DistInfo
from wavecl.evaluation.protocols import evaluate_model
from wavecl.inference.predictor import VideoPredictor
from wavecl.inference_settings import InferenceSettings
from wavecl.model.linking import LinkedQueries, mask_agreement
from wavecl.model.output import WaveCLOutput

HEIGHT, WIDTH = 32, 48
SETTINGS = InferenceSettings(short_size=HEIGHT, max_size=WIDTH, window=4, overlap=1, link_weight=1.0)
IMAGENET_MEAN, IMAGENET_STD = 0.485, 0.229  # red channel
LEVELS = 32  # frame i is uniform grey of level 8 * (i % 32), which survives JPEG: the stub reads i from it
# stride-4 boxes (rows, columns) of the two look-alikes and of a third, unlikely query
BOXES = {"A": (slice(2, 6), slice(1, 5)), "B": (slice(2, 6), slice(7, 11)), "C": (slice(7, 8), slice(0, 12))}
TRAPS = frozenset(range(6, 13))  # frames where the stub scores B, the wrong look-alike, higher than A


def frame_scores(frame: int) -> dict[str, float]:
    """Per-frame probability that each query is the referred object (A is)."""
    return {"A": 0.6, "B": 0.9, "C": 0.1} if frame in TRAPS else {"A": 0.7, "B": 0.5, "C": 0.1}


class LookAlikeStub(nn.Module):
    """The steps of :class:`VideoPredictor`'s and evaluation's network, with chosen outputs.

    Each clip tells its frames by their grey level. Query slots do not follow objects: in clips starting at
    an odd multiple of 3 the slots of A and B swap, as a real network's slots do between clips.

    Args:
        objects: the objects the queries see (``"A"``, ``"B"``, ``"C"``), in slot order.
    """

    def __init__(self, objects: Sequence[str] = ("A", "B", "C")) -> None:
        super().__init__()
        self.objects = list(objects)
        self.anchor = nn.Parameter(torch.zeros(()))
        self.inference_settings = SETTINGS
        self.clips: list[list[int]] = []

    def check_sentences(self, texts: Sequence[str], names: Sequence[str]) -> None:
        """Every sentence is accepted."""

    def encode_video(self, inputs: Tensor, pad_mask: Tensor, valid_indices: Tensor | None = None) -> Tensor:
        """``[T, U]`` frame indices of the ``U`` clips of ``inputs [T, U, 3, H, W]``."""
        level = (inputs[:, :, 0, 0, 0].float() * IMAGENET_STD + IMAGENET_MEAN) * 255
        frames = (level / 8).round().long()
        self.clips += frames.T.tolist()
        return frames

    def encode_sentences(self, texts: Sequence[str], device: torch.device) -> int:
        return len(texts)

    def slots(self, first_frame: int) -> list[str]:
        swapped = (first_frame // 3) % 2 == 1 and {"A", "B"} <= set(self.objects)
        return [{"A": "B", "B": "A"}.get(name, name) if swapped else name for name in self.objects]

    def segment(self, frames: Tensor, sentences: int, sizes: Tensor, clip_index: Tensor) -> WaveCLOutput:
        T, Q = len(frames), len(self.objects)
        h, w = math.ceil(HEIGHT / 4), math.ceil(WIDTH / 4)
        masks = torch.full((T, sentences, Q, h, w), -8.0)
        scores = torch.empty(T, sentences, Q, 1)
        for b in range(sentences):
            clip = frames[:, int(clip_index[b])].tolist()
            for q, name in enumerate(self.slots(clip[0])):
                masks[:, b, q][(..., *BOXES[name])] = 8.0
                for t, frame in enumerate(clip):
                    scores[t, b, q] = math.log(frame_scores(frame)[name] / (1 - frame_scores(frame)[name]))
        return WaveCLOutput(
            masks, scores, torch.zeros(T, sentences, Q, 4), torch.zeros(sentences, Q, 8), torch.zeros(sentences, 8)
        )


def video(num_frames: int) -> np.ndarray:
    """``[T, H, W, 3]`` uint8: frame ``i`` is uniform grey of level ``8 * (i % 32)``."""
    levels = 8 * (np.arange(num_frames) % LEVELS)
    return np.broadcast_to(levels[:, None, None, None], (num_frames, HEIGHT, WIDTH, 3)).astype(np.uint8)


def object_masks(name: str, num_frames: int) -> Tensor:
    """``[T, H, W]`` masks of one object, from a stub that sees only it."""
    return VideoPredictor(LookAlikeStub([name]), progress=False)(video(num_frames), "it")[0]


def chosen_by_score(frames: range) -> str:
    """The object a window of ``frames`` chooses on its scores alone (the mean over its frames)."""
    means = {name: np.mean([frame_scores(frame)[name] for frame in frames]) for name in "ABC"}
    return max(means, key=means.__getitem__)


def window_by_window(num_frames: int, window: int, overlap: int) -> list[str]:
    """Each frame's object when every window chooses on its own and shared frames keep the earlier
    window's choice, computed from the windows' frame ranges."""
    owner: list[str] = []
    start = 0
    while len(owner) < num_frames:
        frames = range(start, min(start + window, num_frames))
        owner += [chosen_by_score(frames)] * (frames.stop - len(owner))
        start += window - overlap
    return owner


def expected_masks(owners: list[str], num_frames: int) -> Tensor:
    masks = {name: object_masks(name, num_frames) for name in set(owners)}
    return torch.stack([masks[name][frame] for frame, name in enumerate(owners)])


def test_linked_windows_follow_the_object_where_scores_favour_its_look_alike() -> None:
    num_frames = 22
    stub = LookAlikeStub()
    linked = VideoPredictor(stub, progress=False)(video(num_frames), "the left one")[0]
    assert stub.clips[:3] == [[0, 1, 2, 3], [3, 4, 5, 6], [6, 7, 8, 9]], "windows of 4 sharing 1 frame"
    assert window_by_window(num_frames, 4, 1).count("B") == 6, "on its scores alone, two windows choose B"
    assert torch.equal(linked, object_masks("A", num_frames))
    assert 0 < linked.float().mean() < 0.5


@pytest.mark.parametrize("overlap", [0, 1, 2])
def test_weight_zero_chooses_window_by_window(overlap: int) -> None:
    """``link_weight=0``: each window its best-scoring query (with ``overlap=0``, the windows and choices
    of unlinked inference); shared frames keep the earlier window's masks."""
    num_frames = 22
    stub = LookAlikeStub()
    masks = VideoPredictor(stub, progress=False, overlap=overlap, link_weight=0.0)(video(num_frames), "the left one")
    owners = window_by_window(num_frames, 4, overlap)
    assert "B" in owners and "A" in owners
    assert torch.equal(masks[0], expected_masks(owners, num_frames))
    starts = [clip[0] for clip in stub.clips]
    assert starts == list(range(0, num_frames - overlap, 4 - overlap))


def test_without_overlap_a_weight_changes_nothing() -> None:
    unlinked = VideoPredictor(LookAlikeStub(), progress=False, overlap=0, link_weight=0.0)(video(22), "x")
    weighted = VideoPredictor(LookAlikeStub(), progress=False, overlap=0, link_weight=5.0)(video(22), "x")
    assert torch.equal(unlinked, weighted)


def test_frames_held_do_not_grow_with_the_video_length(monkeypatch: pytest.MonkeyPatch) -> None:
    """Whatever the length, at most one window of decoded frames is alive while frames stream out."""
    made: list[weakref.ref[Image.Image]] = []
    make = Image.fromarray

    def tracked(array: np.ndarray) -> Image.Image:
        image = make(array)
        made.append(weakref.ref(image))
        return image

    monkeypatch.setattr(Image, "fromarray", tracked)
    peaks = []
    for num_frames in (20, 200):
        peak = 0
        for _, frame, _ in VideoPredictor(LookAlikeStub(), progress=False).predict_stream(video(num_frames), "x"):
            del frame
            peak = max(peak, sum(ref() is not None for ref in made))
        peaks.append(peak)
    assert peaks[0] == peaks[1] <= SETTINGS.window + 1, peaks


def test_mask_agreement_is_the_iou_over_the_shared_frames() -> None:
    previous = torch.zeros(2, 4, 4, dtype=torch.bool)
    previous[0, :2, :2] = True  # 4 pixels on the first shared frame, none on the second
    candidates = torch.zeros(3, 2, 4, 4, dtype=torch.bool)
    candidates[0] = previous
    candidates[1, 0, :2, :] = True  # 8 pixels holding the 4
    candidates[1, 1, 3, 3] = True  # and one more on the second frame
    assert mask_agreement(candidates, previous).tolist() == pytest.approx([1.0, 4 / 9, 0.0])
    assert mask_agreement(candidates, torch.zeros_like(previous)).tolist() == [0.0, 0.0, 0.0]


def test_linked_queries_hold_only_the_shared_frames() -> None:
    stub = LookAlikeStub()
    link = LinkedQueries(overlap=2, link_weight=1.0)
    output = stub.segment(torch.arange(6)[:, None], 1, torch.tensor([[HEIGHT, WIDTH]]), torch.zeros(1))
    query = link.choose(output.pred_cls[:, 0], output.pred_masks[:, 0], (HEIGHT, WIDTH), (HEIGHT, WIDTH))
    assert stub.slots(0)[query] == "A"
    assert link.previous is not None and link.previous.shape == (2, HEIGHT, WIDTH)
    link.reset()
    assert link.previous is None


@pytest.mark.parametrize("linked", [True, False], ids=["linked", "parity"])
def test_windowed_evaluation_writes_the_predictors_masks(tmp_path: Path, linked: bool) -> None:
    """Ref-YouTube-VOS-layout evaluation with ``data.eval_overlap`` / ``eval_link_weight`` writes, for
    every expression, the masks the predictor gives with the same settings; the defaults are disjoint
    windows choosing on their own (the published protocols)."""
    num_frames = 22
    info = write_synthetic_ytvos(tmp_path / "data", 1, num_frames=num_frames, size=(HEIGHT, WIDTH), split="valid")
    clip = info.videos[0]
    frames_dir = tmp_path / "data" / "valid" / "JPEGImages" / clip.video_id
    for name, frame in zip(clip.frame_names, video(num_frames)):
        Image.fromarray(frame).save(frames_dir / f"{name}.jpg", quality=95)
    linking = {"eval_overlap": 1, "eval_link_weight": 1.0} if linked else {}
    data = dataclasses.replace(
        DataConfig(),
        dataset_name="ref_youtube_vos",
        root=str(tmp_path / "data"),
        window_size=4,
        eval_short_size=HEIGHT,
        eval_max_size=WIDTH,
        num_workers=0,
        **linking,
    )
    evaluate_model(LookAlikeStub(), Config(data=data), tmp_path / "eval", DistInfo(0, 1, 0, torch.device("cpu")))

    settings = {} if linked else {"overlap": 0, "link_weight": 0.0}
    expected = VideoPredictor(LookAlikeStub(), progress=False, **settings)(frames_dir, "x")[0]
    owners = ["A"] * num_frames if linked else window_by_window(num_frames, 4, 0)
    assert torch.equal(expected, expected_masks(owners, num_frames)), "the stub's frames survive JPEG"
    for expression in clip.expressions:
        folder = tmp_path / "eval" / "Annotations" / clip.video_id / expression.exp_id
        written = [np.asarray(Image.open(folder / f"{name}.png")) > 0 for name in clip.frame_names]
        assert torch.equal(torch.from_numpy(np.stack(written)), expected), expression.exp_id
