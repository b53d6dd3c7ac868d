"""Images in: discovery, robust decoding, and the unpaired training data set.

Every file a user may have is read the same way, in training and in translation: EXIF orientation
applied; greyscale, palette (with transparency), CMYK, 16-bit and float images converted to 8-bit RGB;
the alpha channel kept aside for outputs that want it; animated files give their first frame. A file
that cannot be decoded raises :class:`DataError` naming it.
"""

from __future__ import annotations

import contextlib
import fnmatch
import os
import re
import stat
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator

import numpy as np

from .errors import DataError

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".webp", ".bmp", ".tif", ".tiff", ".gif")


def is_image_file(path: str | Path) -> bool:
    return Path(path).suffix.lower() in IMAGE_EXTENSIONS


def find_images(folder: str | Path) -> list[Path]:
    """All image files under ``folder`` (recursive, case-insensitive extensions), in a stable order.
    Hidden files and folders (``.DS_Store``, ``.ipynb_checkpoints``) are skipped, and so are links to
    folders inside the tree (a link back to a parent would make the walk endless); links to files count."""
    folder = Path(folder)
    found = [path for path in _files_below(folder) if is_image_file(path)]
    return sorted(found, key=lambda p: p.relative_to(folder).as_posix())


def _files_below(folder: Path) -> Iterator[Path]:
    """Regular files (or links to them) under ``folder``, hidden ones left out, folder links not entered."""
    for parent, _ in _folders_below(folder):
        for entry in _entries(parent):
            if not entry.name.startswith(".") and entry.is_file():  # is_file: FIFOs and devices are not images
                yield Path(entry.path)


def _folders_below(folder: Path) -> Iterator[tuple[Path, bool]]:
    """``(folder, True)`` and every non-hidden folder below it, never entering a link to a folder.

    The second item says whether the folder is ``folder`` itself. Unreadable folders are passed over."""
    stack = [(folder, True)]
    while stack:
        current, top = stack.pop()
        yield current, top
        subfolders = [Path(e.path) for e in _entries(current)
                      if not e.name.startswith(".") and e.is_dir(follow_symlinks=False)]
        stack += [(sub, False) for sub in reversed(subfolders)]


def _entries(folder: Path) -> list[os.DirEntry]:
    try:
        with os.scandir(folder) as entries:
            return sorted(entries, key=lambda e: e.name)
    except OSError:  # unreadable, vanished, or not a folder after all
        return []


_GLOB_MAGIC = re.compile(r"[*?[]")


def has_glob_magic(pattern: str) -> bool:
    return _GLOB_MAGIC.search(pattern) is not None


def expand_glob(pattern: str) -> list[Path]:
    """``glob.glob(pattern, recursive=True)``, sorted, except that ``**`` never enters a link to a folder.

    ``glob`` follows such links, so a link back to a parent (``ln -s . loop/s1``) makes ``loop/**``
    endless. Here ``**`` matches zero or more real folders, hidden ones excluded; a ``*`` or a literal
    name still goes through a link, which only ever goes one level deep. Names starting with ``.`` match
    only a pattern part that starts with ``.``, as in ``glob``."""
    parts = Path(pattern).parts
    literal = next((i for i, part in enumerate(parts) if has_glob_magic(part)), len(parts))
    found: list[Path] = []
    _match(Path(*parts[:literal]), parts[literal:], found)
    return sorted(set(found), key=str)


def _match(base: Path, parts: tuple[str, ...], found: list[Path]) -> None:
    """Append to ``found`` every path below ``base`` that matches the remaining pattern ``parts``."""
    if not parts:
        found.append(base)
        return
    part, rest = parts[0], parts[1:]
    if part == "**":
        for folder, top in _folders_below(base):
            if rest:
                _match(folder, rest, found)
            else:  # a final ``**`` matches every folder and file below, as in glob
                if not top:
                    found.append(folder)
                found += [Path(e.path) for e in _entries(folder) if not e.name.startswith(".") and not e.is_dir()]
    elif has_glob_magic(part):
        for entry in _entries(base):
            if entry.name.startswith(".") and not part.startswith("."):
                continue
            if fnmatch.fnmatch(entry.name, part) and (not rest or entry.is_dir()):
                _match(Path(entry.path), rest, found)
    else:
        target = base / part
        if (target.is_dir() if rest else os.path.lexists(target)):
            _match(target, rest, found)


@dataclass
class LoadedImage:
    rgb: "object"            # PIL.Image.Image in mode RGB, orientation applied
    alpha: "object | None"   # PIL.Image.Image in mode L, or None when the file has no transparency
    path: Path
    colour: dict[str, Any] = field(default_factory=dict)  # see colour_metadata: for the outputs to carry


def load_image(path: str | Path) -> LoadedImage:
    """Decode ``path`` fully into 8-bit RGB (+ alpha if present). Raises DataError for anything unreadable."""
    from PIL import Image, ImageOps, UnidentifiedImageError

    path = Path(path)
    _check_regular(path)
    try:
        with warnings.catch_warnings():
            # PIL warns, then raises, on decompression bombs; make the warning an error too.
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(path) as im:
                _check_pixels(im, path)
                if getattr(im, "n_frames", 1) > 1:
                    im.seek(0)  # animated GIF/WebP/TIFF: the first frame
                im.load()
                colour = colour_metadata(im)
                im = ImageOps.exif_transpose(im) or im
                rgb, alpha = to_rgb(im, str(path))
    except FileNotFoundError:
        raise DataError(f"{path}: no such file") from None
    except IsADirectoryError:
        raise DataError(f"{path} is a folder, not an image") from None
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
        raise DataError(f"{path} is too large to decode safely ({exc}); resize it first") from None
    except UnidentifiedImageError:
        raise DataError(f"{path} is not an image file PIL can read (or it is empty)") from None
    except MemoryError:
        raise DataError(f"{path} is too large to decode with the memory available; resize it first") from None
    except (OSError, ValueError, SyntaxError, EOFError, TypeError, IndexError, KeyError) as exc:  # PIL's decoders raise all of these
        raise DataError(f"{path} could not be decoded ({str(exc).splitlines()[0] if str(exc) else type(exc).__name__}); "
                        "the file is truncated or corrupt") from None
    return LoadedImage(rgb, alpha, path, colour)


def _check_regular(path: Path) -> None:
    """A FIFO, socket or device named like an image is refused without opening it (a FIFO would wait
    forever for a writer)."""
    try:
        mode = os.stat(path).st_mode
    except OSError:
        return  # opening says what is wrong
    if not (stat.S_ISREG(mode) or stat.S_ISDIR(mode)):
        raise DataError(f"{path} is not a regular file (a pipe, socket or device), not an image")


def _check_pixels(im, path: Path) -> None:
    """Refuse a picture larger than PIL's decompression-bomb limit before decoding it. PIL only warns
    between 1× and 2× its limit, and turning that warning into an error is not thread-safe (translate
    decodes on several threads), so the size in the header is checked here as well."""
    from PIL import Image

    limit = Image.MAX_IMAGE_PIXELS
    width, height = im.size
    if limit and width * height > limit:
        raise DataError(f"{path} is too large to decode safely ({width}×{height} pixels, more than the {limit:,}-pixel "
                        "limit: a decompression bomb, or a huge scan); resize it first")


def colour_metadata(im) -> dict[str, Any]:
    """What the file says about its colours that still describes the RGB pixels :func:`to_rgb` makes:
    an ICC profile for an RGB colour space (a CMYK or grey profile does not describe them; its colour
    space is bytes 16-19 of the profile header), and PNG's sRGB intent, gamma and chromaticities.
    Keys as PIL names them in ``Image.info``, so an output image can carry them as they are."""
    kept = {}
    profile = im.info.get("icc_profile")
    if isinstance(profile, bytes) and profile[16:20] == b"RGB ":
        kept["icc_profile"] = profile
    for key in ("srgb", "gamma", "chromaticity"):
        if key in im.info:
            kept[key] = im.info[key]
    return kept


def to_rgb(im, name: str = "the image"):
    """Any PIL mode -> (RGB image, alpha image or None). ``name`` names the image in errors."""
    import numpy as np
    from PIL import Image

    alpha = None
    if im.mode == "P":
        im = im.convert("RGBA" if "transparency" in im.info else "RGB")
    elif im.mode in ("I;16", "I;16B", "I;16L", "I;16N", "I", "F"):
        arr = np.asarray(im, dtype=np.float64)
        bad = arr.size - int(np.isfinite(arr).sum())
        if bad:  # a float image (TIFF) with NaN or infinite pixels: no honest 8-bit value for them
            raise DataError(f"{name} has {bad} NaN or infinite pixel(s) (a floating-point image); replace them with "
                            "numbers (e.g. 0) first")
        if im.mode.startswith("I;16"):
            arr = arr / 257.0
        elif im.mode == "I":
            arr = arr / 257.0 if arr.max(initial=0) > 255 else arr
        elif arr.size and arr.max() <= 1.0:  # float images in [0, 1]
            arr = arr * 255.0
        im = Image.fromarray(np.clip(np.rint(arr), 0, 255).astype(np.uint8), "L")
    elif im.mode in ("RGBa", "La"):
        im = im.convert("RGBA")
    elif im.mode == "1":
        im = im.convert("L")
    if im.mode == "RGBA":
        alpha = im.getchannel("A")
        if alpha.getextrema() == (255, 255):
            alpha = None
        return im.convert("RGB"), alpha
    if im.mode == "LA":
        alpha = im.getchannel("A")
        if alpha.getextrema() == (255, 255):
            alpha = None
        return im.getchannel("L").convert("RGB"), alpha
    if im.mode != "RGB":
        im = im.convert("RGB")  # L, CMYK, YCbCr, LAB, HSV ...
    return im, alpha


# ---------------------------------------------------------------------------------------------
# training data: two unpaired sources, deterministic augmentation, an endless epoch sampler


class FolderSource:
    """The images of one domain folder."""

    def __init__(self, paths: list[Path], name: str, skipped: list[tuple[Path, str]] | None = None) -> None:
        self.paths = list(paths)
        self.name = name
        self.skipped = list(skipped or [])  # (path, reason) for files found but left out

    def __len__(self) -> int:
        return len(self.paths)

    def load(self, index: int):
        return load_image(self.paths[index]).rgb


class DemoSource:
    """One domain of the procedural demo faces (see demo.py), rendered on the fly."""

    def __init__(self, domain: str, *, seed: int, size: int, count: int, easy: bool = False) -> None:
        self.domain, self.seed, self.size, self.count, self.easy = domain, seed, size, count, easy
        self.name = "neutral" if domain == "a" else "smile"

    def __len__(self) -> int:
        return self.count

    def load(self, index: int):
        from .demo import train_image

        return train_image(self.seed, self.domain, index, self.size, easy=self.easy)


def open_domain(folder: str | Path, label: str, *, minimum: int) -> FolderSource:
    """Find the images of a domain folder, checking what can be checked before training starts."""
    from PIL import Image

    folder = Path(folder)
    if not folder.exists():
        raise DataError(f"{label} folder {folder} does not exist")
    if not folder.is_dir():
        raise DataError(f"{label} must be a folder of images, but {folder} is a file")
    paths = find_images(folder)
    if not paths:
        raise DataError(f"{label} folder {folder} has no images ({', '.join(IMAGE_EXTENSIONS)}, searched recursively)")
    # Cheap header check (no full decode): drops empty files, non-images and decompression bombs
    # before any work starts; each is named in ``skipped``. Files that fail later, while decoding
    # (a truncated JPEG), are skipped by the data set and named then.
    usable, skipped = [], []
    for path in paths:
        try:
            with Image.open(path) as im:
                _check_pixels(im, path)
        except DataError as exc:
            skipped.append((path, str(exc)))
            continue
        except Exception:  # noqa: BLE001 - any failure means the file is unusable; load_image says why
            skipped.append((path, _why_unreadable(path)))
            continue
        usable.append(path)
    if not usable:
        raise DataError(f"{label} folder {folder} has no images that can be read: all {len(paths)} file(s) "
                        f"failed to open (empty, truncated or not images), e.g. {skipped[0][1]}")
    if len(usable) < minimum:
        raise DataError(f"{label} folder {folder} has {len(usable)} readable image(s) but the batch size needs at "
                        f"least {minimum}; add images or lower --batch-size")
    return FolderSource(usable, folder.name or str(folder), skipped)


def _why_unreadable(path: Path) -> str:
    try:
        load_image(path)
    except DataError as exc:
        return str(exc)
    except Exception as exc:  # noqa: BLE001 - only a description is wanted here
        return f"{path} could not be opened ({type(exc).__name__})"
    return f"{path} could not be opened"


def _augment(image, rng: np.random.Generator, *, size: int, load_size: int, flip: bool):
    """Shorter side to ``load_size``, random ``size`` crop, random horizontal flip; -> (3, size, size) in [-1, 1]."""
    import torch
    from PIL import Image
    from torchvision.transforms.v2 import functional as TF

    w, h = image.size
    scale = load_size / min(w, h)
    nw, nh = max(size, round(w * scale)), max(size, round(h * scale))
    if (nw, nh) != (w, h):
        image = image.resize((nw, nh), Image.Resampling.BICUBIC, reducing_gap=3.0)
    left = int(rng.integers(0, nw - size + 1))
    top = int(rng.integers(0, nh - size + 1))
    image = image.crop((left, top, left + size, top + size))
    tensor = TF.pil_to_tensor(image).to(torch.float32).div_(127.5).sub_(1.0)
    if flip and rng.random() < 0.5:
        tensor = tensor.flip(-1)
    return tensor


def centre_crop(image, *, size: int):
    """Shorter side to ``size``, then the centre ``size`` × ``size`` square; -> (3, size, size) in [-1, 1].
    The deterministic view of an image that sample grids show."""
    import torch
    from torchvision.transforms import InterpolationMode
    from torchvision.transforms.v2 import functional as TF

    image = TF.center_crop(TF.resize(image, size, interpolation=InterpolationMode.BICUBIC), [size, size])
    return TF.pil_to_tensor(image).to(torch.float32).div_(127.5).sub_(1.0)


class UnpairedDataset:
    """Item ``(epoch, i)`` is the i-th A image with a random B image, both augmented.

    All randomness comes from ``(seed, epoch, i)``, so the data are the same whatever the number of
    worker processes, and a resumed run sees exactly what an uninterrupted one would. A file that
    fails to decode is replaced by the next one of its domain and reported in ``bad``.
    """

    def __init__(self, source_a, source_b, *, size: int, load_size: int, flip: bool, seed: int) -> None:
        self.a, self.b = source_a, source_b
        self.size, self.load_size, self.flip, self.seed = size, load_size, flip, seed

    def __len__(self) -> int:
        return max(len(self.a), len(self.b))

    def _load(self, source, index: int, rng, bad: list[str]):
        for attempt in range(len(source)):
            j = (index + attempt) % len(source)
            try:
                image = source.load(j)
            except DataError as exc:
                bad.append(str(exc))
                continue
            return _augment(image, rng, size=self.size, load_size=self.load_size, flip=self.flip)
        raise DataError(f"no image of {source.name} could be decoded: all {len(source)} failed "
                        f"(e.g. {bad[-1] if bad else 'unknown'}); replace the broken files")

    def __getitem__(self, key: tuple[int, int]):
        epoch, i = key
        rng = np.random.default_rng([self.seed, epoch, i])
        bad: list[str] = []
        a = self._load(self.a, i % len(self.a), rng, bad)
        b = self._load(self.b, int(rng.integers(len(self.b))), rng, bad)
        return {"a": a, "b": b, "bad": bad}


class EpochSampler:
    """Endless ``(epoch, index)`` keys: a fresh permutation per epoch, this rank's shard of it, starting
    at ``start`` (a count of keys already consumed by this rank, for exact resume)."""

    def __init__(self, length: int, *, seed: int, rank: int = 0, world: int = 1, start: int = 0) -> None:
        self.length, self.seed, self.rank, self.world, self.start = length, seed, rank, world, start
        self.per_rank = length // world  # equal shards: every rank takes the same number of steps

    def __iter__(self):
        epoch, offset = divmod(self.start, self.per_rank)
        while True:
            perm = np.random.default_rng([self.seed, 7919, epoch]).permutation(self.length)
            shard = perm[self.rank::self.world][: self.per_rank]
            for index in shard[offset:]:
                yield (epoch, int(index))
            epoch, offset = epoch + 1, 0


def worker_context():
    """The start method for DataLoader workers: one that makes them the trainer's own children.

    A worker ends itself when its parent's pid changes (PyTorch's watchdog polls ``os.getppid()``).
    Under ``forkserver`` (Python 3.14's default on Linux, and inherited by any process a forkserver
    started) that parent is a forkserver process in the trainer's process group, which dies of the
    group's SIGTERM (preemption, ``kill -- -PGID``): the workers then quit and the trainer crashed on
    its next batch instead of saving. ``fork`` is what PyTorch's workers used on Linux until then.
    (Not ``spawn``: a fresh interpreter starts library threads before ``ignore_interrupts`` runs, and
    one of them would take the group's SIGTERM with its default action.) Otherwise ``None``: the
    platform's default, whose workers are the trainer's children already."""
    import multiprocessing

    return multiprocessing.get_context("fork") if multiprocessing.get_start_method() == "forkserver" else None


@contextlib.contextmanager
def starting_workers() -> Iterator[None]:
    """Start DataLoader workers inside this block: they begin life with SIGINT and SIGTERM blocked.

    A worker inherits the signal mask of the thread that started it (through fork, and through exec
    for ``spawn``), and so does every thread it starts before ``ignore_interrupts`` runs (PyTorch
    starts its thread pool there when the trainer used more than one thread): none of them may take a
    group's SIGTERM with its default action. A signal for the trainer meanwhile waits, then arrives."""
    import signal

    if not hasattr(signal, "pthread_sigmask"):  # not POSIX
        yield
        return
    before = signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGINT, signal.SIGTERM})
    try:
        yield
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, before)


_worker_deaths: list[RuntimeError] = []
_deferring = False


@contextlib.contextmanager
def deferred_worker_deaths() -> Iterator[None]:
    """Within this block (training), a data-loading worker's death is held back for ``worker_death()``,
    which the trainer asks before each batch, so that it saves a whole step and stops cleanly: PyTorch's
    SIGCHLD handler raises it wherever the trainer is at that moment, mid-update too. Outside the
    block PyTorch's handler acts as it always did. ``watch_worker_deaths`` must follow the DataLoader."""
    global _deferring
    _worker_deaths.clear()
    _deferring = True
    try:
        yield
    finally:
        _deferring = False


def watch_worker_deaths() -> None:
    """Call once the DataLoader's workers started (PyTorch installs its SIGCHLD handler then): wrap that
    handler so that inside ``deferred_worker_deaths`` it records a worker's death instead of raising."""
    import signal
    import threading

    if not hasattr(signal, "SIGCHLD") or threading.current_thread() is not threading.main_thread():
        return
    handler = signal.getsignal(signal.SIGCHLD)
    if not callable(handler) or getattr(handler, "defers_worker_deaths", False):
        return

    def deferring(signum, frame) -> None:
        try:
            handler(signum, frame)
        except RuntimeError as exc:
            if not (_deferring and str(exc).startswith("DataLoader worker")):
                raise
            _worker_deaths.append(exc)

    deferring.defers_worker_deaths = True
    signal.signal(signal.SIGCHLD, deferring)


def worker_death() -> RuntimeError | None:
    """PyTorch's error for a data-loading worker that died inside ``deferred_worker_deaths``, if one did."""
    return _worker_deaths[0] if _worker_deaths else None


def dead_worker(batches: Any, wait: float = 2.0) -> str | None:
    """Fetching a batch failed with a broken connection or pipe: if a worker of the DataLoader iterator
    ``batches`` died, which is then the cause (a batch it had queued names resources only it could hand
    over), PyTorch's words for that death; ``None`` when every worker lives. A worker killed a moment
    ago may still be exiting, so this waits up to ``wait`` seconds for it."""
    import signal
    import time

    workers = list(getattr(batches, "_workers", None) or [])
    deadline = time.monotonic() + wait
    while workers:
        death = worker_death()
        if death is not None:
            return str(death)
        for worker in workers:
            code = worker.exitcode  # polls without blocking; None while it runs
            if code is not None and code < 0:
                return f"DataLoader worker (pid {worker.pid}) is killed by signal: {signal.strsignal(-code) or -code}"
            if code is not None:
                return f"DataLoader worker (pid {worker.pid}) exited unexpectedly with exit code {code}"
        if time.monotonic() >= deadline:
            return None
        time.sleep(0.05)
    return None


def ignore_interrupts(worker_id: int) -> None:
    """DataLoader ``worker_init_fn``: let the trainer alone answer Ctrl-C and a scheduler's SIGTERM.

    A terminal's Ctrl-C, and SLURM's SIGTERM on preemption, reach every process of the job; a worker
    that died of one mid-transfer crashed the trainer before it could save. So workers ignore SIGINT,
    and take SIGTERM only from their parent (how the DataLoader and multiprocessing stop a worker):
    a thread waits for SIGTERM and reads who sent it; the trainer saves, then stops the workers. Both
    signals are blocked in every thread of the worker already (``starting_workers``)."""
    import multiprocessing
    import os
    import signal
    import threading

    signal.signal(signal.SIGINT, signal.SIG_IGN)
    if not hasattr(signal, "sigwaitinfo"):  # not POSIX
        return
    creator = multiprocessing.parent_process()  # the trainer
    parent = creator.pid if creator is not None else os.getppid()
    signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGTERM})  # also when started outside starting_workers

    def wait_for_parent() -> None:
        while signal.sigwaitinfo({signal.SIGTERM}).si_pid != parent:
            pass  # a SIGTERM for the whole job: the trainer handles it
        signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGTERM})
        signal.pthread_kill(threading.get_ident(), signal.SIGTERM)  # default action: end as SIGTERM always did

    threading.Thread(target=wait_for_parent, name="aggan-sigterm", daemon=True).start()


def collate(items: list[dict]):
    import torch

    return {
        "a": torch.stack([it["a"] for it in items]),
        "b": torch.stack([it["b"] for it in items]),
        "bad": [msg for it in items for msg in it["bad"]],
    }
