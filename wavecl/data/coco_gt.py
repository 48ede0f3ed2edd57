"""COCO-format ground-truth documents, as the A2D-Sentences and JHMDB-Sentences builders write them
(``build_a2d_coco_gt``, ``build_jhmdb_coco_gt``; docs/datasets.md#coco-mask-map).

One image per evaluated sample, id = the sample's image id (A2D ``v_<vid>_f_<frame>_i_<inst>``, JHMDB
``v_<vid>_f_<frame>``), holding exactly one annotation: the referred mask as compressed RLE, category 1.
Unlike the reference files, an ``info`` key is written (pycocotools 2.0.9-2.0.10 ``loadRes`` needs it).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from wavecl.optional import require_package

CATEGORY_ID = 1


def encode_mask(mask: np.ndarray) -> tuple[dict[str, Any], float]:
    """Compressed RLE of an ``[H, W]`` mask (``counts`` as ASCII) and its area."""
    mask_utils = require_package("pycocotools.mask", "writing COCO-format ground truth")
    rle = mask_utils.encode(np.asfortranarray(mask.astype(np.uint8)))
    area = float(mask_utils.area(rle))
    rle["counts"] = rle["counts"].decode("ascii")
    return rle, area


def coco_document(description: str, entries: Sequence[tuple[str, np.ndarray, list[float] | None]]) -> dict[str, Any]:
    """COCO dict from ``(image id, [H, W] mask, optional [x, y, w, h] box)`` entries."""
    images, annotations, seen = [], [], set()
    for number, (image_id, mask, bbox) in enumerate(entries, start=1):
        if image_id in seen:
            raise ValueError(f"duplicate ground-truth image id {image_id!r}")
        seen.add(image_id)
        rle, area = encode_mask(mask)
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
