from __future__ import annotations

import pytest

# Tests are CPU-only, small and seeded. The test process runs PyTorch on one thread: tiny models gain
# little from more, and on a busy machine two OpenMP threads spin-wait for a core that another process
# holds, so a step takes tens of times longer (docs/performance.md, "Threads on a busy machine"). The
# commands the tests start in subprocesses choose their threads as they do for a user (one per core
# that other processes leave free; device.ThreadPolicy).


@pytest.fixture(autouse=True)
def _one_thread_in_the_test_process():
    import torch

    from aggan_cli import device

    torch.set_num_threads(1)
    device._policy = None
    yield
    torch.set_num_threads(1)  # an in-process command may have chosen its own count and policy
    device._policy = None


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
