"""Device, precision and CPU-thread choice: ``auto`` means CUDA, then Apple MPS, then CPU; asking for
something this machine does not have is an error, never a silent fallback.

CPU threads: PyTorch runs an operator on one thread per core, and its OpenMP threads spin while they
wait for each other. When another process holds one of the cores, every operator waits for a thread
that is not running, and a step takes several, up to tens of, times longer (docs/performance.md). So
by default the thread count follows the cores that other processes leave free (:func:`use_threads`),
re-checked between training steps and between images (:func:`adjust_threads`).
"""

from __future__ import annotations

import contextlib
import math
import os
import re
import time
from typing import ContextManager

import torch

from . import cpuload
from .errors import ConfigError, DeviceError

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


# ---------------------------------------------------------------------------------------------
# CPU threads

THREADS_CHECK_EVERY = 2.0  # seconds between two readings of the machine's load while running


def choose_threads(current: int, most: int, others: float) -> int:
    """Threads for a machine where other processes keep ``others`` cores busy: one per free core, from
    1 to ``most``. Going up needs the extra core free by a margin (others ≤ ¾ of it away), going down
    happens once half a core is taken, so a load that hovers at a boundary does not flip the count."""
    free = most - others
    up, down = math.floor(free + 0.25), math.floor(free + 0.5)
    if up > current:
        return min(most, up)
    if down < current:
        return max(1, down)
    return current


class ThreadPolicy:
    """The process's intra-op thread count: ``threads`` if given, else ``OMP_NUM_THREADS`` if set, else
    one per core that other processes leave free, re-checked by :meth:`adjust` when ``follow``.

    Only the thread count adapts; the OpenMP wait policy stays its default (waiting threads spin for a
    while before they sleep): ``OMP_WAIT_POLICY=passive`` avoids the collapse too, but it slows every
    step of a quiet machine, while one thread per free core leaves no thread waiting for a core
    (docs/performance.md has both, measured quiet and loaded).
    """

    def __init__(self, threads: int | None = None, *, follow: bool = True) -> None:
        if threads is not None and threads < 1:
            raise ConfigError(f"--threads must be at least 1, got {threads}")
        self.most = _default_threads()
        self.auto = threads is None and "OMP_NUM_THREADS" not in os.environ
        self.follow = follow and self.auto
        self.threads = threads or self.most
        torch.set_num_threads(self.threads)
        self.reading = cpuload.first_reading()  # taken at process start: the imports are the first window
        if self.auto:
            self.adjust(now=True)

    def adjust(self, *, now: bool = False) -> int:
        """Re-read the load (at most every THREADS_CHECK_EVERY seconds unless ``now``) and follow it."""
        if not (self.follow or (self.auto and now)):
            return self.threads
        if not now and self.reading is not None and time.monotonic() - self.reading.wall < THREADS_CHECK_EVERY:
            return self.threads
        reading = cpuload.read()
        others = cpuload.others_between(self.reading, reading)
        if others is None:  # no /proc/stat, or the window was too short: keep the count, start a window
            self.reading = self.reading or reading
            return self.threads
        self.reading = reading
        threads = choose_threads(self.threads, self.most, others)
        if threads != self.threads:
            torch.set_num_threads(threads)
            self.threads = threads
        return self.threads


_default: int | None = None
_policy: ThreadPolicy | None = None


def _default_threads() -> int:
    """PyTorch's own thread count (one per physical core, or OMP_NUM_THREADS), read before we change it."""
    global _default
    if _default is None:
        _default = torch.get_num_threads()
    return _default


def use_threads(threads: int | None = None, *, follow: bool = True) -> ThreadPolicy:
    """Set this process's CPU threads (see :class:`ThreadPolicy`); :func:`adjust_threads` then follows
    the machine's load while ``follow``."""
    global _policy
    _policy = ThreadPolicy(threads, follow=follow)
    return _policy


def adjust_threads() -> None:
    """Between training steps or images: follow the load, if :func:`use_threads` asked for it (cheap:
    it reads /proc/stat at most every few seconds)."""
    if _policy is not None:
        _policy.adjust()
