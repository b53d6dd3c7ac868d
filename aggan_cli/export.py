"""``aggan export``: a checkpoint's generators as ONNX files, for onnxruntime and any other ONNX runtime.

Each generator becomes one self-contained file (weights inside) that maps an RGB image in [-1, 1] of
any batch size, height and width (multiples of 4) to the attention mask and the content. The blend
``x + mask · (content − x)`` stays outside the network, as in ``aggan translate``, so that it can run
at the photo's full resolution while the network runs at the training size. The file's metadata
carries what inference needs (onnx_backend.ExportInfo); the format is described in onnx_backend.py.

Every file is checked before it is written: onnxruntime runs it on a seeded image at the training size
and a non-square one, and its mask and content must match PyTorch's within ``PARITY_LIMIT``; nothing is written otherwise.
"""

from __future__ import annotations

import contextlib
import io
import os
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import Tensor, nn

from .checkpoint import atomic_write_bytes, load_generators
from .config import parse_mask_guide
from .errors import ConfigError, ExportError, os_reason
from .imaging import STRIDE, padded_size
from .onnx_backend import INPUT_NAME, INSTALL_HINT, ONNX_FILES, OUTPUT_NAMES, ExportInfo, default_export_dir
from .weights import resolve_checkpoint, sha256_of

# The torch.export-based exporter (dynamo=True) emits opset 18 at the lowest; onnxruntime runs opset 18
# from version 1.14 (2023) on, including its mobile and web builds.
OPSET = 18
# Max |Δ| of mask and content, onnxruntime vs PyTorch, on the check images. A wrong export is off by 0.1
# or more; float rounding between the two runtimes stays near 1e-6 on trained models (tests/test_onnx.py
# holds them to 1e-4), but very large weights amplify it: the tests' mask-splitting checkpoint reaches 3e-4.
PARITY_LIMIT = 1e-3
DIRECTION_CHOICES = ("a2b", "b2a", "both")


class MaskAndContent(nn.Module):
    """A generator without its blend: ``image (B, 3, H, W) -> mask (B, 1, H, W), content (B, 3, H, W)``."""

    def __init__(self, generator: nn.Module) -> None:
        super().__init__()
        self.generator = generator

    def forward(self, image: Tensor) -> tuple[Tensor, Tensor]:
        out = self.generator(image)
        return out.mask, out.content


@dataclass(frozen=True)
class ExportResult:
    files: list[Path]            # the .onnx files written
    checkpoint: Path             # the run folder they came from
    step: int
    max_difference: float        # the largest |Δ| between onnxruntime and PyTorch in the checks
    mask_guide: dict[str, int]   # each exported direction's mask-guide radius in pixels (0 = none)


def export_onnx(ckpt: str | os.PathLike, *, out: str | os.PathLike | None = None, direction: str = "both",
                runs_dir: str | os.PathLike | None = None, cache_dir: str | os.PathLike | None = None,
                offline: bool = False, mask_guide: str | int = "auto") -> ExportResult:
    """Export ``ckpt`` (anything ``--ckpt`` accepts) to ``out`` (default: see
    :func:`~aggan_cli.onnx_backend.default_export_dir`) as ``g_ab.onnx`` and/or ``g_ba.onnx``.
    ``mask_guide``: the guide radius built into the graph, as :meth:`Translator.load` takes it."""
    if direction not in DIRECTION_CHOICES:
        raise ConfigError(f"direction must be a2b, b2a or both, got {direction!r}")
    mask_guide = parse_mask_guide(mask_guide)  # a bad value is told before a missing extra
    ort = require_exporter()
    path = resolve_checkpoint(os.fspath(ckpt), runs_dir=runs_dir, cache_dir=cache_dir, offline=offline)
    g_ab, g_ba, run = load_generators(path, "cpu", mask_guide=mask_guide)
    sha = sha256_of(run.weights_path)
    out_dir = Path(out).expanduser() if out is not None else default_export_dir(run.path, sha, cache_dir)
    if out_dir.exists() and not out_dir.is_dir():
        raise ConfigError(f"--out {out_dir} is a file; give a folder")
    generators = {"a2b": g_ab, "b2a": g_ba}
    written, worst = [], 0.0
    for d in ("a2b", "b2a") if direction == "both" else (direction,):
        info = ExportInfo(path=out_dir / ONNX_FILES[d], direction=d, domains=run.domains,
                          image_size=run.model_config.image_size, step=run.step, checkpoint_sha256=sha,
                          model=run.model_config.to_dict(), mask_guide=generators[d].mask_guide)
        model = to_onnx(generators[d], info)
        worst = max(worst, _check(ort, model, generators[d], info))
        try:
            atomic_write_bytes(info.path, model.SerializeToString())
        except OSError as exc:
            raise ExportError(f"cannot write {info.path}: {os_reason(exc)}; pass --out to a folder you can "
                              f"write to") from None
        written.append(info.path)
    guides = {d: generators[d].mask_guide for d in (("a2b", "b2a") if direction == "both" else (direction,))}
    return ExportResult(files=written, checkpoint=run.path, step=run.step, max_difference=worst, mask_guide=guides)


def require_exporter():
    """onnxruntime, for the check; torch.onnx's exporter needs onnx and onnxscript."""
    missing = [name for name in ("onnx", "onnxscript", "onnxruntime") if not _importable(name)]
    if missing:
        raise ConfigError(f"aggan export needs {', '.join(missing)}: {INSTALL_HINT}")
    import onnxruntime

    return onnxruntime


def _importable(name: str) -> bool:
    from importlib.util import find_spec

    return find_spec(name) is not None


def to_onnx(generator: nn.Module, info: ExportInfo):
    """The generator as an ``onnx.ModelProto`` with dynamic batch, height and width, and our metadata.

    torch.onnx's torch.export-based exporter (``dynamo=True``), not the TorchScript one: that one is
    deprecated since torch 2.9 and cannot export our CPU instance norm (``group_norm`` with the channel
    count read from the traced shape). torch.export states the stride as ``height = 4·h``, checks
    that the network allows every such size, and names the axes in the file (``4*h``, ``4*w``).
    """
    # A seeded example that is not square, so that height and width stay two separate dimensions.
    example = torch.rand(1, 3, 2 * STRIDE, 3 * STRIDE, generator=torch.Generator().manual_seed(0)) * 2 - 1
    h, w = torch.export.Dim("h", min=2), torch.export.Dim("w", min=2)  # at least 8 px: padded_size's minimum
    dynamic = {"image": {0: torch.export.Dim("batch"), 2: STRIDE * h, 3: STRIDE * w}}
    wrapped = MaskAndContent(generator).eval()
    try:
        with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()):
            warnings.simplefilter("ignore")
            program = torch.onnx.export(wrapped, (example,), None, dynamo=True, verbose=False, opset_version=OPSET,
                                        input_names=[INPUT_NAME], output_names=list(OUTPUT_NAMES),
                                        dynamic_shapes=dynamic, external_data=False)
    except Exception as exc:  # the exporter raises many types; each means this network cannot be exported
        first = (str(exc).strip().splitlines() or [type(exc).__name__])[0][:300]
        raise ExportError(f"torch.onnx could not export {info.path.name} ({first}); please report this with "
                          f"your torch version ({torch.__version__})") from None
    model = program.model_proto
    model.doc_string = (f"aggan generator {info.direction}: image (batch, 3, 4*h, 4*w) RGB in [-1, 1] -> "
                        f"mask (batch, 1, 4*h, 4*w) in [0, 1], content (batch, 3, 4*h, 4*w) in [-1, 1]; "
                        f"output = image + mask * (content - image)")
    for key, value in info.to_metadata().items():
        model.metadata_props.add(key=key, value=value)
    return model


@torch.inference_mode()
def _check(ort, model, generator: nn.Module, info: ExportInfo) -> float:
    """Run the exported model on onnxruntime and PyTorch; the largest |Δ| of mask and content."""
    session = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    s = info.image_size
    worst = 0.0
    for height, width in (padded_size(s, s), padded_size(s, s + 2 * STRIDE)):
        x = torch.rand(1, 3, height, width, generator=torch.Generator().manual_seed(height * width)) * 2 - 1
        expected = generator(x)
        got = session.run(list(OUTPUT_NAMES), {INPUT_NAME: x.numpy()})
        for ours, theirs in zip(got, (expected.mask, expected.content)):
            worst = max(worst, float(np.abs(ours - theirs.numpy()).max()))
    if not worst <= PARITY_LIMIT:  # also catches NaN
        raise ExportError(f"the exported {info.path.name} differs from the PyTorch generator by {worst:.2e} "
                          f"(limit {PARITY_LIMIT:g}); nothing was written. Please report this with your torch "
                          f"({torch.__version__}) and onnxruntime ({ort.__version__}) versions")
    return worst

