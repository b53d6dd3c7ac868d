"""Numerical faults: an optimizer step whose loss is NaN or Inf is skipped, and such steps are counted.

No host-device sync where it would stall a GPU: the flag ``~isfinite(loss)`` stays on the device. A
fused Adam (CUDA, and the CPU from torch 2.4) reads it there through ``found_inf``, the mechanism
``torch.amp.GradScaler`` uses, and skips its update on the device; other optimizers read it on the
host, which costs nothing on the CPU. With fp16 the GradScaler skips by itself. Under DDP the flag
is OR-ed over the ranks (gradients are averaged, so one rank's NaN is everyone's) and all skip
together. The counters are read (one sync) only when the caller asks, see :meth:`NonFiniteGuard.read`.
"""

from __future__ import annotations

import torch
from torch import Tensor


class NonFiniteGuard:
    """``step(optimizer, loss)`` in place of ``optimizer.step()``; ``end_step()`` once per training step;
    ``read()`` -> (steps with a skipped update since the last read, length of the current run of them)."""

    def __init__(self, device: torch.device, *, world: int = 1, scaler: "torch.amp.GradScaler | None" = None) -> None:
        self.world, self.scaler = world, scaler
        self._bad_now = torch.zeros((), dtype=torch.bool, device=device)
        self._skipped = torch.zeros((), dtype=torch.int64, device=device)
        self._streak = torch.zeros((), dtype=torch.int64, device=device)

    def step(self, optimizer: torch.optim.Optimizer, loss: Tensor) -> None:
        """``optimizer.step()``, unless ``loss`` is NaN or Inf: then weights, Adam's moments and its step
        count stay as they were."""
        bad = ~torch.isfinite(loss.detach())
        if self.world > 1:
            import torch.distributed as td

            flag = bad.float()
            td.all_reduce(flag, op=td.ReduceOp.MAX)
            bad = flag > 0
        self._bad_now = self._bad_now | bad
        if self.scaler is not None and self.scaler.is_enabled():
            self.scaler.step(optimizer)  # fp16: GradScaler skips the step itself when gradients are not finite
        elif optimizer.defaults.get("fused"):
            optimizer.found_inf = bad.float()
            try:
                optimizer.step()
            finally:
                del optimizer.found_inf
        elif not bool(bad):
            optimizer.step()

    def end_step(self) -> None:
        """Count the training step that just ended (on the device: no sync)."""
        self._streak = (self._streak + 1) * self._bad_now
        self._skipped += self._bad_now
        self._bad_now = torch.zeros_like(self._bad_now)

    def read(self) -> tuple[int, int]:
        """(skipped steps since the last read, current run of skipped steps): one host-device sync."""
        skipped, streak = (int(v) for v in torch.stack([self._skipped, self._streak]).tolist())
        self._skipped.zero_()
        return skipped, streak
