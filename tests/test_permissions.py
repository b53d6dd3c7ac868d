"""Run folders and outputs that can be shared as they are (issue 14): every file aggan writes gets the
permissions a plain ``open(path, "w")`` gives under the user's umask, and the model card's links
resolve, relative to the card, to files inside the run folder. (The cache: tests/test_hub.py.)"""

from __future__ import annotations

import contextlib
import os
import re
import stat
from pathlib import Path
from urllib.parse import unquote

import pytest
from typer.testing import CliRunner

from aggan_cli.cli import app
from images import write_checkpoint, write_rgb

from test_train import TINY, make_domains

runner = CliRunner()
UMASKS = [0o022, 0o077, 0o002]


@contextlib.contextmanager
def umask(value: int):
    old = os.umask(value)
    try:
        yield
    finally:
        os.umask(old)


def wrong_modes(folder: Path, mask: int) -> dict[str, str]:
    """Files and folders under ``folder`` whose mode is not what ``open``/``mkdir`` give under ``mask``."""
    wrong = {}
    for path in [folder, *folder.rglob("*")]:
        if path.is_symlink():
            continue
        expected = (0o777 if path.is_dir() else 0o666) & ~mask
        mode = stat.S_IMODE(path.lstat().st_mode)
        if mode != expected:
            wrong[path.relative_to(folder).as_posix() or "."] = f"{mode:o}, not {expected:o}"
    return wrong


def invoke(*args):
    result = runner.invoke(app, [str(a) for a in args])
    assert result.exit_code == 0, result.output
    return result


@pytest.mark.parametrize("mask", UMASKS, ids=lambda m: f"umask {m:03o}")
def test_a_trained_and_resumed_run_folder_follows_the_umask(tmp_path, monkeypatch, mask):
    a, b = make_domains(tmp_path)
    monkeypatch.chdir(tmp_path)
    every = ["--save-every", "1", "--sample-every", "1", "--log-every", "1"]
    with umask(mask):
        invoke("train", a, b, "--steps", "2", *every, *TINY)
        invoke("train", a, b, "--steps", "3", "--resume", *every, *TINY)  # rewrites metrics.jsonl
    run = tmp_path / "runs" / "smile"
    assert {"README.md", "metrics.png", "metrics.jsonl", "config.json", "model.safetensors"} <= {
        p.name for p in run.iterdir()}
    assert wrong_modes(run, mask) == {}


def card_links(card: Path) -> list[str]:
    """Every Markdown link and image target in the card that is not a web address."""
    targets = re.findall(r"\]\(([^)\s]+)\)", card.read_text(encoding="utf-8"))
    return [t for t in targets if not re.match(r"^[a-z]+://", t) and not t.startswith("#")]


def test_the_model_card_links_resolve_inside_the_run_folder(tmp_path, monkeypatch):
    a, b = make_domains(tmp_path)
    monkeypatch.chdir(tmp_path)
    invoke("train", a, b, "--steps", "2", "--sample-every", "1", "--name", "with space", *TINY)
    run = tmp_path / "runs" / "with space"
    links = card_links(run / "README.md")
    assert links == ["samples/step-0000002.png"]  # the newest grid, relative to the card
    for link in links:
        target = (run / unquote(link)).resolve()
        assert target.is_file() and target.is_relative_to(run.resolve()), link


def test_a_card_never_links_outside_its_folder(tmp_path):
    from aggan_cli.modelcard import write_model_card

    run = tmp_path / "run"
    write_rgb(run / "samples" / "grid (1).png", (8, 8))
    write_rgb(tmp_path / "elsewhere.png", (8, 8))
    options = dict(config={}, domains=("a", "b"), step=1, command_hint="")
    for sample, expected in ((run / "samples" / "grid (1).png", ["samples/grid%20%281%29.png"]),
                             ("samples/grid (1).png", ["samples/grid%20%281%29.png"]),
                             (tmp_path / "elsewhere.png", []), (run / "samples" / "missing.png", [])):
        assert card_links(write_model_card(run, sample_image=str(sample), **options)) == expected, sample


@pytest.mark.parametrize("mask", UMASKS, ids=lambda m: f"umask {m:03o}")
def test_translate_and_export_masks_outputs_follow_the_umask(tmp_path, mask):
    ckpt = write_checkpoint(tmp_path / "ckpt")
    write_rgb(tmp_path / "in" / "sub" / "p.jpg", (30, 30))
    with umask(mask):
        invoke("translate", tmp_path / "in", "--ckpt", ckpt, "--out", tmp_path / "out" / "t")
        invoke("export-masks", tmp_path / "in", "--ckpt", ckpt, "--content", "--out", tmp_path / "out" / "m")
        invoke("export-masks", tmp_path / "in", "--ckpt", ckpt, "--format", "npy", "--out", tmp_path / "out" / "n")
    assert len(list((tmp_path / "out").rglob("*.*"))) == 6
    assert wrong_modes(tmp_path / "out", mask) == {}


def test_onnx_exports_and_onnxruntime_outputs_follow_the_umask(tmp_path):
    ckpt = write_checkpoint(tmp_path / "ckpt")
    write_rgb(tmp_path / "in" / "p.jpg", (30, 30))
    mask = 0o002  # group-writable: mkstemp's owner-only 0600 would show
    with umask(mask):
        invoke("export", ckpt, "--direction", "a2b", "--out", tmp_path / "out" / "onnx")
        invoke("translate", tmp_path / "in", "--ckpt", tmp_path / "out" / "onnx", "--backend", "onnxruntime",
               "--out", tmp_path / "out" / "t")
    assert sorted(p.relative_to(tmp_path / "out").as_posix() for p in (tmp_path / "out").rglob("*.*")) == [
        "onnx/g_ab.onnx", "t/p.png"]
    assert wrong_modes(tmp_path / "out", mask) == {}
