"""Configuration dataclasses: what a model is, and how to train it.

Every value is checked on construction, so a bad option fails before any work starts, with a message
naming the option. Both dataclasses round-trip through JSON (saved in every run folder) and can be
read from a TOML file (``aggan train --config FILE.toml``).
"""

from __future__ import annotations

import dataclasses
import math
import tomllib
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any, Mapping

from .errors import ConfigError

NORMS = ("instance", "batch")
DISCRIMINATORS = ("patch", "global")
GAN_LOSSES = ("lsgan", "vanilla")
PRECISIONS = ("auto", "fp32", "bf16", "fp16")

# Upper bounds of the architecture, checked before anything is allocated (docs/reliability.md lists
# them): generous for real use (4x the paper's widths, 3.5x its depth, 16x its image size), small
# enough that a typo or a hostile config.json fails with one line instead of exhausting memory.
MAX_NGF = 256
MAX_NDF = 256
MAX_BLOCKS = 32
MIN_SIZE = 32      # the discriminators' stride-2 layers need at least this much
MAX_SIZE = 4096
MAX_LOAD_SIZE = 2 * MAX_SIZE  # the resize before the random crop


def _check(condition: bool, message: str) -> None:
    if not condition:
        raise ConfigError(message)


def _positive_int(name: str, value: Any) -> None:
    _check(isinstance(value, int) and not isinstance(value, bool) and value > 0,
           f"{name} must be a positive whole number, got {value!r}")


def _whole_in(name: str, value: Any, low: int, high: int) -> None:
    _check(isinstance(value, int) and not isinstance(value, bool) and low <= value <= high,
           f"{name} must be a whole number from {low} to {high}, got {value!r}")


def _non_negative(name: str, value: Any) -> None:
    _check(isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value) and value >= 0,
           f"{name} must be a number >= 0, got {value!r}")


def _choice(name: str, value: Any, choices: tuple[str, ...]) -> None:
    _check(value in choices, f"{name} must be one of {', '.join(choices)}; got {value!r}")


@dataclass(frozen=True)
class ModelConfig:
    """Everything needed to rebuild the networks; stored in ``config.json`` so no flag is repeated later.

    Paper defaults (§III-D) are ngf 64 and a 9-block ResNet generator. ``norm`` defaults to instance
    norm although the paper says BatchNorm: with batch size 1, train-mode BatchNorm *is* instance norm,
    but eval-mode BatchNorm uses running statistics that a batch of one never estimates well, so
    translations at test time drift (the reason CycleGAN switched). ``batch`` is there for fidelity.
    ``discriminator`` is ``patch`` (70×70 PatchGAN) by default; ``global`` is the paper's
    C64-C128-C256-C512-C512 + average pool, which we measured collapsing the mask (docs/training.md).
    """

    ngf: int = 64
    n_blocks: int = 9
    norm: str = "instance"
    ndf: int = 64
    discriminator: str = "patch"
    image_size: int = 256  # the training crop; translate runs the network at this short side
    d_layers: int = 3      # PatchGAN depth: 3 = 70×70 receptive field, 2 = 34×34, 1 = 16×16

    def __post_init__(self) -> None:
        _whole_in("ngf", self.ngf, 1, MAX_NGF)
        _whole_in("ndf", self.ndf, 1, MAX_NDF)
        _whole_in("n_blocks", self.n_blocks, 0, MAX_BLOCKS)
        _choice("norm", self.norm, NORMS)
        _choice("discriminator", self.discriminator, DISCRIMINATORS)
        _whole_in("d_layers", self.d_layers, 1, 5)
        _check(isinstance(self.image_size, int) and not isinstance(self.image_size, bool),
               f"size must be a whole number, got {self.image_size!r}")
        _check(self.image_size % 4 == 0,
               f"size must be a multiple of 4 (two stride-2 layers down and up), got {self.image_size}; "
               f"try {max(4, self.image_size // 4 * 4)}")
        _check(self.image_size >= MIN_SIZE,
               f"size must be at least {MIN_SIZE} pixels for the discriminators, got {self.image_size}")
        _check(self.image_size <= MAX_SIZE,
               f"size must be at most {MAX_SIZE} pixels, got {self.image_size}")
        patch_minimum = 3 * 2 ** self.d_layers  # each stride-2 layer halves; the two last convs need 3 px
        _check(self.discriminator != "patch" or self.image_size >= patch_minimum,
               f"d_layers {self.d_layers} needs a size of at least {patch_minimum} pixels, got {self.image_size}")

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> "ModelConfig":
        return _from_dict(cls, data, "model")


@dataclass(frozen=True)
class TrainConfig:
    """How to train: data, schedule, objective weights, logging and saving.

    Loss weights follow DESIGN.md (λ_cycle 10, λ_pixel 1, λ_tv 1e-6 with TV summed over pixels, as in
    the paper's Eq. 7). The learning rate is constant for the first half of training and decays
    linearly to zero over the second half (CycleGAN's schedule, which the authors use).
    """

    domain_a: str = ""
    domain_b: str = ""
    name: str = ""
    runs_dir: str = "runs"
    epochs: int | None = None  # default 200 when neither epochs nor steps is given
    steps: int | None = None
    batch_size: int = 1
    lr: float = 2e-4
    beta1: float = 0.5
    beta2: float = 0.999
    lambda_cycle: float = 10.0
    lambda_pixel: float = 1.0
    lambda_tv: float = 1e-6
    # Against mask collapse (docs/training.md has the measurements): an attention floor that keeps
    # mask logits above -4 while the discriminators learn, fading out over the second half of
    # training, and identity negatives: each discriminator also sees the *other* domain's real
    # images as fakes, so "output = input" is penalised from the first step.
    lambda_floor: float = 1.0
    identity_negatives: bool = True
    ema: float = 0.0  # decay of a weight average of the generators (0 = off); 0.99 averages ~100 steps
    gan_loss: str = "lsgan"
    pool_size: int = 50
    load_size: int | None = None  # default: size * 286 / 256, as CycleGAN
    flip: bool = True
    seed: int = 0
    workers: int | None = None  # default: chosen from the machine's cores
    device: str = "auto"
    precision: str = "auto"
    save_every: int = 1000
    sample_every: int = 500
    log_every: int = 50
    demo: bool = False
    compile: bool = False               # torch.compile the six networks (slow start, faster steps on GPUs)
    channels_last: bool | None = None   # memory layout; None = the device's default (trainer.default_channels_last)
    extra: dict[str, Any] = field(default_factory=dict)  # options added by later versions

    def __post_init__(self) -> None:
        for name in ("epochs", "steps", "workers", "load_size"):
            value = getattr(self, name)
            if value is not None:
                if name == "load_size":
                    _whole_in(name, value, 1, MAX_LOAD_SIZE)
                elif name == "workers":
                    _check(isinstance(value, int) and not isinstance(value, bool) and value >= 0,
                           f"workers must be a whole number >= 0, got {value!r}")
                else:
                    _positive_int(name, value)
        _check(not (self.epochs is not None and self.steps is not None),
               "give either --epochs or --steps, not both")
        for name in ("batch_size", "pool_size", "save_every", "sample_every", "log_every"):
            if name == "pool_size":
                _check(isinstance(self.pool_size, int) and self.pool_size >= 0,
                       f"pool_size must be a whole number >= 0, got {self.pool_size!r}")
            else:
                _positive_int(name, getattr(self, name))
        _check(isinstance(self.lr, (int, float)) and math.isfinite(self.lr) and self.lr > 0,
               f"lr must be a positive number, got {self.lr!r}")
        for name in ("beta1", "beta2"):
            value = getattr(self, name)
            _check(isinstance(value, (int, float)) and 0 <= value < 1, f"{name} must be in [0, 1), got {value!r}")
        for name in ("lambda_cycle", "lambda_pixel", "lambda_tv", "lambda_floor"):
            _non_negative(name, getattr(self, name))
        _check(isinstance(self.ema, (int, float)) and not isinstance(self.ema, bool) and 0 <= self.ema < 1,
               f"ema must be a number in [0, 1), got {self.ema!r}")
        _choice("gan_loss", self.gan_loss, GAN_LOSSES)
        _choice("precision", self.precision, PRECISIONS)
        _check(isinstance(self.seed, int) and not isinstance(self.seed, bool) and 0 <= self.seed < 2 ** 63,
               f"seed must be a whole number from 0 to 2**63 - 1, got {self.seed!r}")  # numpy and torch need this
        _check(isinstance(self.compile, bool), f"compile must be true or false, got {self.compile!r}")
        _check(self.channels_last is None or isinstance(self.channels_last, bool),
               f"channels_last must be true, false or unset, got {self.channels_last!r}")

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> "TrainConfig":
        return _from_dict(cls, data, "train")

    def replace(self, **changes: Any) -> "TrainConfig":
        return dataclasses.replace(self, **changes)


def _from_dict(cls: type, data: Mapping[str, Any], section: str) -> Any:
    if not isinstance(data, Mapping):
        raise ConfigError(f"the {section} configuration must be a table of options, got {type(data).__name__}")
    known = {f.name for f in fields(cls)}
    unknown = sorted(set(data) - known)
    if unknown:
        raise ConfigError(f"unknown {section} option(s): {', '.join(unknown)}; known: {', '.join(sorted(known))}")
    try:
        return cls(**dict(data))
    except TypeError as exc:  # a wrong type that __post_init__ did not reach
        raise ConfigError(f"bad {section} configuration: {exc}") from None


def load_toml(path: str | Path) -> dict[str, Any]:
    """Read a TOML config file into a flat dict of option names (kebab-case or snake_case keys)."""
    path = Path(path)
    try:
        raw = tomllib.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ConfigError(f"config file {path} does not exist") from None
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise ConfigError(f"config file {path} is not valid TOML: {exc}") from None
    flat: dict[str, Any] = {}
    for key, value in raw.items():
        if isinstance(value, dict):  # allow [model] / [train] tables as well as a flat file
            for inner_key, inner_value in value.items():
                flat[inner_key.replace("-", "_")] = inner_value
        else:
            flat[key.replace("-", "_")] = value
    return flat
