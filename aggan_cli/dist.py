"""Scale-out with torchrun: ``torchrun --nproc-per-node N -m aggan_cli train ...``.

torchrun sets RANK, LOCAL_RANK and WORLD_SIZE (and the rendezvous for multi-node runs); this module
turns them into an initialised process group: NCCL when each process has a CUDA device, gloo on CPU.
A plain ``aggan train`` (no WORLD_SIZE) runs as a single process with nothing to set up.
"""

from __future__ import annotations

import contextlib
import os
from dataclasses import dataclass
from typing import Iterator

from .errors import DeviceError


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
    finally:
        if td.is_initialized():
            td.destroy_process_group()


def any_rank(flag: bool, device) -> bool:
    """True on every rank when ``flag`` is true on any (so all ranks stop at the same step)."""
    import torch
    import torch.distributed as td

    if not (td.is_available() and td.is_initialized()):
        return flag
    t = torch.tensor([1.0 if flag else 0.0], device=device)
    td.all_reduce(t, op=td.ReduceOp.MAX)
    return bool(t.item())
