"""SEP against a naive per-sample computation (docs/architecture.md#sep), and its pooling modes."""

import pytest
import torch

from wavecl.model.sep import SemanticEntityPerception

TEXT_DIM, D_MODEL = 12, 8


def _naive_sep(
    sep: SemanticEntityPerception,
    visual: torch.Tensor,
    visual_pad: torch.Tensor,
    words: torch.Tensor,
    text_pad: torch.Tensor,
    masked: bool,
) -> torch.Tensor:
    """Every step of SEP one sample, channel and pixel at a time (dropout must be off)."""
    vlp = sep.vlp
    batch = words.shape[0]
    contexts = []
    for b in range(batch):
        v_tokens = visual[:, b][~visual_pad[b]] if masked else visual[:, b]
        e_tokens = words[b][~text_pad[b]] if masked else words[b]
        v = v_tokens.mean(dim=0) + v_tokens.max(dim=0).values
        u = e_tokens.mean(dim=0) + e_tokens.max(dim=0).values
        contexts.append(torch.stack([v[c] * u for c in range(D_MODEL)]))
    contexts = torch.stack(contexts)  # [B, C, D]
    bn = vlp.bn_s_w
    if sep.training:
        mean = contexts.mean(dim=(0, 2))
        var = contexts.var(dim=(0, 2), unbiased=False)
    else:
        mean, var = bn.running_mean, bn.running_var
    out = torch.empty(words.shape[1], batch, D_MODEL, dtype=words.dtype)
    kernel, kernel_bias = vlp.conv_t_w.weight[0, 0], vlp.conv_t_w.bias[0]
    for b in range(batch):
        normed = torch.empty(D_MODEL, TEXT_DIM, dtype=words.dtype)
        for c in range(D_MODEL):
            normed[c] = (contexts[b, c] - mean[c]) / torch.sqrt(var[c] + bn.eps) * bn.weight[c] + bn.bias[c]
        activated = normed.clamp(min=0)
        gate = torch.empty_like(activated)
        for row in range(D_MODEL):
            for col in range(TEXT_DIM):
                total = kernel_bias.clone()
                for dy in (-1, 0, 1):
                    for dx in (-1, 0, 1):
                        r, c = row + dy, col + dx
                        if 0 <= r < D_MODEL and 0 <= c < TEXT_DIM:
                            total = total + kernel[dy + 1, dx + 1] * activated[r, c]
                gate[row, col] = torch.sigmoid(total)
        weight = gate * vlp.weight
        for s in range(words.shape[1]):
            y = weight @ words[b, s] + vlp.bias
            y = (y - y.mean()) / torch.sqrt(y.var(unbiased=False) + 1e-12)
            out[s, b] = y * sep.layer_norm.weight + sep.layer_norm.bias
    return out


def _inputs(batch: int = 3, tokens: int = 10, words: int = 6):
    torch.manual_seed(0)
    visual = torch.randn(tokens, batch, D_MODEL, dtype=torch.float64)
    visual_pad = torch.zeros(batch, tokens, dtype=torch.bool)
    visual_pad[1, 7:] = True
    visual_pad[2, 4:] = True
    text = torch.randn(batch, words, TEXT_DIM, dtype=torch.float64)
    text_pad = torch.zeros(batch, words, dtype=torch.bool)
    text_pad[0, 3:] = True
    text_pad[2, 5:] = True
    return visual, visual_pad, text, text_pad


def _sep(pooling: str) -> SemanticEntityPerception:
    torch.manual_seed(1)
    sep = SemanticEntityPerception(TEXT_DIM, D_MODEL, dropout=0.0, pooling=pooling).double()
    for tensor in (sep.vlp.bn_s_w.weight, sep.vlp.bn_s_w.bias, sep.layer_norm.weight, sep.layer_norm.bias):
        torch.nn.init.normal_(tensor)
    return sep


@pytest.mark.parametrize("pooling", ["masked", "reference"])
@pytest.mark.parametrize("training", [True, False])
def test_matches_naive_per_sample_computation(pooling: str, training: bool) -> None:
    sep = _sep(pooling)
    if not training:
        sep.vlp.bn_s_w.running_mean.normal_()
        sep.vlp.bn_s_w.running_var.uniform_(0.5, 2.0)
    sep.train(training)
    inputs = _inputs()
    expected = _naive_sep(sep, *inputs, masked=pooling == "masked")
    torch.testing.assert_close(sep(*inputs), expected)


def test_masked_pooling_ignores_extra_padding() -> None:
    sep = _sep("masked").eval()
    visual, visual_pad, text, text_pad = _inputs()
    reference_output = sep(visual, visual_pad, text, text_pad)
    more_visual = torch.cat([visual, 100 * torch.randn(4, 3, D_MODEL, dtype=torch.float64)])
    more_visual_pad = torch.cat([visual_pad, torch.ones(3, 4, dtype=torch.bool)], dim=1)
    more_text = torch.cat([text, 100 * torch.randn(3, 2, TEXT_DIM, dtype=torch.float64)], dim=1)
    more_text_pad = torch.cat([text_pad, torch.ones(3, 2, dtype=torch.bool)], dim=1)
    padded_output = sep(more_visual, more_visual_pad, more_text, more_text_pad)
    torch.testing.assert_close(padded_output[:6], reference_output)


def test_reference_pooling_differs_only_when_padding_exists() -> None:
    masked, reference = _sep("masked").eval(), _sep("reference").eval()
    inputs = _inputs()
    assert not torch.allclose(masked(*inputs), reference(*inputs))
    visual, visual_pad, text, text_pad = inputs
    no_pad = (visual, torch.zeros_like(visual_pad), text, torch.zeros_like(text_pad))
    torch.testing.assert_close(masked(*no_pad), reference(*no_pad))


def test_parameters_match_the_reference_checkpoint_layout() -> None:
    sep = SemanticEntityPerception()
    shapes = {name: tuple(t.shape) for name, t in sep.state_dict().items()}
    assert shapes == {
        "vlp.weight": (256, 768),
        "vlp.bias": (256,),
        "vlp.bn_s_w.weight": (256,),
        "vlp.bn_s_w.bias": (256,),
        "vlp.bn_s_w.running_mean": (256,),
        "vlp.bn_s_w.running_var": (256,),
        "vlp.bn_s_w.num_batches_tracked": (),
        "vlp.conv_t_w.weight": (1, 1, 3, 3),
        "vlp.conv_t_w.bias": (1,),
        "layer_norm.weight": (256,),
        "layer_norm.bias": (256,),
    }
    # docs/architecture.md#parameter-counts counts parameters only (the BatchNorm buffers are not included).
    assert sum(p.numel() for p in sep.parameters()) == 197_898
    bound = 1 / 768**0.5
    assert sep.vlp.bias.abs().max() <= bound
    assert sep.vlp.weight.abs().max() <= bound  # kaiming_uniform(a=√5) on fan-in 768


def test_output_shape_and_gradients() -> None:
    sep = SemanticEntityPerception(TEXT_DIM, D_MODEL)
    visual, visual_pad, text, text_pad = (t.float() if t.is_floating_point() else t for t in _inputs())
    out = sep(visual, visual_pad, text, text_pad)
    assert out.shape == (6, 3, D_MODEL)
    (out * torch.randn_like(out)).sum().backward()
    assert all(p.grad is not None and p.grad.abs().sum() > 1e-6 for p in sep.parameters())


def test_bad_masks_are_rejected() -> None:
    visual, visual_pad, text, text_pad = _inputs()
    with pytest.raises(ValueError, match="SEP masks"):
        _sep("masked")(visual, visual_pad[:, :5], text, text_pad)
