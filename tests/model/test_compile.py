"""``torch.compile`` of the network: compiled outputs equal eager outputs, each part compiles to one
graph per clip shape, and compilation that is unavailable or fails falls back to eager mode with one
warning line."""

from __future__ import annotations

import dataclasses
import logging

import pytest
import torch
from support import perturbed_model

from wavecl.config import load_config
from wavecl.model.compile import COMPILED_PARTS, compile_model, compile_unavailable
from wavecl.model.wavecl import WaveCL

TINY = "tiny"
TEXTS = ["the red circle on the left", "a small blue square"]
# Tracing is the slow part on a CPU: the default test compiles the parts that trace quickly, with a
# backend that traces (TorchDynamo + AOTAutograd) but generates no code; the slow test runs inductor.
QUICK_PARTS = ("backbone", "voc", "spatial_decoder")


@pytest.fixture(autouse=True)
def fresh_dynamo(single_thread):
    torch._dynamo.reset()
    yield
    torch._dynamo.reset()


def tiny_model() -> WaveCL:
    config = dataclasses.replace(load_config(TINY).model, dropout=0.0, voc_dropout=0.0, text_proj_dropout=0.0)
    return perturbed_model(dataclasses.replace(config, backbone_drop_path=0.0))


def inputs(T=2, B=2, H=37, W=53, dtype=torch.float32):
    generator = torch.Generator().manual_seed(T * H * W)
    frames = torch.randn(T, B, 3, H, W, generator=generator, dtype=dtype)
    pad_mask = torch.zeros(T, B, H, W, dtype=torch.bool)
    pad_mask[:, 1, H - 5 :] = True
    sizes = torch.tensor([[H, W], [H - 5, W]])
    return frames, pad_mask, TEXTS[:B], sizes


def outputs(model, train: bool, **shape):
    """Every prediction of every layer, and in training mode the gradient of a loss over all of them."""
    model.train(train)
    model.zero_grad(set_to_none=True)
    with torch.set_grad_enabled(train):
        output = model(*inputs(**shape, dtype=next(model.parameters()).dtype))
    layers = [output, *output.aux_outputs]
    values = {
        f"{index}.{name}": getattr(layer, name).detach()
        for index, layer in enumerate(layers)
        for name in ("pred_masks", "pred_cls", "pred_boxes", "video_queries")
    }
    if train:
        sum(layer.pred_masks.sigmoid().mean() + layer.pred_boxes.mean() for layer in layers).backward()
        values |= {name: p.grad.clone() for name, p in model.named_parameters() if p.grad is not None}
    return values


def assert_same(actual: dict, expected: dict, tolerance: float = 1e-4) -> None:
    """Equal within ``tolerance`` of each tensor's largest magnitude, or ``10 * tolerance`` relative."""
    assert actual.keys() == expected.keys()
    for name, value in expected.items():
        scale = float(value.abs().max())
        torch.testing.assert_close(
            actual[name], value, atol=tolerance * scale + 1e-3 * tolerance, rtol=10 * tolerance, msg=name
        )


def test_compiled_outputs_equal_eager_outputs(caplog):
    model = tiny_model()
    expected = outputs(model, train=False)
    with caplog.at_level(logging.WARNING, logger="wavecl.model.compile"):
        guards = compile_model(model, backend="aot_eager", parts=QUICK_PARTS)
        actual = outputs(model, train=False)
    assert [guard.active for guard in guards] == [True] * len(QUICK_PARTS)  # no fall-back happened
    assert caplog.records == []
    assert all(isinstance(model.get_submodule(name).forward, type(guards[0])) for name in QUICK_PARTS)
    assert model.state_dict().keys() == tiny_model().state_dict().keys()
    assert_same(actual, expected)


class GraphCounter:
    """A backend that runs the captured graphs as they are and counts them (one per compilation)."""

    def __init__(self) -> None:
        self.graphs = 0

    def __call__(self, graph_module, example_inputs):
        self.graphs += 1
        return graph_module.forward


CLIP_SHAPES = ({"T": 2, "H": 37, "W": 53}, {"T": 3, "H": 48, "W": 64}, {"T": 4, "H": 64, "W": 40})


def test_each_part_compiles_one_graph_per_clip_shape():
    """No graph break (a break splits a call into several graphs) and one compilation per clip shape:
    three shapes give three graphs per part, and a shape seen before compiles nothing."""
    model = tiny_model()
    expected = [outputs(model, train=False, **shape) for shape in CLIP_SHAPES]
    counters = {name: GraphCounter() for name in COMPILED_PARTS}
    for name, counter in counters.items():
        compile_model(model, backend=counter, parts=(name,))
    for shape, eager in zip(CLIP_SHAPES, expected):
        assert_same(outputs(model, train=False, **shape), eager)
    assert_same(outputs(model, train=False, **CLIP_SHAPES[0]), expected[0])
    assert {name: counter.graphs for name, counter in counters.items()} == dict.fromkeys(COMPILED_PARTS, 3)
    assert not torch._dynamo.utils.counters["graph_break"]


@pytest.mark.parametrize("train", [False, True], ids=["eval", "train"])
def test_backbone_traces_without_graph_breaks(train):
    """``torch._dynamo.explain`` of the backbone: its window layouts are graph constants, not traced."""
    model = tiny_model().train(train)
    frames = inputs()[0].transpose(0, 1)  # [B, T, 3, H, W]
    with torch.set_grad_enabled(train):
        explanation = torch._dynamo.explain(model.backbone.forward)(frames)
    assert (explanation.graph_count, explanation.graph_break_count) == (1, 0), explanation.break_reasons


@pytest.mark.slow
@pytest.mark.parametrize(
    ("train", "dtype", "tolerance"),
    [(False, torch.float32, 1e-4), (True, torch.float64, 1e-9)],
    ids=["eval-float32", "train-float64"],
)
def test_inductor_outputs_and_gradients_equal_eager(train, dtype, tolerance):
    """Training in float64: there the compiled deformable attention samples by ``grid_sample`` and the
    eager one by the gather, whose float32 gradients differ in summation order (by 0.3 % of the largest
    gradient of the smallest level's norm biases, whose terms nearly cancel)."""
    model = tiny_model().to(dtype)
    expected = outputs(model, train)
    guards = compile_model(model, backend="inductor")
    actual = outputs(model, train)
    assert [guard.active for guard in guards] == [True] * len(COMPILED_PARTS)
    assert_same(actual, expected, tolerance)


def failing_backend(graph_module, example_inputs):
    raise RuntimeError("no code generator here\nsecond line")


def test_failing_compilation_falls_back_to_eager_with_one_warning(caplog):
    model = tiny_model()
    expected = outputs(model, train=False)
    with caplog.at_level(logging.WARNING, logger="wavecl.model.compile"):
        guards = compile_model(model, backend=failing_backend, parts=("spatial_decoder",))
        actual = outputs(model, train=False)
        again = outputs(model, train=False)
    assert [guard.active for guard in guards] == [False]
    assert len(caplog.records) == 1
    message = caplog.records[0].getMessage()
    assert "torch.compile of spatial_decoder failed" in message and "no code generator here" in message
    assert "\n" not in message and "running it eagerly" in message
    assert_same(actual, expected)
    assert_same(again, expected)


def test_bad_inputs_raise_their_own_error_and_keep_compilation():
    model = tiny_model().eval()
    guards = compile_model(model, backend="eager", parts=("spatial_decoder",))
    with pytest.raises(ValueError, match="expected 3 skip connections"):
        model.spatial_decoder(torch.zeros(1, 128, 2, 2), [])
    assert guards[0].active


def test_unavailable_compilation_warns_once_and_stays_eager(caplog):
    model = tiny_model()
    forwards = {name: model.get_submodule(name).forward for name in COMPILED_PARTS}
    assert compile_unavailable("inductor") is None
    with caplog.at_level(logging.WARNING, logger="wavecl.model.compile"):
        assert compile_model(model, backend="no-such-backend") == []
    assert [record.getMessage() for record in caplog.records] == [
        "torch.compile unavailable (unknown torch.compile backend 'no-such-backend'); running eagerly"
    ]
    assert {name: model.get_submodule(name).forward for name in COMPILED_PARTS} == forwards
    with pytest.raises(AttributeError):
        compile_model(model, parts=("no_such_part",))
