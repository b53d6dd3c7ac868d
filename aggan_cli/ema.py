"""``--ema``: an exponential moving average of a network's weights, what a run saves and translates with.

Averaging the weights of the last ~1/(1 − decay) steps damps the step-to-step oscillation of GAN
training (docs/training.md has the measurements). The average covers the parameters *and* the float
buffers (BatchNorm's running mean and variance), so an averaged BatchNorm network normalises with
statistics that belong to its averaged weights; integer buffers (BatchNorm's batch count) are copied.
The copy is always in eval mode: a forward pass through it (a sample grid, the demo's score) never
changes its statistics, and it normalises as the saved model will at translation time.
"""

from __future__ import annotations

import copy

import torch
from torch import nn


class WeightAverage:
    """``average = decay · average + (1 − decay) · live`` after each update of ``live``; ``network`` is
    the averaged copy (in eval mode, no gradients), started as a copy of ``live``."""

    def __init__(self, live: nn.Module, decay: float) -> None:
        if not 0.0 <= decay < 1.0:
            raise ValueError(f"decay must be in [0, 1), got {decay}")
        self.decay = decay
        self.network = copy.deepcopy(live).eval().requires_grad_(False)

    @torch.no_grad()
    def update(self, live: nn.Module) -> None:
        weight = 1.0 - self.decay
        torch._foreach_lerp_(list(self.network.parameters()), list(live.parameters()), weight)  # one fused call
        for average, current in zip(self.network.buffers(), live.buffers()):
            if average.is_floating_point():
                average.lerp_(current, weight)
            else:
                average.copy_(current)

    @torch.no_grad()
    def reset(self, live: nn.Module) -> None:
        """Start the average again from ``live`` (resuming a run that had none)."""
        self.network.load_state_dict(live.state_dict())
