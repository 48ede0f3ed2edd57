"""How a trained network is run on a video: the one place that names these settings and their defaults.

The predictor, ``wavecl predict``, ``wavecl serve`` and windowed evaluation all take an
:class:`InferenceSettings`; checkpoints and pretrained folders carry the sizes and window the model was
trained for (:data:`RECORDED_SETTINGS`), so a model runs at its own resolution unless told otherwise (as
torchvision's weights carry their transforms).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Literal, get_args

from wavecl.config import DEFAULT_AMP, AmpMode, DataConfig

Runtime = Literal["torch", "onnxruntime"]
"""What runs the network: PyTorch, or ONNX Runtime in float32 on the CPU."""

RUNTIMES: tuple[str, ...] = get_args(Runtime)

RECORDED_SETTINGS = ("short_size", "max_size", "window")
"""The settings a model carries with its weights: those it was trained and evaluated at (a pretrained
folder's ``preprocessor_config.json``, a run's ``data.eval_short_size`` / ``eval_max_size`` / ``window_size``)."""


@dataclass(frozen=True)
class InferenceSettings:
    """Settings of whole-video inference.

    Attributes:
        short_size: frames are resized so their short side has this many pixels (DETR resize).
        max_size: cap on the resized long side in pixels; ``None`` for no cap.
        window: frames per clip given to the network at once; memory grows with it, not with the video.
        overlap: frames shared by consecutive windows, in ``[0, window)``; they link each window's choice
            of query to the previous one's and keep the earlier window's masks (:mod:`wavecl.model.linking`).
        link_weight: weight of the agreement (mask IoU on the shared frames) with the previous window's
            choice when a window picks its query, ``>= 0``; ``0`` picks each window's best-scoring query on
            its own, as without overlap.
        threshold: mask probability above which a pixel is in the mask, in ``(0, 1)``.
        device: ``"auto"``, ``"cpu"``, ``"cuda"`` or ``"cuda:<index>"`` (:func:`wavecl.device.resolve_device`).
        amp: ``"off"``, ``"bf16"`` or ``"fp16"`` autocast (:func:`wavecl.amp.decide_precision`).
        runtime: ``"torch"`` or ``"onnxruntime"``.
        sentences_per_pass: sentences run through the text-conditioned part together; every window runs
            the backbone once for all of them.
        compile: ``torch.compile`` the network's heavy parts.

    Raises:
        ValueError: a value out of its range, naming the field.
    """

    short_size: int = 360
    max_size: int | None = 640
    window: int = 8
    overlap: int = 1
    link_weight: float = 1.0
    threshold: float = 0.5
    device: str = "cpu"
    amp: AmpMode = DEFAULT_AMP
    runtime: Runtime = "torch"
    sentences_per_pass: int = 8
    compile: bool = False

    def __post_init__(self) -> None:
        for name in ("short_size", "window", "sentences_per_pass"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"inference setting {name} must be a positive integer, got {value!r}")
        if self.max_size is not None and (not isinstance(self.max_size, int) or self.max_size < self.short_size):
            raise ValueError(f"inference setting max_size must be None or >= short_size, got {self.max_size!r}")
        if isinstance(self.overlap, bool) or not isinstance(self.overlap, int) or not 0 <= self.overlap < self.window:
            raise ValueError(
                f"inference setting overlap must be in [0, window={self.window}), got {self.overlap!r} "
                "(windows of one frame share none: overlap 0)"
            )
        if not self.link_weight >= 0.0:
            raise ValueError(f"inference setting link_weight must be >= 0, got {self.link_weight!r}")
        if not 0.0 < self.threshold < 1.0:
            raise ValueError(f"inference setting threshold must be a probability in (0, 1), got {self.threshold!r}")
        if self.runtime not in RUNTIMES:
            raise ValueError(f"inference setting runtime must be one of {', '.join(RUNTIMES)}, got {self.runtime!r}")

    def with_given(self, **changes: Any) -> InferenceSettings:
        """A copy with the ``changes`` that are not ``None`` applied, so options a user left unset keep
        the current value (``dataclasses.replace`` sets ``max_size=None``, no cap, explicitly).

        Raises:
            TypeError: an unknown setting name.
            ValueError: the result is out of range.
        """
        known = {item.name for item in dataclasses.fields(self)}
        unknown = sorted(set(changes) - known)
        if unknown:
            raise TypeError(f"unknown inference settings: {', '.join(unknown)} (known: {', '.join(sorted(known))})")
        return dataclasses.replace(self, **{name: value for name, value in changes.items() if value is not None})

    def recorded(self) -> dict[str, int | None]:
        """The :data:`RECORDED_SETTINGS` as a JSON-ready dict (a pretrained folder's ``preprocessor_config.json``)."""
        return {name: getattr(self, name) for name in RECORDED_SETTINGS}

    def with_recorded(self, values: Mapping[str, Any], source: str) -> InferenceSettings:
        """A copy with the :data:`RECORDED_SETTINGS` found in ``values`` (others are ignored); ``max_size``
        may be ``None`` (no cap).

        Args:
            values: what was read from ``source`` (a JSON object).
            source: the file the values come from, named in errors.

        Raises:
            ValueError: a recorded value of the wrong type or out of range, naming ``source`` and the field.
        """
        changes = {name: values[name] for name in RECORDED_SETTINGS if name in values}
        for name, value in changes.items():
            nullable = name == "max_size"
            if isinstance(value, bool) or not (isinstance(value, int) or (nullable and value is None)):
                expected = "an integer or null" if nullable else "an integer"
                raise ValueError(f"{source}: {name!r} must be {expected}, got {value!r}")
        try:
            return dataclasses.replace(self, **changes)
        except ValueError as error:
            raise ValueError(f"{source}: {error}") from error

    @classmethod
    def of_run(cls, data: DataConfig) -> InferenceSettings:
        """The settings a training run's model runs at: its evaluation resize (``data.eval_short_size``,
        ``data.eval_max_size``) and window (``data.window_size``); every other setting at its default."""
        return cls(short_size=data.eval_short_size, max_size=data.eval_max_size, window=data.window_size)

    @classmethod
    def of_evaluation(cls, data: DataConfig) -> InferenceSettings:
        """The settings of windowed Ref-YouTube-VOS-layout evaluation: the run's (:meth:`of_run`) with
        ``data.eval_overlap`` and ``data.eval_link_weight`` (0 and 0 by default: disjoint windows choosing
        on their own, the published protocols).

        Raises:
            ValueError: ``data.eval_overlap`` or ``data.eval_link_weight`` out of range.
        """
        try:
            return dataclasses.replace(cls.of_run(data), overlap=data.eval_overlap, link_weight=data.eval_link_weight)
        except ValueError as error:
            raise ValueError(
                f"data.window_size {data.window_size}, data.eval_overlap {data.eval_overlap}, "
                f"data.eval_link_weight {data.eval_link_weight}: {error}"
            ) from error
