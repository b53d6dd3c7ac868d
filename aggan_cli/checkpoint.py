"""Run folders on disk: ``config.json`` + ``model.safetensors`` (+ ``training-state.safetensors``).

A run folder is both the training state and a loadable checkpoint, and ``config.json`` +
``model.safetensors`` is also the Hugging Face Hub layout. Loading rebuilds the networks from
``config.json`` alone, so no architecture flag is ever repeated.

Nothing here unpickles: tensors live in safetensors files, and the training state's non-tensor parts
(optimizer hyper-parameters, step, pools' sizes, RNG state layout) are stored as JSON in the
safetensors header. A pickle (``.pt``, ``.pth``, ``.ckpt``, or one renamed to ``.safetensors``) is
refused with a message saying what it is; it is never opened with ``pickle``.

Crash safety: a save is one transaction whose commit point is a single directory rename.

1. Every file of the save (training state, weights, ``config.json``) is written and fsynced into a
   fresh hidden folder ``.ckpt-<step>.tmp-<random>`` inside the run folder.
2. That folder is renamed to ``.ckpt-<step>``: from this moment the save exists, complete.
3. Its files are moved, one rename each, to the top of the run folder (training state, weights,
   ``config.json`` last), where ``translate`` and the Hub layout expect them.
4. The emptied ``.ckpt-<step>`` folder and any leftovers of interrupted saves are removed.

Every file carries its step (``config.json``'s ``step``, each safetensors header's ``step``). A reader
(:func:`find_save`) takes the newest step for which a consistent set of files exists, looking for each
file first in a committed ``.ckpt-<step>`` folder and then at the top. A kill before step 2 leaves the
previous save at the top, untouched; a kill during step 3 leaves the new save split between the folder
and the top, still complete; a kill during step 4 leaves it at the top. Temporary folders are never
read. A save that fails (disk full, permission denied) raises :class:`CheckpointError` and leaves the
previous save as it was. One process writes a run folder at a time (``aggan train`` holds a lock, see
lock.py); readers may run at any time. Other files (metrics, samples, the model card) are written
atomically one by one: temporary file, fsync, rename.
"""

from __future__ import annotations

import json
import os
import re
import secrets
import shutil
import stat
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Mapping

import torch
from torch import Tensor, nn

from . import __version__
from .config import ModelConfig
from .errors import CheckpointError, ConfigError, os_reason

FORMAT_VERSION = 1
CONFIG_FILE = "config.json"
WEIGHTS_FILE = "model.safetensors"
STATE_FILE = "training-state.safetensors"
PICKLE_SUFFIXES = {".pt", ".pth", ".ckpt", ".pkl", ".pickle", ".bin"}
RUN_FILES = (STATE_FILE, WEIGHTS_FILE, CONFIG_FILE)  # the order of the moves into place: config.json last
GENERATION_PREFIX = ".ckpt-"
_COMMITTED = re.compile(r"^\.ckpt-(\d+)$")  # .ckpt-<step>; .ckpt-<step>.tmp-* and .trash-* are never read


# ---------------------------------------------------------------------------------------------
# atomic writes


def atomic_write(path: str | Path, write: Callable[[Any], None], *, mode: str = "wb") -> None:
    """Write ``path`` via ``write(file_object)`` so that readers see the old file or the new, never a torn one.

    The file gets the permissions a plain ``open(path, "w")`` gives under the user's umask (``mkstemp``'s
    temporary files are owner-only, and a rename keeps that: a model card nobody else could read)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = _create_fresh(path.parent, f".{path.name}.", ".tmp")
    try:
        with os.fdopen(fd, mode) as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        raise
    _fsync_dir(path.parent)


def _create_fresh(folder: Path, prefix: str, suffix: str) -> tuple[int, Path]:
    """Create a new file with a random name in ``folder``, mode 0666 less the umask, as ``open`` does."""
    while True:
        path = folder / f"{prefix}{secrets.token_hex(4)}{suffix}"
        try:
            return os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_BINARY", 0), 0o666), path
        except FileExistsError:
            continue


def _make_fresh_folder(folder: Path, prefix: str) -> Path:
    """Create a new folder with a random name in ``folder``, mode 0777 less the umask, as ``mkdir`` does."""
    while True:
        path = folder / f"{prefix}{secrets.token_hex(4)}"
        try:
            path.mkdir()
            return path
        except FileExistsError:
            continue


def atomic_write_bytes(path: str | Path, data: bytes) -> None:
    atomic_write(path, lambda f: f.write(data))


def atomic_write_text(path: str | Path, text: str) -> None:
    atomic_write(path, lambda f: f.write(text.encode("utf-8")))


def _fsync_dir(folder: Path) -> None:
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:  # not possible on every platform (Windows)
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


# ---------------------------------------------------------------------------------------------
# nested state <-> (tensors, JSON skeleton)


def flatten_state(obj: Any) -> tuple[dict[str, Tensor], Any]:
    """Split a nested structure of dicts, lists, tensors and scalars into flat tensors + a JSON skeleton."""
    tensors: dict[str, Tensor] = {}

    def walk(value: Any, path: str) -> Any:
        if isinstance(value, Tensor):
            key = path or "root"
            tensors[key] = value.detach().to("cpu").contiguous().clone()
            return {"__tensor__": key}
        if isinstance(value, Mapping):
            if all(isinstance(k, str) for k in value):
                return {"__dict__": {k: walk(v, f"{path}.{k}" if path else k) for k, v in value.items()}}
            return {"__items__": [[k, walk(v, f"{path}.{k}" if path else str(k))] for k, v in value.items()]}
        if isinstance(value, (list, tuple)):
            items = [walk(v, f"{path}.{i}" if path else str(i)) for i, v in enumerate(value)]
            return {"__tuple__": items} if isinstance(value, tuple) else items
        if value is None or isinstance(value, (bool, int, float, str)):
            return value
        raise TypeError(f"cannot store {type(value).__name__} at {path!r} in a checkpoint")

    return tensors, walk(obj, "")


def unflatten_state(skeleton: Any, tensors: Mapping[str, Tensor]) -> Any:
    def walk(node: Any) -> Any:
        if isinstance(node, list):
            return [walk(v) for v in node]
        if isinstance(node, dict):
            if "__tensor__" in node:
                return tensors[node["__tensor__"]]
            if "__dict__" in node:
                return {k: walk(v) for k, v in node["__dict__"].items()}
            if "__items__" in node:
                return {k: walk(v) for k, v in node["__items__"]}
            if "__tuple__" in node:
                return tuple(walk(v) for v in node["__tuple__"])
            raise KeyError("unknown node in the training state")
        return node

    return walk(skeleton)


# ---------------------------------------------------------------------------------------------
# safetensors files


def load_tensors(path: str | Path) -> tuple[dict[str, Tensor], dict[str, str]]:
    """Read every tensor and the header metadata of a safetensors file; any damage is a CheckpointError."""
    return _open_safetensors(path, with_tensors=True)


def read_metadata(path: str | Path) -> dict[str, str]:
    """The header metadata of a safetensors file, checked for truncation without reading the tensors."""
    return _open_safetensors(path, with_tensors=False)[1]


def _open_safetensors(path: str | Path, *, with_tensors: bool) -> tuple[dict[str, Tensor], dict[str, str]]:
    from safetensors import safe_open

    path = Path(path)
    check_regular_file(path, f"{path} does not exist")
    if path.stat().st_size == 0:
        raise CheckpointError(f"{path} is empty (0 bytes): the file was not written completely; "
                              "re-download it or use an earlier checkpoint")
    try:
        # safe_open checks that the header's offsets cover the file exactly: a torn file fails here
        with safe_open(str(path), framework="pt", device="cpu") as f:
            metadata = dict(f.metadata() or {})
            tensors = {key: f.get_tensor(key) for key in f.keys()} if with_tensors else {}
    except Exception as exc:  # safetensors raises several types for damaged files
        pickled = _pickle_kind(path)
        if pickled:
            raise CheckpointError(f"{path} is {pickled}, not safetensors; aggan never unpickles (a pickle can run "
                                  "any code when loaded). Use a model.safetensors written by aggan") from None
        raise CheckpointError(f"{path} is not a valid safetensors file ({_short(exc)}): it is truncated or corrupt; "
                              "re-download it or use an earlier checkpoint") from None
    return tensors, metadata


def _pickle_kind(path: Path) -> str | None:
    """Name the format of a file that starts like a pickle or a ``torch.save`` archive, from its first bytes."""
    try:
        with open(path, "rb") as f:
            head = f.read(4)
    except OSError:
        return None
    if head.startswith(b"PK\x03\x04"):
        return "a zip archive (the format of torch.save), which holds a pickle"
    if head[:1] == b"\x80" and head[1:2] in (b"\x02", b"\x03", b"\x04", b"\x05"):
        return "a Python pickle (the format of older torch.save files)"
    return None


def _short(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return (text[0] if text else type(exc).__name__)[:200]


# ---------------------------------------------------------------------------------------------
# run folders


@dataclass
class RunCheckpoint:
    """What ``config.json`` + ``model.safetensors`` say: enough to rebuild and run both generators."""

    path: Path                 # the run folder
    config: dict[str, Any]     # the whole config.json
    model_config: ModelConfig
    generators: dict[str, Tensor]  # g_ab.* and g_ba.* tensors
    weights_path: Path | None = None  # the file the generators came from (see find_save)
    state_path: Path | None = None    # the training state of the same save, when asked for

    @property
    def step(self) -> int:
        return int(self.config.get("step", 0))

    @property
    def domains(self) -> tuple[str, str]:
        d = self.config.get("domains") or {}
        return str(d.get("a", "A")), str(d.get("b", "B"))


def save_run(
    run_dir: str | Path,
    *,
    model_config: ModelConfig,
    g_ab: nn.Module,
    g_ba: nn.Module,
    step: int,
    domains: tuple[str, str] = ("A", "B"),
    train_config: Mapping[str, Any] | None = None,
    training_state: Any = None,
    extra: Mapping[str, Any] | None = None,
) -> Path:
    """Write a run folder as one crash-safe transaction (see the module docstring); returns ``run_dir``.

    Raises :class:`CheckpointError` when the disk refuses (full, read-only, no permission); the
    previous save is then left exactly as it was."""
    run_dir = Path(run_dir)
    meta = {"format_version": str(FORMAT_VERSION), "step": str(step)}
    files: dict[str, Callable[[], bytes]] = {}  # serialised one at a time, so only one file is in memory
    if training_state is not None:
        def state() -> bytes:
            tensors, skeleton = flatten_state(training_state)
            return _serialise(tensors, {**meta, "state": json.dumps(skeleton)})

        files[STATE_FILE] = state
    weights = {f"g_ab.{k}": v for k, v in _unwrap(g_ab).state_dict().items()}
    weights.update({f"g_ba.{k}": v for k, v in _unwrap(g_ba).state_dict().items()})
    files[WEIGHTS_FILE] = lambda: _serialise(weights, meta)
    config = {
        "format_version": FORMAT_VERSION,
        "aggan_version": __version__,
        "model": model_config.to_dict(),
        "domains": {"a": domains[0], "b": domains[1]},
        "step": step,
        "train": dict(train_config or {}),
        **dict(extra or {}),
    }
    files[CONFIG_FILE] = lambda: (json.dumps(config, indent=2, sort_keys=False) + "\n").encode("utf-8")
    try:
        run_dir.mkdir(parents=True, exist_ok=True)
        _sweep(run_dir, committed=False)
        generation = _commit(run_dir, step, files)
    except OSError as exc:
        raise CheckpointError(f"could not save step {step} in {run_dir}: {os_reason(exc)}; nothing of this save "
                              "was kept and the previous checkpoint there is unchanged") from None
    try:
        _publish(run_dir, generation)
    except OSError as exc:
        raise CheckpointError(f"saved step {step} in {generation} but could not move it into {run_dir}: "
                              f"{os_reason(exc)}; the save is complete and loadable where it is") from None
    try:
        _sweep(run_dir, committed=True)
    except OSError:
        pass  # leftovers are never read, and the next save sweeps again
    return run_dir


def _serialise(tensors: Mapping[str, Tensor], metadata: Mapping[str, str]) -> bytes:
    from safetensors.torch import save

    data = save({k: v.detach().to("cpu").contiguous() for k, v in tensors.items()}, metadata=dict(metadata))
    return canonical_header(data)


def canonical_header(data: bytes) -> bytes:
    """``data`` (a safetensors file) with its header's metadata keys in sorted order.

    safetensors writes the metadata from a hash map, in an order that changes from one call to the next,
    so the same weights saved twice would differ in a few header bytes, and a retrained checkpoint
    would not match a published sha256. The header is rewritten as compact JSON with the same tensor
    entries in the same order, padded with spaces to a multiple of 8 bytes as safetensors pads it; the
    tensor bytes after it are untouched (their offsets count from the end of the header)."""
    size = int.from_bytes(data[:8], "little")
    header = json.loads(data[8:8 + size])
    if "__metadata__" in header:
        header["__metadata__"] = dict(sorted(header["__metadata__"].items()))
    text = json.dumps(header, separators=(",", ":"), ensure_ascii=False).encode("utf-8")
    text += b" " * (-len(text) % 8)
    return len(text).to_bytes(8, "little") + text + data[8 + size:]


def write_durably(path: Path, data: bytes) -> None:
    """Create ``path`` holding ``data`` and fsync it (the caller makes it visible atomically)."""
    with open(path, "xb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())


def _commit(run_dir: Path, step: int, files: Mapping[str, Callable[[], bytes]]) -> Path:
    """Steps 1 and 2: write every file into a temporary folder, then rename it to ``.ckpt-<step>``."""
    target = run_dir / f"{GENERATION_PREFIX}{step}"
    if target.exists():
        # an interrupted save of this same step (resumed here, and now saved again): finish moving its
        # files into place first, so that a consistent set exists at every moment
        _publish(run_dir, target)
        _discard(target)
    tmp = _make_fresh_folder(run_dir, f"{GENERATION_PREFIX}{step}.tmp-")
    try:
        for name, serialise in files.items():
            write_durably(tmp / name, serialise())
        _fsync_dir(tmp)
        os.rename(tmp, target)
    except OSError:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    _fsync_dir(run_dir)
    return target


def _publish(run_dir: Path, generation: Path) -> None:
    """Step 3: move a committed save's files to the top of the run folder, ``config.json`` last."""
    for name in RUN_FILES:
        if (generation / name).exists():
            os.replace(generation / name, run_dir / name)
    _fsync_dir(run_dir)


def _sweep(run_dir: Path, *, committed: bool) -> None:
    """Remove what interrupted saves left: temporary folders and files, and (``committed=True``, only
    right after a save was published) every ``.ckpt-<step>`` folder, all older than that save."""
    for entry in run_dir.iterdir():
        name = entry.name
        if not name.startswith("."):
            continue
        if name.startswith(GENERATION_PREFIX) and entry.is_dir():
            if ".tmp-" in name or ".trash-" in name or (committed and _COMMITTED.match(name)):
                _discard(entry)
        elif name.endswith(".tmp") and entry.is_file():  # an atomic_write killed before its rename
            entry.unlink(missing_ok=True)


def _discard(folder: Path) -> None:
    """Delete a folder so that no moment shows a half-deleted one under a name a reader would trust."""
    if _COMMITTED.match(folder.name):
        trash = folder.with_name(f"{folder.name}.trash-{secrets.token_hex(4)}")
        os.rename(folder, trash)
        folder = trash
    shutil.rmtree(folder, ignore_errors=True)


def _unwrap(module: nn.Module) -> nn.Module:
    """The plain module inside DDP / torch.compile wrappers, so saved keys never carry their prefixes."""
    while True:
        inner = getattr(module, "module", None) or getattr(module, "_orig_mod", None)
        if inner is None:
            return module
        module = inner


def parse_json(path: Path) -> Any:
    """A JSON file's content; anything unreadable or hostile (a 5,000-digit number, 100,000 nested
    lists) is one CheckpointError naming the file."""
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise CheckpointError(f"{path} is not valid JSON ({exc}); the checkpoint is damaged") from None
    except ValueError as exc:  # e.g. "Exceeds the limit (4300 digits) for integer string conversion"
        raise CheckpointError(f"{path} holds a value aggan cannot read ({_short(exc)}); "
                              "the checkpoint is damaged") from None
    except RecursionError:
        raise CheckpointError(f"{path} is nested too deeply to read; the checkpoint is damaged") from None
    except OSError as exc:
        raise CheckpointError(f"cannot read {path} ({os_reason(exc)})") from None


def read_config(path: str | Path) -> dict[str, Any]:
    path = Path(path)
    check_regular_file(path, f"{path} is missing: a checkpoint needs config.json next to model.safetensors")
    config = parse_json(path)
    if not isinstance(config, dict):
        raise CheckpointError(f"{path} must hold a JSON object, not {type(config).__name__}")
    version = config.get("format_version")
    if not isinstance(version, int) or isinstance(version, bool):
        raise CheckpointError(f"{path} has no valid format_version; it was not written by aggan")
    if version > FORMAT_VERSION:
        raise CheckpointError(f"{path} uses checkpoint format {version}, newer than this aggan ({__version__}) "
                              f"reads (format {FORMAT_VERSION}); upgrade with: pip install -U aggan")
    if version < 1:
        raise CheckpointError(f"{path} has an invalid format_version {version}")
    step = config.get("step", 0)
    if not isinstance(step, int) or isinstance(step, bool) or step < 0:
        raise CheckpointError(f"{path} has an invalid step {step!r}; the checkpoint is damaged")
    if not isinstance(config.get("domains", {}), dict):
        raise CheckpointError(f"{path} has an invalid domains entry; the checkpoint is damaged")
    return config


def locate_run(path: str | Path) -> tuple[Path, Path]:
    """(run folder, weights file) for a run folder or a ``model.safetensors`` path; refuses pickles."""
    path = Path(path)
    if path.suffix.lower() in PICKLE_SUFFIXES and not path.is_dir():
        raise CheckpointError(f"{path} is a pickle-based PyTorch file; aggan never unpickles (a pickle can run any "
                              "code when loaded). Use a run folder or a model.safetensors with its config.json")
    if path.is_dir():
        return path, path / WEIGHTS_FILE
    check_regular_file(path, f"checkpoint {path} does not exist")
    return path.parent, path


def check_regular_file(path: Path, missing: str) -> None:
    """Raise ``missing`` if ``path`` does not exist, and say what it is if it is not a regular file (a
    folder, a FIFO, a device). Nothing is opened: reading a FIFO would wait forever."""
    try:
        mode = path.stat().st_mode
    except FileNotFoundError:
        raise CheckpointError(missing) from None
    except OSError as exc:
        raise CheckpointError(f"cannot read {path} ({os_reason(exc)})") from None
    if stat.S_ISDIR(mode):
        raise CheckpointError(f"{path} is a folder, not a file: give the run folder that holds it, or the file itself")
    if not stat.S_ISREG(mode):
        raise CheckpointError(f"{path} is not a regular file (a pipe, socket or device); aggan reads checkpoints only "
                              "from regular files")


@dataclass(frozen=True)
class SavedFiles:
    """Where the newest complete save of a run folder lies: the top of the folder, or partly a
    committed ``.ckpt-<step>`` folder whose move into place was interrupted."""

    step: int
    config: dict[str, Any]
    config_path: Path
    weights: Path
    state: Path | None  # None unless asked for


def has_checkpoint(run_dir: str | Path) -> bool:
    """True when ``run_dir`` holds a save, whole or interrupted while being moved into place."""
    run_dir = Path(run_dir)
    return (run_dir / CONFIG_FILE).exists() or bool(_committed(run_dir))


def find_save(run_dir: str | Path, *, need_state: bool = False) -> SavedFiles:
    """The newest consistent save in ``run_dir`` (with its training state when ``need_state``).

    Checks headers only: each file must be whole and carry the same step. When no candidate passes,
    the error is the one about the files at the top of the folder, the ones a user sees."""
    run_dir = Path(run_dir)
    for step, folder in _committed(run_dir):
        try:
            return _check_save(run_dir, folder, step, need_state)
        except CheckpointError:
            continue  # a damaged leftover: an older save may still be whole
    return _check_save(run_dir, None, None, need_state)


def _committed(run_dir: Path) -> list[tuple[int, Path]]:
    """Committed ``.ckpt-<step>`` folders, newest first."""
    try:
        entries = list(run_dir.iterdir())
    except OSError:
        return []
    found = [(int(m.group(1)), e) for e in entries if (m := _COMMITTED.match(e.name)) and e.is_dir()]
    return sorted(found, key=lambda item: item[0], reverse=True)


def _check_save(run_dir: Path, folder: Path | None, step: int | None, need_state: bool) -> SavedFiles:
    def pick(name: str) -> Path:
        return folder / name if folder is not None and (folder / name).exists() else run_dir / name

    config_path = pick(CONFIG_FILE)
    config = read_config(config_path)
    if step is not None and config.get("step") != step:
        raise CheckpointError(f"{config_path} is from step {config.get('step')}, not {step}")
    weights = pick(WEIGHTS_FILE)
    if not weights.exists():
        raise CheckpointError(f"{weights} is missing: the run folder has no weights yet")
    _check_step(weights, read_metadata(weights), config)
    state = None
    if need_state:
        state = pick(STATE_FILE)
        metadata = read_metadata(state)
        if "state" not in metadata:
            raise CheckpointError(f"{state} has no training-state header; it was not written by aggan")
        _check_step(state, metadata, config)
    return SavedFiles(int(config.get("step", 0)), config, config_path, weights, state)


def load_run(path: str | Path, *, need_state: bool = False) -> RunCheckpoint:
    """Read a run folder (or its ``model.safetensors``): config and generator weights, checked.

    A folder gives its newest consistent save (:func:`find_save`); a weights file under another name
    is read with the ``config.json`` next to it."""
    run_dir, weights_path = locate_run(path)
    attempts = 3  # a concurrent save may move new files into place between the header check and the read
    for attempt in range(1, attempts + 1):
        if weights_path == run_dir / WEIGHTS_FILE:
            found = find_save(run_dir, need_state=need_state)
        else:
            config = read_config(run_dir / CONFIG_FILE)
            found = SavedFiles(int(config.get("step", 0)), config, run_dir / CONFIG_FILE, weights_path, None)
        try:
            model_config = ModelConfig.from_dict(found.config.get("model") or {})
        except ConfigError as exc:
            raise CheckpointError(f"{found.config_path} has a bad model section: {exc}") from None
        if not found.weights.exists():
            raise CheckpointError(f"{found.weights} is missing: the run folder has no weights yet")
        tensors, metadata = load_tensors(found.weights)
        if attempt < attempts and metadata.get("step", str(found.step)) != str(found.step):
            continue
        _check_step(found.weights, metadata, found.config)
        _check_finite(found.weights, tensors)
        return RunCheckpoint(run_dir, found.config, model_config, tensors, found.weights, found.state)


def _check_finite(path: Path, tensors: Mapping[str, Tensor]) -> None:
    """Refuse weights holding NaN or infinity (a run that diverged): they turn every output black.
    One pass over the weights, a few milliseconds for a full-size model."""
    for key, value in tensors.items():
        if value.is_floating_point() and not bool(torch.isfinite(value).all()):
            raise CheckpointError(f"{path}: {key} holds NaN or infinite values, so every output would be garbage "
                                  "(the training diverged); use an earlier checkpoint")


def _check_step(path: Path, metadata: Mapping[str, str], config: Mapping[str, Any]) -> None:
    if "step" in metadata and str(config.get("step")) != metadata["step"]:
        raise CheckpointError(f"{path} is from step {metadata['step']} but config.json says step {config.get('step')}: "
                              "the save was interrupted; the two files do not belong together")


def load_state_dict_strict(module: nn.Module, tensors: Mapping[str, Tensor], prefix: str, source: Path, *,
                           assign: bool = False) -> None:
    """Load ``prefix.*`` tensors into ``module``; every key must match exactly, in name and shape.

    ``assign=True`` makes the tensors themselves the module's parameters (nothing is copied): the way
    to fill a module built on the ``meta`` device."""
    own = {k[len(prefix) + 1:]: v for k, v in tensors.items() if k.startswith(prefix + ".")}
    expected = module.state_dict()
    missing = sorted(set(expected) - set(own))
    unexpected = sorted(set(own) - set(expected))
    if missing or unexpected:
        parts = []
        if missing:
            parts.append(f"missing {len(missing)} key(s) such as {prefix}.{missing[0]}")
        if unexpected:
            parts.append(f"{len(unexpected)} unexpected key(s) such as {prefix}.{unexpected[0]}")
        raise CheckpointError(f"{source} does not match its config.json ({'; '.join(parts)})")
    for key, value in own.items():
        if value.shape != expected[key].shape:
            raise CheckpointError(f"{source}: {prefix}.{key} has shape {tuple(value.shape)} but the architecture in "
                                  f"config.json needs {tuple(expected[key].shape)}")
    if assign:
        own = {key: value.to(expected[key].dtype) for key, value in own.items()}
    module.load_state_dict(own, strict=True, assign=assign)


def load_generators(path: str | Path, device: str | torch.device = "cpu", *, mask_guide: str | int = "auto"):
    """Rebuild ``g_ab`` and ``g_ba`` from a checkpoint, in eval mode on ``device``.

    ``mask_guide``: the guide radius each generator translates with: ``"auto"`` (what training picked,
    :func:`translate_guide`), ``"trained"`` (the radius it was trained with) or a number of pixels (0 = off).

    Returns ``(g_ab, g_ba, checkpoint)``. Extra keys other than ``g_ab.*``/``g_ba.*`` are an error.
    The networks are built on the ``meta`` device (no memory) and checked against the weight file's
    shapes before the file's own tensors become their parameters, so a config.json that asks for a
    huge network (``n_blocks: 100000000``, ``ngf: 1000000000``) costs nothing before it is refused.
    """
    from .config import parse_mask_guide

    choice = parse_mask_guide(mask_guide)
    ckpt = load_run(path)
    stray = sorted(k for k in ckpt.generators if not k.startswith(("g_ab.", "g_ba.")))
    if stray:
        raise CheckpointError(f"{ckpt.weights_path} has {len(stray)} unexpected key(s) such as {stray[0]}")
    nets = []
    for name in ("g_ab", "g_ba"):
        g = _generator_on_meta(ckpt, name)
        load_state_dict_strict(g, ckpt.generators, name, ckpt.weights_path, assign=True)
        g.mask_guide = translate_guide(ckpt, name, choice)
        nets.append(g.to(device).eval())
    return nets[0], nets[1], ckpt


def translate_guide(ckpt: RunCheckpoint, name: str, choice: str | int = "auto") -> int:
    """The mask-guide radius generator ``name`` translates with. ``choice`` ``"auto"``: what training picked
    for it (config.json's ``translate`` section, see trainer.choose_translate_guides), or, in a run saved
    before that existed or trained without a guide, the radius it was trained with; ``"trained"``: that
    radius; a number: that radius (0 = off), whatever the model was trained with."""
    from .config import MAX_MASK_GUIDE

    if type(choice) is int:
        return choice
    trained = ckpt.model_config.mask_guide
    section = ckpt.config.get("translate")
    if choice == "trained" or section is None or not trained:
        return trained
    direction = {"g_ab": "a2b", "g_ba": "b2a"}[name]
    radii = section.get("mask_guide") if isinstance(section, dict) else None
    value = radii.get(direction) if isinstance(radii, dict) else None
    if type(value) is not int or not 0 < value <= MAX_MASK_GUIDE:
        raise CheckpointError(f"{ckpt.path / CONFIG_FILE} has a bad translate section (mask_guide for {direction} "
                              f"must be a whole number from 1 to {MAX_MASK_GUIDE}, got {value!r}); the checkpoint is "
                              "damaged: delete the section to translate with the trained radius")
    return value


def _generator_on_meta(ckpt: RunCheckpoint, name: str) -> nn.Module:
    """The generator config.json describes, with shapes but no storage, after checking that its size is
    bounded by the weight file's: no more blocks than the file has tensors, no layer wider than its
    widest tensor (so that even building it on ``meta`` stays small)."""
    from .networks import AttentionGenerator

    cfg = ckpt.model_config
    shapes = [tuple(t.shape) for key, t in ckpt.generators.items() if key.startswith(name + ".")]
    widest = max((max(shape, default=0) for shape in shapes), default=0)
    if cfg.n_blocks > len(shapes) or cfg.ngf > widest:
        raise CheckpointError(f"{ckpt.path / CONFIG_FILE} says ngf {cfg.ngf} and n_blocks {cfg.n_blocks}, but "
                              f"{ckpt.weights_path} holds {len(shapes)} {name} tensors of at most {widest} channels: "
                              "the two files do not belong together")
    try:
        with torch.device("meta"):
            return AttentionGenerator.from_config(cfg)
    except (RuntimeError, OverflowError, TypeError, ValueError) as exc:  # sizes no tensor can describe
        raise CheckpointError(f"{ckpt.path / CONFIG_FILE} describes a generator that cannot be built (ngf "
                              f"{cfg.ngf}, n_blocks {cfg.n_blocks}: {_short(exc)}); "
                              "the checkpoint is damaged") from None


def load_training_state(run_dir: str | Path, expected_step: int | None = None) -> Any:
    """The nested training state saved by :func:`save_run` (tensors on CPU), from a run folder or
    from the state file itself (``RunCheckpoint.state_path``)."""
    path = Path(run_dir)
    if path.is_dir():
        path = path / STATE_FILE
    tensors, metadata = load_tensors(path)
    if "state" not in metadata:
        raise CheckpointError(f"{path} has no training-state header; it was not written by aggan")
    if expected_step is not None and metadata.get("step") != str(expected_step):
        raise CheckpointError(f"{path} is from step {metadata.get('step')} but config.json says step {expected_step}: "
                              "the save was interrupted; the files do not belong together")
    try:
        return unflatten_state(json.loads(metadata["state"]), tensors)
    except (json.JSONDecodeError, KeyError, TypeError, ValueError) as exc:
        raise CheckpointError(f"{path} has a damaged training-state header ({_short(exc)})") from None
