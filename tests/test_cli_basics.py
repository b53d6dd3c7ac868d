"""The command line's surface: help, version, usage errors, and no torch at start-up."""

from __future__ import annotations

import subprocess
import sys

from typer.testing import CliRunner

from aggan_cli import __version__
from aggan_cli.cli import app

runner = CliRunner()


def test_help_lists_every_command():
    result = runner.invoke(app, ["--help"])
    assert result.exit_code == 0
    for command in ("train", "translate", "export-masks", "download-weights", "export", "evaluate", "bench"):
        assert command in result.output
    assert runner.invoke(app, ["-h"]).exit_code == 0


def test_bad_options_are_usage_errors():
    result = runner.invoke(app, ["train", "--size", "abc"])
    assert result.exit_code == 2
    result = runner.invoke(app, ["translate", "x.png", "--direction", "sideways"])
    assert result.exit_code == 2
    assert runner.invoke(app, ["no-such-command"]).exit_code == 2


def test_version_in_a_real_subprocess():
    out = subprocess.run([sys.executable, "-m", "aggan_cli", "--version"], capture_output=True, text=True, timeout=600)
    assert out.returncode == 0
    assert out.stdout.strip() == f"aggan {__version__}"


def _cli_in_a_fresh_python(argv: list[str]) -> subprocess.CompletedProcess:
    """Run the app on ``argv`` in a new interpreter: it prints the exit code, then "clean" if torch was
    never imported."""
    code = ("import sys; from aggan_cli.cli import app; "
            f"sys.argv=['aggan', *{argv!r}]\n"
            "try:\n    app(prog_name='aggan')\nexcept SystemExit as e:\n    print('exit', e.code)\n"
            "assert 'torch' not in sys.modules, 'torch was imported'; print('clean')")
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=600)


def test_help_does_not_import_torch():
    out = _cli_in_a_fresh_python(["--help"])
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip().endswith("clean")


def test_version_and_command_help_do_not_import_torch():
    for argv in (["--version"], ["-V"], ["bench", "--help"], ["train", "--help"]):
        out = _cli_in_a_fresh_python(argv)
        assert out.returncode == 0, (argv, out.stderr)
        assert out.stdout.strip().endswith("clean"), argv


def test_a_missing_input_is_reported_without_importing_torch(tmp_path):
    """translate and export-masks check their inputs before loading torch (seconds on a cold start)."""
    for command in ("translate", "export-masks"):
        out = _cli_in_a_fresh_python([command, str(tmp_path / "missing.jpg")])
        assert out.returncode == 0, (command, out.stderr)
        assert out.stdout.split()[-3:] == ["exit", "1", "clean"], (command, out.stdout)
        assert "no images found" in out.stderr
