"""Reliability and safety (docs/reliability.md): nothing lost, nothing unsafe, every bad input answered.

Each test holds one guarantee of docs/reliability.md and fails without it. Training runs are tiny
(ngf 4, one block, ndf 4, 32 px, CPU); real processes come from tests/processes.py.
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import pickle
import random
import shutil
import signal
import socket
import struct
import subprocess
import sys
import time
import zlib
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from safetensors.torch import save_file
from typer.testing import CliRunner

import aggan_cli.checkpoint as checkpoint
from aggan_cli.checkpoint import find_save, load_generators, load_run, load_training_state, save_run
from aggan_cli.cli import app
from aggan_cli.config import ModelConfig, TrainConfig
from aggan_cli.data import open_domain
from aggan_cli.errors import TrainingError
from aggan_cli.lock import LOCK_FILE, RunLock
from aggan_cli.networks import AGGAN
from aggan_cli.trainer import NONFINITE_PATIENCE, Trainer

from images import (photo_array, write_checkpoint, write_empty, write_mode, write_rgb, write_text,
                    write_truncated_jpeg)
from outcomes import assert_one_line_error, error_lines
from processes import metrics_steps, start, start_executable, wait_for

from test_train import TINY, _trainer, make_domains, train_tiny

runner = CliRunner()


def aggan(*args, **kw):
    """CliRunner, but an exception escaping the command is a test failure, not exit code 1."""
    result = runner.invoke(app, [str(a) for a in args], **kw)
    if result.exception is not None and not isinstance(result.exception, SystemExit):
        raise result.exception
    return result


def leftovers(run: Path) -> list[str]:
    """What an interrupted save leaves behind: temporary or committed generation folders, temp files."""
    return sorted(p.name for p in run.iterdir() if p.name.startswith(".ckpt-") or p.name.endswith(".tmp"))


# ---------------------------------------------------------------------------------------------
# 1. crash-safe training


class _Killed(BaseException):
    """A simulated SIGKILL: no except/finally handler in the code under test may clean up after it."""


TINY_MODEL = ModelConfig(ngf=4, n_blocks=1, ndf=4, image_size=32)


def _model(seed: int) -> AGGAN:
    torch.manual_seed(seed)
    return AGGAN(TINY_MODEL, with_discriminators=False)


def _save(run: Path, step: int) -> None:
    """A save whose every tensor says which step it belongs to."""
    model = _model(step)
    state = {"step": step, "moments": torch.full((3,), float(step)), "rng": torch.get_rng_state()}
    save_run(run, model_config=TINY_MODEL, g_ab=model.g_ab, g_ba=model.g_ba, step=step, training_state=state)


def _assert_whole_save(run: Path, allowed: set[int]) -> int:
    """The run loads as exactly one save: config, weights and training state all of one step."""
    ckpt = load_run(run, need_state=True)
    assert ckpt.step in allowed, ckpt.step
    expected = _model(ckpt.step)
    for key, value in expected.g_ab.state_dict().items():
        assert torch.equal(ckpt.generators[f"g_ab.{key}"], value), key  # no weights from another save
    state = load_training_state(ckpt.state_path, expected_step=ckpt.step)
    assert state["step"] == ckpt.step and state["moments"].tolist() == [float(ckpt.step)] * 3
    load_generators(run)  # and translate's loader agrees
    return ckpt.step


def test_a_kill_at_any_moment_of_a_save_leaves_a_whole_checkpoint(tmp_path, monkeypatch):
    """Kill a save at each of its file-system operations in turn (and half way through each file it
    writes): the run always loads as the old save or the new one, never a mix, and the next save
    cleans up. The commit point is the rename of the .ckpt-<step> folder: after it, the new save wins."""
    base = tmp_path / "base"
    _save(base, 1)
    real = {"rename": os.rename, "replace": os.replace, "rmtree": shutil.rmtree, "write": checkpoint.write_durably}
    committed_at = None
    outcomes = []
    for kill_at in range(100):
        run = tmp_path / f"run{kill_at}"
        shutil.copytree(base, run)
        ops = []

        def op(name, *args, **kw):
            ops.append(name)
            if len(ops) - 1 == kill_at:
                if name == "write":  # die half way through writing the file
                    path, data = args
                    with open(path, "xb") as f:
                        f.write(data[: len(data) // 2])
                raise _Killed
            if name == "rename" and Path(args[1]).name == ".ckpt-2":
                nonlocal committed_at
                committed_at = len(ops) - 1
            return real[name](*args, **kw)

        with monkeypatch.context() as m:
            m.setattr(os, "rename", lambda *a, **k: op("rename", *a, **k))
            m.setattr(os, "replace", lambda *a, **k: op("replace", *a, **k))
            m.setattr(shutil, "rmtree", lambda *a, **k: op("rmtree", *a, **k))
            m.setattr(checkpoint, "write_durably", lambda *a, **k: op("write", *a, **k))
            try:
                _save(run, 2)
                finished = True
            except _Killed:
                finished = False
        step = _assert_whole_save(run, {1, 2})
        if committed_at is not None and kill_at > committed_at:
            assert step == 2, (kill_at, ops)  # committed: never lost
        outcomes.append(step)
        # the next save (of the same step, as the demo's re-save does) completes and leaves nothing behind
        _save(run, 2)
        assert _assert_whole_save(run, {2}) == 2
        assert leftovers(run) == [], leftovers(run)
        if finished:
            break
    assert finished, "the save never completed"
    assert len(outcomes) >= 8 and outcomes.count(1) >= 3 and outcomes.count(2) >= 3, outcomes


def _generations(run: Path) -> set[str]:
    try:
        return {name for name in os.listdir(run) if name.startswith(".ckpt-")}
    except FileNotFoundError:
        return set()


def _freeze_inside_a_save(process, run: Path, old: set[str]) -> None:
    """Stop ``process`` (SIGSTOP) at a moment when one of its checkpoint writes is under way: watch for a
    new .ckpt-* folder, stop the process, and look again; if the save finished in between, let it go on
    (SIGCONT) and catch the next one. Events, not durations: this holds however loaded the machine is."""
    while True:
        wait_for(lambda: bool(_generations(run) - old), process, what="a checkpoint write")
        process.signal(signal.SIGSTOP)
        if _generations(run) - old:
            return
        process.signal(signal.SIGCONT)


def test_sigkill_at_random_moments_always_resumes(tmp_path, monkeypatch):
    """Kill a real `aggan train` with SIGKILL 12 times: after a seeded random number of steps, and every
    other time frozen (SIGSTOP) inside a checkpoint write. Every time: the run resumes; the step never
    goes back by more than one save interval from what the killed process had reached; only whole,
    consistent files are read. A kill before the first save completed is legal too: then --resume
    says there is nothing to resume and the next start is a fresh one. Finally the resumed weights
    equal those of a run that was never killed: nothing was lost on the way."""
    monkeypatch.chdir(tmp_path)
    a, b = make_domains(tmp_path)
    run = tmp_path / "runs" / "smile"
    save_every = 2
    # one thread, as in this process: the exactness check below compares with a run trained here, and
    # another thread count rounds differently
    args = ["train", a, b, "--steps", "100000", "--save-every", save_every, "--log-every", "1", "--sample-every",
            "100000", "--threads", "1", *TINY]
    rng = random.Random(1234)
    kept, mid_save, fresh_starts = 0, 0, 0
    for cycle in range(12):
        resume = ["--resume"] if checkpoint.has_checkpoint(run) else []
        fresh_starts += not resume
        old = _generations(run)  # what earlier kills left, until the next save sweeps it away
        started = time.time()
        process = start([*args, *resume], tmp_path)
        if cycle % 2:
            _freeze_inside_a_save(process, run, old)
        else:
            target = kept + rng.randint(1, 3 * save_every)
            wait_for(lambda: max(metrics_steps(run, since=started), default=0) >= target, process,
                     what=f"step {target}")
            time.sleep(rng.uniform(0.0, 0.05))  # somewhere in a later step: any moment is a legal one
        process.kill()
        assert process.wait() == -signal.SIGKILL
        reached = max(metrics_steps(run, since=started), default=kept)  # every step the killed process finished
        mid_save += bool(_generations(run) - old)
        if not checkpoint.has_checkpoint(run):
            assert kept == 0 and reached <= save_every, (kept, reached)  # it never finished its first save
            assert_one_line_error(aggan("train", "--name", "smile", "--resume"), "nothing to resume", "drop --resume")
            continue
        found = find_save(run, need_state=True)
        assert found.step >= kept, "a resume went back past a checkpoint it had already loaded"
        assert found.step >= reached - save_every, (found.step, reached)
        kept = found.step
    assert mid_save >= 6 and kept > 0, (mid_save, kept)
    # the killed-and-resumed run, continued in this process to one step past the last kill, matches a
    # run trained without interruption: resume is exact, nothing was lost on the way
    saved = find_save(run).config
    mcfg, tcfg = ModelConfig.from_dict(saved["model"]), TrainConfig.from_dict(saved["train"])
    sources = lambda: (open_domain(a, "A", minimum=1), open_domain(b, "B", minimum=1))  # noqa: E731
    resumed = Trainer(mcfg, tcfg, *sources(), run_dir=run, resume=True)
    resumed.fit(stop_at=kept + 1)
    straight = Trainer(mcfg, tcfg, *sources(), run_dir=tmp_path / "straight")
    straight.fit(stop_at=kept + 1)
    for (name, p), (_, q) in zip(straight.model.state_dict().items(), resumed.model.state_dict().items()):
        assert torch.equal(p, q), name
    print(f"12 kills, {mid_save} inside a save, {fresh_starts} fresh starts, resumed up to step {kept}")


def test_a_kill_before_the_first_save_leaves_nothing_to_resume_and_a_fresh_start_works(tmp_path, monkeypatch):
    """SIGKILL after a few steps, long before the first save: --resume answers "nothing to resume" in one
    line, and the same command without --resume starts the run afresh (the dead run's lock taken over)."""
    monkeypatch.chdir(tmp_path)
    a, b = make_domains(tmp_path)
    run = tmp_path / "runs" / "smile"
    process = start(["train", a, b, "--steps", "5000", "--save-every", "1000", "--log-every", "1", *TINY], tmp_path)
    wait_for(lambda: max(metrics_steps(run), default=0) >= 2, process, what="two training steps")
    process.kill()
    assert process.wait() == -signal.SIGKILL
    assert not checkpoint.has_checkpoint(run)
    assert_one_line_error(aggan("train", "--name", "smile", "--resume"), "nothing to resume", "drop --resume")
    again = aggan("train", a, b, "--steps", "2", "--log-every", "1", *TINY)
    assert again.exit_code == 0, again.output
    assert _resume_step(run) == 2 and metrics_steps(run) == [1, 2]  # the dead run's lines are gone


def test_sigterm_saves_the_current_step_and_exits_cleanly(tmp_path):
    """SIGTERM (a scheduler's preemption, `kill PID`) to the real executable: finish the step, save it,
    exit 0 with the command to continue. Nothing since the last interval save is lost."""
    a, b = make_domains(tmp_path)
    run = tmp_path / "runs" / "smile"
    process = start_executable(["train", a, b, "--steps", "5000", "--save-every", "1000", "--log-every", "1", *TINY],
                               tmp_path)
    wait_for(lambda: max(metrics_steps(run), default=0) >= 3, process, what="three training steps")
    process.signal(signal.SIGTERM)
    assert process.wait() == 0, process.log()
    reached = max(metrics_steps(run))
    assert find_save(run, need_state=True).step == reached  # saved exactly where it stopped
    assert "SIGTERM" in process.log() and "--resume" in process.log()
    assert not (run / LOCK_FILE).exists()  # a clean exit releases the lock


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM], ids=["ctrl-c", "scheduler-sigterm"])
def test_a_signal_to_the_whole_process_group_saves_with_loader_workers(tmp_path, sig):
    """Ctrl-C in a terminal, and SLURM's SIGTERM on preemption, reach the trainer and its data-loading
    workers at once: the workers stay up (a worker killed mid-transfer crashed the trainer before it
    saved), the trainer saves the step it was on, stops them, and exits 0."""
    a, b = make_domains(tmp_path)
    run = tmp_path / "runs" / "smile"
    argv = ["train", a, b, "--steps", "5000", "--save-every", "1000", "--log-every", "1", *TINY[:-3], "--workers", "1",
            "--quiet"]
    process = start(argv, tmp_path, own_group=True)
    wait_for(lambda: max(metrics_steps(run), default=0) >= 2, process, what="two training steps")
    process.signal(sig, group=True)
    assert process.wait() == 0, process.log()
    assert find_save(run, need_state=True).step == max(metrics_steps(run))
    assert signal.Signals(sig).name in process.log() and "Traceback" not in process.log()


def _children(pid: int) -> list[int]:
    """The pids whose parent is ``pid`` (Linux /proc)."""
    found = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()  # after "pid (comm)": state, ppid, ...
        except (OSError, IndexError):
            continue  # ended meanwhile
        if int(fields[1]) == pid:
            found.append(int(stat.parent.name))
    return found


@contextlib.contextmanager
def _training_with_a_worker(tmp_path, *extra: str):
    """A long run with one loader worker, two steps in; killed with its group if the test fails early."""
    a, b = make_domains(tmp_path)
    run = tmp_path / "runs" / "smile"
    argv = ["train", a, b, "--steps", "5000", "--save-every", "1000", "--log-every", "1", *TINY[:-3], "--workers", "1",
            "--quiet", *extra]
    process = start(argv, tmp_path, own_group=True)
    try:
        wait_for(lambda: max(metrics_steps(run), default=0) >= 2, process, what="two training steps")
        yield process, run
    finally:
        if process.running():
            process.signal(signal.SIGKILL, group=True)


LINUX_PROC = pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="reads the process tree from Linux /proc")


@LINUX_PROC
@pytest.mark.parametrize("threads", ["1", "2"])
def test_loader_workers_survive_a_sigterm_to_every_helper_process(tmp_path, threads):
    """The trainer here is a forkserver's child (tests/processes.py), so Python's default start method in
    it is forkserver, as on Python 3.14's Linux: its workers must still be its own children (PyTorch's
    workers quit when their parent changes, and a forkserver parent dies of a group SIGTERM). And with
    two threads PyTorch starts a thread pool in each worker before ``ignore_interrupts`` runs: none of
    its threads may take a SIGTERM not sent by the trainer. So SIGTERM to every process the trainer
    started leaves training going; the trainer's own SIGTERM then saves and exits 0."""
    with _training_with_a_worker(tmp_path, "--threads", threads) as (process, run):
        helpers = _children(process.pid)
        assert helpers and not [g for c in helpers for g in _children(c)], "a worker is not the trainer's own child"
        for pid in helpers:
            os.kill(pid, signal.SIGTERM)
        reached = max(metrics_steps(run))
        wait_for(lambda: max(metrics_steps(run)) >= reached + 20, process, what="twenty more steps")
        process.signal(signal.SIGTERM)
        assert process.wait() == 0, process.log()
    assert find_save(run, need_state=True).step == max(metrics_steps(run))


@LINUX_PROC
def test_a_killed_loader_worker_stops_training_with_one_line_after_saving(tmp_path):
    """The kernel's out-of-memory killer picks a worker: the trainer saves the step it reached and
    stops with one line that says so and what to do, instead of a traceback and lost steps."""
    with _training_with_a_worker(tmp_path) as (process, run):
        workers = [pid for pid in _children(process.pid)
                   if "resource_tracker" not in Path(f"/proc/{pid}/cmdline").read_text(errors="replace")]
        assert len(workers) == 1
        os.kill(workers[0], signal.SIGKILL)
        assert process.wait() == 1, process.log()
    log = process.log()
    errors = [line for line in log.splitlines() if line.startswith("error:")]
    assert "Traceback" not in log and len(errors) == 1, log
    assert "data-loading process stopped" in errors[0] and "--resume" in errors[0] and "--workers 0" in errors[0]
    assert find_save(run, need_state=True).step == max(metrics_steps(run))


DEAD_WORKER_SCRIPT = """
import os, signal, time
import torch
from torch.utils.data import DataLoader, Dataset
from aggan_cli.data import (collate, dead_worker, deferred_worker_deaths, ignore_interrupts, starting_workers,
                            watch_worker_deaths, worker_context)

class Items(Dataset):
    def __len__(self):
        return 64
    def __getitem__(self, i):
        return {"a": torch.full((3, 8, 8), float(i)), "b": torch.zeros(3, 8, 8), "bad": []}

def loader(workers):
    with starting_workers():
        return iter(DataLoader(Items(), batch_size=1, num_workers=workers, collate_fn=collate,
                               worker_init_fn=ignore_interrupts if workers else None,
                               multiprocessing_context=worker_context() if workers else None))

in_process = loader(0)
next(in_process)
print("no workers:", dead_worker(in_process))
batches = loader(1)
watch_worker_deaths()
with deferred_worker_deaths():
    next(batches)
    print("alive:", dead_worker(batches, wait=0.2))
    worker = batches._workers[0]
    os.kill(worker.pid, signal.SIGKILL)
    print("killed:", worker.pid, dead_worker(batches, wait=60))
"""


def test_a_worker_killed_while_its_batch_is_taken_is_named(tmp_path):
    """Killed while the trainer takes the batch it queued, a worker breaks the hand-over of that batch's
    shared memory (a connection refused or reset) before PyTorch sees it dead: ``dead_worker`` names it,
    waiting for it to finish dying, so the trainer saves and stops with one line, and answers nothing
    for a loader whose workers all live or that has none (a real DataLoader in a process of its own)."""
    done = subprocess.run([sys.executable, "-c", DEAD_WORKER_SCRIPT], capture_output=True, text=True, timeout=600,
                          cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    lines = dict(line.split(": ", 1) for line in done.stdout.splitlines())
    assert lines["no workers"] == "None" and lines["alive"] == "None", done.stdout
    pid, reason = lines["killed"].split(" ", 1)
    assert reason.startswith(f"DataLoader worker (pid") and pid in reason and "Killed" in reason, done.stdout


# ---------------------------------------------------------------------------------------------
# 2. failing disks


def _train(tmp_path, *extra, steps=2):
    a, b = make_domains(tmp_path)
    result = aggan("train", a, b, "--steps", steps, "--save-every", 2, "--log-every", 1, *TINY, *extra)
    assert result.exit_code == 0, result.output
    return tmp_path / "runs" / "smile"


@pytest.mark.parametrize("failure", ["disk full while writing", "permission denied at the commit"])
def test_a_failed_save_keeps_the_previous_checkpoint_and_stops_with_one_line(tmp_path, monkeypatch, failure):
    monkeypatch.chdir(tmp_path)
    run = _train(tmp_path)
    before = {p.name: p.read_bytes() for p in run.iterdir() if p.is_file() and p.suffix in (".json", ".safetensors")}
    real_rename = os.rename

    def write(path, data):  # half the bytes reach the disk, then it is full
        with open(path, "xb") as f:
            f.write(data[: len(data) // 2])
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    def rename(src, dst):  # what a read-only folder answers (tests run as root, where chmod does not bite)
        if Path(dst).name.startswith(".ckpt-"):
            raise PermissionError(errno.EACCES, os.strerror(errno.EACCES))
        return real_rename(src, dst)

    with monkeypatch.context() as m:
        if failure.startswith("disk full"):
            m.setattr(checkpoint, "write_durably", write)
            reason = "No space left on device (ENOSPC)"
        else:
            m.setattr(os, "rename", rename)
            reason = "Permission denied (EACCES)"
        result = aggan("train", "--name", "smile", "--resume", "--steps", "6")
    assert_one_line_error(result, reason, "step 4", "step 2", "--resume")  # what failed, what is kept, what to do
    after = {p.name: p.read_bytes() for p in run.iterdir() if p.is_file() and p.suffix in (".json", ".safetensors")}
    assert after == before  # the previous checkpoint, byte for byte
    assert _resume_step(run) == 2 and leftovers(run) == []
    assert not (run / LOCK_FILE).exists()
    assert aggan("train", "--name", "smile", "--resume", "--steps", "4", "--quiet").exit_code == 0
    assert _resume_step(run) == 4


def _resume_step(run: Path) -> int:
    return find_save(run, need_state=True).step


def test_failing_sample_and_metrics_writes_warn_once_and_training_goes_on(tmp_path, monkeypatch):
    """Samples, metrics and the model card help a person but are not needed to resume: a disk that
    refuses them gives one warning each, and checkpoints still save."""
    monkeypatch.chdir(tmp_path)
    import aggan_cli.visuals as visuals

    def full(*args, **kw):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(visuals, "atomic_write_bytes", full)  # sample grids and the metrics plot
    run = _train(tmp_path, "--sample-every", "1", steps=4)
    assert _resume_step(run) == 4


# ---------------------------------------------------------------------------------------------
# 3. one writer per run


def test_a_second_trainer_is_refused_naming_the_first_and_a_killed_ones_lock_is_taken_over(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    a, b = make_domains(tmp_path)
    run = tmp_path / "runs" / "smile"
    first = start(["train", a, b, "--steps", "5000", "--save-every", "1000", "--log-every", "1", *TINY], tmp_path)
    wait_for(lambda: max(metrics_steps(run), default=0) >= 1, first, what="the first trainer to start")
    holder = json.loads((run / LOCK_FILE).read_text())
    assert holder["pid"] == first.pid
    second = aggan("train", a, b, "--steps", "2", *TINY)
    assert_one_line_error(second, f"pid {first.pid}", socket.gethostname(), "--name")
    first.kill()
    first.wait()
    assert (run / LOCK_FILE).exists()  # a SIGKILL leaves the file behind...
    third = aggan("train", a, b, "--steps", "2", *TINY)  # ...but not the lock: the kernel dropped it
    assert third.exit_code == 0, third.output
    assert f"pid {first.pid}" in third.output and "taking over" in third.output
    assert not (run / LOCK_FILE).exists()


def test_lock_fallback_without_os_locks(tmp_path, monkeypatch):
    """Where the file system has no OS locks (ENOLCK), an exclusive lock file with a pid check does the job."""
    import aggan_cli.lock as lock

    def no_locks(fd):
        raise lock._NoOSLocks

    monkeypatch.setattr(lock, "_try_lock", no_locks)
    run = tmp_path / "run"
    with RunLock(run) as held:
        assert held.stale is None
        with pytest.raises(TrainingError, match=f"pid {os.getpid()}.*delete"):
            RunLock(run).acquire()
    assert not run.exists()  # released, and the folder it created is gone again
    run.mkdir()
    dead = lock.Holder(pid=2 ** 22 + 12345, host=socket.gethostname(), started="earlier")  # no such process
    (run / LOCK_FILE).write_bytes(dead.dump())
    with RunLock(run) as held:
        assert held.stale == dead
    other_host = lock.Holder(pid=1, host="elsewhere", started="earlier")
    (run / LOCK_FILE).write_bytes(other_host.dump())
    with pytest.raises(TrainingError, match="pid 1 on host elsewhere"):
        RunLock(run).acquire()


# ---------------------------------------------------------------------------------------------
# 4. hostile or broken images


def write_png_bomb(path: Path, side: int = 100_000) -> Path:
    """A 60-byte PNG whose header claims side × side pixels (10 gigapixels by default)."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    ihdr = struct.pack(">IIBBBBB", side, side, 8, 2, 0, 0, 0)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IEND", b""))
    return path


def write_truncated_png(path: Path) -> Path:
    write_rgb(path, (48, 40), seed=5)
    data = path.read_bytes()
    path.write_bytes(data[: len(data) * 2 // 3])
    return path


def write_animation(path: Path, size=(40, 36)) -> Path:
    """Three frames, the first recognisable: an animated GIF or WebP (by suffix)."""
    frames = [Image.fromarray(photo_array(size, seed), "RGB") for seed in (1, 2, 3)]
    path.parent.mkdir(parents=True, exist_ok=True)
    frames[0].save(path, save_all=True, append_images=frames[1:], duration=100, loop=0,
                   **({"lossless": True} if path.suffix == ".webp" else {}))
    with Image.open(path) as check:
        assert check.n_frames == 3
    return path


BROKEN = {  # file name -> writer; every one must be named when skipped
    "cut.jpg": write_truncated_jpeg,
    "cut.png": write_truncated_png,
    "empty.png": write_empty,
    "notes.jpg": write_text,
    "bomb.png": write_png_bomb,
}


def write_awkward(folder: Path) -> None:
    """Every kind of file that must work: odd modes, animations, unicode and spaces in names."""
    write_mode(folder / "deep 16-bit.png", "I;16", (37, 41))
    write_mode(folder / "cmyk.jpg", "CMYK", (40, 40))
    write_mode(folder / "palette-transparent.png", "P", (45, 37))
    write_animation(folder / "anim.gif")
    write_animation(folder / "anim.webp")
    write_rgb(folder / "visage souriant é.jpg", (42, 38), seed=7)
    write_rgb(folder / "笑顔.png", (38, 42), seed=8)


def test_training_skips_broken_and_hostile_images_names_them_and_goes_on(tmp_path, monkeypatch):
    """All in DOMAIN_A, which one epoch (11 steps here) visits file by file: the awkward files train,
    the broken ones are named (header failures before training, decoding failures when met)."""
    monkeypatch.chdir(tmp_path)
    a, b = make_domains(tmp_path, n_a=2, n_b=2)
    write_awkward(a)
    for name, writer in BROKEN.items():
        writer(a / name)
    result = aggan("train", a, b, "--steps", "12", "--log-every", "4", *TINY)
    assert result.exit_code == 0, result.output
    warnings = [line for line in result.output.splitlines() if line.startswith("warning:")]
    for name in BROKEN:
        assert sum(name in line for line in warnings) == 1, (name, warnings)  # named once, each
    assert any("bomb.png is too large to decode safely" in line for line in warnings)  # refused from its header
    assert _resume_step(tmp_path / "runs" / "smile") == 12


@pytest.mark.parametrize("workers", [0, 1])
def test_training_stops_with_one_line_when_no_image_of_a_domain_decodes(tmp_path, monkeypatch, workers):
    """Truncated JPEGs pass the header check and fail while decoding, possibly in a worker process:
    the message is still one line, without the worker's traceback."""
    monkeypatch.chdir(tmp_path)
    a, _ = make_domains(tmp_path)
    b = tmp_path / "broken"
    for i in range(2):
        write_truncated_jpeg(b / f"cut{i}.jpg")
    result = aggan("train", a, b, "--steps", "3", *TINY[:-3], "--workers", workers)
    assert_one_line_error(result, "no image of broken could be decoded", "cut")


def test_translate_processes_the_rest_lists_the_failures_and_exits_1(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    ckpt = write_checkpoint(tmp_path / "ckpt", mask="random")
    src = tmp_path / "in"
    write_awkward(src)
    for name, writer in BROKEN.items():
        writer(src / name)
    result = aggan("translate", src, "--ckpt", ckpt, "--out", tmp_path / "out", "--device", "cpu")
    assert result.exit_code == 1, result.output
    assert "Traceback" not in result.output
    for name in BROKEN:
        assert any(name in line for line in result.output.splitlines() if line.startswith("skipped:")), name
    assert error_lines(result) == [f"error: {len(BROKEN)} of {len(BROKEN) + 7} inputs failed (listed above)"]
    out = tmp_path / "out"
    expected = {"deep 16-bit", "cmyk", "palette-transparent", "anim", "anim-2", "visage souriant é", "笑顔"}
    assert {p.stem for p in out.glob("*.png")} == expected
    assert Image.open(out / "palette-transparent.png").mode == "RGBA"  # transparency kept
    assert Image.open(out / "deep 16-bit.png").size == (37, 41)
    # an animation is its first frame: anim.webp (lossless, written as anim-2.png) equals frame 1's photo
    frames = tmp_path / "frames"
    for seed in (1, 2):
        write_rgb(frames / f"frame{seed}.png", (40, 36), seed=seed)
    aggan("translate", frames, "--ckpt", ckpt, "--out", tmp_path / "single", "--device", "cpu")
    translated = np.asarray(Image.open(out / "anim-2.png"))
    assert np.array_equal(translated, np.asarray(Image.open(tmp_path / "single" / "frame1.png")))
    assert not np.array_equal(translated, np.asarray(Image.open(tmp_path / "single" / "frame2.png")))


@pytest.mark.filterwarnings("ignore::PIL.Image.DecompressionBombWarning")  # PIL's own warning, from the threads
def test_a_picture_over_the_pixel_limit_is_refused_before_decoding_also_on_threads(tmp_path, monkeypatch):
    """PIL only warns between 1× and 2× its limit; the header check refuses it whatever the warning
    filters of the (several) decoding threads are."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 40 * 40)
    ckpt = write_checkpoint(tmp_path / "ckpt")
    src = tmp_path / "in"
    for i in range(6):
        write_rgb(src / f"small{i}.png", (32, 32), seed=i)
        write_rgb(src / f"big{i}.png", (50, 50), seed=i)  # 2,500 px: 1.6× the limit
    result = aggan("translate", src, "--ckpt", ckpt, "--out", tmp_path / "out", "--device", "cpu", "--batch-size", 2)
    assert result.exit_code == 1
    assert sorted(p.stem for p in (tmp_path / "out").glob("*.png")) == [f"small{i}" for i in range(6)]
    assert result.output.count("too large to decode safely") == 6


# ---------------------------------------------------------------------------------------------
# 5. hostile or broken checkpoints


class Payload:
    """Unpickling this runs a shell command that creates a file: proof that a pickle was loaded."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch '{self.marker}'",))


def _damage(run: Path, kind: str, marker: Path) -> Path:
    """Damage a copy of a tiny run folder; returns what to pass as --ckpt."""
    weights, config = run / "model.safetensors", run / "config.json"
    cfg = json.loads(config.read_text())
    if kind == "truncated weights":
        weights.write_bytes(weights.read_bytes()[:500])
    elif kind == "zero-byte weights":
        weights.write_bytes(b"")
    elif kind in ("wrong shapes", "missing key", "extra key"):
        if kind == "wrong shapes":
            cfg["model"]["ngf"] = 8
            config.write_text(json.dumps(cfg))
        else:
            tensors, meta = checkpoint.load_tensors(weights)
            if kind == "missing key":
                tensors.pop(sorted(tensors)[0])
            else:
                tensors["g_ab.backdoor.weight"] = torch.zeros(2)
            weights.unlink()
            save_file(tensors, weights, metadata=meta)
    elif kind == "config.json missing":
        config.unlink()
    elif kind == "malformed config.json":
        config.write_text('{"format_version": 1, "model": {"ngf": ')
    elif kind == "newer format":
        cfg["format_version"] = 99
        config.write_text(json.dumps(cfg))
    elif kind == "pickle renamed model.safetensors":
        weights.write_bytes(pickle.dumps(Payload(marker)))
    elif kind.startswith("pickle ."):
        target = run / f"model{kind.split()[-1]}"
        target.write_bytes(pickle.dumps(Payload(marker)))
        return target
    elif kind == "torch.save archive .pth":
        target = run / "model.pth"
        torch.save({"g_ab": Payload(marker)}, target)
        return target
    else:
        raise ValueError(kind)
    return run


CHECKPOINT_DAMAGE = {
    "truncated weights": "not a valid safetensors file",
    "zero-byte weights": "empty (0 bytes)",
    "wrong shapes": "needs (8,",
    "missing key": "missing 1 key(s)",
    "extra key": "unexpected key(s) such as g_ab.backdoor.weight",
    "config.json missing": "config.json is missing",
    "malformed config.json": "is not valid JSON",
    "newer format": "upgrade",
    "pickle renamed model.safetensors": "is a Python pickle",
    "pickle .pt": "never unpickles",
    "pickle .ckpt": "never unpickles",
    "torch.save archive .pth": "never unpickles",
}


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory) -> Path:
    return write_checkpoint(tmp_path_factory.mktemp("tiny") / "run")


@pytest.mark.parametrize("kind", list(CHECKPOINT_DAMAGE))
def test_translate_with_a_broken_or_hostile_checkpoint_says_what_is_wrong(tmp_path, tiny_run, kind):
    run = tmp_path / "run"
    shutil.copytree(tiny_run, run)
    marker = tmp_path / "payload-ran"
    ckpt = _damage(run, kind, marker)
    image = write_rgb(tmp_path / "photo.png", (36, 32))
    result = aggan("translate", image, "--ckpt", ckpt, "--out", tmp_path / "out", "--device", "cpu")
    line = assert_one_line_error(result, CHECKPOINT_DAMAGE[kind])
    assert not marker.exists(), "a pickle payload ran"
    if "pickle" in kind or "torch.save" in kind:
        assert "pickle" in line and "never unpickles" in line


RESUME_DAMAGE = {
    "truncated state": ("training-state.safetensors", "not a valid safetensors file"),
    "zero-byte weights": ("model.safetensors", "empty (0 bytes)"),
    "malformed config.json": ("config.json", "is not valid JSON"),
    "pickle as state": ("training-state.safetensors", "is a Python pickle"),
    "newer format": ("config.json", "upgrade"),
}


@pytest.fixture(scope="module")
def trained_run(tmp_path_factory) -> Path:
    return train_tiny(tmp_path_factory.mktemp("trained"))


@pytest.mark.parametrize("kind", list(RESUME_DAMAGE))
def test_resume_of_a_damaged_run_says_which_file_and_what_is_wrong(tmp_path, monkeypatch, trained_run, kind):
    monkeypatch.chdir(tmp_path)
    run = tmp_path / "runs" / "smile"
    shutil.copytree(trained_run, run)
    marker = tmp_path / "payload-ran"
    name, expected = RESUME_DAMAGE[kind]
    target = run / name
    if kind == "truncated state":
        target.write_bytes(target.read_bytes()[:-100])
    elif kind == "zero-byte weights":
        target.write_bytes(b"")
    elif kind == "malformed config.json":
        target.write_text("{")
    elif kind == "pickle as state":
        target.write_bytes(pickle.dumps(Payload(marker)))
    else:
        _damage(run, "newer format", marker)
    result = aggan("train", "--name", "smile", "--resume", "--steps", "4")
    assert_one_line_error(result, name, expected)
    assert not marker.exists()


# ---------------------------------------------------------------------------------------------
# 6. numerical faults


def _params(modules):
    return [p.detach().clone() for m in modules for p in m.parameters()]


def test_a_nan_loss_skips_only_its_update_with_a_warning(tmp_path, monkeypatch):
    """A NaN generator loss at step 3 and a NaN discriminator loss at step 5: each skips exactly its
    own update (weights and Adam state untouched), one warning each, and training goes on to the end."""
    import aggan_cli.trainer as trainer_module

    trainer = _trainer(tmp_path / "run")
    real_g, real_d = trainer_module.generator_objective, trainer_module.discriminator_objective
    poison = {"g": {3}, "d": {5}}

    def g_objective(*args, **kw):
        out = real_g(*args, **kw)
        return out._replace(total=out.total * float("nan")) if trainer.step + 1 in poison["g"] else out

    def d_objective(*args, **kw):
        total, terms = real_d(*args, **kw)
        return (total * float("inf") if trainer.step + 1 in poison["d"] else total), terms

    monkeypatch.setattr(trainer_module, "generator_objective", g_objective)
    monkeypatch.setattr(trainer_module, "discriminator_objective", d_objective)
    snapshots = {}
    real_step = trainer.train_step

    def step(x, y):
        before = (_params(trainer.model.generators), _params(trainer.model.discriminators))
        terms = real_step(x, y)
        after = (_params(trainer.model.generators), _params(trainer.model.discriminators))
        snapshots[trainer.step] = [all(torch.equal(p, q) for p, q in zip(b, a)) for b, a in zip(before, after)]
        return terms

    trainer.train_step = step
    trainer.fit()
    assert trainer.step == 8
    assert snapshots[3] == [True, False] and snapshots[5] == [False, True]  # [G unchanged, D unchanged]
    assert snapshots[4] == [False, False]
    g_param = next(iter(trainer.opt_g.state))
    assert int(trainer.opt_g.state[g_param]["step"]) == 7 and int(trainer.opt_d.state[next(iter(trainer.opt_d.state))]["step"]) == 7
    skips = [w for w in trainer.reporter.warnings if "NaN or Inf" in w]
    assert len(skips) == 2 and "step 3" in skips[0] and "step 5" in skips[1]


def test_diverging_training_stops_keeps_the_last_good_checkpoint_and_names_causes(tmp_path, monkeypatch):
    """--lr 1e30 makes every loss NaN from step 2: the updates are skipped, saves are postponed, and
    after NONFINITE_PATIENCE such steps training stops with the checkpoint of step 1 intact."""
    monkeypatch.chdir(tmp_path)
    a, b = make_domains(tmp_path)
    result = aggan("train", a, b, "--steps", "200", "--lr", "1e30", "--save-every", "1", "--log-every", "1", *TINY)
    line = assert_one_line_error(result, "NaN or Inf", "learning rate", "--lr 1e+30", "precision",
                                 "checkpoint, step 1,", "--resume")
    assert f"step {1 + NONFINITE_PATIENCE}" in line and f"{NONFINITE_PATIENCE} steps in a row" in line
    assert _resume_step(tmp_path / "runs" / "smile") == 1  # saves were postponed while the losses were NaN
    skipped = [line for line in result.output.splitlines() if line.startswith("warning:") and "skipped" in line]
    assert len(skipped) == 1 and "step 2" in skipped[0]  # announced once, when it began
