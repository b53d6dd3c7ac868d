"""Configuration values: bounds checked before anything is allocated, the same rules wherever a value
comes from (command line, TOML file, a run's config.json)."""

from __future__ import annotations

import pytest
from typer.testing import CliRunner

import aggan_cli.networks as networks
from aggan_cli.cli import app
MAX_BLOCKS, MAX_NDF, MAX_NGF, MAX_SIZE = 32, 256, 256, 4096
from aggan_cli.config import ModelConfig
from aggan_cli.errors import ConfigError

from test_train import TINY, make_domains

runner = CliRunner()


@pytest.fixture
def no_allocation(monkeypatch):
    """Building the networks fails the test: a bad size must be refused before anything is allocated."""
    def refuse(*args, **kwargs):
        raise AssertionError("the networks were built before the options were checked")

    monkeypatch.setattr(networks.AGGAN, "__init__", refuse)


@pytest.mark.parametrize("values,fragment", [
    ({"ngf": 100_000}, f"from 1 to {MAX_NGF}"),
    ({"ngf": 1e9}, "whole number"),
    ({"ndf": 100_000}, f"from 1 to {MAX_NDF}"),
    ({"n_blocks": 100_000_000}, f"from 0 to {MAX_BLOCKS}"),
    ({"image_size": 400_000}, f"from 32 to {MAX_SIZE}"),
    ({"d_layers": True}, "whole number"),
    ({"d_layers": 5, "image_size": 64}, "at least 96 pixels"),  # the PatchGAN would shrink it to nothing
])
def test_model_config_refuses_sizes_beyond_the_documented_bounds(values, fragment):
    with pytest.raises(ConfigError, match=fragment):
        ModelConfig.from_dict(values)


@pytest.mark.parametrize("option,value,fragment", [
    ("--n-blocks", "10000000", f"from 0 to {MAX_BLOCKS}"),
    ("--ngf", "100000", f"from 1 to {MAX_NGF}"),
    ("--ndf", "100000", f"from 1 to {MAX_NDF}"),
    ("--size", "100000", f"from 32 to {MAX_SIZE}"),
])
def test_train_refuses_huge_models_with_one_line_before_allocating(tmp_path, monkeypatch, no_allocation, option, value,
                                                                   fragment):
    monkeypatch.chdir(tmp_path)
    a, b = make_domains(tmp_path)
    result = runner.invoke(app, ["train", str(a), str(b), "--steps", "1", *TINY, option, value])
    assert result.exit_code == 1, result.output
    assert fragment in result.output and "Traceback" not in result.output
    assert len([line for line in result.output.splitlines() if line.startswith("error:")]) == 1
    assert not (tmp_path / "runs").exists()


def test_bench_refuses_a_huge_size_before_allocating(no_allocation):
    result = runner.invoke(app, ["bench", "--size", "100000", "--device", "cpu"])
    assert result.exit_code == 1 and f"{MAX_SIZE}" in result.output and "100000" in result.output
