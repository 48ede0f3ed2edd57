"""Typed configuration of wavecl, loaded from YAML.

A config is a :class:`Config` with four sections (``model``, ``data``, ``loss``, ``train``). Files in
``configs/`` are nested YAML of those sections. The original repository's flat files, whose entries
have the form ``key: {desc: ..., value: ...}``, load too (:func:`from_reference_dict`).

PyYAML parses ``5e-5`` as a string (YAML 1.1); every numeric field is therefore cast to its declared
type on load, so ``lr: 5e-5`` is the float 5e-05 whichever way it was written.
"""

from __future__ import annotations

import dataclasses
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import yaml

AmpMode = Literal["off", "bf16", "fp16"]
"""Mixed precision everywhere (training, evaluation, prediction): ``off`` (float32), ``bf16`` or ``fp16``
autocast on CUDA; :func:`wavecl.amp.decide_precision` turns it into what runs."""
DEFAULT_AMP: AmpMode = "off"
"""The one default of every ``amp`` setting: float32, as the published results were trained."""


@dataclass
class ModelConfig:
    """The network (architecture.md §0). Defaults are the published Video-Swin-T / RoBERTa setting."""

    backbone: str = "video-swin-t"
    backbone_pretrained_path: str | None = None
    backbone_drop_path: float = 0.2
    # Overrides of the named Video-Swin variant; used for reduced models (tests, demo).
    backbone_embed_dim: int | None = None
    backbone_depths: list[int] | None = None
    backbone_num_heads: list[int] | None = None
    backbone_window_size: list[int] = field(default_factory=lambda: [8, 7, 7])
    text_encoder: str = "roberta-base"
    freeze_text_encoder: bool = True
    sentence_pooling: Literal["mean", "pooler"] = "mean"
    d_model: int = 256
    nheads: int = 8
    num_queries: int = 20
    enc_layers: int = 3
    dec_layers: int = 3
    dim_feedforward: int = 2048
    dropout: float = 0.1
    num_feature_levels: int = 4
    enc_n_points: int = 4
    dec_n_points: int = 4
    voc_enc_layers: int = 3
    voc_dec_layers: int = 3
    voc_dim_feedforward: int = 2048
    voc_dropout: float = 0.1
    text_proj_dropout: float = 0.1
    num_classes: int = 1
    mask_kernels_dim: int = 8
    dynamic_mask_channels: int = 8
    controller_layers: int = 3
    rel_coord: bool = True
    # Parity switches (shared/spec/README.md decisions table).
    eval_layer: Literal["last", "reference"] = "last"
    fla_order: Literal["frame", "reference"] = "frame"
    sep_pooling: Literal["masked", "reference"] = "masked"


@dataclass
class DataConfig:
    """Dataset, sampling and transforms (datasets_and_metrics.md §0, §9)."""

    dataset_name: Literal["a2d_sentences", "jhmdb_sentences", "ref_youtube_vos", "coco", "davis", "synthetic"] = (
        "a2d_sentences"
    )
    root: str = "data"
    window_size: int = 8
    train_short_size: int = 320
    train_max_size: int | None = 576
    eval_short_size: int = 320
    eval_max_size: int | None = 576
    horizontal_flip: bool = True
    flip_mode: Literal["uniform", "reference"] = "uniform"
    num_workers: int = 4
    eval_batch_size: int = 1
    # Ref-YouTube-VOS / synthetic evaluation: each video in windows of window_size frames (bounded
    # memory, one query per window), or whole (the reference: one query per video, memory grows with length).
    eval_whole_video: bool = False
    coco_gt_path: str | None = None
    jhmdb_samples_metadata: str | None = None
    coco_datasets: list[str] = field(default_factory=lambda: ["refcoco", "refcoco+", "refcocog"])
    davis_annotators: list[int] = field(default_factory=lambda: [0, 1, 2, 3])


@dataclass
class LossConfig:
    """Loss weights and matching costs (training.md §1.8, §4, §5)."""

    con: float = 1.0
    dice: float = 5.0
    sigmoid_focal: float = 2.0
    cls: float = 2.0
    bbox: float = 2.0
    giou: float = 2.0
    cost_class: float = 2.0
    cost_dice: float = 5.0
    cost_bbox: float = 2.0
    cost_giou: float = 2.0
    cost_con: float = 0.0
    focal_alpha: float = 0.25
    focal_gamma: float = 2.0


@dataclass
class TrainConfig:
    """Optimisation, schedule and run bookkeeping (training.md §2)."""

    epochs: int = 40
    batch_size: int = 2
    lr: float = 5e-5
    lr_backbone: float = 5e-6
    text_encoder_lr: float = 5e-6
    weight_decay: float = 1e-4
    lr_drop: list[int] = field(default_factory=lambda: [15])
    lr_gamma: float = 0.2
    clip_max_norm: float = 0.1
    grad_accum_steps: int = 1
    amp: AmpMode = DEFAULT_AMP
    seed: int = 42
    eval_interval: int = 1
    # A NaN/inf loss term: "stop" raises naming the term; "skip" drops the batch (with gradient
    # accumulation, the whole accumulation window: DDP has not synchronised its gradients yet).
    nonfinite_loss: Literal["skip", "stop"] = "stop"
    # Seconds a collective (gradient all-reduce, evaluation gathers, waiting while rank 0 computes the
    # metrics) may wait for the other ranks before the job fails.
    dist_timeout_s: float = 1800.0
    output_dir: str = "runs"
    version: str = "default"
    pretrained_weights: str | None = None
    max_steps_per_epoch: int | None = None


@dataclass
class Config:
    model: ModelConfig = field(default_factory=ModelConfig)
    data: DataConfig = field(default_factory=DataConfig)
    loss: LossConfig = field(default_factory=LossConfig)
    train: TrainConfig = field(default_factory=TrainConfig)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def run_directory(self) -> Path:
        """``<train.output_dir>/<data.dataset_name>/<train.version>``: where a run writes everything."""
        return Path(self.train.output_dir) / self.data.dataset_name / self.train.version

    def to_yaml(self) -> str:
        return yaml.safe_dump(self.to_dict(), sort_keys=False)


SECTIONS: dict[str, type] = {
    "model": ModelConfig,
    "data": DataConfig,
    "loss": LossConfig,
    "train": TrainConfig,
}


def _coerce(value: Any, annotation: Any, where: str) -> Any:
    """Cast a YAML value to a field's declared type, raising a ValueError naming ``where``."""
    origin = typing.get_origin(annotation)
    args = typing.get_args(annotation)
    if origin in (typing.Union, types.UnionType):
        if type(None) in args and (value is None or (isinstance(value, str) and value in ("None", "null", ""))):
            return None
        (inner,) = [a for a in args if a is not type(None)]
        return _coerce(value, inner, where)
    if origin is Literal:
        if value not in args:
            raise ValueError(f"{where}: {value!r} is not one of {list(args)}")
        return value
    if origin is list:
        if not isinstance(value, (list, tuple)):
            value = [value]
        return [_coerce(v, args[0], f"{where}[{i}]") for i, v in enumerate(value)]
    if annotation is bool:
        if isinstance(value, bool):
            return value
        if isinstance(value, str) and value.lower() in ("true", "false"):
            return value.lower() == "true"
        raise ValueError(f"{where}: expected true or false, got {value!r}")
    if annotation in (int, float):
        if isinstance(value, bool):
            raise ValueError(f"{where}: expected a number, got {value!r}")
        try:
            number = float(value)
        except (TypeError, ValueError):
            raise ValueError(f"{where}: expected a number, got {value!r}") from None
        if annotation is int:
            if not number.is_integer():
                raise ValueError(f"{where}: expected an integer, got {value!r}")
            return int(number)
        return number
    if annotation is str:
        return str(value)
    return value


def _build_section(cls: type, values: dict[str, Any], where: str) -> Any:
    hints = typing.get_type_hints(cls)
    names = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(values) - names)
    if unknown:
        raise ValueError(f"{where}: unknown field(s) {unknown}; known: {sorted(names)}")
    return cls(**{k: _coerce(v, hints[k], f"{where}.{k}") for k, v in values.items()})


def from_dict(values: dict[str, Any], source: str = "config") -> Config:
    """Build a :class:`Config` from a nested dict ``{model: {...}, data: {...}, ...}``."""
    unknown = sorted(set(values) - set(SECTIONS))
    if unknown:
        raise ValueError(f"{source}: unknown section(s) {unknown}; known: {list(SECTIONS)}")
    sections = {}
    for name, cls in SECTIONS.items():
        section = values.get(name) or {}
        if not isinstance(section, dict):
            raise ValueError(f"{source}: section {name!r} must be a mapping, got {type(section).__name__}")
        sections[name] = _build_section(cls, section, f"{source}: {name}")
    return Config(**sections)


# Original flat key -> (section, field). Keys mapped to None are read and ignored: they have no
# effect in the reference either (training.md §1.4) or concern tools wavecl does not use (wandb).
REFERENCE_KEYS: dict[str, tuple[str, str] | None] = {
    "lr": ("train", "lr"),
    "lr_backbone": ("train", "lr_backbone"),
    "text_encoder_lr": ("train", "text_encoder_lr"),
    "weight_decay": ("train", "weight_decay"),
    "clip_max_norm": ("train", "clip_max_norm"),
    "seed": ("train", "seed"),
    "epochs": ("train", "epochs"),
    "batch_size": ("train", "batch_size"),
    "lr_drop": ("train", "lr_drop"),
    "freeze_text_encoder": ("model", "freeze_text_encoder"),
    "text_encoder_type": ("model", "text_encoder"),
    "num_classes": ("model", "num_classes"),
    "mask_kernels_dim": ("model", "mask_kernels_dim"),
    "controller_layers": ("model", "controller_layers"),
    "dynamic_mask_channels": ("model", "dynamic_mask_channels"),
    "rel_coord": ("model", "rel_coord"),
    "backbone": ("model", "backbone"),
    "backbone_pretrained_path": ("model", "backbone_pretrained_path"),
    "set_cost_con": ("loss", "cost_con"),
    "set_cost_cls": ("loss", "cost_class"),
    "set_cost_dice": ("loss", "cost_dice"),
    "set_costs_box": ("loss", "cost_bbox"),
    "set_costs_giou": ("loss", "cost_giou"),
    "class_loss_coef": ("loss", "cls"),
    "con_loss_coef": ("loss", "con"),
    "sigmoid_focal_loss_coef": ("loss", "sigmoid_focal"),
    "dice_loss_coef": ("loss", "dice"),
    "box_loss_coef": ("loss", "bbox"),
    "giou_coef": ("loss", "giou"),
    "dataset_name": ("data", "dataset_name"),
    "horizontal_flip_augmentations": ("data", "horizontal_flip"),
    "train_short_size": ("data", "train_short_size"),
    "train_max_size": ("data", "train_max_size"),
    "eval_short_size": ("data", "eval_short_size"),
    "eval_max_size": ("data", "eval_max_size"),
    "num_workers": ("data", "num_workers"),
    "eval_batch_size": ("data", "eval_batch_size"),
    "dataset_coco_gt_format_path": ("data", "coco_gt_path"),
    "window_size": ("data", "window_size"),
    "davis_path": ("data", "root"),
    "enable_amp": None,
    "backbone_pretrained": None,
    "train_backbone": None,
    "use_checkpoint": None,
    "with_box_refine": None,
    "aux_loss": None,
    "vl_loss": None,
    "eos_coef": None,
    "resize_and_crop_augmentations": None,
    "random_color": None,
    "output_dir": None,
    "calculate_precision_and_iou_metrics": None,
    "wandb_mode": None,
    "checkpoint_path": None,
    "out_dir": None,
    "generate_new_samples_metadata": None,
    "use_random_sample": None,
    "img_folder": None,
    "ann_file": None,
}
REFERENCE_TRANSFORMER_KEYS = {
    "enc_layers": "enc_layers",
    "dec_layers": "dec_layers",
    "dim_feedforward": "dim_feedforward",
    "d_model": "d_model",
    "dropout": "dropout",
    "nheads": "nheads",
    "num_queries": "num_queries",
    "num_feature_levels": "num_feature_levels",
    "dec_n_points": "dec_n_points",
    "enc_n_points": "enc_n_points",
}
REFERENCE_VOC_KEYS = {
    "enc_layers": "voc_enc_layers",
    "dec_layers": "voc_dec_layers",
    "dim_feedforward": "voc_dim_feedforward",
}
REFERENCE_DATASET_NAMES = {"ref_youtube_vos": "ref_youtube_vos", "joint": "ref_youtube_vos"}


def _reference_value(entry: Any) -> Any:
    return entry["value"] if isinstance(entry, dict) and "value" in entry else entry


def from_reference_dict(values: dict[str, Any], source: str = "config") -> Config:
    """Build a :class:`Config` from an original WaveCL file of ``key: {desc, value}`` entries.

    The nested ``DeformTransformer`` and ``VOC`` values are mapped onto :class:`ModelConfig`. The
    learning-rate decay gamma, hard-coded by dataset name in the reference (0.2 for A2D, else 0.1),
    becomes the explicit ``train.lr_gamma``.
    """
    nested: dict[str, dict[str, Any]] = {name: {} for name in SECTIONS}
    for key, entry in values.items():
        value = _reference_value(entry)
        if key == "DeformTransformer":
            for sub, target in REFERENCE_TRANSFORMER_KEYS.items():
                if sub in value:
                    nested["model"][target] = value[sub]
            if value.get("two_stage"):
                raise ValueError(f"{source}: DeformTransformer.two_stage is not supported (broken in the reference)")
            continue
        if key == "VOC":
            for sub, target in REFERENCE_VOC_KEYS.items():
                if sub in value:
                    nested["model"][target] = value[sub]
            voc_queries = {value.get("num_queries"), value.get("num_frame_queries")} - {None}
            frame_queries = nested["model"].get("num_queries")
            if len(voc_queries) > 1 or (frame_queries is not None and voc_queries - {frame_queries}):
                raise ValueError(
                    f"{source}: VOC.num_queries, VOC.num_frame_queries and DeformTransformer.num_queries must be equal"
                )
            if value.get("window_size", 0) != 0:
                raise ValueError(f"{source}: VOC.window_size must be 0 (full temporal attention)")
            continue
        if key not in REFERENCE_KEYS:
            raise ValueError(f"{source}: unknown key {key!r} in an original WaveCL config")
        target = REFERENCE_KEYS[key]
        if target is not None:
            section, name = target
            nested[section][name] = value
    if "dataset_name" in nested["data"]:
        name = nested["data"]["dataset_name"]
        nested["data"]["dataset_name"] = REFERENCE_DATASET_NAMES.get(name, name)
        nested["train"].setdefault("lr_gamma", 0.2 if name == "a2d_sentences" else 0.1)
    return from_dict(nested, source)


def load_config(path: str | Path) -> Config:
    """Load a config file, nested wavecl YAML or an original ``{desc, value}`` WaveCL file.

    Raises:
        FileNotFoundError: the file does not exist.
        ValueError: the YAML is malformed or a field is unknown or of the wrong type; the message
            names the file and the field.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"config file not found: {path}")
    try:
        values = yaml.safe_load(path.read_text())
    except yaml.YAMLError as error:
        raise ValueError(f"{path}: malformed YAML: {error}") from None
    if values is None:
        values = {}
    if not isinstance(values, dict):
        raise ValueError(f"{path}: top level must be a mapping")
    if set(values) <= set(SECTIONS):
        return from_dict(values, str(path))
    return from_reference_dict(values, str(path))


def apply_overrides(config: Config, overrides: dict[str, Any]) -> Config:
    """Return a copy of ``config`` with dotted overrides applied, e.g. ``{"train.lr": "1e-4"}``.

    Only values given explicitly are passed here (CLI flags left at their defaults never override the
    file, unlike the reference).
    """
    values = config.to_dict()
    for dotted, value in overrides.items():
        section, _, name = dotted.partition(".")
        if section not in values or name not in values[section]:
            raise ValueError(f"unknown config field {dotted!r}")
        values[section][name] = value
    return from_dict(values, "overrides")


def parse_override(text: str) -> tuple[str, Any]:
    """Parse ``section.field=value`` (value read as YAML) for ``--set`` command-line overrides."""
    key, sep, raw = text.partition("=")
    if not sep or "." not in key:
        raise ValueError(f"override {text!r} must look like section.field=value")
    return key.strip(), yaml.safe_load(raw)
