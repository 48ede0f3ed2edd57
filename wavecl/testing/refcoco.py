"""Writer of a tiny RefCOCO/+/g dataset in its exact raw on-disk format, for tests.

The writer returns a dataclass listing what it wrote, so loaders can be checked against it.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from wavecl.atomic import save_image, write_json
from wavecl.optional import require_package


@dataclass
class RefCOCOFixtureExpression:
    """An expression the RefCOCO loader must yield (in file order).

    Attributes:
        image_id: pseudo-image id (one per sentence).
        original_image_id: COCO image id.
        file_name: image file under ``train2014``.
        caption: sentence as written.
        category_id: COCO category of the referred object.
        bbox: ``[x, y, w, h]`` as written.
        mask: ``[H, W]`` bool mask of the written segmentation (rasterised with pycocotools).
        segmentation_kind: ``"polygon"``, ``"rle"`` (uncompressed) or ``"compressed_rle"``.
    """

    image_id: int
    original_image_id: int
    file_name: str
    caption: str
    category_id: int
    bbox: list[float]
    mask: np.ndarray
    segmentation_kind: str


@dataclass
class RefCOCOFixture:
    """What :func:`write_refcoco_fixture` wrote.

    Attributes:
        root: the ``coco`` folder (``<root>/<dataset>/instances_...json``, ``<root>/train2014``).
        dataset, split: names used in the json path.
        annotation_path: the instances json.
        images: ``{file_name: [H, W, 3] uint8}`` pixels given to the JPEG encoder.
        expressions: the usable expressions, in file order.
        num_dropped: pseudo-images written that the loader must drop (crowd only, empty box).
    """

    root: Path
    dataset: str
    split: str
    annotation_path: Path
    images: dict[str, np.ndarray]
    expressions: list[RefCOCOFixtureExpression]
    num_dropped: int


def _bbox_of(mask: np.ndarray) -> list[float]:
    """COCO ``[x, y, w, h]`` of a non-empty mask (exclusive max)."""
    ys, xs = np.nonzero(mask)
    return [float(xs.min()), float(ys.min()), float(xs.max() + 1 - xs.min()), float(ys.max() + 1 - ys.min())]


def write_refcoco_fixture(
    root: str | Path, dataset: str = "refcoco", split: str = "val", seed: int = 0
) -> RefCOCOFixture:
    """Write two COCO images and six pseudo-images (four usable, two to drop) in ReferFormer's format.

    * image A (48x64, COCO id 9): a triangle polygon object referred by two sentences, and a second
      object written as an uncompressed RLE;
    * image B (40x60, COCO id 25): an object written as a compressed RLE (``counts`` a string), whose
      sentence has capitals and extra spaces;
    * a pseudo-image whose only annotation is a crowd region, and one whose box has zero width.
    """
    coco_mask = require_package("pycocotools.mask", "writing the RefCOCO fixture")
    rng = np.random.default_rng(seed)
    root = Path(root)
    image_dir = root / "train2014"
    sizes = {"COCO_train2014_000000000009.jpg": (48, 64), "COCO_train2014_000000000025.jpg": (40, 60)}
    original_ids = {"COCO_train2014_000000000009.jpg": 9, "COCO_train2014_000000000025.jpg": 25}
    images = {name: rng.integers(0, 256, size=(h, w, 3), dtype=np.uint8) for name, (h, w) in sizes.items()}
    for name, pixels in images.items():
        save_image(Image.fromarray(pixels), image_dir / name, format="JPEG", quality=95)

    name_a, name_b = sizes
    height_a, width_a = sizes[name_a]
    height_b, width_b = sizes[name_b]
    triangle = [[10.0, 30.0, 40.0, 8.0, 50.0, 40.0]]
    triangle_mask = coco_mask.decode(coco_mask.merge(coco_mask.frPyObjects(triangle, height_a, width_a))).astype(bool)
    blob = np.zeros((height_a, width_a), dtype=bool)
    blob[5:20, 44:60] = True
    blob[20:25, 50:52] = True
    blob_uncompressed = {"size": [height_a, width_a], "counts": _uncompressed_counts(blob)}
    ring = np.zeros((height_b, width_b), dtype=bool)
    ring[8:30, 10:40] = True
    ring[14:24, 18:32] = False
    ring_rle = coco_mask.encode(np.asfortranarray(ring.astype(np.uint8)))
    ring_compressed = {"size": [height_b, width_b], "counts": ring_rle["counts"].decode("ascii")}

    objects = [
        # (file, caption, category, segmentation, mask, kind, iscrowd, bbox override)
        (name_a, "the triangle on the left", 1, triangle, triangle_mask, "polygon", 0, None),
        (name_a, "pointy thing", 1, triangle, triangle_mask, "polygon", 0, None),
        (name_a, "the blob at the top right", 18, blob_uncompressed, blob, "rle", 0, None),
        (name_b, "The  Ring   in the MIDDLE", 3, ring_compressed, ring, "compressed_rle", 0, None),
        (name_b, "a crowd", 1, ring_compressed, ring, "compressed_rle", 1, None),
        (name_b, "zero width box", 1, ring_compressed, ring, "compressed_rle", 0, [5.0, 5.0, 0.0, 10.0]),
    ]
    json_images: list[dict[str, Any]] = []
    json_annotations: list[dict[str, Any]] = []
    expressions: list[RefCOCOFixtureExpression] = []
    for counter, (name, caption, category, segmentation, mask, kind, iscrowd, bbox) in enumerate(objects, start=1):
        height, width = sizes[name]
        box = bbox if bbox is not None else _bbox_of(mask)
        json_images.append(
            {
                "id": counter,
                "file_name": name,
                "height": height,
                "width": width,
                "original_id": original_ids[name],
                "caption": caption,
                "dataset_name": dataset,
            }
        )
        json_annotations.append(
            {
                "id": counter,
                "image_id": counter,
                "segmentation": segmentation,
                "area": float(mask.sum()),
                "iscrowd": iscrowd,
                "bbox": box,
                "category_id": category,
                "original_id": 1000 + counter,
            }
        )
        if not iscrowd and bbox is None:
            expressions.append(
                RefCOCOFixtureExpression(counter, original_ids[name], name, caption, category, box, mask, kind)
            )
    categories = [{"id": 1, "name": "person"}, {"id": 3, "name": "car"}, {"id": 18, "name": "dog"}]
    annotation_path = root / dataset / f"instances_{dataset}_{split}.json"
    write_json(
        annotation_path,
        {
            "info": {"description": "wavecl RefCOCO fixture"},
            "licenses": [],
            "images": json_images,
            "annotations": json_annotations,
            "categories": categories,
        },
    )
    return RefCOCOFixture(root, dataset, split, annotation_path, images, expressions, num_dropped=2)


def _uncompressed_counts(mask: np.ndarray) -> list[int]:
    """COCO uncompressed RLE counts of a bool mask: alternating run lengths of 0s and 1s, column-major."""
    flat = mask.flatten(order="F").astype(np.uint8)
    counts: list[int] = []
    value, run = 0, 0
    for pixel in flat:
        if pixel == value:
            run += 1
        else:
            counts.append(run)
            value, run = int(pixel), 1
    counts.append(run)
    return counts
