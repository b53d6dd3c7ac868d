"""Real ``aggan`` processes for tests that kill, interrupt or race them.

``start(argv)`` runs ``aggan ARGV...`` through the console-script entry point (``aggan_cli.cli:main``)
in a separate OS process forked from a multiprocessing forkserver that has already imported torch and
aggan, so each process starts in a fraction of a second instead of the ~3 s a fresh interpreter
needs. The process is as real as ``aggan`` from a shell: its own pid, signals, file locks and exit
code. ``start_executable(argv)`` runs the installed ``aggan`` executable itself, for the tests that
must not depend on this shortcut.
"""

from __future__ import annotations

import json
import multiprocessing
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Callable

PRELOAD = ["torch", "torch._dynamo", "torchvision", "safetensors.torch", "PIL.Image", "rich.console", "rich.progress",
           "aggan_cli.cli", "aggan_cli.train_cli", "aggan_cli.trainer", "aggan_cli.visuals", "aggan_cli.modelcard",
           "matplotlib.pyplot"]  # torch._dynamo: torch.optim imports it, ~2 s
_context = None


def _forkserver():
    global _context
    if _context is None:
        _context = multiprocessing.get_context("forkserver")
        _context.set_forkserver_preload(PRELOAD)
    return _context


# Ctrl-C as in a terminal's foreground job. A test run launched in the background without job control
# (`cmd &` in a script, nohup) starts with SIGINT ignored, which children inherit and Python keeps, as it
# should; the Ctrl-C tests would see their signal ignored.
def _restore_sigint() -> None:  # before exec: the executable's Python then installs its own handler
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def _main(argv: list[str], cwd: str, log: str, env: dict[str, str], own_group: bool) -> None:
    """The child: become ``aggan ARGV`` with stdout and stderr in ``log``."""
    signal.signal(signal.SIGINT, signal.default_int_handler)  # see _restore_sigint
    if own_group:
        os.setpgrp()  # like a shell job: a terminal's Ctrl-C reaches every process of the group
    os.environ.clear()
    os.environ.update(env)
    os.chdir(cwd)
    fd = os.open(log, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
    os.dup2(fd, 1)
    os.dup2(fd, 2)
    sys.stdout = open(1, "w", encoding="utf-8", closefd=False, buffering=1)
    sys.stderr = open(2, "w", encoding="utf-8", closefd=False, buffering=1)
    sys.argv = ["aggan", *argv]
    from aggan_cli.cli import main

    main()  # ends with SystemExit(code): the process's exit code


class Aggan:
    """A running ``aggan`` process: ``pid``, ``kill()``, ``signal(sig)``, ``wait()`` -> exit code, ``log()``."""

    def __init__(self, argv: list[str], cwd: Path, *, own_group: bool = False, executable: bool = False) -> None:
        self.log_path = Path(cwd) / f".aggan-{time.monotonic_ns()}.log"
        env = dict(os.environ)
        if executable:
            exe = shutil.which("aggan") or str(Path(sys.executable).with_name("aggan"))
            self._log_file = open(self.log_path, "wb")
            self._popen = subprocess.Popen([exe, *argv], cwd=cwd, env=env, stdout=self._log_file,
                                           stderr=subprocess.STDOUT, start_new_session=own_group,
                                           preexec_fn=_restore_sigint)
            self._process = None
            self.pid = self._popen.pid
        else:
            self._process = _forkserver().Process(target=_main, args=(argv, str(cwd), str(self.log_path), env, own_group))
            self._process.start()
            self.pid = self._process.pid

    def signal(self, sig: int, *, group: bool = False) -> None:
        if group:
            os.killpg(self.pid, sig)
        else:
            os.kill(self.pid, sig)

    def kill(self) -> None:
        import signal

        self.signal(signal.SIGKILL)

    def running(self) -> bool:
        if self._process is not None:
            return self._process.is_alive()
        return self._popen.poll() is None

    def wait(self, timeout: float = 600) -> int:
        """The exit code; a negative number -N when signal N ended it."""
        if self._process is not None:
            self._process.join(timeout)
            if self._process.exitcode is None:
                raise TimeoutError(f"aggan did not exit within {timeout} s:\n{self.log()}")
            return self._process.exitcode
        code = self._popen.wait(timeout)
        self._log_file.close()
        return code

    def log(self) -> str:
        try:
            return self.log_path.read_text(encoding="utf-8", errors="replace")
        except FileNotFoundError:
            return ""


def start(argv: list[str], cwd: Path, *, own_group: bool = False) -> Aggan:
    return Aggan([str(a) for a in argv], cwd, own_group=own_group)


def start_executable(argv: list[str], cwd: Path, *, own_group: bool = False) -> Aggan:
    return Aggan([str(a) for a in argv], cwd, own_group=own_group, executable=True)


def wait_for(condition: Callable[[], bool], process: Aggan, timeout: float = 600, what: str = "") -> None:
    """Poll ``condition`` until true; fail early (with the process's output) if the process ends first.
    The timeout only keeps a broken test from hanging: it is far beyond what any condition needs, even
    on a loaded machine, and no test depends on how fast anything happens."""
    deadline = time.monotonic() + timeout
    while not condition():
        if not process.running():
            raise AssertionError(f"aggan exited before {what or 'the condition held'}:\n{process.log()}")
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what or 'the condition'}:\n{process.log()}")
        time.sleep(0.02)


def metrics_steps(run_dir: Path, since: float | None = None) -> list[int]:
    """Steps logged in ``metrics.jsonl`` (a line cut short by a kill is ignored); with ``since`` (a
    ``time.time()``), only the lines logged after it, by a process started then."""
    path = Path(run_dir) / "metrics.jsonl"
    steps = []
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except FileNotFoundError:
        return []
    for line in lines:
        try:
            row = json.loads(line)
            if since is None or row["time"] >= since:
                steps.append(int(row["step"]))
        except (json.JSONDecodeError, KeyError, TypeError, ValueError):
            continue
    return steps
