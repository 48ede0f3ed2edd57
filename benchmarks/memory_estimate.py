"""GPU memory of one training step of each recipe, counted on fake tensors (no GPU, no weights, no data).

For every config the full network is built (randomly initialised; the text encoder in the shape its
config names, :func:`wavecl.model.text.text_encoder_of_shape`), its parameters are turned into fake
CUDA tensors (``torch._subclasses.FakeTensorMode``: shapes and dtypes, no storage) and one training
forward runs on a batch of the recipe's size: ``train.batch_size`` clips of ``data.window_size``
frames at ``data.train_short_size x data.train_max_size`` (the landscape frame of a 16:9 video), under
the autocast the config's ``train.amp`` runs on a GPU with native bfloat16, with the recipe's
``model.activation_checkpointing``. Counted, in GiB per GPU:

* **network**: the storages of every tensor autograd saves for the backward pass
  (``torch.autograd.graph.saved_tensors_hooks``), each storage once, parameters excluded; with
  activation checkpointing, the inputs each checkpointed segment keeps plus the saved tensors of the
  largest segment, which the backward pass recomputes (one at a time);
* **losses**: the same for the criterion's mask losses (sigmoid focal and dice at full frame size) of
  every decoder layer, with each clip's object matched to one query;
* **states**: float32 weights (frozen ones included), gradients and the two AdamW moments of the
  trainable parameters.

The sentences are encoded on the CPU (their activations are counted there: a few MiB); attention runs
the memory-efficient kernel a GPU would pick (``q, k, v``, the output and the log-sum-exp are saved,
not the ``L x S`` scores). Not counted: the box, class and contrastive losses (a few KiB), the
backward pass's transient buffers, CUDA's workspace and the allocator's fragmentation: keep 10 GiB of
headroom on top of the total.

Usage::

    python benchmarks/memory_estimate.py [-c CONFIG ...] [--amp off|bf16|fp16] [--checkpointing on|off]

Without ``-c``, every config that a training script of ``scripts/`` launches. The last line is
``max <X> GiB per GPU (<config>)``.
"""

from __future__ import annotations

import argparse
import contextlib
import re
import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from unittest import mock

import torch
import torch.nn.functional as F
import torch.utils.checkpoint
from torch import Tensor, nn
from torch._subclasses.fake_tensor import FakeTensorMode, unset_fake_temporarily

REPO = Path(__file__).resolve().parents[1]
GIB = 2**30
SENTENCE = "the man in a red shirt riding a bicycle on the left"
AUTOCAST_DTYPES = {"off": None, "bf16": torch.bfloat16, "fp16": torch.float16}
CENTRE_FRAME_DATASETS = ("a2d_sentences", "jhmdb_sentences")
"""Datasets whose training keeps only the centre frame of each clip after the backbone (valid_indices)."""


@dataclass
class Estimate:
    """The memory of one training step, in bytes per GPU.

    Attributes:
        name: the config's file name.
        batch, frames, size: clips, frames per clip and ``(H, W)`` pixels of the batch.
        amp: the autocast mode counted (``off``, ``bf16``, ``fp16``).
        checkpointing: whether activation checkpointing was on.
        activations: bytes the network saves for the backward pass (see the module docstring).
        recomputed: the part of ``activations`` that the largest checkpointed segment saves again while the
            backward pass recomputes it (0 without checkpointing).
        loss_activations: bytes the mask losses save for the backward pass.
        weights, gradients, optimizer: bytes of the float32 states.
    """

    name: str
    batch: int
    frames: int
    size: tuple[int, int]
    amp: str
    checkpointing: bool
    activations: int = 0
    recomputed: int = 0
    loss_activations: int = 0
    weights: int = 0
    gradients: int = 0
    optimizer: int = 0

    @property
    def total(self) -> int:
        """Activations plus states, bytes."""
        return self.activations + self.loss_activations + self.weights + self.gradients + self.optimizer


@dataclass
class SavedTensorCounter:
    """Bytes of distinct storages saved for backward, minus those of ``excluded`` storages (parameters).

    ``segments`` holds the bytes each checkpointed segment would save without checkpointing.
    """

    excluded: set[int]
    storages: dict[int, int] = field(default_factory=dict)
    segments: list[int] = field(default_factory=list)

    def add(self, tensor: Tensor) -> None:
        """Count the storage of ``tensor`` once (nothing for a parameter's)."""
        storage = tensor.untyped_storage()
        if storage._cdata not in self.excluded:
            self.storages[storage._cdata] = storage.nbytes()

    @property
    def bytes(self) -> int:
        """Counted bytes: the distinct storages plus the largest recomputed segment."""
        return sum(self.storages.values()) + max(self.segments, default=0)

    @contextlib.contextmanager
    def counting(self) -> Iterator[None]:
        """Count every tensor saved for backward inside the context."""

        def pack(tensor: Tensor) -> Tensor:
            self.add(tensor)
            return tensor

        with torch.autograd.graph.saved_tensors_hooks(pack, lambda tensor: tensor):
            yield


def efficient_attention(
    query: Tensor,
    key: Tensor,
    value: Tensor,
    attn_mask: Tensor | None = None,
    dropout_p: float = 0.0,
    is_causal: bool = False,
    scale: float | None = None,
    enable_gqa: bool = False,
) -> Tensor:
    """``F.scaled_dot_product_attention`` through CUDA's memory-efficient kernel, which a GPU picks where
    fake tensors would fall back to the math path (whose ``[.., L, S]`` scores a GPU never keeps)."""
    bias = None
    if attn_mask is not None:
        bias = attn_mask
        if bias.dtype == torch.bool:
            bias = torch.zeros(bias.shape, dtype=query.dtype, device=query.device).masked_fill(~bias, float("-inf"))
        bias = bias.to(query.dtype).expand(*query.shape[:-2], query.shape[-2], key.shape[-2])
    out, *_ = torch.ops.aten._scaled_dot_product_efficient_attention(
        query, key, value, bias, True, dropout_p, is_causal, scale=scale
    )
    return out


def recipe_configs() -> list[Path]:
    """The packaged configs that the training scripts of ``scripts/`` launch (``launch train -c NAME``)."""
    from wavecl.config import config_file

    names = set()
    for script in sorted((REPO / "scripts").glob("*.sh")):
        names.update(re.findall(r"launch train -c ([\w-]+)", script.read_text()))
    return [config_file(name) for name in sorted(names)]


def _fake_module(module: nn.Module, mode: FakeTensorMode, device: torch.device) -> None:
    """Replace every parameter and buffer of ``module`` by a fake tensor on ``device``, in place."""
    with mode:
        for sub in module.modules():
            for name, parameter in sub._parameters.items():
                if parameter is not None:
                    sub._parameters[name] = nn.Parameter(
                        mode.from_tensor(parameter).to(device), parameter.requires_grad
                    )
            for name, buffer in sub._buffers.items():
                if buffer is not None:
                    sub._buffers[name] = mode.from_tensor(buffer).to(device)


def _fake_tensors(value, mode: FakeTensorMode, device: torch.device):
    """A copy of a tree of dataclasses, tuples and tensors with every tensor a fake tensor on ``device``
    (grad flags kept)."""
    if isinstance(value, Tensor):
        with mode:
            fake = mode.from_tensor(value.detach()).to(device)
        return fake.requires_grad_(value.requires_grad)
    if isinstance(value, tuple | list):
        return type(value)(_fake_tensors(item, mode, device) for item in value)
    if hasattr(value, "__dataclass_fields__"):
        fields = value.__dataclass_fields__
        return type(value)(**{name: _fake_tensors(getattr(value, name), mode, device) for name in fields})
    return value


def _built_on_the_host(function: Callable, mode: FakeTensorMode, device: torch.device) -> Callable:
    """``function`` (a :func:`wavecl.model.shape_cache.cached_per_shape` table builder, which reads its own
    index tensors back) run on real CPU tensors, its result then made fake on ``device``."""
    build = getattr(function, "__wrapped__", function)  # past the per-shape cache: fake results are not kept

    def on_the_host(*args, **kwargs):
        args = [torch.device("cpu") if isinstance(value, torch.device) else value for value in args]
        kwargs = {
            key: torch.device("cpu") if isinstance(value, torch.device) else value for key, value in kwargs.items()
        }
        with unset_fake_temporarily():
            table = build(*args, **kwargs)
        return _fake_tensors(table, mode, device)

    return on_the_host


def _probing_checkpoint(counter: SavedTensorCounter) -> Callable:
    """A stand-in for ``torch.utils.checkpoint.checkpoint`` that counts what a segment keeps (its tensor
    inputs) and what it would save without checkpointing (run once more under a separate counter)."""
    original = torch.utils.checkpoint.checkpoint

    def checkpoint(function, *args, **kwargs):
        for value in (*args, *kwargs.values()):
            if isinstance(value, Tensor):
                counter.add(value)
        probe = SavedTensorCounter(counter.excluded)
        with probe.counting():
            function(*args, **{key: value for key, value in kwargs.items() if key not in ("use_reentrant",)})
        counter.segments.append(probe.bytes)
        return original(function, *args, **kwargs)

    return checkpoint


def estimate(
    config_path: str | Path,
    amp: str | None = None,
    checkpointing: bool | None = None,
    device: str = "cuda",
    overrides: dict | None = None,
) -> Estimate:
    """Count the memory of one training step of the config at ``config_path`` (see the module docstring).

    Args:
        config_path: a packaged config's name or a YAML file (:func:`wavecl.config.config_file`).
        amp: the autocast mode; ``None``: the config's ``train.amp``.
        checkpointing: activation checkpointing; ``None``: the config's ``model.activation_checkpointing``.
        device: ``"cuda"`` (fake CUDA tensors, the GPU's attention kernel) or ``"cpu"`` (fake CPU tensors,
            the CPU's kernels; to compare with a measured CPU run).
        overrides: ``--set``-style values applied to the config (``{"data.window_size": 2}``).

    Returns:
        The :class:`Estimate`.
    """
    from wavecl.config import apply_overrides, config_file, load_config
    from wavecl.model import backbone, deformable
    from wavecl.model.text import text_encoder_of_shape
    from wavecl.model.wavecl import WaveCL
    from wavecl.training.trainer import outputs_to_float

    config = apply_overrides(load_config(config_path), overrides or {})
    amp = config.train.amp if amp is None else amp
    if checkpointing is not None:
        config.model.activation_checkpointing = checkpointing
    batch, frames = config.train.batch_size, config.data.window_size
    height = config.data.train_short_size
    width = config.data.train_max_size or round(height * 16 / 9)
    result = Estimate(
        config_file(config_path).name, batch, frames, (height, width), amp, config.model.activation_checkpointing
    )

    torch.manual_seed(0)
    model = WaveCL(config.model, *text_encoder_of_shape(config.model.text_encoder)).train()
    trainable = [parameter for parameter in model.parameters() if parameter.requires_grad]
    result.weights = sum(parameter.nbytes for parameter in model.parameters())
    result.gradients = sum(parameter.nbytes for parameter in trainable)
    result.optimizer = 2 * result.gradients

    dtype = AUTOCAST_DTYPES[amp]
    texts = [SENTENCE] * batch
    counter = SavedTensorCounter(set())
    cpu_autocast = torch.autocast("cpu", dtype=dtype or torch.bfloat16, enabled=dtype is not None)
    with counter.counting(), cpu_autocast:
        sentences = model.encode_sentences(texts, torch.device("cpu"))

    mode = FakeTensorMode(allow_non_fake_inputs=True)
    target = torch.device(device)
    _fake_module(model, mode, target)
    sentences = _fake_tensors(sentences, mode, target)
    counter.excluded = {tensor.untyped_storage()._cdata for tensor in [*model.parameters(), *model.buffers()]}
    with mode:
        clips = torch.randn(frames, batch, 3, height, width, device=target)
        pad_mask = torch.zeros(frames, batch, height, width, dtype=torch.bool, device=target)
        image_sizes = torch.tensor([[height, width]] * batch, device=target)
        valid_indices = None
        if config.data.dataset_name in CENTRE_FRAME_DATASETS:
            valid_indices = torch.arange(batch, device=target) * frames + frames // 2
    with contextlib.ExitStack() as stack:
        stack.enter_context(mode)
        for module, name in ((backbone, "window_layout"), (deformable, "offset_scales"), (deformable, "gather_tables")):
            stack.enter_context(
                mock.patch.object(module, name, _built_on_the_host(getattr(module, name), mode, target))
            )
        if device == "cuda":
            stack.enter_context(mock.patch.object(F, "scaled_dot_product_attention", efficient_attention))
            # autocast refuses CUDA without a GPU; the GPU counted computes bfloat16 natively
            with (
                mock.patch("torch.cuda.is_available", return_value=True),
                mock.patch("torch.cuda.is_bf16_supported", return_value=True),
            ):
                autocast = torch.autocast("cuda", dtype=dtype or torch.bfloat16, enabled=dtype is not None)
        else:
            autocast = torch.autocast("cpu", dtype=dtype or torch.bfloat16, enabled=dtype is not None)
        stack.enter_context(mock.patch.object(torch.utils.checkpoint, "checkpoint", _probing_checkpoint(counter)))
        with counter.counting(), autocast:
            visual = model.encode_video(clips, pad_mask, valid_indices)
            output = model.segment(visual, sentences, image_sizes, pool_text_padding=True)
        result.activations = counter.bytes
        result.recomputed = max(counter.segments, default=0)
        losses = SavedTensorCounter(counter.excluded | set(counter.storages))
        with losses.counting():
            _mask_losses(config, outputs_to_float(output), (height, width), target)
        result.loss_activations = losses.bytes
    return result


def _mask_losses(config, output, size: tuple[int, int], device: torch.device) -> None:
    """The criterion's mask losses (sigmoid focal and dice at the padded frame size) of every decoder layer,
    each clip's referred object matched to query 0 (the matching itself saves nothing for backward)."""
    from wavecl.data.types import FrameTarget
    from wavecl.training.trainer import build_criterion

    frames, batch = output.pred_masks.shape[:2]
    target = FrameTarget(
        masks=torch.ones(1, *size, dtype=torch.bool, device=device),
        boxes=torch.full((1, 4), 0.5, device=device),
        labels=torch.zeros(1, dtype=torch.long, device=device),
        is_visible=True,
        orig_size=size,
        size=size,
    )
    targets = [[target] * batch for _ in range(frames)]
    clips, queries = torch.arange(batch, device=device), torch.zeros(batch, dtype=torch.long, device=device)
    instances = [torch.zeros(1, dtype=torch.long, device=device)] * batch
    criterion = build_criterion(config)
    for layer in [output, *output.aux_outputs]:
        criterion.mask_losses(layer, targets, clips, queries, instances, torch.ones((), device=device))


def gib(value: int) -> str:
    """Bytes as GiB with one decimal."""
    return f"{value / GIB:.1f}"


def main(argv: list[str] | None = None) -> list[Estimate]:
    """Print the table and the ``max`` line; returns the estimates."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("-c", "--config", action="append", help="a packaged config's name or a file (repeatable)")
    parser.add_argument("--amp", choices=tuple(AUTOCAST_DTYPES), help="override train.amp")
    parser.add_argument("--checkpointing", choices=("on", "off"), help="override model.activation_checkpointing")
    args = parser.parse_args(argv)
    configs = args.config or recipe_configs()
    checkpointing = None if args.checkpointing is None else args.checkpointing == "on"
    estimates = [estimate(path, args.amp, checkpointing) for path in configs]

    header = (
        "config",
        "clips x frames x HxW",
        "amp",
        "ckpt",
        "network",
        "losses",
        "weights",
        "grads",
        "AdamW",
        "total",
    )
    rows = [
        (
            e.name,
            f"{e.batch} x {e.frames} x {e.size[0]}x{e.size[1]}",
            e.amp,
            "on" if e.checkpointing else "off",
            gib(e.activations),
            gib(e.loss_activations),
            gib(e.weights),
            gib(e.gradients),
            gib(e.optimizer),
            gib(e.total),
        )
        for e in estimates
    ]
    widths = [max(len(str(row[i])) for row in [header, *rows]) for i in range(len(header))]
    print("GiB per GPU, one training step (activations saved for backward + float32 states)")
    for row in [header, *rows]:
        print("  ".join(str(cell).ljust(width) for cell, width in zip(row, widths)))
    worst = max(estimates, key=lambda e: e.total)
    print(f"max {gib(worst.total)} GiB per GPU ({worst.name})")
    return estimates


if __name__ == "__main__":
    sys.path.insert(0, str(REPO))
    main()
