"""Every misuse of the command line ends with exit 2 (a usage error, Typer's) or exit 1 with exactly
one ``error:`` line that says what to change: never a traceback (docs/reliability.md, guarantee 7).

Property-based: hypothesis draws option values, valid and not (negative, zero, non-numeric, NaN,
unknown names, conflicting combinations, missing or unreadable files), for the four commands. Valid
draws are kept tiny (the base arguments give a 32-px, ngf-4, one-step model) so that a command that
does run finishes in about a second.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st
from typer.testing import CliRunner

from aggan_cli.cli import app

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
                "--no-overlay", "--paper", "--no-identity-negatives", "--channels-last"}

# ---------------------------------------------------------------------------------------------
# train

TRAIN_VALID = {
    "@folders": ("both",), "@config": ("",), "@runs-dir": ("fresh",),
    "--size": ("32", "36"), "--steps": ("1", "2"), "--batch-size": ("1", "2"), "--ngf": ("4",),
    "--n-blocks": ("1", "0"), "--ndf": ("4",), "--norm": ("instance", "batch"), "--discriminator": ("patch", "global"),
    "--lr": ("2e-4",), "--lambda-cycle": ("10", "0"), "--lambda-pixel": ("1",), "--lambda-tv": ("1e-6",),
    "--gan-loss": ("lsgan", "vanilla"), "--device": ("cpu", "auto"), "--precision": ("auto", "fp32"),
    "--seed": ("0", "7"), "--save-every": ("1",), "--sample-every": ("1", "5"), "--log-every": ("1",),
    "--name": ("custom", "spaces in name", "ünï"),
    "--lambda-floor": ("1", "0"), "--paper": ("",), "--no-identity-negatives": ("",), "--channels-last": ("",),
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
    "--gan-loss": ("hinge",),
    "--device": ("cuda", "cuda:7", "mps", "tpu", "", "cpu:0", "CPU", "cuda:x"),
    "--precision": ("bf16", "fp16", "fp8"),
    "--seed": ("-1", str(2 ** 64), "x"),
    "--workers": ("-1", "x"),
    "--save-every": ("0", "-2"), "--sample-every": ("0", "x"), "--log-every": ("0", "-1"),
    "--name": ("../outside", "a/b", ".", "..", ""),
    "--lambda-floor": ("-1", "nan", "x"),
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
# translate and export-masks

TRANSLATE_VALID = {
    "@inputs": ("image",), "@ckpt": ("tiny",), "@out": ("fresh",),
    "--direction": ("a2b", "b2a"), "--size": ("auto", "native", "32", "8"), "--batch-size": ("1", "4"),
    "--device": ("cpu", "auto"), "--precision": ("auto", "fp32"), "--quiet": ("",),
}
TRANSLATE_BAD = {
    "@inputs": ("missing", "glob", "broken", "mixed", "empty", "text"),
    "@ckpt": ("weights", "unknown", "pickle", "empty", "image"),
    "@out": ("a-file",),
    "--direction": ("sideways",), "--size": ("0", "-8", "31", "abc", ""), "--batch-size": ("0", "-1", "x"),
    "--device": ("cuda", "mps", "gpu", "cuda:3"), "--precision": ("bf16", "fp16", "int8"), "--offline": ("",),
}
MASKS_VALID = {**TRANSLATE_VALID, "--threshold": ("0.5",), "--format": ("png", "npy"), "--content": ("",),
               "--no-overlay": ("",)}
MASKS_BAD = {**TRANSLATE_BAD, "--threshold": ("0", "1", "-1", "2", "nan", "x"), "--format": ("jpg",)}


def _inputs(world, kind: str) -> list[str]:
    root = world["root"]
    return [str(p) for p in {"image": [root / "photo.png"], "missing": [root / "nope.png"],
                             "glob": [root / "*.nothing"], "broken": [root / "broken"],
                             "mixed": [root / "photo.png", root / "nope.png"], "empty": [root / "empty"],
                             "text": [root / "a-file.txt"]}[kind]]


def _ckpt(world, kind: str) -> str:
    root = world["root"]
    return str({"tiny": root / "ckpt", "weights": root / "ckpt" / "model.safetensors", "unknown": "no-such-run",
                "pickle": root / "evil.pt", "empty": root / "empty", "image": root / "photo.png"}[kind])


def _translate(world, command: str, chosen: dict[str, str]) -> None:
    out = fresh_dir(world) / "out" if chosen["@out"] == "fresh" else world["root"] / "a-file.txt"
    args = [command, *_inputs(world, chosen["@inputs"]), "--ckpt", _ckpt(world, chosen["@ckpt"]), "--out", str(out),
            *as_args(chosen)]
    check(invoke(args, fresh_dir(world)))


@given(chosen=commands(TRANSLATE_VALID, TRANSLATE_BAD))
@example(chosen={"@inputs": "mixed", "@ckpt": "tiny", "@out": "fresh"})
@example(chosen={"@inputs": "image", "@ckpt": "pickle", "@out": "fresh"})
@SETTINGS
def test_translate_misuse_gets_a_clear_answer(world, chosen):
    _translate(world, "translate", chosen)


@given(chosen=commands(MASKS_VALID, MASKS_BAD))
@example(chosen={"@inputs": "image", "@ckpt": "tiny", "@out": "fresh", "--threshold": "nan"})
@SETTINGS
def test_export_masks_misuse_gets_a_clear_answer(world, chosen):
    _translate(world, "export-masks", chosen)


# ---------------------------------------------------------------------------------------------
# download-weights

DOWNLOAD_VALID = {"@name": ("demo-smile", "org/repo"), "@cache": ("fresh",), "--offline": ("",)}
DOWNLOAD_BAD = {
    "@name": ("", "no-such-name", "../../etc", "a/b/c", "UPPER/Case!"), "@cache": ("", "a-file"),
    "--list": ("",), "--force": ("",), "--revision": ("main", "deadbeef", "../x", ""),
}


@given(chosen=commands(DOWNLOAD_VALID, DOWNLOAD_BAD))
@example(chosen={"@name": "demo-smile", "@cache": "fresh", "--list": ""})
@SETTINGS
def test_download_weights_misuse_gets_a_clear_answer(world, chosen):
    args = ["download-weights", *([chosen["@name"]] if chosen["@name"] else []), *as_args(chosen)]
    if chosen["@cache"]:
        cache = fresh_dir(world) if chosen["@cache"] == "fresh" else world["root"] / "a-file.txt"
        args += ["--cache-dir", str(cache)]
    check(invoke(args, fresh_dir(world)))
