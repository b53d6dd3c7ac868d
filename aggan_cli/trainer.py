"""The training loop: one generator update on the whole objective, one update of all four
discriminators, history pools, the learning-rate schedule, logging, samples, checkpoints, resume.

The step reads like the algorithm (CycleGAN's shape): forward both generators, backward G with the
discriminators frozen, then backward D on real and pooled fake samples. The loop never reads a
tensor back to the host except at logging intervals, so a GPU is never stalled for a print.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import re
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterator, Protocol

import torch
from torch import Tensor

from .checkpoint import (STATE_FILE, atomic_write_text, find_save, load_run, load_state_dict_strict, load_training_state,
                         save_run)
from .config import ModelConfig, TrainConfig
from .data import (EpochSampler, UnpairedDataset, centre_crop, collate, dead_worker, deferred_worker_deaths,
                   ignore_interrupts, starting_workers, watch_worker_deaths, worker_context, worker_death)
from .device import adjust_threads, autocast, describe_device, precision_name, resolve_device, resolve_precision
from .ema import WeightAverage
from .errors import CheckpointError, TrainingError, os_reason
from .guard import NonFiniteGuard
from .losses import LossWeights, discriminator_objective, generator_objective, pair
from .networks import AGGAN, choose_translate_guide, patch_size
from .scoring import better_save, json_number

# A mask whose mean stays below / above these for COLLAPSE_PATIENCE logging intervals has collapsed.
MASK_COLLAPSED, MASK_SATURATED, COLLAPSE_PATIENCE = 0.01, 0.98, 3
# An update whose loss is NaN or Inf is skipped; this many such steps in a row stop training.
NONFINITE_PATIENCE = 20
# The attention floor's weight is full until this fraction of training, then fades to 0 by the second,
# provided the masks have opened by then; if not, it stays at full weight until they open and then fades
# over the same share of training (FLOOR_FADE[1] - FLOOR_FADE[0]) from there (Trainer._watch_floor).
FLOOR_FADE = (1 / 3, 2 / 3)
# A mask has opened when at least FLOOR_OPEN[1] of its values are above FLOOR_OPEN[0], in a running average
# over the last ~1/(1 - FLOOR_OPEN_DECAY) steps. A mask held at the floor sits near 0.02 everywhere (none
# above 0.1); at a third the built-in tasks' open masks had 7-19% of their values above 0.1.
FLOOR_OPEN, FLOOR_OPEN_DECAY = (0.1, 0.01), 0.95
# While the masks are closed past FLOOR_FADE[0], they are looked at every this many steps (a host sync).
FLOOR_CHECK_EVERY = 10
# The binarisation term (--lambda-binary) is on from this fraction of training to the end: late, once
# the mask has found the object (from half-way it cost 1.1 dB more foreground on recolour; docs/training.md).
BINARY_FROM = 3 / 4
# --d-batch: real images kept per domain to top up the discriminators' batch (the history pools' size)
REPLAY_SIZE = 50
# what a run whose masks never opened at a smaller batch suggests for --d-batch (docs/training.md, "d-batch")
SUGGESTED_D_BATCH = 4
# Training images per domain on which each save picks the mask-guide radius to translate with
# (networks.choose_translate_guide; config.json's "translate")
SNAP_IMAGES = 32
# Under torchrun, a Ctrl-C or SIGTERM is agreed on by all ranks every this many steps (not every step).
STOP_CHECK_EVERY = 10


def floor_fade(progress: float, end: float = FLOOR_FADE[1]) -> float:
    """The attention floor's share of its weight at ``progress`` (0 = start, 1 = end of training) when it
    has faded out by ``end``: full until ``end`` minus the fade's span, then falling linearly to 0."""
    return min(1.0, max(0.0, (end - progress) / (FLOOR_FADE[1] - FLOOR_FADE[0])))


class Reporter(Protocol):
    """What the trainer tells the outside world; the CLI draws it, tests record it."""

    def start(self, info: dict[str, Any]) -> None: ...
    def advance(self, step: int, metrics: dict[str, float] | None) -> None: ...
    def warn(self, message: str) -> None: ...
    def saved(self, step: int, path: Path) -> None: ...


class NullReporter:
    def start(self, info): pass
    def advance(self, step, metrics): pass
    def warn(self, message): pass
    def saved(self, step, path): pass


class ImagePool:
    """CycleGAN's history of generated samples: once full, each query returns, per image, the new
    sample or (with probability ½) a stored one that the new sample then replaces. Feeding the
    discriminators some older fakes keeps them from chasing the generator's latest move."""

    def __init__(self, size: int, generator: torch.Generator) -> None:
        self.size, self.generator, self.images = size, generator, []

    def query(self, images: Tensor) -> Tensor:
        if self.size == 0:
            return images
        out = []
        for image in images.detach():
            image = image.unsqueeze(0)
            if len(self.images) < self.size:
                self.images.append(image)
                out.append(image)
            elif torch.rand((), generator=self.generator).item() < 0.5:
                j = int(torch.randint(self.size, (), generator=self.generator).item())
                out.append(self.images[j])
                self.images[j] = image
            else:
                out.append(image)
        return torch.cat(out)

    def state_dict(self) -> dict[str, Any]:
        return {"images": [im.cpu() for im in self.images]}

    def load_state_dict(self, state: dict[str, Any], device: torch.device) -> None:
        self.images = [im.to(device) for im in state["images"]]


class ReplayStore(ImagePool):
    """Recent real images, each with the mask the other generator made for it, for ``--d-batch``: every
    discriminator step adds the new ones (at random over the old once full) and draws earlier ones back
    (:func:`draw_stored`), so a discriminator trained at batch 1 still averages its gradient over several
    images. Saved and restored as a history pool is."""

    def add(self, images: Tensor) -> None:
        for image in images.detach():
            image = image.unsqueeze(0)
            if len(self.images) < self.size:
                self.images.append(image)
            else:
                self.images[int(torch.randint(self.size, (), generator=self.generator).item())] = image


def draw_stored(pool: ImagePool, count: int, generator: torch.Generator) -> Tensor | None:
    """``count`` images drawn at random, with replacement, from a pool or store (None while it is empty)."""
    if not pool.images:
        return None
    picks = torch.randint(len(pool.images), (count,), generator=generator).tolist()
    return torch.cat([pool.images[i] for i in picks])


@dataclass
class Schedule:
    """How many steps, and the learning-rate factor: 1 for the first half, then linear to 0 (DESIGN.md)."""

    total_steps: int
    steps_per_epoch: int

    def lr_factor(self, step: int) -> float:
        half = self.total_steps // 2
        return 1.0 - max(0, step - half) / max(1, self.total_steps - half)


@dataclass
class MaskWatch:
    """Counts consecutive logging intervals with a collapsed (≈0) or saturated (≈1) mask."""

    low: dict[str, int] = field(default_factory=dict)
    high: dict[str, int] = field(default_factory=dict)
    warned: set = field(default_factory=set)

    def update(self, direction: str, mean: float) -> str | None:
        self.low[direction] = self.low.get(direction, 0) + 1 if mean < MASK_COLLAPSED else 0
        self.high[direction] = self.high.get(direction, 0) + 1 if mean > MASK_SATURATED else 0
        if self.low[direction] >= COLLAPSE_PATIENCE and (direction, "low") not in self.warned:
            self.warned.add((direction, "low"))
            return "collapsed"
        if self.high[direction] >= COLLAPSE_PATIENCE and (direction, "high") not in self.warned:
            self.warned.add((direction, "high"))
            return "saturated"
        return None


def collapse_message(direction: str, kind: str, mean: float, cfg: ModelConfig, tcfg: TrainConfig) -> str:
    if kind == "collapsed":
        hint = ("the attention sigmoid has saturated at 0, so the output equals the input and no gradient "
                "reaches the content. ")
        tips = []
        if cfg.discriminator == "global":
            tips.append("--discriminator patch (the paper's global discriminator often does this)")
        if not tcfg.lambda_floor:
            tips.append("--lambda-floor 1")
        if not tcfg.identity_negatives:
            tips.append("--identity-negatives")
        if not tcfg.cycle_ramp:
            tips.append("--cycle-ramp (for edits that are hard to learn, such as a new texture)")
        tips += ["a larger --batch-size", "a lower --lambda-pixel"]
        hint += "Try " + ", ".join(tips) + " (docs/training.md)."
        return f"attention mask {direction} has collapsed (mean {mean:.4f}): {hint}"
    return (f"attention mask {direction} has saturated at 1 (mean {mean:.3f}): the generator repaints the whole "
            "image instead of editing a region. Try a higher --lambda-tv or --lambda-pixel.")


class _View:
    """Attribute access to networks without registering them as submodules of the holder."""

    def __init__(self, **networks) -> None:
        self.__dict__.update(networks)


class GeneratorLoss(torch.nn.Module):
    """The generators' step as one module: its parameters are exactly g_ab's and g_ba's, so it can be
    wrapped in DistributedDataParallel (one forward and one backward per step); the discriminators
    are only read, never registered here."""

    def __init__(self, model: AGGAN, weights: LossWeights) -> None:
        super().__init__()
        self.g_ab, self.g_ba, self.weights = model.g_ab, model.g_ba, weights
        object.__setattr__(self, "_discriminators", (model.d_a, model.d_b, model.d_a_attn, model.d_b_attn))

    def forward(self, x: Tensor, y: Tensor):
        d_a, d_b, d_a_attn, d_b_attn = self._discriminators
        view = _View(g_ab=self.g_ab, g_ba=self.g_ba, d_a=d_a, d_b=d_b, d_a_attn=d_a_attn, d_b_attn=d_b_attn)
        return generator_objective(view, x, y, self.weights)


class DiscriminatorLoss(torch.nn.Module):
    """The four discriminators' step as one module (parameters: the four discriminators only)."""

    def __init__(self, model: AGGAN, gan_loss_kind: str) -> None:
        super().__init__()
        self.d_a, self.d_b, self.d_a_attn, self.d_b_attn = model.d_a, model.d_b, model.d_a_attn, model.d_b_attn
        self.kind = gan_loss_kind

    def forward(self, x: Tensor, y: Tensor, fakes: dict[str, Tensor], identity_negatives: bool = False,
                own_pairs: bool = False, paste_negatives: bool = False):
        return discriminator_objective(self, x, y, gan_loss_kind=self.kind, identity_negatives=identity_negatives,
                                       own_pairs=own_pairs, paste_negatives=paste_negatives, **fakes)


class Trainer:
    """Train AGGAN on two image sources; owns the model, optimisers, pools and the run folder.

    ``source_a``/``source_b`` are objects with ``len()``, ``load(i) -> PIL.Image`` and ``name``
    (data.FolderSource or data.DemoSource). ``rank``/``world`` are set under torchrun (see dist.py).
    """

    def __init__(
        self,
        model_config: ModelConfig,
        train_config: TrainConfig,
        source_a,
        source_b,
        *,
        run_dir: str | Path,
        reporter: Reporter | None = None,
        resume: bool = False,
        rank: int = 0,
        world: int = 1,
        device: torch.device | None = None,
        command: str = "",
        evaluator: Callable[..., Any] | None = None,
    ) -> None:
        self.mcfg, self.tcfg = model_config, train_config
        self.run_dir = Path(run_dir)
        self.reporter = reporter or NullReporter()
        self.rank, self.world = rank, world
        self.is_main = rank == 0
        self.command = command
        self.device = device or resolve_device(train_config.device)
        self.amp_dtype = resolve_precision(train_config.precision, self.device)
        self.domains = (source_a.name, source_b.name)
        self.source_a, self.source_b = source_a, source_b

        n = max(len(source_a), len(source_b))
        per_step = train_config.batch_size * world
        if n < per_step:
            raise TrainingError(f"the larger domain has {n} image(s), fewer than one step needs "
                                f"(batch size {train_config.batch_size} × {world} process(es)); lower --batch-size")
        steps_per_epoch = n // per_step
        if train_config.steps is not None:
            total = train_config.steps
        else:
            total = (train_config.epochs or 200) * steps_per_epoch
        self.schedule = Schedule(total, steps_per_epoch)

        torch.manual_seed(train_config.seed)
        with self.memory_errors("building the networks"):
            self.model = AGGAN(model_config).to(self.device)
        self.channels_last = default_channels_last(self.device) if train_config.channels_last is None \
            else train_config.channels_last
        if self.channels_last:
            self.model.to(memory_format=torch.channels_last)  # before DDP, so gradient buckets match the layout
        if self.device.type == "cuda":
            torch.backends.cudnn.benchmark = True  # fixed shapes every step: let cuDNN time its algorithms once
        self.weights = LossWeights(gan_loss=train_config.gan_loss, lambda_cycle=train_config.lambda_cycle,
                                   lambda_pixel=train_config.lambda_pixel, lambda_tv=train_config.lambda_tv,
                                   lambda_floor=train_config.lambda_floor, lambda_binary=0.0,
                                   lambda_identity=train_config.lambda_identity,
                                   cycle_free_below=train_config.cycle_free_below)
        fused = fused_adam_supported(self.device)
        betas = (train_config.beta1, train_config.beta2)
        g_params = [p for g in self.model.generators for p in g.parameters()]
        d_params = [p for d in self.model.discriminators for p in d.parameters()]
        self.g_loss: torch.nn.Module = GeneratorLoss(self.model, self.weights)
        self.d_loss: torch.nn.Module = DiscriminatorLoss(self.model, train_config.gan_loss)
        if world > 1:
            self._wrap_ddp()
        # A moving average of the generators' weights (off unless --ema > 0): what samples, the demo score
        # and model.safetensors use. It damps the step-to-step oscillation of GAN training (ema.py).
        self.ema = {name: WeightAverage(getattr(self.model, name), train_config.ema)
                    for name in ("g_ab", "g_ba")} if train_config.ema else {}
        if train_config.compile:
            for network in (*self.model.generators, *self.model.discriminators):
                network.compile()  # in place: state-dict keys and the DDP wrappers stay as they are
        # fp16 needs loss scaling against underflowing gradients; bf16 and fp32 do not (a disabled scaler is a no-op)
        self.scaler = torch.amp.GradScaler(self.device.type, enabled=self.amp_dtype == torch.float16)
        self.opt_g = torch.optim.Adam(g_params, lr=train_config.lr, betas=betas, fused=fused or None)
        self.opt_d = torch.optim.Adam(d_params, lr=train_config.lr, betas=betas, fused=fused or None)
        self.sched_g = torch.optim.lr_scheduler.LambdaLR(self.opt_g, lambda s: self.schedule.lr_factor(s))
        self.sched_d = torch.optim.lr_scheduler.LambdaLR(self.opt_d, lambda s: self.schedule.lr_factor(s))
        self.pool_gen = torch.Generator().manual_seed(train_config.seed + 1)
        size = train_config.pool_size
        self.pools = {name: ImagePool(size, self.pool_gen) for name in ("a", "b", "a_attn", "b_attn")}
        # --d-batch: earlier real images (with their own masks) topping up a small batch for the discriminators
        self.replay = {name: ReplayStore(REPLAY_SIZE, self.pool_gen) for name in ("a", "b")} \
            if train_config.d_batch > train_config.batch_size else {}
        self.step = 0
        self.floor_done = False  # the attention floor has faded out for good (see weights_at)
        # The fraction of training by which the floor has faded out: set once the masks have opened
        # (_watch_floor), at once to the fixed schedule's when there is no floor to hold.
        self.floor_end: float | None = None if train_config.lambda_floor else FLOOR_FADE[1]
        self.open_share = torch.zeros(2, device=self.device)  # running share of mask values above FLOOR_OPEN[0]
        self.open_updates = 0
        self.binary_on = False   # the binarisation term has started, for good (see weights_at)
        self.watch = MaskWatch()
        self.fixed: dict[str, Tensor] | None = None
        self.snap_images: dict[str, Tensor] | None = None
        self.translate_guide: dict[str, Any] | None = None  # what each save picked, see choose_translate_guides
        self.demo_score: dict[str, float] | None = None
        # Held-out quality at every save (a built-in task's test split, or --eval DIR): scored into
        # metrics.jsonl, and the best save so far kept in RUN/best/ (scoring.Evaluator).
        self.evaluator = evaluator
        self.last_eval: dict[str, Any] | None = None   # {"step", "score", "quality", "tiebreak"} of the latest save
        self.best: dict[str, Any] | None = None        # the same for the best save so far
        self.bad_files: set[str] = set()
        self.guard = NonFiniteGuard(self.device, world=world, scaler=self.scaler)  # NaN/Inf steps, see _watch_numerics
        self._in_streak = False
        self._io_warned: set[str] = set()
        if resume:
            self._restore()
        elif self.is_main and (self.run_dir / "metrics.jsonl").exists():
            (self.run_dir / "metrics.jsonl").unlink()  # left by a run killed before its first save

    def weights_at(self, step: int) -> LossWeights:
        """The loss weights for ``step``. The attention floor is at full weight for the first third of
        training (while the discriminators learn what tells the domains apart), then fades linearly
        to zero by two thirds, so that in the last third unattended pixels settle at a mask of ~0.
        If the masks have not opened by a third, the floor stays at full weight until they do, and
        fades over the next third of training from there (``floor_end``, set by ``_watch_floor``).
        With ``cycle_ramp`` the cycle loss does the opposite: off while the floor is at full weight,
        at full weight once it has faded (docs/training.md). So does the identity loss
        (``--lambda-identity``) whenever there is a floor: it asks each generator to leave the other domain's
        images alone, which early on would shut masks that have not formed yet; without a floor it is at full
        weight throughout. The binarisation term (``--lambda-binary``)
        is off for the first three quarters and at full weight in the last, once the mask has found the
        object. Once the floor has faded out it stays off, the cycle loss at full weight and the
        binarisation term on, also when a resumed run is extended with more steps."""
        if not (self.weights.lambda_floor or self.tcfg.cycle_ramp or self.tcfg.lambda_binary):
            return self.weights
        import dataclasses

        progress = step / max(1, self.schedule.total_steps)
        if self.floor_done:
            fade = 0.0
        else:
            fade = 1.0 if self.floor_end is None else floor_fade(progress, self.floor_end)
        binary = self.binary_on or progress >= BINARY_FROM
        identity_share = 1 - fade if self.tcfg.lambda_floor else 1.0
        return dataclasses.replace(
            self.weights, lambda_floor=self.tcfg.lambda_floor * fade,
            lambda_identity=self.tcfg.lambda_identity * identity_share,
            lambda_cycle=self.tcfg.lambda_cycle * (1 - fade) if self.tcfg.cycle_ramp else self.tcfg.lambda_cycle,
            lambda_binary=self.tcfg.lambda_binary if binary else 0.0)

    def _wrap_ddp(self) -> None:
        from torch.nn.parallel import DistributedDataParallel as DDP

        if self.mcfg.norm == "batch" and self.device.type == "cuda":
            # batch statistics over all processes' images, not each process's few
            for name in ("g_ab", "g_ba", "d_a", "d_b", "d_a_attn", "d_b_attn"):
                setattr(self.model, name, torch.nn.SyncBatchNorm.convert_sync_batchnorm(getattr(self.model, name)))
            self.g_loss = GeneratorLoss(self.model, self.weights)
            self.d_loss = DiscriminatorLoss(self.model, self.tcfg.gan_loss)
        ids = [self.device.index] if self.device.type == "cuda" else None
        self.g_loss = DDP(self.g_loss, device_ids=ids)
        self.d_loss = DDP(self.d_loss, device_ids=ids)

    # -- the step ----------------------------------------------------------------------------

    def _set_requires_grad(self, modules, flag: bool) -> None:
        for m in modules:
            for p in m.parameters():
                p.requires_grad_(flag)

    def train_step(self, x: Tensor, y: Tensor) -> dict[str, Tensor]:
        """One generator update and one discriminator update; returns detached loss terms (no sync)."""
        model = self.model
        # 1. generators, with the discriminators frozen so no D weight gradient is computed
        self._set_requires_grad(model.discriminators, False)
        self._watch_floor()
        _unwrap_loss(self.g_loss).weights = self.weights_at(self.step)
        with autocast(self.device, self.amp_dtype):
            g = self.g_loss(x, y)
        self.opt_g.zero_grad(set_to_none=True)
        self.scaler.scale(g.total).backward()
        self.guard.step(self.opt_g, g.total)
        for name, average in self.ema.items():
            average.update(getattr(self.model, name))
        # 2. discriminators, on real samples and pooled fakes
        self._set_requires_grad(model.discriminators, True)
        fake_b, fake_a = g.fake_b.detach(), g.fake_a.detach()
        mask_b, mask_a = g.mask_b.detach(), g.mask_a.detach()
        fakes = {
            "fake_a": self.pools["a"].query(fake_a), "fake_b": self.pools["b"].query(fake_b),
            "fake_pair_a": self.pools["a_attn"].query(pair(mask_a, fake_a)),
            "fake_pair_b": self.pools["b_attn"].query(pair(mask_b, fake_b)),
            "mask_a": mask_a, "mask_b": mask_b,
        }
        real_x, real_y = x, y
        if self.replay:
            real_x, real_y = self._top_up(x, y, mask_b, mask_a, fakes)
        with autocast(self.device, self.amp_dtype):
            d_total, d_terms = self.d_loss(real_x, real_y, fakes, self.tcfg.identity_negatives, self.tcfg.own_pairs,
                                           self.tcfg.paste_negatives)
        self.opt_d.zero_grad(set_to_none=True)
        self.scaler.scale(d_total).backward()
        self.guard.step(self.opt_d, d_total)
        self.scaler.update()
        self.sched_g.step()
        self.sched_d.step()
        self.step += 1
        terms = {**g.terms, **d_terms}
        # mask statistics for the logs: M_y is the mask of a→b, M_x of b→a
        terms["mask_ab_mean"] = mask_b.float().mean()
        terms["mask_ab_frac"] = (mask_b > 0.5).float().mean()
        terms["mask_ba_mean"] = mask_a.float().mean()
        terms["mask_ba_frac"] = (mask_a > 0.5).float().mean()
        for key, generator in (("guide_ab", model.g_ab), ("guide_ba", model.g_ba)):
            share = generator.guide_weight()  # --guide-mix: how much of the guide each generator uses
            if share is not None:
                terms[key] = share.detach().reshape(())
        if self.floor_end is None:  # the floor waits for the masks to open: a running share, on the device
            share = torch.stack([(mask_b > FLOOR_OPEN[0]).float().mean(), (mask_a > FLOOR_OPEN[0]).float().mean()])
            self.open_share.mul_(FLOOR_OPEN_DECAY).add_(share, alpha=1 - FLOOR_OPEN_DECAY)
            self.open_updates += 1
        return terms

    def _top_up(self, x: Tensor, y: Tensor, mask_b: Tensor, mask_a: Tensor,
                fakes: dict[str, Tensor]) -> tuple[Tensor, Tensor]:
        """``--d-batch``: add earlier real images of each domain (each with the mask made for it, M_y for x and
        M_x for y) and earlier generated samples from the history pools, so that each discriminator scores
        ``d_batch`` images of each kind. Returns the real batches; ``fakes`` is extended in place."""
        extra = self.tcfg.d_batch - x.shape[0]
        if extra <= 0:
            return x, y
        drawn = {}
        for name, real, mask in (("a", x, mask_b), ("b", y, mask_a)):
            self.replay[name].add(pair(mask, real))
            drawn[name] = draw_stored(self.replay[name], extra, self.pool_gen)
        real_x = torch.cat([x, drawn["a"][:, 1:].to(x.dtype)])
        real_y = torch.cat([y, drawn["b"][:, 1:].to(y.dtype)])
        fakes["mask_b"] = torch.cat([mask_b, drawn["a"][:, :1].to(mask_b.dtype)])
        fakes["mask_a"] = torch.cat([mask_a, drawn["b"][:, :1].to(mask_a.dtype)])
        for key, pool in (("fake_a", "a"), ("fake_b", "b"), ("fake_pair_a", "a_attn"), ("fake_pair_b", "b_attn")):
            stored = draw_stored(self.pools[pool], extra, self.pool_gen)
            if stored is not None:
                fakes[key] = torch.cat([fakes[key], stored])
        return real_x, real_y

    def _watch_floor(self) -> None:
        """From a third of training on, until the masks have opened: set ``floor_end`` once both are
        open. Open at the first step past a third: the fixed schedule (fade by two thirds). Open
        later, at step s: a fade over the same share of training from s. Looked at every
        FLOOR_CHECK_EVERY steps, at the same steps on every rank (the share is averaged over them)."""
        if self.floor_end is not None or self.floor_done:
            return
        total = max(1, self.schedule.total_steps)
        progress = self.step / total
        if progress < FLOOR_FADE[0]:
            return
        first = (self.step - 1) / total < FLOOR_FADE[0]  # the first step past a third
        if not first and self.step % FLOOR_CHECK_EVERY:
            return
        share = self._open_share()
        if self.world > 1:
            from .dist import mean_over_ranks

            share = mean_over_ranks(share)
        if float(share.min()) >= FLOOR_OPEN[1]:
            self.floor_end = FLOOR_FADE[1] if first else progress + FLOOR_FADE[1] - FLOOR_FADE[0]

    def _open_share(self) -> Tensor:
        """Each mask's running share of values above FLOOR_OPEN[0] (a→b, b→a), bias-corrected for its start at 0."""
        return self.open_share / (1 - FLOOR_OPEN_DECAY ** max(1, self.open_updates))

    def floor_warning(self) -> str | None:
        """What to say at the end of a run whose masks never opened (the floor was held throughout)."""
        if self.floor_end is not None or self.floor_done or self.step < self.schedule.total_steps:
            return None
        share = self._open_share().tolist()
        directions = [f"{a}→{b}" for a, b in (self.domains, self.domains[::-1])]
        # the decision averaged the share over all ranks; this rank's own may be above the line
        closed = [d for d, value in zip(directions, share) if value < FLOOR_OPEN[1]] or directions
        advice = "Train longer (--steps, or --resume with more --steps) or with a larger --batch-size"
        layers, size = self.mcfg.d_layers, self.mcfg.image_size
        if self.mcfg.discriminator == "patch" and layers > 1 and patch_size(layers) >= size:
            # measured on a shape change at 64 px: the 70-px patch learns the training images, 34 px the shape
            advice += (f", or with a smaller discriminator patch, --d-layers {layers - 1} ({patch_size(layers - 1)} px: "
                       f"this one's {patch_size(layers)}-px patch sees the whole {size}-px crop, and can learn the "
                       "training images by heart instead of the edit)")
        if self.tcfg.batch_size < SUGGESTED_D_BATCH and self.tcfg.d_batch < SUGGESTED_D_BATCH:
            # measured at batch 1: topped up to 4, the 34-px discriminator learnt the shape and the masks opened
            advice += (f", or with a larger discriminator batch at this batch size, --d-batch {SUGGESTED_D_BATCH} "
                       "(each discriminator step also scores earlier images)")
        return (f"the attention mask{'s' if len(closed) > 1 else ''} {' and '.join(closed)} never opened (fewer than "
                f"{FLOOR_OPEN[1]:.0%} of mask values above {FLOOR_OPEN[0]}), so the attention floor was held to the "
                f"end and the output is close to the input everywhere. {advice}; docs/training.md has what helps "
                "for hard edits")

    # -- numerical faults --------------------------------------------------------------------

    def _watch_numerics(self, end: int) -> None:
        """Warn once per run of steps with a skipped (NaN or Inf) update, stop after NONFINITE_PATIENCE in
        a row. The guard's counters live on the device and are read every step on the CPU, and on other
        devices only at logging and saving steps, where the loop waits for the device anyway."""
        self.guard.end_step()
        t = self.tcfg
        if self.device.type != "cpu" and self.step % t.log_every and self.step % t.save_every and self.step != end:
            return
        skipped, streak = self.guard.read()
        if skipped and not self._in_streak:
            what = "its update was" if skipped == 1 else f"{skipped} updates were"
            self.reporter.warn(f"step {self.step}: a loss was NaN or Inf, so {what} skipped; training goes on, and "
                               f"checkpoints wait for finite losses ({NONFINITE_PATIENCE} such steps in a row stop it)")
        self._in_streak = streak > 0
        if streak >= NONFINITE_PATIENCE:
            precision = precision_name(self.amp_dtype)
            overflow = (f"overflow in {precision} (try --precision fp32)" if self.amp_dtype is not None
                        else "overflow even in fp32 precision")
            raise TrainingError(f"training stopped at step {self.step}: the losses were NaN or Inf for {streak} steps in a "
                                f"row, and their updates were skipped. Likely causes: a learning rate too high (--lr "
                                f"{t.lr:g}; try 10x lower), {overflow}, or extreme --lambda-* weights. "
                                + self._what_is_kept("Change them"))

    def _what_is_kept(self, fix: str) -> str:
        """The last good checkpoint and how to go on from it, or, when none was saved, how to start again."""
        try:
            step = find_save(self.run_dir, need_state=True).step
        except CheckpointError:
            return (f"No checkpoint had been saved yet: {fix[0].lower() + fix[1:]}, then start the run again "
                    "(no --resume)")
        return f"The last good checkpoint, step {step}, is kept in {self.run_dir}. {fix}, then continue with --resume"

    def best_effort(self, what: str, write: Callable[[], Any]) -> None:
        """Write something that helps a person but is not needed to resume: a failing disk warns (once per
        kind of file) instead of stopping; the next checkpoint save then stops training if it fails too."""
        try:
            write()
        except (OSError, ValueError) as exc:  # ValueError: a metrics line cut short by an earlier failed write
            if what not in self._io_warned:
                self._io_warned.add(what)
                reason = os_reason(exc) if isinstance(exc, OSError) else str(exc)
                self.reporter.warn(f"could not write {what} in {self.run_dir}: {reason}; training goes on")

    # -- the loop ----------------------------------------------------------------------------

    def batches(self) -> Iterator[dict[str, Any]]:
        """The training batches from the current step on, loaded by ``--workers`` processes."""
        from torch.utils.data import DataLoader

        t = self.tcfg
        dataset = UnpairedDataset(self.source_a, self.source_b, size=self.mcfg.image_size,
                                  load_size=t.load_size or round(self.mcfg.image_size * 286 / 256),
                                  flip=t.flip, seed=t.seed)
        sampler = EpochSampler(len(dataset), seed=t.seed, rank=self.rank, world=self.world,
                               start=self.step * t.batch_size)
        workers = default_workers() if t.workers is None else t.workers
        if workers > usable_cores():
            self.reporter.warn(f"--workers {workers} is more than the {usable_cores()} CPU core(s) this process may "
                               "use: data loading competes with training for them; leave --workers unset to fit "
                               "the machine")
        with warnings.catch_warnings(), starting_workers():
            # PyTorch's own warning says the same, twice (DataLoader and its iterator), in its own words
            warnings.filterwarnings("ignore", message="This DataLoader will create", category=UserWarning)
            batches = iter(DataLoader(dataset, batch_size=t.batch_size, sampler=sampler, num_workers=workers,
                                      collate_fn=collate, pin_memory=self.device.type == "cuda", drop_last=True,
                                      persistent_workers=workers > 0, prefetch_factor=4 if workers else None,
                                      worker_init_fn=ignore_interrupts,  # the trainer alone answers Ctrl-C, and saves
                                      multiprocessing_context=worker_context() if workers else None))
        if workers:
            watch_worker_deaths()  # its death is reported at the next batch, not mid-update
        return batches

    def fit(self, *, stop_at: int | None = None, should_stop: Callable[[], bool] | None = None) -> dict[str, Any]:
        """Train until the schedule's last step (or ``stop_at``); save at intervals and at the end."""
        with self.memory_errors("training"), deferred_worker_deaths():
            return self._fit(stop_at=stop_at, should_stop=should_stop)

    @contextlib.contextmanager
    def memory_errors(self, doing: str) -> Iterator[None]:
        """An out-of-memory error becomes a TrainingError that says how much was asked for and what to lower."""
        try:
            yield
        except (MemoryError, RuntimeError) as exc:
            if not is_out_of_memory(exc):
                raise
            message = out_of_memory_message(exc, doing, self.device, self.amp_dtype, self.mcfg, self.tcfg)
            raise TrainingError(message) from None

    def _fit(self, *, stop_at: int | None, should_stop: Callable[[], bool] | None) -> dict[str, Any]:
        t = self.tcfg
        end = min(self.schedule.total_steps, stop_at) if stop_at is not None else self.schedule.total_steps
        if self.is_main:
            self.run_dir.mkdir(parents=True, exist_ok=True)
        self.reporter.start(self.describe(end))
        started, start_step = time.perf_counter(), self.step
        last_time, last_step = started, self.step
        if self.fixed is None:
            self.fixed = self._fixed_batch()
        batches = self.batches() if self.step < end else iter(())
        accumulated: dict[str, Tensor] = {}
        count = 0
        while self.step < end:
            batch = self._next_batch(batches)
            for message in batch["bad"]:
                if message not in self.bad_files:
                    self.bad_files.add(message)
                    self.reporter.warn(f"skipped an unreadable image: {message}")
            layout = torch.channels_last if self.channels_last else torch.contiguous_format
            x = batch["a"].to(self.device, non_blocking=True, memory_format=layout)
            y = batch["b"].to(self.device, non_blocking=True, memory_format=layout)
            terms = self.train_step(x, y)
            adjust_threads()  # one CPU thread per core that other processes leave free (device.py)
            self._watch_numerics(end)
            for k, v in terms.items():
                accumulated[k] = accumulated[k] + v if k in accumulated else v
            count += 1
            metrics = None
            if self.step % t.log_every == 0 or self.step == end:
                now = time.perf_counter()
                metrics = self._log({k: v / count for k, v in accumulated.items()},
                                    images_per_s=(self.step - last_step) * t.batch_size * self.world / max(now - last_time, 1e-9))
                accumulated, count, last_time, last_step = {}, 0, now, self.step
            self.reporter.advance(self.step, metrics)
            if self.step % t.sample_every == 0 or self.step == end:
                self.write_samples()
            if self.step % t.save_every == 0 or self.step == end:
                self.save()
            if should_stop is not None and self._stop_requested(should_stop):
                if self.step % t.save_every and self.step != end:
                    self.save()
                break
        if self.step > start_step and (warning := self.floor_warning()):  # None without a floor (floor_end set)
            self.reporter.warn(warning)
        elapsed = time.perf_counter() - started
        return {"steps": self.step - start_step, "step": self.step, "seconds": elapsed, "run_dir": str(self.run_dir),
                "total_steps": self.schedule.total_steps}

    def _next_batch(self, batches: Iterator[dict[str, Any]]) -> dict[str, Any]:
        """The next batch; when a data-loading worker has died (the kernel's out-of-memory killer, a
        signal), save the step reached and stop with a TrainingError instead of a traceback."""
        death = worker_death()
        if death is None:
            try:
                return next(batches)
            except RuntimeError as exc:
                if not str(exc).startswith("DataLoader worker"):
                    raise
                death = exc
            except (OSError, EOFError):
                # a worker killed while the trainer was taking its batch: the batch's shared memory
                # could not be handed over (connection refused or reset by the dead worker)
                death = dead_worker(batches)
                if death is None:
                    raise
        reason = str(death).split(". ")[0].strip().rstrip(".")
        saved = self.save()  # None on other ranks than the first, and right after a skipped update
        kept = f"saved step {self.step} in {self.run_dir}" if saved is not None else "the last save is kept"
        raise TrainingError(f"a data-loading process stopped ({reason}); {kept}. Continue with --resume; if it "
                            "happens again, train with --workers 0 (load images in the training process) or free "
                            "some memory")

    def _stop_requested(self, should_stop: Callable[[], bool]) -> bool:
        flag = should_stop()
        if self.world > 1:
            # all ranks must agree, which costs a collective and a host sync: ask only every few steps
            if self.step % STOP_CHECK_EVERY:
                return False
            from .dist import any_rank

            flag = any_rank(flag, self.device)
        return flag

    def record_demo_score(self, score: dict[str, float]) -> None:
        """Store the demo's self-score in config.json and the model card."""
        if self.is_main:
            self.demo_score = score
            self.save()

    def describe(self, end: int) -> dict[str, Any]:
        return {"device": describe_device(self.device), "precision": precision_name(self.amp_dtype),
                "domains": self.domains, "sizes": (len(self.source_a), len(self.source_b)),
                "start_step": self.step, "end_step": end, "total_steps": self.schedule.total_steps,
                "steps_per_epoch": self.schedule.steps_per_epoch, "run_dir": str(self.run_dir),
                "world": self.world}

    def _log(self, means: dict[str, Tensor], *, images_per_s: float) -> dict[str, float]:
        values = torch.stack(list(means.values())).float().cpu().tolist()  # the one host sync per interval
        metrics = {k: round(v, 6) for k, v in zip(means, values)}
        metrics.update(step=self.step, epoch=round(self.step / self.schedule.steps_per_epoch, 3),
                       lr=self.opt_g.param_groups[0]["lr"], images_per_s=round(images_per_s, 2), time=time.time())
        nonfinite = [k for k, v in metrics.items() if isinstance(v, float) and not math.isfinite(v)]
        if nonfinite:
            self.reporter.warn(f"non-finite loss terms at step {self.step}: {', '.join(nonfinite)}")
        for direction, key in ((f"{self.domains[0]}→{self.domains[1]}", "mask_ab_mean"),
                               (f"{self.domains[1]}→{self.domains[0]}", "mask_ba_mean")):
            kind = self.watch.update(direction, metrics[key])
            if kind:
                self.reporter.warn(collapse_message(direction, kind, metrics[key], self.mcfg, self.tcfg))
        if self.is_main:
            self.best_effort("metrics.jsonl", lambda: _append_line(self.run_dir / "metrics.jsonl", json.dumps(metrics)))
        return metrics

    # -- samples, saving, resuming ------------------------------------------------------------

    def _fixed_batch(self, count: int = 4) -> dict[str, Tensor]:
        """A fixed set of centre crops from both domains, for comparable sample grids over time."""
        def take(source):
            out = []
            for i in range(min(count, len(source))):
                try:
                    image = source.load(i * max(1, len(source) // count))
                except Exception:  # noqa: BLE001 - a broken file is reported by the loader, not here
                    continue
                out.append(centre_crop(image, size=self.mcfg.image_size))
            return torch.stack(out) if out else None

        return {"a": take(self.source_a), "b": take(self.source_b)}

    def generator(self, name: str) -> torch.nn.Module:
        """The generator to translate with: the weight average when --ema is on, else the live one."""
        return self.ema[name].network if name in self.ema else getattr(self.model, name)

    def write_samples(self) -> None:
        if not self.is_main or not self.fixed:
            return
        from .visuals import sample_grid

        self.model.eval()
        try:
            with torch.no_grad(), autocast(self.device, self.amp_dtype):
                rows = []
                g_ab, g_ba = self.generator("g_ab"), self.generator("g_ba")
                for key, g, back in (("a", g_ab, g_ba), ("b", g_ba, g_ab)):
                    x = self.fixed.get(key)
                    if x is None:
                        continue
                    x = x.to(self.device)
                    out = g(x)
                    rec = back(out.image).image
                    rows.append((x, out.mask, out.content, out.image, rec))
        finally:
            self.model.train()
        self.best_effort("sample grids", lambda: sample_grid(rows, self.run_dir / "samples" / f"step-{self.step:07d}.png"))

    def training_state(self) -> dict[str, Any]:
        state = {
            "step": self.step,
            "d_a": self.model.d_a.state_dict(), "d_b": self.model.d_b.state_dict(),
            "d_a_attn": self.model.d_a_attn.state_dict(), "d_b_attn": self.model.d_b_attn.state_dict(),
            "opt_g": self.opt_g.state_dict(), "opt_d": self.opt_d.state_dict(),
            "sched_g": self.sched_g.state_dict(), "sched_d": self.sched_d.state_dict(),
            "pools": {k: p.state_dict() for k, p in self.pools.items()},
            "pool_rng": self.pool_gen.get_state(),
            "replay": {k: r.state_dict() for k, r in self.replay.items()},
            "torch_rng": torch.get_rng_state(),
            "scaler": self.scaler.state_dict(),  # empty unless fp16
            "best": None if self.best is None else {"step": self.best["step"], "quality": json_number(self.best["quality"]),
                                                    "tiebreak": json_number(self.best["tiebreak"])},
            "watch": {"low": self.watch.low, "high": self.watch.high, "warned": [list(w) for w in self.watch.warned]},
            "floor_done": self.floor_done or (self.floor_end is not None
                                              and self.step >= self.floor_end * self.schedule.total_steps),
            "floor_end": self.floor_end, "open_share": self.open_share.detach().cpu(),
            "open_updates": self.open_updates,
            "binary_on": self.binary_on or self.step >= BINARY_FROM * self.schedule.total_steps,
        }
        if self.ema:  # model.safetensors then holds the averages; the live generators are kept here
            state["live_g_ab"] = self.model.g_ab.state_dict()
            state["live_g_ba"] = self.model.g_ba.state_dict()
            state["ema_updates"] = {name: average.updates for name, average in self.ema.items()}
        if self.device.type == "cuda":
            state["cuda_rng"] = torch.cuda.get_rng_state(self.device)
        return state

    def save(self) -> Path | None:
        """Save the run folder (crash-safe, see checkpoint.py). A save that the disk refuses stops training
        with a TrainingError that says which checkpoint is kept; a save right after a skipped (NaN or Inf)
        update is postponed, so the kept checkpoint predates the trouble."""
        if not self.is_main:
            return None
        if self._in_streak:
            return None  # announced with the first skipped update
        self.choose_translate_guides()
        self._evaluate()
        try:
            save_run(self.run_dir, model_config=self.mcfg, g_ab=self.generator("g_ab"), g_ba=self.generator("g_ba"),
                     step=self.step,
                     domains=self.domains, train_config=self.tcfg.to_dict(), training_state=self.training_state(),
                     extra=self._extra())
        except CheckpointError as exc:
            raise TrainingError(f"{exc}. Training stopped. "
                                + self._what_is_kept("Free some disk space or fix the folder's permissions")) from None
        if self.last_eval is not None and self.last_eval is self.best and self.best["step"] == self.step:
            self._save_best()
        self.best_effort("the metrics plot and model card", self._write_extras)
        self.reporter.saved(self.step, self.run_dir)
        return self.run_dir

    def _evaluate(self) -> None:
        """Score the generators being saved on the held-out set (once per step), log it, track the best."""
        if self.evaluator is None or (self.last_eval is not None and self.last_eval["step"] == self.step):
            return
        with self.translating():
            score, _ = self.evaluator(self.generator("g_ab"), image_size=self.mcfg.image_size,
                                      device=self.device)
        values = {k: (round(v, 4) if isinstance(v, float) and math.isfinite(v) else v) for k, v in score.to_dict().items()}
        self.last_eval = {"step": self.step, "score": values, "quality": score.quality(), "tiebreak": score.tiebreak()}
        if better_save((score.quality(), score.tiebreak()),
                       None if self.best is None else (self.best["quality"], self.best["tiebreak"])):
            self.best = self.last_eval
        line = json.dumps({"step": self.step, "eval": {k: json_number(v) for k, v in values.items()}})
        self.best_effort("metrics.jsonl", lambda: _append_line(self.run_dir / "metrics.jsonl", line))

    def choose_translate_guides(self) -> None:
        """Pick the mask-guide radius each generator translates with, on SNAP_IMAGES training images of the
        domain it translates (:func:`~aggan_cli.networks.choose_translate_guide`): saved in config.json's
        ``translate`` section, which :func:`~aggan_cli.checkpoint.load_generators` applies. Deterministic
        (centre crops of fixed images, no random numbers drawn), so training goes on exactly as without it."""
        if not self.mcfg.mask_guide:
            self.translate_guide = None
            return
        if self.snap_images is None:
            self.snap_images = {k: (v.to(self.device) if v is not None else None)
                                for k, v in self._fixed_batch(SNAP_IMAGES).items()}
        chosen, agreement = {}, {}
        for direction, name, key in (("a2b", "g_ab", "a"), ("b2a", "g_ba", "b")):
            radius, agree = choose_translate_guide(self.generator(name), self.snap_images.get(key))
            chosen[direction] = radius
            agreement[direction] = {str(r): round(a, 4) for r, a in agree.items()}
        self.translate_guide = {"mask_guide": chosen, "agreement": agreement}

    @contextlib.contextmanager
    def translating(self) -> Iterator[None]:
        """Within: the generators translate with the radius the latest save picked (as ``aggan translate``
        will); the trained radius is back afterwards."""
        generators = {"a2b": self.generator("g_ab"), "b2a": self.generator("g_ba")}
        trained = {direction: g.mask_guide for direction, g in generators.items()}
        try:
            if self.translate_guide is not None:
                for direction, g in generators.items():
                    g.mask_guide = self.translate_guide["mask_guide"][direction]
            yield
        finally:
            for direction, g in generators.items():
                g.mask_guide = trained[direction]

    def _save_best(self) -> None:
        """Copy the save just made to RUN/best/ (weights and config only: a checkpoint to translate with)."""
        try:
            save_run(self.run_dir / "best", model_config=self.mcfg, g_ab=self.generator("g_ab"),
                     g_ba=self.generator("g_ba"), step=self.step, domains=self.domains,
                     train_config=self.tcfg.to_dict(), extra=self._extra())
        except CheckpointError as exc:
            raise TrainingError(f"{exc}. Training stopped. "
                                + self._what_is_kept("Free some disk space or fix the folder's permissions")) from None

    def _write_extras(self) -> None:
        from .modelcard import write_model_card
        from .visuals import plot_metrics

        if (self.run_dir / "metrics.jsonl").exists():
            plot_metrics(self.run_dir / "metrics.jsonl", self.run_dir / "metrics.png")
        samples = sorted((self.run_dir / "samples").glob("step-*.png"))
        write_model_card(self.run_dir, config=json.loads((self.run_dir / "config.json").read_text(encoding="utf-8")),
                         domains=self.domains, step=self.step,
                         sample_image=str(samples[-1]) if samples else None, command_hint=self.command)

    def _extra(self) -> dict[str, Any]:
        extra: dict[str, Any] = {"total_steps": self.schedule.total_steps}
        if self.demo_score is not None:
            extra["demo_score"] = self.demo_score
        if self.last_eval is not None:
            extra["eval"] = {k: json_number(v) for k, v in self.last_eval["score"].items()}
        if self.best is not None:
            extra["best"] = {"step": self.best["step"], "quality": json_number(self.best["quality"])}
        if self.translate_guide is not None:
            extra["translate"] = self.translate_guide
        return extra

    def _restore(self) -> None:
        ckpt = load_run(self.run_dir, need_state=True)  # the newest whole save, even one interrupted mid-move
        if ckpt.model_config != self.mcfg:
            raise CheckpointError(f"{self.run_dir} was trained with a different model ({ckpt.model_config}); "
                                  "resume with the same model options, or start a new run with --name")
        state_path = ckpt.state_path or self.run_dir / STATE_FILE
        state = load_training_state(state_path, expected_step=ckpt.step)
        self._restore_generators(ckpt, state, state_path)
        for name in ("d_a", "d_b", "d_a_attn", "d_b_attn"):
            try:
                getattr(self.model, name).load_state_dict(state[name])
            except (KeyError, RuntimeError) as exc:
                raise CheckpointError(f"{self.run_dir / STATE_FILE}: {name} does not match the model ({str(exc)[:150]})") from None
        self.opt_g.load_state_dict(state["opt_g"])
        self.opt_d.load_state_dict(state["opt_d"])
        self.sched_g.load_state_dict(state["sched_g"])
        self.sched_d.load_state_dict(state["sched_d"])
        for k, p in self.pools.items():
            p.load_state_dict(state["pools"][k], self.device)
        for k, r in self.replay.items():
            r.load_state_dict(state.get("replay", {}).get(k, {"images": []}), self.device)
        self.pool_gen.set_state(state["pool_rng"])
        torch.set_rng_state(state["torch_rng"])
        if state.get("scaler") and self.scaler.is_enabled():
            self.scaler.load_state_dict(state["scaler"])
        if "cuda_rng" in state and self.device.type == "cuda":
            torch.cuda.set_rng_state(state["cuda_rng"], self.device)
        if state.get("best"):
            quality, tiebreak = state["best"]["quality"], state["best"].get("tiebreak")  # no tiebreak in older saves
            self.best = {"step": int(state["best"]["step"]), "quality": float("nan" if quality is None else quality),
                         "tiebreak": float("nan" if tiebreak is None else tiebreak), "score": {}}
        watch = state.get("watch") or {}
        self.watch = MaskWatch(dict(watch.get("low", {})), dict(watch.get("high", {})),
                               {tuple(w) for w in watch.get("warned", [])})
        self.step = int(state["step"])
        total = self.schedule.total_steps
        if self.step > total:
            raise TrainingError(f"{self.run_dir} is already at step {self.step}, past the {total} steps asked for; "
                                f"to train it further, give a --steps (or --epochs) beyond step {self.step}")
        previous_total = int(ckpt.config.get("total_steps") or total)
        self.floor_done = bool(state.get("floor_done", self.step >= FLOOR_FADE[1] * previous_total))
        if "floor_end" in state:
            self.floor_end = state["floor_end"] if self.tcfg.lambda_floor else FLOOR_FADE[1]
            self.open_share = state["open_share"].to(self.device)
            self.open_updates = int(state["open_updates"])
        else:  # saved before the floor waited for the masks: its fixed schedule
            self.floor_end = FLOOR_FADE[1]
        self.binary_on = bool(state.get("binary_on", self.step >= BINARY_FROM * previous_total))
        if total != previous_total and self.step < total:
            kept = ["the attention floor, which had faded out, stays off"] if self.tcfg.lambda_floor and self.floor_done else []
            kept += ["the cycle loss, which had ramped in, stays at full weight"] if self.tcfg.cycle_ramp and self.floor_done else []
            kept += ["the identity loss, which had ramped in, stays at full weight"] if (
                self.tcfg.lambda_identity and self.tcfg.lambda_floor and self.floor_done) else []
            kept += ["the binarisation term, which had started, stays on"] if self.tcfg.lambda_binary and self.binary_on else []
            if kept:
                self.reporter.warn(f"extending the run from {previous_total} to {total} steps: {'; '.join(kept)}")
        # The scheduler's lambda reads the (possibly changed) total, and --lr may have been changed on resume:
        # recompute the base and current learning rates from this run's configuration (docs/training.md).
        old_lr = self.opt_g.param_groups[0]["lr"]
        for opt, sched in ((self.opt_g, self.sched_g), (self.opt_d, self.sched_d)):
            sched.base_lrs = [self.tcfg.lr for _ in opt.param_groups]
            for group in opt.param_groups:
                group["initial_lr"] = self.tcfg.lr
                group["lr"] = self.tcfg.lr * self.schedule.lr_factor(self.step)
        new_lr = self.opt_g.param_groups[0]["lr"]
        if total != previous_total and not math.isclose(new_lr, old_lr):
            self.reporter.warn(f"extending the run from {previous_total} to {total} steps: the learning-rate "
                               f"schedule is that of a {total}-step run, so at step {self.step} the rate goes from "
                               f"{old_lr:.3g} to {new_lr:.3g}")
        if self.is_main:
            _drop_metrics_after(self.run_dir / "metrics.jsonl", self.step)

    def _restore_generators(self, ckpt, state: dict[str, Any], state_path: Path) -> None:
        """The live generators, and their averages under --ema. A run saved with --ema keeps its live
        weights in the training state and the averages in model.safetensors; one saved without keeps
        the live weights in model.safetensors. Resuming may switch: without --ema the live weights go
        on (the average is dropped); with --ema on a run that had none, the average starts from them."""
        for name in ("g_ab", "g_ba"):
            live = getattr(self.model, name)
            saved_live = state.get(f"live_{name}")
            if saved_live is None:
                load_state_dict_strict(live, ckpt.generators, name, ckpt.weights_path)
            else:
                load_state_dict_strict(live, {f"{name}.{k}": v for k, v in saved_live.items()}, name, state_path)
            if name not in self.ema:
                continue
            if saved_live is None:
                self.ema[name].reset(live)
            else:
                load_state_dict_strict(self.ema[name].network, ckpt.generators, name, ckpt.weights_path)
                # the updates it has averaged; a state saved before they were counted has averaged since step 0
                self.ema[name].updates = int(state.get("ema_updates", {}).get(name, state["step"]))
        saved_with_ema = "live_g_ab" in state
        if saved_with_ema and not self.ema:
            self.reporter.warn(f"{self.run_dir} was trained with --ema; resuming without it, training goes on from "
                               "the live weights, and checkpoints now hold them instead of the average")
        elif self.ema and not saved_with_ema:
            self.reporter.warn(f"{self.run_dir} was trained without --ema; the weight average starts now, from the "
                               f"weights of step {int(state['step'])}")


def _unwrap_loss(module):
    return getattr(module, "module", module)


def _append_line(path: Path, line: str) -> None:
    with open(path, "a", encoding="utf-8") as f:
        f.write(line + "\n")


def _drop_metrics_after(path: Path, step: int) -> None:
    """A resumed run logs again from its checkpoint's step: drop the lines a stopped run wrote after it."""
    if not path.exists():
        return
    kept = []
    for line in path.read_text(encoding="utf-8").splitlines():
        try:
            row = json.loads(line)
        except json.JSONDecodeError:  # a line cut short by a kill
            continue
        if isinstance(row, dict) and row.get("step", 0) <= step:
            kept.append(line + "\n")
    atomic_write_text(path, "".join(kept))


def default_channels_last(device: torch.device) -> bool:
    """The training memory layout when TrainConfig.channels_last is unset: NHWC on CUDA, where cuDNN's
    fastest (tensor-core) convolutions want it; NCHW on the CPU, where NHWC training measured 10-15 %
    slower (docs/performance.md). ``--channels-last/--no-channels-last`` overrides it."""
    return device.type == "cuda"


def fused_adam_supported(device: torch.device) -> bool:
    """Fused Adam updates every parameter in one kernel: CUDA, and the CPU from torch 2.4, where it
    measured 2.5-7× faster than the per-parameter loop (docs/performance.md)."""
    if device.type == "cuda":
        return True
    major, minor = (int(part) for part in torch.__version__.split(".")[:2])
    return device.type == "cpu" and (major, minor) >= (2, 4)


def usable_cores() -> int:
    """CPU cores this process may run on (its affinity mask, where the platform has one)."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)


def default_workers() -> int:
    """Data-loading processes: leave the compute threads their cores (CPU) but keep a GPU fed."""
    cores = usable_cores()
    if torch.cuda.is_available():
        return min(8, max(1, cores // 2))
    return 0 if cores <= 2 else min(4, cores // 4)


def is_out_of_memory(exc: BaseException) -> bool:
    """torch's out-of-memory errors: CUDA's and MPS's (``torch.OutOfMemoryError``), the CPU allocator's
    RuntimeError, and Python's MemoryError (image decoding, numpy; re-raised from a data-loading worker
    as a RuntimeError that names it)."""
    if isinstance(exc, MemoryError) or type(exc).__name__ == "OutOfMemoryError":
        return True
    text = str(exc)
    signs = ("DefaultCPUAllocator", "Caught MemoryError", "out of memory", "Out of memory")
    return any(sign in text for sign in signs)


def out_of_memory_message(exc: BaseException, doing: str, device: torch.device, amp_dtype: torch.dtype | None,
                          mcfg: ModelConfig, tcfg: TrainConfig) -> str:
    """One line: what ran out, how big the request was, and which options make the next try smaller."""
    text = str(exc)
    found = re.search(r"[Tt]ried to allocate ([\d.]+ ?[KMGT]?i?B)", text)  # CUDA and MPS
    cpu = re.search(r"allocate (\d+) bytes", text)  # the CPU allocator
    if found:
        request = found.group(1)
    elif cpu:
        size = int(cpu.group(1))
        request = f"{size / 2 ** 30:.2f} GiB" if size >= 2 ** 30 else f"{size / 2 ** 20:.1f} MiB"
    else:
        request = "more memory"
    lower = (["--batch-size"] if tcfg.batch_size > 1 else []) + ["--size", "--ngf", "--n-blocks"]
    if device.type == "cuda" and amp_dtype is None:
        lower.append("the precision (--precision bf16 halves activations)")
    return (f"out of memory on {describe_device(device)} while {doing}: a request for {request} could not be met "
            f"(size {mcfg.image_size}, batch size {tcfg.batch_size}, ngf {mcfg.ngf}, {mcfg.n_blocks} blocks, "
            f"ndf {mcfg.ndf}); lower {', '.join(lower[:-1])} or {lower[-1]}")
