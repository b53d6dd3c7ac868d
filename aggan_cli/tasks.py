"""Built-in translation tasks with ground truth: what ``aggan train --demo TASK`` trains on and scores.

Each task is a pair of unpaired domains drawn procedurally, plus a held-out test split where every
domain-A scene comes with its *twin* (the same scene translated perfectly) and the *true change
region* (the pixels a perfect translation may touch). Everything is a pure function of
``(seed, split, index, size)``: no files, no download, the same pixels on every machine, at any size
from 32 to 256 pixels.

    faces        neutral mouth → open grin, cluttered backgrounds (demo.py; the default demo)
    recolour     one object changes colour: warm hues → cool hues
    texture      one plain object gains zebra stripes
    shape        a disc becomes a square of the same area (true region: the union of both shapes)

``recolour``, ``texture`` and ``shape`` draw their scenes on rich procedural backgrounds (coloured
1/f noise, the power spectrum of natural photographs, with soft shapes and lighting gradients). Their
``-photo`` variants put the same objects on crops of the sample photographs that scikit-image ships
(``pip install "aggan[bench]"``), the closest we can get to natural photos without a download.
"""

from __future__ import annotations

import colorsys
import functools
from dataclasses import dataclass
from typing import Callable

import numpy as np

from .errors import ConfigError

STRIPE_PERIOD = 0.5  # the texture task's stripes, as a fraction of the object's radius
SUPERSAMPLE = 4  # objects are rasterised at 4× and box-filtered: exact anti-aliased coverage
_SALT = {"a": 11, "b": 23, "test": 37}
# scikit-image's colour sample photographs (shipped inside the package, no download)
_PHOTOS = ("astronaut", "coffee", "chelsea", "rocket", "hubble_deep_field", "immunohistochemistry", "retina",
           "cat", "stereo_motorcycle")


@dataclass
class TestCase:
    """One held-out scene: the domain-A input, its perfect translation, and where they may differ."""

    source: "object"      # PIL RGB, domain A
    twin: "object"        # PIL RGB, the ground-truth translation to domain B
    region: np.ndarray    # (H, W) bool: the true change region


# ---------------------------------------------------------------------------------------------
# backgrounds


def pink_noise(rng: np.random.Generator, size: int, channels: int, exponent: float) -> np.ndarray:
    """Gaussian noise with amplitude spectrum 1/f^exponent (exponent 1 ≈ natural photographs),
    normalised to zero mean and unit variance per channel: (size, size, channels) float32."""
    fy = np.fft.fftfreq(size)[:, None]
    fx = np.fft.rfftfreq(size)[None, :]
    f = np.sqrt(fx * fx + fy * fy)
    f[0, 0] = 1.0
    amplitude = f ** -exponent
    amplitude[0, 0] = 0.0
    out = np.empty((size, size, channels), np.float32)
    for c in range(channels):
        spectrum = amplitude * (rng.standard_normal(f.shape) + 1j * rng.standard_normal(f.shape))
        field = np.fft.irfft2(spectrum, s=(size, size))
        out[..., c] = (field - field.mean()) / (field.std() + 1e-8)
    return out


def texture_background(rng: np.random.Generator, size: int) -> np.ndarray:
    """A photo-like procedural background: coloured 1/f noise (luminance detail at every scale, softer
    colour variation), a lighting gradient and a few soft-edged shapes. (size, size, 3) float in [0, 1]."""
    exponent = rng.uniform(0.8, 1.4)  # how rough: 0.8 gravel-like, 1.4 cloud-like
    luma = pink_noise(rng, size, 1, exponent)[..., 0] * rng.uniform(0.08, 0.2)
    chroma = pink_noise(rng, size, 3, exponent + 0.4) * rng.uniform(0.03, 0.12)
    base = rng.uniform(0.15, 0.85, size=3)
    yy, xx = np.mgrid[0:size, 0:size] / size
    angle = rng.uniform(0, 2 * np.pi)
    light = (np.cos(angle) * (xx - 0.5) + np.sin(angle) * (yy - 0.5)) * rng.uniform(0.0, 0.35)
    image = base[None, None, :] + chroma + (luma + light)[..., None]
    for _ in range(int(rng.integers(2, 6))):  # soft clutter: blurred discs and bars of other colours
        cx, cy = rng.uniform(-0.1, 1.1, size=2)
        rx, ry = rng.uniform(0.05, 0.35, size=2)
        blob = np.exp(-(((xx - cx) / rx) ** 2 + ((yy - cy) / ry) ** 2) ** rng.uniform(1.0, 4.0))
        image = image * (1 - 0.8 * blob[..., None]) + 0.8 * blob[..., None] * rng.uniform(0.05, 0.95, size=3)
    return np.clip(image, 0.0, 1.0)


@functools.lru_cache(maxsize=None)
def _photo(name: str) -> np.ndarray:
    try:
        from skimage import data
    except ImportError:
        raise ConfigError("the -photo tasks draw their backgrounds from scikit-image's sample photographs: "
                          'install them with pip install "aggan[bench]" (or pip install scikit-image)') from None
    image = getattr(data, name)()
    if isinstance(image, tuple):  # stereo pairs: the left view
        image = image[0]
    return np.asarray(image)[..., :3]


def photo_background(rng: np.random.Generator, size: int) -> np.ndarray:
    """A random square crop (a third to all of the short side) of a sample photograph, resized to
    ``size`` and maybe mirrored: (size, size, 3) float in [0, 1]."""
    from PIL import Image

    photo = _photo(_PHOTOS[int(rng.integers(len(_PHOTOS)))])
    h, w = photo.shape[:2]
    side = int(min(h, w) * rng.uniform(0.33, 1.0))
    top, left = int(rng.integers(0, h - side + 1)), int(rng.integers(0, w - side + 1))
    crop = Image.fromarray(photo[top:top + side, left:left + side]).resize((size, size), Image.Resampling.LANCZOS)
    out = np.asarray(crop, np.float32) / 255.0
    return out[:, ::-1] if rng.random() < 0.5 else out


# ---------------------------------------------------------------------------------------------
# objects: anti-aliased coverage of a shape, and the colour field painted through it


def _grid(size: int) -> tuple[np.ndarray, np.ndarray]:
    """Sample positions of the supersampled grid, in units of the image side: (S, S) each."""
    s = size * SUPERSAMPLE
    coords = (np.arange(s) + 0.5) / s
    return np.meshgrid(coords, coords)  # x, y


def _coverage(inside: np.ndarray, size: int) -> np.ndarray:
    """Box-filter a supersampled boolean (S, S) down to the fraction covered per pixel: (size, size)."""
    return inside.reshape(size, SUPERSAMPLE, size, SUPERSAMPLE).mean(axis=(1, 3)).astype(np.float32)


@dataclass(frozen=True)
class Blob:
    """A rotated ellipse (``kind="ellipse"``), a disc or an axis-aligned square (side r·√π, the disc's
    area), with a colour and a lighting direction."""

    cx: float
    cy: float
    r: float            # radius (ellipse: semi-major axis), as a fraction of the side
    aspect: float       # semi-minor / semi-major (ellipse only)
    angle: float        # ellipse rotation, radians
    hue: float          # in [0, 1)
    sat: float
    val: float
    light: float        # lighting direction, radians
    detail_seed: int    # the object's own fine texture, shared by both twins


def coverage(blob: Blob, size: int, kind: str) -> np.ndarray:
    x, y = _grid(size)
    dx, dy = x - blob.cx, y - blob.cy
    if kind == "disc":
        inside = dx * dx + dy * dy <= blob.r * blob.r
    elif kind == "square":
        half = blob.r * np.sqrt(np.pi) / 2  # same area as the disc of radius r
        inside = (np.abs(dx) <= half) & (np.abs(dy) <= half)
    else:  # rotated ellipse
        c, s = np.cos(blob.angle), np.sin(blob.angle)
        u, v = (c * dx + s * dy) / blob.r, (-s * dx + c * dy) / (blob.r * blob.aspect)
        inside = u * u + v * v <= 1.0
    return _coverage(inside, size)


def paint(blob: Blob, size: int, *, hue: float | None = None, stripes: bool = False) -> np.ndarray:
    """The object's colour field over the whole image (it is only seen through its coverage): its colour
    lit from one side, a faint texture of its own, and optionally dark/light stripes. (size, size, 3)."""
    rgb = np.array(colorsys.hsv_to_rgb(blob.hue if hue is None else hue, blob.sat, blob.val), np.float32)
    yy, xx = (np.mgrid[0:size, 0:size] + 0.5) / size
    dx, dy = xx - blob.cx, yy - blob.cy
    shade = np.clip(1.0 + 0.35 * (np.cos(blob.light) * dx + np.sin(blob.light) * dy) / blob.r, 0.5, 1.5)
    detail = pink_noise(np.random.default_rng(blob.detail_seed), size, 1, 1.2)[..., 0] * 0.03
    field = rgb[None, None, :] * shade[..., None] + detail[..., None]
    if stripes:
        # zebra stripes: horizontal near-black and near-white bands, half a radius apart, a dark band through
        # the centre. Every parameter is visible in the plain object (its centre and size), so a perfect
        # translation is a function of the input and the twin can be scored against.
        x, y = _grid(size)
        dark = _coverage(np.mod((y - blob.cy) / (STRIPE_PERIOD * blob.r) + 0.25, 1.0) < 0.5, size)[..., None]
        light = (0.92 + detail[..., None]) * shade[..., None] ** 0.3
        field = dark * (0.08 + detail[..., None]) + (1 - dark) * light
    return np.clip(field, 0.0, 1.0)


# ---------------------------------------------------------------------------------------------
# the tasks


@dataclass(frozen=True)
class Scene:
    blob: Blob
    background_seed: int


def _sample_scene(rng: np.random.Generator) -> Scene:
    """Random object and background parameters (the hue is warm: the recolour task's domain A)."""
    r = float(rng.uniform(0.15, 0.26))
    margin = r * 1.05
    hue = float(rng.uniform(-0.05, 0.12)) % 1.0  # reds, oranges, yellows
    return Scene(Blob(cx=float(rng.uniform(margin, 1 - margin)), cy=float(rng.uniform(margin, 1 - margin)), r=r,
                      aspect=float(rng.uniform(0.6, 1.0)), angle=float(rng.uniform(0, np.pi)), hue=hue,
                      sat=float(rng.uniform(0.55, 0.9)), val=float(rng.uniform(0.6, 0.95)),
                      light=float(rng.uniform(0, 2 * np.pi)),
                      detail_seed=int(rng.integers(2**31 - 1))),
                 background_seed=int(rng.integers(2**31 - 1)))


def recolour_hue(hue: float) -> float:
    """The recolour task's ground truth: warm hue h → h + 0.55 of the colour circle (blues, cyans, violets)."""
    return (hue + 0.55) % 1.0


@dataclass(frozen=True)
class Task:
    """A built-in task: its name, its domains' names, and how one scene is drawn in either domain."""

    name: str
    description: str
    domain_names: tuple[str, str]
    draw: Callable[..., tuple[np.ndarray, np.ndarray]] | None  # (scene, size, domain, background) -> image, coverage
    photos: bool = False

    def scene(self, seed: int, split: str, index: int) -> Scene:
        return _sample_scene(np.random.default_rng([seed, _SALT[split], index]))

    def render(self, scene: Scene, size: int, domain: str):
        """(PIL RGB image, (H, W) float coverage of the object) of ``scene`` in domain ``a`` or ``b``."""
        from PIL import Image

        background = (photo_background if self.photos else texture_background)(
            np.random.default_rng(scene.background_seed), size)
        colour, alpha = self.draw(scene.blob, size, domain)
        image = background * (1 - alpha[..., None]) + colour * alpha[..., None]
        return Image.fromarray(np.rint(image * 255.0).astype(np.uint8), "RGB"), alpha

    def train_image(self, seed: int, domain: str, index: int, size: int):
        return self.render(self.scene(seed, domain, index), size, domain)[0]

    def test_case(self, seed: int, index: int, size: int) -> TestCase:
        scene = self.scene(seed, "test", index)
        source, alpha_a = self.render(scene, size, "a")
        twin, alpha_b = self.render(scene, size, "b")
        # every pixel the object covers in either domain, anti-aliased edges included
        return TestCase(source, twin, np.maximum(alpha_a, alpha_b) > 0.0)


def _draw_recolour(blob: Blob, size: int, domain: str):
    hue = blob.hue if domain == "a" else recolour_hue(blob.hue)
    return paint(blob, size, hue=hue), coverage(blob, size, "ellipse")


def _draw_texture(blob: Blob, size: int, domain: str):
    return paint(blob, size, stripes=domain == "b"), coverage(blob, size, "ellipse")


def _draw_shape(blob: Blob, size: int, domain: str):
    return paint(blob, size), coverage(blob, size, "disc" if domain == "a" else "square")


class FacesTask(Task):
    """The original demo (demo.py), behind the same interface."""

    def train_image(self, seed, domain, index, size):
        from .demo import train_image

        return train_image(seed, domain, index, size)

    def test_case(self, seed, index, size):
        from .demo import test_case

        case = test_case(seed, index, size)
        return TestCase(case.neutral, case.smiling, case.change)


def _tasks() -> dict[str, Task]:
    tasks: dict[str, Task] = {"faces": FacesTask("faces", "neutral → smiling procedural faces", ("neutral", "smile"), None)}
    for name, description, names, draw in (
        ("recolour", "a warm-coloured object turns cool-coloured", ("warm", "cool"), _draw_recolour),
        ("texture", "a plain object gains zebra stripes", ("plain", "striped"), _draw_texture),
        ("shape", "a disc becomes a square of the same area", ("disc", "square"), _draw_shape),
    ):
        tasks[name] = Task(name, description + " on procedural backgrounds", names, draw)
        tasks[f"{name}-photo"] = Task(f"{name}-photo", description + " on sample photographs (needs scikit-image)",
                                      names, draw, photos=True)
    return tasks


TASKS: dict[str, Task] = _tasks()


def get_task(name: str) -> Task:
    try:
        return TASKS[name]
    except KeyError:
        raise ConfigError(f"unknown demo task {name!r}; choose one of {', '.join(TASKS)}") from None


def write_test_split(task: Task | str, folder, *, seed: int, size: int, count: int) -> None:
    """Write a task's held-out scenes as ``aggan evaluate`` reads them: ``folder/inputs/NNN.png``, the
    perfect translations in ``folder/twins/`` and the true change regions (white) in ``folder/masks/``."""
    import io
    from pathlib import Path

    from PIL import Image

    from .checkpoint import atomic_write_bytes

    task = get_task(task) if isinstance(task, str) else task
    folder = Path(folder)
    for i in range(count):
        case = task.test_case(seed, i, size)
        region = Image.fromarray(np.where(case.region, 255, 0).astype(np.uint8), "L")
        for sub, image in (("inputs", case.source), ("twins", case.twin), ("masks", region)):
            buffer = io.BytesIO()
            image.save(buffer, format="png")
            atomic_write_bytes(folder / sub / f"{i:03d}.png", buffer.getvalue())


class TaskSource:
    """One domain of a built-in task, rendered on the fly: ``len``, ``load(i) -> PIL``, ``name``."""

    def __init__(self, task: Task | str, domain: str, *, seed: int, size: int, count: int) -> None:
        self.task = get_task(task) if isinstance(task, str) else task
        self.domain, self.seed, self.size, self.count = domain, seed, size, count
        self.name = self.task.domain_names[0 if domain == "a" else 1]

    def __len__(self) -> int:
        return self.count

    def load(self, index: int):
        return self.task.train_image(self.seed, self.domain, index, self.size)
