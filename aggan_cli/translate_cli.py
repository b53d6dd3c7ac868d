"""``aggan translate`` and ``aggan export-masks``: find the inputs, name the outputs, run the
:class:`~aggan_cli.inference.Translator`, write PNGs, report.

The translation itself is the Python API's (``Translator.translate_many``); this module only decides
which files go in, where each result goes, and what the user sees. Written paths go to stdout, one per
line; progress, warnings and the summary go to stderr.
"""

from __future__ import annotations

import contextlib
import glob
import os
import sys
import time
from collections import deque
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any, Callable, Iterator

from .data import IMAGE_EXTENSIONS, find_images, is_image_file
from .errors import ConfigError, DataError

_GLOB_CHARS = "*?["
PROGRESS_MIN = 5  # a progress bar only pays for itself beyond a handful of images
# zlib level: lossless either way. For a 12-MP photo level 1 took 0.7-1.2 s against 1.5-3.9 s at the
# default 6, for files 3-30 % larger (smooth images gain the most from 6, and cost it the most).
PNG_LEVEL = 1


# ---------------------------------------------------------------------------------------------
# inputs and output names


@dataclass
class Inputs:
    """What the command line's INPUT... patterns expand to."""

    files: list[tuple[Path, PurePosixPath]]  # (input file, output name relative to --out, no suffix)
    missing: list[str]                       # named files that do not exist: failed inputs
    unmatched: list[str]                     # folders or globs without a single image: warnings
    renamed: list[tuple[Path, PurePosixPath]]  # inputs whose natural name was taken by an earlier one


def collect_inputs(patterns: list[str], *, out_dir: Path | None = None) -> Inputs:
    """Expand files, folders (recursive) and glob patterns, in the order given, each sorted.

    Output names: a file (named or globbed) gives its stem; a folder's images keep their path relative
    to that folder; a folder matched by a glob keeps its own name on top. Images already under
    ``out_dir`` are left out of folder and glob expansions, so running twice never translates outputs.
    A file reached twice is translated once.
    """
    out_root = out_dir.resolve() if out_dir is not None else None
    found: list[tuple[Path, PurePosixPath]] = []
    missing, unmatched = [], []
    for pattern in patterns:
        path = Path(pattern).expanduser()
        if path.is_dir():
            entries = _folder(path, PurePosixPath(), out_root)
        elif path.is_file():
            entries = [(path, PurePosixPath(path.name))]
        elif any(ch in pattern for ch in _GLOB_CHARS):
            entries = []
            for match in sorted(glob.glob(os.path.expanduser(pattern), recursive=True)):
                match_path = Path(match)
                if match_path.is_dir():
                    # resolve(): a glob like "a/*/.." must not produce a ".." name that climbs out of --out
                    entries += _folder(match_path, PurePosixPath(match_path.resolve().name), out_root)
                elif is_image_file(match_path) and not _inside(match_path, out_root):
                    entries.append((match_path, PurePosixPath(match_path.name)))
        else:
            missing.append(pattern)
            continue
        if not entries:
            unmatched.append(pattern)
        found += entries
    seen: set[Path] = set()
    unique = []
    for path, rel in found:
        key = path.resolve()
        if key not in seen:
            seen.add(key)
            unique.append((path, rel))
    files, renamed = _assign_names(unique)
    return Inputs(files, missing, unmatched, renamed)


def _folder(folder: Path, prefix: PurePosixPath, out_root: Path | None) -> list[tuple[Path, PurePosixPath]]:
    return [(f, prefix / f.relative_to(folder).as_posix()) for f in find_images(folder) if not _inside(f, out_root)]


def _inside(path: Path, root: Path | None) -> bool:
    return root is not None and path.resolve().is_relative_to(root)


def _assign_names(entries: list[tuple[Path, PurePosixPath]]) -> tuple[list[tuple[Path, PurePosixPath]], list]:
    """Output stems, unique without regard to case (macOS and Windows file systems ignore it): the first
    input keeps ``photo``, a later ``photo.png`` next to ``photo.jpg`` becomes ``photo-2``."""
    stems = [rel.parent / rel.stem if rel.suffix else rel for _, rel in entries]
    natural = {str(s).casefold() for s in stems}
    taken: set[str] = set()
    named, renamed = [], []
    for (path, _), stem in zip(entries, stems):
        name = stem
        if str(name).casefold() in taken:
            n = 2
            while (str(name := stem.parent / f"{stem.name}-{n}").casefold() in taken | natural):
                n += 1
            renamed.append((path, name))
        taken.add(str(name).casefold())
        named.append((path, name))
    return named, renamed


def output_path(out_dir: Path, stem: PurePosixPath, suffix: str) -> Path:
    """``out_dir/stem<suffix>``, refusing anything that would land outside ``out_dir``."""
    target = out_dir / f"{stem}{suffix}"
    if not target.resolve().is_relative_to(out_dir.resolve()):
        raise DataError(f"output name {stem}{suffix} would be written outside {out_dir}; rename the input")
    return target


# ---------------------------------------------------------------------------------------------
# writing


def _save(path: Path, write) -> Path:
    """Write via a temporary name and rename, so an interrupted run never leaves a torn image."""
    tmp = path.with_name(f".{path.name}.tmp")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        write(tmp)
        os.replace(tmp, path)
    except OSError as exc:  # a full disk or a read-only folder: stop, and say where
        raise DataError(f"cannot write {path} ({exc.strerror or exc}); check the space and permissions of "
                        f"the output folder") from None
    finally:
        if tmp.exists():
            tmp.unlink()
    return path


def _save_png(image: Any, path: Path) -> Path:
    return _save(path, lambda tmp: image.save(tmp, format="PNG", compress_level=PNG_LEVEL))


def _write_translation(result, out_dir: Path, stem: PurePosixPath) -> list[Path]:
    return [_save_png(result.image, output_path(out_dir, stem, ".png"))]


def _write_masks(result, out_dir: Path, stem: PurePosixPath, *, overlay: bool, content: bool,
                 threshold: float | None, mask_format: str) -> list[Path]:
    import numpy as np

    written = []
    if mask_format == "npy":
        mask = result.mask if threshold is None else (result.mask > threshold).astype(np.float32)
        target = output_path(out_dir, stem, "_mask.npy")

        def write_npy(tmp: Path) -> None:
            with open(tmp, "wb") as f:  # a file object: np.save would append ".npy" to a bare name
                np.save(f, mask.astype(np.float32))

        written.append(_save(target, write_npy))
    else:
        written.append(_save_png(result.mask_image(threshold), output_path(out_dir, stem, "_mask.png")))
    if overlay:
        written.append(_save_png(result.overlay(), output_path(out_dir, stem, "_overlay.png")))
    if content:
        written.append(_save_png(result.content, output_path(out_dir, stem, "_content.png")))
    return written


# ---------------------------------------------------------------------------------------------
# the command


def run_translate_command(inputs: list[str], *, ckpt: str, direction: str, out: Path | None, size: str,
                          batch_size: int, device: str, precision: str, offline: bool, quiet: bool,
                          masks: bool, overlay: bool = True, content: bool = False,
                          threshold: float | None = None, mask_format: str = "png", backend: str = "torch",
                          threads: int | None = None) -> int:
    """Run ``translate`` (``masks=False``) or ``export-masks``; return the exit code (1 if any input failed).

    ``backend="onnxruntime"`` runs exported ONNX files and never imports torch (docs/deploy.md).
    ``threads``: CPU threads (None: PyTorch's follow the machine's load, onnxruntime keeps its own)."""
    from rich.console import Console
    from rich.markup import escape

    from .imaging import check_threshold, parse_size

    console = Console(stderr=True, highlight=False, soft_wrap=True)
    if batch_size < 1:
        raise ConfigError(f"--batch-size must be at least 1, got {batch_size}")
    if threshold is not None:
        check_threshold(threshold)
    parse_size(size)
    out_dir = out if out is not None else Path("masks" if masks else "translated")
    if out_dir.exists() and not out_dir.is_dir():
        raise DataError(f"--out {out_dir} is a file; give a folder")

    found = collect_inputs(inputs, out_dir=out_dir)
    if not found.files:
        listed = ", ".join(repr(p) for p in inputs)
        raise DataError(f"no images found in {listed}: no file, folder or glob pattern matched an image "
                        f"({' '.join(IMAGE_EXTENSIONS)})")
    for pattern in found.unmatched:
        console.print(f"[yellow]warning:[/] no images in {escape(repr(pattern))}")
    for path, name in found.renamed:
        console.print(f"[yellow]note:[/] {escape(str(path))} would overwrite another input's output; "
                      f"written as {escape(str(name))}")
    for pattern in found.missing:
        console.print(f"[yellow]skipped:[/] {escape(pattern)}: no such file, folder or pattern")

    # torch (or onnxruntime) loads only now: a mistyped input is reported without waiting for it
    follow_load: Callable[[], Any] = lambda: None
    if backend == "onnxruntime":
        from .onnx_backend import OnnxTranslator

        translator = OnnxTranslator.load(ckpt, direction=direction, size=size, device=device, precision=precision,
                                         offline=offline, threads=threads)
    else:
        from .device import use_threads
        from .inference import Translator

        follow_load = use_threads(threads).adjust  # one thread per core other processes leave free (device.py)
        translator = Translator.load(ckpt, direction=direction, size=size, device=device, precision=precision,
                                     offline=offline)
    run = translator.checkpoint
    total = len(found.files)
    console.print(f"{'exporting masks' if masks else 'translating'}: [bold]{escape(translator.label())}[/] "
                  f"with {escape(str(run.path))} (step {run.step}) on {translator.describe_device()}, "
                  f"{translator.precision}, size {escape(translator.describe_size())}")
    console.print(f"{total} image{'s' * (total != 1)} → {escape(str(out_dir))}{os.sep}")
    out_dir.mkdir(parents=True, exist_ok=True)

    def write(result, stem):
        if masks:
            return _write_masks(result, out_dir, stem, overlay=overlay, content=content, threshold=threshold,
                                mask_format=mask_format)
        return _write_translation(result, out_dir, stem)

    names = dict(found.files)
    failed = len(found.missing)
    done = 0
    start = time.perf_counter()
    with _progress(console, total, quiet) as advance, ThreadPoolExecutor(2, thread_name_prefix="aggan-write") as pool:
        writing: deque[Future] = deque()
        for path, result in translator.translate_many([p for p, _ in found.files], batch_size=batch_size):
            if isinstance(result, DataError):
                console.print(f"[yellow]skipped:[/] {escape(str(result))}")
                failed += 1
            else:
                writing.append(pool.submit(write, result, names[path]))
                done += 1
            advance()
            follow_load()
            while writing and (len(writing) > 2 * batch_size or writing[0].done()):
                _echo_paths(writing.popleft().result())
        while writing:
            _echo_paths(writing.popleft().result())
    elapsed = time.perf_counter() - start
    rate = done / elapsed if elapsed > 0 else float("inf")
    console.print(f"done: {done} image{'s' * (done != 1)} in {elapsed:.1f} s ({rate:.2f} images/s) "
                  f"→ {escape(str(out_dir))}{os.sep}")
    if failed:
        attempted = total + len(found.missing)
        console.print(f"[bold red]error:[/] {failed} of {attempted} inputs failed (listed above)")
        return 1
    return 0


def _echo_paths(paths: list[Path]) -> None:
    for path in paths:
        print(path, flush=False)
    sys.stdout.flush()


@contextlib.contextmanager
def _progress(console, total: int, quiet: bool) -> Iterator[Callable[[], None]]:
    """A rich progress bar on stderr for more than a handful of images in a terminal; yields ``advance``."""
    if quiet or total < PROGRESS_MIN or not console.is_terminal:
        yield lambda: None
        return
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

    # Redirecting stdout through the bar keeps the screen tidy, but only when stdout is the same
    # terminal: a piped stdout must keep receiving the paths untouched.
    with Progress(TextColumn("images"), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn(), console=console,
                  redirect_stdout=sys.stdout.isatty(), redirect_stderr=False) as bar:
        task = bar.add_task("images", total=total)
        yield lambda: bar.advance(task)
