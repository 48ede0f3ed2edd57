"""The network's three ONNX parts (:mod:`wavecl.model.onnx_export`) run by ONNX Runtime on the CPU.

:class:`OnnxNetwork` offers the three steps :class:`~wavecl.inference.predictor.VideoPredictor` calls on a
:class:`~wavecl.model.wavecl.WaveCL` (``encode_video``, ``encode_sentences``, ``segment``) with the same
inputs and outputs, so the predictor runs either one. The tokenizer stays in Python.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor

from wavecl.jsonio import read_json
from wavecl.model.onnx_export import ONNX_MANIFEST
from wavecl.model.output import WaveCLOutput
from wavecl.model.text import tokenize_texts
from wavecl.optional import require_package

DISABLED_OPTIMIZERS = ["SkipLayerNormFusion"]
"""ONNX Runtime graph rewrites the sessions leave out. Its fused residual add and layer norm
(``SkipLayerNormalization``) took 39 ms per ``[8, 3825, 256]`` norm of the deformable encoder at 8x320x576
(one thread), the ``Add`` and ``LayerNormalization`` it replaces 7 ms together: 200 ms of the segment part."""


class OnnxNetwork:
    """ONNX Runtime sessions of the video, sentence and segment parts exported to ``directory``.

    Args:
        directory: the folder :func:`~wavecl.model.onnx_export.export_onnx` wrote.
        tokenizer, text_encoder: the model's tokenizer, and its text encoder (whose position table
            bounds the sentence length; only its config is read).
        threads: intra-op threads of each session; ONNX Runtime's default (all cores) when ``None``.

    Raises:
        FileNotFoundError: ``directory`` lacks ``onnx.json`` or a part (the message names it).
        MissingPackageError: onnxruntime is not installed (the message names the package).
    """

    def __init__(self, directory: str | os.PathLike[str], tokenizer, text_encoder, threads: int | None = None) -> None:
        onnxruntime = require_package("onnxruntime", "the onnxruntime runtime")
        directory = Path(directory)
        manifest_path = directory / ONNX_MANIFEST
        if not manifest_path.is_file():
            raise FileNotFoundError(f"{manifest_path} does not exist: export the model with `wavecl export --onnx`")
        self.manifest = read_json(manifest_path)
        options = onnxruntime.SessionOptions()
        # The memory pattern (one block per run, planned for the last input shapes) is allocated anew on the
        # next runs until the arena settles: at 8x320x576 the second window took 13.9 s, 8.4 of them in page
        # faults, against 5.4 s once settled; without it the second window is settled (5.5 s).
        options.enable_mem_pattern = False
        if threads is not None:
            options.intra_op_num_threads = threads
        self.sessions = {}
        for part, name in self.manifest["parts"].items():
            path = directory / name
            if not path.is_file():
                raise FileNotFoundError(f"{path} does not exist: the ONNX export in {directory} is incomplete")
            self.sessions[part] = onnxruntime.InferenceSession(
                str(path), options, providers=["CPUExecutionProvider"], disabled_optimizers=DISABLED_OPTIMIZERS
            )
        self.tokenizer = tokenizer
        self.text_encoder = text_encoder

    def encode_video(self, frames: Tensor, pad_mask: Tensor) -> list[np.ndarray]:
        """The video part on one clip: ``frames [T, 1, 3, H, W]`` float32, ``pad_mask [T, 1, H, W]`` bool.

        Returns:
            The visual feature arrays, in the order of the manifest's ``visual_outputs``.

        Raises:
            ValueError: more than one clip, more frames than the export allows, or a side outside its range.
        """
        T, B, _, H, W = frames.shape
        low, high, most = self.manifest["min_frame_side"], self.manifest["max_frame_side"], self.manifest["max_frames"]
        if B != 1:
            raise ValueError(f"the ONNX video part encodes one clip at a time, got {B}")
        if T > most:
            raise ValueError(f"the ONNX export takes windows of at most {most} frames, got {T}")
        if not (low <= H <= high and low <= W <= high):
            raise ValueError(
                f"the ONNX export takes frames of {low} to {high} px per side after the resize, got {H}x{W}; "
                f"raise short_size to at least {low} or predict with the torch runtime"
            )
        inputs = {"frames": frames.float().numpy(), "pad_mask": pad_mask.numpy()}
        return self.sessions["video"].run(None, inputs)

    def encode_sentences(self, texts: Sequence[str], device: torch.device) -> list[np.ndarray]:
        """Tokenise ``N`` sentences (:func:`~wavecl.model.text.tokenize_texts`) and run the sentence part.

        ``device`` is accepted for the predictor's call and must be the CPU.
        """
        input_ids, attention_mask = tokenize_texts(self.tokenizer, self.text_encoder, texts)
        inputs = {"input_ids": input_ids.numpy(), "attention_mask": attention_mask.numpy()}
        return self.sessions["sentences"].run(None, inputs)

    def segment(
        self,
        visual: list[np.ndarray],
        sentences: list[np.ndarray],
        image_sizes: Tensor,
        clip_index: Tensor | None = None,
    ) -> WaveCLOutput:
        """The segment part: ``N`` sentences about the one encoded clip.

        Args:
            visual, sentences: the outputs of :meth:`encode_video` and :meth:`encode_sentences`.
            image_sizes: ``[N, 2]`` unpadded ``(H', W')`` of the clip, one row per sentence.
            clip_index: ``[N]`` zeros or ``None`` (there is one clip).

        Returns:
            :class:`~wavecl.model.output.WaveCLOutput` with batch axis ``N`` (CPU float32 tensors).
        """
        if clip_index is not None and bool(clip_index.any()):
            raise ValueError("the ONNX segment part takes sentences about one clip (clip_index all 0)")
        names = self.manifest["visual_outputs"] + self.manifest["sentence_outputs"] + ["image_sizes"]
        values = [*visual, *sentences, image_sizes.long().numpy()]
        outputs = self.sessions["segment"].run(None, dict(zip(names, values)))
        named = zip(self.manifest["segment_outputs"], outputs)
        fields: dict[str, Any] = {name: torch.from_numpy(array) for name, array in named}
        return WaveCLOutput(**fields)
