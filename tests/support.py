"""Small helpers shared by several test modules (independent computations, not library code)."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from unittest import mock

import numpy as np
import torch
import torch.nn.functional as F
from einops import rearrange
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
from torch.utils._python_dispatch import TorchDispatchMode

import wavecl.model.deformable as deformable
from wavecl.checkpoint import read_state_dict
from wavecl.config import Config, ModelConfig, apply_overrides, config_file, load_config
from wavecl.data.collate import collate_clips
from wavecl.data.synthetic import write_synthetic_ytvos
from wavecl.data.types import FrameTarget
from wavecl.distributed import DistInfo
from wavecl.evaluation.protocols import Evaluation, build_evaluation
from wavecl.model.output import WaveCLOutput
from wavecl.model.wavecl import WaveCL
from wavecl.testing.frames import frame_level
from wavecl.training.trainer import Trainer

TINY_CONFIG = config_file("tiny")
MEAN = torch.tensor([0.485, 0.456, 0.406])[:, None, None]
STD = torch.tensor([0.229, 0.224, 0.225])[:, None, None]


def box_cxcywh(mask: np.ndarray) -> list[float]:
    """Normalised (cx, cy, w, h) of a mask's inclusive pixel extent, computed naively."""
    ys, xs = np.nonzero(mask)
    h, w = mask.shape
    x1, x2, y1, y2 = xs.min(), xs.max(), ys.min(), ys.max()
    return [(x1 + x2) / 2 / w, (y1 + y2) / 2 / h, (x2 - x1) / w, (y2 - y1) / h]


def level_index(level: float) -> int:
    """The fixture frame index whose grey level (``frame_level``) is nearest to ``level``."""
    return round((level - frame_level(0)) / (frame_level(1) - frame_level(0)))


def frame_indices(frames: torch.Tensor) -> list[int]:
    """Recover each frame's index of a normalised ``[T, 3, H, W]`` clip from its grey level (red channel)."""
    levels = ((frames * STD + MEAN) * 255)[:, 0].mean(dim=(1, 2))
    return [level_index(float(level)) for level in levels]


def constant_prediction(batch, logit: float) -> WaveCLOutput:
    """Outputs whose masks are everywhere ``logit`` (all foreground when positive, empty when negative)."""
    T, B, _, H, W = batch.frames.shape
    Q = 3
    return WaveCLOutput(
        pred_masks=torch.full((T, B, Q, (H + 3) // 4, (W + 3) // 4), logit),
        pred_cls=torch.zeros(T, B, Q, 1),
        pred_boxes=torch.full((T, B, Q, 4), 0.5),
        video_queries=torch.zeros(B, Q, 8),
        text_sentence_feature=torch.zeros(B, 8),
    )


def evaluate_constant(config: Config, out_dir: Path, logit: float) -> tuple[Evaluation, dict[str, float]]:
    """``config``'s evaluation (:func:`~wavecl.evaluation.protocols.build_evaluation`) and its metrics when every
    clip is predicted by :func:`constant_prediction` with ``logit``, one clip per batch."""
    evaluation = build_evaluation(config, out_dir)
    for index in range(len(evaluation.dataset)):
        batch = collate_clips([evaluation.dataset[index]])
        evaluation.evaluator.update(constant_prediction(batch, logit), batch)
    return evaluation, evaluation.evaluator.summarize()


def tiny_train_arguments(epochs: int, output_dir: Path, data_root: Path, settings: dict) -> list[str]:
    """``wavecl train`` arguments (after the command name) for the recipe tiny on the CPU, with
    ``settings`` as ``--set key=value`` overrides."""
    arguments = ["-c", str(TINY_CONFIG), "--device", "cpu", "--epochs", str(epochs)]
    arguments += ["--output-dir", str(output_dir), "--data-root", str(data_root)]
    for key, value in settings.items():
        arguments += ["--set", f"{key}={value}"]
    return arguments


def perturbed_model(config: ModelConfig) -> WaveCL:
    """``WaveCL(config)`` (seed 0) with every trainable parameter moved by 0.02 x N(0, 1) noise (seed 1),
    away from the zero initialisations, so that every path of the network carries a signal."""
    torch.manual_seed(0)
    model = WaveCL(config)
    generator = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for parameter in model.parameters():
            if parameter.requires_grad:
                parameter.add_(0.02 * torch.randn(parameter.shape, generator=generator))
    return model


def run_cli(argv: list[str], capsys) -> tuple[int, str, str]:
    """Run ``wavecl argv`` in this process; returns the exit code (0 if it returned) and the output."""
    from wavecl.cli import main

    try:
        main(argv)
        code = 0
    except SystemExit as exit_:
        code = exit_.code if isinstance(exit_.code, int) else 1
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def tree_state(root: Path) -> dict[str, tuple[int, int, int]]:
    """``{relative path: (size, mtime_ns, mode)}`` of every file and folder under ``root``."""
    state = {}
    for path in sorted(root.rglob("*")):
        info = path.lstat()
        state[path.relative_to(root).as_posix()] = (
            info.st_size if path.is_file() else 0,
            info.st_mtime_ns,
            info.st_mode,
        )
    return state


def set_writable(root: Path, writable: bool) -> None:
    for path in [root, *root.rglob("*")]:
        mode = path.stat().st_mode
        path.chmod(mode | 0o200 if writable else mode & ~0o222)


FRAME_SIZE = (32, 48)
SINGLE_CPU = DistInfo(rank=0, world_size=1, local_rank=0, device=torch.device("cpu"))

SIZE_OVERRIDES = {
    "data.train_short_size": FRAME_SIZE[0],
    "data.train_max_size": FRAME_SIZE[1],
    "data.eval_short_size": FRAME_SIZE[0],
    "data.eval_max_size": FRAME_SIZE[1],
}


def write_dataset(root: Path) -> Path:
    """6 training clips and 1 held-out clip of 4 frames (one training window per expression)."""
    write_synthetic_ytvos(root, 6, num_frames=4, size=FRAME_SIZE, seed=0, split="train")
    write_synthetic_ytvos(root, 1, num_frames=4, size=FRAME_SIZE, seed=1, split="valid")
    return root


def tiny_config(data_root: Path, output_dir: Path, version: str, **overrides) -> Config:
    """``configs/tiny.yaml`` on 32x48 synthetic clips, 2 epochs of 2 steps; ``overrides`` use ``__`` for dots."""
    values = {
        **SIZE_OVERRIDES,
        "data.root": str(data_root),
        "train.output_dir": str(output_dir),
        "train.version": version,
        "train.epochs": 2,
        "train.max_steps_per_epoch": 2,
    }
    values.update({key.replace("__", "."): value for key, value in overrides.items()})
    return apply_overrides(load_config(TINY_CONFIG), values)


def read_scalars(tensorboard_dir: Path) -> dict[str, dict[int, float]]:
    """Every TensorBoard scalar of a run: tag -> {step: value} (all event files, purges applied)."""
    events = EventAccumulator(str(tensorboard_dir), size_guidance={"scalars": 0})
    events.Reload()
    return {tag: {event.step: event.value for event in events.Scalars(tag)} for tag in events.Tags()["scalars"]}


def read_log(run_dir: Path) -> list[dict]:
    return [json.loads(line) for line in (run_dir / "log.jsonl").read_text().splitlines()]


def skip_evaluation(monkeypatch) -> None:
    """For tests that are not about evaluation: no evaluation pass, no metric."""
    monkeypatch.setattr(Trainer, "evaluate", lambda self, epoch: ({}, None))


def make_batch(T: int, B: int, Q: int, K: int, num_aux: int = 2, seed: int = 0):
    """Outputs with aux layers and targets whose clips differ in size and visibility."""
    generator = torch.Generator().manual_seed(seed)
    sizes = [(16 - 3 * (b % 2), 20 - 2 * (b % 3)) for b in range(B)]
    height, width = max(s[0] for s in sizes), max(s[1] for s in sizes)
    layers = [make_layer(T, B, Q, K, height // 4, width // 4, 16, generator) for _ in range(num_aux + 1)]
    outputs = layers[-1]
    outputs.aux_outputs = layers[:-1]
    targets = []
    for t in range(T):
        row = []
        for b in range(B):
            visible = (t + b) % 3 != 1
            mask = (torch.rand(*sizes[b], generator=generator) > 0.5) & visible
            box = torch.rand(1, 4, generator=generator) * 0.4 + 0.3 if visible else torch.zeros(1, 4)
            label = torch.tensor([(b + 2) % K])
            row.append(FrameTarget(mask[None], box, label, visible, sizes[b], sizes[b]))
        targets.append(row)
    return outputs, targets


def make_inputs(T: int, B: int, H: int = 45, W: int = 61, dtype: torch.dtype = torch.float64):
    """Random clips of odd size; with two clips the second has 6 padded rows at the bottom."""
    generator = torch.Generator().manual_seed(10 * T + B)
    frames = torch.randn(T, B, 3, H, W, generator=generator, dtype=dtype)
    pad_mask = torch.zeros(T, B, H, W, dtype=torch.bool)
    sizes = torch.tensor([[H, W]] * B)
    if B > 1:
        pad_mask[:, 1, H - 6 :] = True
        frames[:, 1, :, H - 6 :] = 0
        sizes[1, 0] = H - 6
    texts = ["the red circle on the left", "a small blue square moving up quickly"][:B]
    return frames, pad_mask, texts, sizes


def run(model: WaveCL, inputs, train: bool, plain: bool, valid_indices=None):
    """Outputs (and, in training, every parameter's gradient of a loss on all of them) of one forward."""
    model.train(train)
    model.zero_grad(set_to_none=True)
    torch.manual_seed(5)  # the same dropout and stochastic-depth draws for both models
    patch = mock.patch.object(deformable, "ms_deform_attn", plain_ms_deform_attn) if plain else mock.MagicMock()
    with patch, torch.set_grad_enabled(train):
        outputs = predictions(model(*inputs, valid_indices=valid_indices))
    gradients = {}
    if train:
        generator = torch.Generator().manual_seed(2)
        loss = sum(
            (tensor * torch.randn(tensor.shape, generator=generator, dtype=tensor.dtype)).sum()
            for tensor in outputs.values()
        )
        loss.backward()
        gradients = {name: p.grad for name, p in model.named_parameters() if p.grad is not None}
    return outputs, gradients


def assert_all_close(actual: dict[str, torch.Tensor], expected: dict[str, torch.Tensor]) -> None:
    """Every tensor within 1e-10 of the largest value of them all (float64 rounding is about 1e-15 of it;
    a gradient that is zero in exact arithmetic, such as a bias before a normalisation, is rounding noise
    at that scale on both sides)."""
    scale = max(tensor.abs().max().item() for tensor in expected.values())
    for name, tensor in expected.items():
        assert tensor.dtype == torch.float64
        torch.testing.assert_close(actual[name], tensor, rtol=1e-9, atol=1e-10 * scale, msg=name)


def assert_same_run(actual: Path, expected: Path, steps: int) -> None:
    """Every TensorBoard training scalar, every log.jsonl number but the timing, and the last weights agree
    bit for bit."""
    expected_scalars, actual_scalars = read_scalars(expected / "tensorboard"), read_scalars(actual / "tensorboard")
    train_tags = [tag for tag in expected_scalars if tag.startswith(("train/", "lr/"))]
    assert "train/loss" in train_tags and len(train_tags) > 10
    for tag in train_tags:
        assert sorted(actual_scalars[tag]) == sorted(expected_scalars[tag]) == list(range(steps)), tag
        assert actual_scalars[tag] == expected_scalars[tag], tag
    untimed = [{k: v for k, v in record.items() if k != "train_seconds"} for record in read_log(expected)]
    assert [{k: v for k, v in record.items() if k != "train_seconds"} for record in read_log(actual)] == untimed
    expected_weights, actual_weights = read_state_dict(expected), read_state_dict(actual)
    assert expected_weights.keys() == actual_weights.keys()
    for name, tensor in expected_weights.items():
        assert torch.equal(actual_weights[name], tensor), name


def make_layer(T: int, B: int, Q: int, K: int, h: int, w: int, C: int, generator: torch.Generator) -> WaveCLOutput:
    return WaveCLOutput(
        pred_masks=(torch.randn(T, B, Q, h, w, generator=generator) * 2).requires_grad_(),
        pred_cls=(torch.randn(T, B, Q, K, generator=generator) - 1).requires_grad_(),
        pred_boxes=(torch.rand(T, B, Q, 4, generator=generator) * 0.5 + 0.25).requires_grad_(),
        video_queries=torch.randn(B, Q, C, generator=generator).requires_grad_(),
        text_sentence_feature=torch.randn(B, C, generator=generator).requires_grad_(),
    )


def plain_ms_deform_attn(value, level_shapes, sampling_locations, attention_weights):
    """Per level: grid_sample of every head's map at its points, times the attention weights, summed."""
    n, _, heads, _ = value.shape
    values = value.split([h * w for h, w in level_shapes], dim=1)
    output = 0
    for level, (h, w) in enumerate(level_shapes):
        level_value = rearrange(values[level], "n (h w) m d -> (n m) d h w", h=h, w=w)
        grid = rearrange(2 * sampling_locations[:, :, :, level] - 1, "n q m p xy -> (n m) q p xy")
        samples = F.grid_sample(level_value, grid.to(value.dtype), mode="bilinear", align_corners=False)
        weights = rearrange(attention_weights[:, :, :, level], "n q m p -> (n m) 1 q p")
        output = output + (samples * weights).sum(dim=-1)
    return rearrange(output, "(n m) d q -> n q (m d)", n=n, m=heads)


def predictions(output) -> dict[str, torch.Tensor]:
    """Every prediction of every returned layer, by name."""
    tensors = {"video_queries": output.video_queries, "text_sentence_feature": output.text_sentence_feature}
    for index, layer in enumerate([output, *output.aux_outputs]):
        for name in ("pred_masks", "pred_cls", "pred_boxes"):
            tensors[f"{index}.{name}"] = getattr(layer, name)
    return tensors


class OperandDtypes(TorchDispatchMode):
    """Records the dtypes of chosen operands of chosen operators as the kernels receive them (after
    autocast's casts), grouped under labels.

    Args:
        operands: ``{operator: (label, operand names)}``, operators named as ``func.overloadpacket.__name__``.
        keep: ``keep(operator, named arguments)``: whether to record this call (all calls when ``None``).

    Attributes:
        seen: ``{label: [dtype, ...]}`` in call order.
    """

    def __init__(
        self, operands: dict[str, tuple[str, tuple[str, ...]]], keep: Callable[[str, dict], bool] | None = None
    ) -> None:
        super().__init__()
        self.operands, self.keep = operands, keep
        self.seen: dict[str, list[torch.dtype]] = {label: [] for label, _ in operands.values()}

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        name = func.overloadpacket.__name__
        if name in self.operands:
            named = {argument.name: value for argument, value in zip(func._schema.arguments, args)} | kwargs
            if self.keep is None or self.keep(name, named):
                label, operand_names = self.operands[name]
                self.seen[label] += [named[operand].dtype for operand in operand_names]
        return func(*args, **kwargs)


def embedding_bag_operands(label: str) -> dict[str, tuple[str, tuple[str, ...]]]:
    """:class:`OperandDtypes`'s entries for the gathered table and the per-sample weights of ``embedding_bag``
    (both of its operators: with and without autograd)."""
    operators = ("_embedding_bag", "_embedding_bag_forward_only")
    return {name: (label, ("weight", "per_sample_weights")) for name in operators}
