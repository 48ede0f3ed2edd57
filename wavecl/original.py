"""Every format detail of the original WaveCL repository, in one place.

- **Config files**: flat YAML of ``key: {desc: ..., value: ...}`` entries with nested
  ``DeformTransformer`` and ``VOC`` blocks; :func:`nested_config` maps them onto wavecl's sections
  (:func:`wavecl.config.load_config` reads both forms).
- **Checkpoints**: ``torch.save`` pickles (:data:`CHECKPOINT_SUFFIXES`) holding the state dict under
  :data:`STATE_DICT_KEY` (A2D ones also store a numpy scalar, :data:`NUMPY_SCALAR_GLOBALS`). Their
  keys differ from wavecl's in three ways, undone by :func:`convert_state_dict`: the Video-Swin
  backbone is named as in the official Swin repository under ``backbone.0.body.``
  (:func:`backbone_key`), the box heads are stored twice (also as :data:`BOX_HEAD_ALIAS`), and old
  transformers versions saved ``text_encoder.embeddings.position_ids``.

This module imports nothing from wavecl, so every layer may use it.
"""

from __future__ import annotations

import difflib
import logging
import re
from collections import defaultdict
from collections.abc import Mapping
from typing import Any, TypeVar

import numpy as np

T = TypeVar("T")

logger = logging.getLogger(__name__)

# Original flat key -> (section, field). Keys mapped to None are read and ignored: they have no
# effect in the original either, concern tools wavecl does not use (wandb), or are FIXED_SWITCHES.
CONFIG_KEYS: dict[str, tuple[str, str] | None] = {
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
    "enable_amp": ("train", "amp"),
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
# Original switches wavecl implements one way only: key -> (the value wavecl implements, what it does).
# Another value is read with a warning that names the key, its value and what wavecl does instead.
FIXED_SWITCHES: dict[str, tuple[bool, str]] = {
    "aux_loss": (True, "wavecl always adds the losses of every decoder layer (auxiliary losses)"),
    "with_box_refine": (True, "wavecl's decoder always refines the boxes layer by layer"),
    "random_color": (False, "wavecl has no colour augmentation"),
    "resize_and_crop_augmentations": (
        True,
        "wavecl always resizes frames to data.train_short_size / data.eval_short_size (capped by *_max_size)",
    ),
}
AMP_MODES = {True: "fp16", False: "off"}
"""``enable_amp`` -> ``train.amp``: the original's mixed precision is float16 autocast with a gradient scaler."""

NESTED_CONFIG_KEYS = ("DeformTransformer", "VOC")
"""The original config's nested blocks, mapped onto :class:`~wavecl.config.ModelConfig`."""
ORIGINAL_CONFIG_KEYS = frozenset({*CONFIG_KEYS, *NESTED_CONFIG_KEYS})
"""Every top-level key an original WaveCL config may hold."""
TRANSFORMER_KEYS = {
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
VOC_KEYS = {
    "enc_layers": "voc_enc_layers",
    "dec_layers": "voc_dec_layers",
    "dim_feedforward": "voc_dim_feedforward",
}
DATASET_NAMES = {"ref_youtube_vos": "ref_youtube_vos", "joint": "ref_youtube_vos"}


def _value(entry: Any) -> Any:
    return entry["value"] if isinstance(entry, dict) and "value" in entry else entry


def _switch(value: Any, key: str, source: str) -> bool:
    """An original on/off value (YAML bool or the strings true/false) as a bool; ``ValueError`` naming the key."""
    if isinstance(value, bool):
        return value
    if isinstance(value, str) and value.lower() in ("true", "false"):
        return value.lower() == "true"
    raise ValueError(f"{source}: {key}: expected true or false, got {value!r}")


def nested_config(values: dict[str, Any], source: str = "config") -> dict[str, dict[str, Any]]:
    """The nested ``{section: {field: value}}`` form of an original config file's ``key: {desc, value}`` entries.

    The nested ``DeformTransformer`` and ``VOC`` values are mapped onto :class:`ModelConfig`. The
    learning-rate decay gamma, hard-coded by dataset name in the reference (0.2 for A2D, else 0.1),
    becomes the explicit ``train.lr_gamma``; ``enable_amp`` becomes ``train.amp`` (:data:`AMP_MODES`).
    A switch of :data:`FIXED_SWITCHES` set to the value wavecl does not implement is logged as a warning
    naming ``source``, the key, its value and what wavecl does instead.

    Raises:
        ValueError: an unknown key, a switch that is not true or false, or nested values wavecl cannot
            represent; the message names ``source`` and the key.
    """
    nested: defaultdict[str, dict[str, Any]] = defaultdict(dict)
    for key, entry in values.items():
        value = _value(entry)
        if key == "DeformTransformer":
            for sub, target in TRANSFORMER_KEYS.items():
                if sub in value:
                    nested["model"][target] = value[sub]
            if value.get("two_stage"):
                raise ValueError(f"{source}: DeformTransformer.two_stage is not supported (broken in the reference)")
            continue
        if key == "VOC":
            for sub, target in VOC_KEYS.items():
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
        if key not in CONFIG_KEYS:
            close = difflib.get_close_matches(key, sorted(ORIGINAL_CONFIG_KEYS), n=1)
            hint = f" (did you mean {close[0]!r}?)" if close else ""
            raise ValueError(f"{source}: unknown key {key!r} in an original WaveCL config{hint}")
        if key in FIXED_SWITCHES:
            implemented, instead = FIXED_SWITCHES[key]
            if _switch(value, key, source) != implemented:
                logger.warning("%s: %s: %s is not implemented; %s", source, key, str(not implemented).lower(), instead)
            continue
        if key == "enable_amp":
            value = AMP_MODES[_switch(value, key, source)]
        destination = CONFIG_KEYS[key]
        if destination is not None:
            section, name = destination
            nested[section][name] = value
    if "dataset_name" in nested["data"]:
        name = nested["data"]["dataset_name"]
        nested["data"]["dataset_name"] = DATASET_NAMES.get(name, name)
        nested["train"].setdefault("lr_gamma", 0.2 if name == "a2d_sentences" else 0.1)
    return dict(nested)


# ------------------------------------------------------------------------------------------ checkpoints

CHECKPOINT_SUFFIXES = (".pth", ".pth.tar", ".pt", ".tar")
"""File names of ``torch.save`` checkpoints (the original's, or a state dict saved by hand)."""

STATE_DICT_KEY = "model_state_dict"
"""The entry of an original checkpoint that holds the model's state dict (others: epoch, optimizer...)."""

# Original A2D checkpoints store ``best_mAP`` as a numpy scalar; these globals rebuild a numpy scalar
# from its dtype and raw bytes and cannot run code, so they are safe to allow in the weights-only loader.
NUMPY_SCALAR_GLOBALS = [
    np.float64(0).__reduce__()[0],
    np.dtype,
    type(np.dtype(np.float64)),
    type(np.dtype(np.float32)),
    type(np.dtype(np.int64)),
]

BACKBONE_PREFIX = "backbone.0.body."
"""Prefix of the original's backbone keys (its backbone is a ``Joiner`` whose entry 0 wraps the Swin body)."""

BOX_HEAD_ALIAS = ("transformer.decoder.bbox_embed.", "bbox_embed.")
"""``(alias, canonical)`` prefixes: the original registers the box MLPs in the decoder a second time."""

DROPPED_KEYS = frozenset({"text_encoder.embeddings.position_ids"})
"""Keys saved by old transformers versions that are buffers of no use (and absent from new models)."""

_STAGE_BLOCK = re.compile(r"^layers\.(\d+)\.blocks\.(\d+)\.(.+)$")
_MERGING = re.compile(r"^(?:layers\.(\d+)\.downsample|downsamples\.(\d+))\.(.+)$")
_MLP_RENAME = {"mlp.fc1.": "mlp.0.", "mlp.fc2.": "mlp.3."}


def swin_key(key: str) -> str:
    """Map a Swin body key of the official Video-Swin module tree to torchvision's tree.

    Handles both the official Video-Swin layout (``layers.{i}.blocks.{j}.*``, ``layers.{i}.downsample.*``)
    and the original WaveCL wrapper (``downsamples.{i}.*``): blocks go to ``features.{2i}.{j}.*`` with
    ``mlp.fc1/fc2`` renamed to torchvision's ``mlp.0/mlp.3``; merging goes to ``features.{2i+1}.*``.
    Other keys (``patch_embed.*``, ``norm.*``) have the same name in both trees.
    """
    block = _STAGE_BLOCK.match(key)
    if block:
        stage, index, rest = block.groups()
        for official, torchvision_name in _MLP_RENAME.items():
            if rest.startswith(official):
                rest = torchvision_name + rest[len(official) :]
        return f"features.{2 * int(stage)}.{index}.{rest}"
    merging = _MERGING.match(key)
    if merging:
        stage = merging.group(1) if merging.group(1) is not None else merging.group(2)
        return f"features.{2 * int(stage) + 1}.{merging.group(3)}"
    return key


def backbone_key(key: str) -> str:
    """Map a backbone key of an original checkpoint to wavecl's name.

    ``backbone.0.body.patch_embed.*`` → ``backbone.body.patch_embed.*``;
    ``backbone.0.body.layers.{i}.blocks.{j}.*`` → ``backbone.body.features.{2i}.{j}.*`` (``mlp.fc1`` → ``mlp.0``,
    ``mlp.fc2`` → ``mlp.3``); ``backbone.0.body.downsamples.{i}.*`` → ``backbone.body.features.{2i+1}.*``.

    Raises:
        ValueError: ``key`` does not start with :data:`BACKBONE_PREFIX`.
    """
    if not key.startswith(BACKBONE_PREFIX):
        raise ValueError(f"{key!r} is not an original backbone key (expected the prefix {BACKBONE_PREFIX!r})")
    return "backbone.body." + swin_key(key[len(BACKBONE_PREFIX) :])


def is_original_state_dict(keys: Mapping[str, Any]) -> bool:
    """Whether a state dict is named as the original repository names it (its backbone keys)."""
    return any(key.startswith(BACKBONE_PREFIX) for key in keys)


def convert_state_dict(state_dict: Mapping[str, T]) -> dict[str, T]:
    """Rename the keys of an original checkpoint to wavecl's.

    Backbone keys go through :func:`backbone_key`; the box-head aliases (:data:`BOX_HEAD_ALIAS`) and
    :data:`DROPPED_KEYS` are dropped. Every other key is identical in both.

    Raises:
        ValueError: a ``backbone.*`` key lacks the original prefix (a mix of formats); names the key.
    """
    alias = BOX_HEAD_ALIAS[0]
    converted = {}
    for key, value in state_dict.items():
        if key in DROPPED_KEYS or key.startswith(alias):
            continue
        converted[backbone_key(key) if key.startswith("backbone.") else key] = value
    return converted
