"""Scoring translations against ground truth: one function for the demo, training-time evaluation,
``aggan evaluate`` and the tests.

Given, for each test image, the input, the translated output and the attention mask, plus the
ground-truth *twin* (the perfect translation) and/or the *true change region*, :func:`score` reports:

* foreground PSNR: output vs twin inside the region, next to the "output = input" baseline;
* background PSNR: output vs input outside the region (∞ when the background is left exactly alone),
  pooled over the set, and its median over the images (the typical scene); and split by distance from the
  region: within NEAR_WIDTH pixels of it (the object's rim: a mask a few pixels off the object's outline)
  and farther away (an edit of something else: a background shape taken for the object);
* image PSNR: output vs twin over the whole image (one number for "how close to perfect");
* mask AUC (how well the mask ranks changed pixels above unchanged ones), mask IoU with the region at a
  threshold of 0.5, the fraction of images whose mask missed the object (its own IoU below MISSED_IOU) with
  the pooled background of the other images, and how binary the mask is: the fraction of mask values in
  (0.1, 0.9), inside and outside the region;
* where the mask's edge sits: its mean in the band of RIM_WIDTH pixels just inside the region's edge and
  in the band just outside (1 and 0 for a mask that steps exactly at the edge; a low inside figure is a
  mask that stops short of the edge, a high outside one a mask that spills over it);
* exactness: the fraction of pixels with mask < 1/255 whose output is bit-identical to the input.

Pixel statistics are pooled over all images (one PSNR over every background pixel of the set, one IoU
of the pooled intersection over the pooled union), so small regions do not dominate. Images are 8-bit
as a user saves them. Without a given region it is derived from the twin: every pixel whose colour
differs from the input's by more than 8 levels in any channel.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Sequence

import numpy as np

# What "crisp attention that stays on the object" means, as numbers (docs/training.md).
TARGETS = {"background_psnr": 40.0, "mask_iou": 0.6, "mask_auc": 0.97, "foreground_gain": 6.0}
REGION_THRESHOLD = 8  # levels of 255: a twin pixel this different from the input is "changed"
RIM_WIDTH = 2  # pixels: the bands either side of the region's edge that the rim figures average over
NEAR_WIDTH = 4  # pixels: the background this close to the region is its rim, the rest is "far"
MISSED_IOU = 0.1  # an image whose mask (at 0.5) overlaps its region less than this has missed the object
# dB: saves whose image PSNR differ by no more than this are a tie on the image, and the better mask (mask
# IoU) wins it (Score.tiebreak): a difference this small is noise of the held-out set, while the masks of
# two such saves can differ by many missed objects (docs/training.md)
TIE_DB = 0.1


def roc_auc(scores: np.ndarray, labels: np.ndarray) -> float:
    """Area under the ROC curve of ``scores`` for binary ``labels`` (Mann-Whitney U, ties averaged)."""
    scores, labels = scores.ravel().astype(np.float64), labels.ravel().astype(bool)
    positives, negatives = int(labels.sum()), int((~labels).sum())
    if positives == 0 or negatives == 0:
        return float("nan")
    order = np.argsort(scores, kind="mergesort")
    sorted_scores = scores[order]
    ranks = np.empty(len(scores), dtype=np.float64)
    _, first, counts = np.unique(sorted_scores, return_index=True, return_counts=True)
    average = first + (counts + 1) / 2.0  # 1-based average rank of each tie group
    ranks[order] = np.repeat(average, counts)
    return float((ranks[labels].sum() - positives * (positives + 1) / 2.0) / (positives * negatives))


def psnr(a: np.ndarray, b: np.ndarray) -> float:
    """PSNR in dB of two uint8 pixel sets (any shape): 10 log10(255² / MSE); inf when identical, nan when empty."""
    if a.size == 0:
        return float("nan")
    mse = float(np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2))
    return float("inf") if mse == 0 else 10.0 * math.log10(255.0**2 / mse)


def json_number(value):
    """JSON has no NaN or infinity: NaN (nothing to measure) becomes null, ±∞ the strings "inf"/"-inf"."""
    if isinstance(value, float) and not math.isfinite(value):
        return None if math.isnan(value) else ("inf" if value > 0 else "-inf")
    return value


def rim_bands(region: np.ndarray, width: int = RIM_WIDTH) -> tuple[np.ndarray, np.ndarray]:
    """(H, W) bool each: the pixels of ``region`` within ``width`` steps (8-connected) of a pixel outside
    it, and the pixels outside it within ``width`` steps of it. The image's border is not an edge: a
    region that reaches it has no inside band there."""
    inner, outer = region, region
    h, w = region.shape
    shifts = [(dy, dx) for dy in range(3) for dx in range(3)]
    for _ in range(width):
        a = np.pad(inner, 1, mode="edge")
        b = np.pad(outer, 1)
        inner = np.logical_and.reduce([a[dy:dy + h, dx:dx + w] for dy, dx in shifts])
        outer = np.logical_or.reduce([b[dy:dy + h, dx:dx + w] for dy, dx in shifts])
    return region & ~inner, outer & ~region


def change_region(source: np.ndarray, twin: np.ndarray) -> np.ndarray:
    """(H, W) bool: where the twin differs from the input by more than REGION_THRESHOLD in any channel."""
    return np.abs(source.astype(np.int16) - twin.astype(np.int16)).max(axis=-1) > REGION_THRESHOLD


@dataclass
class Score:
    count: int
    foreground_psnr: float = float("nan")
    identity_foreground_psnr: float = float("nan")
    background_psnr: float = float("nan")
    # the median over images of each image's own background PSNR: the typical scene, where the pooled
    # figure is ruled by the few scenes whose object the model missed (docs/training.md)
    background_psnr_median: float = float("nan")
    # the pooled background split by distance from the region: within NEAR_WIDTH pixels (a mask off the
    # object's outline by a few pixels) and beyond (an edit of something else); docs/evaluate.md
    background_psnr_near: float = float("nan")
    background_psnr_far: float = float("nan")
    image_psnr: float = float("nan")
    mask_auc: float = float("nan")
    mask_iou: float = float("nan")
    # the fraction of images (of those with a region) whose own mask IoU is below MISSED_IOU: the object
    # missed, usually with something else edited instead; and the pooled background of the other images
    missed_fraction: float = float("nan")
    background_psnr_found: float = float("nan")
    soft_inside: float = float("nan")    # fraction of mask values in (0.1, 0.9) inside the region
    soft_outside: float = float("nan")
    rim_inside: float = float("nan")     # mean mask in the RIM_WIDTH-pixel band just inside the region's edge
    rim_outside: float = float("nan")    # ... and just outside it
    exact_fraction: float = float("nan")  # of pixels with mask < 1/255, the fraction equal to the input

    @property
    def foreground_gain(self) -> float:
        return self.foreground_psnr - self.identity_foreground_psnr

    def to_dict(self) -> dict[str, float]:
        out = asdict(self)
        out["foreground_gain"] = self.foreground_gain
        return out

    def passed(self) -> dict[str, bool]:
        """Each TARGETS measure that could be computed: met or not."""
        values = self.to_dict()
        return {k: values[k] >= v for k, v in TARGETS.items() if not math.isnan(values[k])}

    def quality(self) -> float:
        """One number to pick the best save by (higher is better): the image PSNR against the twins when
        there are twins (it rewards a right edit *and* an untouched background), else the mask IoU."""
        return self.image_psnr if not math.isnan(self.image_psnr) else self.mask_iou

    def tiebreak(self) -> float:
        """What decides between two saves whose :meth:`quality` is within TIE_DB of each other: the mask
        IoU when the quality is the image PSNR and masks were scored; else NaN (the later save wins)."""
        return self.mask_iou if not math.isnan(self.image_psnr) else float("nan")


def better_save(new: tuple[float, float], old: tuple[float, float] | None) -> bool:
    """Is a save scoring ``new`` = (quality, tiebreak) the best so far, over one scoring ``old``? The higher
    quality wins; within TIE_DB of each other, the higher tiebreak, where both have one; a tie after that
    goes to the later save. A NaN quality (nothing to score) beats only nothing. A save that wins on the
    tiebreak gives up at most TIE_DB of quality to the save it replaces."""
    if old is None or math.isnan(old[0]):
        return True
    if math.isnan(new[0]):
        return False
    (q_new, t_new), (q_old, t_old) = new, old
    if abs(q_new - q_old) <= TIE_DB and not math.isnan(t_new) and not math.isnan(t_old) and t_new != t_old:
        return t_new > t_old
    return q_new >= q_old


def score(sources: Sequence[np.ndarray], outputs: Sequence[np.ndarray], masks: Sequence[np.ndarray] | None = None, *,
          twins: Sequence[np.ndarray] | None = None, regions: Sequence[np.ndarray] | None = None) -> Score:
    """Score translations. ``sources``, ``outputs``, ``twins``: (H, W, 3) uint8 each; ``masks``: (H, W)
    float in [0, 1]; ``regions``: (H, W) bool. Images may differ in size from one another."""
    if twins is not None and regions is None:
        regions = [change_region(s, t) for s, t in zip(sources, twins)]
    result = Score(count=len(sources))
    cat = np.concatenate
    if masks is not None:
        m = cat([np.asarray(x, np.float32).ravel() for x in masks])
        untouched = m < 1 / 255
        same = cat([(o == s).all(axis=-1).ravel() for o, s in zip(outputs, sources)])
        result.exact_fraction = float(same[untouched].mean()) if untouched.any() else float("nan")
    if regions is not None:
        inside = cat([r.ravel() for r in regions])
        out_px = cat([o.reshape(-1, 3) for o in outputs])
        src_px = cat([s.reshape(-1, 3) for s in sources])
        result.background_psnr = psnr(out_px[~inside], src_px[~inside])
        near = cat([rim_bands(np.asarray(r, bool), NEAR_WIDTH)[1].ravel() for r in regions])
        result.background_psnr_near = psnr(out_px[near], src_px[near])
        far = ~inside & ~near
        result.background_psnr_far = psnr(out_px[far], src_px[far])
        each = [psnr(o.reshape(-1, 3)[~r.ravel()], s.reshape(-1, 3)[~r.ravel()])
                for o, s, r in zip(outputs, sources, regions)]
        each = [v for v in each if not math.isnan(v)]  # an image that is all region has no background
        result.background_psnr_median = float(np.median(each)) if each else float("nan")
        if twins is not None:
            twin_px = cat([t.reshape(-1, 3) for t in twins])
            result.foreground_psnr = psnr(out_px[inside], twin_px[inside])
            result.identity_foreground_psnr = psnr(src_px[inside], twin_px[inside])
            result.image_psnr = psnr(out_px, twin_px)
        if masks is not None:
            result.mask_auc = roc_auc(m, inside)
            hard = m > 0.5
            union = int((hard | inside).sum())
            result.mask_iou = float((hard & inside).sum() / union) if union else float("nan")
            soft = (m > 0.1) & (m < 0.9)
            result.soft_inside = float(soft[inside].mean()) if inside.any() else float("nan")
            result.soft_outside = float(soft[~inside].mean()) if (~inside).any() else float("nan")
            has_region = [bool(np.asarray(r).any()) for r in regions]
            missed = [has and image_iou(mk, r) < MISSED_IOU for has, mk, r in zip(has_region, masks, regions)]
            result.missed_fraction = sum(missed) / sum(has_region) if any(has_region) else float("nan")
            found = [~np.asarray(r, bool).ravel() & (not miss) for r, miss in zip(regions, missed)]
            result.background_psnr_found = psnr(out_px[cat(found)], src_px[cat(found)])
            bands = [rim_bands(np.asarray(r, bool)) for r in regions]
            band_in, band_out = cat([b[0].ravel() for b in bands]), cat([b[1].ravel() for b in bands])
            result.rim_inside = float(m[band_in].mean()) if band_in.any() else float("nan")
            result.rim_outside = float(m[band_out].mean()) if band_out.any() else float("nan")
    return result


def image_iou(mask: np.ndarray, region: np.ndarray) -> float:
    """IoU of one image's mask at 0.5 with its region (nan when both are empty)."""
    hard, inside = np.asarray(mask, np.float32) > 0.5, np.asarray(region, bool)
    union = int((hard | inside).sum())
    return float((hard & inside).sum() / union) if union else float("nan")


def worst_backgrounds(names: Sequence[str], sources: Sequence[np.ndarray], outputs: Sequence[np.ndarray],
                      masks: Sequence[np.ndarray], regions: Sequence[np.ndarray], count: int) -> list[dict]:
    """The ``count`` images whose background (outside the true region) the translation changed most, worst
    first, leaving out those it left alone: each one's name, background PSNR, share of the whole set's
    background squared error (what the pooled background PSNR counts) and mask IoU at 0.5. On the
    built-in tasks a handful of images carries most of that error (docs/training.md)."""
    rows, total = [], 0.0
    for name, source, output, mask, region in zip(names, sources, outputs, masks, regions):
        inside = np.asarray(region, bool)
        diff = output[~inside].astype(np.float64) - source[~inside].astype(np.float64)
        error = float((diff ** 2).sum())
        total += error
        rows.append({"name": str(name), "background_psnr": psnr(output[~inside], source[~inside]), "error": error,
                     "mask_iou": image_iou(mask, inside)})
    worst = sorted((r for r in rows if r["error"] > 0), key=lambda r: -r["error"])[:count]
    return [{"name": r["name"], "background_psnr": r["background_psnr"], "background_error_share": r["error"] / total,
             "mask_iou": r["mask_iou"]} for r in worst]


def find_partner(folder, name, what: str):
    """The image in ``folder`` named like ``name`` (a relative path without suffix), any image suffix."""
    from .data import IMAGE_EXTENSIONS
    from .errors import DataError

    for suffix in (*IMAGE_EXTENSIONS, *(s.upper() for s in IMAGE_EXTENSIONS)):
        candidate = folder / f"{name}{suffix}"
        if candidate.is_file():
            return candidate
    raise DataError(f"no {what} for input {name} in {folder} (looked for {name}.png, .jpg, ...); "
                    f"name each {what} like its input")


def _check_size(what: str, path, size: tuple[int, int], expected: tuple[int, int], source) -> None:
    from .errors import DataError

    if tuple(size) != tuple(expected):
        raise DataError(f"{what} {path} is {size[0]}×{size[1]} but its input {source} is {expected[0]}×{expected[1]}; "
                        "they must be the same size")


class Evaluator:
    """Held-out images with ground truth, loaded once and scored as often as needed: inputs (PIL RGB),
    their twins and/or true change regions. A built-in task's test split (:meth:`from_task`), a folder
    laid out as ``inputs/`` + ``twins/`` and/or ``masks/`` (:meth:`from_folder`), or any lists."""

    def __init__(self, sources: list, *, twins: list | None = None, regions: list[np.ndarray] | None = None,
                 names: list[str] | None = None) -> None:
        self.sources = sources
        self.twins = [np.asarray(t) for t in twins] if twins else None
        self.regions = regions or None
        self.names = names or [f"{i:03d}" for i in range(len(sources))]

    @classmethod
    def from_files(cls, files, *, twins_dir=None, masks_dir=None) -> "Evaluator":
        """``files``: ``(input path, name)`` pairs, the name being the input's path relative to what was given,
        without suffix (as translate_cli.collect_inputs gives them); each input's twin is ``twins_dir/name.*``
        and its mask ``masks_dir/name.*``. Everything is read and size-checked here, before any model loads."""
        from .data import load_image

        sources, twins, regions, names = [], [], [], []
        for path, name in files:
            twin_path = find_partner(twins_dir, name, "twin") if twins_dir is not None else None
            mask_path = find_partner(masks_dir, name, "mask") if masks_dir is not None else None
            source = load_image(path).rgb
            sources.append(source)
            names.append(str(name))
            if twin_path is not None:
                twin = load_image(twin_path).rgb
                _check_size("twin", twin_path, twin.size, source.size, path)
                twins.append(twin)
            if mask_path is not None:
                mask = load_image(mask_path).rgb.convert("L")
                _check_size("mask", mask_path, mask.size, source.size, path)
                regions.append(np.asarray(mask) > 127)  # white = changed
        return cls(sources, twins=twins or None, regions=regions or None, names=names)

    @classmethod
    def from_folder(cls, folder) -> "Evaluator":
        """A folder laid out as ``inputs/`` (searched recursively) with ``twins/`` and/or ``masks/`` beside it."""
        from pathlib import Path, PurePosixPath

        from .data import find_images
        from .errors import DataError

        folder = Path(folder)
        inputs, twins, masks = folder / "inputs", folder / "twins", folder / "masks"
        if not inputs.is_dir() or not (twins.is_dir() or masks.is_dir()):
            raise DataError(f"{folder} must hold an inputs/ folder and a twins/ and/or masks/ folder beside it, "
                            "with images named alike (docs/evaluate.md)")
        files = [(p, PurePosixPath(p.relative_to(inputs).with_suffix("").as_posix())) for p in find_images(inputs)]
        if not files:
            raise DataError(f"{inputs} has no images")
        return cls.from_files(files, twins_dir=twins if twins.is_dir() else None,
                              masks_dir=masks if masks.is_dir() else None)

    @classmethod
    def from_task(cls, task, *, seed: int, size: int, count: int = 64) -> "Evaluator":
        from .tasks import get_task

        task = get_task(task) if isinstance(task, str) else task
        cases = [task.test_case(seed, i, size) for i in range(count)]
        return cls([c.source for c in cases], twins=[c.twin for c in cases], regions=[c.region for c in cases])

    def run(self, translator, direction: str = "a2b") -> tuple[Score, list]:
        """Translate every input with ``translator`` (an :class:`~aggan_cli.inference.Translator`, so exactly
        what ``aggan translate`` writes) and score; returns the score and the translations, in input order."""
        translations = [translator.translate(source, direction=direction) for source in self.sources]
        result = score([np.asarray(t.original) for t in translations],
                       [np.asarray(t.image.convert("RGB")) for t in translations],
                       [t.mask for t in translations], twins=self.twins, regions=self.regions)
        return result, translations

    def worst(self, translations: list, count: int) -> list[dict]:
        """:func:`worst_backgrounds` of ``translations`` (from :meth:`run`) against this set's regions (or, with
        twins only, the regions the twins give)."""
        sources = [np.asarray(t.original) for t in translations]
        regions = self.regions or [change_region(s, t) for s, t in zip(sources, self.twins)]
        return worst_backgrounds(self.names, sources, [np.asarray(t.image.convert("RGB")) for t in translations],
                                 [t.mask for t in translations], regions, count)

    def __call__(self, g_ab, *, image_size: int, device="cpu") -> tuple[Score, list]:
        """Score generator ``g_ab`` (left in the training mode it had) as a translator at ``image_size``."""
        from .inference import Translator

        was_training = g_ab.training
        try:
            return self.run(Translator(g_ab, g_ab, image_size=image_size, device=device))
        finally:
            g_ab.train(was_training)
