"""Real files for tests that read images: awkward sizes, modes, EXIF rotations and broken files, plus
tiny checkpoints whose attention mask is known in advance.

Sizes are PIL's ``(width, height)``. Every writer returns the path it wrote. The pixel content is a
seeded mix of gradients, a disc and noise, so resizing, rotation or a lost channel changes pixels.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image

ORIENTATION = 0x0112  # the EXIF tag that tells viewers how to rotate the stored pixels


# ---------------------------------------------------------------------------------------------
# pixels


def photo_array(size: tuple[int, int], seed: int = 0) -> np.ndarray:
    """(H, W, 3) uint8: smooth gradients, a bright disc off-centre and some noise."""
    width, height = size
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:height, 0:width].astype(np.float32)
    r = 255 * xx / max(1, width - 1)
    g = 255 * yy / max(1, height - 1)
    b = 128 + 100 * np.sin((xx + 2 * yy) / 7.0 + seed)
    disc = (xx - 0.3 * width) ** 2 + (yy - 0.6 * height) ** 2 < (0.2 * min(width, height)) ** 2
    image = np.stack([r, g, b], axis=-1)
    image[disc] = [250, 240, 30]
    image += rng.normal(0, 12, image.shape)
    return np.clip(np.rint(image), 0, 255).astype(np.uint8)


def alpha_array(size: tuple[int, int]) -> np.ndarray:
    """(H, W) uint8 alpha: a horizontal ramp from transparent to opaque."""
    width, height = size
    return np.tile(np.linspace(0, 255, width).round().astype(np.uint8), (height, 1))


# ---------------------------------------------------------------------------------------------
# files


def write_rgb(path: str | Path, size: tuple[int, int], seed: int = 0, **save) -> Path:
    """An RGB image; the format follows the suffix (JPEG quality 95 unless ``save`` says otherwise)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    if path.suffix.lower() in (".jpg", ".jpeg"):
        save.setdefault("quality", 95)
    Image.fromarray(photo_array(size, seed), "RGB").save(path, **save)
    return path


def write_mode(path: str | Path, mode: str, size: tuple[int, int], seed: int = 0) -> Path:
    """An image stored in PIL mode ``mode``: L, LA, P (with a transparent palette entry), RGBA, CMYK
    (saved as a CMYK JPEG) or I;16 (a 16-bit greyscale PNG)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    rgb = Image.fromarray(photo_array(size, seed), "RGB")
    if mode == "L":
        rgb.convert("L").save(path)
    elif mode == "LA":
        Image.merge("LA", (rgb.convert("L"), Image.fromarray(alpha_array(size), "L"))).save(path)
    elif mode == "RGBA":
        image = rgb.copy()
        image.putalpha(Image.fromarray(alpha_array(size), "L"))
        image.save(path)
    elif mode == "P":
        image = rgb.convert("P", palette=Image.Palette.ADAPTIVE, colors=16)
        image.save(path, transparency=0)  # palette entry 0 is fully transparent
    elif mode == "CMYK":
        rgb.convert("CMYK").save(path, format="JPEG", quality=95)
    elif mode == "I;16":
        grey = np.asarray(rgb.convert("L"), dtype=np.uint16) * 257 + 100  # uses the low byte too
        Image.fromarray(grey.astype(np.uint16)).save(path)
    else:
        raise ValueError(f"no writer for mode {mode!r}")
    with Image.open(path) as check:  # the file really is in the mode the test is about
        expected = {"I;16": ("I;16", "I"), "CMYK": ("CMYK",)}.get(mode, (mode,))
        assert check.mode in expected, (path, check.mode)
    return path


def write_exif_rotated(path: str | Path, stored_size: tuple[int, int], orientation: int = 6, seed: int = 0) -> Path:
    """A JPEG whose stored pixels are ``stored_size`` but whose EXIF orientation tag asks viewers to
    rotate them (6: 90° clockwise, so a viewer shows height × width)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    exif = Image.Exif()
    exif[ORIENTATION] = orientation
    Image.fromarray(photo_array(stored_size, seed), "RGB").save(path, exif=exif, quality=95)
    return path


def write_truncated_jpeg(path: str | Path, size: tuple[int, int] = (64, 48)) -> Path:
    """A JPEG cut off half way, as after an interrupted copy."""
    path = write_rgb(path, size)
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    return path


def write_empty(path: str | Path) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"")
    return path


def write_text(path: str | Path) -> Path:
    """A text file with an image's name."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("this is not a picture\n")
    return path


def displayed(path: str | Path) -> Image.Image:
    """The image as a viewer shows it: EXIF orientation applied, 8-bit RGB (what outputs are compared to)."""
    from aggan_cli.data import load_image

    return load_image(path).rgb


# ---------------------------------------------------------------------------------------------
# tiny checkpoints with a known mask

MASKS = ("random", "zero", "one", "split")


def write_checkpoint(run_dir: str | Path, *, mask: str = "random", seed: int = 0, image_size: int = 32,
                     ngf: int = 4, domains: tuple[str, str] = ("neutral", "smile"), mask_guide: int = 0) -> Path:
    """A run folder with two tiny generators (ngf 4, one residual block).

    ``mask`` sets the attention mask of both generators through the last conv's mask channel:
    ``random`` leaves the random initialisation (mask ≈ 0.5 everywhere); ``zero`` makes it exactly 0
    (output = input), ``one`` exactly 1 (output = content); ``split`` makes the mask logit
    ``±1000 · (f0 − f1) − 300`` of two feature channels, so the mask varies with the image and is
    exactly 0 on about a quarter of it (and the output differs from the input on most of the rest).
    """
    import torch

    from aggan_cli.checkpoint import save_run
    from aggan_cli.config import ModelConfig
    from aggan_cli.networks import AGGAN

    if mask not in MASKS:
        raise ValueError(f"mask must be one of {MASKS}")
    torch.manual_seed(seed)
    # mask_guide 0: the mask is exactly the pattern set below (the guided filter would smooth it)
    config = ModelConfig(ngf=ngf, n_blocks=1, ndf=4, image_size=image_size, mask_guide=mask_guide)
    model = AGGAN(config, with_discriminators=False)
    with torch.no_grad():
        for sign, g in ((1.0, model.g_ab), (-1.0, model.g_ba)):
            last = g.net[-1]  # Conv2d(ngf, 4, 7): output channel 0 is the mask logit
            if mask == "random":
                continue
            last.weight[0].zero_()
            last.bias[0] = {"zero": -1000.0, "one": 1000.0, "split": -300.0}[mask]
            if mask == "split":
                last.weight[0, 0, 3, 3] = 1000.0 * sign  # the 7×7 kernel's centre tap
                last.weight[0, 1, 3, 3] = -1000.0 * sign
    return save_run(run_dir, model_config=config, g_ab=model.g_ab, g_ba=model.g_ba, step=1, domains=domains)
