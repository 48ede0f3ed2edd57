"""What the benchmarks measure with: the machine's matmul ceiling, timing, and FLOP counting.

A benchmark reports its achieved GFLOP/s as a share of what one large square matmul reaches right then
on the same device, threads and dtype: on a machine shared with other work both slow down together,
so the share stays comparable between runs. The matmul is ``2048 x 2048`` on the CPU and
``8192 x 8192`` on a GPU (a 2048 matmul is too short to keep a large GPU busy), in the dtype of the
workload's matmuls: float32, or bfloat16 / float16 under autocast.
"""

from __future__ import annotations

import time
from collections.abc import Callable

AMP_DTYPES = {"off": "float32", "bf16": "bfloat16", "fp16": "float16"}
"""The dtype of the workload's matmuls for each ``--amp`` value (torch attribute names)."""


def ceiling_size(device_type: str) -> int:
    """Side of the square matmul: 2048 on the CPU (``"cpu"``), 8192 on a GPU (``"cuda"``)."""
    return 8192 if device_type == "cuda" else 2048


def describe_ceiling(device_type: str, amp: str) -> str:
    """``"2048x2048 float32 matmul"``: what the ceiling on ``device_type`` under ``amp`` multiplies."""
    size = ceiling_size(device_type)
    return f"{size}x{size} {AMP_DTYPES[amp]} matmul"


def synchronize(device) -> None:
    """Wait for the GPU's queued work (nothing to wait for on the CPU)."""
    import torch

    if device.type == "cuda":
        torch.cuda.synchronize(device)


def timed(function: Callable[[], None]) -> tuple[float, float]:
    """Run ``function()`` and return its wall-clock and process CPU seconds."""
    wall, cpu = time.perf_counter(), time.process_time()
    function()
    return time.perf_counter() - wall, time.process_time() - cpu


def matmul_gflops(device, amp: str = "off", repeats: int = 5) -> list[tuple[float, float]]:
    """``(wall, CPU)`` GFLOP/s of each of ``repeats`` timed square matmuls (after one untimed), on ``device``
    in the dtype of ``amp`` (:data:`AMP_DTYPES`), by :func:`wavecl.model.linear.linear` without autograd:
    the kernel the network's linear layers run in inference (oneDNN's in float32 on the CPU, faster there
    than the MKL sgemm of ``torch.mm``)."""
    import torch

    from wavecl.model.linear import linear

    size = ceiling_size(device.type)
    dtype = getattr(torch, AMP_DTYPES[amp])
    a, b = (torch.randn(size, size, device=device, dtype=dtype) for _ in range(2))

    def multiply() -> None:
        with torch.no_grad():
            linear(a, b)
        synchronize(device)

    multiply()
    return [tuple(2 * size**3 / seconds / 1e9 for seconds in timed(multiply)) for _ in range(repeats)]


def register_flop_formulas() -> None:
    """Correct and complete ``FlopCounterMode``'s formulas; call it before counting any FLOPs.

    - The CPU fused attention kernel is counted with torch's scaled-dot-product formulas (torch counts
      only the CUDA kernels).
    - A convolution's backward is counted as one forward's FLOPs per gradient asked for: every product
      ``x * w`` of the forward has exactly one counterpart ``grad_out * w`` in the input gradient and
      one ``grad_out * x`` in the weight gradient, whatever the stride, padding or groups. torch's own
      formula counts the weight gradient of a convolution with ``groups = g`` as ``g`` times too large
      (WIP's depthwise convolution has ``g`` = its channels).
    """
    import torch
    from torch.utils import flop_counter

    ops = torch.ops.aten
    forward_op = ops._scaled_dot_product_flash_attention_for_cpu
    backward_op = ops._scaled_dot_product_flash_attention_for_cpu_backward
    if forward_op in flop_counter.flop_registry:
        return

    @flop_counter.register_flop_formula(forward_op, get_raw=True)
    def _forward(query, key, value, *args, out_val=None, **kwargs) -> int:
        return flop_counter.sdpa_flop_count(query.shape, key.shape, value.shape)

    @flop_counter.register_flop_formula(backward_op, get_raw=True)
    def _backward(grad_out, query, key, value, *args, out_val=None, **kwargs) -> int:
        return flop_counter.sdpa_backward_flop_count(grad_out.shape, query.shape, key.shape, value.shape)

    def convolution_backward(grad_out_shape, x_shape, w_shape, *args, out_shape=None) -> int:
        # args: bias_sizes, stride, padding, dilation, transposed, output_padding, groups, output_mask
        transposed, output_mask = args[4], args[7]
        forward = flop_counter.conv_flop_count(x_shape, w_shape, grad_out_shape, transposed=transposed)
        return forward * (int(output_mask[0]) + int(output_mask[1]))

    flop_counter.flop_registry[ops.convolution_backward] = flop_counter.shape_wrapper(convolution_backward)


def start_table_benchmark(threads: int | None, device_name: str, console_width: int):
    """The common start of an in-process benchmark that prints a rich table: pin torch's intra-op
    ``threads`` (when given), register the FLOP formulas, and measure the float32 matmul ceiling.

    Returns:
        ``(device, console, ceiling)``: the ``torch.device``, a ``rich`` console (``console_width``
        columns when the output is not a terminal) and the best wall-clock GFLOP/s of 5 matmuls.
    """
    import torch
    from rich.console import Console

    if threads:
        torch.set_num_threads(threads)
    device = torch.device(device_name)
    console = Console()
    if not console.is_terminal:
        console.width = console_width
    register_flop_formulas()
    return device, console, max(wall for wall, _ in matmul_gflops(device))
