"""``aggan translate`` and ``aggan export-masks`` on real files: awkward sizes and modes, trees, globs,
broken files, exact sizes out, exact background, and agreement with the Python API."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from typer.testing import CliRunner

from aggan_cli import Translator
from aggan_cli.cli import app
from images import (displayed, write_checkpoint, write_empty, write_exif_rotated, write_mode, write_rgb, write_text,
                    write_truncated_jpeg)

runner = CliRunner()


@pytest.fixture(scope="module")
def ckpts(tmp_path_factory):
    root = tmp_path_factory.mktemp("ckpts")
    return {mask: str(write_checkpoint(root / mask, mask=mask)) for mask in ("random", "zero", "split")}


def aggan(*args):
    result = runner.invoke(app, [str(a) for a in args])
    if result.exception and not isinstance(result.exception, SystemExit):
        raise result.exception
    return result


def written(result) -> list[Path]:
    """The paths the command printed on stdout (one per line, nothing else)."""
    return [Path(line) for line in result.stdout.splitlines()]


def files_under(folder: Path) -> set[str]:
    return {p.relative_to(folder).as_posix() for p in folder.rglob("*") if p.is_file()}


def pixels(path_or_image) -> np.ndarray:
    image = Image.open(path_or_image) if isinstance(path_or_image, (str, Path)) else path_or_image
    return np.asarray(image.convert("RGB"), dtype=np.int16)


# ---------------------------------------------------------------------------------------------
# any image, exact size out


def test_awkward_files_come_out_at_their_exact_size(ckpts, tmp_path):
    src = tmp_path / "in"
    write_rgb(src / "odd.jpg", (37, 53))
    write_rgb(src / "wide.png", (301, 177))
    for mode in ("L", "LA", "P", "RGBA", "I;16"):
        write_mode(src / f"{mode.replace(';', '')}.png", mode, (45, 29))
    write_mode(src / "cmyk.jpg", "CMYK", (41, 33))
    write_exif_rotated(src / "rotated.jpg", (53, 37), orientation=6)  # shown as 37 wide, 53 high
    out = tmp_path / "out"

    result = aggan("translate", src, "--ckpt", ckpts["zero"], "--out", out)

    assert result.exit_code == 0, result.stderr
    names = ["odd", "wide", "L", "LA", "P", "RGBA", "I16", "cmyk", "rotated"]
    assert sorted(written(result)) == sorted(out / f"{n}.png" for n in names)
    assert "translating: neutral → smile" in result.stderr and "done: 9 images" in result.stderr
    for name, source in [("odd", "odd.jpg"), ("wide", "wide.png"), ("L", "L.png"), ("I16", "I16.png"),
                         ("cmyk", "cmyk.jpg"), ("rotated", "rotated.jpg"), ("P", "P.png")]:
        assert Image.open(out / f"{name}.png").size == displayed(src / source).size, name
        # a zero mask: the output is the decoded input, pixel for pixel, whatever the file's mode
        assert np.array_equal(pixels(out / f"{name}.png"), pixels(displayed(src / source))), name
    # the EXIF tag was applied: the output is the stored pixels turned 90° clockwise
    with Image.open(src / "rotated.jpg") as stored:
        assert np.array_equal(pixels(out / "rotated.png"), np.rot90(pixels(stored), k=-1))
    for name in ("LA", "P", "RGBA"):  # transparency survives
        image = Image.open(out / f"{name}.png")
        with Image.open(src / f"{name}.png") as original:
            alpha = original.convert("RGBA").getchannel("A")
        assert image.mode == "RGBA", name
        assert np.array_equal(np.asarray(image.getchannel("A")), np.asarray(alpha)), name
    assert Image.open(out / "odd.png").mode == "RGB"


def test_sizes_native_and_explicit_keep_the_exact_size(ckpts, tmp_path):
    photo = write_rgb(tmp_path / "p.jpg", (301, 177))
    outputs = {}
    for size in ("auto", "native", "64"):
        result = aggan("translate", photo, "--ckpt", ckpts["random"], "--size", size, "--out", tmp_path / size)
        assert result.exit_code == 0, result.stderr
        assert Image.open(tmp_path / size / "p.png").size == (301, 177)
        outputs[size] = pixels(tmp_path / size / "p.png")
    assert not np.array_equal(outputs["auto"], outputs["native"])
    result = aggan("translate", photo, "--ckpt", ckpts["random"], "--size", "30")
    assert result.exit_code == 1 and "multiple of 4" in result.stderr


# ---------------------------------------------------------------------------------------------
# inputs: trees, globs, names


def test_trees_keep_their_layout_and_globs_their_names(ckpts, tmp_path, monkeypatch):
    write_rgb(tmp_path / "album" / "top.jpg", (40, 30))
    write_rgb(tmp_path / "album" / "2024" / "june" / "deep.png", (33, 41))
    write_rgb(tmp_path / "album" / ".thumbs" / "hidden.png", (20, 20))  # hidden folders are skipped
    (tmp_path / "album" / "notes.txt").write_text("not an image")
    write_rgb(tmp_path / "loose" / "one.jpg", (30, 30))
    write_rgb(tmp_path / "loose" / "two.JPG", (31, 30))
    write_rgb(tmp_path / "loose" / "skip.png", (30, 31))
    write_rgb(tmp_path / "shoots" / "day1" / "a.jpg", (30, 30))
    write_rgb(tmp_path / "shoots" / "day2" / "a.jpg", (30, 30), seed=1)
    out = tmp_path / "out"
    monkeypatch.chdir(tmp_path)

    result = aggan("translate", "album", "loose/*.[jJ]*", "shoots/*", "--ckpt", ckpts["random"], "--out", "out")

    assert result.exit_code == 0, result.stderr
    expected = {"top.png", "2024/june/deep.png", "one.png", "two.png", "day1/a.png", "day2/a.png"}
    assert files_under(out) == expected
    assert {p.as_posix() for p in written(result)} == {f"out/{name}" for name in expected}


def test_outputs_inside_the_input_folder_are_not_translated_again(ckpts, tmp_path):
    for i in range(2):
        write_rgb(tmp_path / "photos" / f"{i}.jpg", (30, 30), seed=i)
    for _ in range(2):
        result = aggan("translate", tmp_path / "photos", "--ckpt", ckpts["random"],
                       "--out", tmp_path / "photos" / "out")
        assert result.exit_code == 0 and "2 images →" in result.stderr
    assert files_under(tmp_path / "photos" / "out") == {"0.png", "1.png"}


def test_equal_stems_never_overwrite_each_other(ckpts, tmp_path):
    a = write_rgb(tmp_path / "a.jpg", (30, 30), seed=1)
    b = write_rgb(tmp_path / "a.png", (30, 30), seed=2)
    c = write_rgb(tmp_path / "other" / "A.jpg", (30, 30), seed=3)  # case differs: equal on macOS/Windows
    out = tmp_path / "out"

    result = aggan("translate", a, b, c, a, "--ckpt", ckpts["zero"], "--out", out)  # `a` twice: once

    assert result.exit_code == 0, result.stderr
    assert written(result) == [out / "a.png", out / "a-2.png", out / "A-3.png"]
    assert "written as a-2" in result.stderr and "written as A-3" in result.stderr
    for name, source in (("a", a), ("a-2", b), ("A-3", c)):
        assert np.array_equal(pixels(out / f"{name}.png"), pixels(displayed(source)))


def test_output_names_never_escape_the_output_folder(ckpts, tmp_path, monkeypatch):
    write_rgb(tmp_path / "in" / "sub" / "x.jpg", (30, 30))
    write_rgb(tmp_path / "in" / "y.jpg", (30, 30))
    work = tmp_path / "work"
    work.mkdir()
    monkeypatch.chdir(work)
    before = files_under(tmp_path)
    for pattern, expected in (("../in/sub/x.jpg", {"x.png"}), ("../in/*/..", {"in/y.png", "in/sub/x.png"})):
        result = aggan("translate", pattern, "--ckpt", ckpts["random"], "--out", "out")
        assert result.exit_code == 0, result.stderr
        assert files_under(work / "out") == expected
        assert all(p.resolve().is_relative_to((work / "out").resolve()) for p in written(result))
        assert {f for f in files_under(tmp_path) if not f.startswith("work/")} == before  # nothing written elsewhere
        for path in written(result):
            path.unlink()


def test_nothing_matched_names_the_patterns(ckpts, tmp_path):
    (tmp_path / "empty").mkdir()
    result = aggan("translate", tmp_path / "empty", "nope/*.jpg", "--ckpt", ckpts["random"], "--out", tmp_path / "out")
    assert result.exit_code == 1
    assert "no images found" in result.stderr and "nope/*.jpg" in result.stderr and "empty" in result.stderr
    assert "Traceback" not in result.output
    assert not (tmp_path / "out").exists()


def test_unreadable_files_are_named_skipped_and_fail_the_run(ckpts, tmp_path):
    src = tmp_path / "mixed"
    write_rgb(src / "good1.jpg", (37, 53)), write_rgb(src / "good2.png", (40, 30))
    bad = [write_truncated_jpeg(src / "cut.jpg"), write_empty(src / "zero.jpg"), write_text(src / "text.jpg")]
    out = tmp_path / "out"

    result = aggan("translate", src, tmp_path / "missing.png", "--ckpt", ckpts["random"], "--out", out)

    assert result.exit_code == 1
    for path in bad:
        assert f"skipped: {path}" in result.stderr
    assert "missing.png: no such file" in result.stderr
    assert "4 of 6 inputs failed" in result.stderr
    assert files_under(out) == {"good1.png", "good2.png"}
    assert sorted(written(result)) == sorted([out / "good1.png", out / "good2.png"])


def test_a_missing_checkpoint_is_one_red_line(tmp_path):
    photo = write_rgb(tmp_path / "p.jpg", (30, 30))
    result = aggan("translate", photo, "--ckpt", str(tmp_path / "no-such-run"), "--out", tmp_path / "out")
    assert result.exit_code == 1
    assert "error:" in result.stderr and "no-such-run" in result.stderr and "Traceback" not in result.output


def test_bad_batch_size_threshold_and_out_are_errors(ckpts, tmp_path):
    photo = write_rgb(tmp_path / "p.jpg", (30, 30))
    result = aggan("translate", photo, "--ckpt", ckpts["random"], "--batch-size", "0")
    assert result.exit_code == 1 and "--batch-size must be at least 1" in result.stderr
    result = aggan("export-masks", photo, "--ckpt", ckpts["random"], "--threshold", "1.5")
    assert result.exit_code == 1 and "between 0 and 1" in result.stderr
    result = aggan("translate", photo, "--ckpt", ckpts["random"], "--out", photo)
    assert result.exit_code == 1 and "is a file; give a folder" in result.stderr


def test_an_unwritable_output_folder_is_one_clear_error(ckpts, tmp_path):
    photo = write_rgb(tmp_path / "p.jpg", (30, 30))
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "p.png").mkdir()  # a folder where the image should go: the rename fails
    result = aggan("translate", photo, "--ckpt", ckpts["random"], "--out", tmp_path / "out")
    assert result.exit_code == 1
    assert "cannot write" in result.stderr and "p.png" in result.stderr and "Traceback" not in result.output


# ---------------------------------------------------------------------------------------------
# what comes out


def test_both_directions_name_their_domains_and_differ(ckpts, tmp_path):
    photo = write_rgb(tmp_path / "p.png", (50, 40))
    a2b = aggan("translate", photo, "--ckpt", ckpts["random"], "--out", tmp_path / "a2b")
    b2a = aggan("translate", photo, "--ckpt", ckpts["random"], "--direction", "b2a", "--out", tmp_path / "b2a")
    assert a2b.exit_code == b2a.exit_code == 0
    assert "neutral → smile" in a2b.stderr and "smile → neutral" in b2a.stderr
    assert not np.array_equal(pixels(tmp_path / "a2b" / "p.png"), pixels(tmp_path / "b2a" / "p.png"))


def test_batch_size_does_not_change_a_pixel(ckpts, tmp_path):
    sizes = [(301, 177), (37, 53), (300, 177), (64, 64), (37, 53), (302, 177), (45, 29)]
    for i, size in enumerate(sizes):
        write_rgb(tmp_path / "in" / f"{i}.png", size, seed=i)
    for batch in (1, 3):
        result = aggan("translate", tmp_path / "in", "--ckpt", ckpts["split"], "--batch-size", batch,
                       "--out", tmp_path / f"b{batch}")
        assert result.exit_code == 0, result.stderr
    for i in range(len(sizes)):
        assert np.array_equal(pixels(tmp_path / "b1" / f"{i}.png"), pixels(tmp_path / "b3" / f"{i}.png")), i


@pytest.mark.parametrize("size", ["auto", "native"])
def test_pixels_the_model_did_not_attend_to_are_exactly_the_input(ckpts, tmp_path, size):
    photos = [write_rgb(tmp_path / "in" / "big.png", (600, 354)), write_rgb(tmp_path / "in" / "odd.jpg", (301, 177))]
    result = aggan("translate", tmp_path / "in", "--ckpt", ckpts["split"], "--size", size, "--out", tmp_path / "t")
    assert result.exit_code == 0, result.stderr
    masks = aggan("export-masks", tmp_path / "in", "--ckpt", ckpts["split"], "--size", size, "--format", "npy",
                  "--out", tmp_path / "m")
    assert masks.exit_code == 0, masks.stderr
    for photo in photos:
        mask = np.load(tmp_path / "m" / f"{photo.stem}_mask.npy")
        x, y = pixels(displayed(photo)), pixels(tmp_path / "t" / f"{photo.stem}.png")
        untouched = mask == 0
        assert 0.05 < untouched.mean() < 0.95, untouched.mean()  # the property is about a real, partial mask
        assert np.array_equal(y[untouched], x[untouched])
        assert (y[mask > 0.5] != x[mask > 0.5]).any()  # ... and the model did change what it attended to
        if size == "auto":
            # a naive pipeline (translate at 32 px, resize the result back) would have changed the background
            work = Translator.load(ckpts["split"], size="native").translate(displayed(photo).resize((54, 32)))
            naive = pixels(work.image.resize(photo_size := displayed(photo).size, Image.BILINEAR))
            assert naive.shape[:2] == photo_size[::-1]
            assert (naive[untouched] != x[untouched]).any()


def test_the_cli_and_the_api_agree(ckpts, tmp_path):
    photos = [write_rgb(tmp_path / "in" / "a.jpg", (301, 177)), write_mode(tmp_path / "in" / "b.png", "RGBA", (37, 53))]
    result = aggan("translate", tmp_path / "in", "--ckpt", ckpts["split"], "--direction", "b2a",
                   "--out", tmp_path / "t")
    masks = aggan("export-masks", tmp_path / "in", "--ckpt", ckpts["split"], "--direction", "b2a", "--content",
                  "--out", tmp_path / "m")
    assert result.exit_code == masks.exit_code == 0
    t = Translator.load(ckpts["split"], direction="b2a")
    for photo in photos:
        r = t.translate(photo)
        cli = Image.open(tmp_path / "t" / f"{photo.stem}.png")
        assert cli.mode == r.image.mode
        assert np.array_equal(np.asarray(cli), np.asarray(r.image))
        mask_png = Image.open(tmp_path / "m" / f"{photo.stem}_mask.png")
        assert np.array_equal(np.asarray(mask_png), np.asarray(r.mask_image()))
        assert np.array_equal(pixels(tmp_path / "m" / f"{photo.stem}_content.png"), pixels(r.content))
        assert np.array_equal(pixels(tmp_path / "m" / f"{photo.stem}_overlay.png"), pixels(r.overlay()))


def test_export_masks_files_and_options(ckpts, tmp_path, monkeypatch):
    photo = write_rgb(tmp_path / "face.jpg", (301, 177))
    monkeypatch.chdir(tmp_path)

    result = aggan("export-masks", "face.jpg", "--ckpt", ckpts["split"])  # default folder ./masks
    assert result.exit_code == 0, result.stderr
    assert written(result) == [Path("masks/face_mask.png"), Path("masks/face_overlay.png")]
    assert f"→ masks{os.sep}" in result.stderr
    mask = Image.open("masks/face_mask.png")
    assert mask.mode == "L" and mask.size == (301, 177)
    assert 0 < np.asarray(mask).mean() < 255
    overlay = Image.open("masks/face_overlay.png")
    assert overlay.mode == "RGB" and overlay.size == (301, 177)

    result = aggan("export-masks", photo, "--ckpt", ckpts["split"], "--format", "npy", "--no-overlay", "--out", "npy")
    assert result.exit_code == 0 and written(result) == [Path("npy/face_mask.npy")]
    floats = np.load("npy/face_mask.npy")
    assert floats.dtype == np.float32 and floats.shape == (177, 301)
    assert 0 <= floats.min() and floats.max() <= 1
    assert np.array_equal(np.rint(floats * 255).astype(np.uint8), np.asarray(mask))

    result = aggan("export-masks", photo, "--ckpt", ckpts["split"], "--no-overlay", "--content", "--threshold", "0.5",
                   "--out", "binary")
    assert result.exit_code == 0
    assert files_under(tmp_path / "binary") == {"face_mask.png", "face_content.png"}
    binary = np.asarray(Image.open("binary/face_mask.png"))
    assert set(np.unique(binary)) == {0, 255}
    assert np.array_equal(binary == 255, floats > 0.5)


def test_default_output_folder_is_translated(ckpts, tmp_path, monkeypatch):
    for i in range(6):  # more than a handful: the summary reports the rate
        write_rgb(tmp_path / f"{i}.jpg", (30, 30), seed=i)
    monkeypatch.chdir(tmp_path)
    result = aggan("translate", "*.jpg", "--ckpt", ckpts["random"])
    assert result.exit_code == 0
    assert files_under(tmp_path / "translated") == {f"{i}.png" for i in range(6)}
    assert f"6 images → translated{os.sep}" in result.stderr
    assert "done: 6 images in" in result.stderr and "images/s" in result.stderr
    assert "images/s" not in result.stdout


def test_a_real_subprocess_keeps_paths_on_stdout_and_the_rest_on_stderr(ckpts, tmp_path):
    for name in ("x.jpg", "y.png"):
        write_rgb(tmp_path / name, (41, 29))
    command = [sys.executable, "-m", "aggan_cli", "translate", str(tmp_path / "x.jpg"), str(tmp_path / "y.png"),
               "--ckpt", ckpts["random"], "--out", str(tmp_path / "out")]
    proc = subprocess.run(command, capture_output=True, text=True, timeout=900,
                          env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.splitlines() == [str(tmp_path / "out" / "x.png"), str(tmp_path / "out" / "y.png")]
    assert "done: 2 images" in proc.stderr and "translating: neutral → smile" in proc.stderr
