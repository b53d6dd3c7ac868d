"""``aggan bench --backend onnxruntime`` and ``aggan bench --only startup``: what deploying with ONNX buys.

* **inference on onnxruntime**: the generator, exported exactly as ``aggan export`` exports it (random
  weights, the given architecture), timed with ``InferenceSession.run`` on the same random input and
  with the same repeats as the PyTorch row (bench.py), so the two rows compare directly;
* **startup**: from starting ``python -m aggan_cli translate PHOTO`` to its output file existing, for
  one photo (``--photo-size`` px on the long side, 4:3), with either backend. This is what a
  command-line user or a cold serverless call waits for: interpreter, imports, loading the model,
  decoding, the network at the training size, the full-resolution blend and the PNG.
"""

from __future__ import annotations

import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Callable

import torch

from .bench import PhaseResult, Timing, _phase, count_flops, peak_memory_mb, time_calls
from .config import ModelConfig
from .errors import AgganError, ConfigError

STARTUP_TIMEOUT = 600  # seconds for one translate process: a slow machine, never a hang
# The largest --photo-size: a 10,000 × 7,500 photo is 75 M pixels, under the 89 M-pixel limit beyond
# which translate refuses to decode; --photo-size 100000 would first allocate 90 GB to make the photo.
MAX_PHOTO_SIZE = 10_000


def _random_model(mcfg: ModelConfig, seed: int):
    from .networks import AGGAN

    torch.manual_seed(seed)
    return AGGAN(mcfg, with_discriminators=False).eval()


def _export_a2b(mcfg: ModelConfig, g_ab) -> bytes:
    """The a2b generator as ``aggan export`` writes it (metadata included; no checkpoint behind it)."""
    from .export import to_onnx
    from .onnx_backend import ExportInfo

    info = ExportInfo(path=Path("g_ab.onnx"), direction="a2b", domains=("A", "B"), image_size=mcfg.image_size,
                      step=0, checkpoint_sha256="", model=mcfg.to_dict())
    return to_onnx(g_ab, info).SerializeToString()


def bench_onnx_inference(mcfg: ModelConfig, *, batch_size: int, threads: int | None, repeats: int, warmup: int,
                         ceiling: Callable[[bool], float], seed: int = 0) -> PhaseResult:
    """Time one exported generator on onnxruntime's CPU provider at ``image_size`` px."""
    from .export import require_exporter

    ort = require_exporter()
    g = _random_model(mcfg, seed).g_ab
    options = ort.SessionOptions()
    if threads:
        options.intra_op_num_threads = threads
    session = ort.InferenceSession(_export_a2b(mcfg, g), sess_options=options, providers=["CPUExecutionProvider"])
    s = mcfg.image_size
    x = torch.rand(batch_size, 3, s, s, generator=torch.Generator().manual_seed(seed)) * 2 - 1
    feed = {"image": x.numpy()}
    timing = time_calls(lambda: session.run(None, feed), torch.device("cpu"), repeats=repeats, warmup=warmup)
    memory = peak_memory_mb(torch.device("cpu"))
    with torch.inference_mode():
        flops = count_flops(lambda: g(x))  # the same network: the FLOPs do not depend on the runtime
    return _phase(timing, flops, batch_size, ceiling(False), memory, channels_last=False)


def bench_startup(mcfg: ModelConfig, *, backend: str, photo_size: int, repeats: int, warmup: int,
                  seed: int = 0) -> Timing:
    """Seconds from starting ``python -m aggan_cli translate`` to its output file, median of ``repeats``
    after ``warmup`` untimed runs (which fill the operating system's file cache, as on any second run)."""
    from PIL import Image

    from .checkpoint import save_run
    from .export import export_onnx

    if not 8 <= photo_size <= MAX_PHOTO_SIZE:
        raise ConfigError(f"--photo-size must be from 8 to {MAX_PHOTO_SIZE} pixels, got {photo_size}")
    with tempfile.TemporaryDirectory(prefix="aggan-bench-startup-") as tmp:
        root = Path(tmp)
        model = _random_model(mcfg, seed)
        run = save_run(root / "run", model_config=mcfg, g_ab=model.g_ab, g_ba=model.g_ba, step=0)
        if backend == "onnxruntime":
            export_onnx(run, direction="a2b")
        width, height = photo_size, max(8, round(photo_size * 3 / 4))
        pixels = torch.rand(height, width, 3, generator=torch.Generator().manual_seed(seed)).mul(255).byte().numpy()
        photo = root / "photo.png"
        Image.fromarray(pixels, "RGB").save(photo)
        samples = []
        for i in range(warmup + repeats):
            out = root / f"out-{i}"
            seconds = _time_to_file([sys.executable, "-m", "aggan_cli", "translate", str(photo), "--ckpt", str(run),
                                     "--backend", backend, "--device", "cpu", "--out", str(out), "--quiet"],
                                    out / "photo.png")
            if i >= warmup:
                samples.append(seconds)
    return Timing(statistics.median(samples), min(samples), max(samples))


def _time_to_file(argv: list[str], target: Path) -> float:
    """Start ``argv`` and poll (every millisecond) until ``target`` exists; it appears whole, by rename."""
    started = time.perf_counter()
    process = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env=dict(os.environ))
    while not target.exists():
        if process.poll() is not None and not target.exists():
            error = process.stderr.read().decode(errors="replace").strip().splitlines()
            raise AgganError(f"the timed translate failed: {error[-1] if error else process.returncode}")
        if time.perf_counter() - started > STARTUP_TIMEOUT:
            process.kill()
            raise AgganError(f"the timed translate did not write {target.name} within {STARTUP_TIMEOUT} s")
        time.sleep(0.001)
    seconds = time.perf_counter() - started
    process.communicate(timeout=STARTUP_TIMEOUT)
    return seconds
