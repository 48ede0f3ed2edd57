"""Linear layers whose float32 inference on the CPU runs oneDNN's matmul instead of MKL's sgemm.

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
(:func:`onednn_available`); everywhere else :func:`linear` is ``F.linear``.
"""

from __future__ import annotations

import functools

import torch
import torch.nn.functional as F
from torch import Tensor, nn


@functools.cache
def onednn_available() -> bool:
    """Whether this PyTorch build has oneDNN's linear operator and it computes ``F.linear`` on a probe."""
    if not torch.backends.mkldnn.is_available() or not hasattr(torch.ops.mkldnn, "_linear_pointwise"):
        return False
    generator = torch.Generator().manual_seed(0)
    x, weight, bias = (torch.randn(shape, generator=generator) for shape in ((5, 3), (4, 3), (4,)))
    try:
        with torch.inference_mode():
            fused = torch.ops.mkldnn._linear_pointwise(x, weight, bias, "relu", [], "")
    except RuntimeError:
        return False
    return torch.allclose(fused, F.relu(F.linear(x, weight, bias)), rtol=1e-5, atol=1e-6)


def takes_onednn(input: Tensor, weight: Tensor, bias: Tensor | None) -> bool:
    """Whether :func:`linear` computes these operands with oneDNN (the conditions of the module docstring)."""
    tensors = (input, weight) if bias is None else (input, weight, bias)
    return (
        input.device.type == "cpu"
        and all(tensor.dtype == torch.float32 for tensor in tensors)
        and input.dim() >= 2
        and not (torch.is_grad_enabled() and any(tensor.requires_grad for tensor in tensors))
        and not torch.is_autocast_enabled("cpu")
        and not torch.compiler.is_compiling()
        and onednn_available()
    )


def linear(input: Tensor, weight: Tensor, bias: Tensor | None = None, relu: bool = False) -> Tensor:
    """``F.linear(input, weight, bias)``, then a ReLU if ``relu``; through oneDNN where :func:`takes_onednn`.

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
    if takes_onednn(input, weight, bias):
        output = torch.ops.mkldnn._linear_pointwise(flat, weight, bias, "relu" if relu else "none", [], "")
    else:
        output = F.linear(flat, weight, bias)
        if relu:
            output = F.relu(output, inplace=True)
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
