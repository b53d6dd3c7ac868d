"""``aggan bench``: how fast this machine trains and translates, and how close that is to what it can do.

Three measurements, all after a warm-up and reported as the median (with min and max) of ``repeats``:

* **training**: the real :meth:`Trainer.train_step` (both generators, all four discriminators, both
  optimisers) on random images — the same code ``aggan train`` runs, minus data loading;
* **inference**: one generator's forward pass, laid out as :class:`~aggan_cli.inference.Translator`
  lays it out;
* **ceiling**: a large 3×3 convolution (256 → 256 channels at 64×64) in the same dtype and memory
  layout — close to the best this device does on the network's dominant operation, so achieved
  GFLOP/s can be read as a percentage of what the hardware can do here and now.

FLOPs are counted by ``torch.utils.flop_counter.FlopCounterMode`` (convolutions and matrix products,
forward and backward; a multiply-add is 2 FLOPs), per image.

``backend="onnxruntime"`` times the inference on onnxruntime instead, and ``startup=True`` the time from
process start to the first written file; both live in bench_onnx.py.
"""

from __future__ import annotations

import statistics
import sys
import tempfile
import time
from dataclasses import asdict, dataclass
from typing import Any, Callable

import torch

from .config import ModelConfig, TrainConfig
from .device import autocast, describe_device, precision_name, resolve_device, resolve_precision, use_threads
from .errors import ConfigError

CALIBRATION_CHANNELS, CALIBRATION_SIZE = 256, 64
MIN_REPEAT_SECONDS = 0.05  # a repeat runs the timed function enough times to last this long


@dataclass(frozen=True)
class Timing:
    """Seconds per call: the median, fastest and slowest of the repeats."""

    median: float
    min: float
    max: float


@dataclass(frozen=True)
class PhaseResult:
    """One measured phase (``train`` or ``inference``) for a batch of ``batch_size`` images."""

    seconds: Timing
    images_per_s: float
    flops_per_image: int
    gflops: float                # achieved: FLOPs per call / median seconds
    efficiency: float            # gflops / the calibration ceiling
    peak_memory_mb: float | None
    channels_last: bool
    ceiling_gflops: float        # the calibration convolution in this phase's dtype and layout


@dataclass(frozen=True)
class BenchResult:
    device: str
    precision: str
    batch_size: int
    compile: bool
    model: dict[str, Any]
    memory_kind: str             # "cuda max allocated" or "process peak RSS"
    train: PhaseResult | None
    inference: PhaseResult | None
    backend: str = "torch"           # what ran the inference (and the startup) phase
    threads: int | None = None       # intra-op threads asked for; None: the runtime's default
    startup: Timing | None = None    # process start -> first written file, one photo (bench_onnx.py)
    photo_size: int | None = None    # that photo's long side in pixels

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


# ---------------------------------------------------------------------------------------------
# timing, memory and FLOPs


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def time_calls(fn: Callable[[], Any], device: torch.device, *, repeats: int, warmup: int) -> Timing:
    """Seconds per call of ``fn``: ``warmup`` untimed calls, then ``repeats`` timed groups of calls
    (each long enough to time reliably), synchronising the device around each group only."""
    for _ in range(warmup):
        fn()
    _sync(device)
    started = time.perf_counter()
    fn()
    _sync(device)
    calls = max(1, int(MIN_REPEAT_SECONDS / max(time.perf_counter() - started, 1e-9)))
    samples = []
    for _ in range(repeats):
        started = time.perf_counter()
        for _ in range(calls):
            fn()
        _sync(device)
        samples.append((time.perf_counter() - started) / calls)
    return Timing(statistics.median(samples), min(samples), max(samples))


def count_flops(fn: Callable[[], Any]) -> int:
    """FLOPs of one call of ``fn`` (convolutions and matrix products, forward and backward)."""
    from torch.utils.flop_counter import FlopCounterMode

    with FlopCounterMode(display=False) as counter:
        fn()
    return int(counter.get_total_flops())


def _reset_peak(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)


def peak_memory_mb(device: torch.device) -> float | None:
    """CUDA: the most memory tensors held since the last reset. CPU: the process's peak resident set
    (it never goes down, so measure the smaller phase first). None where neither is available."""
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**20
    try:
        import resource
    except ImportError:  # Windows
        return None
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak / 2**20 if sys.platform == "darwin" else peak / 2**10  # bytes on macOS, KiB on Linux


def _memory_format(channels_last: bool) -> torch.memory_format:
    return torch.channels_last if channels_last else torch.contiguous_format


# ---------------------------------------------------------------------------------------------
# the three measurements


def calibrate(device: torch.device, dtype: torch.dtype | None, *, channels_last: bool, repeats: int = 5) -> float:
    """GFLOP/s of a large 3×3 convolution (B, 256, 64, 64) in ``dtype`` (None: float32) and layout."""
    batch = 32 if device.type == "cuda" else 2
    c, s = CALIBRATION_CHANNELS, CALIBRATION_SIZE
    dtype = dtype or torch.float32
    fmt = _memory_format(channels_last)
    x = torch.randn(batch, c, s, s, device=device).to(dtype=dtype, memory_format=fmt)
    conv = torch.nn.Conv2d(c, c, 3, padding=1).to(device=device, dtype=dtype, memory_format=fmt)
    flops = 2 * batch * c * c * 9 * s * s
    with torch.inference_mode():
        timing = time_calls(lambda: conv(x), device, repeats=repeats, warmup=2)
    return flops / timing.min / 1e9  # the best repeat: this is a ceiling


def _phase(timing: Timing, flops: int, batch: int, ceiling: float, memory: float | None, channels_last: bool) -> PhaseResult:
    gflops = flops / timing.median / 1e9
    return PhaseResult(seconds=timing, images_per_s=batch / timing.median, flops_per_image=flops // batch,
                       gflops=gflops, efficiency=gflops / ceiling if ceiling else 0.0, peak_memory_mb=memory,
                       channels_last=channels_last, ceiling_gflops=ceiling)


class _RandomSource:
    """Stands in for an image folder: the trainer needs a name and a length; bench feeds tensors itself."""

    def __init__(self, name: str, count: int) -> None:
        self.name, self.count = name, count

    def __len__(self) -> int:
        return self.count

    def load(self, index: int):  # pragma: no cover - never called: bench does not load images
        raise RuntimeError("bench does not load images")


def bench_train(mcfg: ModelConfig, tcfg: TrainConfig, *, repeats: int, warmup: int,
                ceiling: Callable[[bool], float]) -> PhaseResult:
    """Time :meth:`Trainer.train_step` on random (B, 3, S, S) images in [-1, 1]."""
    from .trainer import Trainer

    def trainer_for(config: TrainConfig) -> Trainer:
        b = config.batch_size
        with tempfile.TemporaryDirectory(prefix="aggan-bench-") as run_dir:  # never written: no fit(), no save()
            trainer = Trainer(mcfg, config, _RandomSource("a", b), _RandomSource("b", b), run_dir=run_dir)
        # the step of the last two thirds of training, the attention floor faded: the identity loss (if any) on
        trainer.floor_done = True
        return trainer

    trainer = trainer_for(tcfg)
    device, b, s = trainer.device, tcfg.batch_size, mcfg.image_size
    fmt = _memory_format(trainer.channels_last)
    generator = torch.Generator().manual_seed(tcfg.seed)
    x = (torch.rand(b, 3, s, s, generator=generator) * 2 - 1).to(device, memory_format=fmt)
    y = (torch.rand(b, 3, s, s, generator=generator) * 2 - 1).to(device, memory_format=fmt)
    _reset_peak(device)
    timing = time_calls(lambda: trainer.train_step(x, y), device, repeats=repeats, warmup=warmup)
    memory = peak_memory_mb(device)
    # FLOPs do not depend on compilation; count them on an eager trainer (the counter needs eager dispatch)
    counter = trainer if not tcfg.compile else trainer_for(tcfg.replace(compile=False))
    flops = count_flops(lambda: counter.train_step(x, y))
    return _phase(timing, flops, b, ceiling(trainer.channels_last), memory, trainer.channels_last)


def bench_inference(mcfg: ModelConfig, *, batch_size: int, device: torch.device, dtype: torch.dtype | None,
                    channels_last: bool | None, compile: bool, repeats: int, warmup: int,
                    ceiling: Callable[[bool], float], seed: int = 0) -> PhaseResult:
    """Time one generator's forward pass, in the layout :class:`Translator` uses unless overridden."""
    from .inference import CPU_NHWC_PIXELS, Translator
    from .networks import AGGAN

    torch.manual_seed(seed)
    model = AGGAN(mcfg, with_discriminators=False)
    translator = Translator(model.g_ab, model.g_ba, image_size=mcfg.image_size, device=device, dtype=dtype)
    g = translator.generators["a2b"]
    s = mcfg.image_size
    if channels_last is None:  # Translator's choice: NHWC weights on CUDA; on the CPU an NHWC input from 128²
        layout = translator.channels_last or (device.type == "cpu" and s * s >= CPU_NHWC_PIXELS)
    else:
        layout = channels_last
        g.to(memory_format=_memory_format(layout))
    x = (torch.rand(batch_size, 3, s, s, generator=torch.Generator().manual_seed(seed)) * 2 - 1)
    x = x.to(device, memory_format=_memory_format(layout))
    eager = g.forward  # the uncompiled forward, for counting FLOPs
    if compile:
        g.compile()

    def forward():
        with torch.inference_mode(), autocast(device, dtype):
            return g(x)

    def forward_eager():
        with torch.inference_mode(), autocast(device, dtype):
            return eager(x)

    _reset_peak(device)
    timing = time_calls(forward, device, repeats=repeats, warmup=warmup)
    memory = peak_memory_mb(device)
    flops = count_flops(forward_eager)
    return _phase(timing, flops, batch_size, ceiling(layout), memory, layout)


def run_bench(model_config: ModelConfig, *, batch_size: int = 1, device: str = "auto", precision: str = "auto",
              compile: bool = False, channels_last: bool | None = None, repeats: int = 5, warmup: int = 2,
              train: bool = True, inference: bool = True, seed: int = 0, backend: str = "torch",
              threads: int | None = None, startup: bool = False, photo_size: int = 1024,
              lambda_identity: float | None = None) -> BenchResult:
    """Measure training and inference speed for ``model_config`` (see the module docstring).

    ``channels_last=None`` uses each phase's own default layout (what ``aggan train`` and
    ``aggan translate`` use on this device); True or False forces one for both and for the ceiling.
    Inference runs first: on the CPU the peak-memory figure is the process's high-water mark.
    ``backend="onnxruntime"`` times the inference on onnxruntime's CPU provider (it cannot train);
    ``threads`` sets the intra-op threads of both runtimes; ``startup`` times ``aggan translate`` on
    one ``photo_size``-px photo from process start to the written file.
    """
    if backend not in ("torch", "onnxruntime"):
        raise ConfigError(f"backend must be torch or onnxruntime, got {backend!r}")
    if backend == "onnxruntime" and (train or compile or precision not in ("auto", "fp32")):
        raise ConfigError("the onnxruntime backend measures fp32 inference only; use --only inference "
                          "(or --only startup) without --compile or --precision")
    # this process only, and fixed while measuring (the ceiling runs on as many threads): what
    # `aggan train` would start with on this machine now, unless --threads says otherwise
    use_threads(threads, follow=False)
    dev = resolve_device(device)
    dtype = resolve_precision(precision, dev)
    if backend == "onnxruntime" and dev.type != "cpu":
        raise ConfigError("bench --backend onnxruntime measures the CPU; add --device cpu")
    ceilings: dict[bool, float] = {}

    def ceiling(layout: bool) -> float:  # calibrated once per layout, just before the phase that needs it
        if layout not in ceilings:
            ceilings[layout] = calibrate(dev, dtype, channels_last=layout, repeats=repeats)
        return ceilings[layout]

    inf = None
    if inference and backend == "onnxruntime":
        from .bench_onnx import bench_onnx_inference

        inf = bench_onnx_inference(model_config, batch_size=batch_size, threads=threads, repeats=repeats,
                                   warmup=warmup, ceiling=ceiling, seed=seed)
    elif inference:
        inf = bench_inference(model_config, batch_size=batch_size, device=dev, dtype=dtype, channels_last=channels_last,
                              compile=compile, repeats=repeats, warmup=warmup, ceiling=ceiling, seed=seed)
    tr = None
    if train:
        tcfg = TrainConfig(steps=1_000_000, batch_size=batch_size, workers=0, seed=seed, device=str(dev),
                           precision=precision, compile=compile, channels_last=channels_last,
                           **({} if lambda_identity is None else {"lambda_identity": lambda_identity}))
        tr = bench_train(model_config, tcfg, repeats=repeats, warmup=warmup, ceiling=ceiling)
    first_file = None
    if startup:
        from .bench_onnx import bench_startup

        first_file = bench_startup(model_config, backend=backend, photo_size=photo_size, repeats=repeats,
                                   warmup=warmup, seed=seed)
    return BenchResult(device=describe_device(dev), precision=precision_name(dtype), batch_size=batch_size,
                       compile=compile, model=model_config.to_dict(),
                       memory_kind="cuda max allocated" if dev.type == "cuda" else "process peak RSS",
                       train=tr, inference=inf, backend=backend, threads=threads, startup=first_file,
                       photo_size=photo_size if startup else None)
