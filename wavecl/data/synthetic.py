"""A synthetic referring-video dataset written to disk in the Ref-YouTube-VOS layout.

Each clip shows 2-4 flat shapes (circle, square, triangle) in distinct colours sliding over a lightly
textured background. Every object gets 1-3 referring sentences that always name its colour and kind
and may add its motion ("moving to the left") or its position ("at the top"); a sentence is kept only
if it matches exactly one object of its clip. Some clips contain two objects of the same colour and
kind (moving in opposite directions), so that only motion or position words tell them apart.

Everything is a pure function of ``seed``: the same arguments write byte-identical files.

Layout written under ``root`` (identical to the real dataset, docs/datasets.md#ref-youtube-vos)::

    <split>/JPEGImages/<video>/<frame>.jpg          RGB frames
    <split>/Annotations/<video>/<frame>.png         palette PNG, pixel value = object id (0 = background)
    <split>/meta.json                               {"videos": {vid: {"objects": {id: {"category", "frames"}}}}}
                                                    (category "others" for every object)
    meta_expressions/<split>/meta_expressions.json  {"videos": {vid: {"expressions": {...}, "frames": [...]}}}

Frame names follow the real annotated frames, every 5th raw frame: ``00000``, ``00005``, ...

Difference from the real data, on purpose: a held-out split (e.g. ``valid``) is written *with* its
``Annotations`` and with ``obj_id`` in its expressions, as one's own annotated data would be, so J
and F are computed locally (:class:`wavecl.data.ytvos.YTVOSGroundTruth`); the real Ref-YouTube-VOS
valid split has neither. Its ``meta_expressions/test`` file, used
by the real protocol to subtract test videos from the valid file, is written empty when absent.
"""

from __future__ import annotations

import zlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

from wavecl.atomic import save_image, write_json
from wavecl.data.index_png import save_index_png

COLOURS: dict[str, tuple[int, int, int]] = {
    "red": (215, 35, 35),
    "green": (35, 160, 55),
    "blue": (40, 75, 215),
    "yellow": (235, 205, 30),
    "purple": (135, 55, 175),
    "orange": (240, 130, 25),
}
KINDS: tuple[str, ...] = ("circle", "square", "triangle")
MOTION_PHRASES: dict[str, str] = {
    "left": "moving to the left",
    "right": "moving to the right",
    "up": "moving up",
    "down": "moving down",
}
POSITION_PHRASES: dict[str, str] = {
    "top": "at the top",
    "bottom": "at the bottom",
    "left": "on the left",
    "right": "on the right",
}
SYNTHETIC_CATEGORY = "others"
"""Category written to ``meta.json`` for every object: a Ref-YouTube-VOS class, so 65-class training reads it."""
FRAME_STRIDE = 5
"""Real Ref-YouTube-VOS annotations exist for every 5th raw frame; names follow that numbering."""
SYNTHETIC_FRAMES = 8
"""Default frames per synthetic clip (``wavecl prepare synthetic --frames``)."""

_TWIN_PROBABILITY = 0.3
_MIN_VISIBLE_FRACTION = 0.4
_MAX_LAYOUT_TRIES = 200


@dataclass(frozen=True)
class SyntheticObject:
    """One moving shape.

    Attributes:
        obj_id: pixel value in the annotation PNGs (1-based), also the ``obj_id`` string of its expressions.
        colour: key of :data:`COLOURS`.
        kind: one of :data:`KINDS`.
        direction: ``left``/``right`` (horizontal movers) or ``up``/``down`` (vertical movers).
        position: the half of the frame it stays in: ``top``/``bottom`` for horizontal movers,
            ``left``/``right`` for vertical movers.
        radius: half the shape's extent, pixels.
        start: ``(x, y)`` centre in frame 0, pixels.
        speed: pixels per (annotated) frame along ``direction``.
    """

    obj_id: int
    colour: str
    kind: str
    direction: str
    position: str
    radius: float
    start: tuple[float, float]
    speed: float

    def centre(self, t: int) -> tuple[float, float]:
        """``(x, y)`` centre in frame ``t``."""
        dx, dy = {"left": (-1, 0), "right": (1, 0), "up": (0, -1), "down": (0, 1)}[self.direction]
        return self.start[0] + dx * self.speed * t, self.start[1] + dy * self.speed * t

    def outline(self, t: int) -> list[tuple[float, float]] | tuple[float, float, float, float]:
        """The shape in frame ``t``: a bounding box ``(x0, y0, x1, y1)`` (circle, square) or triangle vertices."""
        x, y, r = *self.centre(t), self.radius
        if self.kind == "triangle":
            return [(x, y - r), (x - r, y + 0.8 * r), (x + r, y + 0.8 * r)]
        half = r if self.kind == "circle" else 0.85 * r
        return (x - half, y - half, x + half, y + half)


@dataclass(frozen=True)
class SyntheticExpression:
    """A referring sentence and the id of the one object it describes."""

    exp_id: str
    text: str
    obj_id: int


@dataclass(frozen=True)
class SyntheticVideo:
    """Everything needed to re-render one clip (no pixels are stored).

    Attributes:
        video_id: folder name under ``JPEGImages``/``Annotations``.
        size: ``(H, W)``.
        frame_names: ``T`` names without extension (``00000``, ``00005``, ...).
        background: base RGB colour of the background.
        texture_seed: seed of the static background texture.
        objects: the shapes in drawing order (later ones occlude earlier ones).
        expressions: sentences in ``exp_id`` order.
    """

    video_id: str
    size: tuple[int, int]
    frame_names: tuple[str, ...]
    background: tuple[int, int, int]
    texture_seed: int
    objects: tuple[SyntheticObject, ...]
    expressions: tuple[SyntheticExpression, ...]

    def render(self) -> tuple[np.ndarray, np.ndarray]:
        """Draw the clip.

        Returns:
            ``frames`` ``[T, H, W, 3]`` uint8 RGB (before JPEG compression) and ``labels``
            ``[T, H, W]`` uint8 object ids (0 = background), exactly what the PNGs hold.
        """
        height, width = self.size
        texture = np.random.default_rng(self.texture_seed).normal(0.0, 6.0, size=(height, width, 1))
        background = np.clip(np.asarray(self.background, dtype=np.float64) + texture, 0, 255).astype(np.uint8)
        palette = np.zeros((256, 3), dtype=np.uint8)
        for obj in self.objects:
            palette[obj.obj_id] = COLOURS[obj.colour]
        frames = np.empty((len(self.frame_names), height, width, 3), dtype=np.uint8)
        labels = np.empty((len(self.frame_names), height, width), dtype=np.uint8)
        for t in range(len(self.frame_names)):
            labels[t] = draw_labels(self.objects, t, self.size)
            frames[t] = np.where(labels[t, :, :, None] > 0, palette[labels[t]], background)
        return frames, labels


@dataclass(frozen=True)
class SyntheticInfo:
    """What :func:`write_synthetic_ytvos` wrote.

    Attributes:
        root: dataset root (contains ``<split>/`` and ``meta_expressions/``).
        split: split folder name.
        seed: generator seed.
        size: ``(H, W)`` of every frame.
        num_frames: frames per video.
        videos: the clips, in the order of the meta files.
    """

    root: Path
    split: str
    seed: int
    size: tuple[int, int]
    num_frames: int
    videos: tuple[SyntheticVideo, ...]

    @property
    def num_expressions(self) -> int:
        return sum(len(video.expressions) for video in self.videos)


def draw_labels(objects: tuple[SyntheticObject, ...], t: int, size: tuple[int, int]) -> np.ndarray:
    """``[H, W]`` uint8 id map of frame ``t`` of ``size`` ``(H, W)``; objects drawn in order, later ones on top."""
    height, width = size
    canvas = Image.new("L", (width, height), 0)
    draw = ImageDraw.Draw(canvas)
    for obj in objects:
        outline = obj.outline(t)
        if obj.kind == "circle":
            draw.ellipse(outline, fill=obj.obj_id)
        elif obj.kind == "square":
            draw.rectangle(outline, fill=obj.obj_id)
        else:
            draw.polygon(outline, fill=obj.obj_id)
    return np.asarray(canvas)


def sample_object(
    rng: np.random.Generator,
    obj_id: int,
    colour: str,
    kind: str,
    axis: str,
    direction: str,
    size: tuple[int, int],
    num_frames: int,
) -> SyntheticObject:
    """Place one shape so that its centre stays inside the frame and inside its half for the whole clip.

    ``axis`` is ``horizontal`` or ``vertical``, ``direction`` one of :data:`MOTION_PHRASES` along it; the
    position (the half of the frame), radius, start and speed are drawn from ``rng``.
    """
    height, width = size
    radius = float(rng.uniform(0.10, 0.15) * min(height, width))
    steps = max(num_frames - 1, 1)
    if axis == "horizontal":
        position = str(rng.choice(["top", "bottom"]))
        along, across = width, height
    else:
        position = str(rng.choice(["left", "right"]))
        along, across = height, width
    speed = min(float(rng.uniform(0.02, 0.04) * along), (along - 2 * radius) / steps)
    travel = speed * (num_frames - 1)
    forward = direction in ("right", "down")
    # at the speed cap the range is empty up to rounding (travel = along - 2 * radius): start at the edge
    latest = max(radius, along - radius - travel)
    start_along = float(rng.uniform(radius, latest)) + (0.0 if forward else travel)
    low, high = (radius, across / 2 - 2) if position in ("top", "left") else (across / 2 + 2, across - radius)
    start_across = float(rng.uniform(low, high))
    start = (start_along, start_across) if axis == "horizontal" else (start_across, start_along)
    return SyntheticObject(obj_id, colour, kind, direction, position, radius, start, speed)


def _sample_objects(rng: np.random.Generator, size: tuple[int, int], num_frames: int) -> tuple[SyntheticObject, ...]:
    """2-4 objects with distinct (colour, kind), except possibly one twin pair sharing both.

    Twins move along the same axis in opposite directions, so motion words always separate them.
    """
    num_objects = int(rng.integers(2, 5))
    has_twin = bool(rng.random() < _TWIN_PROBABILITY)
    pairs = [(colour, kind) for colour in COLOURS for kind in KINDS]
    order = rng.permutation(len(pairs))
    chosen = [pairs[i] for i in order[: num_objects - int(has_twin)]]
    axes = [str(rng.choice(["horizontal", "vertical"])) for _ in chosen]
    directions = [str(rng.choice(["left", "right"] if axis == "horizontal" else ["up", "down"])) for axis in axes]
    if has_twin:
        chosen.append(chosen[0])
        axes.append(axes[0])
        opposite = {"left": "right", "right": "left", "up": "down", "down": "up"}
        directions.append(opposite[directions[0]])
    drawing_order = rng.permutation(num_objects)
    return tuple(
        sample_object(rng, obj_id, chosen[i][0], chosen[i][1], axes[i], directions[i], size, num_frames)
        for obj_id, i in enumerate(drawing_order, start=1)
    )


def is_visible_enough(objects: tuple[SyntheticObject, ...], labels: np.ndarray, size: tuple[int, int]) -> bool:
    """Whether every object keeps at least 40 % of its own area, unoccluded, in at least half of the frames.

    ``labels`` is the clip's ``[T, H, W]`` id map (:func:`draw_labels` of every frame).
    """
    num_frames = labels.shape[0]
    for obj in objects:
        alone_areas = np.array([(draw_labels((obj,), t, size) > 0).sum() for t in range(num_frames)])
        visible_areas = (labels == obj.obj_id).sum(axis=(1, 2))
        if 2 * np.count_nonzero(visible_areas >= _MIN_VISIBLE_FRACTION * alone_areas) < num_frames:
            return False
    return True


def _attributes(obj: SyntheticObject) -> dict[str, str]:
    return {"colour": obj.colour, "kind": obj.kind, "direction": obj.direction, "position": obj.position}


def _sentence(obj: SyntheticObject, used: tuple[str, ...], variant: int) -> str:
    """One sentence naming colour and kind plus the attributes in ``used`` (``direction``, ``position``)."""
    subject = f"the {obj.colour} {obj.kind}"
    if used == ():
        return subject
    if used == ("direction",):
        motion = MOTION_PHRASES[obj.direction]
        return f"{subject} {motion}" if variant == 0 else f"{subject} that is {motion}"
    if used == ("position",):
        return f"{subject} {POSITION_PHRASES[obj.position]}"
    return f"{subject} {POSITION_PHRASES[obj.position]} {MOTION_PHRASES[obj.direction]}"


def sample_expressions(
    rng: np.random.Generator, objects: tuple[SyntheticObject, ...]
) -> tuple[SyntheticExpression, ...]:
    """1-3 distinct sentences per object, each matching exactly one object of the clip; ``exp_id`` ``0``,
    ``1``, ... in object order."""
    templates: list[tuple[tuple[str, ...], int]] = [
        ((), 0),
        (("direction",), 0),
        (("direction",), 1),
        (("position",), 0),
        (("position", "direction"), 0),
    ]
    expressions: list[SyntheticExpression] = []
    for obj in objects:
        attributes = _attributes(obj)
        unambiguous = []
        for used, variant in templates:
            keys = ("colour", "kind", *used)
            matches = [other for other in objects if all(_attributes(other)[k] == attributes[k] for k in keys)]
            if len(matches) == 1:
                unambiguous.append((used, variant))
        count = int(rng.integers(1, min(3, len(unambiguous)) + 1))
        for index in sorted(rng.choice(len(unambiguous), size=count, replace=False)):
            used, variant = unambiguous[index]
            expressions.append(SyntheticExpression(str(len(expressions)), _sentence(obj, used, variant), obj.obj_id))
    return tuple(expressions)


def sample_synthetic_video(seed: int, split: str, index: int, num_frames: int, size: tuple[int, int]) -> SyntheticVideo:
    """Draw the description of clip ``index`` of ``split``; a pure function of its arguments.

    Clip ``index`` does not depend on how many clips are generated, and the splits draw from
    different streams, so ``train`` and ``valid`` never share clips.
    """
    if num_frames < 1:
        raise ValueError(f"num_frames must be >= 1, got {num_frames}")
    height, width = size
    if height < 24 or width < 24:
        raise ValueError(f"frame size must be at least 24x24 pixels, got {size}")
    rng = np.random.default_rng([seed, zlib.crc32(split.encode()), index])
    for _ in range(_MAX_LAYOUT_TRIES):
        objects = _sample_objects(rng, size, num_frames)
        labels = np.stack([draw_labels(objects, t, size) for t in range(num_frames)])
        if is_visible_enough(objects, labels, size):
            break
    else:
        raise RuntimeError(f"no layout with visible objects found for clip {index} of {split!r} (seed {seed})")
    return assemble_video(rng, split, index, size, num_frames, objects, lambda: sample_expressions(rng, objects))


def assemble_video(
    rng: np.random.Generator,
    split: str,
    index: int,
    size: tuple[int, int],
    num_frames: int,
    objects: tuple[SyntheticObject, ...],
    expressions: Callable[[], tuple[SyntheticExpression, ...]],
) -> SyntheticVideo:
    """Clip ``index`` of ``split`` showing ``objects``: draws the background colour and texture seed from
    ``rng``, then calls ``expressions`` (so its own draws, if any, come after those two)."""
    return SyntheticVideo(
        video_id=f"{split}_{index:05d}",
        size=(size[0], size[1]),
        frame_names=tuple(f"{FRAME_STRIDE * t:05d}" for t in range(num_frames)),
        background=tuple(int(v) for v in rng.integers(170, 236, size=3)),  # type: ignore[arg-type]
        texture_seed=int(rng.integers(2**31)),
        objects=objects,
        expressions=expressions(),
    )


def write_synthetic_ytvos(
    root: str | Path,
    num_videos: int,
    num_frames: int = SYNTHETIC_FRAMES,
    size: tuple[int, int] = (64, 96),
    seed: int = 0,
    split: str = "train",
    jpeg_quality: int = 95,
) -> SyntheticInfo:
    """Generate ``num_videos`` clips and write them under ``root`` in the Ref-YouTube-VOS layout.

    Args:
        root: dataset root; ``<split>/`` and ``meta_expressions/<split>/`` are (over)written.
        num_videos: number of clips.
        num_frames: frames per clip ``T``.
        size: ``(H, W)`` of every frame.
        seed: all content is a deterministic function of ``seed``, ``split`` and the clip index.
        split: split folder name (``train``, ``valid``, ...). Every split gets annotations.
        jpeg_quality: JPEG quality of the frames.

    Returns:
        A :class:`SyntheticInfo` listing every clip, object and expression written.
    """
    videos = tuple(sample_synthetic_video(seed, split, index, num_frames, size) for index in range(num_videos))
    write_synthetic_videos(root, split, videos, jpeg_quality)
    return SyntheticInfo(Path(root), split, seed, (size[0], size[1]), num_frames, videos)


def write_synthetic_videos(
    root: str | Path, split: str, videos: Sequence[SyntheticVideo], jpeg_quality: int = 95
) -> None:
    """Render ``videos`` and write them as split ``split`` under ``root`` in the Ref-YouTube-VOS layout
    (the module docstring), with masks; ``<split>/`` and ``meta_expressions/<split>/`` are (over)written.

    Every video keeps its own frame names and length, so clips drawn by other samplers (look-alike clips of
    :mod:`wavecl.testing`) are written the same way.
    """
    root = Path(root)
    meta_videos: dict[str, dict] = {}
    expression_videos: dict[str, dict] = {}
    for video in videos:
        frames, labels = video.render()
        for name, frame, label in zip(video.frame_names, frames, labels):
            save_image(
                Image.fromarray(frame),
                root / split / "JPEGImages" / video.video_id / f"{name}.jpg",
                format="JPEG",
                quality=jpeg_quality,
            )
            save_index_png(label, root / split / "Annotations" / video.video_id / f"{name}.png")
        meta_videos[video.video_id] = {
            "objects": {
                str(obj.obj_id): {
                    "category": SYNTHETIC_CATEGORY,
                    "frames": [n for n, label in zip(video.frame_names, labels) if (label == obj.obj_id).any()],
                }
                for obj in video.objects
            }
        }
        expression_videos[video.video_id] = {
            "expressions": {e.exp_id: {"exp": e.text, "obj_id": str(e.obj_id)} for e in video.expressions},
            "frames": list(video.frame_names),
        }
    write_json(root / split / "meta.json", {"videos": meta_videos})
    write_json(root / "meta_expressions" / split / "meta_expressions.json", {"videos": expression_videos})
    test_meta = root / "meta_expressions" / "test" / "meta_expressions.json"
    if split != "train" and not test_meta.exists():
        write_json(test_meta, {"videos": {}})
