"""A byte-level tokenizer built in code: no package beyond ``transformers`` and no file to download.

Every UTF-8 byte of a sentence is one token, so any text is covered by 256 ids and the vocabulary
lives in this module. It pairs with the randomly initialised ``bytes:*`` text encoders of
:func:`wavecl.model.text.load_text_encoder` (smoke runs and speed checks on machines without the
MiniLM package); a byte sequence is longer than a word-piece one (one token per ASCII character).

Ids, in RoBERTa's special-token order so that a RoBERTa-shaped encoder keeps its pad id (1):

* ``<s>`` 0 (begins every sentence), ``<pad>`` 1, ``</s>`` 2 (ends every sentence), ``<unk>`` 3;
* byte ``b`` (0-255) -> ``BYTE_OFFSET + b``.

It is a :class:`transformers.PreTrainedTokenizerFast`, so ``save_pretrained`` writes a
``tokenizer.json`` that ``AutoTokenizer`` reads back (pretrained folders keep working).
"""

from __future__ import annotations

import transformers
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors

SPECIAL_TOKENS = ("<s>", "<pad>", "</s>", "<unk>")
BYTE_OFFSET = len(SPECIAL_TOKENS)
"""Token id of byte 0; byte ``b`` has id ``BYTE_OFFSET + b``."""


def byte_symbols() -> list[str]:
    """The character that byte-level pre-tokenisation writes for each byte 0-255, in byte order.

    Printable Latin-1 bytes (``!``-``~``, ``¡``-``¬``, ``®``-``ÿ``) stand for themselves; the other 68
    bytes (controls, space, soft hyphen) take the characters from U+0100 on, in byte order.
    """
    printable = {*range(33, 127), *range(161, 173), *range(174, 256)}
    substitutes = iter(range(256, 512))
    return [chr(byte) if byte in printable else chr(next(substitutes)) for byte in range(256)]


def byte_tokenizer() -> transformers.PreTrainedTokenizerFast:
    """The byte-level tokenizer described in the module docstring (``len`` = 260 ids).

    Called on sentences it returns ``input_ids`` ``[<s>, BYTE_OFFSET + b for each UTF-8 byte, </s>]``
    and the attention mask, padded with ``<pad>`` like any Hugging Face tokenizer.
    """
    vocab = {token: index for index, token in enumerate(SPECIAL_TOKENS)}
    vocab.update({symbol: BYTE_OFFSET + byte for byte, symbol in enumerate(byte_symbols())})
    bos, _, eos, unk = SPECIAL_TOKENS
    tokenizer = Tokenizer(models.BPE(vocab=vocab, merges=[], unk_token=unk))  # no merges: one token per byte
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)
    tokenizer.decoder = decoders.ByteLevel()
    tokenizer.post_processor = processors.TemplateProcessing(
        single=f"{bos} $A {eos}", special_tokens=[(bos, vocab[bos]), (eos, vocab[eos])]
    )
    return transformers.PreTrainedTokenizerFast(
        tokenizer_object=tokenizer, bos_token=bos, pad_token=SPECIAL_TOKENS[1], eos_token=eos, unk_token=unk
    )
