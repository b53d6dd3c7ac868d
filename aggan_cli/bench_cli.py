"""``aggan bench``: build the model config, run :func:`aggan_cli.bench.run_bench`, render the result.

The table (or, with ``--json``, one JSON object) is the command's result and goes to stdout; what is
being measured is said on stderr first, since a 256-px training benchmark on a CPU takes a while.
"""

from __future__ import annotations

import json
import sys
from typing import Any

from .config import ModelConfig, TrainConfig


def run_bench_command(*, size: int, ngf: int, n_blocks: int, ndf: int, norm: str, discriminator: str,
                      batch_size: int, device: str, precision: str, compile: bool, channels_last: bool | None,
                      repeats: int, warmup: int, only: str, seed: int, as_json: bool, backend: str = "torch",
                      threads: int | None = None, photo_size: int = 1024, upsample: str | None = None,
                      d_layers: int = 3, lambda_identity: float | None = None) -> None:
    from rich.console import Console

    from .errors import ConfigError
    from .imaging import MAX_SIZE

    if size > MAX_SIZE:  # checked before anything is allocated: --size 100000 would exhaust memory first
        raise ConfigError(f"--size must be at most {MAX_SIZE} pixels, got {size}")
    model = ModelConfig(ngf=ngf, n_blocks=n_blocks, ndf=ndf, norm=norm, discriminator=discriminator, image_size=size,
                        d_layers=d_layers,
                        **({"upsample": upsample} if upsample else {}))  # None: the decoder train builds
    what = f"startup on a {photo_size}-px photo, " if only == "startup" else ""
    identity = TrainConfig().lambda_identity if lambda_identity is None else lambda_identity
    step = ", the step with the identity loss" if identity and only in ("both", "train") else ""
    Console(stderr=True, highlight=False).print(
        f"[bold]aggan bench[/] {what}{size} px, ngf {ngf}, {_count(n_blocks, 'block')}, {model.upsample} decoder, "
        f"ndf {ndf}{f', {model.d_layers}-layer PatchGAN' if discriminator == 'patch' else ''}, batch {batch_size}{step}, "
        f"{backend}{', ' + _count(threads, 'thread') if threads else ''}: "
        f"{warmup} warm-up + {repeats} timed repeats{' (compiling first)' if compile else ''} …")
    from .bench import run_bench

    # onnxruntime cannot train: its default (--only both) is the inference alone
    train = only in ("both", "train") and not (backend == "onnxruntime" and only == "both")
    result = run_bench(model, batch_size=batch_size, device=device, precision=precision, compile=compile,
                       channels_last=channels_last, repeats=repeats, warmup=warmup, train=train,
                       inference=only in ("both", "inference"), seed=seed, backend=backend, threads=threads,
                       startup=only == "startup", photo_size=photo_size, lambda_identity=lambda_identity)
    if as_json:
        sys.stdout.write(json.dumps(result.to_dict()) + "\n")
        return
    console = Console(highlight=False)
    if not console.is_terminal:
        console.width = max(console.width, 120)  # a file or pipe gets the whole table, unwrapped
    console.print(render_table(result))


def render_table(result) -> Any:
    """One row per phase; the ceiling and what "peak memory" means go in the caption."""
    from rich.table import Table

    inference = "inference" if result.backend == "torch" else f"inference ({result.backend})"
    phases = [(name, p) for name, p in ((inference, result.inference), ("train step", result.train)) if p is not None]
    ceilings = ", ".join(f"{p.ceiling_gflops:,.1f} GFLOP/s ({_layout(p)})" for _, p in phases[:1]) if len({
        (p.ceiling_gflops, p.channels_last) for _, p in phases}) == 1 else "; ".join(
        f"{name} {p.ceiling_gflops:,.1f} GFLOP/s ({_layout(p)})" for name, p in phases)
    table = Table(title=f"aggan bench: {result.device}, {result.precision}, batch {result.batch_size}"
                        f"{', compiled' if result.compile else ''}",
                  caption=f"ceiling: a 3×3 conv, 256 ch at 64×64: {ceilings}. Memory: {result.memory_kind}." if phases
                  else f"startup: from starting `python -m aggan_cli translate` on one {result.photo_size}-px photo "
                       f"to its output file existing.")
    for column in ("phase", "ms", "min–max ms", "img/s", "GFLOP/img", "GFLOP/s", "of ceiling", "layout", "peak MiB"):
        table.add_column(column, justify="left" if column in ("phase", "layout") else "right", no_wrap=True)
    for name, phase in phases:
        t = phase.seconds
        memory = "—" if phase.peak_memory_mb is None else f"{phase.peak_memory_mb:,.0f}"
        table.add_row(name, f"{t.median * 1e3:,.1f}", f"{t.min * 1e3:,.1f}–{t.max * 1e3:,.1f}",
                      f"{phase.images_per_s:,.1f}", f"{phase.flops_per_image / 1e9:,.2f}", f"{phase.gflops:,.1f}",
                      f"{phase.efficiency:.0%}", _layout(phase), memory)
    if result.startup is not None:
        t = result.startup
        table.add_row(f"startup ({result.backend})",
                      f"{t.median * 1e3:,.0f}", f"{t.min * 1e3:,.0f}–{t.max * 1e3:,.0f}", *["—"] * 6)
    return table


def _layout(phase) -> str:
    return "NHWC" if phase.channels_last else "NCHW"


def _count(n: int, noun: str) -> str:
    """"1 block", "4 blocks"."""
    return f"{n} {noun}{'s' * (n != 1)}"
