"""Build the training or evaluation dataset that a :class:`~wavecl.config.DataConfig` names."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from torch.utils.data import ConcatDataset, Dataset

from wavecl.config import DataConfig
from wavecl.data.a2d import A2DSentences
from wavecl.data.davis import RefDAVIS17
from wavecl.data.jhmdb import JHMDBSentences
from wavecl.data.refcoco import RefCOCO
from wavecl.data.robust import SkipBadSamples
from wavecl.data.transforms import ClipTransform
from wavecl.data.types import ClipSample
from wavecl.data.ytvos import RefYouTubeVOS

Split = Literal["train", "eval"]

# Datasets that can be trained on; the others are evaluation-only (JHMDB, Ref-DAVIS17).
TRAINABLE = ("a2d_sentences", "ref_youtube_vos", "coco", "synthetic")


def build_transform(config: DataConfig, split: Split) -> ClipTransform:
    if split == "train":
        return ClipTransform(
            train=True,
            short_size=config.train_short_size,
            max_size=config.train_max_size,
            horizontal_flip=config.horizontal_flip,
            flip_mode=config.flip_mode,
        )
    return ClipTransform(train=False, short_size=config.eval_short_size, max_size=config.eval_max_size)


def build_dataset(config: DataConfig, split: Split, num_classes: int = 1) -> Dataset[ClipSample]:
    """The dataset of ``config.dataset_name`` for training or evaluation.

    Training datasets are wrapped in :class:`SkipBadSamples`: a sample that fails to load is
    reported, counted and replaced, so one bad file never stops a run.

    Evaluation splits: A2D ``test``; JHMDB all evaluated frames; Ref-YouTube-VOS ``valid`` in
    windows of ``window_size`` frames (whole videos with ``eval_whole_video``); RefCOCO/+/g ``val`` of every
    configured set; Ref-DAVIS17
    ``valid`` in 36-frame chunks; synthetic ``valid`` in windows.
    """
    name = config.dataset_name
    root = Path(config.root)
    transform = build_transform(config, split)
    if split == "train" and name not in TRAINABLE:
        raise ValueError(f"data.dataset_name {name!r} is evaluation-only; trainable datasets: {list(TRAINABLE)}")
    if name == "a2d_sentences":
        dataset: Dataset[ClipSample] = A2DSentences(
            root, "train" if split == "train" else "test", config.window_size, transform=transform
        )
    elif name == "jhmdb_sentences":
        dataset = JHMDBSentences(
            root, config.window_size, transform=transform, samples_metadata=config.jhmdb_samples_metadata
        )
    elif name in ("ref_youtube_vos", "synthetic"):
        whole_video = split == "eval" and config.eval_whole_video
        dataset = RefYouTubeVOS(
            root,
            "train" if split == "train" else "valid",
            None if whole_video else config.window_size,
            transform=transform,
            num_classes=65 if num_classes == 65 else 1,
        )
    elif name == "coco":
        coco_split = "train" if split == "train" else "val"
        dataset = ConcatDataset(
            [
                RefCOCO(root, dataset_name, coco_split, transform, num_frames=config.window_size)
                for dataset_name in config.coco_datasets
            ]  # type: ignore[arg-type]
        )
    elif name == "davis":
        dataset = RefDAVIS17(root, transform, annotators=config.davis_annotators)
    else:
        raise ValueError(f"unknown data.dataset_name {name!r}")
    return SkipBadSamples(dataset) if split == "train" else dataset
