"""Model size and compute: parameter count and forward multiply-accumulates (MACs)."""

from __future__ import annotations

import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode


def count_params(model: nn.Module) -> int:
    """Return the number of parameters, trainable or not (BN scales pinned upstream count too)."""
    return sum(p.numel() for p in model.parameters())


def count_macs(model: nn.Module, input_size: tuple[int, ...] = (1, 3, 112, 112)) -> int:
    """Return the forward MACs of ``model`` on one zero batch of ``input_size``.

    torch's FLOP counter counts a multiply-add as 2 FLOPs (convs, matmuls); MACs are half.
    Elementwise ops (BN in eval, activations, adds) are not counted, as is usual for MACs.
    """
    was_training = model.training
    model.eval()
    with torch.no_grad(), FlopCounterMode(display=False) as counter:
        model(torch.zeros(input_size))
    model.train(was_training)
    return counter.get_total_flops() // 2
