"""Translating images with a trained checkpoint: load once, any size in, the exact size out.

How one image of any size ``H × W`` is translated in the default mode (``size="auto"``)::

    x (H, W) ──resize, short side → S──▶ (h, w) ──pad to ×4──▶ G ──crop──▶ mask, content (h, w)
    ──bilinear up to (H, W)──▶ out = x + up(mask) · (up(content) − x)        (Eq. 1 at full resolution)

``S`` is the checkpoint's training size, so the network sees objects at the scale it learned. Only the
mask and the content are resampled; ``x`` is the original pixels, so wherever the mask is 0 the output
*is* the input, bit for bit, at any resolution. ``size="native"`` runs the network on the
full-resolution image instead (sharper content, but the model sees objects at a scale it never
trained on, and the cost grows with the pixel count); ``size=N`` runs it with the short side at N.

The same :class:`Translator` serves the Python API (``Translator.load(...).translate(...)``) and the
``aggan translate`` / ``aggan export-masks`` commands.
"""

from __future__ import annotations

import os
from collections import deque
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Iterator

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .device import autocast, precision_name, resolve_device, resolve_precision
from .errors import CheckpointError, ConfigError, DataError, DeviceError

DIRECTIONS = ("a2b", "b2a")
# On the CPU, working images of at least this many pixels run channels-last: 6 % faster at 256², 30 %
# at 1024², but 12 % slower at 64² (docs/performance.md). The weights stay as they are.
CPU_NHWC_PIXELS = 128 * 128
# The working long side is capped at MAX_ASPECT × S: a 1 × 10000 strip would otherwise become 256 × 2,560,000.
MAX_ASPECT = 16
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
        return Image.fromarray(np.where(self.mask > _check_threshold(threshold), 255, 0).astype(np.uint8), "L")

    def overlay(self) -> Any:
        """A heat map of the mask over the dimmed, desaturated input: read where the model edited at a glance."""
        return attention_overlay(self.original, self.mask)

    def tensors(self) -> tuple[Tensor, Tensor, Tensor]:
        """``(image (3, H, W), mask (1, H, W), content (3, H, W))`` as float32 CPU tensors in [0, 1]."""
        image = torch.from_numpy(np.array(self.image.convert("RGB"))).permute(2, 0, 1).float() / 255.0
        content = torch.from_numpy(np.array(self.content)).permute(2, 0, 1).float() / 255.0
        return image, torch.from_numpy(self.mask)[None], content


def _check_threshold(threshold: float) -> float:
    try:
        value = float(threshold)
    except (TypeError, ValueError):
        value = float("nan")
    if not 0.0 < value < 1.0:  # also False for NaN
        raise ConfigError(f"threshold must be a number strictly between 0 and 1, got {threshold!r}")
    return value


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
    return max(8, -(-height // 4) * 4), max(8, -(-width // 4) * 4)


def _pad(x: Tensor, height: int, width: int) -> Tensor:
    """Pad (B, C, h, w) at the bottom/right to (B, C, height, width): reflection, which the network is
    used to, or replication where the pad is too large for reflection (tiny images)."""
    ph, pw = height - x.shape[-2], width - x.shape[-1]
    if ph == 0 and pw == 0:
        return x
    mode = "reflect" if ph < x.shape[-2] and pw < x.shape[-1] else "replicate"
    return F.pad(x, (0, pw, 0, ph), mode=mode)


def _resize(x: Tensor, size: tuple[int, int]) -> Tensor:
    """Bilinear resize of (B, C, h, w); antialiased when shrinking so fine texture does not alias."""
    if tuple(x.shape[-2:]) == tuple(size):
        return x
    shrink = size[0] < x.shape[-2] or size[1] < x.shape[-1]
    try:
        return F.interpolate(x, size=size, mode="bilinear", align_corners=False, antialias=shrink)
    except NotImplementedError:  # antialiased resize is missing on some backends (older MPS builds)
        return F.interpolate(x.cpu(), size=size, mode="bilinear", align_corners=False, antialias=shrink).to(x.device)


# ---------------------------------------------------------------------------------------------
# inputs


@dataclass
class _Prepared:
    """A decoded input, ready for the device."""

    pixels: Tensor              # (3, H, W) uint8 on the CPU
    original: Any               # PIL RGB
    alpha: Any                  # PIL L or None
    source: Path | None
    work: tuple[int, int]       # (h, w) the network sees
    colour: dict[str, Any]      # colour metadata to carry to the outputs


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
    if isinstance(image, Tensor):
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
# the translator


class Translator:
    """Both generators of a checkpoint, loaded once; translates images of any size and number.

    >>> t = Translator.load("smile")                 # a run name, a folder, a weights file or ORG/REPO
    >>> r = t.translate("photo.jpg")                  # or a PIL image, or a (3, H, W) tensor in [0, 1]
    >>> r.image.save("smiling.png"); r.mask_image().save("mask.png")
    """

    def __init__(self, g_ab: nn.Module, g_ba: nn.Module, *, image_size: int, domains: tuple[str, str] = ("A", "B"),
                 device: str | torch.device = "cpu", dtype: torch.dtype | None = None, direction: str = "a2b",
                 size: str | int = "auto", checkpoint: Any = None) -> None:
        self.device = torch.device(device)
        self.dtype = dtype
        self.image_size = int(image_size)
        if not 8 <= self.image_size <= MAX_SIZE:
            raise ConfigError(f"image_size must be from 8 to {MAX_SIZE} pixels, got {image_size}")
        self.domains = (str(domains[0]), str(domains[1]))
        self.direction = _check_direction(direction)
        self.size = parse_size(size)
        self.checkpoint = checkpoint  # the RunCheckpoint it came from, when loaded with Translator.load
        # channels_last lets cuDNN pick its fastest NHWC kernels (tensor cores under bf16/fp16). On the
        # CPU the weights stay NCHW and _run picks the layout by image size (CPU_NHWC_PIXELS).
        self.channels_last = self.device.type == "cuda"
        fmt = torch.channels_last if self.channels_last else torch.contiguous_format
        self.generators = {"a2b": g_ab.to(self.device, memory_format=fmt).eval(),
                           "b2a": g_ba.to(self.device, memory_format=fmt).eval()}

    @classmethod
    def load(cls, ckpt: str | os.PathLike, *, direction: str = "a2b", size: str | int = "auto", device: str = "auto",
             precision: str = "auto", runs_dir: str | os.PathLike | None = None,
             cache_dir: str | os.PathLike | None = None, offline: bool = False) -> "Translator":
        """Load a checkpoint once. ``ckpt`` follows ``--ckpt``'s rules: a path, a run name under the runs
        dir, a cached or bundled name, or a Hugging Face Hub ``ORG/REPO``."""
        from .checkpoint import load_generators
        from .weights import resolve_checkpoint

        _check_direction(direction)
        size = parse_size(size)
        path = resolve_checkpoint(os.fspath(ckpt), runs_dir=runs_dir, cache_dir=cache_dir, offline=offline)
        dev = resolve_device(device)
        dtype = resolve_precision(precision, dev)
        g_ab, g_ba, run = load_generators(path, dev)
        if run.model_config.image_size > MAX_SIZE:  # --size auto would run the network at that short side
            raise CheckpointError(f"{run.path / 'config.json'} says image_size {run.model_config.image_size}, "
                                  f"more than the {MAX_SIZE}-pixel maximum aggan translates at; the checkpoint is "
                                  "damaged")
        return cls(g_ab, g_ba, image_size=run.model_config.image_size, domains=run.domains, device=dev,
                   dtype=dtype, direction=direction, size=size, checkpoint=run)

    # -- description

    def label(self, direction: str | None = None) -> str:
        """``"neutral → smile"`` for a2b, the reverse for b2a (the domain names stored in the checkpoint)."""
        a, b = self.domains
        return f"{a} → {b}" if (direction or self.direction) == "a2b" else f"{b} → {a}"

    @property
    def precision(self) -> str:
        return precision_name(self.dtype)

    def describe_size(self) -> str:
        if self.size == "native":
            return "native (the network at full resolution)"
        short = self.image_size if self.size == "auto" else self.size
        return f"{self.size} (network at {short} px short side, blended at full resolution)"

    # -- translation

    def translate(self, image: Any, *, direction: str | None = None) -> Translation:
        """Translate one image (a path, a PIL image, an (H, W, 3) array or a (3, H, W) tensor)."""
        return self._run([self._prepare(image)], _check_direction(direction or self.direction))[0]

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
        direction = _check_direction(direction or self.direction)
        per_pass = self.images_per_pass(batch_size)
        workers = workers or max(1, min(4, os.cpu_count() or 1))
        window = max(2 * per_pass, 2 * workers)  # decoded images kept ahead, also bounded by AHEAD_PIXELS
        pending = iter(images)
        decoding: deque = deque()  # (input, future, its pixel count from the file header)
        groups: dict[tuple[int, int], list[tuple[Any, _Prepared]]] = {}
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
        return 1 if self.device.type == "cpu" else batch_size

    def _prepare(self, image: Any) -> _Prepared:
        rgb, alpha, source, colour = _decode(image)
        try:
            pixels = torch.from_numpy(np.asarray(rgb, dtype=np.uint8).copy()).permute(2, 0, 1)  # (3, H, W)
        except MemoryError:
            raise DataError(f"{source or 'an image'}: not enough memory for its {rgb.width}×{rgb.height} pixels; "
                            "resize it first") from None
        height, width = pixels.shape[-2:]
        return _Prepared(pixels, rgb, alpha, source, working_size(height, width, self.size, self.image_size), colour)

    def _run(self, items: list[_Prepared], direction: str) -> list[Translation]:
        """One forward pass for images of equal working size, then a full-resolution blend per image;
        running out of memory anywhere in it is one DeviceError that says how big the request was."""
        try:
            return self._forward_and_compose(items, direction)
        except (RuntimeError, MemoryError) as exc:
            error = _out_of_memory(exc, items, self)
            if error is None:
                raise
            raise error from None

    @torch.inference_mode()
    def _forward_and_compose(self, items: list[_Prepared], direction: str) -> list[Translation]:
        height, width = items[0].work
        full = [item.pixels.to(self.device, non_blocking=True).float() for item in items]  # (3, H, W) in [0, 255]
        x = torch.cat([_resize(f[None], (height, width)) for f in full]) / 127.5 - 1.0   # (B, 3, h, w) in [-1, 1]
        x = _pad(x, *padded_size(height, width))                                         # (B, 3, h4, w4)
        if self.channels_last or (self.device.type == "cpu" and height * width >= CPU_NHWC_PIXELS):
            x = x.contiguous(memory_format=torch.channels_last)  # an NHWC input makes every conv run NHWC
        with autocast(self.device, self.dtype):
            out = self.generators[direction](x)
        mask = out.mask[..., :height, :width].float()        # (B, 1, h, w) in [0, 1]
        content = out.content[..., :height, :width].float()  # (B, 3, h, w) in [-1, 1]
        return [self._compose(item, f, mask[i:i + 1], content[i:i + 1], direction)
                for i, (item, f) in enumerate(zip(items, full))]

    def _compose(self, item: _Prepared, full: Tensor, mask: Tensor, content: Tensor, direction: str) -> Translation:
        """Eq. 1 at the input's own resolution: ``x + m · (c − x)`` in float32, then rounded to 8 bits.

        With ``x`` integer-valued and ``m`` exactly 0, ``m · (c − x)`` is exactly 0, so the rounded
        output equals the input there: nothing the model did not attend to changes by even one level.
        """
        size = tuple(full.shape[-2:])
        m = _resize(mask, size)[0].clamp_(0.0, 1.0)                                # (1, H, W)
        c = _resize(content, size)[0].clamp_(-1.0, 1.0).add_(1.0).mul_(127.5)     # (3, H, W) in [0, 255]
        content_image = _to_pil(c.round().to(torch.uint8))
        # In place, on 12-MP photos every full-size temporary costs tens of milliseconds.
        out = c.sub_(full).mul_(m).add_(full).round_().clamp_(0, 255).to(torch.uint8)  # x + m · (c − x)
        image = _to_pil(out)
        if item.alpha is not None:
            image.putalpha(item.alpha)
        image.info.update(item.colour)  # the same colour space as the input: say so, as the input did
        content_image.info.update(item.colour)
        return Translation(image=image, mask=np.ascontiguousarray(m[0].cpu().numpy()), content=content_image,
                           original=item.original, direction=direction, source=item.source, colour=dict(item.colour))


_END = object()


def _to_pil(image: Tensor) -> Any:
    """(3, H, W) uint8 on any device -> PIL RGB."""
    from PIL import Image

    return Image.fromarray(image.permute(1, 2, 0).contiguous().cpu().numpy(), "RGB")


def _check_direction(direction: str) -> str:
    if direction not in DIRECTIONS:
        raise ConfigError(f"direction must be 'a2b' or 'b2a', got {direction!r}")
    return direction


def _out_of_memory(exc: BaseException, items: list[_Prepared], translator: "Translator") -> DeviceError | None:
    """A DeviceError that says how big the request was and what to lower, if ``exc`` is running out of
    memory (CUDA's OutOfMemoryError, the CPU allocator's RuntimeError, Python's MemoryError), else None."""
    oom = getattr(torch, "OutOfMemoryError", torch.cuda.OutOfMemoryError)
    text = str(exc)
    if not (isinstance(exc, (oom, MemoryError)) or "can't allocate memory" in text or "out of memory" in text):
        return None
    height, width = items[0].work
    largest = max(items, key=lambda item: item.pixels.shape[-1] * item.pixels.shape[-2]).pixels
    count = len(items)
    lower = []
    if count > 1:
        lower.append(f"--batch-size (now {count} images per pass; 1 is the least memory)")
    if translator.size == "native":
        lower.append("--size: use auto or N instead of native")
    elif height * width > 1_000_000:
        lower.append(f"--size (now {translator.size}: the network runs at {width}×{height})")
    if not lower:  # the network is small: the full-resolution blend of a very large photo
        lower.append("the size of the photo (resize it)")
    return DeviceError(f"out of memory on {translator.device} translating {count} image(s) of up to "
                       f"{largest.shape[-1]}×{largest.shape[-2]} px with the network at {width}×{height}; "
                       f"lower {' or '.join(lower)}")


def _pixel_count(image: Any) -> int:
    """Pixels of an input before decoding it (a file's header only); 0 when unknown."""
    if isinstance(image, (str, os.PathLike)):
        from PIL import Image

        try:
            with Image.open(image) as im:
                return im.width * im.height
        except Exception:  # noqa: BLE001 - unreadable: decoding says why
            return 0
    if isinstance(image, (np.ndarray, Tensor)):
        return int(np.prod(image.shape[-3:])) // 3
    size = getattr(image, "size", None)
    return size[0] * size[1] if isinstance(size, tuple) and len(size) == 2 else 0
