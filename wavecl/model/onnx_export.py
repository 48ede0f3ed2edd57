"""Export a :class:`~wavecl.model.wavecl.WaveCL` to ONNX in three parts, for inference outside PyTorch.

The three parts are the three steps of :class:`~wavecl.inference.predictor.VideoPredictor`, so that the
sentences about one window still share one backbone pass:

- ``video.onnx``: :meth:`WaveCL.encode_video` of one clip, ``frames [T, 1, 3, H, W]`` float32 and
  ``pad_mask [T, 1, H, W]`` bool to the :class:`~wavecl.model.features.VisualFeatures` tensors
  (``stride4``, then ``level_l``, ``mask_l``, ``position_l`` for each level);
- ``sentences.onnx``: :meth:`WaveCL.encode_tokens`, ``input_ids [N, S]`` and ``attention_mask [N, S]``
  (int64, from :func:`~wavecl.model.text.tokenize_texts`; the tokenizer stays in Python) to ``words``,
  ``word_padding``, ``sentence_raw``, ``sentence`` and ``word_positions``;
- ``segment.onnx``: :meth:`WaveCL.segment` of ``N`` sentences about that clip (the video part's outputs,
  the sentence part's outputs and ``image_sizes [N, 2]`` int64) to ``pred_masks``, ``pred_cls``,
  ``pred_boxes``, ``video_queries`` and ``text_sentence_feature`` (:class:`~wavecl.model.output.WaveCLOutput`,
  eval mode).

The frame size, the window length, the number of sentences and their token count are dynamic axes.
Frames may be as small as :func:`min_frame_side` (33 px; the shifted-window attention is traced in a
form with no branch on the frame size, :meth:`~wavecl.model.backbone.WindowAttention3d.forward_any_size`).
The window may hold at most as many frames as the temporal attention window (8). ``onnx.json`` records
these limits and the part names.

Traced for export, the network takes its plain formulations (``torch.compiler.is_exporting()``):
the branch-free shifted-window attention and the ``grid_sample`` form of the deformable attention, which
compute the same values as the eager fast paths (``tests/model/test_fast_paths.py``,
``tests/inference/test_onnx.py``)
and map onto standard ONNX operators (``GridSample``, opset 16 and later).
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import TYPE_CHECKING

import torch
import torch.fx.experimental._config
from torch import Tensor, nn

from wavecl.atomic import atomic_path
from wavecl.config import ModelConfig
from wavecl.model.features import EncodedSentences, VisualFeatures
from wavecl.model.text import TextFeatures, tokenize_texts
from wavecl.optional import require_package

if TYPE_CHECKING:
    from wavecl.model.wavecl import WaveCL

ONNX_OPSET = 20
"""The ONNX opset the parts are written in: GridSample needs 16 or later, and from 20 on GELU is one
``Gelu`` node (ONNX Runtime fuses it with the bias before it) instead of five element-wise nodes."""

ONNX_MANIFEST = "onnx.json"
"""The file beside the parts that records their names, inputs, outputs and limits."""

PART_FILES = {"video": "video.onnx", "sentences": "sentences.onnx", "segment": "segment.onnx"}
"""The file of each part."""

SENTENCE_OUTPUTS = ("words", "word_padding", "sentence_raw", "sentence", "word_positions")
SEGMENT_OUTPUTS = ("pred_masks", "pred_cls", "pred_boxes", "video_queries", "text_sentence_feature")
MAX_FRAME_SIDE = 4096


def visual_names(num_levels: int) -> list[str]:
    """The names of the video part's outputs: ``stride4``, then ``level_l``, ``mask_l``, ``position_l``."""
    return ["stride4"] + [f"{kind}_{level}" for kind in ("level", "mask", "position") for level in range(num_levels)]


def min_frame_side(model: WaveCL) -> int:
    """The smallest padded frame side (pixels) the export takes: the last Video-Swin stage keeps 2 tokens.

    Stage 0 has ``ceil(H / 4)`` tokens and each patch merging halves them (rounding up). A side of one
    token is a size the exporter specialises (it treats sizes 0 and 1 apart), so the last stage needs
    two: ``H > 4 * 2**(stages - 1)``, 33 px for Video-Swin's four stages.
    """
    return 4 * 2 ** (len(model.backbone.channels) - 1) + 1


def trace_frame_side(model: WaveCL) -> int:
    """The smallest side (pixels) of the example frames the parts are traced on: every stage has 2 windows.

    At a smaller example some stage has one attention window per axis, and the tracer would freeze
    the graph to that count (it specialises sizes of 1); the traced graph then serves every side from
    :func:`min_frame_side` up. Returns the side that leaves the last stage ``window + 1`` tokens (225
    px for 7x7 windows).
    """
    tokens = max(model.config.backbone_window_size[1:]) + 1
    for _ in range(len(model.backbone.channels) - 1):  # one patch merging between stages
        tokens = 2 * tokens - 1
    return 4 * (tokens - 1) + 1


class VideoPart(nn.Module):
    """:meth:`WaveCL.encode_video` of one clip, its :class:`VisualFeatures` as a flat tuple of tensors."""

    def __init__(self, model: WaveCL) -> None:
        super().__init__()
        self.model = model

    def forward(self, frames: Tensor, pad_mask: Tensor) -> tuple[Tensor, ...]:
        """``frames [T, 1, 3, H, W]``, ``pad_mask [T, 1, H, W]`` → the tensors named by :func:`visual_names`."""
        visual = self.model.encode_video(frames, pad_mask)
        return (visual.stride4, *visual.levels, *visual.masks, *visual.positions)


class SentencePart(nn.Module):
    """:meth:`WaveCL.encode_tokens`, its :class:`EncodedSentences` as a flat tuple (:data:`SENTENCE_OUTPUTS`)."""

    def __init__(self, model: WaveCL) -> None:
        super().__init__()
        self.model = model

    def forward(self, input_ids: Tensor, attention_mask: Tensor) -> tuple[Tensor, ...]:
        """``input_ids``, ``attention_mask [N, S]`` int64 → words ``[N, S, D_text]``, word padding ``[N, S]``,
        raw and projected sentence ``[N, D_text]``, ``[N, d]``, word positions ``[S, N, d]``."""
        encoded = self.model.encode_tokens(input_ids, attention_mask)
        text = encoded.text
        return text.words, text.pad_mask, text.sentence, encoded.sentence, encoded.positions


class SegmentPart(nn.Module):
    """:meth:`WaveCL.segment` of ``N`` sentences about one clip, in eval mode (:data:`SEGMENT_OUTPUTS`)."""

    def __init__(self, model: WaveCL) -> None:
        super().__init__()
        self.model = model
        self.num_levels = model.config.num_feature_levels

    def forward(self, *tensors: Tensor) -> tuple[Tensor, ...]:
        """The video part's outputs, the sentence part's outputs and ``image_sizes [N, 2]``, in that order."""
        count = 1 + 3 * self.num_levels
        visual, text, (image_sizes,) = tensors[:count], tensors[count:-1], tensors[-1:]
        words, word_padding, sentence_raw, sentence, word_positions = text
        num_sentences = sentence.shape[0]
        stride4, rest = visual[0], visual[1:]
        L = self.num_levels

        def per_sentence(tensor: Tensor) -> Tensor:  # [T, ...] of the one clip -> [(N T), ...], batch-major
            return tensor.repeat(num_sentences, *([1] * (tensor.dim() - 1)))

        features = VisualFeatures(
            stride4=per_sentence(stride4),
            levels=[per_sentence(tensor) for tensor in rest[:L]],
            masks=[per_sentence(tensor) for tensor in rest[L : 2 * L]],
            positions=[per_sentence(tensor) for tensor in rest[2 * L :]],
            num_frames=stride4.shape[0],
            num_clips=num_sentences,
        )
        sentences = EncodedSentences(TextFeatures(words, word_padding, sentence_raw), sentence, word_positions)
        output = self.model.segment(features, sentences, image_sizes)
        return tuple(getattr(output, name) for name in SEGMENT_OUTPUTS)


def export_onnx(
    model: WaveCL,
    directory: str | os.PathLike[str],
    frame_size: tuple[int, int] | None = None,
    frames: int = 3,
    int8: bool = False,
) -> Path:
    """Write ``model`` as the three ONNX parts of this module's docstring, and ``onnx.json``, into ``directory``.

    The model is exported in eval mode, float32, on the CPU (a copy is not made: it is moved there and
    left in eval mode). Each part is traced once on an example input and written with dynamic axes.

    Args:
        model: the :class:`~wavecl.model.wavecl.WaveCL` to export.
        directory: the folder to write (created; existing part files are replaced).
        frame_size: ``(H, W)`` of the example frames, at least :func:`trace_frame_side` a side (the
            default); the exported parts take any side from :func:`min_frame_side` up.
        frames: ``T`` of the example clip.
        int8: quantize the weights of the matmuls to int8 after the export (ONNX Runtime's
            ``quantize_dynamic``: int8 weights, activations quantized on the fly per call).

    Returns:
        ``directory``.

    Raises:
        ValueError: ``frame_size`` is below :func:`trace_frame_side`.
        TypeError: ``model`` has no :class:`~wavecl.config.ModelConfig` (it is not a WaveCL).
    """
    directory = Path(directory)
    model = model.cpu().eval().float()
    config = model.config
    if not isinstance(config, ModelConfig):
        raise TypeError(f"export_onnx exports a WaveCL (with a ModelConfig), got {type(model).__name__}")
    min_side, trace_side = min_frame_side(model), trace_frame_side(model)
    height, width = frame_size or (trace_side, trace_side)
    if min(height, width) < trace_side:
        raise ValueError(f"frame_size {height}x{width} is below the smallest side to trace at, {trace_side} px")
    max_frames = model.config.backbone_window_size[0]
    directory.mkdir(parents=True, exist_ok=True)
    clip = torch.randn(frames, 1, 3, height, width)
    pad_mask = torch.zeros(frames, 1, height, width, dtype=torch.bool)
    sentences = ["a person on the left", "the dog"]
    input_ids, attention_mask = tokenize_texts(model.tokenizer, model.text_encoder, sentences)
    num_levels = model.config.num_feature_levels
    names = visual_names(num_levels)

    t = torch.export.Dim("frames", min=1, max=max_frames)
    h = torch.export.Dim("height", min=min_side, max=MAX_FRAME_SIDE)
    w = torch.export.Dim("width", min=min_side, max=MAX_FRAME_SIDE)
    _export(
        VideoPart(model),
        (clip, pad_mask),
        directory / PART_FILES["video"],
        ["frames", "pad_mask"],
        names,
        {"frames": {0: t, 3: h, 4: w}, "pad_mask": {0: t, 2: h, 3: w}},
    )
    n, s = torch.export.Dim("sentences", min=1), torch.export.Dim("tokens", min=2)
    _export(
        SentencePart(model),
        (input_ids, attention_mask),
        directory / PART_FILES["sentences"],
        ["input_ids", "attention_mask"],
        list(SENTENCE_OUTPUTS),
        {"input_ids": {0: n, 1: s}, "attention_mask": {0: n, 1: s}},
    )
    with torch.no_grad():  # not inference mode: export cannot trace inference tensors
        visual = VideoPart(model)(clip, pad_mask)
        text = SentencePart(model)(input_ids, attention_mask)
    image_sizes = torch.tensor([[height, width]] * len(sentences))
    inputs = (*visual, *text, image_sizes)
    dims = {"frames": t, "sentences": n, "tokens": s, "auto": torch.export.Dim.AUTO}
    axes = {  # the named axes of every input; the level sizes follow the frame size (AUTO)
        "stride4": ("frames", None, "auto", "auto"),
        **{f"level_{level}": ("frames", None, "auto", "auto") for level in range(num_levels)},
        **{f"mask_{level}": ("frames", "auto", "auto") for level in range(num_levels)},
        **{f"position_{level}": ("frames", None, "auto", "auto") for level in range(num_levels)},
        "words": ("sentences", "tokens", None),
        "word_padding": ("sentences", "tokens"),
        "sentence_raw": ("sentences", None),
        "sentence": ("sentences", None),
        "word_positions": ("tokens", "sentences", None),
        "image_sizes": ("sentences", None),
    }
    input_names = [*names, *SENTENCE_OUTPUTS, "image_sizes"]
    specs = tuple(
        {axis: dims[kind] for axis, kind in enumerate(axes[name]) if kind is not None} for name in input_names
    )
    _export(
        SegmentPart(model),
        inputs,
        directory / PART_FILES["segment"],
        input_names,
        list(SEGMENT_OUTPUTS),
        (specs,),  # one entry: SegmentPart.forward takes *tensors
    )
    if int8:
        for name in PART_FILES.values():
            quantize_int8(directory / name)
    manifest = {
        "opset": ONNX_OPSET,
        "int8": int8,
        "parts": PART_FILES,
        "num_feature_levels": num_levels,
        "min_frame_side": min_side,
        "max_frame_side": MAX_FRAME_SIDE,
        "max_frames": max_frames,
        "visual_outputs": names,
        "sentence_outputs": list(SENTENCE_OUTPUTS),
        "segment_outputs": list(SEGMENT_OUTPUTS),
    }
    with atomic_path(directory / ONNX_MANIFEST) as temporary:
        temporary.write_text(json.dumps(manifest, indent=2) + "\n", encoding="utf-8")
    return directory


QUANTIZED_OPS = ["MatMul", "Gemm"]
"""The ONNX operators whose weights :func:`quantize_int8` turns into int8."""


def quantize_int8(path: Path) -> None:
    """Replace the ONNX graph at ``path`` by its dynamically quantized version: int8 weights for the
    matrix products (``MatMul``, ``Gemm``), activations quantized on the fly.

    Convolutions stay float32: ONNX Runtime's ``ConvInteger`` is slower than its float32 ``Conv`` on the CPU
    (on the full model at 8x320x576, one thread: 1.5 s of int8 convolutions where float32 took 0.4 s).

    Raises:
        MissingPackageError: onnxruntime is not installed (the message names the package).
    """
    quantization = require_package("onnxruntime.quantization", "int8 quantization")
    with atomic_path(path) as temporary:
        quantization.quantize_dynamic(
            path, temporary, weight_type=quantization.QuantType.QInt8, op_types_to_quantize=QUANTIZED_OPS
        )


def _export(
    module: nn.Module,
    inputs: tuple[Tensor, ...],
    path: Path,
    input_names: list[str],
    output_names: list[str],
    dynamic_shapes: dict | tuple,
) -> None:
    """``torch.onnx.export`` (the ``torch.export`` based exporter) of one part to ``path``, atomically."""
    # Without duck shaping, axes whose example sizes happen to be equal (2 frames, 2 sentences) stay
    # separate symbols instead of one, which would tie them in the graph.
    # ``patch`` is added at import time by torch.utils._config_module.install_config_module, unseen by mypy.
    config_patch = torch.fx.experimental._config.patch  # type: ignore[attr-defined]
    with atomic_path(path) as temporary, config_patch(use_duck_shape=False):
        torch.onnx.export(
            module.eval(),
            inputs,
            str(temporary),
            input_names=input_names,
            output_names=output_names,
            dynamic_shapes=dynamic_shapes,
            opset_version=ONNX_OPSET,
            dynamo=True,
            external_data=False,
        )
