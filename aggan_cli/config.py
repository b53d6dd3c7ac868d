"""Configuration dataclasses: what a model is, and how to train it.

Every option is declared once, as a field of :class:`ModelConfig` or :class:`TrainConfig`: its type and
default are the field's, and :func:`option` adds what a person needs (help text, the ``--help`` panel,
the command-line flag) and what a value must be (bounds, choices). From that one declaration come

* the checks, made on construction, so a bad value fails before any work starts;
* the options of ``aggan train`` (cli.py builds the command's signature from the fields);
* the TOML reader (:func:`load_toml`) and the reading of a run's ``config.json`` for ``--resume``
  (:func:`saved_options`), which check each value with the same rules and the same words, naming
  the file and the key.

So a new option is one new field, with one :func:`option` call.
"""

from __future__ import annotations

import dataclasses
import functools
import math
import tomllib
import typing
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any, Mapping

from .errors import ConfigError

NORMS = ("instance", "batch")
DISCRIMINATORS = ("patch", "global")
UPSAMPLINGS = ("transposed", "resize")
GAN_LOSSES = ("lsgan", "vanilla", "hinge")
PRECISIONS = ("auto", "fp32", "bf16", "fp16")
# built-in data sets of `aggan train --demo [TASK]` (tasks.TASKS draws them); the first is the default
DEMO_TASKS = ("faces", "recolour", "texture", "shape", "recolour-photo", "texture-photo", "shape-photo")

# Upper bounds of the architecture, checked before anything is allocated (docs/reliability.md lists
# them): generous for real use (4x the paper's widths, 3.5x its depth, 16x its image size), small
# enough that a typo or a hostile config.json fails with one line instead of exhausting memory.
MAX_NGF = 256
MAX_NDF = 256
MAX_BLOCKS = 32
MAX_MASK_GUIDE = 16  # guided-filter radius in pixels
MIN_SIZE = 32      # the discriminators' stride-2 layers need at least this much
MAX_SIZE = 4096
MAX_LOAD_SIZE = 2 * MAX_SIZE  # the resize before the random crop
MAX_BATCH = 1024
MAX_POOL = 1000    # images kept per history pool (CycleGAN: 50)
MAX_WORKERS = 64   # data-loading processes

# Panels of `aggan train --help`, in the order they are shown.
DATA, MODEL, OBJECTIVE, RUNTIME = "Data and run", "Model", "Objective and optimisation", "Runtime"
PANELS = (DATA, MODEL, OBJECTIVE, RUNTIME)


@dataclass(frozen=True)
class Option:
    """What a configuration field means to a person, and what its values may be (see :func:`option`)."""

    help: str
    panel: str
    flag: str | None = None            # the command-line flag; None: --field-name
    low: float | None = None           # numbers: inclusive bounds ...
    high: float | None = None
    below: float | None = None         # ... and exclusive ones
    above: float | None = None
    multiple: int | None = None        # whole numbers: must be a multiple of this
    choices: tuple[str, ...] | None = None
    what: str = "text"                 # text values: what they are ("a folder path")
    default_text: str | None = None    # what --help shows as the default, where the value itself would not do
    envvar: str | None = None
    cli: bool = True                   # False: not a flag (the data folders are arguments)


def option(default: Any, help: str, panel: str, **spec: Any) -> Any:
    """A dataclass field with its :class:`Option` in the metadata."""
    return dataclasses.field(default=default, metadata={"option": Option(help, panel, **spec)})


@dataclass(frozen=True)
class Field:
    """One configuration field, resolved: its section, name, value type, default and :class:`Option`."""

    section: str    # "model" or "train": where config.json keeps it
    name: str
    kind: type      # bool, int, float or str
    optional: bool  # None is allowed (it means "chosen later", see the field's help)
    default: Any
    option: Option

    @property
    def flag(self) -> str:
        return self.option.flag or "--" + self.name.replace("_", "-")

    def problem(self, value: Any) -> str | None:
        """Why ``value`` cannot be this field's value ("must be ..., got ..."), or None when it can."""
        if (value is None and self.optional) or self._fits(value):
            return None
        message = f"must be {self.expected()}, got {show(value)}"
        if self.option.multiple and type(value) is int:
            message += f"; try {self.nearest(value)}"
        return message

    def _fits(self, value: Any) -> bool:
        o = self.option
        if self.kind is bool:
            return isinstance(value, bool)
        if self.kind is str:
            return isinstance(value, str) and "\0" not in value and (o.choices is None or value in o.choices)
        if isinstance(value, bool) or not isinstance(value, int if self.kind is int else (int, float)):
            return False
        return ((type(value) is int or math.isfinite(value))
                and (o.low is None or value >= o.low) and (o.high is None or value <= o.high)
                and (o.above is None or value > o.above) and (o.below is None or value < o.below)
                and (o.multiple is None or value % o.multiple == 0))

    def expected(self) -> str:
        """The rule, in words: "a whole number from 1 to 256", "one of lsgan, vanilla"."""
        o = self.option
        if self.kind is bool:
            return "true or false" + (", or unset" if self.optional else "")
        if self.kind is str:
            return f"one of {', '.join(o.choices)}" if o.choices else o.what
        noun = f"a multiple of {o.multiple}" if o.multiple else "a whole number" if self.kind is int else "a number"
        return noun + _range(o)

    def nearest(self, value: int) -> int:
        """The valid value closest to ``value``, for a field that must be a multiple of something."""
        o, step = self.option, self.option.multiple or 1
        low = math.ceil((o.low or step) / step) * step
        high = math.floor(o.high / step) * step if o.high is not None else max(low, value)
        return min(max((value + step // 2) // step * step, low), high)  # integer arithmetic: any size


def _range(o: Option) -> str:
    if o.low is not None and o.high is not None:
        return f" from {_number(o.low)} to {_number(o.high)}"
    if o.low is not None and o.below is not None:
        return f" in [{_number(o.low)}, {_number(o.below)})"
    if o.above is not None:
        return f" > {_number(o.above)}"
    return f" >= {_number(o.low)}" if o.low is not None else ""


def _number(value: float) -> str:
    return str(value) if isinstance(value, int) else f"{value:g}"


def show(value: Any, limit: int = 60) -> str:
    """A value as a person wrote it (TOML/JSON's true and false), cut short if long."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if value is None:
        return "nothing"
    try:
        text = repr(value)
    except ValueError:  # an int too long to print (Python refuses more than 4,300 digits)
        return f"a {value.bit_length():,}-bit number"
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _check(condition: bool, message: str) -> None:
    if not condition:
        raise ConfigError(message)


def _check_fields(config: Any) -> None:
    """Each field against its own rules; the message names the field as a Python or TOML user does."""
    for f in config_fields(type(config)):
        problem = f.problem(getattr(config, f.name))
        if problem:
            raise ConfigError(f"{f.name} {problem}")


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

    ngf: int = option(64, "Generator width (paper: 64).", MODEL, low=1, high=MAX_NGF)
    n_blocks: int = option(9, "Residual blocks in each generator (paper: 9).", MODEL, low=0, high=MAX_BLOCKS)
    norm: str = option("instance", "Normalisation: instance (default) or batch (the paper's).", MODEL, choices=NORMS)
    ndf: int = option(64, "Discriminator width.", MODEL, low=1, high=MAX_NDF)
    discriminator: str = option("patch", "patch (70×70 PatchGAN, default) or global (the paper's one score per image).",
                                MODEL, choices=DISCRIMINATORS)
    # the training crop; translate runs the network at this short side
    image_size: int = option(256, "Training crop size in pixels.", DATA, flag="--size", low=MIN_SIZE, high=MAX_SIZE,
                             multiple=4)  # a multiple of 4: two stride-2 layers down, two up
    d_layers: int = option(3, "PatchGAN depth: 3 = 70×70 receptive field, 2 = 34×34, 1 = 16×16.", MODEL, low=1, high=5)
    # ours: a guided filter (He et al. 2010) with the input as the guide snaps the mask's edges to the
    # object's; measured in docs/training.md ("Crisp attention"). 0 = off, the paper's generator.
    mask_guide: int = option(3, "Radius in pixels of the guided filter that aligns the mask's edges with the "
                                "input's (0 = off, the paper's; 6 suits edits bounded by an object's outline, such "
                                "as recolouring).", MODEL, low=0, high=MAX_MASK_GUIDE)
    # ours: each generator learns a weight a in (0, 1) and takes a·guided + (1 − a)·unguided mask logit,
    # so a task whose edit draws a new outline (a shape change) can use less of the guide than one that
    # follows the object's outline (a recolour); measured in docs/training.md ("Edits that draw a new outline").
    guide_mix: bool = option(False, "Each generator learns how much of the mask guide to use (a weight from 0 to "
                                    "1, starting at a half; off = the whole guide). Needs --mask-guide above 0.",
                             MODEL)
    # ours: the decoder's two ×2 upsamplings as nearest-neighbour resize + 3×3 conv (Odena et al.,
    # Distill 2016) instead of the paper's transposed convs, whose uneven overlap prints a checkerboard
    # into the content; measured in docs/training.md ("The resize decoder").
    upsample: str = option("resize", "How the generator's decoder upsamples: resize (nearest-neighbour ×2, then "
                                     "a 3×3 convolution: no checkerboard in the content) or transposed (3×3 "
                                     "transposed convolutions, the paper's and CycleGAN's; the same weights' "
                                     "count).", MODEL, choices=UPSAMPLINGS)

    def __post_init__(self) -> None:
        _check_fields(self)
        _check(not self.guide_mix or self.mask_guide > 0,
               "guide_mix (--guide-mix) needs a mask guide to mix: set mask_guide (--mask-guide) above 0, "
               "or turn guide_mix off")
        patch_minimum = 3 * 2 ** self.d_layers  # each stride-2 layer halves; the two last convs need 3 px
        _check(self.discriminator != "patch" or self.image_size >= patch_minimum,
               f"d_layers (--d-layers) {self.d_layers} needs a size (--size) of at least {patch_minimum} pixels, got "
               f"{self.image_size}: use a larger size or fewer discriminator layers")

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

    domain_a: str = option("", "Folder of domain-A images.", DATA, cli=False, what="a folder path")
    domain_b: str = option("", "Folder of domain-B images.", DATA, cli=False, what="a folder path")
    name: str = option("", "Run name.", DATA, what="a folder name", default_text="DOMAIN_B's folder name")
    runs_dir: str = option("runs", "Where run folders live.", DATA, envvar="AGGAN_RUNS_DIR", what="a folder path")
    epochs: int | None = option(None, "Epochs (one epoch = max(|A|, |B|) images).", DATA, low=1, default_text="200")
    steps: int | None = option(None, "Train for this many steps instead of epochs.", DATA, low=1)
    batch_size: int = option(1, "Images per step (per process under torchrun).", DATA, low=1, high=MAX_BATCH)
    demo: str | None = option(None, "Train on a built-in data set and score the result: "
                              f"{', '.join(DEMO_TASKS)} (--demo alone: {DEMO_TASKS[0]}).", DATA, choices=DEMO_TASKS)
    eval_dir: str | None = option(None, "Held-out images with ground truth, scored at every save (metrics.jsonl, "
                                  "RUN/best/): a folder holding inputs/ and twins/ and/or masks/ named alike, as "
                                  "aggan evaluate reads them (docs/evaluate.md).", DATA, flag="--eval",
                                  what="a folder path")
    lr: float = option(2e-4, "Adam learning rate (constant for the first half, then linear decay to 0).", OBJECTIVE,
                       above=0)
    beta1: float = option(0.5, "Adam β1.", OBJECTIVE, low=0, below=1)
    beta2: float = option(0.999, "Adam β2.", OBJECTIVE, low=0, below=1)
    lambda_cycle: float = option(10.0, "Weight of the cycle-consistency loss.", OBJECTIVE, low=0)
    lambda_pixel: float = option(1.0, "Weight of the pixel loss |G(x) - x|.", OBJECTIVE, low=0)
    lambda_tv: float = option(1e-6, "Weight of the attention (total-variation) loss.", OBJECTIVE, low=0)
    # Against mask collapse (docs/training.md has the measurements): an attention floor that keeps
    # mask logits above -4 while the discriminators learn, fading out over the middle third of
    # training, and identity negatives: each discriminator also sees the *other* domain's real
    # images as fakes, so "output = input" is penalised from the first step.
    lambda_floor: float = option(1.0, "Weight of the attention floor that keeps the mask from collapsing to 0 "
                                 "early in training; fades out over the middle third, or, if the masks are still "
                                 "shut at a third, over a third of training from when they open (0 = off, the paper).",
                                 OBJECTIVE, low=0)
    # ours, off by default: measured in docs/training.md ("Binary masks late"): near-binary masks and an
    # untouched background in the typical scene, at a cost in foreground and AUC.
    lambda_binary: float = option(0.0, "Weight of a binarisation term on the masks for the last quarter of "
                                  "training: it pulls each mask value to the nearer of 0 and 1, so masks end "
                                  "near-binary and the typical image's background untouched, at some cost in "
                                  "foreground (10 is what docs/training.md measured; 0 = off, the paper).",
                                  OBJECTIVE, low=0)
    # ours (CycleGAN's identity loss, not in the paper): measured in docs/training.md ("The identity loss")
    lambda_identity: float = option(5.0, "Weight of CycleGAN's identity loss |G_AB(y) - y| + |G_BA(x) - x|: each "
                                    "generator also translates an image of the domain it produces, which it must "
                                    "leave unchanged, so it learns to leave the background alone. Off while the "
                                    "attention floor holds, full once it has faded; two more generator passes per "
                                    "step while it is on (0 = off, the paper).", OBJECTIVE, low=0)
    cycle_ramp: bool = option(False, "The cycle loss is off while the attention floor holds and ramps in as it "
                              "fades (full weight from two thirds of training on, later if the masks open late): "
                              "lets attention form on edits that are hard to learn, such as a new texture, at some "
                              "cost in crispness on easy ones (docs/training.md). Off = the paper's constant weight.",
                              OBJECTIVE)
    # ours, off by default: measured in docs/training.md ("What holds a missed object's mask shut")
    cycle_free_below: float = option(0.0, "Mask values below this get no gradient from the cycle loss: it still "
                                     "trains the content and the other generator, but no longer holds a shut mask "
                                     "shut, so objects the mask missed can be found, at some cost in spill on some "
                                     "tasks (0.1 is what docs/training.md measured; 1 = the whole mask; 0 = off, "
                                     "the paper).", OBJECTIVE, low=0, high=1)
    identity_negatives: bool = option(True, "Discriminators also see the other domain's real images as fakes, so "
                                      "output = input is penalised (off = the paper).", OBJECTIVE)
    paste_negatives: bool = option(False, "Discriminators also see, as fakes, real images of their domain with the "
                                   "other domain's image pasted in where the mask is: a scene that still holds "
                                   "the object to be translated, which is what an output looks like where the "
                                   "generator painted a blob elsewhere (docs/training.md).", OBJECTIVE)
    own_pairs: bool = option(True, "The attention discriminators judge each real image together with the mask the "
                             "other generator made for it, so real and generated pairs both show a mask on its "
                             "object; off = the paper, whose real pairs carry the mask made for the other domain's "
                             "image, which on unpaired data draws the mask off the object late in training "
                             "(docs/training.md).", OBJECTIVE)
    ema: float = option(0.0, "Keep a moving average of the generators' weights with this decay and save it "
                        "(0 = off; 0.99 ≈ the last 100 steps).", OBJECTIVE, low=0, below=1)
    gan_loss: str = option("lsgan", "Adversarial loss: lsgan, vanilla (the paper's log-likelihood) or hinge.", OBJECTIVE,
                           choices=GAN_LOSSES)
    d_batch: int = option(1, "The discriminators score at least this many images of each kind per step: below "
                          "it, each batch is topped up with earlier real images (the last 50 per domain, each "
                          "with its mask) and earlier generated ones from the history pools, so that at batch 1 "
                          "the discriminators average their gradient over several images (docs/training.md; "
                          "1 = the batch alone, the paper).", OBJECTIVE, low=1, high=MAX_BATCH)
    pool_size: int = option(50, "Generated images kept per discriminator's history pool (0 = none).", OBJECTIVE,
                            low=0, high=MAX_POOL)
    load_size: int | None = option(None, "Resize the shorter side to this before the random crop.", DATA, low=1,
                                   high=MAX_LOAD_SIZE, default_text="size × 286 / 256, as CycleGAN")
    flip: bool = option(True, "Flip training images left-right at random.", DATA)
    seed: int = option(0, "Random seed; a CPU run with the same seed and the same --threads is reproducible.",
                       RUNTIME, low=0, high=2 ** 63 - 1)  # numpy and torch need this range
    workers: int | None = option(None, "Data-loading worker processes.", RUNTIME, low=0, high=MAX_WORKERS,
                                 default_text="from the CPU count")
    device: str = option("auto", "auto, cpu, cuda, cuda:N or mps.", RUNTIME, envvar="AGGAN_DEVICE",
                         what="a device name")
    precision: str = option("auto", "auto (bf16 on CUDA, fp32 elsewhere), fp32, bf16 or fp16.", RUNTIME,
                            choices=PRECISIONS)
    save_every: int = option(1000, "Save a checkpoint every N steps (and at the end).", RUNTIME, low=1)
    sample_every: int = option(500, "Write a sample grid every N steps.", RUNTIME, low=1)
    log_every: int = option(50, "Log losses and mask statistics every N steps.", RUNTIME, low=1)
    compile: bool = option(False, "torch.compile the networks: a slow first step, faster steps after (GPU).", RUNTIME)
    channels_last: bool | None = option(None, "Memory layout.", RUNTIME,
                                        default_text="channels-last on CUDA, contiguous on CPU; docs/performance.md")

    def __post_init__(self) -> None:
        _check_fields(self)
        _check(not (self.epochs is not None and self.steps is not None), "give either --epochs or --steps, not both")

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> "TrainConfig":
        return _from_dict(cls, data, "train")

    def replace(self, **changes: Any) -> "TrainConfig":
        return dataclasses.replace(self, **changes)


CONFIGS: dict[str, type] = {"model": ModelConfig, "train": TrainConfig}


@functools.cache
def config_fields(cls: type) -> tuple[Field, ...]:
    """The fields of a config dataclass with their types resolved and their :class:`Option`."""
    hints = typing.get_type_hints(cls)
    section = "model" if cls is ModelConfig else "train"
    out = []
    for f in fields(cls):
        args = typing.get_args(hints[f.name])  # (int, NoneType) for int | None; () for int
        kind = next(a for a in args if a is not type(None)) if args else hints[f.name]
        out.append(Field(section, f.name, kind, type(None) in args, f.default, f.metadata["option"]))
    return tuple(out)


def all_fields() -> tuple[Field, ...]:
    return config_fields(ModelConfig) + config_fields(TrainConfig)


_RETIRED_KEYS = {"extra"}  # written (always empty) by aggan 0.1; dropped when read


def _upgrade(data: Mapping[str, Any]) -> dict[str, Any]:
    """A saved ``train`` section in this version's terms: a run saved before ``cycle_ramp`` existed
    trained with a constant cycle weight, one saved before ``own_pairs`` existed with the paper's pairs,
    one saved before ``lambda_binary`` existed without the binarisation term, and one saved before
    ``lambda_identity`` existed without the identity loss, whatever today's defaults."""
    out = {k: v for k, v in data.items() if k not in _RETIRED_KEYS}
    if isinstance(out.get("demo"), bool):  # aggan 0.1 saved demo as true/false
        out["demo"] = DEMO_TASKS[0] if out["demo"] else None
    return {"cycle_ramp": False, "own_pairs": False, "lambda_binary": 0.0, "lambda_identity": 0.0, **out}


def _upgrade_model(data: Mapping[str, Any]) -> dict[str, Any]:
    """A saved ``model`` section in this version's terms: a run saved before ``mask_guide`` existed was
    trained without the filter, one saved before ``upsample`` existed with transposed convolutions, and
    one saved before ``guide_mix`` existed with the whole guide, whatever today's defaults."""
    return {"mask_guide": 0, "upsample": "transposed", "guide_mix": False, **data}


def _upgraded(cls: type, data: Mapping[str, Any]) -> dict[str, Any]:
    return _upgrade(data) if cls is TrainConfig else _upgrade_model(data)


def _from_dict(cls: type, data: Mapping[str, Any], section: str) -> Any:
    if not isinstance(data, Mapping):
        raise ConfigError(f"the {section} configuration must be a table of options, got {type(data).__name__}")
    data = _upgraded(cls, data)
    known = {f.name for f in fields(cls)}
    unknown = sorted(set(data) - known)
    if unknown:
        raise ConfigError(f"unknown {section} option(s): {', '.join(unknown)}; known: {', '.join(sorted(known))}")
    return cls(**data)


# ---------------------------------------------------------------------------------------------
# reading options from files


def field_for(key: str) -> Field | None:
    """The field a file's key names: its field name or its flag, in snake_case or kebab-case."""
    wanted = key.replace("-", "_")
    for f in all_fields():
        if wanted in (f.name, f.flag[2:].replace("-", "_")):
            return f
    return None


def load_toml(path: str | Path) -> dict[str, Any]:
    """Read a TOML file of options, flat or under ``[model]`` / ``[train]`` tables, into field names.

    Every value is checked with its option's rules; a refusal names the file and the key as written."""
    path = Path(path)
    try:
        raw = tomllib.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ConfigError(f"config file {path} does not exist") from None
    except IsADirectoryError:
        raise ConfigError(f"config file {path} is a folder; give a TOML file") from None
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise ConfigError(f"config file {path} is not valid TOML: {exc}") from None
    except OSError as exc:
        raise ConfigError(f"config file {path} cannot be read: {exc.strerror or exc}") from None
    entries: list[tuple[str, Any]] = []
    for key, value in raw.items():
        if isinstance(value, dict) and key in CONFIGS:
            entries += [(f"{key}.{inner}", inner_value) for inner, inner_value in value.items()]
        else:
            entries.append((key, value))
    unknown = [key for key, _ in entries if field_for(key.split(".")[-1]) is None]
    if unknown:
        raise ConfigError(f"{path}: unknown option(s) {', '.join(unknown)}; see aggan train --help for the names")
    options: dict[str, Any] = {}
    for key, value in entries:
        f = field_for(key.split(".")[-1])
        options[f.name] = checked(f, value, f"{path}: {key}")
    return options


def checked(f: Field, value: Any, label: str) -> Any:
    """``value`` for field ``f``, or a ConfigError "LABEL must be ..."; whole numbers become floats where
    the field is a float."""
    problem = f.problem(value)
    if problem:
        raise ConfigError(f"{label} {problem}")
    return float(value) if f.kind is float and value is not None else value


def saved_options(config: Mapping[str, Any], path: Path) -> tuple[dict[str, Any], list[str]]:
    """The options a run was trained with, from its ``config.json`` (already parsed), for ``--resume``.

    Returns ``(options by field name, ignored keys)``: keys of the ``train`` section that this version
    does not know (a run written by a newer aggan) are ignored, and named so the caller can warn.
    A missing or malformed section, or a bad value, is a ConfigError naming the file and the key."""
    options: dict[str, Any] = {}
    ignored: list[str] = []
    for section, cls in CONFIGS.items():
        data = config.get(section)
        if not isinstance(data, Mapping):
            what = "missing" if data is None else f"not a table of options (it is {show(data, 30)})"
            raise ConfigError(f"{path}: the {section!r} section is {what}; the run cannot be resumed from it")
        data = _upgraded(cls, data)
        by_name = {f.name: f for f in config_fields(cls)}
        for key, value in data.items():
            f = by_name.get(key)
            if f is None:
                if section == "model":  # a network this version cannot build
                    raise ConfigError(f"{path}: unknown model option {key!r}; it was written by a newer aggan: "
                                      "pip install -U aggan")
                ignored.append(f"train.{key}")
                continue
            options[key] = checked(f, value, f"{path}: {section}.{key}")
    return options, ignored


MASK_GUIDE_CHOICES = ("auto", "trained")
MASK_GUIDE_HELP = ("The mask guide's radius when translating: auto (what training picked for this model, in its "
                   "config.json), trained (the radius it was trained with), or N pixels (0 = off). See "
                   "docs/translate.md.")


def parse_mask_guide(value: str | int) -> str | int:
    """``--mask-guide``: ``"auto"``, ``"trained"`` or a whole number of pixels from 0 to MAX_MASK_GUIDE."""
    if isinstance(value, str) and value.strip().lower() in MASK_GUIDE_CHOICES:
        return value.strip().lower()
    text = value.strip() if isinstance(value, str) else value
    radius = int(text) if isinstance(text, str) and text.isascii() and text.isdigit() else text
    if type(radius) is not int or not 0 <= radius <= MAX_MASK_GUIDE:
        raise ConfigError(f"--mask-guide must be auto, trained or a whole number of pixels from 0 to "
                          f"{MAX_MASK_GUIDE}, got {value!r}")
    return radius
