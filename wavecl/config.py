"""Typed configuration of wavecl, loaded from YAML.

A config is a :class:`Config` with four sections (``model``, ``data``, ``loss``, ``train``). The recipes
shipped in ``wavecl/configs/`` are nested YAML of those sections, named by their file's stem (``-c tiny``).
The original repository's flat files, whose entries have the form ``key: {desc: ..., value: ...}``, load
too (:func:`from_reference_dict`).

PyYAML parses ``5e-5`` as a string (YAML 1.1); every numeric field is therefore cast to its declared
type on load, so ``lr: 5e-5`` is the float 5e-05 whichever way it was written.
"""

from __future__ import annotations

import ast
import dataclasses
import difflib
import inspect
import os
import textwrap
import types
import typing
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, get_args

import yaml

from wavecl import original

PACKAGED_CONFIG_DIR = Path(__file__).resolve().parent / "configs"
"""The recipes shipped in the package (package data), one ``<name>.yaml`` per stage of the paper and more."""
YAML_SUFFIXES = (".yaml", ".yml")

AmpMode = Literal["off", "bf16", "fp16"]
"""Mixed precision everywhere (training, evaluation, prediction): ``off`` (float32), ``bf16`` or ``fp16``
autocast on CUDA, ``bf16`` on CPUs with bfloat16 instructions; :func:`wavecl.amp.decide_precision` turns it
into what runs."""
DEFAULT_AMP: AmpMode = "off"
"""The one default of every ``amp`` setting: float32, as the published results were trained."""
AMP_CHOICES: tuple[str, ...] = get_args(AmpMode)
"""The ``amp`` values, for command-line choices."""


@dataclass
class ModelConfig:
    """The network (docs/architecture.md). Defaults are the published Video-Swin-T / RoBERTa setting.

    Every field has a one-line docstring below it; ``wavecl config show`` prints them.
    """

    backbone: str = "video-swin-t"
    """Video-Swin variant: video-swin-t, video-swin-s or video-swin-b."""
    backbone_pretrained_path: str | None = None
    """Kinetics-400 Video-Swin weights (.pth) to start from; none: random initialisation."""
    backbone_drop_path: float = 0.2
    """Stochastic-depth rate of the backbone."""
    backbone_embed_dim: int | None = None
    """Override of the variant's embedding width (reduced models: tests, demo); none: the variant's."""
    backbone_depths: list[int] | None = None
    """Override of the variant's blocks per stage (reduced models); none: the variant's."""
    backbone_num_heads: list[int] | None = None
    """Override of the variant's attention heads per stage (reduced models); none: the variant's."""
    backbone_window_size: list[int] = field(default_factory=lambda: [8, 7, 7])
    """Backbone attention window (frames, height, width) in patches."""
    activation_checkpointing: bool = False
    """Training keeps only the inputs of every Video-Swin block and deformable encoder layer and recomputes
    the rest in the backward pass: less memory (benchmarks/memory_estimate.py), a second forward of those."""
    text_encoder: str = "roberta-base"
    """Hugging Face encoder folder (or name in the local cache), or 'minilm' for the packaged MiniLM."""
    freeze_text_encoder: bool = True
    """Keep the text encoder's weights fixed (and in eval mode)."""
    sentence_pooling: Literal["mean", "pooler"] = "mean"
    """Sentence feature: masked mean of the last hidden state, or the encoder's pooler (reference)."""
    d_model: int = 256
    """Width of the transformer and fusion features."""
    nheads: int = 8
    """Attention heads of the transformer layers."""
    num_queries: int = 20
    """Object queries per frame (candidate objects; the best-scoring one is the answer)."""
    enc_layers: int = 3
    """Deformable transformer encoder layers."""
    dec_layers: int = 3
    """Deformable transformer decoder layers (each adds an auxiliary loss)."""
    dim_feedforward: int = 2048
    """Hidden width of the transformer's feed-forward blocks."""
    dropout: float = 0.1
    """Dropout of the transformer layers."""
    num_feature_levels: int = 4
    """Feature scales fed to the deformable transformer."""
    enc_n_points: int = 4
    """Deformable sampling points per head and level in the encoder."""
    dec_n_points: int = 4
    """Deformable sampling points per head and level in the decoder."""
    voc_enc_layers: int = 3
    """Encoder layers of VOC, the video-level object cluster."""
    voc_dec_layers: int = 3
    """Decoder layers of VOC."""
    voc_dim_feedforward: int = 2048
    """Hidden width of VOC's feed-forward blocks."""
    voc_dropout: float = 0.1
    """Dropout of VOC's layers."""
    text_proj_dropout: float = 0.1
    """Dropout of the projection of text features to d_model."""
    num_classes: int = 1
    """Object classes of the class head: 1 (referred or not), 65 for Ref-YouTube-VOS categories."""
    mask_kernels_dim: int = 8
    """Channels of the mask features that the dynamic mask head convolves."""
    dynamic_mask_channels: int = 8
    """Hidden channels of the dynamic (per-query) mask head."""
    controller_layers: int = 3
    """Layers of the dynamic mask head."""
    rel_coord: bool = True
    """Give the dynamic mask head each pixel's offset from the query's box centre."""
    eval_layer: Literal["last", "reference"] = "last"
    """Decoder layer at inference: the last, or the reference's layer-0 heads (parity switch, docs/differences.md)."""
    fla_order: Literal["frame", "reference"] = "frame"
    """Wavelet high-band attention: per-frame local term, or the reference's frame order (parity switch)."""
    sep_pooling: Literal["masked", "reference"] = "masked"
    """SEP pooling: over real tokens and pixels only, or the reference's over padding too (parity switch)."""


TRAINING_ONLY_MODEL_FIELDS = frozenset(
    {
        "backbone_pretrained_path",
        "backbone_drop_path",
        "activation_checkpointing",
        "freeze_text_encoder",
        "dropout",
        "voc_dropout",
        "text_proj_dropout",
    }
)
""":class:`ModelConfig` fields that shape training but not the evaluated network (its weights come from
the checkpoint), so an evaluation config may differ from the run's on them."""


@dataclass
class DataConfig:
    """Dataset, sampling and transforms (docs/datasets.md)."""

    dataset_name: Literal[
        "a2d_sentences", "jhmdb_sentences", "ref_youtube_vos", "coco", "davis", "synthetic", "mevis"
    ] = "a2d_sentences"
    """Dataset and evaluation protocol; ref_youtube_vos also reads one's own data in that layout."""
    root: str = "data"
    """Dataset folder (or its parent); only read, never written."""
    cache_dir: str | None = None
    """Folder for derived files (sample lists); none: $WAVECL_CACHE_DIR, else ~/.cache/wavecl."""
    window_size: int = 8
    """Frames per clip, in training and in evaluation windows."""
    train_short_size: int = 320
    """Training resize: length of the short side, pixels."""
    train_max_size: int | None = 576
    """Training resize: cap on the long side, pixels; none: no cap."""
    eval_short_size: int = 320
    """Evaluation and prediction resize: length of the short side, pixels."""
    eval_max_size: int | None = 576
    """Evaluation and prediction resize: cap on the long side, pixels; none: no cap."""
    horizontal_flip: bool = True
    """Random horizontal flips in training (left/right swapped in the sentence)."""
    flip_mode: Literal["uniform", "reference"] = "uniform"
    """Flip with probability 0.5 and whole-word swaps, or as the reference does (parity switch)."""
    num_workers: int = 4
    """Data-loading worker processes (0: load in the training process)."""
    eval_batch_size: int = 1
    """Clips per evaluation batch; clips of different lengths (a video's last, shorter window) go in batches of
    their own, since padding in time would change their outputs."""
    eval_sentences_per_pass: int = 4
    """Evaluation: the sentences about one clip share one backbone pass and go through the
    text-conditioned part at most max(eval_batch_size, eval_sentences_per_pass) at a time (a memory bound)."""
    eval_whole_video: bool = False
    """Ref-YouTube-VOS-layout evaluation of each video whole (reference, memory grows) instead of in windows."""
    eval_overlap: int = 0
    """Ref-YouTube-VOS-layout evaluation in windows: frames shared by consecutive windows (0: disjoint windows,
    the published protocols' parity)."""
    eval_link_weight: float = 0.0
    """Weight of the agreement with the previous window's choice of query (mask IoU on the shared frames;
    0: each window chooses on its own)."""
    coco_gt_path: str | None = None
    """COCO-format ground truth of A2D/JHMDB evaluation (made by `wavecl prepare a2d-gt` / `jhmdb-gt`)."""
    jhmdb_samples_metadata: str | None = None
    """MTTR's JHMDB sample list; none: 3 frames per video drawn with seed 42."""
    coco_datasets: list[str] = field(default_factory=lambda: ["refcoco", "refcoco+", "refcocog"])
    """RefCOCO sets trained and evaluated on."""
    davis_annotators: list[int] = field(default_factory=lambda: [0, 1, 2, 3])
    """Ref-DAVIS17 annotator slots predicted and averaged."""
    mevis_eval_split: Literal["valid_u", "valid"] = "valid_u"
    """MeViS split evaluated: valid_u (has masks: J, F, J&F here) or valid (submission zip for the server)."""


@dataclass
class LossConfig:
    """Loss weights and matching costs (docs/training.md#losses, docs/training.md#matcher)."""

    con: float = 1.0
    """Weight of the contrastive (vision-language) loss."""
    dice: float = 5.0
    """Weight of the dice mask loss."""
    sigmoid_focal: float = 2.0
    """Weight of the sigmoid focal mask loss."""
    cls: float = 2.0
    """Weight of the classification loss."""
    bbox: float = 2.0
    """Weight of the L1 box loss."""
    giou: float = 2.0
    """Weight of the generalised-IoU box loss."""
    cost_class: float = 2.0
    """Matching cost weight of the class score."""
    cost_dice: float = 5.0
    """Matching cost weight of the dice mask distance."""
    cost_bbox: float = 2.0
    """Matching cost weight of the L1 box distance."""
    cost_giou: float = 2.0
    """Matching cost weight of the generalised IoU."""
    cost_con: float = 0.0
    """Matching cost weight of the contrastive score."""
    focal_alpha: float = 0.25
    """Alpha of the focal losses and class cost."""
    focal_gamma: float = 2.0
    """Gamma of the focal losses and class cost."""
    giou_form: Literal["torchvision", "reference"] = "torchvision"
    """GIoU of the box loss and the matching cost: torchvision's form, or the reference's with 1e-6 added to
    numerators and denominators (parity switch; they differ for tiny and empty boxes, docs/differences.md)."""


@dataclass
class TrainConfig:
    """Optimisation, schedule and run bookkeeping (docs/training.md)."""

    epochs: int = 40
    """Total training epochs."""
    batch_size: int = 2
    """Clips per process and step (the effective batch is this times the processes)."""
    lr: float = 5e-5
    """Learning rate of everything but the backbone and the text encoder."""
    lr_backbone: float = 5e-6
    """Learning rate of the Video-Swin backbone."""
    text_encoder_lr: float = 5e-6
    """Learning rate of the text encoder (when not frozen)."""
    weight_decay: float = 1e-4
    """AdamW weight decay."""
    lr_drop: list[int] = field(default_factory=lambda: [15])
    """Epochs after which the learning rates are multiplied by lr_gamma."""
    lr_gamma: float = 0.2
    """Learning-rate decay factor at each lr_drop milestone."""
    clip_max_norm: float = 0.1
    """Gradient-norm clipping threshold; 0: no clipping."""
    grad_accum_steps: int = 1
    """Batches whose gradients are summed before each optimiser step."""
    amp: AmpMode = DEFAULT_AMP
    """Mixed precision on CUDA: off, bf16 (float16 with a gradient scaler where the GPU has no native
    bfloat16) or fp16 (with a gradient scaler); on the CPU bf16 runs bfloat16 where the CPU has AVX512-BF16 or
    AMX-BF16, anything else float32. On CUDA float32 matmuls and convolutions run in TF32 in every mode.
    Recorded in run_info.json."""
    seed: int = 42
    """Seed of initialisation, sampling and augmentation."""
    eval_interval: int = 1
    """Evaluate every N epochs (and after the last)."""
    nonfinite_loss: Literal["skip", "stop"] = "stop"
    """A NaN/inf model output, matching cost or loss term: stop naming it, or skip the batch (its whole
    accumulation window: DDP has not synchronised its gradients yet)."""
    dist_timeout_s: float = 1800.0
    """Seconds a collective (gradient all-reduce, evaluation gathers, waiting while rank 0 computes the
    metrics or writes a checkpoint) may wait for the other ranks before the job fails."""
    output_dir: str = "runs"
    """Root of run directories: <output_dir>/<dataset_name>/<version>."""
    version: str = "default"
    """Run name, the last part of the run directory."""
    pretrained_weights: str | None = None
    """Checkpoint to finetune from (class heads re-initialised; a fresh run, not a resume)."""
    max_steps_per_epoch: int | None = None
    """Cap on the steps of an epoch (short runs, smoke tests); none: the whole training set."""
    checkpoint_every_steps: int | None = None
    """Also write a checkpoint every N steps inside an epoch (a multiple of grad_accum_steps), from which a
    resume continues the epoch exactly; none: only at the end of each epoch."""
    keep_checkpoints: int | None = None
    """End-of-epoch checkpoints kept on disk: the newest N plus the best; none: all of them. A step
    checkpoint is kept only until a newer checkpoint exists."""
    compile: bool = False
    """torch.compile the network's heavy parts in training and evaluation (eager, with one warning line,
    where compilation is unavailable or fails)."""


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


def did_you_mean(name: str, known: Iterable[str]) -> str:
    """``" (did you mean 'x'?)"`` for the known name closest to ``name`` (difflib), or ``""`` when none is close."""
    close = difflib.get_close_matches(name, list(known), n=1)
    return f" (did you mean {close[0]!r}?)" if close else ""


def _build_section(cls: type, values: dict[str, Any], where: str) -> Any:
    hints = typing.get_type_hints(cls)
    names = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(values) - names)
    if unknown:
        hints_text = "".join(did_you_mean(name, names) for name in unknown)
        raise ValueError(f"{where}: unknown field(s) {unknown}{hints_text}; known: {sorted(names)}")
    return cls(**{k: _coerce(v, hints[k], f"{where}.{k}") for k, v in values.items()})


def field_help(cls: type) -> dict[str, str]:
    """``{field: meaning}`` of a config dataclass, from the docstring written under each field.

    Read from the class's source, so the meaning lives beside the field it describes.
    """
    definition = ast.parse(textwrap.dedent(inspect.getsource(cls))).body[0]
    assert isinstance(definition, ast.ClassDef)  # the source of a class
    body = definition.body
    meanings = {}
    for node, following in zip(body, body[1:]):
        if (
            isinstance(node, ast.AnnAssign)
            and isinstance(node.target, ast.Name)
            and isinstance(following, ast.Expr)
            and isinstance(following.value, ast.Constant)
            and isinstance(following.value.value, str)
        ):
            meanings[node.target.id] = " ".join(following.value.value.split())
    return meanings


def from_dict(values: dict[str, Any], source: str = "config") -> Config:
    """Build a :class:`Config` from a nested dict ``{model: {...}, data: {...}, ...}``."""
    unknown = sorted(set(values) - set(SECTIONS))
    if unknown:
        hints = "".join(did_you_mean(name, SECTIONS) for name in unknown)
        raise ValueError(f"{source}: unknown section(s) {unknown}{hints}; known: {list(SECTIONS)}")
    sections = {}
    for name, cls in SECTIONS.items():
        section = values.get(name) or {}
        if not isinstance(section, dict):
            raise ValueError(f"{source}: section {name!r} must be a mapping, got {type(section).__name__}")
        sections[name] = _build_section(cls, section, f"{source}: {name}")
    return Config(**sections)


def from_reference_dict(values: dict[str, Any], source: str = "config") -> Config:
    """Build a :class:`Config` from an original WaveCL file of ``key: {desc, value}`` entries
    (the mapping is :func:`wavecl.original.nested_config`)."""
    return from_dict(original.nested_config(values, source), source)


class _ConfigLoader(yaml.SafeLoader):
    """PyYAML's safe loader, refusing what a config never needs and a hostile file uses.

    A mapping that gives one key twice is refused (PyYAML keeps the last value silently). Aliases
    (``*name``) are refused: each can repeat a whole earlier node, so a few hundred bytes of nested
    aliases expand to billions of values (the "billion laughs" file); a config has no need of them.
    """

    def compose_node(self, parent: yaml.Node | None, index: object) -> yaml.Node:
        if self.check_event(yaml.AliasEvent):
            event = self.peek_event()
            raise yaml.composer.ComposerError(
                None,
                None,
                f"alias *{event.anchor} found: aliases are not accepted, write the value out",
                event.start_mark,
            )
        return super().compose_node(parent, index)

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
        self.flatten_mapping(node)
        seen: set[Any] = set()
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=True)
            if isinstance(key, typing.Hashable):
                if key in seen:
                    raise yaml.constructor.ConstructorError(
                        None, None, f"key {key!r} appears twice in one mapping", key_node.start_mark
                    )
                seen.add(key)
        return super().construct_mapping(node, deep)


def parse_yaml(text: str, source: str) -> Any:
    """Parse YAML as configs are parsed: safe types only, no repeated key, no alias (:class:`_ConfigLoader`).

    Args:
        text: the YAML document.
        source: what the message calls it (a file, a ``--set`` override).

    Raises:
        ValueError: malformed YAML, a repeated key, an alias or a tag of no safe type (``!!python/...``);
            the message names ``source``, the line and the key or tag.
    """
    loader = _ConfigLoader(text)
    loader.name = source  # the name the error marks give
    try:
        return loader.get_single_data()
    except yaml.YAMLError as error:
        raise ValueError(f"{source}: malformed YAML: {error}") from None
    finally:
        loader.dispose()


def packaged_configs() -> dict[str, Path]:
    """``{name: file}`` of the recipes shipped in the package (``wavecl/configs/<name>.yaml``), sorted by name."""
    return {path.stem: path for path in sorted(PACKAGED_CONFIG_DIR.glob("*.yaml"))}


def is_config_name(config: str | Path) -> bool:
    """Whether ``config`` names a packaged recipe rather than a file: a string (not a ``Path``) with no folder
    part and no ``.yaml`` / ``.yml`` suffix (``a2d_sentences``, not ``./a2d_sentences`` or ``a2d_sentences.yaml``)."""
    return isinstance(config, str) and not {"/", os.sep} & set(config) and not config.endswith(YAML_SUFFIXES)


def config_file(config: str | Path) -> Path:
    """The file that ``config`` (a packaged recipe's name, :func:`is_config_name`, or a path) stands for.

    Raises:
        FileNotFoundError: no packaged recipe of that name, or no such file; the message lists the names.
    """
    path = Path(config)
    by_name = is_config_name(config)
    if not by_name and path.is_file():
        return path  # the packaged recipes are listed only to find one by name, or for a missing file's hint
    known = packaged_configs()
    if by_name:
        name = str(config)
        if name not in known:
            raise FileNotFoundError(
                f"no packaged config named {name!r}{did_you_mean(name, known)}; packaged: {', '.join(known)} "
                f"(a file is given by its path, e.g. ./{name}.yaml)"
            )
        return known[name]
    hint = f" (the packaged recipe is named {path.stem!r}: -c {path.stem})" if path.stem in known else ""
    raise FileNotFoundError(f"config file not found: {path}{hint}")


def config_description(path: Path) -> str:
    """The one-line description of a config file: its first line when that is a ``#`` comment, else ``""``."""
    with path.open(encoding="utf-8") as file:
        first = file.readline().strip()
    return first.removeprefix("#").strip() if first.startswith("#") else ""


def load_config(config: str | Path) -> Config:
    """Load a config, nested wavecl YAML or an original ``{desc, value}`` WaveCL file.

    Args:
        config: a packaged recipe's name (``tiny``, ``a2d_sentences``) or a file's path (:func:`config_file`).

    Raises:
        FileNotFoundError: no such recipe or file.
        ValueError: the YAML is malformed (:func:`parse_yaml`: also a repeated key or an alias) or a field
            is unknown or of the wrong type; the message names the file and the field.
    """
    path = config_file(config)
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as error:
        raise ValueError(f"{path}: malformed YAML: {error}") from None
    values = parse_yaml(text, str(path))
    if values is None:
        values = {}
    if not isinstance(values, dict):
        raise ValueError(f"{path}: top level must be a mapping")
    if not set(values) & original.ORIGINAL_CONFIG_KEYS:  # no section name is an original key
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
            if section in values:  # match the field name alone: the shared section prefix would match anything
                close = difflib.get_close_matches(name, list(values[section]), n=1)
                hint = f" (did you mean {section + '.' + close[0]!r}?)" if close else ""
            else:
                hint = did_you_mean(dotted, [f"{s}.{f}" for s, fields in values.items() for f in fields])
            raise ValueError(f"unknown config field {dotted!r}{hint}")
        values[section][name] = value
    return from_dict(values, "overrides")


def parse_override(text: str) -> tuple[str, Any]:
    """Parse ``section.field=value`` (value read by :func:`parse_yaml`) for ``--set`` command-line overrides.

    Raises:
        ValueError: no ``section.field=`` part, or a value :func:`parse_yaml` refuses (the override is named).
    """
    key, sep, raw = text.partition("=")
    if not sep or "." not in key:
        raise ValueError(f"override {text!r} must look like section.field=value")
    return key.strip(), parse_yaml(raw, f"override {text!r}")
