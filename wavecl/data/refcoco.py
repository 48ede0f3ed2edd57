"""RefCOCO / RefCOCO+ / RefCOCOg referring-expression datasets (docs/datasets.md#refcoco-refcoco-refcocog).

Files, under ``root`` (the reference's ``data/coco``)::

    <root>/<dataset>/instances_<dataset>_<split>.json     dataset in {refcoco, refcoco+, refcocog}
    <root>/train2014/<file_name>                          the COCO images

The json is ReferFormer's conversion of the REFER annotations: one pseudo-image per sentence, whose
``id`` is a running counter, with ``file_name``/``height``/``width`` of the COCO image, ``original_id``
(the COCO image id) and ``caption`` (the sentence), and one annotation per pseudo-image (the referred
object: polygons or RLE, ``bbox`` xywh, ``category_id``). MDETR-style files with the same keys work too.

One sample per pseudo-image, i.e. per (referred object, expression). Its key for evaluation is the
pseudo-image id: :attr:`FrameTarget.image_id` holds it as a string (``"17"``), the ground truth of
:func:`build_refcoco_gt` (and the file itself) as the integer (``17``).

Differences from the reference loader (docs/differences.md#refcoco-loading):

* The referred object is the first annotation of the pseudo-image that is not a crowd region and has a
  box of positive width and height; pseudo-images without one are dropped when the file is read
  (:attr:`RefCOCO.num_dropped`) instead of being replaced by a random other sample at load time,
  which made even evaluation nondeterministic.
* The target box is the box of the mask (as for every video dataset), not the annotation's ``bbox``;
  the evaluation ground truth keeps the ``bbox``.
* The sentence is lower-cased and its whitespace collapsed like every video dataset's (REFER sentences
  already are).
* Image transforms are the shared :class:`~wavecl.data.transforms.ClipTransform`, so the flip swaps
  whole words only.

``num_frames > 1`` turns each image into the pseudo-video of joint training (docs/datasets.md#pseudo-videos) with
:class:`~wavecl.data.image_to_clip.ImageToClipAugmenter`.
"""

from __future__ import annotations

import contextlib
import copy
import io
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, cast, get_args

import numpy as np
from PIL import Image
from torch.utils.data import ConcatDataset, Dataset

from wavecl.config import DataConfig
from wavecl.data.identifiers import check_identifier
from wavecl.data.image_to_clip import ImageToClipAugmenter
from wavecl.data.paths import read_image, resolve_dataset_root
from wavecl.data.transforms import ClipTransform, FrameAnnotation, clean_expression
from wavecl.data.types import ClipSample, RefCOCOMetadata, Split
from wavecl.jsonio import read_json
from wavecl.optional import require_package

if TYPE_CHECKING:
    from pycocotools.coco import COCO

DATASET_FOLDER_NAMES = ("coco",)
"""Folder name of the COCO root under a data folder (``data/coco``)."""
RefCOCOName = Literal["refcoco", "refcoco+", "refcocog"]
RefCOCOSplit = Literal["train", "val"]


@dataclass(frozen=True)
class RefExpression:
    """One referring expression and the object it refers to.

    Attributes:
        image_id: the pseudo-image id, unique per sentence; the evaluation key.
        original_image_id: the COCO image id.
        file_name: image file name under the image folder.
        height, width: image size in pixels, as the json states.
        caption: the sentence as stored in the json.
        annotation: the referred object's COCO annotation (``segmentation``, ``bbox`` xywh, ``area``,
            ``category_id``, ``id``, ...), unchanged.
    """

    image_id: int
    original_image_id: int | None
    file_name: str
    height: int
    width: int
    caption: str
    annotation: dict[str, Any]

    @property
    def category_id(self) -> int:
        return int(self.annotation["category_id"])


def refcoco_annotation_path(root: str | Path, dataset: RefCOCOName, split: RefCOCOSplit) -> Path:
    """``<root>/<dataset>/instances_<dataset>_<split>.json``."""
    return Path(root) / dataset / f"instances_{dataset}_{split}.json"


def _require(record: dict[str, Any], key: str, where: str) -> Any:
    if key not in record:
        raise ValueError(f"{where} has no {key!r} field")
    return record[key]


def _has_positive_box(annotation: dict[str, Any], height: int, width: int, where: str) -> bool:
    """Whether the xywh ``bbox``, converted to xyxy and clamped to the image, has positive width and height."""
    bbox = _require(annotation, "bbox", where)
    if len(bbox) != 4:
        raise ValueError(f"{where}: 'bbox' must have 4 numbers (x, y, w, h), got {bbox!r}")
    x, y, w, h = (float(v) for v in bbox)
    x0, x1 = min(max(x, 0.0), width), min(max(x + w, 0.0), width)
    y0, y1 = min(max(y, 0.0), height), min(max(y + h, 0.0), height)
    return x1 > x0 and y1 > y0


def read_refcoco_json(path: str | Path) -> tuple[list[RefExpression], dict[str, Any], int]:
    """Parse a ReferFormer/MDETR-style RefCOCO instances file.

    Returns:
        ``(expressions, dataset, num_dropped)``: the usable expressions in file order, the raw json
        (for its ``categories``/``info``/``licenses``), and the number of pseudo-images dropped because
        no annotation was usable (see the module docstring).

    Raises:
        FileNotFoundError: the file does not exist.
        ValueError: malformed json or a missing field; the message names the file and the record.
    """
    path = Path(path)
    data = read_json(path)
    if not isinstance(data, dict):
        raise ValueError(f"{path}: expected a json object with 'images' and 'annotations'")
    images = _require(data, "images", str(path))
    annotations_by_image: dict[Any, list[dict[str, Any]]] = {}
    for index, annotation in enumerate(_require(data, "annotations", str(path))):
        image_id = _require(annotation, "image_id", f"{path}: annotations[{index}]")
        annotations_by_image.setdefault(image_id, []).append(annotation)
    known_ids = {image.get("id") for image in images}
    for image_id in annotations_by_image:
        if image_id not in known_ids:
            raise ValueError(f"{path}: an annotation refers to image_id {image_id!r}, which is not in 'images'")

    expressions: list[RefExpression] = []
    num_dropped = 0
    for index, image in enumerate(images):
        where = f"{path}: images[{index}]"
        image_id = _require(image, "id", where)
        height, width = int(_require(image, "height", where)), int(_require(image, "width", where))
        caption = _require(image, "caption", where)
        if not isinstance(caption, str):
            raise ValueError(f"{where}: 'caption' must be a string, got {type(caption).__name__}")
        usable = [
            annotation
            for annotation in annotations_by_image.get(image_id, [])
            if not annotation.get("iscrowd", 0)
            and _has_positive_box(annotation, height, width, f"{path}: annotation of image {image_id}")
        ]
        if not usable:
            num_dropped += 1
            continue
        for key in ("segmentation", "category_id"):
            _require(usable[0], key, f"{path}: annotation of image {image_id}")
        expressions.append(
            RefExpression(
                image_id=int(image_id),
                original_image_id=image.get("original_id"),
                file_name=check_identifier(_require(image, "file_name", where), path, f"images[{index}] file_name"),
                height=height,
                width=width,
                caption=caption,
                annotation=usable[0],
            )
        )
    return expressions, data, num_dropped


def decode_segmentation(segmentation: Any, height: int, width: int, source: str) -> np.ndarray:
    """Rasterise a COCO ``segmentation`` (polygon list, uncompressed or compressed RLE) with pycocotools.

    Polygon parts are merged (OR-ed) into one mask.

    Returns:
        ``[height, width]`` bool mask.
    """
    coco_mask = require_package("pycocotools.mask", "reading RefCOCO's masks")
    try:
        if isinstance(segmentation, list):
            rle = coco_mask.merge(coco_mask.frPyObjects(segmentation, height, width))
        elif isinstance(segmentation, dict) and isinstance(segmentation.get("counts"), list):
            rle = coco_mask.frPyObjects(segmentation, height, width)
        elif isinstance(segmentation, dict) and isinstance(segmentation.get("counts"), (str, bytes)):
            rle = segmentation
        else:
            raise ValueError("expected a polygon list or an RLE dict with 'counts'")
        mask = coco_mask.decode(rle)
    except (ValueError, TypeError, KeyError, IndexError) as error:
        raise ValueError(f"{source}: cannot decode 'segmentation': {error}") from error
    if mask.shape != (height, width):
        raise ValueError(f"{source}: segmentation decodes to {mask.shape}, the image is {height}x{width}")
    return mask.astype(bool)


class RefCOCO(Dataset[ClipSample]):
    """RefCOCO, RefCOCO+ or RefCOCOg as clips: one sample per referring expression.

    Args:
        root: folder holding ``<dataset>/instances_<dataset>_<split>.json`` (and, by default, ``train2014``),
            or its parent (``data`` for ``data/coco``).
        dataset: ``refcoco``, ``refcoco+`` or ``refcocog``.
        split: ``train`` or ``val``.
        transform: the clip transform (the reference uses short side 360, max 640 for all COCO sets).
        num_frames: ``1`` gives the single-image clips of pre-training. ``T > 1`` gives the
            pseudo-videos of joint training: the image plus ``T - 1`` random augmentations of it,
            in random order, all annotated.
        image_dir: image folder; ``<root>/train2014`` by default (the config's ``img_folder``).
        augmenter: pseudo-video augmenter for ``num_frames > 1``; the published parameters by default.

    Each item is a :class:`ClipSample` with ``frames [T, 3, H', W']``, ``T`` targets whose ``labels`` is
    the COCO category id and ``image_id`` the pseudo-image id as a string, the sentence, and
    :class:`~wavecl.data.types.RefCOCOMetadata`.
    Random draws (flip, augmentation) use the global torch generator, which the DataLoader seeds per worker.
    """

    def __init__(
        self,
        root: str | Path,
        dataset: RefCOCOName,
        split: RefCOCOSplit,
        transform: ClipTransform,
        num_frames: int = 1,
        image_dir: str | Path | None = None,
        augmenter: ImageToClipAugmenter | None = None,
    ) -> None:
        if dataset not in get_args(RefCOCOName):
            raise ValueError(f"dataset must be one of {get_args(RefCOCOName)}, got {dataset!r}")
        if split not in get_args(RefCOCOSplit):
            raise ValueError(f"split must be one of {get_args(RefCOCOSplit)}, got {split!r}")
        if num_frames < 1:
            raise ValueError(f"num_frames must be >= 1, got {num_frames}")
        self.dataset_name = dataset
        self.split = split
        annotation_file = refcoco_annotation_path(".", dataset, split)
        root = resolve_dataset_root(root, DATASET_FOLDER_NAMES, str(annotation_file))
        self.annotation_path = refcoco_annotation_path(root, dataset, split)
        self.image_dir = Path(image_dir) if image_dir is not None else root / "train2014"
        self.transform = transform
        self.num_frames = num_frames
        self.augmenter = augmenter if augmenter is not None else ImageToClipAugmenter()
        self.expressions, raw, self.num_dropped = read_refcoco_json(self.annotation_path)
        self.categories: list[dict[str, Any]] = raw.get("categories", [])
        self.info: dict[str, Any] = raw.get("info", {})
        self.licenses: list[dict[str, Any]] = raw.get("licenses", [])

    def __len__(self) -> int:
        return len(self.expressions)

    def sentence(self, index: int) -> tuple[str, str]:
        """``(text, where)`` of sample ``index``'s sentence, ``where`` naming the file and the expression
        (read without loading any frame, so every sentence can be checked before a run starts)."""
        expression = self.expressions[index]
        return expression.caption, f"{self.annotation_path}: image {expression.image_id}"

    def clip_key(self, index: int) -> tuple[str, int | str]:
        """The clip that sample ``index`` shows: ``(dataset, image file)`` for single-image clips, whose
        expressions can share one backbone pass; ``(dataset, index)`` for randomly augmented pseudo-videos."""
        if self.num_frames == 1:
            return (self.dataset_name, self.expressions[index].file_name)
        return (self.dataset_name, index)

    def _load_image(self, expression: RefExpression) -> Image.Image:
        path = self.image_dir / expression.file_name
        rgb = read_image(path)
        if rgb.size != (expression.width, expression.height):
            raise ValueError(
                f"{path} is {rgb.size[0]}x{rgb.size[1]} but {self.annotation_path} says "
                f"{expression.width}x{expression.height} for image {expression.image_id}"
            )
        return rgb

    def __getitem__(self, index: int) -> ClipSample:
        expression = self.expressions[index]
        source = f"{self.annotation_path}: image {expression.image_id}"
        image = self._load_image(expression)
        mask = decode_segmentation(expression.annotation["segmentation"], expression.height, expression.width, source)
        if self.num_frames == 1:
            frames, masks = [image], [mask]
        else:
            frames, masks = self.augmenter(image, mask, self.num_frames)
        image_id = str(expression.image_id)
        annotations: list[FrameAnnotation | None] = [
            FrameAnnotation(mask=frame_mask, label=expression.category_id, image_id=image_id) for frame_mask in masks
        ]
        text = clean_expression(expression.caption, source)
        video, targets, text = self.transform(frames, annotations, text)
        metadata = RefCOCOMetadata(
            dataset=self.dataset_name,
            image_id=image_id,
            original_image_id=expression.original_image_id,
            file_name=expression.file_name,
            orig_size=(expression.height, expression.width),
        )
        return ClipSample(frames=video, targets=targets, text=text, metadata=metadata)


def build_refcoco_gt(dataset: RefCOCO) -> COCO:
    """The pycocotools ground truth of exactly the expressions ``dataset`` yields.

    One image per expression with the file's integer ``id`` (``int(target.image_id)`` of the samples,
    whose :attr:`FrameTarget.image_id` is that id as a string), ``height``/``width`` of the original image,
    ``caption`` and ``original_id``; one annotation per image: the referred object with its
    ``segmentation`` (as in the file), ``bbox`` (xywh, as in the file), ``area``, ``category_id`` and
    ``iscrowd`` 0, numbered ``1..N``. ``categories``, ``info`` and ``licenses`` come from the file
    (``info`` is always present: pycocotools 2.0.9-2.0.10 fail without it).

    It equals the file loaded by pycocotools minus the pseudo-images the dataset drops, so either can
    serve as ground truth. Evaluation reads the GT mask with ``coco.annToMask(coco.imgToAnns[image_id][0])`` ``[H, W]``
    and the GT box with ``coco.imgToAnns[image_id][0]["bbox"]`` (xywh, absolute pixels).
    """
    images, annotations = [], []
    for number, expression in enumerate(dataset.expressions, start=1):
        image_id = expression.image_id
        images.append(
            {
                "id": image_id,
                "file_name": expression.file_name,
                "height": expression.height,
                "width": expression.width,
                "caption": expression.caption,
                "original_id": expression.original_image_id,
            }
        )
        source = expression.annotation
        annotations.append(
            {
                "id": number,
                "image_id": image_id,
                "category_id": expression.category_id,
                "segmentation": copy.deepcopy(source["segmentation"]),
                "bbox": [float(v) for v in source["bbox"]],
                "area": float(source.get("area", source["bbox"][2] * source["bbox"][3])),
                "iscrowd": 0,
                "original_id": source.get("id"),
            }
        )
    categories = dataset.categories or [
        {"id": category_id, "name": str(category_id)}
        for category_id in sorted({expression.category_id for expression in dataset.expressions})
    ]
    coco = require_package("pycocotools.coco", "RefCOCO's ground truth").COCO()
    coco.dataset = {
        "info": dataset.info or {"description": f"{dataset.dataset_name} {dataset.split} (wavecl ground truth)"},
        "licenses": dataset.licenses,
        "images": images,
        "annotations": annotations,
        "categories": categories,
    }
    with contextlib.redirect_stdout(io.StringIO()):  # pycocotools prints progress lines
        coco.createIndex()
    return coco


def build_refcoco(
    config: DataConfig, split: Split, transform: ClipTransform, num_classes: int
) -> ConcatDataset[ClipSample]:
    """Every set of ``data.coco_datasets`` (RefCOCO/+/g), ``train`` or ``val``, as pseudo-video clips."""
    coco_split: RefCOCOSplit = "train" if split == "train" else "val"
    return ConcatDataset(
        [  # RefCOCO checks each name of the config
            RefCOCO(config.root, cast(RefCOCOName, name), coco_split, transform, num_frames=config.window_size)
            for name in config.coco_datasets
        ]
    )
