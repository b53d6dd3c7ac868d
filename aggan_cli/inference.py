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
``aggan translate`` / ``aggan export-masks`` commands. What does not need torch (decoding, sizes, the
batching loop, the result type) lives in imaging.py and is shared with the onnxruntime backend.
"""

from __future__ import annotations

import os
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .device import autocast, describe_device, precision_name, resolve_device, resolve_precision
from .errors import CheckpointError, ConfigError
from .imaging import (MAX_SIZE, UNATTENDED, Prepared, Translation, TranslatorBase, check_direction, finish, pad_mode,
                      padded_size, parse_size)

# On the CPU, working images of at least this many pixels run channels-last: 6 % faster at 256², 30 %
# at 1024², but 12 % slower at 64² (docs/performance.md). The weights stay as they are.
CPU_NHWC_PIXELS = 128 * 128


# ---------------------------------------------------------------------------------------------
# resize and pad on the device


def _pad(x: Tensor, height: int, width: int) -> Tensor:
    """Pad (B, C, h, w) at the bottom/right to (B, C, height, width): reflection, which the network is
    used to, or replication where the pad is too large for reflection (tiny images)."""
    ph, pw = height - x.shape[-2], width - x.shape[-1]
    if ph == 0 and pw == 0:
        return x
    return F.pad(x, (0, pw, 0, ph), mode=pad_mode(ph, pw, x.shape[-2], x.shape[-1]))


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
# the translator


class Translator(TranslatorBase):
    """Both generators of a checkpoint, loaded once; translates images of any size and number.

    >>> t = Translator.load("smile")                 # a run name, a folder, a weights file or ORG/REPO
    >>> r = t.translate("photo.jpg")                  # or a PIL image, or a (3, H, W) tensor in [0, 1]
    >>> r.image.save("smiling.png"); r.mask_image().save("mask.png")
    """

    def __init__(self, g_ab: nn.Module, g_ba: nn.Module, *, image_size: int, domains: tuple[str, str] = ("A", "B"),
                 device: str | torch.device = "cpu", dtype: torch.dtype | None = None, direction: str = "a2b",
                 size: str | int = "auto", checkpoint: Any = None) -> None:
        # checkpoint: the RunCheckpoint it came from, when loaded with Translator.load
        super().__init__(image_size=image_size, domains=domains, direction=direction, size=size, checkpoint=checkpoint)
        self.device = torch.device(device)
        self.dtype = dtype
        # channels_last lets cuDNN pick its fastest NHWC kernels (tensor cores under bf16/fp16). On the
        # CPU the weights stay NCHW and _run picks the layout by image size (CPU_NHWC_PIXELS).
        self.channels_last = self.device.type == "cuda"
        fmt = torch.channels_last if self.channels_last else torch.contiguous_format
        self.generators = {"a2b": g_ab.to(self.device, memory_format=fmt).eval(),
                           "b2a": g_ba.to(self.device, memory_format=fmt).eval()}

    @classmethod
    def load(cls, ckpt: str | os.PathLike, *, direction: str = "a2b", size: str | int = "auto", device: str = "auto",
             precision: str = "auto", runs_dir: str | os.PathLike | None = None,
             cache_dir: str | os.PathLike | None = None, offline: bool = False,
             backend: str = "torch", mask_guide: str | int = "auto") -> "TranslatorBase":
        """Load a checkpoint once. ``ckpt`` follows ``--ckpt``'s rules: a path, a run name under the runs
        dir, a cached or bundled name, or a Hugging Face Hub ``ORG/REPO``.

        ``mask_guide``: the mask guide's radius: ``"auto"`` (what training picked for the model),
        ``"trained"`` (the radius it was trained with) or a number of pixels (0 = off).

        ``backend="onnxruntime"`` returns an :class:`~aggan_cli.onnx_backend.OnnxTranslator` for the files
        ``aggan export`` wrote (same results; see docs/deploy.md)."""
        from .checkpoint import load_generators
        from .weights import resolve_checkpoint

        from .config import parse_mask_guide

        if backend == "onnxruntime":
            from .onnx_backend import OnnxTranslator

            return OnnxTranslator.load(ckpt, direction=direction, size=size, device=device, precision=precision,
                                       runs_dir=runs_dir, cache_dir=cache_dir, offline=offline,
                                       mask_guide=mask_guide)
        if backend != "torch":
            raise ConfigError(f"backend must be 'torch' or 'onnxruntime', got {backend!r}")

        check_direction(direction)
        mask_guide = parse_mask_guide(mask_guide)
        size = parse_size(size)
        path = resolve_checkpoint(os.fspath(ckpt), runs_dir=runs_dir, cache_dir=cache_dir, offline=offline)
        dev = resolve_device(device)
        dtype = resolve_precision(precision, dev)
        g_ab, g_ba, run = load_generators(path, dev, mask_guide=mask_guide)
        if run.model_config.image_size > MAX_SIZE:  # --size auto would run the network at that short side
            raise CheckpointError(f"{run.path / 'config.json'} says image_size {run.model_config.image_size}, "
                                  f"more than the {MAX_SIZE}-pixel maximum aggan translates at; the checkpoint is "
                                  "damaged")
        return cls(g_ab, g_ba, image_size=run.model_config.image_size, domains=run.domains, device=dev,
                   dtype=dtype, direction=direction, size=size, checkpoint=run)

    @property
    def precision(self) -> str:
        return precision_name(self.dtype)

    def describe_device(self) -> str:
        return describe_device(self.device)

    def mask_guide(self, direction: str | None = None) -> int | None:
        """The mask guide's radius in pixels the generator for ``direction`` translates with (0 = off)."""
        return self.generators[check_direction(direction or self.direction)].mask_guide

    @torch.inference_mode()
    def _forward_and_compose(self, items: list[Prepared], direction: str) -> list[Translation]:
        height, width = items[0].work
        full = [torch.from_numpy(item.pixels).permute(2, 0, 1).to(self.device, non_blocking=True).float()
                for item in items]                                                      # (3, H, W) in [0, 255]
        x = torch.cat([_resize(f[None], (height, width)) for f in full]) / 127.5 - 1.0   # (B, 3, h, w) in [-1, 1]
        x = _pad(x, *padded_size(height, width))                                         # (B, 3, h4, w4)
        if self.channels_last or (self.device.type == "cpu" and height * width >= CPU_NHWC_PIXELS):
            x = x.contiguous(memory_format=torch.channels_last)  # an NHWC input makes every conv run NHWC
        with autocast(self.device, self.dtype):  # one pass: translate_many sends one image at a time on the CPU
            out = self.generators[direction](x)
        mask = out.mask[..., :height, :width].float()        # (B, 1, h, w) in [0, 1]
        content = out.content[..., :height, :width].float()  # (B, 3, h, w) in [-1, 1]
        return [self._compose(item, f, mask[i:i + 1], content[i:i + 1], direction)
                for i, (item, f) in enumerate(zip(items, full))]

    def _compose(self, item: Prepared, full: Tensor, mask: Tensor, content: Tensor, direction: str) -> Translation:
        """Eq. 1 at the input's own resolution: ``x + m · (c − x)`` in float32, then rounded to 8 bits.

        The blend takes a mask below ``UNATTENDED`` (1/255) as 0 (the mask handed back is the network's).
        With ``x`` integer-valued and ``m`` exactly 0, ``m · (c − x)`` is exactly 0, so the rounded output
        equals the input there: nothing the model did not attend to changes by even one level.
        """
        size = tuple(full.shape[-2:])
        m = _resize(mask, size)[0].clamp_(0.0, 1.0)                                # (1, H, W)
        c = _resize(content, size)[0].clamp_(-1.0, 1.0).add_(1.0).mul_(127.5)     # (3, H, W) in [0, 255]
        content_image = _to_pil(c.round().to(torch.uint8))
        # In place, on 12-MP photos every full-size temporary costs tens of milliseconds.
        blend = m.masked_fill(m < UNATTENDED, 0.0)                                  # below one level: 0
        out = c.sub_(full).mul_(blend).add_(full).round_().clamp_(0, 255).to(torch.uint8)  # x + m · (c − x)
        return finish(item, _to_pil(out), m[0].cpu().numpy(), content_image, direction)

    def _is_out_of_memory(self, exc: Exception) -> bool:
        """CUDA's OutOfMemoryError, or the CPU allocator's RuntimeError (MemoryError is caught for every backend)."""
        oom = getattr(torch, "OutOfMemoryError", torch.cuda.OutOfMemoryError)
        text = str(exc)
        return isinstance(exc, oom) or (isinstance(exc, RuntimeError)
                                        and ("can't allocate memory" in text or "out of memory" in text))


def _to_pil(image: Tensor) -> Any:
    """(3, H, W) uint8 on any device -> PIL RGB."""
    from PIL import Image

    return Image.fromarray(image.permute(1, 2, 0).contiguous().cpu().numpy(), "RGB")

