from __future__ import annotations

import os

import pytest

# Tests are CPU-only, small and seeded; keep threads low so two cores are not oversubscribed.
os.environ.setdefault("OMP_NUM_THREADS", "2")


@pytest.fixture(autouse=True)
def _isolated_home(tmp_path_factory, monkeypatch):
    """No test reads or writes the user's real cache or runs folder, or reaches a real Hub."""
    home = tmp_path_factory.mktemp("aggan_home")
    monkeypatch.setenv("AGGAN_HOME", str(home))
    monkeypatch.setenv("HF_HOME", str(home / "hf"))
    monkeypatch.setenv("HF_HUB_DISABLE_TELEMETRY", "1")
    monkeypatch.setenv("HF_ENDPOINT", "http://127.0.0.1:9")  # nothing listens: an accidental download fails fast
    monkeypatch.delenv("AGGAN_RUNS_DIR", raising=False)
    monkeypatch.delenv("AGGAN_DEVICE", raising=False)
    yield


@pytest.fixture
def seeded():
    import torch

    torch.manual_seed(0)
    return torch
