"""Linear layers whose inference on the CPU runs oneDNN's matmul, in float32 and under bfloat16 autocast.

PyTorch computes a float32 :func:`~torch.nn.functional.linear` on the CPU with MKL's sgemm, and bfloat16
ones (and every convolution) with oneDNN. oneDNN's float32 matmul, which PyTorch exposes as the operator
``mkldnn::_linear_pointwise`` (the one its compiler emits for fused linear layers), is faster at this
network's shapes: on one thread of the development machine (AVX-512), in GFLOP/s, MKL against oneDNN:

============================  =====  ======
``[M, K] x [K, N]``           MKL    oneDNN
============================  =====  ======
5100 x 256 x 2048 (encoder)   71     80
5100 x 2048 x 256 (encoder)   93     110
960 x 384 x 1536 (backbone)   95     108
2048 x 2048 x 2048            96     109
============================  =====  ======

and the eval forward of the A2D network at 4x192x320 took 1.35 s instead of 1.45 s. The two differ in
rounding only (float32 summation order). The ReLU of a feed-forward layer is fused into its first matmul.

oneDNN is used where nothing else needs the plain operator: float32 on the CPU, no autograd (eval under
``no_grad`` or ``inference_mode``), no autocast (which casts ``F.linear``'s inputs, not this operator's),
not while ``torch.compile`` or ``torch.export`` traces (the compiler picks its own kernels, the export
needs the standard operator), and only when the operator exists and agrees with ``F.linear`` on a probe
(:func:`onednn_available`).

Under CPU bfloat16 autocast without autograd, :func:`linear` computes with this operator on bfloat16
operands too, where autocast would run ``aten::addmm``: at ``[5100, 256] x [256, 2048]`` (the encoder's
feed-forward) it runs 210 GFLOP/s against 184 (one thread), and the feed-forward ReLU is fused. Autocast
also casts every float32 weight to bfloat16 on every call: the A2D network's 129 M linear parameters, 86 M
of them the text encoder's, take 42 ms per forward. Inside a :class:`Bfloat16Weights` store, entered where
the weights are constant (a predictor, an evaluation), each weight is cast once, and kept in oneDNN's
blocked layout. The bfloat16 eval forward at 4x192x320 took 0.95 and 0.97 s with oneDNN against 1.05 s
with autocast's ``addmm`` (refbench's timing, medians of 4), and 4 % less again in a store (0.93 against
0.98 s, 0.98 against 1.02 s: medians of 6 alternating forwards). Everywhere else :func:`linear`
is ``F.linear``.
"""

from __future__ import annotations

import contextvars
import functools
from types import TracebackType

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.utils.weak import WeakIdKeyDictionary

_ENTERED_STORES: contextvars.ContextVar[tuple[Bfloat16Weights, ...]] = contextvars.ContextVar(
    "wavecl_bfloat16_weights", default=()
)
"""The :class:`Bfloat16Weights` stores this thread or task is inside, innermost last. Each context holds
its own tuple, so threads (``serve``) that enter one predictor's store at once leave it in any order."""


@functools.cache
def onednn_available(dtype: torch.dtype) -> bool:
    """Whether this PyTorch build has oneDNN's linear operator and it computes ``F.linear`` on a probe, in
    ``dtype`` with a fused ReLU: float32 with a plain weight, bfloat16 with a plain weight and one in
    oneDNN's blocked layout (``mkldnn::_reorder_linear_weight``, as :meth:`Bfloat16Weights.copy` keeps it)."""
    if not torch.backends.mkldnn.is_available() or not hasattr(torch.ops.mkldnn, "_linear_pointwise"):
        return False
    generator = torch.Generator().manual_seed(0)
    x, weight, bias = (torch.randn(shape, generator=generator).to(dtype) for shape in ((5, 3), (4, 3), (4,)))
    with torch.inference_mode(), torch.autocast("cpu", enabled=False):
        expected = F.relu(F.linear(x.float(), weight.float(), bias.float()))
        try:
            weights = [weight]
            if dtype == torch.bfloat16:
                weights.append(torch.ops.mkldnn._reorder_linear_weight(weight))
            fused = [torch.ops.mkldnn._linear_pointwise(x, w, bias, "relu", [], "").float() for w in weights]
        except RuntimeError:
            return False
    tolerance = 1e-5 if dtype == torch.float32 else 2**-7
    return all(torch.allclose(output, expected, rtol=tolerance, atol=tolerance) for output in fused)


def onednn_dtype(input: Tensor, weight: Tensor, bias: Tensor | None) -> torch.dtype | None:
    """The dtype in which :func:`linear` computes these operands with oneDNN (module docstring), ``None``
    for ``F.linear``: on the CPU, float32 parameters, an input of at least two axes, no autograd, not
    compiling; then float32 for a float32 input without autocast, bfloat16 for a float32 or bfloat16
    input under bfloat16 autocast; and where :func:`onednn_available` in that dtype."""
    parameters = (weight,) if bias is None else (weight, bias)
    if (
        input.device.type != "cpu"
        or input.dim() < 2
        or any(tensor.dtype != torch.float32 for tensor in parameters)
        or (torch.is_grad_enabled() and any(tensor.requires_grad for tensor in (input, *parameters)))
        or torch.compiler.is_compiling()
    ):
        return None
    if not torch.is_autocast_enabled("cpu"):
        dtype = torch.float32 if input.dtype == torch.float32 else None
    elif torch.get_autocast_dtype("cpu") == torch.bfloat16 and input.dtype in (torch.float32, torch.bfloat16):
        dtype = torch.bfloat16
    else:
        dtype = None
    return dtype if dtype is not None and onednn_available(dtype) else None


class Bfloat16Weights:
    """A store of bfloat16 copies of weights, for blocks in which the weights are constant.

    Within ``with store:``, :func:`linear` on bfloat16 operands (:func:`onednn_dtype`) takes the
    weight and bias from :meth:`copy` instead of casting them on every call. The store keeps its copies
    between entries (a predictor enters its own for every window of every video) until the store or the
    weight is freed. A weight is copied again when its version counter or its data pointer moves (an
    optimizer step, ``load_state_dict``, a new ``.data``); a change that moves neither (an in-place write
    through ``.data``, a fused optimizer step) is not seen, hence the store is entered only where nothing
    trains. Entries nest; the innermost store serves, in the thread or task that entered it. The copies
    hold half the weights' memory again.
    """

    def __init__(self) -> None:
        self.copies: WeakIdKeyDictionary = WeakIdKeyDictionary()

    def __enter__(self) -> Bfloat16Weights:
        _ENTERED_STORES.set((*_ENTERED_STORES.get(), self))
        return self

    def __exit__(
        self, kind: type[BaseException] | None, error: BaseException | None, traceback: TracebackType | None
    ) -> None:
        _ENTERED_STORES.set(_ENTERED_STORES.get()[:-1])

    def copy(self, tensor: Tensor) -> Tensor:
        """``tensor`` (float32) in bfloat16, made once while it stays unchanged. An inference tensor (which
        has no version counter) and a view (a new object on every call, e.g. a chunk of a packed
        projection) are cast on every call instead.

        A matrix is kept in oneDNN's blocked layout: only ``mkldnn::_linear_pointwise`` reads it, and it
        does so faster than a plain weight (one thread, GFLOP/s, plain then blocked: 121 / 163 at
        ``[11, 768] x [768, 768]``, the text encoder with one sentence; 215 / 222 at
        ``[5100, 768] x [768, 768]``; the layout does not depend on the number of rows).
        """
        if tensor.is_inference() or tensor._base is not None:
            return tensor.to(torch.bfloat16)
        stamp = (tensor._version, tensor.data_ptr())
        kept = self.copies.get(tensor)
        if kept is None or kept[0] != stamp:
            copy = tensor.detach().to(torch.bfloat16)
            kept = (stamp, torch.ops.mkldnn._reorder_linear_weight(copy) if copy.dim() == 2 else copy)
            self.copies[tensor] = kept
        return kept[1]


def _to_bfloat16(tensor: Tensor) -> Tensor:
    return tensor.to(torch.bfloat16)


def linear(input: Tensor, weight: Tensor, bias: Tensor | None = None, relu: bool = False) -> Tensor:
    """``F.linear(input, weight, bias)``, then a ReLU if ``relu``; through oneDNN where :func:`onednn_dtype` says
    (in bfloat16 with an entered :class:`Bfloat16Weights` store's copies).

    Args:
        input: ``[..., C_in]``.
        weight: ``[C_out, C_in]``.
        bias: ``[C_out]`` or ``None``.
        relu: apply a ReLU to the output: fused into oneDNN's matmul, or in place on the plain path, which
            saves allocating a second output (0.2 s of 1.35 s per encoder feed-forward at 8x360x640 on one
            CPU thread; the product's backward does not need its output).

    Returns:
        ``[..., C_out]``, the 2-D product of the input flattened to ``[-1, C_in]``, viewed back. Flattened,
        the plain product is not a view, on which an in-place ReLU would make autograd rebuild the whole
        base in the backward pass (a zero fill and a copy, ``CopySlices``: 0.5 s of a 30 s training step at
        8x256x448); and the ONNX export writes it as one ``Gemm`` that adds the bias as it writes, not
        ``MatMul`` then ``Add``, a second pass over the output (130 ms of the video part's 5.2 s in ONNX
        Runtime at 8x320x576, one thread).
    """
    flat = input.reshape(-1, input.shape[-1])
    dtype = onednn_dtype(input, weight, bias)
    if dtype is None:
        output = F.linear(flat, weight, bias)
        if relu:
            output = F.relu(output, inplace=True)
    else:
        if dtype == torch.bfloat16:
            stores = _ENTERED_STORES.get()
            cast = stores[-1].copy if stores else _to_bfloat16
            flat, weight, bias = flat.to(torch.bfloat16), cast(weight), None if bias is None else cast(bias)
        output = torch.ops.mkldnn._linear_pointwise(flat, weight, bias, "relu" if relu else "none", [], "")
    return output.view(*input.shape[:-1], weight.shape[0])


def relu_feed_forward(x: Tensor, linear1: nn.Linear, dropout: nn.Module, linear2: nn.Linear) -> Tensor:
    """``linear2(dropout(relu(linear1(x))))`` over the last dimension of ``x [..., C]`` → ``[..., C_out]``,
    with the ReLU fused or in place (:func:`linear`)."""
    return linear2(dropout(linear(x, linear1.weight, linear1.bias, relu=True)))


class Linear(nn.Linear):
    """:class:`torch.nn.Linear` computed by :func:`linear` (same parameters, same state-dict keys)."""

    def forward(self, input: Tensor) -> Tensor:
        """``[..., in_features]`` → ``[..., out_features]``."""
        return linear(input, self.weight, self.bias)


def onednn_linears(model: nn.Module) -> nn.Module:
    """Replace every :class:`torch.nn.Linear` in ``model`` (torchvision's and Hugging Face's included) by a
    :class:`Linear` holding the same parameter objects, so that optimizers, checkpoints and hooks on the
    parameters see no difference. Returns ``model``, changed in place."""
    for parent in list(model.modules()):
        for name, child in list(parent.named_children()):
            if type(child) is nn.Linear:
                replacement = Linear(child.in_features, child.out_features, bias=child.bias is not None, device="meta")
                replacement.weight = child.weight
                replacement.bias = child.bias
                replacement.train(child.training)
                setattr(parent, name, replacement)
    return model
