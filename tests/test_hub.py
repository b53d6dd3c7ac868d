"""Checkpoints on the Hugging Face Hub, against a real HTTP server on 127.0.0.1 (tests/hub_server.py).

huggingface_hub does the HTTP; the server answers as the Hub does. No test reaches the internet:
HF_ENDPOINT points at the local server, or at a port where nothing listens (conftest).
"""

from __future__ import annotations

import errno
import json
import os
import subprocess
import sys
import time
import types

import pytest

from aggan_cli import weights
from aggan_cli.checkpoint import load_generators, load_run
from aggan_cli.errors import CheckpointError, WeightsError
from aggan_cli.modelcard import write_model_card
from hub_server import HubServer, make_run, run_files

REPO = "org/tiny-smile"


@pytest.fixture
def hub(monkeypatch):
    import huggingface_hub.constants as hf_constants

    # huggingface_hub reads these once at import; make sure no telemetry or offline flag from the
    # surrounding environment leaks in (telemetry would ask the import-time endpoint for agent lists).
    monkeypatch.setattr(hf_constants, "HF_HUB_DISABLE_TELEMETRY", True)
    monkeypatch.setattr(hf_constants, "HF_HUB_OFFLINE", False)
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    with HubServer() as server:
        monkeypatch.setenv("HF_ENDPOINT", server.url)
        yield server


@pytest.fixture
def published(hub, tmp_path):
    """REPO with two commits: v1 (step 1, tagged "v1") and v2 (step 2, on main)."""
    v1 = hub.add_commit(REPO, run_files(make_run(tmp_path / "v1", step=1, seed=1)), ref="v1")
    run = make_run(tmp_path / "v2", step=2, seed=2)
    write_model_card(run, config=json.loads((run / "config.json").read_text()), domains=("neutral", "smile"),
                     step=2, sample_image=None, command_hint="aggan train ./neutral ./smile")
    v2 = hub.add_commit(REPO, run_files(run), ref="main")
    return types.SimpleNamespace(v1=v1, v2=v2, files_v2=run_files(run))


def _file_requests(hub):
    return [r for r in hub.seen() if "/resolve/" in r.path]


def _no_partial_files(cache_dir):
    hub_cache = weights.hub_cache_dir(cache_dir)
    return not any(p.name.endswith(".incomplete") for p in hub_cache.rglob("*"))


# ---------------------------------------------------------------------------------------------
# the happy path: download once, then the cache


def test_first_use_downloads_then_the_cache_answers_without_any_request(published, hub):
    path = weights.resolve_checkpoint(REPO)
    assert path.name == published.v2  # the snapshot of main's commit
    assert {"config.json", "model.safetensors", "README.md"} <= {p.name for p in path.iterdir()}
    g_ab, g_ba, ckpt = load_generators(path)
    assert ckpt.step == 2 and ckpt.domains == ("neutral", "smile")
    assert (path / "model.safetensors").read_bytes() == published.files_v2["model.safetensors"]
    assert path.is_relative_to(weights.hub_cache_dir())  # AGGAN_HOME/hub
    assert [r.path for r in hub.seen("GET") if "/resolve/" in r.path]  # it did download

    hub.clear()
    assert weights.resolve_checkpoint(REPO) == path
    assert _file_requests(hub) == []  # a cache hit sends nothing at all


def test_download_weights_reports_cached_copies_and_force_downloads_again(published, hub):
    first = weights.download(REPO)
    assert first.downloaded and first.step == 2 and not first.verified
    hub.clear()
    again = weights.download(REPO)
    assert not again.downloaded and again.path == first.path and _file_requests(hub) == []
    forced = weights.download(REPO, force=True)
    assert forced.downloaded and forced.path == first.path
    assert hub.seen("GET", "model.safetensors")


def test_a_pinned_revision_gets_its_own_content(published, hub):
    main = weights.resolve_checkpoint(REPO)
    by_tag = weights.resolve_checkpoint(REPO, revision="v1")
    by_commit = weights.resolve_checkpoint(REPO, revision=published.v1)
    assert load_run(main).step == 2
    assert load_run(by_tag).step == 1 and by_tag == by_commit and by_tag.name == published.v1
    assert (main / "model.safetensors").read_bytes() != (by_tag / "model.safetensors").read_bytes()
    hub.clear()
    assert weights.resolve_checkpoint(REPO, revision=published.v1) == by_tag
    assert _file_requests(hub) == []


def test_a_registry_entry_is_pinned_and_verified(published, hub, monkeypatch):
    digest = weights.sha256_of(weights.resolve_checkpoint(REPO, revision="v1") / "model.safetensors")
    entry = weights.Published(name="tiny", description="test", domains=("neutral", "smile"), image_size=32,
                              sha256=digest, repo_id=REPO, revision=published.v1)
    monkeypatch.setitem(weights.REGISTRY, "tiny", entry)
    result = weights.download("tiny")
    assert result.verified and result.step == 1 and result.path.name == published.v1  # not main
    assert weights.resolve_checkpoint("tiny") == result.path
    rows = {row.name: row for row in weights.list_checkpoints()}
    assert rows["tiny"].status == "cached" and rows["tiny"].source == f"{REPO}@{published.v1[:7]}"


# ---------------------------------------------------------------------------------------------
# refusals: checksum, broken uploads


def test_a_checksum_mismatch_is_refused_and_the_bad_file_removed(published, hub, monkeypatch):
    entry = weights.Published(name="tiny", description="test", domains=("a", "b"), image_size=32,
                              sha256="0" * 64, repo_id=REPO, revision=published.v2)
    monkeypatch.setitem(weights.REGISTRY, "tiny", entry)
    with pytest.raises(WeightsError, match="sha256.*removed"):
        weights.download("tiny")
    blobs = weights.hub_cache_dir() / "models--org--tiny-smile" / "blobs"
    stored = {p.read_bytes() for p in blobs.iterdir()} if blobs.is_dir() else set()
    assert published.files_v2["model.safetensors"] not in stored
    assert weights.find_in_cache(weights.hub_target("tiny")) is None
    with pytest.raises(WeightsError, match="sha256"):
        weights.resolve_checkpoint("tiny")  # never handed to the loader


def test_a_repo_that_is_not_a_checkpoint_is_reported(hub, tmp_path):
    hub.add_commit("org/not-aggan", {"README.md": b"# hello\n"})
    with pytest.raises(WeightsError, match="has no model.safetensors, so it is not an aggan checkpoint"):
        weights.resolve_checkpoint("org/not-aggan")
    files = run_files(make_run(tmp_path / "run"))
    files["config.json"] = b'{"format_version": 1, "model": {"ngf": 8, "n_blocks": 1}, "step": 1}'
    hub.add_commit("org/mismatched", files)
    with pytest.raises(WeightsError, match="not a loadable aggan checkpoint"):
        weights.download("org/mismatched")


def test_a_hostile_config_on_the_hub_is_refused_without_building_the_network(hub, tmp_path):
    from typer.testing import CliRunner

    from aggan_cli.cli import app
    from images import write_rgb

    files = run_files(make_run(tmp_path / "run"))
    config = json.loads(files["config.json"])
    config["model"].update(n_blocks=100_000_000, ngf=1_000_000_000)  # 10^8 blocks of 4·10^9 channels
    files["config.json"] = json.dumps(config).encode()
    hub.add_commit("org/hostile", files)
    with pytest.raises(WeightsError, match="ngf must be a whole number from 1 to 256"):
        weights.download("org/hostile")
    photo = write_rgb(tmp_path / "p.png", (30, 30))
    result = CliRunner().invoke(app, ["translate", str(photo), "--ckpt", "org/hostile", "--out", str(tmp_path / "o")])
    errors = [line for line in result.output.splitlines() if line.startswith("error:")]
    assert result.exit_code == 1 and len(errors) == 1 and "config.json" in errors[0], result.output
    assert "ngf must be a whole number from 1 to 256" in errors[0], result.output  # refused on its bounds


# ---------------------------------------------------------------------------------------------
# HTTP errors: one clear line each


def test_missing_repo_is_one_clear_line(hub):
    with pytest.raises(WeightsError, match=r"org/nothing-here is neither a local path nor a repository on "
                                           r"http://127\.0\.0\.1:\d+ \(HTTP 404\)") as err:
        weights.resolve_checkpoint("org/nothing-here")
    assert "\n" not in str(err.value)


def test_private_and_gated_repos_say_how_to_log_in(published, hub):
    hub.set_access(REPO, "private")
    with pytest.raises(WeightsError, match="HTTP 401.*private.*hf auth login") as err:
        weights.resolve_checkpoint(REPO)
    assert "\n" not in str(err.value)
    hub.set_access(REPO, "gated")
    with pytest.raises(WeightsError, match="gated; accept its conditions at http://127.*hf auth login"):
        weights.download(REPO)


def test_unknown_revision(published, hub):
    with pytest.raises(WeightsError, match="has no revision 'v9'"):
        weights.resolve_checkpoint(REPO, revision="v9")


def test_no_network_fails_fast_with_one_line(published, hub, monkeypatch):
    monkeypatch.setenv("HF_ENDPOINT", "http://127.0.0.1:9")  # connection refused
    slept: list[float] = []
    monkeypatch.setattr(time, "sleep", slept.append)  # the backoff is counted, not timed (the machine may be slow)
    with pytest.raises(WeightsError, match="cannot reach the Hugging Face Hub at http://127.0.0.1:9") as err:
        weights.resolve_checkpoint(REPO)
    assert sum(slept) < 10, slept  # no minute of backoff retries before saying so
    assert "\n" not in str(err.value)


def test_a_full_disk_is_one_line_and_leaves_nothing(published, hub, monkeypatch):
    import huggingface_hub.file_download as fd

    def disk_full(url, temp_file, **kwargs):
        temp_file.write(b"x" * 100)
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(fd, "http_get", disk_full)
    with pytest.raises(WeightsError, match="no space left on the device .* AGGAN_HOME"):
        weights.resolve_checkpoint(REPO)
    assert _no_partial_files(None)
    assert weights.find_in_cache(weights.hub_target(REPO)) is None


def test_a_download_cut_off_half_way_is_never_loaded_and_a_later_call_recovers(published, hub, monkeypatch):
    import huggingface_hub.file_download as fd

    # huggingface_hub retries a broken transfer 5 times, 1 s apart; skip the waiting, not the retries.
    monkeypatch.setattr(fd, "time", types.SimpleNamespace(sleep=lambda seconds: None))
    hub.cut("model.safetensors", 0.5)
    with pytest.raises(WeightsError, match="broke off while downloading model.safetensors") as err:
        weights.resolve_checkpoint(REPO)
    assert "\n" not in str(err.value)
    assert len(hub.seen("GET", "model.safetensors")) > 1  # it did try to resume
    snapshot = weights.hub_cache_dir() / "models--org--tiny-smile" / "snapshots" / published.v2
    assert not (snapshot / "model.safetensors").exists() and not (snapshot / "config.json").exists()
    assert _no_partial_files(None)
    with pytest.raises(WeightsError):  # offline, nothing usable is in the cache
        weights.resolve_checkpoint(REPO, offline=True)

    hub.heal()
    path = weights.resolve_checkpoint(REPO)
    assert load_run(path).step == 2
    assert (path / "model.safetensors").read_bytes() == published.files_v2["model.safetensors"]


# ---------------------------------------------------------------------------------------------
# offline


def test_offline_uses_the_cache_and_says_how_to_fix_a_miss(published, hub, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(WeightsError, match=rf"{REPO} is not in the cache .* offline mode is on .*"
                                           rf"`aggan download-weights {REPO}`") as err:
        weights.resolve_checkpoint(REPO)
    assert "\n" not in str(err.value)
    with pytest.raises(WeightsError, match="--revision v1`"):
        weights.download(REPO, revision="v1")
    assert _file_requests(hub) == []

    monkeypatch.delenv("HF_HUB_OFFLINE")
    path = weights.resolve_checkpoint(REPO)
    hub.clear()
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    assert weights.resolve_checkpoint(REPO) == path
    monkeypatch.delenv("HF_HUB_OFFLINE")
    assert weights.resolve_checkpoint(REPO, offline=True) == path
    with pytest.raises(WeightsError, match="offline"):
        weights.resolve_checkpoint(REPO, revision="v1", offline=True)
    with pytest.raises(WeightsError, match="--force .* needs the network"):
        weights.download(REPO, force=True, offline=True)
    assert _file_requests(hub) == []


def test_cache_dir_overrides_aggan_home(published, hub, tmp_path):
    path = weights.resolve_checkpoint(REPO, cache_dir=tmp_path / "elsewhere")
    assert path.is_relative_to(tmp_path / "elsewhere" / "hub")
    with pytest.raises(WeightsError, match="not in the cache"):
        weights.resolve_checkpoint(REPO, offline=True)  # the default cache is still empty


def test_local_paths_and_runs_come_before_the_hub(published, hub, tmp_path, monkeypatch):
    run = make_run(tmp_path / "runs" / "smile", step=5)
    assert weights.resolve_checkpoint("smile", runs_dir=tmp_path / "runs") == run
    monkeypatch.chdir(tmp_path)
    local = make_run(tmp_path / "org" / "tiny-smile", step=7)  # a folder named like the repo
    assert weights.resolve_checkpoint(REPO) == local.relative_to(tmp_path)
    assert _file_requests(hub) == []
    with pytest.raises(CheckpointError, match="not found"):
        weights.resolve_checkpoint("no-such-run", runs_dir=tmp_path / "runs")


# ---------------------------------------------------------------------------------------------
# the real command, in a subprocess


def _aggan(args, hub_url, home):
    env = {**os.environ, "HF_ENDPOINT": hub_url, "AGGAN_HOME": str(home), "HF_HUB_DISABLE_TELEMETRY": "1",
           "OMP_NUM_THREADS": "1"}
    env.pop("HF_HUB_OFFLINE", None)
    return subprocess.run([sys.executable, "-m", "aggan_cli", "download-weights", *args], env=env,
                          capture_output=True, text=True, timeout=900)


def test_download_weights_command_end_to_end(published, hub, tmp_path):
    home = tmp_path / "home"
    out = _aggan([REPO], hub.url, home)
    assert out.returncode == 0, out.stderr
    path = out.stdout.strip()
    assert len(out.stdout.strip().splitlines()) == 1 and os.path.isdir(path)
    assert path.startswith(str(home / "hub")) and os.path.isfile(os.path.join(path, "model.safetensors"))
    assert "downloaded" in out.stderr and "step 2" in out.stderr and "Traceback" not in out.stderr

    listed = _aggan(["--list"], "http://127.0.0.1:9", home)
    assert listed.returncode == 0, listed.stderr
    assert REPO in listed.stdout and "cached" in listed.stdout and "demo-smile" in listed.stdout

    failed = _aggan(["org/does-not-exist"], hub.url, home)
    assert failed.returncode == 1 and failed.stdout == ""
    lines = failed.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: org/does-not-exist is neither a local path"), failed.stderr


@pytest.mark.parametrize("mask", [0o022, 0o077, 0o002], ids=lambda m: f"umask {m:03o}")
def test_the_cache_follows_the_umask(published, hub, mask):
    from test_permissions import umask, wrong_modes

    with umask(mask):
        weights.download(REPO)
    cache = weights.hub_cache_dir()  # AGGAN_HOME itself was made by the test
    assert list(cache.rglob("model.safetensors"))
    # huggingface_hub's own lock files are 0664 on purpose, whatever the umask: a cache shared by a
    # group of users must let each of them take the locks. They are empty; everything else follows it.
    assert {k: v for k, v in wrong_modes(cache, mask).items() if not k.startswith(".locks/")} == {}
