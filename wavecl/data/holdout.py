"""Held-out Ref-YouTube-VOS training videos, scored locally (docs/datasets.md#local-validation-on-ref-youtube-vos).

The Ref-YouTube-VOS evaluation server no longer answers and the valid split has no masks, so a model is
scored on training videos it did not train on. :func:`write_ytvos_holdout` draws ``num_videos`` training
videos with a seed and writes a dataset view in the Ref-YouTube-VOS layout outside the dataset folder::

    <view>/train/JPEGImages/<video>       -> <dataset>/train/JPEGImages/<video>   (the other videos)
    <view>/train/Annotations/<video>      -> <dataset>/train/Annotations/<video>
    <view>/train/meta.json                   the other videos' entries
    <view>/valid/JPEGImages/<video>       -> <dataset>/train/JPEGImages/<video>   (the held-out videos)
    <view>/valid/Annotations/<video>      -> <dataset>/train/Annotations/<video>
    <view>/valid/meta.json                   the held-out videos' entries
    <view>/meta_expressions/{train,valid}/meta_expressions.json
    <view>/holdout.json                      what was drawn, from where, with which seed

Each arrow is an absolute symbolic link to a video folder (or a copy of it with ``mode="copy"``). The
view's ``valid`` split is annotated and has no ``test`` expression file, so evaluation scores every
listed expression of it (:class:`~wavecl.data.ytvos.YTVOSGroundTruth`), and training on the view reads
only the other videos.

The draw is a permutation of the sorted training video ids by ``numpy.random.default_rng(seed)``,
walked in order: a drawn video joins the held-out split when at least one of its expressions refers to
an object present in one of its masks (an expression whose object is in none is left out of the view's
valid file, since an empty prediction would score J = F = 1 on it); a drawn video with no such
expression stays in training. Only the drawn videos' masks are read, each until its referred objects
have all been seen.
"""

from __future__ import annotations

import os
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np

from wavecl.atomic import place_folder, replace_directory, temporary_directory, write_json
from wavecl.data.index_png import read_index_mask
from wavecl.data.paths import natural_sorted
from wavecl.data.sample_cache import dataset_cache_dir
from wavecl.data.ytvos import YTVOSPaths, read_expression_videos
from wavecl.jsonio import read_json

HOLDOUT_RECORD = "holdout.json"
"""The file at the root of a view naming its source, seed and videos; a folder holding it may be replaced."""
HOLDOUT_FORMAT = "wavecl.ytvos_holdout.v1"


@dataclass(frozen=True)
class YTVOSHoldout:
    """What :func:`write_ytvos_holdout` wrote.

    Attributes:
        root: the view (pass it as ``data.root`` / ``--data-root``).
        source: the Ref-YouTube-VOS folder the view shows.
        seed: the seed of the draw.
        train_videos: the view's training videos, sorted.
        held_out_videos: the view's valid videos, sorted.
        left_out_expressions: ``(video, exp_id)`` of held-out expressions whose object is in none of
            their video's masks, not in the view's valid file.
        kept_in_training: drawn videos none of whose expressions could be scored, left in training.
    """

    root: Path
    source: Path
    seed: int
    train_videos: tuple[str, ...]
    held_out_videos: tuple[str, ...]
    left_out_expressions: tuple[tuple[str, str], ...]
    kept_in_training: tuple[str, ...]


def default_holdout_dir(
    cache_dir: str | os.PathLike[str] | None, root: str | os.PathLike[str], num_videos: int, seed: int
) -> Path:
    """``<dataset cache folder>/ytvos_holdout_n<num_videos>_seed<seed>``, the view's default place
    (:func:`~wavecl.data.sample_cache.dataset_cache_dir` of the dataset at ``root``)."""
    dataset = YTVOSPaths.find(root).root
    return dataset_cache_dir(cache_dir, dataset) / f"ytvos_holdout_n{num_videos}_seed{seed}"


def _scored_expressions(paths: YTVOSPaths, video_id: str, video: dict[str, Any]) -> dict[str, Any]:
    """The expressions of one training video whose ``obj_id`` is present in at least one of its masks
    (pixel value 0 is the background, never an object).

    Masks are decoded in frame order until every referred object has been seen (usually the first).

    Raises:
        ValueError: an expression has no integer ``obj_id`` (file, video and expression named).
        FileNotFoundError / ValueError: a mask that is decoded is missing or not a palette or grey PNG.
    """
    referred: dict[str, int] = {}
    for exp_id, expression in video["expressions"].items():
        try:
            referred[exp_id] = int(expression["obj_id"])
        except (KeyError, TypeError, ValueError):
            raise ValueError(
                f"{paths.expressions('train')}: video {video_id!r} expression {exp_id!r} needs an integer 'obj_id'"
            ) from None
    present: set[int] = set()
    for frame in natural_sorted(video["frames"]):
        if set(referred.values()) <= present:
            break
        present.update(np.unique(read_index_mask(paths.mask_file(video_id, frame))).tolist())
    present.discard(0)  # background
    return {exp_id: video["expressions"][exp_id] for exp_id, obj_id in referred.items() if obj_id in present}


def _draw(
    paths: YTVOSPaths, videos: dict[str, Any], num_videos: int, seed: int
) -> tuple[dict[str, dict[str, Any]], list[tuple[str, str]], list[str]]:
    """``({held-out video: its scored expressions}, left-out expressions, drawn videos kept in training)``.

    Raises:
        ValueError: ``num_videos`` is not between 1 and the number of training videos less one, or fewer
            than ``num_videos`` videos have an expression to score.
    """
    video_ids = sorted(videos)
    if not 1 <= num_videos < len(video_ids):
        raise ValueError(
            f"{paths.expressions('train')}: cannot hold out {num_videos} of {len(video_ids)} training videos "
            "(at least 1, and at least 1 left to train on)"
        )
    held_out: dict[str, dict[str, Any]] = {}
    left_out: list[tuple[str, str]] = []
    kept: list[str] = []
    for index in np.random.default_rng(seed).permutation(len(video_ids)):
        video_id = video_ids[index]
        if len(held_out) == num_videos:
            break
        scored = _scored_expressions(paths, video_id, videos[video_id])
        if scored:
            held_out[video_id] = scored
            left_out.extend((video_id, exp_id) for exp_id in videos[video_id]["expressions"] if exp_id not in scored)
        else:
            kept.append(video_id)
    if len(held_out) < num_videos:
        raise ValueError(
            f"{paths.expressions('train')}: only {len(held_out)} of {len(video_ids)} training videos can be held "
            f"out for {num_videos}: a held-out video needs an expression whose object appears in its masks"
        )
    return held_out, left_out, kept


def _split_meta(paths: YTVOSPaths, video_ids: list[str]) -> dict[str, Any] | None:
    """The entries of ``video_ids`` in ``train/meta.json`` (object categories), ``None`` without that file.

    Raises:
        ValueError: the file is not ``{"videos": {...}}``.
    """
    if not paths.train_meta.is_file():
        return None
    meta = read_json(paths.train_meta)
    if not isinstance(meta, dict) or not isinstance(meta.get("videos"), dict):
        raise ValueError(f"{paths.train_meta}: expected {{'videos': {{...}}}}")
    return {"videos": {video_id: meta["videos"][video_id] for video_id in video_ids if video_id in meta["videos"]}}


def _check_destination(paths: YTVOSPaths, out: Path) -> None:
    """Refuse an output inside the dataset, or an existing non-empty folder that is not a view.

    Raises:
        ValueError: naming ``out`` and why.
    """
    resolved = out.resolve()
    if resolved.is_relative_to(paths.root.resolve()) or paths.root.resolve().is_relative_to(resolved):
        raise ValueError(f"{out}: the hold-out view must be written outside the dataset folder {paths.root}")
    if out.exists() and (not out.is_dir() or (any(out.iterdir()) and not (out / HOLDOUT_RECORD).is_file())):
        raise ValueError(f"{out} exists and is not a hold-out view (no {HOLDOUT_RECORD}); choose another folder")


def write_ytvos_holdout(
    root: str | os.PathLike[str],
    out: str | os.PathLike[str],
    num_videos: int,
    seed: int,
    mode: Literal["symlink", "copy"] = "symlink",
) -> YTVOSHoldout:
    """Write the view of a Ref-YouTube-VOS copy whose ``valid`` split is ``num_videos`` training videos.

    The view is built beside ``out`` and then put in its place whole; a previous view at ``out`` is
    replaced, the dataset folder is only read. The same inputs and seed give the same view.

    Args:
        root: the Ref-YouTube-VOS folder or its parent (with ``train/Annotations`` and ``obj_id``\\ s).
        out: the view's folder; outside the dataset, empty, missing or a previous view.
        num_videos: videos to hold out (at least 1, leaving at least 1 to train on).
        seed: seed of the draw.
        mode: ``"symlink"`` links each video folder; ``"copy"`` copies it (for systems that refuse
            symbolic links; costs the held-out and training videos' disk space).

    Returns:
        A :class:`YTVOSHoldout` describing the view.

    Raises:
        FileNotFoundError: the dataset, its train expression file or a video's frame or mask folder is
            missing (named).
        ValueError: bad ``num_videos`` or ``mode``, ``out`` inside the dataset or not a view, an id that is
            no file name (:class:`~wavecl.data.identifiers.UnsafeIdentifierError`), an expression without
            an integer ``obj_id``, too few videos to score.
        OSError: a link or copy cannot be made (symbolic links not permitted: use ``mode="copy"``).
    """
    if mode not in ("symlink", "copy"):
        raise ValueError(f"mode must be 'symlink' or 'copy', got {mode!r}")
    paths = YTVOSPaths.find(root)
    out = Path(out)
    _check_destination(paths, out)
    videos = read_expression_videos(paths.expressions("train"))
    held_out, left_out, kept = _draw(paths, videos, num_videos, seed)
    splits = {
        "train": {video_id: video for video_id, video in videos.items() if video_id not in held_out},
        "valid": {
            video_id: {**videos[video_id], "expressions": held_out[video_id]}
            for video_id in videos
            if video_id in held_out
        },
    }
    staging = temporary_directory(out)
    try:
        for split, split_videos in splits.items():
            for video_id in split_videos:
                for kind in ("JPEGImages", "Annotations"):
                    source = paths.root / "train" / kind / video_id
                    if not source.is_dir():
                        raise FileNotFoundError(f"folder not found: {source} (video {video_id!r} of the train split)")
                    try:
                        place_folder(source, staging / split / kind / video_id, mode)
                    except OSError as error:
                        hint = " (symbolic links refused here? use copies: --copy)" if mode == "symlink" else ""
                        raise OSError(f"cannot place {source} in {out}{hint}: {error}") from error
            write_json(staging / "meta_expressions" / split / "meta_expressions.json", {"videos": split_videos})
            meta = _split_meta(paths, list(split_videos))
            if meta is not None:
                write_json(staging / split / "meta.json", meta)
        holdout = YTVOSHoldout(
            root=out,
            source=paths.root.resolve(),
            seed=seed,
            train_videos=tuple(sorted(splits["train"])),
            held_out_videos=tuple(sorted(held_out)),
            left_out_expressions=tuple(left_out),
            kept_in_training=tuple(kept),
        )
        record = {
            "format": HOLDOUT_FORMAT,
            "source": str(holdout.source),
            "seed": seed,
            "num_videos": num_videos,
            "mode": mode,
            "train_videos": list(holdout.train_videos),
            "held_out_videos": list(holdout.held_out_videos),
            "left_out_expressions": [list(key) for key in left_out],
            "kept_in_training": list(kept),
        }
        write_json(staging / HOLDOUT_RECORD, record, indent=1)
        replace_directory(staging, out)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return holdout
