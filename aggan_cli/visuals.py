"""Pictures a person reads: sample grids and the metrics plot."""

from __future__ import annotations

import json
from pathlib import Path

import torch
from torch import Tensor

from .checkpoint import atomic_write_bytes


def sample_grid(rows: list[tuple[Tensor, ...]], path: Path) -> None:
    """One row per image: input | attention | content | output | reconstruction; images in [-1, 1],
    masks in [0, 1] shown in grey."""
    import io

    from torchvision.utils import make_grid, save_image

    tiles = []
    for x, mask, content, out, rec in rows:
        for i in range(x.shape[0]):
            m = mask[i].float().expand(3, -1, -1) * 2 - 1
            tiles += [x[i].float(), m, content[i].float(), out[i].float(), rec[i].float()]
    if not tiles:
        return
    grid = make_grid(torch.stack(tiles).cpu(), nrow=5, padding=2, normalize=True, value_range=(-1, 1), pad_value=1.0)
    buffer = io.BytesIO()
    save_image(grid, buffer, format="png")
    atomic_write_bytes(path, buffer.getvalue())


def plot_metrics(metrics_path: Path, out_path: Path) -> None:
    """Losses and mask statistics over steps, as a PNG (refreshed at each save)."""
    import io

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = [json.loads(line) for line in metrics_path.read_text(encoding="utf-8").splitlines() if line.strip()]
    losses = [r for r in rows if "eval" not in r]
    evals = [r for r in rows if "eval" in r]  # held-out scores at each save (trainer._evaluate)
    if not losses:
        return
    steps = [r["step"] for r in losses]
    fig, axes = plt.subplots(1, 4 if evals else 3, figsize=(18 if evals else 14, 3.8))
    panels = [
        ("adversarial (G)", ["gan_ab", "agan_ab", "gan_ba", "agan_ba"]),
        ("reconstruction and discriminators", ["cycle", "pixel", "d_total"]),
        ("attention masks", ["mask_ab_mean", "mask_ab_frac", "mask_ba_mean", "mask_ba_frac", "guide_ab", "guide_ba"]),
    ]
    for ax, (title, keys) in zip(axes, panels):
        for key in keys:
            if any(key in r for r in losses):
                ax.plot(steps, [r.get(key, float("nan")) for r in losses], label=key, linewidth=1.2)
        ax.set_title(title)
        ax.set_xlabel("step")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    axes[2].set_ylim(-0.02, 1.02)
    if evals:
        _plot_evals(axes[3], evals)
    fig.tight_layout()
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=90)
    plt.close(fig)
    atomic_write_bytes(out_path, buffer.getvalue())


def _plot_evals(ax, evals: list[dict]) -> None:
    """Held-out quality over saves: PSNRs in dB on the left axis, mask AUC and IoU on the right."""
    def series(key):
        values = [r["eval"].get(key) for r in evals]
        return [float("nan") if v is None else min(float(v), 60.0) for v in values]  # "inf" (untouched) drawn at 60

    steps = [r["step"] for r in evals]
    for key, label in (("image_psnr", "image PSNR"), ("background_psnr", "background PSNR"),
                       ("foreground_psnr", "foreground PSNR")):
        ax.plot(steps, series(key), marker="o", linewidth=1.2, label=label)
    ax.set_ylabel("dB")
    right = ax.twinx()
    for key, label, style in (("mask_auc", "mask AUC", "--"), ("mask_iou", "mask IoU", ":")):
        right.plot(steps, series(key), style, marker="s", color="grey" if key == "mask_auc" else "black",
                   linewidth=1.2, label=label)
    right.set_ylim(-0.02, 1.02)
    ax.set_title("held-out quality")
    ax.set_xlabel("step")
    ax.grid(alpha=0.3)
    handles = ax.get_legend_handles_labels()[0] + right.get_legend_handles_labels()[0]
    ax.legend(handles, [h.get_label() for h in handles], fontsize=7)
