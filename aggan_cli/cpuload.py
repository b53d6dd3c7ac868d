"""How many of this process's CPU cores other processes keep busy, read from ``/proc/stat`` (Linux).

Torch-free on purpose: the command line takes its first reading before torch is imported, so the
second or so that the import takes is already a measuring window when the thread count is chosen
(device.use_threads). Elsewhere than Linux there is no reading, and the thread count stays PyTorch's.
"""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import NamedTuple

PROC_STAT = Path("/proc/stat")
MIN_WINDOW = 0.2  # seconds: /proc/stat counts in 10-ms ticks, so a shorter window says little


class Reading(NamedTuple):
    wall: float  # time.monotonic()
    busy: float  # CPU-seconds spent on this process's cores by anyone, since boot
    own: float   # CPU-seconds spent by this process (all its threads)


def _our_cores() -> set[int] | None:
    return set(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else None


def read(stat: Path = PROC_STAT, cores: set[int] | None = None) -> Reading | None:
    """Busy time of ``cores`` (default: those this process may run on) from ``stat``; None where the
    file does not exist or cannot be parsed."""
    cores = _our_cores() if cores is None else cores
    try:
        lines = stat.read_text().splitlines()
        ticks_per_second = os.sysconf("SC_CLK_TCK")
    except (OSError, ValueError, AttributeError):  # no /proc (macOS, Windows), or no sysconf
        return None
    busy_ticks = 0
    for line in lines:
        name, _, rest = line.partition(" ")
        if not (name.startswith("cpu") and name[3:].isdigit()):
            continue  # the "cpu" total line and the other counters
        if cores is not None and int(name[3:]) not in cores:
            continue
        fields = [int(v) for v in rest.split()[:8]]  # user nice system idle iowait irq softirq steal
        if len(fields) < 5:
            return None
        busy_ticks += sum(fields) - fields[3] - fields[4]  # all but idle and I/O wait
    return Reading(time.monotonic(), busy_ticks / ticks_per_second, time.process_time())


def others_between(first: Reading | None, last: Reading | None) -> float | None:
    """Cores that other processes kept busy, on average, between two readings (0.0 on an idle machine,
    about 1.0 with one CPU-bound process beside this one); None without two readings far enough apart."""
    if first is None or last is None or last.wall - first.wall < MIN_WINDOW:
        return None
    others = (last.busy - first.busy) - (last.own - first.own)
    return max(0.0, others) / (last.wall - first.wall)


# The reading taken when the command line started (cli.main), before the heavy imports.
_first: Reading | None = None


def begin() -> None:
    """Take the first reading; call it as early as the process starts."""
    global _first
    _first = read()


def first_reading() -> Reading | None:
    return _first
