"""The built-in demo data set: procedural faces, neutral (domain A) → smiling (domain B).

Each face is drawn from a handful of random parameters (position, scale, skin, hair and eye colour,
mouth width) over a cluttered background of random shapes. Domain A draws a straight, neutral mouth;
domain B a smile. Training samples of A and B come from independent parameter streams (unpaired).
The test split pairs every neutral face with its *twin*: the same parameters with a smile, and the
mask of the pixels that change, which is what the demo scores itself against.

Everything is a pure function of ``(seed, split, index)``: no files, no download, the same pixels on
every machine.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .scoring import psnr, roc_auc  # one definition of each for the demo, the tasks and aggan evaluate

_SPLIT_SALT = {"train-a": 11, "train-b": 23, "test": 37}
SUPERSAMPLE = 4  # draw at 4× and downsample: smooth edges without an anti-aliasing rasteriser


@dataclass(frozen=True)
class Face:
    cx: float          # centre, as a fraction of the image side
    cy: float
    r: float           # face radius, fraction of the side
    skin: tuple[int, int, int]
    hair: tuple[int, int, int]
    eyes: tuple[int, int, int]
    mouth_w: float     # half-width of the mouth, fraction of r
    background_seed: int
    plain: bool = False  # the easy variant: a plain background, used by the fast learning test


def _colour(rng: np.random.Generator, lo: int, hi: int) -> tuple[int, int, int]:
    return tuple(int(v) for v in rng.integers(lo, hi, size=3))


def sample_face(rng: np.random.Generator, *, easy: bool = False) -> Face:
    """Random face parameters. ``easy``: centred, one size, on a plain background (for quick tests)."""
    r = float(rng.uniform(0.30, 0.36))
    skin_base = np.array([rng.uniform(150, 245), rng.uniform(110, 200), rng.uniform(80, 170)])
    shift = 0.5 * (0.45 - r)  # the face stays inside the picture, its centre varying by up to ±7%
    return Face(
        cx=float(rng.uniform(0.5 - shift, 0.5 + shift)),
        cy=float(rng.uniform(0.5 - shift, 0.5 + shift)),
        r=r,
        skin=tuple(int(v) for v in np.clip(skin_base, 0, 255)),
        hair=_colour(rng, 10, 140),
        eyes=_colour(rng, 0, 70),
        mouth_w=float(rng.uniform(0.45, 0.55)),
        background_seed=int(rng.integers(0, 2**31 - 1)),
    ) if not easy else Face(
        cx=0.5, cy=0.5, r=0.36, skin=(225, 180, 140), hair=_colour(rng, 10, 140), eyes=(30, 30, 30),
        mouth_w=0.5, background_seed=int(rng.integers(0, 2**31 - 1)), plain=True,
    )


def _background(size: int, seed: int, plain: bool = False):
    from PIL import Image, ImageDraw

    rng = np.random.default_rng(seed)
    s = size * SUPERSAMPLE
    if plain:
        return Image.new("RGB", (s, s), _colour(rng, 60, 200))
    top, bottom = _colour(rng, 0, 256), _colour(rng, 0, 256)
    ramp = np.linspace(0, 1, s)[:, None, None]
    grad = (np.array(top) * (1 - ramp) + np.array(bottom) * ramp) * np.ones((1, s, 1))
    img = Image.fromarray(grad.astype(np.uint8), "RGB")
    draw = ImageDraw.Draw(img)
    for _ in range(int(rng.integers(4, 10))):  # clutter: rectangles, ellipses and lines
        x0, y0 = rng.uniform(-0.2, 1.0, size=2) * s
        w, h = rng.uniform(0.05, 0.45, size=2) * s
        colour = _colour(rng, 0, 256)
        kind = int(rng.integers(0, 3))
        if kind == 0:
            draw.rectangle([x0, y0, x0 + w, y0 + h], fill=colour)
        elif kind == 1:
            draw.ellipse([x0, y0, x0 + w, y0 + h], fill=colour)
        else:
            draw.line([x0, y0, x0 + w, y0 + h], fill=colour, width=max(1, int(rng.uniform(0.01, 0.04) * s)))
    return img


def render(face: Face, size: int, *, smile: bool):
    """Draw ``face`` at ``size``×``size`` with a neutral mouth or a smile; returns an RGB PIL image."""
    from PIL import Image, ImageDraw

    s = size * SUPERSAMPLE
    img = _background(size, face.background_seed, face.plain)
    draw = ImageDraw.Draw(img)
    cx, cy, r = face.cx * s, face.cy * s, face.r * s
    # hair: a darker ellipse behind the top of the head
    draw.ellipse([cx - 1.08 * r, cy - 1.15 * r, cx + 1.08 * r, cy + 0.35 * r], fill=face.hair)
    draw.ellipse([cx - r, cy - 0.95 * r, cx + r, cy + 1.05 * r], fill=face.skin)
    eye_r = 0.12 * r
    for ex in (cx - 0.38 * r, cx + 0.38 * r):
        ey = cy - 0.2 * r
        draw.ellipse([ex - eye_r, ey - eye_r, ex + eye_r, ey + eye_r], fill=face.eyes)
    mw, my = face.mouth_w * r, cy + 0.45 * r
    lip = (150, 30, 40)
    width = max(1, int(0.13 * r))
    if smile:
        # an open grin: the lower half of an ellipse through both mouth corners, with a row of teeth
        box = [cx - mw, my - 0.75 * mw, cx + mw, my + 0.75 * mw]
        draw.chord(box, start=0, end=180, fill=lip)
        draw.rectangle([cx - 0.8 * mw, my, cx + 0.8 * mw, my + 0.22 * mw], fill=(245, 245, 235))
    else:
        draw.line([cx - mw, my + 0.1 * mw, cx + mw, my + 0.1 * mw], fill=lip, width=width)
    return img.resize((size, size), Image.Resampling.LANCZOS)


def train_face(seed: int, domain: str, index: int, *, easy: bool = False) -> Face:
    salt = _SPLIT_SALT["train-a" if domain == "a" else "train-b"]
    return sample_face(np.random.default_rng([seed, salt, index]), easy=easy)


def train_image(seed: int, domain: str, index: int, size: int, *, easy: bool = False):
    """Training image ``index`` of domain ``a`` (neutral) or ``b`` (smiling)."""
    return render(train_face(seed, domain, index, easy=easy), size, smile=domain == "b")


@dataclass
class TestCase:
    neutral: "object"  # PIL RGB
    smiling: "object"  # the ground-truth twin
    change: np.ndarray  # (H, W) bool: where the twins differ


def test_case(seed: int, index: int, size: int, threshold: int = 8, *, easy: bool = False) -> TestCase:
    """Test pair ``index``: a neutral face, its smiling twin, and the region that changes.

    The region is every pixel whose colour differs by more than ``threshold`` (of 255) in any
    channel between the twins: exactly what a perfect translation must touch, and nothing else.
    """
    face = sample_face(np.random.default_rng([seed, _SPLIT_SALT["test"], index]), easy=easy)
    neutral, smiling = render(face, size, smile=False), render(face, size, smile=True)
    diff = np.abs(np.asarray(neutral, dtype=np.int16) - np.asarray(smiling, dtype=np.int16)).max(axis=2)
    return TestCase(neutral, smiling, diff > threshold)


# ---------------------------------------------------------------------------------------------
# scoring a trained a→b generator against the ground truth


@dataclass
class DemoScore:
    mask_auc: float
    background_psnr: float
    foreground_psnr: float
    identity_foreground_psnr: float
    count: int

    @property
    def foreground_gain(self) -> float:
        return self.foreground_psnr - self.identity_foreground_psnr

    def passed(self) -> dict[str, bool]:
        return {"mask_auc": self.mask_auc >= 0.90, "background_psnr": self.background_psnr >= 35.0,
                "foreground_gain": self.foreground_gain >= 3.0}

    def to_dict(self) -> dict[str, float]:
        return {"mask_auc": self.mask_auc, "background_psnr": self.background_psnr,
                "foreground_psnr": self.foreground_psnr, "identity_foreground_psnr": self.identity_foreground_psnr,
                "foreground_gain": self.foreground_gain, "count": self.count}


def score(g_ab, *, seed: int, size: int, count: int = 64, device="cpu", out_dir=None, batch_size: int = 16,
          easy: bool = False) -> DemoScore:
    """Translate ``count`` held-out neutral faces and compare with their smiling twins.

    * mask AUC: how well the attention mask ranks changed pixels above unchanged ones;
    * background PSNR: output vs input outside the change region (high = background left alone);
    * foreground PSNR: output vs the true twin inside the region, next to the identity baseline.
    Outputs are quantised to 8 bits first, as a user would save them. With ``out_dir``, writes each
    input, output, mask and twin there.
    """
    import torch

    cases = [test_case(seed, i, size, easy=easy) for i in range(count)]
    outputs, masks = [], []
    g_ab.eval()
    with torch.inference_mode():
        for start in range(0, count, batch_size):
            chunk = cases[start:start + batch_size]
            x = torch.stack([torch.from_numpy(np.asarray(c.neutral).copy()).permute(2, 0, 1) for c in chunk]).float()
            x = (x / 127.5 - 1.0).to(device)
            out = g_ab(x)
            img = ((out.image.float().clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8).permute(0, 2, 3, 1).cpu().numpy()
            outputs.extend(img)
            masks.extend(out.mask.float()[:, 0].cpu().numpy())
    fg_out, fg_twin, fg_in, bg_out, bg_in = [], [], [], [], []
    for case, out in zip(cases, outputs):
        src, twin, region = np.asarray(case.neutral), np.asarray(case.smiling), case.change
        fg_out.append(out[region]), fg_twin.append(twin[region]), fg_in.append(src[region])
        bg_out.append(out[~region]), bg_in.append(src[~region])
    result = DemoScore(
        mask_auc=roc_auc(np.stack(masks), np.stack([c.change for c in cases])),
        background_psnr=psnr(np.concatenate(bg_out), np.concatenate(bg_in)),
        foreground_psnr=psnr(np.concatenate(fg_out), np.concatenate(fg_twin)),
        identity_foreground_psnr=psnr(np.concatenate(fg_in), np.concatenate(fg_twin)),
        count=count,
    )
    if out_dir is not None:
        _write_examples(out_dir, cases, outputs, masks)
    return result


def _write_examples(out_dir, cases, outputs, masks) -> None:
    import io
    from pathlib import Path

    from PIL import Image

    from .checkpoint import atomic_write_bytes

    out_dir = Path(out_dir)
    for i, (case, out, mask) in enumerate(zip(cases, outputs, masks)):
        for name, image in (("input", case.neutral), ("output", Image.fromarray(out)),
                            ("mask", Image.fromarray((np.clip(mask, 0, 1) * 255).round().astype(np.uint8), "L")),
                            ("target", case.smiling)):
            buffer = io.BytesIO()
            image.save(buffer, format="png")
            atomic_write_bytes(out_dir / f"{i:03d}_{name}.png", buffer.getvalue())
