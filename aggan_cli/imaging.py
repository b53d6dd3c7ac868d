"""The image side of translation, without torch: decoding inputs, working sizes, the full-resolution
blend in numpy, the result type, and the batching loop that every backend shares.

Two backends run the generator: :class:`~aggan_cli.inference.Translator` (PyTorch) and
:class:`~aggan_cli.onnx_backend.OnnxTranslator` (onnxruntime). Both inherit :class:`TranslatorBase`,
so they decode, size, batch and name results the same way; they differ only in ``_run``. This module
imports numpy and Pillow only, so that the onnxruntime backend works where torch is not installed.
The pipeline both follow is drawn in inference.py's docstring.
"""

from __future__ import annotations

import os
import sys
from collections import deque
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Iterator

import numpy as np

from .errors import ConfigError, DataError, DeviceError

DIRECTIONS = ("a2b", "b2a")
# The working long side is capped at MAX_ASPECT × S: a 1 × 10000 strip would otherwise become 256 × 2,560,000.
MAX_ASPECT = 16
STRIDE = 4  # two stride-2 layers in the generator: its input's height and width are multiples of 4
# The largest working short side (--size N, and a checkpoint's training size for --size auto): a
# 4096-px short side is already 16 M pixels, tens of GB of activations for a 64-wide generator. Checked
# before anything is allocated, so a typo or a hostile config.json costs nothing.
MAX_SIZE = 4096
# Decoded images waiting for the device hold at most this many pixels (at least one image): three
# 9,000 × 9,000 photos decoded ahead would otherwise hold 1.5 GB before the first is translated.
AHEAD_PIXELS = 48_000_000


# ---------------------------------------------------------------------------------------------
# results


@dataclass
class Translation:
    """One translated image; every field has the input's exact width and height."""

    image: Any            # PIL.Image: the translation, RGB (RGBA when the input had transparency)
    mask: np.ndarray      # (H, W) float32 in [0, 1]: 1 = replaced by content, 0 = input kept exactly
    content: Any          # PIL.Image RGB: what the attended region becomes (the paper's R)
    original: Any         # PIL.Image RGB: the decoded input, EXIF orientation applied
    direction: str        # "a2b" or "b2a"
    source: Path | None = None  # the file it came from, if any
    # The input's colour metadata (data.colour_metadata: an RGB ICC profile, PNG's sRGB, gamma and
    # chromaticities), also in ``image.info`` and ``content.info``: saving those as PNG or TIFF keeps the
    # profile; JPEG and WebP need ``icc_profile=result.image.info.get("icc_profile")``.
    colour: dict[str, Any] = field(default_factory=dict)

    @property
    def size(self) -> tuple[int, int]:
        return self.image.size

    def mask_image(self, threshold: float | None = None) -> Any:
        """The mask as 8-bit greyscale (255 = fully attended), or binary 0/255 where ``mask > threshold``."""
        from PIL import Image

        if threshold is None:
            return Image.fromarray(np.rint(self.mask * 255.0).astype(np.uint8), "L")
        return Image.fromarray(np.where(self.mask > check_threshold(threshold), 255, 0).astype(np.uint8), "L")

    def overlay(self) -> Any:
        """A heat map of the mask over the dimmed, desaturated input: read where the model edited at a glance."""
        return attention_overlay(self.original, self.mask)

    def tensors(self):
        """``(image (3, H, W), mask (1, H, W), content (3, H, W))`` as float32 CPU tensors in [0, 1]."""
        import torch

        image = torch.from_numpy(np.array(self.image.convert("RGB"))).permute(2, 0, 1).float() / 255.0
        content = torch.from_numpy(np.array(self.content)).permute(2, 0, 1).float() / 255.0
        return image, torch.from_numpy(self.mask)[None], content


def check_threshold(threshold: float) -> float:
    try:
        value = float(threshold)
    except (TypeError, ValueError):
        value = float("nan")
    if not 0.0 < value < 1.0:  # also False for NaN
        raise ConfigError(f"threshold must be a number strictly between 0 and 1, got {threshold!r}")
    return value


def check_direction(direction: str) -> str:
    if direction not in DIRECTIONS:
        raise ConfigError(f"direction must be 'a2b' or 'b2a', got {direction!r}")
    return direction


# Anchors of a perceptually ordered dark → purple → red → orange → yellow map (in the spirit of
# matplotlib's "inferno"), so that "more attention" always reads as "brighter", also in greyscale print.
_HEAT = np.array([[0, 0, 4], [87, 16, 110], [188, 55, 84], [249, 142, 9], [252, 255, 164]], dtype=np.float32)


def attention_overlay(photo: Any, mask: np.ndarray) -> Any:
    """Blend a heat map of ``mask`` (H, W) over ``photo`` (PIL, H × W), dimmed to grey where not attended."""
    from PIL import Image

    grey = np.asarray(photo.convert("L"), dtype=np.float32)[..., None]      # (H, W, 1)
    base = 40.0 + 0.45 * grey                                                # dimmed: the heat map stands out
    stops = np.linspace(0.0, 1.0, len(_HEAT))
    heat = np.stack([np.interp(mask, stops, _HEAT[:, c]) for c in range(3)], axis=-1)  # (H, W, 3)
    # sqrt: the soft masks GANs learn (often < 0.5) stay visible; 0 attention shows the photo alone.
    alpha = 0.85 * np.sqrt(np.clip(mask, 0.0, 1.0))[..., None]
    out = base * (1.0 - alpha) + heat * alpha
    return Image.fromarray(np.clip(np.rint(out), 0, 255).astype(np.uint8), "RGB")


# ---------------------------------------------------------------------------------------------
# sizes


def parse_size(spec: str | int) -> str | int:
    """``"auto"``, ``"native"`` or a short side in pixels (a multiple of 4, from 8 to MAX_SIZE)."""
    if isinstance(spec, int) and not isinstance(spec, bool):
        value = spec
    else:
        text = str(spec).strip().lower()
        if text in ("auto", "native"):
            return text
        # isascii: str.isdigit() accepts "²" and other digits int() refuses; the length keeps int()
        # away from its 4,300-digit limit
        if not (text.isascii() and text.isdigit()) or len(text) > 12:
            raise ConfigError(f"size must be 'auto', 'native' or a number of pixels, got {spec!r}")
        value = int(text)
    if value < 8 or value % 4 or value > MAX_SIZE:
        hint = min(MAX_SIZE, max(8, value // 4 * 4))
        raise ConfigError(f"size must be a multiple of 4 from 8 to {MAX_SIZE} pixels, got {value}; try {hint}")
    return value


def working_size(height: int, width: int, size: str | int, image_size: int) -> tuple[int, int]:
    """The (h, w) the network sees for an H × W image, before padding to a multiple of 4."""
    if size == "native":
        return height, width
    short = image_size if size == "auto" else int(size)
    # Smaller images are scaled *up* to the training size too: the model then sees objects at the
    # scale it learned, and no detail is lost, because the blend uses the original pixels.
    scale = short / min(height, width)
    scale = min(scale, MAX_ASPECT * short / max(height, width))
    return max(1, round(height * scale)), max(1, round(width * scale))


def padded_size(height: int, width: int) -> tuple[int, int]:
    """Round up to a multiple of 4 (two stride-2 layers) and at least 8, so that the 3-pixel and
    1-pixel reflection pads inside the generator still fit after both downsamplings."""
    return max(8, -(-height // STRIDE) * STRIDE), max(8, -(-width // STRIDE) * STRIDE)


def pad_mode(pad_height: int, pad_width: int, height: int, width: int) -> str:
    """Reflection, which the network is used to, or replication where the pad is too large for
    reflection (tiny images). Shared by both backends so they pad the same way."""
    return "reflect" if pad_height < height and pad_width < width else "replicate"


# ---------------------------------------------------------------------------------------------
# numpy equivalents of the torch path's resize, pad and blend (inference.py), for onnxruntime


def resize_planes(planes: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """Bilinear resize of float32 planes (C, h, w) to (C, H, W), antialiased when shrinking.

    Pillow's ``BILINEAR`` on 32-bit float images is the triangle filter that ``torch``'s
    ``interpolate(mode="bilinear", align_corners=False, antialias=True)`` was written to match, and it
    equals plain bilinear when enlarging: the two agree to float rounding (tests/test_onnx.py).
    """
    from PIL import Image

    height, width = size
    if planes.shape[-2:] == (height, width):
        return planes
    return np.stack([np.asarray(Image.fromarray(np.ascontiguousarray(p, dtype=np.float32)).resize(
        (width, height), Image.Resampling.BILINEAR)) for p in planes])


def pad_planes(x: np.ndarray, height: int, width: int) -> np.ndarray:
    """Pad (B, C, h, w) at the bottom/right to (B, C, height, width), as the torch path does."""
    ph, pw = height - x.shape[-2], width - x.shape[-1]
    if ph == 0 and pw == 0:
        return x
    mode = {"reflect": "reflect", "replicate": "edge"}[pad_mode(ph, pw, x.shape[-2], x.shape[-1])]
    return np.pad(x, ((0, 0), (0, 0), (0, ph), (0, pw)), mode=mode)


# A mask below one level of 8 bits leaves its pixel exactly as it was: the blend takes it as 0. Without
# this, m · (c − x) reaches half a level wherever m > 1 / (2 · |c − x|), so a mask of 0.003 against
# content 200 levels off would still move the pixel by one level (docs/evaluate.md).
UNATTENDED = 1 / 255


def compose(item: "Prepared", mask: np.ndarray, content: np.ndarray, direction: str) -> Translation:
    """Eq. 1 at the input's own resolution, the torch path's ``_compose`` in numpy: ``x + m · (c − x)``
    in float32, in the same order of operations, then rounded to 8 bits.

    ``mask`` is (1, h, w) in [0, 1] and ``content`` (3, h, w) in [-1, 1], straight from the network.
    The blend takes a mask below UNATTENDED as 0 (the mask handed back is the network's), and with ``x``
    integer-valued and ``m`` exactly 0 the output equals the input there, bit for bit.
    """
    from PIL import Image

    full = item.pixels.astype(np.float32)                                      # (H, W, 3) in [0, 255]
    size = full.shape[:2]
    m = np.clip(resize_planes(mask, size)[0], 0.0, 1.0)[..., None]             # (H, W, 1)
    c = np.clip(resize_planes(content, size), -1.0, 1.0).transpose(1, 2, 0)   # (H, W, 3)
    c = (c + np.float32(1.0)) * np.float32(127.5)                              # in [0, 255]
    content_image = Image.fromarray(np.rint(c).astype(np.uint8), "RGB")
    # In place, as the torch path: on 12-MP photos every full-size temporary costs tens of milliseconds.
    out = np.subtract(c, full, out=c)
    np.multiply(out, np.where(m < UNATTENDED, np.float32(0.0), m), out=out)
    np.add(out, full, out=out)                                                 # x + m · (c − x)
    np.rint(out, out=out)
    image = Image.fromarray(np.clip(out, 0, 255, out=out).astype(np.uint8), "RGB")
    return finish(item, image, m[..., 0], content_image, direction)


def finish(item: "Prepared", image: Any, mask: np.ndarray, content: Any, direction: str) -> Translation:
    """The :class:`Translation` of a blended ``image`` (PIL RGB) and its ``mask`` (H, W), as both backends
    make it: the input's transparency put back, and its colour metadata carried over (the pixels are in
    the input's colour space, so the outputs say so, as the input did)."""
    if item.alpha is not None:
        image.putalpha(item.alpha)
    image.info.update(item.colour)
    content.info.update(item.colour)
    return Translation(image=image, mask=np.ascontiguousarray(mask), content=content, original=item.original,
                       direction=direction, source=item.source, colour=dict(item.colour))


# ---------------------------------------------------------------------------------------------
# inputs


@dataclass
class Prepared:
    """A decoded input, ready for a backend."""

    pixels: np.ndarray          # (H, W, 3) uint8
    original: Any               # PIL RGB
    alpha: Any                  # PIL L or None
    source: Path | None
    work: tuple[int, int]       # (h, w) the network sees
    colour: dict[str, Any] = field(default_factory=dict)  # colour metadata to carry to the outputs


def _decode(image: Any) -> tuple[Any, Any, Path | None, dict[str, Any]]:
    """(PIL RGB, alpha or None, source path, colour metadata) for a path, a PIL image, an array or a tensor."""
    from PIL import Image, ImageOps

    from .data import colour_metadata, load_image, to_rgb

    if isinstance(image, (str, os.PathLike)):
        loaded = load_image(image)
        return loaded.rgb, loaded.alpha, loaded.path, loaded.colour
    if isinstance(image, Image.Image):
        rgb, alpha = to_rgb(ImageOps.exif_transpose(image) or image)
        return rgb, alpha, None, colour_metadata(image)
    torch = sys.modules.get("torch")  # a tensor can only exist if torch is imported: never import it here
    if torch is not None and isinstance(image, torch.Tensor):
        image = image.detach().cpu()
        if image.is_floating_point():
            image = image.float()  # numpy has no bfloat16
        return _from_array(image.numpy(), channels_first=True), None, None, {}
    if isinstance(image, np.ndarray):
        return _from_array(image, channels_first=False), None, None, {}
    raise DataError(f"cannot translate a {type(image).__name__}; pass a file path, a PIL image, "
                    "a (3, H, W) tensor or an (H, W, 3) array")


def _from_array(array: np.ndarray, *, channels_first: bool) -> Any:
    """A uint8 image (0-255) or a float image in [0, 1], as (3, H, W) / (1, 3, H, W) tensors or (H, W, 3) arrays."""
    from PIL import Image

    if channels_first:
        if array.ndim == 4 and array.shape[0] == 1:
            array = array[0]
        if array.ndim != 3 or array.shape[0] != 3:
            raise DataError(f"a tensor image must have shape (3, H, W) or (1, 3, H, W), got {tuple(array.shape)}")
        array = array.transpose(1, 2, 0)
    elif array.ndim != 3 or array.shape[2] != 3:
        raise DataError(f"an array image must have shape (H, W, 3), got {tuple(array.shape)}")
    if array.dtype != np.uint8:
        array = array.astype(np.float32)
        if not np.isfinite(array).all() or array.min(initial=0) < 0 or array.max(initial=0) > 1:
            raise DataError("a float image must hold values in [0, 1] (or pass uint8 values in 0-255)")
        array = np.rint(array * 255.0).astype(np.uint8)
    return Image.fromarray(np.ascontiguousarray(array), "RGB")


# ---------------------------------------------------------------------------------------------
# what every backend shares


_END = object()


class TranslatorBase:
    """Decoding, sizing, batching and naming, shared by the PyTorch and onnxruntime translators.

    A backend sets the attributes below and implements ``_forward_and_compose(items, direction)``: one
    forward pass for :class:`Prepared` inputs of equal working size, then a :class:`Translation` for
    each; and ``_is_out_of_memory(exc)``, which recognises its runtime's allocation failures.
    """

    image_size: int                 # the checkpoint's training size, S
    domains: tuple[str, str]        # names of domains A and B
    direction: str                  # the default direction
    size: str | int                 # "auto", "native" or a short side in pixels
    checkpoint: Any                 # where the weights came from (path, step), for the CLI's header line
    device: Any                     # where the network runs: a torch.device, or "cpu" / "cuda" (onnxruntime)

    def __init__(self, *, image_size: int, domains: tuple[str, str], direction: str, size: str | int,
                 checkpoint: Any) -> None:
        self.image_size = int(image_size)
        if not 8 <= self.image_size <= MAX_SIZE:
            raise ConfigError(f"image_size must be from 8 to {MAX_SIZE} pixels, got {image_size}")
        self.domains = (str(domains[0]), str(domains[1]))
        self.direction = check_direction(direction)
        self.size = parse_size(size)
        self.checkpoint = checkpoint

    # -- description

    def label(self, direction: str | None = None) -> str:
        """``"neutral → smile"`` for a2b, the reverse for b2a (the domain names stored in the checkpoint)."""
        a, b = self.domains
        return f"{a} → {b}" if (direction or self.direction) == "a2b" else f"{b} → {a}"

    def mask_guide(self, direction: str | None = None) -> int | None:
        """The mask guide's radius in pixels for ``direction`` (0 = off), or None where it is not known."""
        return None

    def describe_guide(self, direction: str | None = None) -> str:
        """``"mask guide 4 px"``, ``"no mask guide"``, or "" where the backend does not know it."""
        radius = self.mask_guide(direction)
        if radius is None:
            return ""
        return f"mask guide {radius} px" if radius else "no mask guide"

    def describe_size(self) -> str:
        if self.size == "native":
            return "native (the network at full resolution)"
        short = self.image_size if self.size == "auto" else self.size
        return f"{self.size} (network at {short} px short side, blended at full resolution)"

    # -- translation

    def translate(self, image: Any, *, direction: str | None = None) -> Translation:
        """Translate one image (a path, a PIL image, an (H, W, 3) array or a (3, H, W) tensor)."""
        return self._run([self._prepare(image)], check_direction(direction or self.direction))[0]

    def translate_many(self, images: Iterable[Any], *, batch_size: int = 4, direction: str | None = None,
                       workers: int | None = None) -> Iterator[tuple[Any, Translation | DataError]]:
        """Translate many images, yielding ``(input, Translation)`` or ``(input, DataError)`` for an
        input that cannot be read, and carrying on.

        Inputs are decoded on ``workers`` threads ahead of the device; images whose working size is equal
        are batched together (``batch_size`` at most), so results come in a deterministic order that is
        not always the input order. The results equal one-at-a-time translation, pixel for pixel.
        """
        if not isinstance(batch_size, int) or batch_size < 1:
            raise ConfigError(f"batch size must be a whole number >= 1, got {batch_size!r}")
        direction = check_direction(direction or self.direction)
        per_pass = self.images_per_pass(batch_size)
        workers = workers or max(1, min(4, os.cpu_count() or 1))
        window = max(2 * per_pass, 2 * workers)  # decoded images kept ahead, also bounded by AHEAD_PIXELS
        pending = iter(images)
        decoding: deque = deque()  # (input, future, its pixel count from the file header)
        groups: dict[tuple[int, int], list[tuple[Any, Prepared]]] = {}
        pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="aggan-decode")

        def refill() -> None:
            while len(decoding) < window and (not decoding or sum(n for *_, n in decoding) < AHEAD_PIXELS):
                image = next(pending, _END)
                if image is _END:
                    return
                decoding.append((image, pool.submit(self._prepare, image), _pixel_count(image)))

        def flush(key: tuple[int, int]) -> Iterator[tuple[Any, Translation]]:
            group = groups.pop(key)
            results = self._run([item for _, item in group], direction)
            yield from zip((image for image, _ in group), results)

        try:
            refill()
            while decoding:
                image, future, _ = decoding.popleft()
                refill()
                try:
                    item = future.result()
                except DataError as exc:
                    yield image, exc
                    continue
                groups.setdefault(item.work, []).append((image, item))
                if len(groups[item.work]) >= per_pass:
                    yield from flush(item.work)
                elif sum(len(g) for g in groups.values()) > window:
                    yield from flush(next(iter(groups)))  # many different sizes: the oldest group goes
            while groups:
                yield from flush(next(iter(groups)))
        finally:
            pool.shutdown(wait=True, cancel_futures=True)

    def images_per_pass(self, batch_size: int) -> int:
        """How many images share a forward pass: one on the CPU, up to ``batch_size`` elsewhere.

        On the CPU a batch buys nothing (one 256-px image keeps every core busy; docs/translate.md),
        oneDNN picks other kernels for a batch of one than for larger ones when a model has few channels
        (so ``--batch-size`` would change pixels), and large photos batched together multiply memory."""
        return 1 if str(self.device).split(":")[0] == "cpu" else batch_size

    def _prepare(self, image: Any) -> Prepared:
        rgb, alpha, source, colour = _decode(image)
        try:
            pixels = np.asarray(rgb, dtype=np.uint8).copy()  # (H, W, 3); writable, as torch.from_numpy wants
        except MemoryError:
            raise DataError(f"{source or 'an image'}: not enough memory for its {rgb.width}×{rgb.height} pixels; "
                            "resize it first") from None
        height, width = pixels.shape[:2]
        return Prepared(pixels, rgb, alpha, source, working_size(height, width, self.size, self.image_size), colour)

    def _run(self, items: list[Prepared], direction: str) -> list[Translation]:
        """One forward pass for images of equal working size, then a full-resolution blend per image;
        running out of memory anywhere in it is one DeviceError that says how big the request was."""
        try:
            return self._forward_and_compose(items, direction)
        except Exception as exc:  # onnxruntime's errors are not RuntimeErrors: each backend recognises its own
            if not (isinstance(exc, MemoryError) or self._is_out_of_memory(exc)):
                raise
            raise self._out_of_memory(items) from None

    def _out_of_memory(self, items: list[Prepared]) -> DeviceError:
        """Out of memory, with how big the request was and what to lower."""
        height, width = items[0].work
        largest_height, largest_width = max((item.pixels.shape[:2] for item in items), key=lambda hw: hw[0] * hw[1])
        count = len(items)
        lower = []
        if count > 1:
            lower.append(f"--batch-size (now {count} images per pass; 1 is the least memory)")
        if self.size == "native":
            lower.append("--size: use auto or N instead of native")
        elif height * width > 1_000_000:
            lower.append(f"--size (now {self.size}: the network runs at {width}×{height})")
        if not lower:  # the network is small: the full-resolution blend of a very large photo
            lower.append("the size of the photo (resize it)")
        return DeviceError(f"out of memory on {self.device} translating {count} image(s) of up to "
                           f"{largest_width}×{largest_height} px with the network at {width}×{height}; "
                           f"lower {' or '.join(lower)}")

    def _forward_and_compose(self, items: list[Prepared], direction: str) -> list[Translation]:  # pragma: no cover
        raise NotImplementedError

    def _is_out_of_memory(self, exc: Exception) -> bool:  # pragma: no cover - abstract
        raise NotImplementedError


def _pixel_count(image: Any) -> int:
    """Pixels of an input before decoding it (a file's header only); 0 when unknown."""
    if isinstance(image, (str, os.PathLike)):
        from PIL import Image

        if not os.path.isfile(image):
            return 0  # missing, a folder, or a FIFO (opening one waits forever): decoding says what it is
        try:
            with Image.open(image) as im:
                return im.width * im.height
        except Exception:  # noqa: BLE001 - unreadable: decoding says why
            return 0
    shape = getattr(image, "shape", None)  # an (H, W, 3) array or a (3, H, W) / (1, 3, H, W) tensor
    if shape is not None:
        return int(np.prod(shape[-3:])) // 3
    size = getattr(image, "size", None)  # a PIL image
    return size[0] * size[1] if isinstance(size, tuple) and len(size) == 2 else 0
