"""Configuration values: bounds checked before anything is allocated, the same rules wherever a value
comes from (command line, TOML file, a run's config.json)."""

from __future__ import annotations

import json

import pytest
from safetensors import safe_open
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


@pytest.mark.parametrize("size,depth", [(32, 3), (64, 3), (68, 3), (72, 4), (128, 4), (140, 4), (144, 3), (256, 3)])
def test_the_patchgan_depth_follows_the_crop_unless_given(size, depth):
    """Unset, the depth is the shallowest whose patch covers the crop up to 142 px (4 from 72 to 140 px),
    CycleGAN's 3 beyond; a depth given, or saved by a run, is kept whatever the size."""
    assert ModelConfig(image_size=size).d_layers == depth
    assert ModelConfig(image_size=size, d_layers=2).d_layers == 2
    assert ModelConfig.from_dict({"image_size": size, "d_layers": 3}).d_layers == 3
    assert ModelConfig.from_dict({"image_size": size}).d_layers == 3  # saved before the depth was an option


def test_train_saves_the_depth_it_built_for_the_crop(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    a, b = make_domains(tmp_path)
    tiny_72 = [v if v != "32" else "72" for v in TINY]
    result = runner.invoke(app, ["train", str(a), str(b), "--steps", "1", *tiny_72, "--name", "t"])
    assert result.exit_code == 0, result.output
    saved = json.loads((tmp_path / "runs" / "t" / "config.json").read_text())
    assert saved["model"]["d_layers"] == 4 and saved["model"]["image_size"] == 72
    with safe_open(tmp_path / "runs" / "t" / "training-state.safetensors", "pt") as state:
        convs = [k for k in state.keys() if k.startswith("d_a.net.") and len(state.get_slice(k).get_shape()) == 4]
    assert len(convs) == 6  # four stride-2 convs, one stride-1, the score: the 4-layer PatchGAN


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
