"""Ground truth of A2D-Sentences (test) and JHMDB-Sentences in COCO format (docs/datasets.md#coco-mask-map).

One image per evaluated sample, id = the sample's image id (A2D ``v_<vid>_f_<frame>_i_<inst>``, JHMDB
``v_<vid>_f_<frame>``), holding exactly one annotation: the referred mask as compressed RLE, category 1.
Unlike the reference files, an ``info`` key is written (pycocotools 2.0.9-2.0.10 ``loadRes`` needs it).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np

from wavecl.atomic import write_json
from wavecl.data.a2d import A2DPaths, build_a2d_samples, read_referred_instance
from wavecl.data.jhmdb import JHMDBPaths, build_jhmdb_samples, read_puppet_masks
from wavecl.optional import require_package

CATEGORY_ID = 1


def _encode(mask: np.ndarray) -> tuple[dict[str, Any], float]:
    """Compressed RLE of an ``[H, W]`` mask (``counts`` as ASCII) and its area."""
    mask_utils = require_package("pycocotools.mask", "writing COCO-format ground truth")
    rle = mask_utils.encode(np.asfortranarray(mask.astype(np.uint8)))
    area = float(mask_utils.area(rle))
    rle["counts"] = rle["counts"].decode("ascii")
    return rle, area


def _coco_document(description: str, entries: list[tuple[str, np.ndarray, list[float] | None]]) -> dict[str, Any]:
    """COCO dict from ``(image id, [H, W] mask, optional [x, y, w, h] box)`` entries."""
    images, annotations, seen = [], [], set()
    for number, (image_id, mask, bbox) in enumerate(entries, start=1):
        if image_id in seen:
            raise ValueError(f"duplicate ground-truth image id {image_id!r}")
        seen.add(image_id)
        rle, area = _encode(mask)
        images.append({"id": image_id, "height": int(mask.shape[0]), "width": int(mask.shape[1])})
        annotation = {
            "id": number,
            "image_id": image_id,
            "category_id": CATEGORY_ID,
            "segmentation": rle,
            "area": area,
            "iscrowd": 0,
        }
        if bbox is not None:
            annotation["bbox"] = bbox
        annotations.append(annotation)
    return {
        "info": {"description": description},
        "licenses": [],
        "categories": [{"id": CATEGORY_ID, "name": "dummy_class"}],
        "images": images,
        "annotations": annotations,
    }


def build_a2d_coco_gt(dataset_root: str | os.PathLike, out_path: str | os.PathLike) -> dict[str, Any]:
    """Write the A2D-Sentences test ground truth to ``out_path`` (atomically) and return it.

    Samples are those of :func:`wavecl.data.a2d.build_a2d_samples` for ``"test"``; ``bbox`` is the
    file's ``reBBox`` as ``[x1, y1, x2 - x1, y2 - y1]``.
    """
    paths = A2DPaths.find(dataset_root)
    entries = []
    for sample in build_a2d_samples(paths.root, "test"):
        mask, box = read_referred_instance(paths.mask_file(sample.video_id, sample.frame), sample.instance_id)
        x1, y1, x2, y2 = (float(value) for value in box)
        entries.append((sample.image_id, mask, [x1, y1, x2 - x1, y2 - y1]))
    document = _coco_document("A2D-Sentences test ground truth (wavecl)", entries)
    write_json(Path(out_path), document)
    return document


def build_jhmdb_coco_gt(
    dataset_root: str | os.PathLike,
    out_path: str | os.PathLike,
    samples_metadata: str | os.PathLike | None = None,
    seed: int = 42,
) -> dict[str, Any]:
    """Write the JHMDB-Sentences ground truth of the evaluated frames to ``out_path`` and return it.

    Pass the same ``samples_metadata`` and ``seed`` as to :class:`wavecl.data.jhmdb.JHMDBSentences`,
    so that image ids match the predictions. Annotations have no ``bbox`` (as in the reference).
    """
    paths = JHMDBPaths.find(dataset_root)
    entries = []
    for sample in build_jhmdb_samples(paths.root, samples_metadata, seed):
        mask_file = paths.mask_file(sample.action, sample.video_id)
        masks = read_puppet_masks(mask_file)
        if not 1 <= sample.frame <= len(masks):
            raise ValueError(f"{mask_file} has {len(masks)} masks; frame {sample.frame} has none")
        entries.append((sample.image_id, masks[sample.frame - 1], None))
    document = _coco_document("JHMDB-Sentences ground truth (wavecl)", entries)
    write_json(Path(out_path), document)
    return document
