"""CPU threads follow the cores that other processes leave free (device.py, cpuload.py).

The machine's real load cannot be arranged in a test (and timing is never asserted), so these tests
feed the policy scripted /proc/stat readings and check the thread count it sets, and parse real
/proc/stat-format files."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest
import torch

from aggan_cli import cpuload, device
from aggan_cli.cpuload import Reading, others_between
from aggan_cli.device import ThreadPolicy, choose_threads

from images import write_rgb


@pytest.fixture(autouse=True)
def _restore_threads():
    before = torch.get_num_threads()
    yield
    torch.set_num_threads(before)
    device._policy = None


def test_choose_threads_leaves_the_busy_cores_to_their_processes():
    assert choose_threads(2, 2, 0.0) == 2     # quiet
    assert choose_threads(2, 2, 0.7) == 1     # one competitor, even when our spinning threads starve it
    assert choose_threads(2, 2, 1.0) == 1
    assert choose_threads(1, 2, 1.0) == 1
    assert choose_threads(1, 2, 0.1) == 2     # the competitor left
    assert choose_threads(2, 2, 3.0) == 1     # never fewer than one
    assert choose_threads(16, 16, 3.2) == 13  # a big machine with three busy cores
    # a load hovering at the boundary does not flip the count back and forth
    assert choose_threads(2, 2, 0.4) == 2 and choose_threads(1, 2, 0.4) == 1


def _stat(path, cpus: list[tuple[int, int]]) -> None:
    """A /proc/stat with the given (busy, idle) ticks per CPU (user = busy, plus an I/O wait that is idle)."""
    total_busy, total_idle = sum(b for b, _ in cpus), sum(i for _, i in cpus)
    lines = [f"cpu  {total_busy} 0 0 {total_idle} 5 0 0 0 0 0"]
    lines += [f"cpu{n} {busy} 0 0 {idle} 5 0 0 0 0 0" for n, (busy, idle) in enumerate(cpus)]
    lines += ["intr 12345 0 0", "ctxt 999", "btime 1700000000"]
    path.write_text("\n".join(lines) + "\n")


def test_reading_counts_busy_ticks_of_our_cores_only(tmp_path):
    stat = tmp_path / "stat"
    _stat(stat, [(300, 100), (50, 350), (1000, 0)])
    hz = os.sysconf("SC_CLK_TCK")
    reading = cpuload.read(stat, cores={0, 1})  # cpu2 is not ours: its 1000 busy ticks do not count
    assert reading is not None and reading.busy == pytest.approx(350 / hz)
    assert cpuload.read(tmp_path / "missing") is None


def test_others_are_the_busy_time_that_is_not_ours():
    first = Reading(wall=100.0, busy=50.0, own=10.0)
    # in 2 s the cores were busy 3.5 CPU-seconds, 1.5 of them ours: others kept one core busy
    assert others_between(first, Reading(102.0, 53.5, 11.5)) == pytest.approx(1.0)
    assert others_between(first, Reading(102.0, 51.0, 11.5)) == 0.0      # tick rounding never goes negative
    assert others_between(first, Reading(100.05, 51.0, 10.0)) is None    # too short a window to say
    assert others_between(None, first) is None


class _ScriptedLoad:
    """cpuload.read returning readings in which other processes keep ``others`` cores busy."""

    def __init__(self, monkeypatch, others: float) -> None:
        self.others, self.wall, self.busy = others, 1000.0, 0.0
        monkeypatch.setattr(cpuload, "read", self.read)
        monkeypatch.setattr(cpuload, "_first", self.read())  # "taken at process start"
        monkeypatch.setattr(device.time, "monotonic", lambda: self.wall + 0.001)

    def read(self, *args, **kwargs) -> Reading:
        return Reading(self.wall, self.busy, 0.0)

    def advance(self, seconds: float) -> None:
        self.wall += seconds
        self.busy += self.others * seconds


def _two_cores(monkeypatch) -> int:
    """As if PyTorch's own default were two threads (a 2-core machine), and OMP_NUM_THREADS unset."""
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    monkeypatch.setattr(device, "_default", 2)
    return 2


def test_auto_threads_follow_another_process_coming_and_going(monkeypatch):
    most = _two_cores(monkeypatch)
    load = _ScriptedLoad(monkeypatch, others=1.0)
    load.advance(1.5)  # the imports: one other CPU-bound process all along
    policy = device.use_threads()
    assert policy.threads == torch.get_num_threads() == most - 1
    load.others = 0.0
    load.advance(0.5)
    device.adjust_threads()  # re-checked only every few seconds: not yet
    assert torch.get_num_threads() == most - 1
    load.advance(device.THREADS_CHECK_EVERY)
    device.adjust_threads()
    assert torch.get_num_threads() == most
    load.others = 1.0
    load.advance(device.THREADS_CHECK_EVERY)
    device.adjust_threads()
    assert torch.get_num_threads() == most - 1


def test_given_threads_and_omp_num_threads_are_kept_whatever_the_load(monkeypatch):
    load = _ScriptedLoad(monkeypatch, others=5.0)
    load.advance(2.0)
    policy = ThreadPolicy(1)
    assert torch.get_num_threads() == 1 and not policy.follow
    monkeypatch.setenv("OMP_NUM_THREADS", "2")
    policy = ThreadPolicy(None)  # the user's OMP_NUM_THREADS: PyTorch's own count, never adjusted
    load.advance(10.0)
    assert policy.adjust() == device._default_threads() == torch.get_num_threads()  # PyTorch's own count


def test_bench_decides_once_and_keeps_the_count_while_it_measures(monkeypatch):
    _two_cores(monkeypatch)
    load = _ScriptedLoad(monkeypatch, others=0.0)
    load.advance(1.0)
    policy = device.use_threads(follow=False)
    load.others = 5.0
    load.advance(10.0)
    device.adjust_threads()
    assert policy.threads == torch.get_num_threads() == 2


def test_train_on_a_busy_machine_starts_with_the_free_cores(tmp_path, monkeypatch):
    """What `aggan train` reports on its first line: the thread count the policy chose."""
    from typer.testing import CliRunner

    from aggan_cli.cli import app

    load = _ScriptedLoad(monkeypatch, others=1.0)  # one other CPU-bound process on two cores
    _two_cores(monkeypatch)
    load.advance(2.0)
    for n in range(2):
        write_rgb(tmp_path / "a" / f"{n}.png", (40, 40), seed=n)
        write_rgb(tmp_path / "b" / f"{n}.png", (40, 40), seed=10 + n)
    result = CliRunner().invoke(app, ["train", str(tmp_path / "a"), str(tmp_path / "b"),
                                      "--runs-dir", str(tmp_path / "runs"), "--size", "32", "--ngf", "4",
                                      "--n-blocks", "1", "--ndf", "4", "--steps", "1", "--device", "cpu", "--quiet"])
    assert result.exit_code == 0, result.output
    assert "cpu (1 thread)" in result.output


def test_threads_must_be_positive():
    out = subprocess.run([sys.executable, "-m", "aggan_cli", "train", "--demo", "--threads", "0"],
                         capture_output=True, text=True, timeout=60)
    assert out.returncode == 2 and "--threads" in out.stderr


def test_the_load_is_first_read_before_torch_is_imported():
    code = ("import sys; from aggan_cli import cli, cpuload\n"
            "cpuload.begin(); assert cpuload.first_reading() is not None or sys.platform != 'linux'\n"
            "assert 'torch' not in sys.modules, 'torch was imported'; print('clean')")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "clean"


def test_translate_uses_the_threads_it_is_given(tmp_path, monkeypatch):
    from typer.testing import CliRunner

    from aggan_cli.cli import app

    write_rgb(tmp_path / "photo.jpg", (64, 48))
    result = CliRunner().invoke(app, ["translate", str(tmp_path / "photo.jpg"), "--out", str(tmp_path / "out"),
                                      "--device", "cpu", "--threads", "1"])
    assert result.exit_code == 0, result.output
    assert "on cpu (1 thread)" in result.output and (tmp_path / "out" / "photo.png").is_file()


def test_evaluate_uses_the_threads_it_is_given(tmp_path):
    from typer.testing import CliRunner

    from aggan_cli.cli import app

    write_rgb(tmp_path / "in" / "photo.png", (64, 48))
    write_rgb(tmp_path / "twins" / "photo.png", (64, 48), seed=1)
    before = torch.get_num_threads()
    try:
        result = CliRunner().invoke(app, ["evaluate", str(tmp_path / "in"), "--ckpt", "demo-smile", "--twins",
                                          str(tmp_path / "twins"), "--device", "cpu", "--threads", "1", "--json"])
        assert result.exit_code == 0, result.output
        assert "cpu (1 thread)" in result.stderr and torch.get_num_threads() == 1
    finally:
        torch.set_num_threads(before)
