"""oneDNN linear layers (:mod:`wavecl.model.linear`) against ``F.linear``, and where they are not used."""

from __future__ import annotations

import gc
import platform
import sys
import threading
import weakref

import pytest
import torch
import torch.nn.functional as F
from support import make_inputs, perturbed_model
from torch import Tensor, nn

import wavecl.model.linear as linear_module
from wavecl.model.linear import Bfloat16Weights, Linear, linear, onednn_available, onednn_linears

pytestmark = pytest.mark.usefixtures("single_thread")


@pytest.fixture
def onednn_calls(monkeypatch):
    """Count the calls of oneDNN's linear operator (which still computes)."""
    if not onednn_available(torch.float32):
        # PyTorch's x86-64 Linux wheels (CI's) carry oneDNN: there the path must be taken, not skipped
        assert not (sys.platform == "linux" and platform.machine() == "x86_64"), "oneDNN's linear is missing"
        pytest.skip("this PyTorch build has no oneDNN linear operator: linear() is F.linear everywhere")
    assert onednn_available(torch.bfloat16)  # probed (and cached) before the count starts
    operator = torch.ops.mkldnn._linear_pointwise
    calls = []

    def counted(*args):
        calls.append(args[3])
        return operator(*args)

    monkeypatch.setattr(torch.ops.mkldnn, "_linear_pointwise", counted)
    return calls


def operands(*input_shape: int, bias: bool = True):
    generator = torch.Generator().manual_seed(0)
    weight = torch.randn(24, input_shape[-1], generator=generator)
    return (
        torch.randn(*input_shape, generator=generator),
        weight,
        torch.randn(24, generator=generator) if bias else None,
    )


@pytest.mark.parametrize("bias", [True, False])
@pytest.mark.parametrize("relu", [False, True])
def test_onednn_equals_f_linear(onednn_calls, bias, relu):
    """2-D, 4-D and non-contiguous inputs: F.linear's values (then ReLU) in float32 rounding."""
    x, weight, b = operands(6, 5, 7, 16, bias=bias)
    for input in (x[0, 0], x, x.transpose(1, 2)):
        with torch.inference_mode():
            expected = F.linear(input.double(), weight.double(), None if b is None else b.double())
            actual = linear(input, weight, b, relu=relu)
        expected = expected.relu() if relu else expected
        assert actual.shape == (*input.shape[:-1], 24) and actual.dtype == torch.float32
        torch.testing.assert_close(actual.double(), expected, rtol=1e-5, atol=1e-5)
    assert onednn_calls == ["relu" if relu else "none"] * 3


def test_plain_where_autograd_autocast_float64_or_one_axis(onednn_calls):
    x, weight, bias = operands(10, 16)
    weight.requires_grad_(True)
    output = linear(x, weight, bias)  # autograd records: the plain operator, differentiable
    output.sum().backward()
    torch.testing.assert_close(weight.grad, x.sum(0).expand(24, -1))
    with torch.autocast("cpu", dtype=torch.bfloat16):
        assert linear(x, weight, bias).dtype == torch.bfloat16  # autocast casts F.linear's inputs
    with torch.no_grad():
        assert linear(x.double(), weight.double(), bias.double()).dtype == torch.float64
        linear(x[0], weight, bias)
    assert onednn_calls == []
    with torch.no_grad():
        linear(x, weight, bias)
    assert onednn_calls == ["none"]


@pytest.mark.parametrize("shape", [(10, 16), (2, 5, 16)])
def test_relu_in_place_on_the_plain_path_keeps_gradients(shape):
    x, weight, bias = operands(*shape)
    x.requires_grad_(True)
    output = linear(x, weight, bias, relu=True)
    assert output.shape == (*shape[:-1], 24)
    output.sum().backward()
    expected = (F.linear(x.detach(), weight, bias) > 0).float() @ weight
    torch.testing.assert_close(x.grad, expected)


def test_onednn_linears_keeps_parameters_keys_and_values(onednn_calls):
    model = nn.Sequential(nn.Linear(16, 32), nn.ReLU(), nn.Sequential(nn.Linear(32, 8, bias=False)))
    keys, parameters = list(model.state_dict()), list(model.parameters())
    x = torch.randn(3, 16)
    with torch.no_grad():
        expected = model(x)
        assert onednn_linears(model) is model
        actual = model(x)
    assert [type(layer) for layer in (model[0], model[2][0])] == [Linear, Linear]
    assert list(model.state_dict()) == keys
    assert all(new is old for new, old in zip(model.parameters(), parameters, strict=True))
    torch.testing.assert_close(actual, expected, rtol=1e-5, atol=1e-6)
    assert onednn_calls == ["none", "none"]


def test_every_linear_of_the_network_is_replaced(tiny_config, onednn_calls):
    """The backbone's torchvision MLPs and the text encoder's layers too; and the eval forward's values
    are those of the plain operator."""
    model = perturbed_model(tiny_config).eval().float()
    assert not [name for name, module in model.named_modules() if type(module) is nn.Linear]
    assert isinstance(model.text_encoder.encoder.layer[0].intermediate.dense, Linear)
    inputs = make_inputs(2, 2, dtype=torch.float32)
    with torch.no_grad():
        fast = model(*inputs)
        assert len(onednn_calls) > 50
        with pytest.MonkeyPatch.context() as patch:
            patch.setattr(linear_module, "onednn_dtype", lambda *operands: None)
            plain = model(*inputs)
    for name in ("pred_masks", "pred_cls", "pred_boxes"):
        expected, actual = getattr(plain, name), getattr(fast, name)
        assert (actual - expected).abs().max() <= 1e-4 * expected.abs().max(), name


def bfloat16_product(input: Tensor, weight: Tensor, bias: Tensor | None) -> Tensor:
    """The float64 product of the operands rounded to bfloat16, what a bfloat16 linear layer approximates."""
    rounded = (tensor.bfloat16().double() for tensor in (input, weight))
    return F.linear(*rounded, None if bias is None else bias.bfloat16().double())


@pytest.mark.parametrize("relu", [False, True])
def test_bfloat16_under_autocast_cast_per_call_or_kept(onednn_calls, relu):
    """oneDNN on bfloat16 operands: outside a store the weight is cast on the call; inside one it is cast
    once, kept between entries while unchanged, made again after an in-place update or a new ``.data``
    (a view is cast on every call). The values are the bfloat16 product's, rounded to bfloat16 once."""
    x, weight, bias = operands(3, 7, 16)
    weight.requires_grad_(True)  # a parameter; under no_grad no gradient flows into it
    store = Bfloat16Weights()
    for change in (None, lambda: weight.add_(1.0), lambda: setattr(weight, "data", -weight.data)):
        with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16):
            if change is not None:
                change()
            cast = linear(x, weight, bias, relu=relu)
            assert len(store.copies) == (0 if change is None else 2)
            with store:
                kept = linear(x, weight, bias, relu=relu)
                copy = store.copy(weight)
            with store:
                assert store.copy(weight) is copy and store.copy(bias).dtype == torch.bfloat16
        expected = bfloat16_product(x, weight, bias)
        expected = expected.relu() if relu else expected
        for actual in (cast, kept):
            assert actual.dtype == torch.bfloat16 and actual.shape == (3, 7, 24)
            tolerance = {"rtol": 2**-8, "atol": 2**-8 * expected.abs().max().item()}
            torch.testing.assert_close(actual.double(), expected, **tolerance)
    assert copy.is_mkldnn  # oneDNN's blocked layout, read by its operator only
    with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16), store:
        half = linear(x, weight[:12], bias[:12], relu=relu)  # views, new objects on every call: not kept
    assert len(store.copies) == 2
    torch.testing.assert_close(half.double(), expected[..., :12], **tolerance)
    assert onednn_calls == ["relu" if relu else "none"] * 7


def test_bfloat16_f_linear_under_autograd(onednn_calls):
    """Under autocast with autograd recording (into the weight or the input), F.linear: autocast casts,
    autograd differentiates, and a store keeps nothing; a store's copy goes with its weight."""
    x, weight, bias = operands(5, 16)
    store = Bfloat16Weights()
    with store, torch.autocast("cpu", dtype=torch.bfloat16):
        trained = weight.clone().requires_grad_(True)
        linear(x, trained, bias).float().sum().backward()
        x.requires_grad_(True)
        linear(x, weight, bias).float().sum().backward()
    assert onednn_calls == [] and len(store.copies) == 0
    bfloat16_sum = {"rtol": 2**-7, "atol": 2**-7}  # the products are summed in bfloat16
    torch.testing.assert_close(trained.grad, x.detach().bfloat16().float().sum(0).expand(24, -1), **bfloat16_sum)
    torch.testing.assert_close(x.grad, weight.bfloat16().float().sum(0).expand(5, -1), **bfloat16_sum)
    copy = weakref.ref(store.copy(weight))
    del weight
    gc.collect()
    assert copy() is None and len(store.copies) == 0


def test_network_bfloat16_eval(tiny_config, onednn_calls):
    """The tiny network's bfloat16 eval forward computes its linears with oneDNN, with and without a store,
    and has the values of autocast's own ``addmm``."""
    model = perturbed_model(tiny_config).eval().float()
    inputs = make_inputs(2, 2, dtype=torch.float32)
    with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16):
        with pytest.MonkeyPatch.context() as patch:

            def float32_only(*operands, decide=linear_module.onednn_dtype):
                dtype = decide(*operands)
                return None if dtype == torch.bfloat16 else dtype

            patch.setattr(linear_module, "onednn_dtype", float32_only)
            autocast = model(*inputs)
        float32_regions = len(onednn_calls)  # float32 linears inside autocast-disabled blocks
        cast = model(*inputs)
        with Bfloat16Weights() as store:
            kept = model(*inputs)
        assert len(onednn_calls) - 3 * float32_regions > 100 and len(store.copies) > 50
    for name in ("pred_masks", "pred_cls", "pred_boxes"):
        expected = getattr(autocast, name).float()
        tolerance = {"rtol": 2**-7, "atol": 2**-7 * expected.abs().max().item(), "msg": name}
        for actual in (cast, kept):
            torch.testing.assert_close(getattr(actual, name).float(), expected, **tolerance)


def test_stores_nest_and_threads_leave_one_store_in_any_order(onednn_calls):
    """The innermost store serves; two threads inside one store (``serve``'s predictor) leave it in the
    opposite order of entering, each keeping its own nesting."""
    x, weight, bias = operands(4, 16)
    outer, inner, narrow = Bfloat16Weights(), Bfloat16Weights(), weight[:, :8].clone()
    with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16):
        with outer:
            with inner:
                linear(x, weight, bias)
            linear(x[:, :8], narrow, None)
    assert len(inner.copies) == 2 and len(outer.copies) == 1
    entered, left = threading.Barrier(2), threading.Event()
    errors = []

    def worker(first: bool) -> None:
        try:
            with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16), outer:
                entered.wait(timeout=60)
                if not first:
                    left.wait(timeout=60)  # leaves after the other thread has left
                linear(x, weight, bias)
        except Exception as error:  # reported by the assertion below
            errors.append(error)
        finally:
            if first:
                left.set()

    threads = [threading.Thread(target=worker, args=(first,)) for first in (True, False)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == [] and len(outer.copies) == 3
