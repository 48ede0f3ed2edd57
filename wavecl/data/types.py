"""The records that travel from a dataset through the collator to the model, criterion and evaluators.

A dataset returns one :class:`ClipSample` per item; :func:`wavecl.data.collate.collate_clips` turns a
list of them into a time-major, zero-padded :class:`Batch`.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field, fields, replace
from typing import Any, Literal, TypeVar

import torch
from torch import Tensor


@dataclass
class FrameTarget:
    """The referred object in one annotated frame (exactly one instance, as in the reference).

    Attributes:
        masks: ``[1, H', W']`` bool, the referred object's mask after resizing (unpadded).
        boxes: ``[1, 4]`` float, normalised ``(cx, cy, w, h)`` in ``[0, 1]`` of the unpadded frame;
            all zeros when the object is not visible.
        labels: ``[1]`` long, class index (0 for single-class settings, 0..64 for Ref-YouTube-VOS
            65-class, the COCO category id for RefCOCO).
        is_visible: whether the referred mask has any pixel in this frame, decided on the
            original-resolution mask before resizing.
        orig_size: ``(H, W)`` of the frame before any transform.
        size: ``(H', W')`` after resizing, without padding.
        image_id: key joining predictions with COCO-format ground truth (A2D ``v_<vid>_f_<frame>_i_<inst>``,
            JHMDB ``v_<vid>_f_<frame>``, RefCOCO the image id as a string); ``None`` where unused.
    """

    masks: Tensor
    boxes: Tensor
    labels: Tensor
    is_visible: bool
    orig_size: tuple[int, int]
    size: tuple[int, int]
    image_id: str | None = None

    def to(self, device: torch.device | str, non_blocking: bool = False) -> FrameTarget:
        """A copy with every tensor on ``device`` (``non_blocking`` for copies from pinned memory)."""
        return _map_tensors(self, lambda tensor: tensor.to(device, non_blocking=non_blocking))

    def pin_memory(self) -> FrameTarget:
        """A copy with every tensor in page-locked memory."""
        return _map_tensors(self, Tensor.pin_memory)


@dataclass(frozen=True)
class A2DMetadata:
    """An A2D-Sentences or JHMDB-Sentences clip: one referred actor in the annotated frame at its centre.

    Attributes:
        video_id: the video.
        frame: 1-based number of the annotated frame.
        image_id: the annotated frame's key in the COCO-format ground truth.
        instance_id: the referred instance in A2D's masks; ``None`` for JHMDB (one actor per video).
    """

    video_id: str
    frame: int
    image_id: str
    instance_id: int | None = None


@dataclass(frozen=True)
class RefCOCOMetadata:
    """A RefCOCO/+/g pseudo-video: one referred object of one image.

    Attributes:
        dataset: ``"refcoco"``, ``"refcoco+"`` or ``"refcocog"``.
        image_id: the pseudo-image id (one per expression) of the rebuilt COCO ground truth, as a string.
        original_image_id: the COCO image id (``None`` where the annotation file lacks it).
        file_name: the image file under the image folder.
        orig_size: ``(H, W)`` of the image.
    """

    dataset: str
    image_id: str
    original_image_id: int | None
    file_name: str
    orig_size: tuple[int, int]


@dataclass(frozen=True)
class ExpressionMetadata:
    """A Ref-YouTube-VOS-layout (or MeViS) clip: one expression over a window of a video.

    Attributes:
        video_id, exp_id: the expression, as named in ``Annotations/<video_id>/<exp_id>/`` predictions.
        frame_names: the clip's frames (training windows may repeat a frame).
        orig_size: ``(H, W)`` of the frames.
        window_start: position of the clip's first frame among the video's frames (evaluation only).
        num_video_frames: frames of the whole video (evaluation only).
    """

    video_id: str
    exp_id: str
    frame_names: tuple[str, ...]
    orig_size: tuple[int, int]
    window_start: int | None = None
    num_video_frames: int | None = None


@dataclass(frozen=True)
class DavisMetadata:
    """A Ref-DAVIS17 clip: one annotator's sentence for one object over one chunk of a video.

    Attributes:
        video_id, exp_id, obj_id: the video, the expression id and the object's pixel value.
        annotator: the annotator slot (0..3).
        object_index, num_objects: the object's position among the video's objects, and their number.
        frame_names: the chunk's frames.
        chunk_index, num_chunks: the chunk's position among the video's chunks, and their number.
        orig_size: ``(H, W)`` of the frames.
        size: ``(H', W')`` after resizing, without padding.
    """

    video_id: str
    exp_id: str
    obj_id: str
    annotator: int
    object_index: int
    num_objects: int
    frame_names: tuple[str, ...]
    chunk_index: int
    num_chunks: int
    orig_size: tuple[int, int]
    size: tuple[int, int]


ClipMetadata = A2DMetadata | RefCOCOMetadata | ExpressionMetadata | DavisMetadata
"""What a dataset states about a clip so that an evaluator can write its predictions back."""

M = TypeVar("M", A2DMetadata, RefCOCOMetadata, ExpressionMetadata, DavisMetadata)


@dataclass
class ClipSample:
    """One referring expression over one clip.

    Attributes:
        frames: ``[T, 3, H', W']`` float, ImageNet-normalised.
        targets: length ``T``; ``None`` for frames without annotation (A2D/JHMDB keep only the centre frame).
        text: the expression after cleaning and flip augmentation.
        metadata: what its dataset states about the clip (:data:`ClipMetadata`); ``None`` where unused.
    """

    frames: Tensor
    targets: list[FrameTarget | None]
    text: str
    metadata: ClipMetadata | None = None


@dataclass
class SharedClips:
    """The distinct clips of a :class:`Batch` whose entries may repeat one clip with other sentences.

    Attributes:
        clips: ``[U]`` long, the batch position of the first entry of each distinct clip.
        clip_index: ``[B]`` long, the distinct clip (``0..U-1``) of each batch entry.
        valid_indices: ``[U]`` long indices into the ``(u t)`` frames of the distinct clips (their
            annotated frame, see :meth:`Batch.valid_frames`), or ``None`` when every frame is kept.
    """

    clips: Tensor
    clip_index: Tensor
    valid_indices: Tensor | None


@dataclass
class Batch:
    """A collated, time-major batch.

    Attributes:
        frames: ``[T, B, 3, Hp, Wp]`` float, zero-padded bottom/right to the largest clip.
        pad_mask: ``[T, B, Hp, Wp]`` bool, True on padding.
        targets: ``targets[t][b]`` is the :class:`FrameTarget` of clip ``b`` at time ``t`` or ``None``.
        texts: ``B`` expressions.
        image_sizes: ``[B, 2]`` long, unpadded ``(H', W')`` of each clip (read by the mask head).
        metadata: the ``B`` clips' :data:`ClipMetadata` (``None`` where unused).
    """

    frames: Tensor
    pad_mask: Tensor
    targets: list[list[FrameTarget | None]]
    texts: list[str]
    image_sizes: Tensor
    metadata: list[ClipMetadata | None] = field(default_factory=list)

    def metadata_as(self, kind: type[M]) -> list[M]:
        """The metadata of every clip, each a ``kind``.

        Raises:
            TypeError: a clip carries other metadata (an evaluator given another dataset's clips); the
                message names what was found.
        """
        for b, metadata in enumerate(self.metadata):
            if not isinstance(metadata, kind):
                raise TypeError(f"clip {b} ({self.texts[b]!r}) has metadata {metadata!r}; expected {kind.__name__}")
        return self.metadata  # type: ignore[return-value]

    @property
    def num_frames(self) -> int:
        return self.frames.shape[0]

    @property
    def batch_size(self) -> int:
        return self.frames.shape[1]

    def to(self, device: torch.device | str, non_blocking: bool = False) -> Batch:
        """A copy with every tensor (targets included) on ``device``.

        With ``non_blocking=True`` and a pinned batch (:meth:`pin_memory`) the host-to-GPU copies do
        not wait; the GPU orders them before any kernel that reads them.
        """
        return _map_tensors(self, lambda tensor: tensor.to(device, non_blocking=non_blocking))

    def pin_memory(self) -> Batch:
        """A copy with every tensor (targets included) in page-locked memory.

        ``DataLoader(pin_memory=True)`` calls this on each batch in its pinning thread, so the copies to
        the GPU can run asynchronously.
        """
        return _map_tensors(self, Tensor.pin_memory)

    def valid_frames(self) -> tuple[Tensor | None, list[list[FrameTarget]]]:
        """Select the annotated frames (A2D/JHMDB protocol).

        Returns:
            ``valid_indices``: LongTensor of ``(b t)`` flat indices ``t + b*T`` of annotated frames in
            batch order, or ``None`` when every frame of every clip is annotated (all frames are used)
            or none is (inference);
            ``targets``: the matching targets as one time step, ``[[target_b for b]]``, the full
            ``T x B`` grid when every frame is annotated, or ``[]`` when none is.
        """
        T, B = self.num_frames, self.batch_size
        annotated_count = sum(t is not None for row in self.targets for t in row)
        if annotated_count == 0:
            return None, []
        if annotated_count == T * B:
            return None, [list(row) for row in self.targets]  # type: ignore[arg-type]
        indices: list[int] = []
        selected: list[FrameTarget] = []
        for b in range(B):
            annotated = [t for t in range(T) if self.targets[t][b] is not None]
            if len(annotated) != 1:
                raise ValueError(
                    f"clip {b} ({self.texts[b]!r}) has {len(annotated)} annotated frames; valid-frame "
                    "selection needs exactly one annotated frame per clip or all frames annotated"
                )
            t = annotated[0]
            indices.append(t + b * T)
            selected.append(self.targets[t][b])  # type: ignore[arg-type]
        return torch.tensor(indices, dtype=torch.long, device=self.frames.device), [selected]

    def shared_clips(self) -> SharedClips:
        """Find the entries that hold the same clip (equal frames, padding, size and annotated frame).

        Entries with equal inputs give equal visual features, so the backbone needs to run only once
        per distinct clip (:meth:`wavecl.model.wavecl.WaveCL.encode_video`). Found by comparing
        values, so it holds whatever the dataset.

        Returns:
            :class:`SharedClips`, on the batch's device.

        Raises:
            ValueError: as :meth:`valid_frames`.
        """
        T, B = self.num_frames, self.batch_size
        valid_indices, _ = self.valid_frames()
        times = None if valid_indices is None else [int(i) - b * T for b, i in enumerate(valid_indices.tolist())]

        def same(b: int, other: int) -> bool:
            return (
                (times is None or times[b] == times[other])
                and torch.equal(self.image_sizes[b], self.image_sizes[other])
                and torch.equal(self.pad_mask[:, b], self.pad_mask[:, other])
                and torch.equal(self.frames[:, b], self.frames[:, other])
            )

        firsts: list[int] = []
        clip_index: list[int] = []
        for b in range(B):
            match = next((u for u, first in enumerate(firsts) if same(b, first)), None)
            if match is None:
                match = len(firsts)
                firsts.append(b)
            clip_index.append(match)
        device = self.frames.device
        shared_valid = None
        if times is not None:
            shared_valid = torch.tensor([times[first] + u * T for u, first in enumerate(firsts)], device=device)
        return SharedClips(
            clips=torch.tensor(firsts, dtype=torch.long, device=device),
            clip_index=torch.tensor(clip_index, dtype=torch.long, device=device),
            valid_indices=shared_valid,
        )


Split = Literal["train", "eval"]
"""Which side of a dataset a run reads: its training split, or the split its protocol evaluates."""


def _map_tensors(value: Any, function: Callable[[Tensor], Tensor]) -> Any:
    """``value`` with ``function`` applied to every tensor inside it: tensors, :class:`FrameTarget` and
    :class:`Batch` fields, lists, tuples and dicts, at any depth; anything else is kept as is."""
    if isinstance(value, Tensor):
        return function(value)
    if isinstance(value, (FrameTarget, Batch)):
        return replace(value, **{f.name: _map_tensors(getattr(value, f.name), function) for f in fields(value)})
    if isinstance(value, list):
        return [_map_tensors(item, function) for item in value]
    if isinstance(value, tuple):
        return tuple(_map_tensors(item, function) for item in value)
    if isinstance(value, dict):
        return {key: _map_tensors(item, function) for key, item in value.items()}
    return value
