"""Device and precision choice: ``auto`` means CUDA, then Apple MPS, then CPU; asking for something
this machine does not have is an error, never a silent fallback."""

from __future__ import annotations

import contextlib
import re
from typing import ContextManager

import torch

from .errors import DeviceError

_DEVICE_RE = re.compile(r"^(cpu|mps|cuda)(?::(\d+))?$")


def resolve_device(spec: str = "auto") -> torch.device:
    """Turn ``auto``, ``cpu``, ``cuda``, ``cuda:N`` or ``mps`` into an available ``torch.device``."""
    spec = (spec or "auto").strip().lower()
    if spec == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda", torch.cuda.current_device())
        if _mps_available():
            return torch.device("mps")
        return torch.device("cpu")
    match = _DEVICE_RE.match(spec)
    if not match:
        raise DeviceError(f"unknown device {spec!r}; use auto, cpu, cuda, cuda:N or mps")
    kind, index = match.group(1), match.group(2)
    if kind == "cpu":
        return torch.device("cpu")
    if kind == "mps":
        if not _mps_available():
            raise DeviceError("device 'mps' is not available on this machine (needs Apple silicon and a PyTorch "
                              "built with MPS); use --device auto or cpu")
        return torch.device("mps")
    if not torch.cuda.is_available():
        raise DeviceError(f"device {spec!r} asked for, but CUDA is not available on this machine; "
                          "use --device auto or cpu")
    count = torch.cuda.device_count()
    i = int(index) if index is not None else torch.cuda.current_device()
    if i >= count:
        raise DeviceError(f"device {spec!r} asked for, but this machine has {count} CUDA device(s) "
                          f"(cuda:0 to cuda:{count - 1})")
    return torch.device("cuda", i)


def _mps_available() -> bool:
    backend = getattr(torch.backends, "mps", None)
    return bool(backend and backend.is_available())


def describe_device(device: torch.device) -> str:
    if device.type == "cuda":
        return f"{device} ({torch.cuda.get_device_name(device)})"
    if device.type == "mps":
        return "mps (Apple GPU)"
    n = torch.get_num_threads()
    return f"cpu ({n} thread{'s' if n != 1 else ''})"


def resolve_precision(spec: str, device: torch.device) -> torch.dtype | None:
    """The autocast dtype for ``spec`` on ``device``, or None for plain float32.

    ``auto`` is bf16 autocast on CUDA devices that support it and fp32 elsewhere (CPU bf16 is slower
    than fp32 on most CPUs; MPS autocast coverage is still partial).
    """
    spec = (spec or "auto").lower()
    if spec == "auto":
        if device.type == "cuda" and torch.cuda.is_bf16_supported():
            return torch.bfloat16
        return None
    if spec == "fp32":
        return None
    if spec == "bf16":
        if device.type == "cuda" and not torch.cuda.is_bf16_supported():
            raise DeviceError(f"{device} does not support bf16; use --precision fp16 or fp32")
        return torch.bfloat16
    if spec == "fp16":
        if device.type == "cpu":
            raise DeviceError("fp16 autocast is not supported on the CPU; use --precision bf16 or fp32")
        return torch.float16
    raise DeviceError(f"unknown precision {spec!r}; use auto, fp32, bf16 or fp16")


def autocast(device: torch.device, dtype: torch.dtype | None) -> ContextManager:
    """Autocast to ``dtype`` on ``device``, or a no-op context for fp32."""
    if dtype is None:
        return contextlib.nullcontext()
    return torch.autocast(device_type=device.type, dtype=dtype)


def precision_name(dtype: torch.dtype | None) -> str:
    return {None: "fp32", torch.bfloat16: "bf16", torch.float16: "fp16"}[dtype]
