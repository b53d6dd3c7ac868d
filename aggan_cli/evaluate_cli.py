"""``aggan evaluate``: score a checkpoint on images whose perfect translations and/or true change
regions are known.

For every input ``X`` (files, folders, globs, as ``translate`` takes them), the twin is the image named
like it in ``--twins DIR`` (same relative path and stem, any image suffix) and the true change mask the
one named like it in ``--masks DIR`` (white = changed). The inputs are translated exactly as ``aggan
translate`` would (same sizes, same blend), and scored by :func:`aggan_cli.scoring.score`.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

from .errors import ConfigError, DataError


def run_evaluate_command(inputs: list[str], *, ckpt: str, twins: Path | None, masks: Path | None, direction: str,
                         size: str, device: str, precision: str, offline: bool, as_json: bool,
                         worst: int = 0, mask_guide: str | int = "auto", threads: int | None = None) -> dict[str, Any]:
    from rich.console import Console
    from rich.markup import escape

    from .config import parse_mask_guide
    from .device import use_threads
    from .inference import Translator, parse_size
    from .scoring import Evaluator, json_number
    from .translate_cli import collect_inputs

    console = Console(stderr=True, highlight=False, soft_wrap=True)
    if twins is None and masks is None:
        raise ConfigError("give --twins DIR (the perfect translations) and/or --masks DIR (the true change regions), "
                          "each holding images named like the inputs")
    for flag, folder in (("--twins", twins), ("--masks", masks)):
        if folder is not None and not folder.is_dir():
            raise DataError(f"{flag} {folder} is not a folder")
    parse_size(size)
    mask_guide = parse_mask_guide(mask_guide)
    found = collect_inputs(inputs)
    if found.missing:
        pattern, reason = found.missing[0]
        raise DataError(f"{pattern}: {reason}")
    if not found.files:
        raise DataError(f"no images found in {', '.join(repr(p) for p in inputs)}")
    evaluator = Evaluator.from_files(found.files, twins_dir=twins, masks_dir=masks)  # checked before the model loads
    use_threads(threads, follow=False)  # as translate's, without following the load: the scores do not depend on it
    translator = Translator.load(ckpt, direction=direction, size=size, device=device, precision=precision,
                                 offline=offline, mask_guide=mask_guide)
    count = len(evaluator.sources)
    console.print(f"evaluating [bold]{escape(translator.label())}[/] with {escape(str(translator.checkpoint.path))} "
                  f"({translator.describe_guide()}) on {count} image{'s' * (count != 1)}, "
                  f"{escape(translator.describe_device())}")
    result, translations = evaluator.run(translator, direction=direction)
    report = {"checkpoint": str(translator.checkpoint.path), "direction": direction,
              "mask_guide": translator.mask_guide(direction), **result.to_dict()}
    rows = evaluator.worst(translations, worst) if worst else None
    if as_json:
        shown = {k: json_number(v) for k, v in report.items()}
        if rows is not None:
            shown["worst"] = [{k: json_number(v) for k, v in row.items()} for row in rows]
        print(json.dumps(shown))
    else:
        print_score_table(result, f"aggan evaluate: {count} image{'s' * (count != 1)}")
        if rows is not None:
            print_worst_table(rows, worst)
    if rows is not None:
        report["worst"] = rows
    return report


def print_worst_table(rows: list[dict], asked: int) -> None:
    """``--worst N``: the images whose background changed most, on stdout."""
    from rich.console import Console
    from rich.markup import escape
    from rich.table import Table

    console = Console()
    if not rows:
        console.print("no image's background changed")
        return
    title = f"the {len(rows)} image{'s' * (len(rows) != 1)} whose background changed most"
    if len(rows) < asked:
        title += f" (of {asked} asked: the others' backgrounds are untouched)"
    table = Table(title=title)
    for column in ("image", "background PSNR", "share of the background error", "mask IoU at 0.5"):
        table.add_column(column)
    for row in rows:
        iou = "–" if math.isnan(row["mask_iou"]) else f"{row['mask_iou']:.2f}"
        table.add_row(escape(row["name"]), f"{row['background_psnr']:.1f} dB", f"{row['background_error_share']:.0%}", iou)
    console.print(table)


def print_score_table(result, title: str, console=None) -> None:
    """The figures of a :class:`~aggan_cli.scoring.Score`, each against its target where it has one
    (stdout unless ``console`` is given; ``aggan train --demo TASK`` prints it on stderr)."""
    from rich.console import Console
    from rich.table import Table

    from .scoring import MISSED_IOU, NEAR_WIDTH, RIM_WIDTH
    from .scoring import TARGETS as targets

    rows = [
        ("foreground PSNR (output vs twin, inside the region)", result.foreground_psnr, " dB", None),
        ("  output = input, for comparison", result.identity_foreground_psnr, " dB", None),
        ("  gain over output = input", result.foreground_gain, " dB", "foreground_gain"),
        ("background PSNR (output vs input, outside)", result.background_psnr, " dB", "background_psnr"),
        ("  median over the images", result.background_psnr_median, " dB", None),
        (f"  within {NEAR_WIDTH} px of the region (its rim)", result.background_psnr_near, " dB", None),
        ("  farther from it", result.background_psnr_far, " dB", None),
        ("  over the images whose object the mask found", result.background_psnr_found, " dB", None),
        ("image PSNR (output vs twin, whole image)", result.image_psnr, " dB", None),
        ("mask AUC vs the true region", result.mask_auc, "", "mask_auc"),
        ("mask IoU at 0.5", result.mask_iou, "", "mask_iou"),
        (f"images whose object the mask missed (IoU < {MISSED_IOU:g})", result.missed_fraction, "", None),
        ("soft mask values (0.1-0.9) inside the region", result.soft_inside, "", None),
        ("soft mask values (0.1-0.9) outside", result.soft_outside, "", None),
        (f"mean mask just inside the region's edge ({RIM_WIDTH} px)", result.rim_inside, "", None),
        (f"mean mask just outside the region's edge ({RIM_WIDTH} px)", result.rim_outside, "", None),
        ("unattended pixels (mask < 1/255) left exactly as they were", result.exact_fraction, "", None),
    ]
    table = Table(title=title)
    for column in ("measure", "value", "target"):
        table.add_column(column)
    for label, value, unit, key in rows:
        if isinstance(value, float) and math.isnan(value):
            continue
        target = ""
        if key is not None:
            mark = "[green]✓[/]" if value >= targets[key] else "[red]✗[/]"
            target = f"≥ {targets[key]:g}{unit} {mark}"
        shown = "∞" if value == float("inf") else (f"{value:.1f}{unit}" if unit else f"{value:.3f}")
        table.add_row(label, shown, target)
    (console or Console()).print(table)
