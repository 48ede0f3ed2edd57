"""Parameter counts of a network, per top-level component (``wavecl info``, the benchmarks)."""

from __future__ import annotations

from torch import nn


def count_parameters(module: nn.Module) -> tuple[int, int]:
    """``(total, trainable)`` parameter counts of ``module``; a tensor registered twice counts once."""
    parameters = list(module.parameters())
    return sum(p.numel() for p in parameters), sum(p.numel() for p in parameters if p.requires_grad)


def parameters_per_component(model: nn.Module) -> dict[str, tuple[int, int]]:
    """``(total, trainable)`` per top-level child, the rows adding up to :func:`count_parameters`.

    A parameter registered under several names counts once, for its shortest name.
    """
    owner: dict[int, str] = {}
    for name, parameter in sorted(model.named_parameters(remove_duplicate=False), key=lambda item: item[0].count(".")):
        owner.setdefault(id(parameter), name.split(".")[0])
    counts = {name: (0, 0) for name, _ in model.named_children()}
    for parameter in model.parameters():
        total, trainable = counts[owner[id(parameter)]]
        counts[owner[id(parameter)]] = (
            total + parameter.numel(),
            trainable + parameter.numel() * parameter.requires_grad,
        )
    return counts
