"""Finding checkpoints: ``--ckpt`` resolution (paths and runs; the cache, bundled and Hub parts come
with the weights work)."""

from __future__ import annotations

import os
from pathlib import Path

from .errors import CheckpointError


def default_runs_dir() -> Path:
    return Path(os.environ.get("AGGAN_RUNS_DIR") or "runs")


def resolve_checkpoint(spec: str, *, runs_dir: str | Path | None = None, cache_dir: str | Path | None = None,
                       offline: bool = False, revision: str | None = None) -> Path:
    """Turn a ``--ckpt`` value into a local run folder (or weights file) path.

    Order (DESIGN.md): an existing path; a run under the runs dir.
    """
    path = Path(spec).expanduser()
    if path.exists():
        return path
    runs = Path(runs_dir) if runs_dir is not None else default_runs_dir()
    if "/" not in spec and (runs / spec).is_dir():
        return runs / spec
    raise CheckpointError(f"checkpoint {spec!r} not found: it is not a path, nor a run in {runs}/")
