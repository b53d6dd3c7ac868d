"""The model card: a ``README.md`` in every run folder, so a run folder uploaded as it is makes a Hub repo.

``huggingface-cli upload ORG/REPO runs/NAME`` publishes the folder; ``aggan translate photo.jpg --ckpt
ORG/REPO`` uses it. The front matter is the Hub's model-card metadata (``library_name``, ``tags``,
``license``), which is what makes the repo findable by library and task.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Mapping, Sequence

from . import __version__

CARD_FILE = "README.md"
TAGS = ("aggan", "image-to-image", "gan", "unpaired-image-to-image-translation", "attention", "pytorch")

# The training options worth showing, in this order (the rest stay in config.json).
_TRAIN_KEYS = ("steps", "epochs", "batch_size", "lr", "lambda_cycle", "lambda_pixel", "lambda_tv", "lambda_identity",
               "gan_loss", "seed", "demo")


def write_model_card(run_dir: str | Path, *, config: Mapping[str, Any], domains: Sequence[str], step: int,
                     sample_image: str | None, command_hint: str, license: str = "mit") -> Path:
    """Write ``run_dir/README.md`` atomically and return its path.

    ``config`` is the run's ``config.json`` content (its ``model`` and ``train`` sections fill the
    configuration table); ``domains`` is ``(a, b)``; ``sample_image`` is a picture to show: a path relative
    to the run folder, or any path (absolute, or relative to the current folder) to a file inside it. The
    card links it relative to itself, so the picture shows wherever the folder goes (the Hub); a picture
    outside the run folder is left out. ``command_hint`` is the command that trained the run, shown so
    that others can reproduce it.
    """
    run_dir = Path(run_dir)
    domain_a, domain_b = (str(d) for d in domains)
    sample_link = _link_inside(sample_image, run_dir) if sample_image else None
    lines = [
        "---",
        "library_name: aggan",
        f"license: {_yaml_scalar(license)}",
        "pipeline_tag: image-to-image",
        "tags:",
        *(f"- {tag}" for tag in TAGS),
        "---",
        "",
        f"# AGGAN: {_md(domain_a)} ↔ {_md(domain_b)}",
        "",
        "Unpaired image-to-image translation with attention ([AGGAN](https://arxiv.org/abs/1903.12296), "
        "Tang et al., IJCNN 2019), trained with [aggan](https://github.com/aggan/aggan). Each generator "
        "predicts an attention mask and edits only where the mask is on; everything else is the input, "
        "untouched.",
        "",
        f"- Domains: **{_md(domain_a)}** (A) → **{_md(domain_b)}** (B), and back",
        f"- Training steps: {int(step):,}",
        f"- aggan version: {_md(str(config.get('aggan_version', __version__)))}",
        "",
    ]
    if sample_link:
        lines += ["## Samples", "", "Each row: input, attention mask, content, output, reconstruction.", "",
                  f"![samples]({sample_link})", ""]
    lines += [
        "## Use it",
        "",
        "```bash",
        "pip install aggan",
        "aggan translate photo.jpg --ckpt ORG/REPO                    # A → B, written to ./translated/",
        "aggan translate photo.jpg --ckpt ORG/REPO --direction b2a    # B → A",
        "aggan export-masks photo.jpg --ckpt ORG/REPO                 # where the model chose to edit",
        "```",
        "",
        "Replace `ORG/REPO` with this repository's id. The first use downloads `config.json` and "
        "`model.safetensors` into aggan's cache; later uses work offline. From a local copy of this folder, "
        "pass its path instead: `--ckpt path/to/folder`.",
        "",
        "## Configuration",
        "",
        "| option | value |",
        "|---|---|",
        *(f"| {_md(key)} | {_md(_show(value))} |" for key, value in _configuration(config)),
        "",
    ]
    if command_hint:
        lines += ["## Reproduce", "", "```bash", command_hint.strip(), "```", ""]
    lines += [
        "## Files",
        "",
        "- `config.json`: the architecture, domains, step and training options; loading needs nothing else.",
        "- `model.safetensors`: both generators (`g_ab.*`, `g_ba.*`), all that translation needs.",
        "- `training-state.safetensors` (if present): discriminators and optimiser state, to resume training.",
        "",
    ]
    from .checkpoint import atomic_write_text  # imports torch: only when a card is written

    path = run_dir / CARD_FILE
    atomic_write_text(path, "\n".join(lines))
    return path


def _configuration(config: Mapping[str, Any]) -> list[tuple[str, Any]]:
    rows = [(key, value) for key, value in (config.get("model") or {}).items()]
    train = config.get("train") or {}
    rows += [(key, train[key]) for key in _TRAIN_KEYS if train.get(key) is not None]
    radii = (config.get("translate") or {}).get("mask_guide")
    if isinstance(radii, dict) and radii:  # what translating uses, picked after training (config.json)
        rows.append(("mask_guide when translating", ", ".join(f"{k} {v}" for k, v in sorted(radii.items()))))
    return rows


def _link_inside(image: str, run_dir: Path) -> str | None:
    """A Markdown link target to ``image`` relative to the card in ``run_dir`` (forward slashes, spaces
    and brackets escaped), or None when ``image`` is not an existing file inside the run folder."""
    from urllib.parse import quote

    path = Path(image)
    if not path.is_absolute() and (run_dir / path).is_file():
        path = run_dir / path  # relative to the run folder already
    root = run_dir.resolve()
    try:
        relative = path.resolve().relative_to(root)  # absolute, or relative to the current folder
    except ValueError:
        return None
    return quote(relative.as_posix()) if (root / relative).is_file() else None


def _show(value: Any) -> str:
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, float):
        return f"{value:g}"
    return str(value)


def _md(text: str) -> str:
    """Text safe inside a Markdown table cell or heading."""
    return str(text).replace("\\", "\\\\").replace("|", "\\|").replace("\n", " ")


def _yaml_scalar(text: str) -> str:
    """A YAML scalar: plain when it is a simple word, quoted otherwise."""
    if text and all(c.isalnum() or c in "-._" for c in text):
        return text
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'
