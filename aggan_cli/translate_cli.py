"""``aggan translate`` and ``aggan export-masks``: find the inputs, name the outputs, run the
:class:`~aggan_cli.inference.Translator`, write PNGs, report.

The translation itself is the Python API's (``Translator.translate_many``); this module only decides
which files go in, where each result goes, and what the user sees. Written paths go to stdout, one per
line; progress, warnings and the summary go to stderr.
"""

from __future__ import annotations

import contextlib
import os
import signal
import sys
import threading
import time
from collections import deque
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any, Callable, Iterator

from .data import IMAGE_EXTENSIONS, expand_glob, find_images, has_glob_magic, is_image_file
from .errors import ConfigError, DataError

PROGRESS_MIN = 5  # a progress bar only pays for itself beyond a handful of images
# zlib level: lossless either way. For a 12-MP photo level 1 took 0.7-1.2 s against 1.5-3.9 s at the
# default 6, for files 3-30 % larger (smooth images gain the most from 6, and cost it the most).
PNG_LEVEL = 1


# ---------------------------------------------------------------------------------------------
# inputs and output names


@dataclass
class Inputs:
    """What the command line's INPUT... patterns expand to."""

    entries: list[tuple[Path, PurePosixPath]]  # (input file, its name relative to the folder or glob it came from)
    missing: list[tuple[str, str]]           # (pattern, why): named files that cannot be read, failed inputs
    unmatched: list[str]                     # folders or globs without a single image: warnings
    earlier: list[Path] = field(default_factory=list)  # earlier outputs of this command, left out
    files: list[tuple[Path, PurePosixPath]] = field(init=False)     # (input file, output stem under --out)
    renamed: list[tuple[Path, PurePosixPath]] = field(init=False)   # inputs whose natural stem was taken

    def __post_init__(self) -> None:
        self.files, self.renamed = _assign_names(self.entries)


def collect_inputs(patterns: list[str]) -> Inputs:
    """Expand files, folders (recursive) and glob patterns, in the order given, each sorted.

    Output names: a file (named or globbed) gives its stem; a folder's images keep their path relative
    to that folder; a folder matched by a glob keeps its own name on top. A file reached twice (also
    through a link) is translated once.
    """
    found: list[tuple[Path, PurePosixPath]] = []
    missing, unmatched = [], []
    for pattern in patterns:
        path = Path(pattern).expanduser()
        if path.is_dir():
            entries = _folder(path, PurePosixPath())
        elif path.is_file():
            entries = [(path, PurePosixPath(path.name))]
        elif has_glob_magic(pattern) and not path.exists():
            entries = []
            for match in expand_glob(os.path.expanduser(pattern)):
                if match.is_dir():
                    # resolve(): a glob like "a/*/.." must not produce a ".." name that climbs out of --out
                    entries += _folder(match, PurePosixPath(match.resolve().name))
                elif is_image_file(match) and match.is_file():
                    entries.append((match, PurePosixPath(match.name)))
        elif path.exists():  # a FIFO, socket or device: never opened
            missing.append((pattern, "not a regular file (a pipe, socket or device)"))
            continue
        else:
            missing.append((pattern, "no such file, folder or pattern"))
            continue
        if not entries:
            unmatched.append(pattern)
        found += entries
    seen: set[tuple[int, int]] = set()
    unique = []
    for path, rel in found:
        key = _identity(path)
        if key is not None and key not in seen:
            seen.add(key)
            unique.append((path, rel))
    return Inputs(unique, missing, unmatched)


def _folder(folder: Path, prefix: PurePosixPath) -> list[tuple[Path, PurePosixPath]]:
    return [(f, prefix / f.relative_to(folder).as_posix()) for f in find_images(folder)]


def _identity(path: Path) -> tuple[int, int] | None:
    """The file a path leads to, links followed: equal for two names of one file (also on file systems
    that ignore case). None when there is no such file."""
    try:
        st = os.stat(path)
    except (OSError, ValueError):
        return None
    return st.st_dev, st.st_ino


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


# ---------------------------------------------------------------------------------------------
# never over an input


@dataclass(frozen=True)
class Outputs:
    """The files one input gives: ``out_dir/<stem><suffix><ending>`` for each ending.

    ``possible`` holds every ending the command can write, whatever this run's options: an input found
    at one of them, for another input, is an earlier output (see :func:`leave_out_earlier_outputs`)."""

    command: str                  # "translate" or "export-masks": the mark in every PNG written
    out_dir: Path
    suffix: str
    endings: tuple[str, ...]      # what this run writes for each input
    possible: tuple[str, ...]

    def paths(self, stem: PurePosixPath, endings: tuple[str, ...] | None = None) -> list[Path]:
        return [self.out_dir / f"{stem}{self.suffix}{ending}" for ending in (endings or self.endings)]


def check_suffix(suffix: str) -> str:
    if any(sep in suffix for sep in ("/", "\\", os.sep)) or any(ord(c) < 32 for c in suffix):
        raise ConfigError(f"--suffix {suffix!r} must be plain text added to each name: no slashes or control "
                          "characters")
    return suffix


def leave_out_earlier_outputs(found: Inputs, outputs: Outputs) -> Inputs:
    """Drop the inputs that an earlier run of this command wrote: a file is one when it lies where this
    run writes an output for another input, *and* it carries the command's mark (a PNG text chunk).

    Recognised by name, not by folder, so ``--out`` may be the input folder itself; the mark keeps a
    user's own ``a.png`` next to ``a.jpg`` from being taken for an output (that one is refused instead,
    see :func:`refuse_overwriting_inputs`). Dropping one input can free a name another input then takes,
    so the names are assigned again until nothing changes."""
    while True:
        where = {key: k for k, (path, _) in enumerate(found.files) if (key := _identity(path)) is not None}
        drop = set()
        for k, (_, stem) in enumerate(found.files):
            for target in outputs.paths(stem, outputs.possible):
                j = where.get(_identity(target))
                if j is not None and j != k and is_marked(found.files[j][0], outputs.command):
                    drop.add(j)
        if not drop:
            return found
        found = Inputs([entry for k, entry in enumerate(found.entries) if k not in drop], found.missing,
                       found.unmatched, found.earlier + [found.files[j][0] for j in sorted(drop)])


def refuse_overwriting_inputs(found: Inputs, outputs: Outputs) -> None:
    """Raise before any work if an output would be written over an input (links followed)."""
    inputs = {key: path for path, _ in found.files if (key := _identity(path)) is not None}
    for path, stem in found.files:
        for target in outputs.paths(stem):
            victim = inputs.get(_identity(target))
            if victim is not None:
                raise DataError(f"{target} would be written over the input {victim}; aggan never overwrites an "
                                f"input: choose another --out, or add --suffix (e.g. --suffix _out)")


def is_marked(path: Path, command: str) -> bool:
    """Whether ``path`` is a PNG that ``aggan <command>`` wrote (its Software text chunk)."""
    from PIL import Image

    try:
        with Image.open(path) as im:
            return im.format == "PNG" and im.info.get("Software") == mark(command)
    except Exception:  # noqa: BLE001 - anything unreadable is not ours
        return False


def mark(command: str) -> str:
    return f"aggan {command}"


def output_path(out_dir: Path, name: str) -> Path:
    """``out_dir/name``, refusing anything that would land outside ``out_dir``."""
    target = out_dir / name
    if not target.resolve().is_relative_to(out_dir.resolve()):
        raise DataError(f"output name {name} would be written outside {out_dir}; rename the input")
    return target


# ---------------------------------------------------------------------------------------------
# the output folder


@contextlib.contextmanager
def output_folder(out_dir: Path) -> Iterator[None]:
    """Create ``out_dir`` (and missing parents), or raise one line saying why it cannot be; on the way
    out, remove the folders created here if nothing was written into them (every input failed)."""
    from .errors import os_reason

    if out_dir.exists() and not out_dir.is_dir():
        raise DataError(f"--out {out_dir} is a file; give a folder")
    missing = [folder for folder in (out_dir, *out_dir.parents) if not folder.exists()]
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
    except OSError as exc:  # a file in the way, no permission, a read-only or virtual file system
        raise DataError(f"cannot create the output folder {out_dir} ({os_reason(exc)}); choose another --out") from None
    if not os.access(out_dir, os.W_OK | os.X_OK):
        raise DataError(f"cannot write into the output folder {out_dir} (permission denied); choose another --out")
    try:
        yield
    finally:
        for folder in missing:  # deepest first
            try:
                folder.rmdir()  # only when empty
            except OSError:
                break


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
    except MemoryError:
        raise DataError(f"not enough memory to write {path}; resize the input first") from None
    finally:
        if tmp.exists():
            tmp.unlink()
    return path


def _save_png(image: Any, path: Path, command: str) -> Path:
    """A PNG with the command's mark and the colour metadata in ``image.info`` (PIL writes the ICC
    profile from there itself; PNG's sRGB, gAMA and cHRM chunks are added here)."""
    import struct

    from PIL.PngImagePlugin import PngInfo

    info = PngInfo()
    info.add_text("Software", mark(command))  # how a later run recognises its earlier outputs
    colour = image.info
    if "srgb" in colour:
        info.add(b"sRGB", bytes([int(colour["srgb"])]))
    if "gamma" in colour:
        info.add(b"gAMA", struct.pack(">I", round(colour["gamma"] * 100_000)))
    if "chromaticity" in colour:
        info.add(b"cHRM", struct.pack(">8I", *(round(v * 100_000) for v in colour["chromaticity"])))
    return _save(path, lambda tmp: image.save(tmp, format="PNG", compress_level=PNG_LEVEL, pnginfo=info))


def _save_npy(mask: Any, path: Path) -> Path:
    import numpy as np

    def write(tmp: Path) -> None:
        with open(tmp, "wb") as f:  # a file object: np.save would append ".npy" to a bare name
            np.save(f, mask.astype(np.float32))

    return _save(path, write)


def write_outputs(result, stem: PurePosixPath, outputs: Outputs, *, threshold: float | None,
                  written: list[Path]) -> None:
    """Write every file ``outputs`` names for one translated image, appending each path to ``written``
    as soon as it exists (so that a failure half way still reports the files before it)."""
    import numpy as np

    for ending in outputs.endings:
        target = output_path(outputs.out_dir, f"{stem}{outputs.suffix}{ending}")
        if ending == "_mask.npy":
            mask = result.mask if threshold is None else (result.mask > threshold).astype(np.float32)
            written.append(_save_npy(mask, target))
            continue
        try:
            image = {".png": lambda: result.image, "_mask.png": lambda: result.mask_image(threshold),
                     "_overlay.png": result.overlay, "_content.png": lambda: result.content}[ending]()
        except MemoryError:
            raise DataError(f"not enough memory to make {target} ({result.size[0]}×{result.size[1]} px); resize the "
                            "input first") from None
        written.append(_save_png(image, target, outputs.command))


class Writes:
    """Outputs written on two threads while the device works; their paths go to stdout in input order.

    Whatever stops the run (a write error, a full disk, Ctrl-C, SIGTERM), :meth:`close` still waits for
    the writes under way, so no temporary file is left, and prints every file that exists."""

    def __init__(self, echo: Callable[[list[Path]], None]) -> None:
        self.echo = echo
        self.pool = ThreadPoolExecutor(2, thread_name_prefix="aggan-write")
        self.pending: deque[tuple[Future, list[Path]]] = deque()

    def submit(self, write: Callable[..., None], *args: Any, **kwargs: Any) -> None:
        written: list[Path] = []
        with signals_held():  # a Ctrl-C between starting a write and noting it lost the file from stdout
            self.pending.append((self.pool.submit(write, *args, written=written, **kwargs), written))

    def report(self, *, keep: int = 0) -> None:
        """Print the finished writes at the front; wait for the oldest while more than ``keep`` are pending
        (so memory stays bounded). Raises the first write's error, after printing what it wrote."""
        while self.pending and (len(self.pending) > keep or self.pending[0][0].done()):
            future, written = self.pending[0]
            error = future.exception()  # may wait: a Ctrl-C here leaves the write pending, so close() prints it
            with signals_held():  # a Ctrl-C between printing and forgetting printed the paths twice (under load)
                self.echo(written)
                self.pending.popleft()
            if error is not None:
                raise error

    def close(self) -> None:
        """Cancel the writes not started, finish the others, print every path written (errors are
        dropped: this runs while another error, or the normal end, is already on its way)."""
        for future, _ in self.pending:
            future.cancel()
        self.pool.shutdown(wait=True)
        while self.pending:
            with signals_held():
                _, written = self.pending.popleft()
                self.echo(written)


@contextlib.contextmanager
def signals_held() -> Iterator[None]:
    """Ctrl-C and SIGTERM wait until the block is done (they are delivered on leaving it), so that a few
    statements that must happen together do. Python handlers only run in the main thread; elsewhere a no-op.

    Blocking the signals (``pthread_sigmask``) is not enough: it holds them off the main thread only,
    and the kernel then hands the signal to another thread (a writer, a decoder), whose C-level handler
    still makes the main thread run the Python handler inside the block (a path printed twice, under
    load). So the Python handlers themselves wait: inside the block a signal is only noted, and raised
    again once the previous handlers are back."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    noted: list[int] = []
    previous = {}
    for sig in (signal.SIGINT, signal.SIGTERM):
        handler = signal.getsignal(sig)
        if handler not in (signal.SIG_IGN, None):
            previous[sig] = signal.signal(sig, lambda signum, frame: noted.append(signum))
    try:
        yield
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
        for sig in dict.fromkeys(noted):
            signal.raise_signal(sig)  # now the previous handler runs (or the default action ends the process)


class Terminated(KeyboardInterrupt):
    """SIGTERM, raised in the main thread so that the run stops the way Ctrl-C stops it."""


@contextlib.contextmanager
def sigterm_stops_cleanly() -> Iterator[None]:
    """While inside, SIGTERM raises :class:`Terminated` instead of ending the process on the spot (which
    left hidden temporary files and printed none of the files already written)."""
    if threading.current_thread() is not threading.main_thread():
        yield  # signal handlers can only be set from the main thread
        return

    def stop(signum, frame):
        raise Terminated()

    previous = signal.signal(signal.SIGTERM, stop)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


# ---------------------------------------------------------------------------------------------
# the command


def run_translate_command(inputs: list[str], *, ckpt: str | None, direction: str, out: Path | None, size: str,
                          batch_size: int, device: str, precision: str, offline: bool, quiet: bool,
                          masks: bool, overlay: bool = True, content: bool = False,
                          threshold: float | None = None, mask_format: str = "png", suffix: str = "",
                          print0: bool = False, backend: str = "torch", threads: int | None = None,
                          mask_guide: str | int = "auto") -> int:
    """Run ``translate`` (``masks=False``) or ``export-masks``; return the exit code (1 if any input
    failed, 143 after SIGTERM). ``ckpt=None`` (no ``--ckpt``) uses the bundled demo model, and says so.

    ``backend="onnxruntime"`` runs exported ONNX files and never imports torch (docs/deploy.md).
    ``threads``: CPU threads (None: PyTorch's follow the machine's load, onnxruntime keeps its own).
    ``mask_guide``: the mask guide's radius, ``"auto"``, ``"trained"`` or pixels (docs/translate.md)."""
    from rich.console import Console
    from rich.markup import escape

    from .config import parse_mask_guide
    from .imaging import check_threshold, parse_size
    from .weights import DEFAULT_CHECKPOINT, describe_default_checkpoint

    console = Console(stderr=True, highlight=False, soft_wrap=True)
    if batch_size < 1:
        raise ConfigError(f"--batch-size must be at least 1, got {batch_size}")
    if threshold is not None:
        check_threshold(threshold)
    parse_size(size)
    mask_guide = parse_mask_guide(mask_guide)
    check_suffix(suffix)
    out_dir = out if out is not None else Path("masks" if masks else "translated")
    outputs = _outputs(out_dir, suffix, masks=masks, overlay=overlay, content=content, mask_format=mask_format)

    found = leave_out_earlier_outputs(collect_inputs(inputs), outputs)
    if not found.files:
        listed = ", ".join(repr(p) for p in inputs)
        left_out = f" (only {len(found.earlier)} earlier output(s) of this command)" if found.earlier else ""
        raise DataError(f"no images found in {listed}{left_out}: no file, folder or glob pattern matched an image "
                        f"({' '.join(IMAGE_EXTENSIONS)})")
    refuse_overwriting_inputs(found, outputs)
    _warn_about_inputs(console, found)
    if out_dir.suffix.lower() in IMAGE_EXTENSIONS and not out_dir.is_dir():
        console.print(f"[yellow]warning:[/] --out {escape(str(out_dir))} is a folder, not a file name: the outputs go "
                      f"inside it ({escape(str(out_dir / 'NAME'))}{outputs.endings[0]})")
    if ckpt is None:
        ckpt = DEFAULT_CHECKPOINT
        console.print(f"[yellow]note:[/] no --ckpt given, so using {describe_default_checkpoint()}; pass --ckpt with "
                      "your own run, folder or ORG/REPO for anything else")
    try:
        with sigterm_stops_cleanly(), output_folder(out_dir):
            return _translate_all(console, found, outputs, ckpt=ckpt, direction=direction, size=size,
                                  batch_size=batch_size, device=device, precision=precision, offline=offline,
                                  quiet=quiet, threshold=threshold, backend=backend, threads=threads,
                                  mask_guide=mask_guide,
                                  echo=lambda paths: echo_paths(paths, print0=print0))
    except Terminated:
        console.print("[bold red]error:[/] terminated (SIGTERM); every file written is listed on stdout")
        return 143


def _warn_about_inputs(console, found: Inputs) -> None:
    from rich.markup import escape

    for pattern in found.unmatched:
        console.print(f"[yellow]warning:[/] no images in {escape(repr(pattern))}")
    for path, name in found.renamed:
        console.print(f"[yellow]note:[/] {escape(str(path))} would overwrite another input's output; "
                      f"written as {escape(str(name))}")
    if found.earlier:
        console.print(f"[yellow]note:[/] left out {len(found.earlier)} earlier output(s) of this command found among "
                      f"the inputs, e.g. {escape(str(found.earlier[0]))}")
    for pattern, reason in found.missing:
        console.print(f"[yellow]skipped:[/] {escape(pattern)}: {reason}")


def _translate_all(console, found: Inputs, outputs: Outputs, *, ckpt: str, direction: str, size: str,
                   batch_size: int, device: str, precision: str, offline: bool, quiet: bool,
                   threshold: float | None, backend: str, threads: int | None, mask_guide: str | int,
                   echo: Callable[[list[Path]], None]) -> int:
    """Load the model, translate every input, write and report; the exit code."""
    from rich.markup import escape

    # torch (or onnxruntime) loads only now: a mistyped input is reported without waiting for it
    follow_load: Callable[[], Any] = lambda: None
    if backend == "onnxruntime":
        from .onnx_backend import OnnxTranslator

        translator = OnnxTranslator.load(ckpt, direction=direction, size=size, device=device, precision=precision,
                                         offline=offline, threads=threads, mask_guide=mask_guide)
    else:
        from .device import use_threads
        from .inference import Translator

        follow_load = use_threads(threads).adjust  # one thread per core other processes leave free (device.py)
        translator = Translator.load(ckpt, direction=direction, size=size, device=device, precision=precision,
                                     offline=offline, mask_guide=mask_guide)
    run, total, out_dir = translator.checkpoint, len(found.files), outputs.out_dir
    console.print(f"{'exporting masks' if outputs.command == 'export-masks' else 'translating'}: "
                  f"[bold]{escape(translator.label())}[/] with {escape(str(run.path))} (step {run.step}) on "
                  f"{translator.describe_device()}, {translator.precision}, "
                  f"size {escape(translator.describe_size())}{_guide_note(translator)}")
    console.print(f"{total} image{'s' * (total != 1)} → {escape(str(out_dir))}{os.sep}")
    names = dict(found.files)
    failed, done = len(found.missing), 0
    start = time.perf_counter()
    writes = Writes(echo)
    results = translator.translate_many([p for p, _ in found.files], batch_size=batch_size)
    try:
        with _progress(console, total, quiet) as advance:
            for path, result in results:
                if isinstance(result, DataError):
                    console.print(f"[yellow]skipped:[/] {escape(str(result))}")
                    failed += 1
                else:
                    writes.submit(write_outputs, result, names[path], outputs, threshold=threshold)
                    done += 1
                advance()
                follow_load()
                writes.report(keep=2 * batch_size)
            writes.report()
    finally:
        results.close()  # stops the decoding threads
        writes.close()
    elapsed = time.perf_counter() - start
    rate = done / elapsed if elapsed > 0 else float("inf")
    console.print(f"done: {done} image{'s' * (done != 1)} in {elapsed:.1f} s ({rate:.2f} images/s) "
                  f"→ {escape(str(out_dir))}{os.sep}")
    if failed:
        console.print(f"[bold red]error:[/] {failed} of {total + len(found.missing)} inputs failed (listed above)")
        return 1
    return 0


def _guide_note(translator) -> str:
    """``", mask guide 4 px"`` for the header line ("" where the backend does not know it)."""
    text = translator.describe_guide()
    return f", {text}" if text else ""


def _outputs(out_dir: Path, suffix: str, *, masks: bool, overlay: bool, content: bool, mask_format: str) -> Outputs:
    if not masks:
        return Outputs("translate", out_dir, suffix, (".png",), (".png",))
    endings = ("_mask.npy" if mask_format == "npy" else "_mask.png",) + ("_overlay.png",) * overlay \
        + ("_content.png",) * content
    return Outputs("export-masks", out_dir, suffix, endings, ("_mask.png", "_overlay.png", "_content.png"))


# Characters that end a line for str.splitlines() and most tools: escaped in the printed paths, so
# that stdout stays exactly one path per line whatever the file names hold.
_LINE_BREAKS = "\n\r\v\f\x1c\x1d\x1e\x85\u2028\u2029"


def printable(path: str) -> str:
    """``path`` with line breaks written as escapes (``\\n``): one path, one line."""
    if not any(c in _LINE_BREAKS for c in path):
        return path
    return "".join(c.encode("unicode_escape").decode("ascii") if c in _LINE_BREAKS else c for c in path)


def echo_paths(paths: list[Path], *, print0: bool = False) -> None:
    """Print written paths on stdout: one per line (line breaks in names escaped), or each followed by a
    NUL byte with ``print0``, exactly as the file system has them (for ``xargs -0``)."""
    if not paths:
        return
    names = [os.fsencode(str(p) if print0 else printable(str(p))) for p in paths]
    data = b"".join(name + (b"\0" if print0 else b"\n") for name in names)
    stream = sys.stdout
    stream.flush()
    buffer = getattr(stream, "buffer", None)
    if buffer is None:  # a stream without bytes underneath (rich's progress bar redirect)
        stream.write(data.decode(errors="replace"))
    else:
        buffer.write(data)
        buffer.flush()


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
