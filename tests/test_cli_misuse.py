"""Every misuse of the command line ends with exit 2 (a usage error, Typer's) or exit 1 with exactly
one ``error:`` line that says what to change: never a traceback (docs/reliability.md, guarantee 7).

Property-based: hypothesis draws option values, valid and not (negative, zero, non-numeric, NaN,
unknown names, conflicting combinations, missing or unreadable files), for the four commands. Valid
draws are kept tiny (the base arguments give a 32-px, ngf-4, one-step model) so that a command that
does run finishes in about a second.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
from pathlib import Path

import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st
from typer.testing import CliRunner

from aggan_cli.cli import app
from aggan_cli.export import export_onnx

from images import write_checkpoint, write_rgb, write_text, write_truncated_jpeg

runner = CliRunner()
SETTINGS = settings(max_examples=30, deadline=None, database=None, derandomize=True,
                    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
TRAIN_SETTINGS = settings(SETTINGS, max_examples=20)  # a valid draw trains a step: the slowest command


NUMBER_JUNK = ("abc", "", "1.5", "0x10", "nan", "-")


@pytest.fixture(scope="module")
def world(tmp_path_factory) -> dict[str, Path]:
    """Files the draws point at: two tiny domains, a checkpoint, broken inputs, config files."""
    root = tmp_path_factory.mktemp("misuse")
    for i in range(2):
        write_rgb(root / "a" / f"a{i}.jpg", (40, 36), seed=i)
        write_rgb(root / "b" / f"b{i}.png", (36, 40), seed=i + 5)
    write_rgb(root / "photo.png", (36, 32))
    write_truncated_jpeg(root / "broken" / "cut.jpg")
    write_rgb(root / "broken" / "fine.png", (32, 36))
    (root / "empty").mkdir()
    write_text(root / "a-file.txt")
    (root / "evil.pt").write_bytes(b"\x80\x04not really")
    write_checkpoint(root / "ckpt")
    export_onnx(root / "ckpt")  # into ckpt/onnx, where --backend onnxruntime --ckpt CKPT finds it
    (root / "bad.toml").write_text("steps = [\n")
    (root / "unknown.toml").write_text("stepz = 3\n")
    (root / "valid.toml").write_text("steps = 1\nlambda_cycle = 5\n")
    return {"root": root}


def fresh_dir(world) -> Path:
    return Path(tempfile.mkdtemp(dir=world["root"]))


def check(result) -> None:
    """The contract: exit 0, 1 or 2; no traceback; exit 1 means exactly one `error:` line."""
    assert result.exception is None or isinstance(result.exception, SystemExit), (
        f"uncaught {type(result.exception).__name__}: {result.exception}\n{result.output}")
    assert result.exit_code in (0, 1, 2), result.output
    assert "Traceback" not in result.output, result.output
    if result.exit_code == 1:
        errors = [line for line in result.output.splitlines() if line.startswith("error:")]
        assert len(errors) == 1, result.output
        assert len(errors[0]) > len("error: ") + 10, result.output  # says something


def invoke(args: list[str], cwd: Path):
    before = os.getcwd()
    os.chdir(cwd)
    try:
        return runner.invoke(app, args)
    finally:
        os.chdir(before)


# ---------------------------------------------------------------------------------------------
# what to draw: a mostly valid command with one or two faults, so that each fault is met alone


def commands(valid: dict[str, tuple[str, ...]], bad: dict[str, tuple[str, ...]]):
    """Option dictionaries: any subset of ``valid`` values, then up to two keys redrawn from ``bad``
    (and ``valid``). Keys starting with ``@`` are not options but choices the test turns into files."""

    @st.composite
    def build(draw):
        chosen = draw(st.fixed_dictionaries({}, optional={k: st.sampled_from(v) for k, v in valid.items() if k[0] != "@"}))
        for key in (k for k in valid if k[0] == "@"):
            chosen[key] = valid[key][0]
        for key in draw(st.lists(st.sampled_from(sorted(bad)), max_size=2, unique=True)):
            chosen[key] = draw(st.sampled_from(bad[key] + valid.get(key, ())))
        return chosen

    return build()


def as_args(chosen: dict[str, str]) -> list[str]:
    args: list[str] = []
    for key, value in chosen.items():
        if key.startswith("--") and value is not None:
            args += [key] if value == "" and key in FLAG_OPTIONS else [key, value]
    return args


FLAG_OPTIONS = {"--resume", "--demo", "--quiet", "--list", "--force", "--offline", "--content", "--overlay",
                "--no-overlay", "--paper", "--no-identity-negatives", "--channels-last", "--print0"}

# ---------------------------------------------------------------------------------------------
# train

TRAIN_VALID = {
    "@folders": ("both",), "@config": ("",), "@runs-dir": ("fresh",),
    "--size": ("32", "36"), "--steps": ("1", "2"), "--batch-size": ("1", "2"), "--ngf": ("4",),
    "--n-blocks": ("1", "0"), "--ndf": ("4",), "--norm": ("instance", "batch"), "--discriminator": ("patch", "global"),
    "--lr": ("2e-4",), "--lambda-cycle": ("10", "0"), "--lambda-pixel": ("1",), "--lambda-tv": ("1e-6",),
    "--gan-loss": ("lsgan", "vanilla", "hinge"), "--device": ("cpu", "auto"), "--precision": ("auto", "fp32"),
    "--seed": ("0", "7"), "--save-every": ("1",), "--sample-every": ("1", "5"), "--log-every": ("1",),
    "--name": ("custom", "spaces in name", "ünï"),
    "--lambda-floor": ("1", "0"), "--paper": ("",), "--no-identity-negatives": ("",), "--channels-last": ("",),
    "--lambda-binary": ("10", "0"), "--upsample": ("transposed", "resize"),
}
TRAIN_BAD = {
    "@folders": ("missing", "none", "one", "file", "broken", "empty"),
    "@config": ("missing.toml", "bad.toml", "unknown.toml", "valid.toml"),
    "@runs-dir": ("a-file",),
    "--size": ("0", "-4", "30", "33", "1e3", *NUMBER_JUNK),
    "--steps": ("0", "-3", "two", "2.5"),
    "--epochs": ("1", "0", "-1", "x"),
    "--batch-size": ("3", "0", "-1", "many"),
    "--ngf": ("0", "-2", "x"), "--n-blocks": ("-1", "x"), "--ndf": ("0", "-1"),
    "--norm": ("layer",), "--discriminator": ("huge",),
    "--lr": ("0", "-1", "nan", "inf", "1e30", "abc"),
    "--lambda-cycle": ("-1", "nan", "inf", "x"), "--lambda-pixel": ("-0.5", "inf"), "--lambda-tv": ("-1", "nan"),
    "--gan-loss": ("wgan", "Hinge"),
    "--device": ("cuda", "cuda:7", "mps", "tpu", "", "cpu:0", "CPU", "cuda:x"),
    "--precision": ("bf16", "fp16", "fp8"),
    "--seed": ("-1", str(2 ** 64), "x"),
    "--workers": ("-1", "x"),
    "--save-every": ("0", "-2"), "--sample-every": ("0", "x"), "--log-every": ("0", "-1"),
    "--name": ("../outside", "a/b", ".", "..", ""),
    "--lambda-floor": ("-1", "nan", "x"), "--lambda-binary": ("-1", "nan", "x"), "--upsample": ("bilinear",),
    "--resume": ("",), "--demo": ("",),
}


@given(chosen=commands(TRAIN_VALID, TRAIN_BAD))
@example(chosen={"@folders": "both", "@config": "", "@runs-dir": "fresh", "--seed": "-1"})
@example(chosen={"@folders": "both", "@config": "", "@runs-dir": "fresh", "--seed": str(2 ** 64)})
@example(chosen={"@folders": "both", "@config": "", "@runs-dir": "fresh", "--name": "a/b"})
@example(chosen={"@folders": "both", "@config": "", "@runs-dir": "a-file"})
@example(chosen={"@folders": "both", "@config": "", "@runs-dir": "fresh", "--epochs": "1", "--steps": "1"})
@example(chosen={"@folders": "both", "@config": "", "@runs-dir": "fresh", "--batch-size": "3"})
@TRAIN_SETTINGS
def test_train_misuse_gets_a_clear_answer(world, chosen):
    root = world["root"]
    folders = {"both": [root / "a", root / "b"], "missing": [root / "nope", root / "b"], "none": [],
               "one": [root / "a"], "file": [root / "photo.png", root / "b"],
               "broken": [root / "a", root / "broken"], "empty": [root / "a", root / "empty"]}[chosen["@folders"]]
    if not folders:
        chosen.pop("--demo", None)  # the built-in demo is a real 600-step run, not a misuse
    base = ["--size", "32", "--ngf", "4", "--n-blocks", "1", "--ndf", "4", "--workers", "0", "--quiet"]
    if "--epochs" not in chosen:
        base += ["--steps", "1"]
    args = ["train", *map(str, folders), *base, *as_args(chosen)]
    if chosen["@config"]:
        args += ["--config", str(root / chosen["@config"])]
    args += ["--runs-dir", str(fresh_dir(world) if chosen["@runs-dir"] == "fresh" else root / "a-file.txt")]
    check(invoke(args, fresh_dir(world)))


# ---------------------------------------------------------------------------------------------
# translate, export-masks and download-weights: the stricter contract
#
# Each draw runs in its own copy of the world, and must end in one of two ways:
#   exit 0, and every path printed on stdout is a file inside --out that reads back (a PNG or a .npy),
#     with nothing written that was not printed;
#   exit 1 or 2 with one `error:` line (1) or Typer's usage message (2), and no traceback;
# and in both cases no file of the world (the inputs, the checkpoint) changed by a single byte.


def world_copy(world) -> Path:
    copy = Path(tempfile.mkdtemp(dir=world["root"].parent)) / "world"
    shutil.copytree(world["root"], copy, symlinks=True)
    return copy


def digests(folder: Path) -> dict[str, str]:
    return {p.relative_to(folder).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file() and not p.is_symlink()}


def check_strictly(result, root: Path, before: dict[str, str], out: Path | None, out_before: set[Path] = frozenset(),
                   *, print0: bool = False) -> None:
    """The contract above; ``out`` is the output folder (None for download-weights) and ``out_before`` the
    files it held before the command."""
    assert result.exception is None or isinstance(result.exception, SystemExit), (
        f"uncaught {type(result.exception).__name__}: {result.exception}\n{result.output}")
    assert "Traceback" not in result.output, result.output
    after = digests(root)
    changed = [name for name, digest in before.items() if after.get(name) != digest]
    assert not changed, f"inputs changed or removed: {changed}\n{result.output}"
    if result.exit_code == 0:
        if out is not None:
            check_outputs(result.stdout, out, out_before, print0=print0)
        return
    assert result.exit_code in (1, 2), result.output
    if result.exit_code == 2:
        assert "Usage:" in result.output, result.output
        return
    errors = [line for line in result.output.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and len(errors[0]) > len("error: ") + 10, result.output


def files_in(folder: Path) -> set[Path]:
    return {p.resolve() for p in folder.rglob("*") if p.is_file()} if folder.is_dir() else set()


def check_outputs(stdout: str, out: Path, out_before: set[Path], *, print0: bool) -> None:
    """Every printed path is a readable output inside ``out``; every new file in ``out`` was printed."""
    import numpy as np
    from PIL import Image

    printed = [Path(p) for p in (stdout.split("\0")[:-1] if print0 else stdout.splitlines())]
    assert printed, "exit 0 but no output printed"
    for path in printed:
        assert path.is_file() and path.resolve().is_relative_to(out.resolve()), path
        if path.suffix == ".npy":
            assert np.load(path).dtype == np.float32
        else:
            with Image.open(path) as image:
                assert image.format == "PNG"
                image.load()
    unreported = files_in(out) - out_before - {p.resolve() for p in printed}
    assert not unreported, f"written but not printed: {unreported}"


TRANSLATE_VALID = {
    "@inputs": ("image",), "@ckpt": ("tiny",), "@out": ("fresh",),
    "--direction": ("a2b", "b2a"), "--size": ("auto", "native", "32", "8"), "--batch-size": ("1", "4"),
    "--device": ("cpu", "auto"), "--precision": ("auto", "fp32"), "--quiet": ("",), "--suffix": ("", "_x"),
    "--print0": ("",), "--backend": ("torch", "onnxruntime"),
}
TRANSLATE_BAD = {
    "@inputs": ("missing", "glob", "broken", "mixed", "empty", "text", "all-pngs", "link-loop"),
    "@ckpt": ("weights", "unknown", "pickle", "empty", "image", "nan-weights", "huge-config", "empty-name"),
    "@out": ("a-file", "input-folder", "parent", "file-in-the-way", "proc", "link-to-input"),
    "--direction": ("sideways",), "--size": ("0", "-8", "31", "abc", "", "100000", "²", "9" * 5000),
    "--batch-size": ("0", "-1", "x"), "--suffix": ("a/b", "\t"),
    "--device": ("cuda", "mps", "gpu", "cuda:3"), "--precision": ("bf16", "fp16", "int8"), "--offline": ("",),
    "--backend": ("tensorflow",),
}
MASKS_VALID = {**TRANSLATE_VALID, "--threshold": ("0.5",), "--format": ("png", "npy"), "--content": ("",),
               "--no-overlay": ("",)}
MASKS_BAD = {**TRANSLATE_BAD, "--threshold": ("0", "1", "-1", "2", "nan", "x"), "--format": ("jpg",)}


def _inputs(root: Path, kind: str) -> list[str]:
    if kind == "link-loop":
        (root / "loop").mkdir(exist_ok=True)
        shutil.copy(root / "photo.png", root / "loop" / "p.png")
        (root / "loop" / "again").symlink_to("..", target_is_directory=True)
        return [str(root / "loop" / "**" / "*.png")]
    return [str(p) for p in {"image": [root / "photo.png"], "missing": [root / "nope.png"],
                             "glob": [root / "*.nothing"], "broken": [root / "broken"],
                             "mixed": [root / "photo.png", root / "nope.png"], "empty": [root / "empty"],
                             "text": [root / "a-file.txt"], "all-pngs": [root / "*.png"]}[kind]]


def _ckpt(root: Path, kind: str) -> str:
    if kind == "nan-weights":
        from safetensors.torch import load_file, save_file

        tensors = load_file(root / "ckpt" / "model.safetensors")
        tensors["g_ab.net.1.weight"][0, 0, 0, 0] = float("nan")
        save_file(tensors, root / "ckpt" / "model.safetensors", metadata={"format_version": "1", "step": "1"})
    if kind == "huge-config":
        config = json.loads((root / "ckpt" / "config.json").read_text())
        config["model"].update(n_blocks=100_000_000, ngf=1_000_000_000)
        (root / "ckpt" / "config.json").write_text(json.dumps(config))
    return str({"tiny": root / "ckpt", "weights": root / "ckpt" / "model.safetensors", "unknown": "no-such-run",
                "pickle": root / "evil.pt", "empty": root / "empty", "image": root / "photo.png",
                "nan-weights": root / "ckpt", "huge-config": root / "ckpt", "empty-name": ""}[kind])


def _out(root: Path, kind: str) -> Path:
    if kind == "link-to-input":
        (root.parent / "link").symlink_to(root, target_is_directory=True)
        return root.parent / "link"
    return {"fresh": root.parent / "out", "a-file": root / "a-file.txt", "input-folder": root,
            "parent": root.parent, "file-in-the-way": root / "a-file.txt" / "sub",
            "proc": Path("/proc/aggan-misuse/out")}[kind]


def _translate(world, command: str, chosen: dict[str, str]) -> None:
    root = world_copy(world)
    inputs, ckpt, out = _inputs(root, chosen["@inputs"]), _ckpt(root, chosen["@ckpt"]), _out(root, chosen["@out"])
    before, out_before = digests(root), files_in(out)
    result = invoke([command, *inputs, "--ckpt", ckpt, "--out", str(out), *as_args(chosen)], root.parent)
    check_strictly(result, root, before, out, out_before, print0="--print0" in chosen)


@given(chosen=commands(TRANSLATE_VALID, TRANSLATE_BAD))
@example(chosen={"@inputs": "mixed", "@ckpt": "tiny", "@out": "fresh"})
@example(chosen={"@inputs": "image", "@ckpt": "pickle", "@out": "fresh"})
@example(chosen={"@inputs": "all-pngs", "@ckpt": "tiny", "@out": "input-folder"})
@example(chosen={"@inputs": "image", "@ckpt": "tiny", "@out": "link-to-input"})
@example(chosen={"@inputs": "link-loop", "@ckpt": "tiny", "@out": "fresh"})
@example(chosen={"@inputs": "image", "@ckpt": "huge-config", "@out": "fresh"})
@example(chosen={"@inputs": "image", "@ckpt": "tiny", "@out": "proc"})
@example(chosen={"@inputs": "image", "@ckpt": "tiny", "@out": "fresh", "--size": "²"})
@example(chosen={"@inputs": "all-pngs", "@ckpt": "tiny", "@out": "input-folder", "--backend": "onnxruntime"})
@example(chosen={"@inputs": "mixed", "@ckpt": "tiny", "@out": "fresh", "--backend": "onnxruntime", "--print0": ""})
@SETTINGS
def test_translate_misuse_gets_a_clear_answer(world, chosen):
    _translate(world, "translate", chosen)


@given(chosen=commands(MASKS_VALID, MASKS_BAD))
@example(chosen={"@inputs": "image", "@ckpt": "tiny", "@out": "fresh", "--threshold": "nan"})
@example(chosen={"@inputs": "broken", "@ckpt": "tiny", "@out": "input-folder", "--content": ""})
@example(chosen={"@inputs": "image", "@ckpt": "nan-weights", "@out": "fresh"})
@example(chosen={"@inputs": "image", "@ckpt": "nan-weights", "@out": "fresh", "--backend": "onnxruntime"})
@example(chosen={"@inputs": "image", "@ckpt": "tiny", "@out": "file-in-the-way"})
@SETTINGS
def test_export_masks_misuse_gets_a_clear_answer(world, chosen):
    _translate(world, "export-masks", chosen)


DOWNLOAD_VALID = {"@name": ("demo-smile", "org/repo"), "@cache": ("fresh",), "--offline": ("",)}
DOWNLOAD_BAD = {
    "@name": ("", "no-such-name", "../../etc", "a/b/c", "UPPER/Case!"), "@cache": ("", "a-file", "file-in-the-way"),
    "--list": ("",), "--force": ("",), "--revision": ("main", "deadbeef", "../x", ""),
    "@endpoint": ("http://127.0.0.1:99999", "not a url"),
}


@given(chosen=commands(DOWNLOAD_VALID, DOWNLOAD_BAD))
@example(chosen={"@name": "demo-smile", "@cache": "fresh", "--list": ""})
@example(chosen={"@name": "demo-smile", "@cache": "fresh", "--revision": "main"})
@example(chosen={"@name": "org/repo", "@cache": "file-in-the-way"})
@example(chosen={"@name": "org/repo", "@cache": "fresh", "@endpoint": "http://127.0.0.1:99999"})
@SETTINGS
def test_download_weights_misuse_gets_a_clear_answer(world, chosen, monkeypatch):
    root = world_copy(world)
    args = ["download-weights", *([chosen["@name"]] if chosen["@name"] else []), *as_args(chosen)]
    if chosen["@cache"]:
        cache = {"fresh": root.parent / "cache", "a-file": root / "a-file.txt",
                 "file-in-the-way": root / "a-file.txt" / "sub"}[chosen["@cache"]]
        args += ["--cache-dir", str(cache)]
    if "@endpoint" in chosen:
        monkeypatch.setenv("HF_ENDPOINT", chosen["@endpoint"])
    before = digests(root)
    result = invoke(args, root.parent)
    check_strictly(result, root, before, None)
    if result.exit_code == 0 and "--list" not in chosen:  # a loadable checkpoint's folder, printed
        folder = Path(result.stdout.splitlines()[-1])
        assert (folder / "config.json").is_file() and (folder / "model.safetensors").is_file(), result.output
