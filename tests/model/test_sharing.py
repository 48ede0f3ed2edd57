"""One backbone pass per clip whatever the number of sentences: ``encode_video`` + ``segment`` with
``clip_index`` against the per-sentence path (``forward`` on the clip repeated once per sentence, and
``forward`` on each sentence alone), with every parity switch, in eval and train mode."""

from __future__ import annotations

import dataclasses

import pytest
import torch

from wavecl.config import load_config
from wavecl.model.wavecl import WaveCL

TINY = "tiny"
SENTENCES = [
    "the red circle on the left",
    "a small blue square moving up quickly",
    "the green triangle",
    "a big yellow ball bouncing in the middle of the picture",
]
SWITCHES = {
    "defaults": {},
    "reference": {"eval_layer": "reference", "fla_order": "reference", "sep_pooling": "reference"},
    "pooler": {"sentence_pooling": "pooler", "fla_order": "reference"},
}


pytestmark = pytest.mark.usefixtures("single_thread")


def tiny_model(**switches) -> WaveCL:
    """The tiny model without dropout or stochastic depth (random draws would depend on the batch)."""
    config = dataclasses.replace(
        load_config(TINY).model, dropout=0.0, voc_dropout=0.0, text_proj_dropout=0.0, backbone_drop_path=0.0
    )
    torch.manual_seed(0)
    model = WaveCL(dataclasses.replace(config, **switches))
    generator = torch.Generator().manual_seed(1)
    with torch.no_grad():  # leave the zero initialisations (box MLPs, MSDA offsets), so that every path is live
        for parameter in model.parameters():
            if parameter.requires_grad:
                parameter.add_(0.02 * torch.randn(parameter.shape, generator=generator))
    return model


def clips(T: int, B: int, H: int = 37, W: int = 53):
    """``B`` random clips; clip 1 (when present) has padding at the bottom and on the right."""
    generator = torch.Generator().manual_seed(10 * T + B)
    frames = torch.randn(T, B, 3, H, W, generator=generator)
    pad_mask = torch.zeros(T, B, H, W, dtype=torch.bool)
    sizes = torch.tensor([[H, W]] * B)
    if B > 1:
        pad_mask[:, 1, H - 7 :] = True
        pad_mask[:, 1, :, W - 5 :] = True
        frames[:, 1] = frames[:, 1].masked_fill(pad_mask[:, 1, None], 0)
        sizes[1] = torch.tensor([H - 7, W - 5])
    return frames, pad_mask, sizes


def shared(model, frames, pad_mask, sizes, texts, clip_index, valid_indices=None, pool_text_padding=False):
    """The shared path: the clips once through ``encode_video``, the sentences through ``segment``."""
    visual = model.encode_video(frames, pad_mask, valid_indices)
    sentences = model.encode_sentences(texts, frames.device)
    return model.segment(visual, sentences, sizes[clip_index], clip_index, pool_text_padding)


def repeated(model, frames, pad_mask, sizes, texts, clip_index, valid_indices=None):
    """Today's per-sentence path: ``forward`` on the batch holding clip ``clip_index[n]`` for sentence ``n``."""
    if valid_indices is not None:
        T = frames.shape[0]
        times = valid_indices - torch.arange(frames.shape[1]) * T
        valid_indices = times[clip_index] + torch.arange(len(clip_index)) * T
    return model(frames[:, clip_index], pad_mask[:, clip_index], texts, sizes[clip_index], valid_indices)


def layers(output):
    return [output, *output.aux_outputs]


def assert_close(actual, expected, name=""):
    """Equal within float rounding, relative to the largest entry: the backbone's GEMMs round
    differently for another batch size, and later layers carry that rounding at their own scale."""
    scale = float(expected.detach().abs().max())
    torch.testing.assert_close(
        actual, expected, atol=1e-5 * scale + 1e-7, rtol=1e-4, msg=lambda text: f"{name}: {text}"
    )


def assert_outputs_close(actual, expected):
    assert len(actual.aux_outputs) == len(expected.aux_outputs)
    for a, e in zip(layers(actual), layers(expected)):
        for name in ("pred_masks", "pred_cls", "pred_boxes", "video_queries", "text_sentence_feature"):
            assert_close(getattr(a, name), getattr(e, name), name)


CASES = [  # (T, B, clip_index)
    (1, 1, [0, 0, 0, 0]),
    (3, 1, [0, 0, 0]),
    (3, 2, [1, 0, 1, 1]),
    (1, 2, [0, 1, 1]),
]


@pytest.mark.parametrize("switches", list(SWITCHES), ids=list(SWITCHES))
@pytest.mark.parametrize("T,B,index", CASES)
def test_shared_equals_per_sentence_in_eval_mode(switches, T, B, index):
    """Each sentence's output equals its forward alone; with ``pool_text_padding`` the outputs equal the
    forward of the batch repeating each sentence's clip (they differ under ``sep_pooling="reference"``,
    where the reference pools the text padding of its batch)."""
    model = tiny_model(**SWITCHES[switches]).eval()
    frames, pad_mask, sizes = clips(T, B)
    clip_index = torch.tensor(index)
    texts = SENTENCES[: len(index)]
    with torch.inference_mode():
        output = shared(model, frames, pad_mask, sizes, texts, clip_index)
        padded = shared(model, frames, pad_mask, sizes, texts, clip_index, pool_text_padding=True)
        assert_outputs_close(padded, repeated(model, frames, pad_mask, sizes, texts, clip_index))
        for n, (text, clip) in enumerate(zip(texts, index)):  # each sentence alone, a batch of one
            alone = model(frames[:, clip : clip + 1], pad_mask[:, clip : clip + 1], [text], sizes[clip : clip + 1])
            for name in ("pred_masks", "pred_cls", "pred_boxes"):
                assert_close(getattr(output, name)[:, n : n + 1], getattr(alone, name), name)


@pytest.mark.parametrize("switches", ["defaults", "reference"])
def test_shared_equals_per_sentence_with_valid_frames(switches):
    """A2D/JHMDB: only the annotated frame of each clip continues after the backbone."""
    model = tiny_model(**SWITCHES[switches]).eval()
    T, B = 3, 2
    frames, pad_mask, sizes = clips(T, B)
    valid = torch.tensor([2, 1 * T + 0])  # clip 0 frame 2, clip 1 frame 0
    clip_index = torch.tensor([0, 1, 0, 1])
    with torch.inference_mode():
        output = shared(model, frames, pad_mask, sizes, SENTENCES, clip_index, valid)
        expected = repeated(model, frames, pad_mask, sizes, SENTENCES, clip_index, valid)
        padded = shared(model, frames, pad_mask, sizes, SENTENCES, clip_index, valid, pool_text_padding=True)
    assert output.pred_masks.shape[0] == 1
    assert_outputs_close(padded, expected)
    if switches == "defaults":  # masked pooling: the text padding never counts
        assert_outputs_close(output, expected)


@pytest.mark.parametrize("switches", list(SWITCHES), ids=list(SWITCHES))
@pytest.mark.parametrize("T,B,index", [(3, 1, [0, 0, 0]), (3, 2, [1, 0, 1, 1])])
def test_shared_equals_repeated_batch_in_train_mode_with_gradients(switches, T, B, index):
    """Training: SEP's BatchNorm normalises over the sentences of the batch, so the shared path equals
    ``forward`` on the same batch composition (the clip repeated per sentence); gradients agree too."""
    model = tiny_model(**SWITCHES[switches]).train()
    frames, pad_mask, sizes = clips(T, B)
    clip_index = torch.tensor(index)
    texts = SENTENCES[: len(index)]

    def loss_and_grads(run, **keywords):
        model.zero_grad(set_to_none=True)
        output = run(model, frames, pad_mask, sizes, texts, clip_index, **keywords)
        loss = sum(
            o.pred_masks.sigmoid().mean() + o.pred_cls.mean() + o.pred_boxes.mean() + o.video_queries.mean()
            for o in layers(output)
        )
        loss = loss + output.text_sentence_feature.mean()
        loss.backward()
        grads = {name: p.grad.clone() for name, p in model.named_parameters() if p.grad is not None}
        return output, grads

    output, grads = loss_and_grads(shared, pool_text_padding=True)
    expected, expected_grads = loss_and_grads(repeated)
    assert_outputs_close(output, expected)
    assert grads.keys() == expected_grads.keys() and len(grads) > 100
    # Per parameter, the error norm against the gradient's norm; gradients that are numerically zero
    # (a conv bias before GroupNorm, the first decoder self-attention) are rounding noise throughout.
    floor = 1e-6 * max(float(g.abs().max()) for g in expected_grads.values())
    for name, grad in grads.items():
        error = float((grad - expected_grads[name]).norm())
        assert error <= 2e-3 * float(expected_grads[name].norm()) + floor, (name, error)


def count_backbone_runs(model):
    """A forward hook recording the input shape of every backbone call."""
    calls = []
    model.backbone.register_forward_hook(lambda module, inputs, output: calls.append(tuple(inputs[0].shape)))
    return calls


def test_four_sentences_run_the_backbone_once_on_one_clip():
    model = tiny_model().eval()
    calls = count_backbone_runs(model)
    frames, pad_mask, sizes = clips(3, 1)
    with torch.inference_mode():
        output = shared(model, frames, pad_mask, sizes, SENTENCES, torch.zeros(4, dtype=torch.long))
    assert calls == [(1, 3, 3, 37, 53)]  # [B, T, 3, H, W]: one clip
    assert output.pred_masks.shape[:2] == (3, 4)


def test_segment_rejects_mismatched_sentences_clips_and_sizes():
    model = tiny_model().eval()
    frames, pad_mask, sizes = clips(1, 2)
    with torch.inference_mode():
        visual = model.encode_video(frames, pad_mask)
        sentences = model.encode_sentences(SENTENCES[:3], frames.device)
        with pytest.raises(ValueError, match="3 sentences but 2 clips"):
            model.segment(visual, sentences, sizes)
        with pytest.raises(ValueError, match=r"clip_index must lie in \[0, 2\)"):
            model.segment(visual, sentences, sizes[[0, 1, 1]], torch.tensor([0, 2, 1]))
        with pytest.raises(ValueError, match="image_sizes must be"):
            model.segment(visual, sentences, sizes, torch.tensor([0, 1, 1]))
        with pytest.raises(ValueError, match="valid_indices must select one frame per clip"):
            model.encode_video(frames, pad_mask, torch.tensor([0]))
