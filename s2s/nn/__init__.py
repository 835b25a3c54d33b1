"""The neural-network layer: the shared encoder and the parts heads are made of. Plain nn.Modules
built from plain values; nothing here imports data, tasks, training or the CLI."""
from __future__ import annotations

from typing import NamedTuple

import torch


class Output(NamedTuple):
    """What every head's forward returns in training."""

    loss: torch.Tensor  # mean loss per target (token, tag, text) that is optimised
    logits: torch.Tensor
    num_tokens: int  # targets the loss averages over
