"""Scale-out with torchrun: ``torchrun --nproc-per-node N -m aggan_cli train ...``.

torchrun sets RANK, LOCAL_RANK and WORLD_SIZE (and the rendezvous for multi-node runs); this module
turns them into an initialised process group: NCCL when each process has a CUDA device, gloo on CPU.
A plain ``aggan train`` (no WORLD_SIZE) runs as a single process with nothing to set up.

``--batch-size`` is per process: a step averages the gradients of ``world × batch`` images, and the
learning rate is not rescaled (docs/performance.md says when to raise it).
"""

from __future__ import annotations

import contextlib
import os
from dataclasses import dataclass
from typing import Any, Iterator, Mapping

from .errors import DeviceError, TrainingError


@dataclass(frozen=True)
class DistContext:
    rank: int = 0
    world: int = 1
    device: "object | None" = None  # torch.device chosen for this process, or None to resolve later

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def world_size() -> int:
    try:
        return int(os.environ.get("WORLD_SIZE", "1"))
    except ValueError:
        return 1


@contextlib.contextmanager
def distributed_context(device_spec: str = "auto") -> Iterator[DistContext]:
    """Initialise (and always tear down) the process group when launched by torchrun."""
    world = world_size()
    if world <= 1:
        yield DistContext()
        return
    import torch
    import torch.distributed as td

    rank = int(os.environ.get("RANK", "0"))
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    spec = (device_spec or "auto").lower()
    use_cuda = torch.cuda.is_available() and spec in ("auto", "cuda") or spec.startswith("cuda")
    if use_cuda:
        if not torch.cuda.is_available():
            raise DeviceError(f"--device {device_spec} under torchrun, but CUDA is not available")
        if local_rank >= torch.cuda.device_count():
            raise DeviceError(f"LOCAL_RANK {local_rank} but this node has {torch.cuda.device_count()} CUDA device(s); "
                              "lower --nproc-per-node")
        device = torch.device("cuda", local_rank)
        torch.cuda.set_device(device)
        td.init_process_group("nccl", device_id=device)
    else:
        if spec not in ("auto", "cpu"):
            raise DeviceError(f"--device {device_spec} is not supported under torchrun; use cuda or cpu")
        device = torch.device("cpu")
        td.init_process_group("gloo")
    try:
        yield DistContext(rank=rank, world=world, device=device)
    except Exception as exc:
        if not peer_failure(exc):
            raise
        # the rank that failed has printed why; this one says only that it stopped because of it
        raise TrainingError(f"process {rank} of {world} stopped: another process of this torchrun job failed "
                            "(its error is above)") from None
    finally:
        if td.is_initialized():
            td.destroy_process_group()


def peer_failure(exc: BaseException) -> bool:
    """True for the error a collective raises when another rank's process has died (its own error, with
    the cause, is printed by that process): a DistError, or gloo's RuntimeError on a closed connection."""
    import torch.distributed as td

    dist_error = getattr(td, "DistError", None)
    if dist_error is not None and isinstance(exc, dist_error):
        return True
    text = str(exc)
    return isinstance(exc, RuntimeError) and any(s in text for s in ("Connection closed by peer",
                                                                     "Connection reset by peer", "Broken pipe"))


def state_digest(tensors: Mapping[str, Any]) -> str:
    """sha256 over the names, dtypes and bytes of a state dict, in name order: equal digests, equal weights."""
    import hashlib

    import torch

    h = hashlib.sha256()
    for name in sorted(tensors):
        t = tensors[name].detach().to("cpu").contiguous().reshape(-1)
        h.update(f"{name}:{t.dtype}:".encode())
        h.update(t.view(torch.uint8).numpy().tobytes())
    return h.hexdigest()


def mean_over_ranks(tensor):
    """The element-wise mean of ``tensor`` over all ranks (itself when not distributed)."""
    import torch.distributed as td

    if not (td.is_available() and td.is_initialized()):
        return tensor
    tensor = tensor.clone()
    td.all_reduce(tensor, op=td.ReduceOp.SUM)
    return tensor / td.get_world_size()


def any_rank(flag: bool, device) -> bool:
    """True on every rank when ``flag`` is true on any (so all ranks stop at the same step)."""
    import torch
    import torch.distributed as td

    if not (td.is_available() and td.is_initialized()):
        return flag
    t = torch.tensor([1.0 if flag else 0.0], device=device)
    td.all_reduce(t, op=td.ReduceOp.MAX)
    return bool(t.item())
