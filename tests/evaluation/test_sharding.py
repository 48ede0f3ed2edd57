"""Evaluation sharding: each rank's share of the data, and Ref-DAVIS17 memory per rank.

Ranks are simulated one after another in this process: :class:`SharedClipBatchSampler` gives rank
``rank``'s batches from the samples' clip keys (a Ref-DAVIS17 sample's clip is its video and chunk
frames, shared by every annotator and object), and each rank's :class:`RefDAVISEvaluator` receives
its samples in that order.
"""

from __future__ import annotations

import itertools

import numpy as np
import pytest
import torch

from wavecl.data.index_png import read_index_mask
from wavecl.evaluation.davis import RefDAVISEvaluator, davis_labels, davis_result_path, write_davis_labels
from wavecl.evaluation.sharing import SharedClipBatchSampler

CHUNK = 3
# video -> (objects, frames): chunks of 3 frames, the last one shorter.
VIDEOS = {"bear": (1, 4), "dogs": (4, 9), "horse": (2, 3), "kite": (5, 7), "lab": (3, 6), "soapbox": (2, 8)}


def rank_indices(keys: list, rank: int, world_size: int) -> list[int]:
    """Rank ``rank``'s sample indices, in the order its batches visit them."""
    return [index for batch in SharedClipBatchSampler(keys, rank, world_size) for index in batch]


def clip_key(sample: dict) -> tuple[str, ...]:
    """What :meth:`wavecl.data.davis.RefDAVIS17.clip_key` returns: the video and the chunk's frames."""
    return (sample["key"][0], *sample["frame_names"])


def samples() -> list[dict]:
    """Ref-DAVIS17 samples in the dataset's order: video, annotator, object, chunk."""
    out = []
    for video, (num_objects, num_frames) in VIDEOS.items():
        chunks = [list(range(start, min(start + CHUNK, num_frames))) for start in range(0, num_frames, CHUNK)]
        for annotator, k, (c, chunk) in itertools.product(range(4), range(num_objects), enumerate(chunks)):
            out.append(
                {
                    "key": (video, annotator, c),
                    "object_index": k,
                    "num_objects": num_objects,
                    "frame_names": [f"{t:05d}" for t in chunk],
                }
            )
    return out


def probabilities(sample: dict) -> torch.Tensor:
    video, annotator, chunk = sample["key"]
    seed = [ord(ch) for ch in video] + [annotator, chunk, sample["object_index"]]
    rng = np.random.default_rng(seed)
    return torch.from_numpy(rng.integers(0, 9, size=(len(sample["frame_names"]), 4, 5)) / 8).float()


def run_rank(out_dir, items: list[dict], indices: list[int]) -> RefDAVISEvaluator:
    evaluator = RefDAVISEvaluator(out_dir, davis_root=out_dir / "unused")
    for index in indices:
        item = items[index]
        evaluator.add_object(
            item["key"], item["object_index"], item["num_objects"], item["frame_names"], probabilities(item)
        )
    return evaluator


@pytest.mark.parametrize("world_size", [1, 2, 4])
def test_ref_davis_chunks_stay_on_one_rank_and_memory_stays_bounded(tmp_path, world_size):
    """Every chunk's objects reach one rank, one after another: each rank holds at most one open chunk
    (one id map and one probability map), whatever the world size, and the PNGs equal the merge of
    all objects at once written by one process."""
    items = samples()
    groups = [item["key"] for item in items]
    shards = [rank_indices([clip_key(item) for item in items], rank, world_size) for rank in range(world_size)]
    assert sorted(itertools.chain(*shards)) == list(range(len(items)))
    largest_group = max(4 * item["num_objects"] for item in items)  # four annotators share a clip
    loads = [len(shard) for shard in shards]
    assert max(loads) - min(loads) <= largest_group
    for shard in shards:
        evaluator = run_rank(tmp_path / "sharded", items, shard)
        assert evaluator.peak_open_chunks <= 1 and evaluator.open_chunks == {}

    expected_dir = tmp_path / "expected"
    for key in dict.fromkeys(groups):
        members = [item for item in items if item["key"] == key]
        stacked = torch.stack([probabilities(item) for item in sorted(members, key=lambda i: i["object_index"])])
        write_davis_labels(expected_dir, key[1], key[0], members[0]["frame_names"], davis_labels(stacked))
        for name in members[0]["frame_names"]:
            written = read_index_mask(davis_result_path(tmp_path / "sharded", key[1], key[0], name))
            reference = read_index_mask(davis_result_path(expected_dir, key[1], key[0], name))
            np.testing.assert_array_equal(written, reference)


def test_round_robin_would_split_chunks_and_keep_them_open(tmp_path):
    """The control: dealt sample by sample, a chunk's objects land on different ranks (no rank can
    complete them) and even one process keeps every chunk of a video open at once."""
    items = samples()
    unshared = [("sample", index) for index in range(len(items))]
    evaluators = [run_rank(tmp_path / f"rank{rank}", items, rank_indices(unshared, rank, 4)) for rank in range(4)]
    assert all(evaluator.open_chunks for evaluator in evaluators)
    with pytest.raises(RuntimeError, match="miss objects"):
        evaluators[0]._check_complete()
    single = run_rank(tmp_path / "single", items, list(range(len(items))))
    assert single.peak_open_chunks == 3  # the three chunks of 'dogs', 'kite' or 'soapbox'
