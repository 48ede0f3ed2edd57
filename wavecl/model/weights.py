"""The one loader of model weights: :func:`load_weights`, used by resume, finetuning (``--pretrained``),
``wavecl evaluate`` and ``from_pretrained`` / ``wavecl predict``.

Whatever wrote the file, the same steps run, in this order:

1. read it (:func:`wavecl.checkpoint.read_state_dict`: safetensors, checkpoint folders and runs, or
   ``torch.save`` files read weights-only);
2. strip a ``module.`` prefix carried by every key (a model saved while wrapped in DDP);
3. rename the keys of an original-repository checkpoint (:func:`wavecl.original.convert_state_dict`);
4. compare with the model: unless ``strict=False``, any missing or unexpected key beyond the ``skip``
   prefixes, and any shape mismatch, stops with :class:`CheckpointMismatchError` naming the file, the
   keys and the likely cause. Nothing is loaded then.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from torch import Tensor, nn

from wavecl import original
from wavecl.checkpoint import read_state_dict

log = logging.getLogger("wavecl.weights")

MODULE_PREFIX = "module."
LISTED_KEYS = 20


class CheckpointMismatchError(ValueError):
    """The weights in a file do not fit the network they are loaded into."""


@dataclass
class LoadReport:
    """What :func:`load_weights` did.

    Attributes:
        loaded: model keys filled from the file.
        skipped: model keys left at their initial values because they start with a ``skip`` prefix.
        missing: other model keys the file lacks (non-empty only with ``strict=False``).
        unexpected: file keys the model does not have (non-empty only with ``strict=False``).
        conversions: the renames applied, in words (``"stripped the prefix 'module.'"`` ...).
    """

    loaded: list[str] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)
    missing: list[str] = field(default_factory=list)
    unexpected: list[str] = field(default_factory=list)
    conversions: list[str] = field(default_factory=list)


def _normalised_state(state: dict[str, Tensor], name: str) -> tuple[dict[str, Tensor], list[str]]:
    """Steps 2-3 of the module docstring; returns the state and the conversions applied."""
    conversions = []
    if state and all(key.startswith(MODULE_PREFIX) for key in state):
        state = {key[len(MODULE_PREFIX) :]: value for key, value in state.items()}
        conversions.append(f"stripped the prefix {MODULE_PREFIX!r} that every key carried (saved under DDP)")
    if original.is_original_state_dict(state):
        try:
            state = original.convert_state_dict(state)
        except ValueError as error:
            raise CheckpointMismatchError(f"{name} mixes original and wavecl key names: {error}") from error
        conversions.append("renamed the keys of an original-repository checkpoint")
    return state, conversions


def _likely_cause(missing: list[str], unexpected: list[str], mismatched: list[str], expected: Mapping) -> str:
    """A guess at why keys do not match, for the error message (empty when there is no clear one)."""
    prefixes = {key.split(".", 1)[0] + "." for key in unexpected}
    if len(prefixes) == 1 and missing:
        (prefix,) = prefixes
        if sum(key[len(prefix) :] in expected for key in unexpected) >= len(unexpected) / 2:
            return f"all unexpected keys carry the prefix {prefix!r}: the model was saved inside a wrapper"
    if mismatched and all(entry.startswith("class_embed.") for entry in mismatched):
        return "another num_classes: finetune with --pretrained, which re-initialises the class heads"
    modules = {key.split(".", 1)[0] for key in missing}
    if len(modules) == 1 and not unexpected:
        (module,) = modules
        return f"the file holds no '{module}.*' weights"
    if len(missing) > len(expected) / 2:
        return "most of the network is missing: the file is a checkpoint of another model (or another model size)"
    return ""


def _mismatch_message(name: str, missing: list[str], unexpected: list[str], mismatched: list[str], cause: str) -> str:
    lines = [f"the weights in {name} do not fit the network:"]
    for title, keys in (("missing", missing), ("unexpected", unexpected), ("shape mismatch", mismatched)):
        if keys:
            more = f" (first {LISTED_KEYS})" if len(keys) > LISTED_KEYS else ""
            lines.append(f"  {title}: {len(keys)} key(s){more}")
            lines.extend(f"    {key}" for key in keys[:LISTED_KEYS])
    if cause:
        lines.append(f"  likely cause: {cause}")
    return "\n".join(lines)


def load_weights(
    model: nn.Module,
    source: str | os.PathLike[str] | Mapping[str, Tensor],
    strict: bool = True,
    skip: Sequence[str] = (),
) -> LoadReport:
    """Load weights into ``model`` in place (the steps of the module docstring).

    Args:
        model: the network; its tensors keep their device and dtype (values are copied in).
        source: a weights file, checkpoint folder, pointer or run directory, a ``torch.save`` file, or an
            already loaded state dict.
        strict: refuse missing and unexpected keys (those under ``skip`` excepted).
        skip: key prefixes left at their initial values and not required in the file (``"class_embed."``
            to re-initialise the class heads of a finetune); file keys under them are ignored.

    Returns:
        A :class:`LoadReport`.

    Raises:
        FileNotFoundError: nothing at ``source``.
        CheckpointError: the file is unreadable (:mod:`wavecl.checkpoint`).
        CheckpointMismatchError: keys are missing or unexpected (with ``strict``) or shapes differ; the
            message names the file, lists the keys and gives the likely cause. Nothing is loaded then.
    """
    if isinstance(source, Mapping):
        name, state = "the given state dict", dict(source)
    else:
        name, state = os.fspath(source), read_state_dict(Path(source))
    state, conversions = _normalised_state(state, name)
    expected = model.state_dict()
    skip = tuple(skip)  # str.startswith(()) is False: nothing skipped
    skipped = [key for key in expected if key.startswith(skip)]
    state = {key: value for key, value in state.items() if not key.startswith(skip)}
    missing = [key for key in expected if key not in state and not key.startswith(skip)]
    unexpected = sorted(key for key in state if key not in expected)
    mismatched = [
        f"{key}: file {list(state[key].shape)}, model {list(tensor.shape)}"
        for key, tensor in expected.items()
        if key in state and state[key].shape != tensor.shape
    ]
    if mismatched or (strict and (missing or unexpected)):
        cause = _likely_cause(missing, unexpected, mismatched, expected)
        raise CheckpointMismatchError(_mismatch_message(name, missing, unexpected, mismatched, cause))
    loadable = {key: value for key, value in state.items() if key in expected}
    model.load_state_dict(loadable, strict=False)
    for conversion in conversions:
        log.info("%s: %s", name, conversion)
    return LoadReport(sorted(loadable), skipped, missing, unexpected, conversions)
