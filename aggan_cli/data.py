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

from .errors import DataError

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".webp", ".bmp", ".tif", ".tiff")


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
                if getattr(im, "n_frames", 1) > 1:
                    im.seek(0)  # animated GIF/WebP/TIFF: the first frame
                im.load()
                im = ImageOps.exif_transpose(im) or im
                rgb, alpha = _to_rgb(im)
    except FileNotFoundError:
        raise DataError(f"{path}: no such file") from None
    except IsADirectoryError:
        raise DataError(f"{path} is a folder, not an image") from None
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
        raise DataError(f"{path} is too large to decode safely ({exc}); resize it first") from None
    except UnidentifiedImageError:
        raise DataError(f"{path} is not an image file PIL can read (or it is empty)") from None
    except (OSError, ValueError, SyntaxError, EOFError) as exc:
        raise DataError(f"{path} could not be decoded ({str(exc).splitlines()[0] if str(exc) else type(exc).__name__}); "
                        "the file is truncated or corrupt") from None
    return LoadedImage(rgb, alpha, path)


def _to_rgb(im):
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
