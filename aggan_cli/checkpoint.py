"""Run folders on disk: ``config.json`` + ``model.safetensors`` (+ ``training-state.safetensors``).

A run folder is both the training state and a loadable checkpoint, and ``config.json`` +
``model.safetensors`` is also the Hugging Face Hub layout. Loading rebuilds the networks from
``config.json`` alone, so no architecture flag is ever repeated.

Nothing here unpickles: tensors live in safetensors files, and the training state's non-tensor parts
(optimizer hyper-parameters, step, pools' sizes, RNG state layout) are stored as JSON in the
safetensors header. Every write is atomic: a temporary file in the same folder, fsync, rename.
"""

from __future__ import annotations

import json
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Mapping

import torch
from torch import Tensor, nn

from . import __version__
from .config import ModelConfig
from .errors import CheckpointError, ConfigError

FORMAT_VERSION = 1
CONFIG_FILE = "config.json"
WEIGHTS_FILE = "model.safetensors"
STATE_FILE = "training-state.safetensors"
PICKLE_SUFFIXES = {".pt", ".pth", ".ckpt", ".pkl", ".pickle", ".bin"}


# ---------------------------------------------------------------------------------------------
# atomic writes


def atomic_write(path: str | Path, write: Callable[[Any], None], *, mode: str = "wb") -> None:
    """Write ``path`` via ``write(file_object)`` so that readers see the old file or the new, never a torn one."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
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


def save_tensors(path: str | Path, tensors: Mapping[str, Tensor], metadata: Mapping[str, str] | None = None) -> None:
    from safetensors.torch import save

    data = save({k: v.detach().to("cpu").contiguous() for k, v in tensors.items()}, metadata=dict(metadata or {}))
    atomic_write_bytes(path, data)


def load_tensors(path: str | Path) -> tuple[dict[str, Tensor], dict[str, str]]:
    """Read every tensor and the header metadata of a safetensors file; any damage is a CheckpointError."""
    from safetensors import safe_open

    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path} does not exist")
    if path.stat().st_size == 0:
        raise CheckpointError(f"{path} is empty (0 bytes): the file was not written completely; "
                              "re-download it or use an earlier checkpoint")
    try:
        with safe_open(str(path), framework="pt", device="cpu") as f:
            metadata = dict(f.metadata() or {})
            tensors = {key: f.get_tensor(key) for key in f.keys()}
    except Exception as exc:  # safetensors raises several types for damaged files
        raise CheckpointError(f"{path} is not a valid safetensors file ({_short(exc)}): it is truncated or corrupt; "
                              "re-download it or use an earlier checkpoint") from None
    return tensors, metadata


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
    """Write a run folder. The training state first, the weights next, ``config.json`` last: each file
    carries the step, and a reader checks they agree, so a kill between two writes is detected."""
    run_dir = Path(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    meta = {"format_version": str(FORMAT_VERSION), "step": str(step)}
    if training_state is not None:
        tensors, skeleton = flatten_state(training_state)
        save_tensors(run_dir / STATE_FILE, tensors, {**meta, "state": json.dumps(skeleton)})
    weights = {f"g_ab.{k}": v for k, v in _unwrap(g_ab).state_dict().items()}
    weights.update({f"g_ba.{k}": v for k, v in _unwrap(g_ba).state_dict().items()})
    save_tensors(run_dir / WEIGHTS_FILE, weights, meta)
    config = {
        "format_version": FORMAT_VERSION,
        "aggan_version": __version__,
        "model": model_config.to_dict(),
        "domains": {"a": domains[0], "b": domains[1]},
        "step": step,
        "train": dict(train_config or {}),
        **dict(extra or {}),
    }
    atomic_write_text(run_dir / CONFIG_FILE, json.dumps(config, indent=2, sort_keys=False) + "\n")
    return run_dir


def _unwrap(module: nn.Module) -> nn.Module:
    """The plain module inside DDP / torch.compile wrappers, so saved keys never carry their prefixes."""
    while True:
        inner = getattr(module, "module", None) or getattr(module, "_orig_mod", None)
        if inner is None:
            return module
        module = inner


def read_config(path: str | Path) -> dict[str, Any]:
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path} is missing: a checkpoint needs config.json next to model.safetensors")
    try:
        config = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise CheckpointError(f"{path} is not valid JSON ({exc}); the checkpoint is damaged") from None
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
    return config


def locate_run(path: str | Path) -> tuple[Path, Path]:
    """(run folder, weights file) for a run folder or a ``model.safetensors`` path; refuses pickles."""
    path = Path(path)
    if path.suffix.lower() in PICKLE_SUFFIXES:
        raise CheckpointError(f"{path} is a pickle-based PyTorch file; aggan never unpickles (a pickle can run any "
                              "code when loaded). Use a run folder or a model.safetensors with its config.json")
    if path.is_dir():
        return path, path / WEIGHTS_FILE
    if path.is_file():
        return path.parent, path
    raise CheckpointError(f"checkpoint {path} does not exist")


def load_run(path: str | Path) -> RunCheckpoint:
    """Read a run folder (or its ``model.safetensors``): config and generator weights, checked."""
    run_dir, weights_path = locate_run(path)
    config = read_config(run_dir / CONFIG_FILE)
    try:
        model_config = ModelConfig.from_dict(config.get("model") or {})
    except ConfigError as exc:
        raise CheckpointError(f"{run_dir / CONFIG_FILE} has a bad model section: {exc}") from None
    if not weights_path.exists():
        raise CheckpointError(f"{weights_path} is missing: the run folder has no weights yet")
    tensors, metadata = load_tensors(weights_path)
    _check_step(weights_path, metadata, config)
    return RunCheckpoint(run_dir, config, model_config, tensors)


def _check_step(path: Path, metadata: Mapping[str, str], config: Mapping[str, Any]) -> None:
    if "step" in metadata and str(config.get("step")) != metadata["step"]:
        raise CheckpointError(f"{path} is from step {metadata['step']} but config.json says step {config.get('step')}: "
                              "the save was interrupted; the two files do not belong together")


def load_state_dict_strict(module: nn.Module, tensors: Mapping[str, Tensor], prefix: str, source: Path) -> None:
    """Load ``prefix.*`` tensors into ``module``; every key must match exactly, in name and shape."""
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
    module.load_state_dict(own, strict=True)


def load_generators(path: str | Path, device: str | torch.device = "cpu"):
    """Rebuild ``g_ab`` and ``g_ba`` from a checkpoint, in eval mode on ``device``.

    Returns ``(g_ab, g_ba, checkpoint)``. Extra keys other than ``g_ab.*``/``g_ba.*`` are an error.
    """
    from .networks import AttentionGenerator

    ckpt = load_run(path)
    stray = sorted(k for k in ckpt.generators if not k.startswith(("g_ab.", "g_ba.")))
    if stray:
        raise CheckpointError(f"{ckpt.path / WEIGHTS_FILE} has {len(stray)} unexpected key(s) such as {stray[0]}")
    cfg = ckpt.model_config
    nets = []
    for name in ("g_ab", "g_ba"):
        g = AttentionGenerator(ngf=cfg.ngf, n_blocks=cfg.n_blocks, norm=cfg.norm)
        load_state_dict_strict(g, ckpt.generators, name, ckpt.path / WEIGHTS_FILE)
        nets.append(g.to(device).eval())
    return nets[0], nets[1], ckpt


def load_training_state(run_dir: str | Path, expected_step: int | None = None) -> Any:
    """The nested training state saved by :func:`save_run` (tensors on CPU)."""
    path = Path(run_dir) / STATE_FILE
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
