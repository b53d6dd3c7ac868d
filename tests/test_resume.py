"""What `--resume` keeps, refuses and changes (docs/training.md, "Resume and extend"): the data, the
weight average, the schedules of an extended run, and a step count below where the run is."""

from __future__ import annotations

import json

import pytest
from typer.testing import CliRunner

from aggan_cli.cli import app

from outcomes import assert_one_line_error
from test_train import TINY, make_domains

runner = CliRunner()


@pytest.fixture
def trained(tmp_path, monkeypatch):
    """A 4-step run `smile`, trained on neutral → smile, in the current folder."""
    monkeypatch.chdir(tmp_path)
    a, b = make_domains(tmp_path)
    result = runner.invoke(app, ["train", str(a), str(b), "--steps", "4", "--save-every", "2", *TINY])
    assert result.exit_code == 0, result.output
    return a, b, tmp_path / "runs" / "smile"


def test_resume_refuses_other_data_unless_told(trained):
    a, b, run = trained
    swapped = runner.invoke(app, ["train", str(b), str(a), "--name", "smile", "--resume", "--steps", "6"])
    line = assert_one_line_error(swapped)
    assert "neutral → smile" in line and "smile → neutral" in line and "--data-changed" in line
    line = assert_one_line_error(runner.invoke(app, ["train", "--demo", "--name", "smile", "--resume", "--steps", "6"]))
    assert "the demo faces" in line and "--data-changed" in line
    assert json.loads((run / "config.json").read_text())["step"] == 4  # nothing trained
    same = runner.invoke(app, ["train", str(a), str(b), "--name", "smile", "--resume", "--steps", "5", "--quiet"])
    assert same.exit_code == 0, same.output  # the same folders, given again: fine
    told = runner.invoke(app, ["train", str(b), str(a), "--name", "smile", "--resume", "--steps", "6", "--data-changed",
                               "--quiet"])
    assert told.exit_code == 0, told.output
    config = json.loads((run / "config.json").read_text())
    assert config["step"] == 6 and config["domains"] == {"a": "smile", "b": "neutral"}
