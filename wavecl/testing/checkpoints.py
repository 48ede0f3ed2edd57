"""State dicts in the formats other writers produce, made from a wavecl model's state dict: the
original repository's checkpoint layout (for the loader's tests).

The key names are written independently of :mod:`wavecl.original` (inverse renames here, forward ones
there), so a test that round-trips through both checks the pair.
"""

from __future__ import annotations

import re
from collections.abc import Mapping

from torch import Tensor

_FEATURES = re.compile(r"backbone\.body\.features\.(\d+)\.(.*)")


def original_backbone_key(key: str) -> str:
    """A wavecl backbone key as the original repository names it (``features.{2i}`` is stage ``i``'s
    blocks, ``features.{2i+1}`` its patch merging; torchvision's ``mlp.0/mlp.3`` are ``mlp.fc1/fc2``)."""
    match = _FEATURES.fullmatch(key)
    if match is None:
        return key.replace("backbone.body.", "backbone.0.body.", 1)
    index, rest = int(match[1]), match[2]
    if index % 2:
        return f"backbone.0.body.downsamples.{index // 2}.{rest}"
    block, _, suffix = rest.partition(".")
    suffix = suffix.replace("mlp.0.", "mlp.fc1.", 1).replace("mlp.3.", "mlp.fc2.", 1)
    return f"backbone.0.body.layers.{index // 2}.blocks.{block}.{suffix}"


def with_box_head_copies(state: Mapping[str, Tensor]) -> dict[str, Tensor]:
    """``state`` plus the second copy of every box-head tensor under ``transformer.decoder.bbox_embed.``,
    as checkpoints of the original repository hold."""
    copies = {f"transformer.decoder.{key}": value for key, value in state.items() if key.startswith("bbox_embed.")}
    return {**state, **copies}


def original_state_dict(state: Mapping[str, Tensor]) -> dict[str, Tensor]:
    """``state`` as a checkpoint of the original repository names it: original backbone keys and the
    box heads stored twice."""
    return {
        (original_backbone_key(key) if key.startswith("backbone.") else key): value
        for key, value in with_box_head_copies(state).items()
    }
