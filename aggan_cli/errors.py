"""The one exception family users see.

Core modules raise these with a message a person can act on; the CLI catches them once, prints one
red line and exits 1. Anything else escaping is a bug and keeps its traceback.
"""

from __future__ import annotations

import errno


class AgganError(Exception):
    """Base of every user-facing error: the message says what is wrong and what to do."""


class ConfigError(AgganError, ValueError):
    """An option or configuration value that cannot work."""


class DataError(AgganError):
    """Missing, empty or unreadable image folders and files."""


class CheckpointError(AgganError):
    """A run folder or weights file that is missing, corrupt, or from a newer aggan."""


class DeviceError(AgganError):
    """A device or precision that this machine does not have."""


class WeightsError(AgganError):
    """Downloading, verifying or finding published weights failed."""


class TrainingError(AgganError):
    """Training cannot start or cannot go on (a run that exists, a lock held, losses that diverge)."""


class ExportError(AgganError):
    """A checkpoint could not be exported (to ONNX), or the export could not be written."""


def os_reason(exc: OSError) -> str:
    """``No space left on device (ENOSPC)``: what the operating system said, for a one-line message."""
    code = errno.errorcode.get(exc.errno or 0)
    text = exc.strerror or str(exc) or type(exc).__name__
    return f"{text} ({code})" if code else text
