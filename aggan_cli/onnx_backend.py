"""Translating with exported ONNX files on onnxruntime, without torch.

``aggan export`` (export.py) writes each generator as one ONNX file that maps an RGB image to the
attention mask and the content; the blend stays outside the network. :class:`OnnxTranslator` runs
those files with onnxruntime and shares everything else with the PyTorch :class:`Translator`
(imaging.py): decoding, sizes, batching, the full-resolution blend (in numpy), the result type. This
module and the ones it imports need numpy, Pillow and onnxruntime only: a deployment can leave torch
out (tests/test_onnx.py runs it with ``import torch`` blocked).

An exported file (format 1)::

    input   image    float32 (batch, 3, height, width), RGB scaled to [-1, 1] (pixel / 127.5 - 1);
                     height and width multiples of 4 (the generator's stride), at least 8
    output  mask     float32 (batch, 1, height, width) in [0, 1], 1 = replaced by content
    output  content  float32 (batch, 3, height, width) in [-1, 1]
    metadata         aggan.* keys (METADATA below): direction, domains, training size, normalisation,
                     aggan version, and the sha256 and step of the checkpoint it came from
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from . import __version__
from .config import MAX_MASK_GUIDE, parse_mask_guide
from .errors import CheckpointError, ConfigError, DeviceError, WeightsError
from .imaging import (MAX_SIZE, STRIDE, Prepared, Translation, TranslatorBase, check_direction, compose,
                      pad_planes, padded_size, parse_size, resize_planes)

EXPORT_FORMAT = 1
ONNX_FILES = {"a2b": "g_ab.onnx", "b2a": "g_ba.onnx"}
INPUT_NAME, OUTPUT_NAMES = "image", ("mask", "content")
NORMALISATION = "pixel / 127.5 - 1"
EXPORT_DIR = "onnx"  # inside a run folder, or the cache's onnx/<name>-<sha> for bundled and downloaded checkpoints
INSTALL_HINT = 'pip install "aggan[onnx]"'


# ---------------------------------------------------------------------------------------------
# what an exported file says about itself


@dataclass(frozen=True)
class ExportInfo:
    """The ``aggan.*`` metadata of one exported generator."""

    path: Path                  # the .onnx file
    direction: str              # "a2b" or "b2a"
    domains: tuple[str, str]    # names of domains A and B
    image_size: int             # the training crop S: the network's working short side under size "auto"
    step: int                   # the checkpoint's training step
    checkpoint_sha256: str      # of the model.safetensors it was exported from
    model: dict[str, Any]       # the checkpoint's model config (ngf, n_blocks, norm, ...)
    aggan_version: str = __version__
    mask_guide: int | None = None  # the mask guide's radius inside the graph (None: an export from before it
                                   # was recorded, which carries the trained radius, model["mask_guide"])

    @property
    def guide_radius(self) -> int:
        """The mask guide's radius in pixels that this file's graph applies (0 = none)."""
        return self.mask_guide if self.mask_guide is not None else int(self.model.get("mask_guide", 0))

    def to_metadata(self) -> dict[str, str]:
        a, b = self.domains
        return {
            "aggan.format": str(EXPORT_FORMAT),
            "aggan.version": self.aggan_version,
            "aggan.direction": self.direction,
            "aggan.translates": f"{a} → {b}" if self.direction == "a2b" else f"{b} → {a}",
            "aggan.domain_a": a,
            "aggan.domain_b": b,
            "aggan.image_size": str(self.image_size),
            "aggan.normalisation": NORMALISATION,
            "aggan.stride": str(STRIDE),
            "aggan.outputs": "mask (1 channel, [0, 1]), content (3 channels, [-1, 1]); "
                             "output = image + mask * (content - image)",
            "aggan.checkpoint_sha256": self.checkpoint_sha256,
            "aggan.checkpoint_step": str(self.step),
            "aggan.model": json.dumps(self.model, sort_keys=True),
            **({"aggan.mask_guide": str(self.mask_guide)} if self.mask_guide is not None else {}),
        }

    @classmethod
    def from_metadata(cls, path: Path, meta: dict[str, str]) -> "ExportInfo":
        if "aggan.format" not in meta:
            raise CheckpointError(f"{path} is not an aggan export (it has no aggan.* metadata); "
                                  f"write one with `aggan export CKPT`")
        try:
            version = int(meta["aggan.format"])
            if version > EXPORT_FORMAT:
                raise CheckpointError(f"{path} is an aggan export of format {version}, newer than this aggan "
                                      f"({__version__}) reads (format {EXPORT_FORMAT}); upgrade: pip install -U aggan")
            info = cls(path=path, direction=check_direction(meta["aggan.direction"]),
                       domains=(meta["aggan.domain_a"], meta["aggan.domain_b"]),
                       image_size=int(meta["aggan.image_size"]), step=int(meta["aggan.checkpoint_step"]),
                       checkpoint_sha256=meta["aggan.checkpoint_sha256"], model=json.loads(meta["aggan.model"]),
                       aggan_version=meta["aggan.version"],
                       mask_guide=int(meta["aggan.mask_guide"]) if "aggan.mask_guide" in meta else None)
        except (KeyError, ValueError, RecursionError) as exc:  # ConfigError (a bad direction) is a ValueError too
            raise CheckpointError(f"{path} has damaged aggan metadata ({str(exc)[:200]}); export it again with "
                                  f"`aggan export`") from None
        if not 8 <= info.image_size <= MAX_SIZE:  # --size auto would run the network at that short side
            raise CheckpointError(f"{path} says aggan.image_size {info.image_size}, outside the 8 to {MAX_SIZE} "
                                  f"pixels aggan translates at; the export is damaged: export it again")
        if info.mask_guide is not None and not 0 <= info.mask_guide <= MAX_MASK_GUIDE:
            raise CheckpointError(f"{path} says aggan.mask_guide {info.mask_guide}, outside 0 to {MAX_MASK_GUIDE} "
                                  f"pixels; the export is damaged: export it again")
        if meta.get("aggan.normalisation", NORMALISATION) != NORMALISATION:
            raise CheckpointError(f"{path} expects inputs scaled as {meta['aggan.normalisation']!r}, which this "
                                  f"aggan does not know; upgrade: pip install -U aggan")
        return info


# ---------------------------------------------------------------------------------------------
# where exports live


def default_export_dir(run_dir: Path, checkpoint_sha256: str, cache_dir: str | os.PathLike | None = None) -> Path:
    """Where ``aggan export`` writes, and where the onnxruntime backend looks, for a checkpoint folder.

    A run you trained: ``RUN/onnx/``. A bundled or downloaded checkpoint (inside the installed package
    or the Hub cache, which are not ours to write into): ``CACHE/onnx/<name>-<sha256[:12]>/``, named
    after the weights' digest so that another revision never meets a stale export.
    """
    from .weights import BUNDLED_DIR, default_cache_dir, hub_cache_dir

    run_dir = Path(run_dir).resolve()
    if run_dir.is_relative_to(BUNDLED_DIR.resolve()):
        name = run_dir.name
    elif run_dir.is_relative_to(hub_cache_dir(cache_dir).resolve()):
        # <cache>/hub/models--ORG--REPO/snapshots/<commit>: name it ORG--REPO
        name = run_dir.parent.parent.name.removeprefix("models--")
    else:
        return run_dir / EXPORT_DIR
    root = Path(cache_dir).expanduser() if cache_dir is not None else default_cache_dir()
    return root / EXPORT_DIR / f"{name}-{checkpoint_sha256[:12]}"


def locate_export(ckpt: str | os.PathLike, *, runs_dir: str | os.PathLike | None = None,
                  cache_dir: str | os.PathLike | None = None) -> tuple[Path, str | None]:
    """``(export folder or .onnx file, sha256 it must match or None)`` for a ``--ckpt`` value.

    An export folder or an ``.onnx`` file is used as it is. Anything else names a checkpoint, as
    ``--ckpt`` does for the PyTorch backend (a run folder, a run name, a bundled or cached name), and
    its export is looked up where ``aggan export`` writes it by default; that export must come from
    the checkpoint's current weights. Nothing is downloaded: export first, which fetches the weights.
    """
    from .weights import WEIGHTS_FILE, resolve_checkpoint, sha256_of

    spec = os.fspath(ckpt)
    path = Path(spec).expanduser()
    if spec.strip():  # '' would be the current folder: resolve_checkpoint refuses it below, as for PyTorch
        if path.is_file() and path.suffix.lower() == ".onnx":
            return path, None
        if path.is_dir() and any((path / name).is_file() for name in ONNX_FILES.values()):
            return path, None
    try:
        found = resolve_checkpoint(spec, runs_dir=runs_dir, cache_dir=cache_dir, offline=True)
    except WeightsError:  # a Hub name that is not in the cache, so it cannot have been exported either
        raise CheckpointError(f"no ONNX export of {spec!r} found; create one with: aggan export {spec}") from None
    run_dir, weights = (found, found / WEIGHTS_FILE) if found.is_dir() else (found.parent, found)
    if not weights.is_file():
        raise CheckpointError(f"checkpoint {found} has no {WEIGHTS_FILE}, so it has no export either")
    sha = sha256_of(weights)
    folder = default_export_dir(run_dir, sha, cache_dir)
    if not any((folder / name).is_file() for name in ONNX_FILES.values()):
        raise CheckpointError(f"no ONNX export of {spec!r} in {folder}; create one with: aggan export {spec}")
    return folder, sha


# ---------------------------------------------------------------------------------------------
# the translator


def _onnxruntime():
    try:
        import onnxruntime
    except ImportError:
        raise ConfigError(f"the onnxruntime backend needs onnxruntime: {INSTALL_HINT} "
                          f"(or pip install onnxruntime)") from None
    return onnxruntime


def providers_for(device: str) -> list[str]:
    """onnxruntime execution providers for ``--device``: ``auto`` takes CUDA when this onnxruntime
    build has it (the onnxruntime-gpu package), else the CPU; asking for what is missing is an error."""
    ort = _onnxruntime()
    available = ort.get_available_providers()
    spec = (device or "auto").strip().lower()
    if spec == "auto":
        return ["CUDAExecutionProvider", "CPUExecutionProvider"] if "CUDAExecutionProvider" in available \
            else ["CPUExecutionProvider"]
    if spec == "cpu":
        return ["CPUExecutionProvider"]
    if spec == "cuda":
        if "CUDAExecutionProvider" not in available:
            raise DeviceError("device 'cuda' asked for, but this onnxruntime has no CUDA provider; install "
                              "onnxruntime-gpu, or use --device cpu")
        return ["CUDAExecutionProvider"]
    raise DeviceError(f"the onnxruntime backend runs on auto, cpu or cuda, not {device!r}; "
                      f"use --backend torch for other devices")


class OnnxTranslator(TranslatorBase):
    """Exported generators on onnxruntime; the same results as :class:`~aggan_cli.inference.Translator`.

    >>> t = OnnxTranslator.load("runs/smile/onnx")   # or a run name / bundled name that was exported
    >>> t.translate("photo.jpg").image.save("smiling.png")
    """

    def __init__(self, files: dict[str, Path], *, direction: str = "a2b", size: str | int = "auto",
                 providers: list[str] | None = None, threads: int | None = None,
                 expected_sha256: str | None = None, source: str | None = None,
                 mask_guide: str | int = "auto") -> None:
        """``files``: the .onnx file of each direction available. ``expected_sha256``: the digest of the
        checkpoint whose export this must be (``source`` names it in the error when it is not).
        ``mask_guide``: ``"auto"`` takes the radius the export carries; ``"trained"`` or a number must be
        what it carries (the guide is part of the exported graph: ``aggan export --mask-guide``)."""
        self.wanted_guide = parse_mask_guide(mask_guide)
        self._ort = _onnxruntime()
        self.providers = providers or ["CPUExecutionProvider"]
        self.threads = threads
        self.files = files
        self.expected_sha256, self.source = expected_sha256, source
        self._sessions: dict[str, Any] = {}
        self.info: dict[str, ExportInfo] = {}
        # A failed run comes back as an exception, which becomes one line (out of memory: TranslatorBase);
        # onnxruntime would also log it to stderr itself, a second, raw line.
        self._quiet_run = self._ort.RunOptions()
        self._quiet_run.log_severity_level = 4  # fatal only
        first = self._open(check_direction(direction))  # the other direction opens on first use
        super().__init__(image_size=first.image_size, domains=first.domains, direction=direction, size=size,
                         checkpoint=first)
        self.device = "cuda" if self.providers[0] == "CUDAExecutionProvider" else "cpu"

    @classmethod
    def load(cls, ckpt: str | os.PathLike, *, direction: str = "a2b", size: str | int = "auto", device: str = "auto",
             precision: str = "auto", runs_dir: str | os.PathLike | None = None,
             cache_dir: str | os.PathLike | None = None, offline: bool = False,
             threads: int | None = None, mask_guide: str | int = "auto") -> "OnnxTranslator":
        """Load an export: ``ckpt`` is an export folder, an ``.onnx`` file, or a checkpoint (run folder, run
        name, bundled or cached name) exported with ``aggan export``. ``threads``: onnxruntime's intra-op
        threads (default: one per physical core). ``offline`` is accepted for symmetry with
        :meth:`Translator.load`; this backend never downloads."""
        check_direction(direction)
        size = parse_size(size)
        if (precision or "auto").lower() not in ("auto", "fp32"):
            raise ConfigError(f"the onnxruntime backend runs in fp32, not {precision}; drop --precision "
                              f"or use --backend torch")
        providers = providers_for(device)
        where, sha = locate_export(ckpt, runs_dir=runs_dir, cache_dir=cache_dir)
        if where.is_file():  # one generator: its metadata must say it translates ``direction``
            files = {direction: where}
        else:
            files = {d: where / name for d, name in ONNX_FILES.items() if (where / name).is_file()}
        return cls(files, direction=direction, size=size, providers=providers, threads=threads,
                   expected_sha256=sha, source=os.fspath(ckpt), mask_guide=mask_guide)

    # -- sessions

    def _open(self, direction: str) -> ExportInfo:
        if direction in self.info:
            return self.info[direction]
        path = self.files.get(direction)
        if path is None:
            have = ", ".join(f.name for f in self.files.values())
            raise CheckpointError(f"no {ONNX_FILES[direction]} next to {have}: this export has no {direction} "
                                  f"generator; export it with `aggan export CKPT --direction {direction}` (or both)")
        options = self._ort.SessionOptions()
        if self.threads:
            options.intra_op_num_threads = int(self.threads)
        session = _session(self._ort, path, self.providers, options)
        info = ExportInfo.from_metadata(path, session.get_modelmeta().custom_metadata_map)
        if info.direction != direction:
            raise CheckpointError(f"{path} translates {info.direction} ({info.domains[0]} / {info.domains[1]}), "
                                  f"not {direction}; pass --direction {info.direction}")
        if self.expected_sha256 is not None and info.checkpoint_sha256 != self.expected_sha256:
            raise CheckpointError(f"{path} was exported from an earlier save of {self.source} (step {info.step}); "
                                  f"export again with: aggan export {self.source} (or pass --ckpt {path.parent} "
                                  f"to use the old export as it is)")
        self._check_guide(path, info)
        self._sessions[direction], self.info[direction] = session, info
        return info

    def _check_guide(self, path: Path, info: ExportInfo) -> None:
        """A ``mask_guide`` other than ``"auto"`` must be the radius the export's graph carries."""
        wanted = self.wanted_guide
        if wanted == "auto":
            return
        radius = int(info.model.get("mask_guide", 0)) if wanted == "trained" else wanted
        if radius != info.guide_radius:
            raise ConfigError(f"{path} was exported with mask guide {info.guide_radius} px, not {radius} "
                              f"(--mask-guide {wanted}): the guide is part of the exported network; export it "
                              f"with `aggan export CKPT --mask-guide {wanted}`, or translate with --backend torch")

    def mask_guide(self, direction: str | None = None) -> int | None:
        return self._open(check_direction(direction or self.direction)).guide_radius

    # -- description

    @property
    def precision(self) -> str:
        return "fp32"

    def describe_device(self) -> str:
        ort = self._ort
        if self.device == "cuda":
            return f"onnxruntime {ort.__version__} (CUDA)"
        threads = self.threads or "default"
        return f"onnxruntime {ort.__version__} (cpu, {threads} thread{'s' * (threads != 1)})"

    # -- translation

    def _forward_and_compose(self, items: list[Prepared], direction: str) -> list[Translation]:
        """One forward pass for images of equal working size, then a full-resolution blend per image:
        the torch path's ``Translator._forward_and_compose`` in numpy, step by step."""
        self._open(direction)
        session = self._sessions[direction]
        height, width = items[0].work
        full = [item.pixels.transpose(2, 0, 1).astype(np.float32) for item in items]   # (3, H, W) in [0, 255]
        x = np.stack([resize_planes(f, (height, width)) for f in full])               # (B, 3, h, w)
        x = x / np.float32(127.5) - np.float32(1.0)                                    # in [-1, 1]
        x = np.ascontiguousarray(pad_planes(x, *padded_size(height, width)))           # (B, 3, h4, w4)
        # one run: translate_many sends one image at a time on the CPU, as for the torch path
        mask, content = session.run(list(OUTPUT_NAMES), {INPUT_NAME: x}, self._quiet_run)
        mask, content = mask[..., :height, :width], content[..., :height, :width]      # (B, 1|3, h, w)
        return [compose(item, mask[i], content[i], direction) for i, item in enumerate(items)]

    def _is_out_of_memory(self, exc: Exception) -> bool:
        """onnxruntime's own exception types (not RuntimeErrors) say "Failed to allocate memory" / "bad allocation"."""
        return "alloc" in str(exc).lower()


def _session(ort, path: Path, providers: list[str], options=None):
    try:
        return ort.InferenceSession(str(path), sess_options=options, providers=providers)
    except Exception as exc:  # InvalidProtobuf, NoSuchFile, Fail, ...: the file is not a model we can run
        first = (str(exc).strip().splitlines() or [type(exc).__name__])[0][:200]
        raise CheckpointError(f"{path} cannot be loaded by onnxruntime ({first}); export it again with "
                              f"`aggan export`") from None

