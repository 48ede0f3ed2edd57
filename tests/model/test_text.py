"""Tests of the text encoder loading, sentence encoding and FeatureResizer (docs/architecture.md#text-encoder)."""

from __future__ import annotations

import socket

import pytest
import torch
import transformers
from torch.nn import functional as F

from wavecl.model.byte_tokenizer import BYTE_OFFSET, byte_tokenizer
from wavecl.model.text import (
    FeatureResizer,
    TextFeatures,
    encode_text,
    load_text_encoder,
    max_text_tokens,
    text_encoder_of_shape,
)

CPU = torch.device("cpu")
SHORT = "a dog"
LONG = "the man in a red shirt riding the brown horse on the left"


@pytest.fixture(scope="module")
def tiny():
    torch.manual_seed(0)
    return load_text_encoder("random:tiny")


@pytest.fixture
def no_network(monkeypatch):
    """Fail any attempt to open a network connection."""
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("TRANSFORMERS_OFFLINE", "1")

    def refuse(*args, **kwargs):
        raise AssertionError("the text encoder tried to use the network")

    monkeypatch.setattr(socket.socket, "connect", refuse)


def test_masked_mean_matches_hand_loop(tiny) -> None:
    encoder, tokenizer = tiny
    with torch.no_grad():
        features = encode_text(encoder, tokenizer, [SHORT, LONG], CPU)
    assert isinstance(features, TextFeatures)
    lengths = [len(tokenizer(text)["input_ids"]) for text in (SHORT, LONG)]
    assert features.words.shape == (2, max(lengths), 32)
    assert features.pad_mask.dtype == torch.bool
    for b, length in enumerate(lengths):
        assert features.pad_mask[b].tolist() == [False] * length + [True] * (max(lengths) - length)
        total = torch.zeros(32)
        for s in range(length):
            total += features.words[b, s]
        torch.testing.assert_close(features.sentence[b], total / length)


def test_sentence_feature_is_invariant_to_padding(tiny) -> None:
    encoder, tokenizer = tiny
    with torch.no_grad():
        batched = encode_text(encoder, tokenizer, [SHORT, LONG], CPU)
        alone = encode_text(encoder, tokenizer, [SHORT], CPU)
    assert batched.pad_mask[0].any() and not alone.pad_mask.any()
    length = alone.words.shape[1]
    torch.testing.assert_close(batched.sentence[0], alone.sentence[0], rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(batched.words[0, :length], alone.words[0], rtol=1e-5, atol=1e-6)


def test_pooler_mode_returns_the_pooler_output(tiny) -> None:
    encoder, tokenizer = tiny
    tokens = tokenizer([SHORT, LONG], padding=True, return_tensors="pt")
    with torch.no_grad():
        features = encode_text(encoder, tokenizer, [SHORT, LONG], CPU, pooling="pooler")
        expected = encoder(input_ids=tokens["input_ids"], attention_mask=tokens["attention_mask"]).pooler_output
    torch.testing.assert_close(features.sentence, expected)


def test_pooler_mode_needs_a_pooler(tiny) -> None:
    _, tokenizer = tiny
    no_pooler = transformers.BertModel(
        transformers.BertConfig(
            vocab_size=len(tokenizer), hidden_size=8, num_hidden_layers=1, num_attention_heads=1, intermediate_size=8
        ),
        add_pooling_layer=False,
    ).eval()
    with pytest.raises(ValueError, match="pooler"):
        encode_text(no_pooler, tokenizer, [SHORT], CPU, pooling="pooler")


def test_bad_inputs_are_rejected(tiny) -> None:
    encoder, tokenizer = tiny
    with pytest.raises(ValueError, match="empty"):
        encode_text(encoder, tokenizer, [], CPU)
    with pytest.raises(ValueError, match=r"texts\[1\].*'  '"):
        encode_text(encoder, tokenizer, [SHORT, "  ", LONG], CPU)
    with pytest.raises(ValueError, match=r"texts\[0\]"):
        encode_text(encoder, tokenizer, [""], CPU)
    with pytest.raises(TypeError, match="str"):
        encode_text(encoder, tokenizer, SHORT, CPU)
    with pytest.raises(TypeError, match=r"texts\[1\]"):
        encode_text(encoder, tokenizer, [SHORT, 3], CPU)
    with pytest.raises(ValueError, match="pooling"):
        encode_text(encoder, tokenizer, [SHORT], CPU, pooling="max")


def test_too_long_sentence_is_an_error_not_a_truncation(tiny) -> None:
    encoder, tokenizer = tiny
    assert max_text_tokens(encoder) == 512
    fits = " ".join(["dog"] * 510)  # 510 words + [CLS] + [SEP] = 512 tokens
    assert encode_text(encoder, tokenizer, [fits], CPU).words.shape[1] == 512
    with pytest.raises(ValueError, match=r"texts\[1\] has 513 tokens, more than the 512"):
        encode_text(encoder, tokenizer, [SHORT, fits + " dog"], CPU)


def test_minilm_loads_offline_and_encodes_meaning(no_network) -> None:
    encoder, tokenizer = load_text_encoder("minilm")
    assert encoder.config.hidden_size == 384 and not encoder.training
    sentences = ["a man is riding a horse", "a person rides on a horse", "the stock market fell sharply today"]
    with torch.no_grad():
        features = encode_text(encoder, tokenizer, sentences, CPU)
    assert features.words.shape[-1] == 384 and features.sentence.shape == (3, 384)
    similar = F.cosine_similarity(features.sentence[0], features.sentence[1], dim=0)
    unrelated = F.cosine_similarity(features.sentence[0], features.sentence[2], dim=0)
    assert similar > unrelated + 0.3


def test_random_roberta_base_shape_and_tokenizer_pairing(no_network) -> None:
    encoder, tokenizer = load_text_encoder("random:roberta-base")
    assert isinstance(encoder, transformers.RobertaModel) and encoder.pooler is not None
    assert sum(p.numel() for p in encoder.parameters()) == 124_645_632
    assert max_text_tokens(encoder) == 512
    ids = tokenizer([LONG])["input_ids"][0]
    assert len(tokenizer) <= encoder.config.vocab_size and max(ids) < encoder.config.vocab_size


def test_byte_tokenizer_ids_are_the_utf8_bytes_and_survive_save_pretrained(tmp_path) -> None:
    tokenizer = byte_tokenizer()
    sentences = ["a dog", "the café's  Zebra\t"]
    tokens = tokenizer(sentences, padding="longest", add_special_tokens=True, return_tensors="pt")
    bos, pad, eos = tokenizer.bos_token_id, tokenizer.pad_token_id, tokenizer.eos_token_id
    expected = [[bos, *(BYTE_OFFSET + b for b in text.encode("utf-8")), eos] for text in sentences]
    longest = max(map(len, expected))
    assert tokens["input_ids"].tolist() == [ids + [pad] * (longest - len(ids)) for ids in expected]
    assert tokens["attention_mask"].tolist() == [[1] * len(ids) + [0] * (longest - len(ids)) for ids in expected]
    assert len(tokenizer) == BYTE_OFFSET + 256 and (bos, pad, eos) == (0, 1, 2)
    tokenizer.save_pretrained(tmp_path)
    reloaded = transformers.AutoTokenizer.from_pretrained(tmp_path, local_files_only=True)
    assert reloaded(sentences, padding="longest")["input_ids"] == tokens["input_ids"].tolist()


@pytest.mark.parametrize(
    ("spec", "architecture", "width"), [("bytes:tiny", "bert", 32), ("bytes:roberta-base", "roberta", 768)]
)
def test_byte_encoders_need_no_package_file(spec, architecture, width, no_network, monkeypatch) -> None:
    import wavecl.model.text as text

    monkeypatch.setattr(text, "minilm_folder", lambda: pytest.fail("the MiniLM package was asked for"))
    encoder, tokenizer = load_text_encoder(spec)
    assert encoder.config.model_type == architecture and encoder.config.hidden_size == width
    assert encoder.config.pad_token_id == tokenizer.pad_token_id
    with torch.no_grad():
        features = encode_text(encoder, tokenizer, [SHORT, LONG], CPU)
    assert features.words.shape == (2, len(LONG) + 2, width)
    assert features.pad_mask.sum().item() == len(LONG) - len(SHORT)
    assert torch.isfinite(features.sentence).all()


def test_local_folder_and_unknown_specs(tmp_path, no_network) -> None:
    torch.manual_seed(0)
    encoder, tokenizer = load_text_encoder("random:tiny")
    encoder.save_pretrained(tmp_path / "tiny")
    tokenizer.save_pretrained(tmp_path / "tiny")
    reloaded, reloaded_tokenizer = load_text_encoder(str(tmp_path / "tiny"))
    with torch.no_grad():
        torch.testing.assert_close(
            encode_text(reloaded, reloaded_tokenizer, [LONG], CPU, "pooler").sentence,
            encode_text(encoder, tokenizer, [LONG], CPU, "pooler").sentence,
        )
    with pytest.raises(FileNotFoundError, match="no_such_model"):
        load_text_encoder(str(tmp_path / "no_such_model"))
    with pytest.raises(ValueError, match="bytes:bert-large"):
        load_text_encoder("bytes:bert-large")
    with pytest.raises(ValueError, match="random:bert-large"):
        load_text_encoder("random:bert-large")
    (tmp_path / "empty").mkdir()
    with pytest.raises(ValueError, match="empty"):
        load_text_encoder(str(tmp_path / "empty"))


def test_feature_resizer() -> None:
    torch.manual_seed(0)
    resizer = FeatureResizer(12, 8, dropout=0.5)
    assert sorted(name for name, _ in resizer.named_parameters()) == [
        "fc.bias",
        "fc.weight",
        "layer_norm.bias",
        "layer_norm.weight",
    ]
    assert resizer.layer_norm.eps == 1e-12
    features = torch.randn(2, 3, 12)
    resizer.eval()
    expected = F.layer_norm(
        features @ resizer.fc.weight.T + resizer.fc.bias,
        (8,),
        resizer.layer_norm.weight,
        resizer.layer_norm.bias,
        eps=1e-12,
    )
    torch.testing.assert_close(resizer(features), expected)
    resizer.train()
    assert (resizer(features) == 0).any()


def test_text_encoder_of_shape_reads_no_weights(tmp_path) -> None:
    reference, _ = load_text_encoder("minilm")
    folder = tmp_path / "encoder"
    reference.config.save_pretrained(folder)  # config.json only: no weights, no tokenizer
    encoder, _ = text_encoder_of_shape(str(folder))
    assert sum(p.numel() for p in encoder.parameters()) == sum(p.numel() for p in reference.parameters())
    assert not torch.equal(encoder.embeddings.word_embeddings.weight, reference.embeddings.word_embeddings.weight)

    roberta, _ = text_encoder_of_shape(str(tmp_path / "pretrained" / "roberta-base"))  # absent: published shape
    assert sum(p.numel() for p in roberta.parameters()) == 124_645_632
    with pytest.raises(FileNotFoundError, match=r"nowhere/config\.json.*weights are not needed"):
        text_encoder_of_shape(str(tmp_path / "nowhere"))
