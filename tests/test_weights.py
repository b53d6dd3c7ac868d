"""The registry, the cache folder, bundled checkpoints, --list and model cards: all without a network.

Downloads from a (local) Hub are in test_hub.py.
"""

from __future__ import annotations

import fnmatch
import json
import tomllib
from pathlib import Path

import pytest
from typer.testing import CliRunner

from aggan_cli import weights
from aggan_cli.cli import app
from aggan_cli.errors import CheckpointError, WeightsError
from aggan_cli.modelcard import write_model_card
from hub_server import make_run

ROOT = Path(__file__).resolve().parents[1]
runner = CliRunner()


# ---------------------------------------------------------------------------------------------
# the cache folder and the environment


def test_cache_is_aggan_home_else_the_user_cache(monkeypatch, tmp_path):
    monkeypatch.setenv("AGGAN_HOME", str(tmp_path / "home"))
    assert weights.default_cache_dir() == tmp_path / "home"
    assert weights.hub_cache_dir() == tmp_path / "home" / "hub"
    assert weights.hub_cache_dir(tmp_path / "other") == tmp_path / "other" / "hub"  # --cache-dir wins
    monkeypatch.delenv("AGGAN_HOME")
    from platformdirs import user_cache_dir

    assert weights.default_cache_dir() == Path(user_cache_dir("aggan"))


@pytest.mark.parametrize("value, expected", [("1", True), ("true", True), ("ON", True), ("0", False), ("", False)])
def test_offline_follows_hf_hub_offline_at_call_time(monkeypatch, value, expected):
    monkeypatch.setenv("HF_HUB_OFFLINE", value)
    assert weights.is_offline() is expected
    assert weights.is_offline(True) is True


@pytest.mark.parametrize("spec, ok", [("org/repo", True), ("my-org/model.v2", True), ("smile", False),
                                      ("a/b/c", False), ("./runs/x", False), ("org/re po", False),
                                      ("org/a--b", False), ("org/..", False)])
def test_repo_ids_are_told_apart_from_names_and_paths(spec, ok):
    assert weights.is_repo_id(spec) is ok


# ---------------------------------------------------------------------------------------------
# the registry is honest


def test_registry_entries_are_well_formed():
    with pytest.raises(ValueError, match="pinned"):
        weights.Published(name="x", description="", domains=("a", "b"), image_size=32, sha256="0" * 64,
                          repo_id="org/x", revision="main")  # a branch is not a pin
    with pytest.raises(ValueError, match="exactly one"):
        weights.Published(name="x", description="", domains=("a", "b"), image_size=32, sha256=None)
    for name, entry in weights.REGISTRY.items():
        assert name == entry.name and entry.description and len(entry.domains) == 2


def test_shipped_bundles_match_their_registry_entries():
    """A bundled entry is offered only with its files and digest; once the files are in, the entry must match."""
    for entry in weights.REGISTRY.values():
        if entry.bundled is None:
            continue
        folder = weights.BUNDLED_DIR / entry.bundled
        files_present = (folder / "config.json").is_file() and (folder / "model.safetensors").is_file()
        if not files_present:
            assert weights.bundled_path(entry) is None
            with pytest.raises(WeightsError, match=f"bundled checkpoint '{entry.name}' is not part of this installation"):
                weights.resolve_checkpoint(entry.name)
            continue
        assert entry.sha256 == weights.sha256_of(folder / "model.safetensors"), \
            f"set REGISTRY[{entry.name!r}].sha256 to the digest of {folder / 'model.safetensors'}"
        config = json.loads((folder / "config.json").read_text())
        assert (config["domains"]["a"], config["domains"]["b"]) == entry.domains
        assert config["model"]["image_size"] == entry.image_size
        assert (folder / "model.safetensors").stat().st_size <= 5_000_000
        assert weights.resolve_checkpoint(entry.name) == folder


def test_package_data_ships_the_bundled_folders():
    patterns = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]["package-data"]["aggan_cli"]
    for name in ("config.json", "model.safetensors"):
        assert any(fnmatch.fnmatch(f"bundled/demo-smile/{name}", p) for p in patterns), patterns


@pytest.fixture
def bundle(tmp_path, monkeypatch):
    """A bundled demo-smile made of a tiny real checkpoint, in a stand-in package folder."""
    monkeypatch.setattr(weights, "BUNDLED_DIR", tmp_path / "bundled")
    run = make_run(tmp_path / "bundled" / "demo-smile", step=4)
    entry = weights.REGISTRY["demo-smile"]
    return run, entry, weights.sha256_of(run / "model.safetensors")


def _with_digest(monkeypatch, entry, digest):
    from dataclasses import replace

    monkeypatch.setitem(weights.REGISTRY, entry.name, replace(entry, sha256=digest, image_size=32))


def test_a_bundle_without_its_digest_is_not_offered(bundle, monkeypatch):
    run, entry, digest = bundle
    _with_digest(monkeypatch, entry, None)
    assert weights.bundled_path(weights.REGISTRY["demo-smile"]) is None
    assert {r.name: r.status for r in weights.list_checkpoints()}["demo-smile"] == "not in this build"
    with pytest.raises(WeightsError, match="not part of this installation"):
        weights.resolve_checkpoint("demo-smile")


def test_a_bundle_with_files_and_digest_resolves_offline(bundle, monkeypatch):
    run, entry, digest = bundle
    _with_digest(monkeypatch, entry, digest)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    assert weights.resolve_checkpoint("demo-smile") == run
    row = {r.name: r for r in weights.list_checkpoints()}["demo-smile"]
    assert row.status == "bundled" and row.size_bytes == (run / "model.safetensors").stat().st_size
    result = weights.download("demo-smile")
    assert result.path == run and result.source == "bundled" and not result.downloaded and result.step == 4


def test_a_damaged_bundle_is_refused(bundle, monkeypatch):
    run, entry, digest = bundle
    _with_digest(monkeypatch, entry, digest)
    data = (run / "model.safetensors").read_bytes()
    (run / "model.safetensors").write_bytes(data[:-1] + bytes([data[-1] ^ 1]))
    with pytest.raises(WeightsError, match="missing or damaged"):
        weights.resolve_checkpoint("demo-smile")


def test_a_run_named_like_a_bundle_comes_first(bundle, monkeypatch, tmp_path):
    run, entry, digest = bundle
    _with_digest(monkeypatch, entry, digest)
    mine = make_run(tmp_path / "runs" / "demo-smile", step=9)
    assert weights.resolve_checkpoint("demo-smile", runs_dir=tmp_path / "runs") == mine


def test_unknown_names_say_where_we_looked(tmp_path):
    with pytest.raises(CheckpointError, match=r"'nope' not found: it is not a path, a run in .*runs/, a known name "
                                              r"\(see `aggan download-weights --list`\)"):
        weights.resolve_checkpoint("nope", runs_dir=tmp_path / "runs")
    with pytest.raises(CheckpointError, match="not found"):
        weights.resolve_checkpoint("./no/such/folder")
    with pytest.raises(WeightsError, match="neither a known checkpoint name nor a Hub ORG/REPO"):
        weights.download("nope")


def test_an_empty_checkpoint_name_is_an_error_not_the_current_folder(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    for spec in ("", "  "):
        with pytest.raises(CheckpointError, match="the checkpoint name is empty"):
            weights.resolve_checkpoint(spec)


def test_a_revision_for_the_bundled_checkpoint_is_refused_not_ignored():
    for call in (lambda: weights.download("demo-smile", revision="v2"),
                 lambda: weights.resolve_checkpoint("demo-smile", revision="v2")):
        with pytest.raises(WeightsError, match="bundled with aggan: it has no revisions.*leave out --revision"):
            call()


def test_an_aggan_home_that_is_a_file_says_so_without_run_again(monkeypatch, tmp_path):
    home = tmp_path / "home"
    home.write_text("a file")
    monkeypatch.setenv("AGGAN_HOME", str(home))
    result = runner.invoke(app, ["download-weights", "org/repo"])
    errors = [line for line in result.output.splitlines() if line.startswith("error:")]
    assert result.exit_code == 1 and len(errors) == 1, result.output
    assert f"{home} is a file" in errors[0] and "AGGAN_HOME" in errors[0] and "again" not in errors[0]


@pytest.mark.parametrize("endpoint", ["http://127.0.0.1:99999", "not a url", "ftp://example.com"])
def test_a_malformed_hf_endpoint_is_one_line_and_nothing_on_stdout(tmp_path, endpoint):
    import os
    import subprocess
    import sys

    # a real process: huggingface_hub reads HF_ENDPOINT once, when first imported, and prints on stdout
    from images import write_rgb

    write_rgb(tmp_path / "x.png", (30, 30))
    env = {**os.environ, "HF_ENDPOINT": endpoint, "AGGAN_HOME": str(tmp_path)}
    commands = [["download-weights", "org/repo"], ["translate", "x.png", "--ckpt", "org/repo"]]
    for args in commands if "99999" in endpoint else commands[:1]:
        proc = subprocess.run([sys.executable, "-m", "aggan_cli", *args], capture_output=True, text=True,
                              env=env, cwd=tmp_path, timeout=300)
        assert proc.returncode == 1 and proc.stdout == "", (proc.stdout, proc.stderr)
        errors = [line for line in proc.stderr.splitlines() if line.startswith("error:")]
        assert len(errors) == 1 and "HF_ENDPOINT" in errors[0] and repr(endpoint) in errors[0], proc.stderr
        assert "Traceback" not in proc.stderr and "again" not in errors[0]


# ---------------------------------------------------------------------------------------------
# the command line, offline


def test_list_works_offline_and_marks_bundles(bundle, monkeypatch):
    run, entry, digest = bundle
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    result = runner.invoke(app, ["download-weights", "--list"])
    assert result.exit_code == 0, result.output
    assert "demo-smile" in result.output and "not in this build" in result.output  # no digest yet
    _with_digest(monkeypatch, entry, digest)
    result = runner.invoke(app, ["download-weights", "--list"])
    assert result.exit_code == 0 and "bundled" in result.output and "not in this build" not in result.output


def test_download_weights_of_a_bundle_prints_its_path(bundle, monkeypatch):
    run, entry, digest = bundle
    _with_digest(monkeypatch, entry, digest)
    result = runner.invoke(app, ["download-weights", "demo-smile", "--offline"])
    assert result.exit_code == 0, result.output
    assert str(run) in result.stdout.splitlines()


def test_download_weights_usage_errors():
    assert runner.invoke(app, ["download-weights"]).exit_code == 2
    assert runner.invoke(app, ["download-weights", "org/x", "--list"]).exit_code == 2


def test_offline_miss_is_one_line_and_exit_1(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    result = runner.invoke(app, ["download-weights", "org/never-downloaded"])
    assert result.exit_code == 1
    assert "offline mode is on" in result.output and "Traceback" not in result.output


# ---------------------------------------------------------------------------------------------
# model cards


def _card(tmp_path, **kw):
    run = make_run(tmp_path / "run", step=1200)
    config = json.loads((run / "config.json").read_text())
    config["train"] = {"steps": 2000, "lr": 0.0002, "lambda_cycle": 10.0, "demo": True, "workers": 2}
    options = dict(config=config, domains=("neutral", "smi|le"), step=1200, sample_image=None,
                   command_hint="aggan train ./neutral ./smile --size 32")
    options.update(kw)
    return run, write_model_card(run, **options)


def test_model_card_front_matter_is_hub_metadata(tmp_path):
    import yaml
    from huggingface_hub import ModelCard

    run, path = _card(tmp_path)
    assert path == run / "README.md"
    text = path.read_text()
    front = yaml.safe_load(text.split("---\n")[1])
    assert front["library_name"] == "aggan" and front["license"] == "mit"
    assert {"aggan", "image-to-image"} <= set(front["tags"])
    card = ModelCard.load(path)  # the Hub library's own parser reads it
    assert card.data.library_name == "aggan"


def test_model_card_tells_how_to_use_and_reproduce(tmp_path):
    sample = tmp_path / "run" / "samples" / "step 1200.png"
    sample.parent.mkdir(parents=True)
    sample.write_bytes(b"a picture")
    run, path = _card(tmp_path, sample_image=str(sample))
    text = path.read_text()
    assert "aggan translate photo.jpg --ckpt ORG/REPO" in text
    assert "aggan train ./neutral ./smile --size 32" in text
    assert "1,200" in text and "smi\\|le" in text  # steps; a | in a name does not break the table
    assert "| ngf | 4 |" in text and "| lr | 0.0002 |" in text and "| demo | yes |" in text
    assert "workers" not in text  # machine-specific options stay in config.json
    assert "![samples](samples/step%201200.png)" in text  # relative, so it shows on the Hub
    assert not [p for p in run.iterdir() if p.name.startswith(".")]  # atomic: no temporary file left


def test_model_card_without_a_sample_has_no_image(tmp_path):
    _, path = _card(tmp_path, sample_image=None, command_hint="")
    text = path.read_text()
    assert "![" not in text and "## Reproduce" not in text


@pytest.mark.parametrize("endpoint", ["http://:80", "https://", "http://host:port", "huggingface.co"])
def test_hub_endpoint_refuses_what_is_not_a_web_address(monkeypatch, endpoint):
    monkeypatch.setenv("HF_ENDPOINT", endpoint)
    with pytest.raises(WeightsError, match="is not a web address"):
        weights.hub_endpoint()
    monkeypatch.setenv("HF_ENDPOINT", "http://127.0.0.1:8080/")
    assert weights.hub_endpoint() == "http://127.0.0.1:8080"
