"""Images in: discovery, robust decoding, and the unpaired training data set.

Every file a user may have is read the same way, in training and in translation: EXIF orientation
applied; greyscale, palette (with transparency), CMYK, 16-bit and float images converted to 8-bit RGB;
the alpha channel kept aside for outputs that want it; animated files give their first frame. A file
that cannot be decoded raises :class:`DataError` naming it.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable

import numpy as np

from .errors import DataError

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".webp", ".bmp", ".tif", ".tiff", ".gif")


def is_image_file(path: str | Path) -> bool:
    return Path(path).suffix.lower() in IMAGE_EXTENSIONS


def find_images(folder: str | Path) -> list[Path]:
    """All image files under ``folder`` (recursive, case-insensitive extensions), in a stable order.
    Hidden files and folders (``.DS_Store``, ``.ipynb_checkpoints``) are skipped."""
    folder = Path(folder)
    found = []
    for path in folder.rglob("*"):
        rel = path.relative_to(folder)
        if any(part.startswith(".") for part in rel.parts):
            continue
        if path.is_file() and is_image_file(path):
            found.append(path)
    return sorted(found, key=lambda p: p.relative_to(folder).as_posix())


@dataclass
class LoadedImage:
    rgb: "object"            # PIL.Image.Image in mode RGB, orientation applied
    alpha: "object | None"   # PIL.Image.Image in mode L, or None when the file has no transparency
    path: Path


def load_image(path: str | Path) -> LoadedImage:
    """Decode ``path`` fully into 8-bit RGB (+ alpha if present). Raises DataError for anything unreadable."""
    from PIL import Image, ImageOps, UnidentifiedImageError

    path = Path(path)
    try:
        with warnings.catch_warnings():
            # PIL warns, then raises, on decompression bombs; make the warning an error too.
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(path) as im:
                _check_pixels(im, path)
                if getattr(im, "n_frames", 1) > 1:
                    im.seek(0)  # animated GIF/WebP/TIFF: the first frame
                im.load()
                im = ImageOps.exif_transpose(im) or im
                rgb, alpha = to_rgb(im)
    except FileNotFoundError:
        raise DataError(f"{path}: no such file") from None
    except IsADirectoryError:
        raise DataError(f"{path} is a folder, not an image") from None
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
        raise DataError(f"{path} is too large to decode safely ({exc}); resize it first") from None
    except UnidentifiedImageError:
        raise DataError(f"{path} is not an image file PIL can read (or it is empty)") from None
    except (OSError, ValueError, SyntaxError, EOFError, TypeError, IndexError, KeyError) as exc:  # PIL's decoders raise all of these
        raise DataError(f"{path} could not be decoded ({str(exc).splitlines()[0] if str(exc) else type(exc).__name__}); "
                        "the file is truncated or corrupt") from None
    return LoadedImage(rgb, alpha, path)


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


def to_rgb(im):
    """Any PIL mode -> (RGB image, alpha image or None)."""
    import numpy as np
    from PIL import Image

    alpha = None
    if im.mode == "P":
        im = im.convert("RGBA" if "transparency" in im.info else "RGB")
    elif im.mode in ("I;16", "I;16B", "I;16L", "I;16N", "I", "F"):
        arr = np.asarray(im, dtype=np.float64)
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


def check_images(paths: Iterable[Path]) -> tuple[list[Path], list[tuple[Path, str]]]:
    """Split ``paths`` into the decodable ones and ``(path, reason)`` for the rest."""
    good, bad = [], []
    for path in paths:
        try:
            load_image(path)
        except DataError as exc:
            bad.append((path, str(exc)))
        else:
            good.append(path)
    return good, bad


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

    def describe(self, index: int) -> str:
        return str(self.paths[index])


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

    def describe(self, index: int) -> str:
        return f"demo {self.name} #{index}"


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


def ignore_interrupts(worker_id: int) -> None:
    """DataLoader ``worker_init_fn``: let the trainer alone answer Ctrl-C and a scheduler's SIGTERM.

    A terminal's Ctrl-C, and SLURM's SIGTERM on preemption, reach every process of the job; a worker
    that died of one mid-transfer crashed the trainer before it could save. So workers ignore SIGINT,
    and take SIGTERM only from their parent (how the DataLoader and multiprocessing stop a worker):
    a thread waits for SIGTERM and reads who sent it; the trainer saves, then stops the workers."""
    import multiprocessing
    import os
    import signal
    import threading

    signal.signal(signal.SIGINT, signal.SIG_IGN)
    if not hasattr(signal, "sigwaitinfo"):  # not POSIX
        return
    creator = multiprocessing.parent_process()  # the trainer, also when a forkserver forked this worker
    parent = creator.pid if creator is not None else os.getppid()
    signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGTERM})  # inherited by threads started from here on

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
