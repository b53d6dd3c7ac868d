"""One writer per run folder: ``aggan train`` holds ``RUN/.lock`` while it trains.

The lock is an operating-system lock on an open file (``fcntl.flock`` on POSIX, ``msvcrt.locking`` on
Windows), so the kernel drops it the moment its holder dies, SIGKILL included: a lock file left behind
by a killed process is stale by construction, and the next ``aggan train`` takes it over. The file
holds the holder's pid, host, start time and command line, so that a refusal names the process to
wait for; a clean exit deletes it, so a file found with someone else's details means its writer died.

Where the file system has no working OS locks (some network file systems answer ENOLCK or
EOPNOTSUPP), the fallback is a lock file created exclusively: it is stale when its pid no longer runs
on this host; a lock written on another host cannot be checked, and the refusal says how to remove it.
"""

from __future__ import annotations

import errno
import json
import os
import socket
import time
from dataclasses import dataclass
from pathlib import Path

from .errors import TrainingError

LOCK_FILE = ".lock"
_NO_OS_LOCKS = {errno.ENOLCK, errno.EOPNOTSUPP, errno.ENOSYS, errno.EINVAL}
_WINDOWS_LOCK_OFFSET = 1 << 20  # lock a byte past the details, which others must still be able to read

try:
    import fcntl
except ImportError:  # Windows
    fcntl = None  # type: ignore[assignment]
try:
    import msvcrt
except ImportError:  # POSIX
    msvcrt = None  # type: ignore[assignment]


@dataclass(frozen=True)
class Holder:
    """Who holds (or held) a run's lock."""

    pid: int | None
    host: str
    started: str
    command: str = ""

    def describe(self) -> str:
        who = f"pid {self.pid}" if self.pid is not None else "an unknown process"
        return f"{who} on host {self.host or '?'}" + (f", started {self.started}" if self.started else "")

    @classmethod
    def me(cls, command: str) -> "Holder":
        return cls(os.getpid(), socket.gethostname(), time.strftime("%Y-%m-%d %H:%M:%S"), command)

    @classmethod
    def parse(cls, text: str) -> "Holder | None":
        try:
            data = json.loads(text)
            pid = data.get("pid")
            return cls(pid if isinstance(pid, int) else None, str(data.get("host", "")), str(data.get("started", "")),
                       str(data.get("command", "")))
        except (json.JSONDecodeError, AttributeError):
            return None

    def dump(self) -> bytes:
        return json.dumps({"pid": self.pid, "host": self.host, "started": self.started, "command": self.command}).encode()


class _NoOSLocks(Exception):
    """This file system (or platform) cannot hold an OS lock."""


class RunLock:
    """``with RunLock(run_dir):`` — refuse with :class:`TrainingError` if another process holds it.

    ``stale`` is set, after acquiring, to the previous holder when that one died without releasing.
    """

    def __init__(self, run_dir: str | Path, *, command: str = "") -> None:
        self.run_dir = Path(run_dir)
        self.path = self.run_dir / LOCK_FILE
        self.me = Holder.me(command)
        self.stale: Holder | None = None
        self._fd: int | None = None
        self._created_dir = False

    def __enter__(self) -> "RunLock":
        self.acquire()
        return self

    def __exit__(self, *exc) -> None:
        self.release()

    def acquire(self) -> None:
        self._created_dir = not self.run_dir.exists()
        try:
            self.run_dir.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise TrainingError(f"cannot create the run folder {self.run_dir} ({exc.strerror or exc}); "
                                "check the permissions of --runs-dir") from None
        try:
            self._fd = self._os_lock()
        except _NoOSLocks:
            self._fd = self._exclusive_file()

    def release(self) -> None:
        if self._fd is None:
            return
        fd, self._fd = self._fd, None
        try:
            os.ftruncate(fd, 0)  # an empty file means a clean exit, wherever unlinking an open file fails
            self.path.unlink(missing_ok=True)  # while still holding the lock, so nobody locks a doomed file
        except OSError:
            pass
        os.close(fd)  # drops the OS lock
        if self._created_dir:
            try:
                self.run_dir.rmdir()  # only if training never wrote anything there
            except OSError:
                pass

    # -- the OS lock

    def _os_lock(self) -> int:
        for _ in range(10):
            try:
                fd, created = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_EXCL, 0o644), True
            except FileExistsError:
                try:
                    fd, created = os.open(self.path, os.O_RDWR), False
                except FileNotFoundError:
                    continue  # its holder just deleted it: again
            except OSError as exc:
                raise TrainingError(f"cannot create the lock file {self.path} ({exc.strerror or exc}); "
                                    "check the permissions of the run folder") from None
            try:
                taken = _try_lock(fd)
            except BaseException:
                os.close(fd)
                if created:  # leave no empty file for the exclusive-file fallback to trip over
                    self.path.unlink(missing_ok=True)
                raise
            if not taken:
                holder = Holder.parse(_read(fd))
                os.close(fd)
                raise TrainingError(self._busy(holder))
            if _same_file(fd, self.path):
                self._take_over(fd)
                return fd
            os.close(fd)  # the previous holder deleted the file between our open and our lock: again
        raise TrainingError(f"could not lock {self.path}: it keeps being replaced; is another aggan starting?")

    def _take_over(self, fd: int) -> None:
        previous = Holder.parse(_read(fd))
        if previous is not None and (previous.pid, previous.host) != (self.me.pid, self.me.host):
            self.stale = previous
        os.ftruncate(fd, 0)
        os.lseek(fd, 0, os.SEEK_SET)
        os.write(fd, self.me.dump())
        os.fsync(fd)

    # -- the fallback: a file created exclusively

    def _exclusive_file(self) -> int:
        for _ in range(2):
            try:
                fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_EXCL, 0o644)
            except FileExistsError:
                holder = Holder.parse(self.path.read_text(encoding="utf-8", errors="replace"))
                if holder is not None and holder.host == self.me.host and holder.pid and not _pid_running(holder.pid):
                    self.stale = holder
                    self.path.unlink(missing_ok=True)
                    continue
                raise TrainingError(self._busy(holder, fallback=True)) from None
            os.write(fd, self.me.dump())
            os.fsync(fd)
            return fd
        raise TrainingError(self._busy(None, fallback=True))

    def _busy(self, holder: Holder | None, *, fallback: bool = False) -> str:
        who = holder.describe() if holder is not None else "another process"
        message = (f"run folder {self.run_dir} is being trained by {who}; wait for it to finish or stop it, "
                   "or train under another --name")
        if fallback:
            message += f" (if that process is gone, delete {self.path})"
        return message


def _try_lock(fd: int) -> bool:
    """Take the OS lock on ``fd`` without waiting: True if taken, False if another process holds it."""
    try:
        if fcntl is not None:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        elif msvcrt is not None:
            os.lseek(fd, _WINDOWS_LOCK_OFFSET, os.SEEK_SET)
            msvcrt.locking(fd, msvcrt.LK_NBLCK, 1)
        else:
            raise _NoOSLocks
    except OSError as exc:
        if exc.errno in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES, getattr(errno, "EDEADLOCK", -1)):
            return False
        if exc.errno in _NO_OS_LOCKS:
            raise _NoOSLocks from None
        raise
    return True


def _read(fd: int) -> str:
    os.lseek(fd, 0, os.SEEK_SET)
    return os.read(fd, 4096).decode("utf-8", errors="replace")


def _same_file(fd: int, path: Path) -> bool:
    try:
        a, b = os.fstat(fd), os.stat(path)
    except FileNotFoundError:
        return False
    return (a.st_dev, a.st_ino) == (b.st_dev, b.st_ino)


def _pid_running(pid: int) -> bool:
    """POSIX only (the fallback is never used on Windows, where msvcrt locks work)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # it exists, under another user
    return True
