"""``aggan export``: run :func:`aggan_cli.export.export_onnx` and report.

The written files go to stdout, one path per line; what is being exported, and the check against
PyTorch, go to stderr.
"""

from __future__ import annotations

import sys
from pathlib import Path


def run_export_command(ckpt: str, *, out: Path | None, direction: str, offline: bool,
                       mask_guide: str = "auto") -> None:
    from rich.console import Console
    from rich.markup import escape

    console = Console(stderr=True, highlight=False, soft_wrap=True)
    which = "both generators" if direction == "both" else f"the {direction} generator"
    console.print(f"exporting {which} of {escape(ckpt)} to ONNX …")
    from .export import PARITY_LIMIT, export_onnx

    result = export_onnx(ckpt, out=out, direction=direction, offline=offline, mask_guide=mask_guide)
    for path in result.files:
        print(path)
    sys.stdout.flush()
    folder = result.files[0].parent
    again = ckpt if out is None else str(folder)  # the default place is where --backend onnxruntime looks
    guides = ", ".join(f"{d} {r} px" for d, r in result.mask_guide.items())
    console.print(f"done: {escape(str(result.checkpoint))} (step {result.step}, mask guide {guides}) → "
                  f"{escape(str(folder))}; "
                  f"onnxruntime matches PyTorch within {result.max_difference:.1e} (limit {PARITY_LIMIT:g}). "
                  f"Translate with: aggan translate PHOTO --ckpt {escape(again)} --backend onnxruntime")
