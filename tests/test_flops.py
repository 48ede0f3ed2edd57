"""The FLOP counting of the benchmarks (benchmarks/measure.py) against counts made by hand."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
from measure import register_flop_formulas  # noqa: E402


def training_step_flops(module: nn.Module, x: torch.Tensor) -> int:
    with FlopCounterMode(display=False) as counter:
        module(x).square().sum().backward()
    return counter.get_total_flops()


@pytest.mark.parametrize(
    ("groups", "stride", "input_grad", "transposed"),
    [(8, 1, True, False), (8, 2, False, False), (2, 1, True, False), (1, 1, True, False), (4, 2, True, True)],
)
def test_convolution_training_flops_equal_a_count_by_hand(groups, stride, input_grad, transposed):
    """Forward: 2 x (output positions) x (kernel taps) x (input channels per group) x (output channels) x batch;
    backward: one forward's worth per gradient (the input's, when it requires one, and the weight's)."""
    register_flop_formulas()
    torch.manual_seed(0)
    batch, channels, size, kernel = 2, 8, 9, 3
    layer_class = nn.ConvTranspose2d if transposed else nn.Conv2d
    layer = layer_class(channels, channels, kernel, stride=stride, padding=1, groups=groups)
    x = torch.randn(batch, channels, size, size, requires_grad=input_grad)
    out_size = layer(x).shape[-1]
    # Every product of a transposed convolution pairs one input position with one kernel tap.
    positions = size * size if transposed else out_size * out_size
    forward = 2 * batch * positions * kernel * kernel * (channels // groups) * channels
    assert training_step_flops(layer, x) == forward * (3 if input_grad else 2)


def test_grouped_convolution_counts_as_its_groups_run_one_by_one():
    register_flop_formulas()
    torch.manual_seed(0)
    grouped = nn.Conv2d(8, 8, 5, padding=2, groups=4)
    split = nn.ModuleList(nn.Conv2d(2, 2, 5, padding=2) for _ in range(4))
    x = torch.randn(1, 8, 12, 16, requires_grad=True)

    class OneByOne(nn.Module):
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return torch.cat([conv(part) for conv, part in zip(split, x.chunk(4, dim=1))], dim=1)

    assert training_step_flops(grouped, x) == training_step_flops(OneByOne(), x)
