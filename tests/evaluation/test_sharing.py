"""Evaluation shares one backbone pass among the sentences about one clip: the batch sampler, the
detection of repeated clips in a batch, and whole Ref-YouTube-VOS / Ref-DAVIS17 / A2D inference
against the one-sample-per-forward loop."""

from __future__ import annotations

import dataclasses
import json

import pytest
import torch

import wavecl.evaluation.loop as loop_module
from wavecl.amp import PrecisionPolicy
from wavecl.config import load_config
from wavecl.data.a2d import A2DSentences
from wavecl.data.collate import collate_clips
from wavecl.data.davis import RefDAVIS17, convert_davis
from wavecl.data.transforms import ClipTransform
from wavecl.data.types import ClipSample, FrameTarget
from wavecl.data.ytvos import RefYouTubeVOS
from wavecl.distributed import DistInfo
from wavecl.evaluation.loop import run_evaluation
from wavecl.evaluation.sharing import SharedClipBatchSampler, VisualFeatureCache, clip_keys, group_by_key
from wavecl.model.linear import Bfloat16Weights, onednn_available
from wavecl.model.wavecl import WaveCL
from wavecl.testing.a2d import write_a2d_fixture
from wavecl.testing.davis import write_davis_fixture
from wavecl.testing.ytvos import write_ytvos_fixture

TINY = "tiny"


pytestmark = pytest.mark.usefixtures("single_thread")


# ------------------------------------------------------------------------------------------ sampler


def naive_batches(keys, rank, world_size, batch_size, sentences_per_pass):
    """The batching rule written out with explicit per-batch counters: each clip, in order of first
    appearance, goes to the rank holding the fewest samples so far (the lowest rank on a tie)."""
    order = []
    for key in keys:
        if key not in order:
            order.append(key)
    loads = {r: 0 for r in range(world_size)}
    mine = []
    for key in order:
        owner = min(loads, key=lambda r: (loads[r], r))
        loads[owner] += keys.count(key)
        if owner == rank:
            mine.append(key)
    capacity = max(batch_size, sentences_per_pass)
    batches, current, clips = [], [], set()
    for key in mine:
        group = [i for i, k in enumerate(keys) if k == key]
        fits = len(clips) < batch_size and len(current) + len(group) <= capacity
        if current and not fits:
            batches.append(current)
            current, clips = [], set()
        if len(group) > capacity:
            while group:
                batches.append(group[:capacity])
                group = group[capacity:]
            continue
        current = current + group
        clips.add(key)
    return batches + ([current] if current else [])


@pytest.mark.parametrize("world_size", [1, 2, 3])
@pytest.mark.parametrize("batch_size,per_pass", [(1, 1), (1, 4), (2, 3), (3, 1)])
def test_sampler_keeps_groups_together_and_covers_every_sample_once(world_size, batch_size, per_pass):
    keys = ["a", "a", "b", "c", "a", "c", "d", "e", "e", "e", "e", "e", "f", "b"]
    covered = []
    for rank in range(world_size):
        batches = list(SharedClipBatchSampler(keys, rank, world_size, batch_size, per_pass))
        assert batches == naive_batches(keys, rank, world_size, batch_size, per_pass)
        for batch in batches:
            assert len({keys[i] for i in batch}) <= batch_size
            assert len(batch) <= max(batch_size, per_pass)
        ranks_keys = {keys[i] for batch in batches for i in batch}
        for key in ranks_keys:  # a clip's samples all go to this rank
            assert all(keys[i] in ranks_keys for i in range(len(keys)) if keys[i] == key)
        covered += [i for batch in batches for i in batch]
    assert sorted(covered) == list(range(len(keys)))


def test_sampler_without_shared_clips_is_plain_sharding():
    keys = [("sample", i) for i in range(11)]
    for rank in range(3):
        batches = list(SharedClipBatchSampler(keys, rank, 3, batch_size=2, sentences_per_pass=4))
        mine = list(range(rank, 11, 3))
        assert batches == [mine[i : i + 2] for i in range(0, len(mine), 2)]
    assert group_by_key(["x", "y", "x"]) == [[0, 2], [1]]
    with pytest.raises(ValueError, match="must be positive"):
        SharedClipBatchSampler(keys, 0, 1, batch_size=0)


# --------------------------------------------------------------------------------- shared clips


def sample(frames, text, annotated=None, height=None):
    T, _, H, W = frames.shape
    targets = [None] * T
    if annotated is not None:
        mask = torch.zeros(1, H, W, dtype=torch.bool)
        targets[annotated] = FrameTarget(
            mask, torch.zeros(1, 4), torch.zeros(1, dtype=torch.long), False, (H, W), (H, W)
        )
    clip = frames if height is None else frames[:, :, :height]
    return ClipSample(clip, targets, text)


def test_shared_clips_finds_equal_entries_by_value():
    generator = torch.Generator().manual_seed(0)
    x, y = (torch.randn(3, 3, 8, 10, generator=generator) for _ in range(2))
    batch = collate_clips(
        [sample(x, "a"), sample(y, "b"), sample(x.clone(), "c"), sample(x, "d", height=6), sample(y, "e")]
    )
    shared = batch.shared_clips()
    # x cut to 6 rows is another clip: same values where defined, but padded
    assert shared.clips.tolist() == [0, 1, 3]
    assert shared.clip_index.tolist() == [0, 1, 0, 2, 1]
    assert shared.valid_indices is None
    for b, u in enumerate(shared.clip_index.tolist()):
        assert torch.equal(batch.frames[:, b], batch.frames[:, shared.clips[u]])

    annotated = collate_clips([sample(x, "a", 1), sample(x, "b", 1), sample(x, "c", 2), sample(y, "d", 1)])
    shared = annotated.shared_clips()
    assert shared.clips.tolist() == [0, 2, 3] and shared.clip_index.tolist() == [0, 0, 1, 2]
    assert shared.valid_indices.tolist() == [1, 3 + 2, 6 + 1]  # the annotated frame in (u t) order


def test_visual_feature_cache_encodes_again_only_for_other_inputs():
    calls = []

    def encode(frames, pad_mask, valid):
        calls.append(frames.shape)
        return len(calls)

    cache = VisualFeatureCache()
    frames, mask = torch.ones(2, 1, 3, 4, 4), torch.zeros(2, 1, 4, 4, dtype=torch.bool)
    assert cache.get(encode, frames, mask, None) == 1
    assert cache.get(encode, frames.clone(), mask.clone(), None) == 1
    assert cache.get(encode, frames, mask, torch.tensor([1])) == 2
    assert cache.get(encode, frames + 1, mask, torch.tensor([1])) == 3
    assert cache.encoded == 3


# ------------------------------------------------------------------------------------- end to end


class Recorder:
    """An evaluator that keeps every sentence's raw outputs by sample identity."""

    primary_metric = None

    def __init__(self, identity):
        self.identity = identity
        self.outputs = {}

    def update(self, outputs, batch):
        for b, meta in enumerate(batch.metadata):
            self.outputs[self.identity(meta)] = (outputs.pred_masks[:, b].clone(), outputs.pred_cls[:, b].clone())

    def summarize(self):
        return {"sentences": float(len(self.outputs))}


@pytest.fixture(scope="module")
def model():
    config = load_config(TINY).model
    torch.manual_seed(0)
    model = WaveCL(dataclasses.replace(config, sep_pooling="reference", fla_order="reference")).eval()
    generator = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for parameter in model.parameters():
            parameter.add_(0.02 * torch.randn(parameter.shape, generator=generator))
    return model


def backbone_batches(model):
    """Record the ``[B, T]`` of every backbone call."""
    calls = []
    handle = model.backbone.register_forward_hook(lambda m, inputs, output: calls.append(tuple(inputs[0].shape[:2])))
    return calls, handle


def evaluate(model, dataset, identity, rank=0, world_size=1, **keywords):
    recorder = Recorder(identity)
    calls, handle = backbone_batches(model)
    try:
        run_evaluation(model, dataset, recorder, DistInfo(rank, world_size, 0, torch.device("cpu")), **keywords)
    finally:
        handle.remove()
    return recorder.outputs, calls


def one_by_one(model, dataset, identity):
    """Today's loop: every sample alone through ``forward``."""
    outputs = {}
    with torch.inference_mode():
        for index in range(len(dataset)):
            batch = collate_clips([dataset[index]])
            valid, _ = batch.valid_frames()
            output = model(batch.frames, batch.pad_mask, batch.texts, batch.image_sizes, valid)
            outputs[identity(batch.metadata[0])] = (output.pred_masks[:, 0], output.pred_cls[:, 0])
    return outputs


def assert_same_outputs(actual, expected):
    assert actual.keys() == expected.keys()
    for key, (masks, classes) in expected.items():
        scale = float(masks.abs().max())
        torch.testing.assert_close(actual[key][0], masks, atol=1e-5 * scale, rtol=1e-4, msg=str(key))
        torch.testing.assert_close(actual[key][1], classes, atol=1e-5, rtol=1e-4, msg=str(key))


@pytest.fixture(scope="module")
def ytvos(tmp_path_factory):
    """The Ref-YouTube-VOS fixture with a third expression for ``val_a`` (7 frames; ``val_b`` has 3)."""
    root = tmp_path_factory.mktemp("data") / "ref-youtube-vos"
    write_ytvos_fixture(root)
    meta = root / "meta_expressions" / "valid" / "meta_expressions.json"
    expressions = json.loads(meta.read_text())
    expressions["videos"]["val_a"]["expressions"]["2"] = {"exp": "the small animal on the mat next to the door"}
    meta.write_text(json.dumps(expressions))
    transform = ClipTransform(train=False, short_size=24, max_size=40)
    return RefYouTubeVOS(root, "valid", window_size=3, transform=transform, num_classes=1)


def ytvos_identity(meta):
    return meta.video_id, meta.exp_id, meta.window_start


@pytest.mark.parametrize("per_pass", [1, 2, 4])
def test_ytvos_inference_runs_the_backbone_once_per_window(model, ytvos, per_pass):
    """val_a: 3 expressions x 3 windows (3, 3, 1 frames); val_b: 1 expression x 1 window."""
    assert len(ytvos) == 3 * 3 + 1
    outputs, calls = evaluate(model, ytvos, ytvos_identity, sentences_per_pass=per_pass)
    assert calls == [(1, 3), (1, 3), (1, 1), (1, 3)]
    assert_same_outputs(outputs, one_by_one(model, ytvos, ytvos_identity))


def test_cpu_bfloat16_evaluation_casts_each_linear_weight_once(model, ytvos, monkeypatch):
    """Under CPU bfloat16 autocast an evaluation keeps one bfloat16 copy of each linear weight for all its
    windows (:class:`~wavecl.model.linear.Bfloat16Weights`), a new evaluation makes new ones, and the
    outputs are the bfloat16 ones of each sample alone."""
    assert onednn_available(torch.bfloat16)  # probed before the count starts
    reorder, reordered, stores = torch.ops.mkldnn._reorder_linear_weight, [], []

    def counted(weight, *args):
        reordered.append(weight.shape)
        return reorder(weight, *args)

    class Recorded(Bfloat16Weights):
        def __init__(self) -> None:
            super().__init__()
            stores.append(self)

    monkeypatch.setattr(torch.ops.mkldnn, "_reorder_linear_weight", counted)
    monkeypatch.setattr(loop_module, "Bfloat16Weights", Recorded)
    bfloat16 = PrecisionPolicy("bf16", "cpu", torch.bfloat16)
    outputs, calls = evaluate(model, ytvos, ytvos_identity, precision=bfloat16)
    matrices = sorted(weight.shape for weight in stores[0].copies if weight.dim() == 2)
    assert len(calls) == 4 and len(matrices) > 50 and sorted(reordered) == matrices
    evaluate(model, ytvos, ytvos_identity, precision=bfloat16)
    assert len(stores) == 2 and len(reordered) == 2 * len(matrices)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        expected = one_by_one(model, ytvos, ytvos_identity)
    for key, (masks, _) in expected.items():
        scale = float(masks.abs().max())
        torch.testing.assert_close(outputs[key][0], masks, atol=2**-7 * scale, rtol=2**-7, msg=str(key))


def test_ytvos_inference_on_two_ranks_shares_windows_of_one_length_within_each_rank(model, ytvos):
    """Windows dealt in turn: rank 0 gets val_a's windows 0 and 2, rank 1 val_a's window 1 and val_b. With
    two clips per batch, rank 1 encodes its two windows of 3 frames in one backbone pass; rank 0's windows
    of 3 and 1 frames go separately (padded in time, the short one's outputs would change), and every
    output is the one of its sample alone."""
    merged, all_calls = {}, []
    for rank in range(2):
        outputs, calls = evaluate(
            model, ytvos, ytvos_identity, rank=rank, world_size=2, batch_size=2, sentences_per_pass=8
        )
        assert not merged.keys() & outputs.keys()
        merged |= outputs
        all_calls += calls
    assert all_calls == [(1, 3), (1, 1), (2, 3)]
    assert_same_outputs(merged, one_by_one(model, ytvos, ytvos_identity))


def test_davis_inference_runs_the_backbone_once_per_chunk(model, tmp_path):
    raw = write_davis_fixture(tmp_path / "refer-davis", num_frames=5, size=(24, 40))
    convert_davis(raw.root, tmp_path / "converted")
    dataset = RefDAVIS17(
        tmp_path / "converted", ClipTransform(train=False, short_size=24, max_size=None), chunk_size=2, load_masks=False
    )
    assert len(dataset) == 4 * (2 + 3) * 3  # annotators x objects x chunks of 2, 2, 1 frames

    def identity(meta):
        return meta.video_id, meta.annotator, meta.object_index, meta.chunk_index

    outputs, calls = evaluate(model, dataset, identity, sentences_per_pass=8)
    assert calls == [(1, 2), (1, 2), (1, 1)] * 2  # two videos of 3 chunks: 6 passes for 60 sentences
    assert_same_outputs(outputs, one_by_one(model, dataset, identity))


def test_a2d_instances_of_one_frame_share_the_backbone(model, tmp_path):
    write_a2d_fixture(tmp_path / "a2d_sentences")
    dataset = A2DSentences(
        tmp_path / "a2d_sentences",
        "test",
        window_size=3,
        transform=ClipTransform(train=False, short_size=24, max_size=None),
    )
    keys = clip_keys(dataset)
    distinct = len(set(keys))
    assert distinct < len(dataset), "the fixture refers to several instances in one frame"
    outputs, calls = evaluate(model, dataset, lambda meta: meta.image_id, sentences_per_pass=4)
    assert len(calls) == distinct and all(b == 1 for b, _ in calls)
    assert_same_outputs(outputs, one_by_one(model, dataset, lambda meta: meta.image_id))
