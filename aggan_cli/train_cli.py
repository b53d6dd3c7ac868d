"""``aggan train``: resolve options (defaults < demo preset < TOML file < command line), set up the run
folder, draw progress, handle Ctrl-C/SIGTERM, and print the summary (and the demo's self-score)."""

from __future__ import annotations

import contextlib
import os
import shlex
import signal
import sys
import time
from pathlib import Path
from typing import Any

from .config import ModelConfig, TrainConfig, load_toml
from .errors import ConfigError, TrainingError

MODEL_KEYS = {"ngf", "n_blocks", "norm", "discriminator", "ndf", "size"}
CLI_ONLY = {"resume", "config", "quiet", "paper", "threads"}  # threads: this machine's, not the run's

# `--paper`: the configuration of the paper (§III), one option away from our defaults.
PAPER_PRESET: dict[str, Any] = {"discriminator": "global", "norm": "batch", "lambda_floor": 0.0,
                                "identity_negatives": False}

# The demo preset: small enough for a 2-core CPU in under five minutes (docs/training.md has the
# measurements); every value can still be overridden on the command line.
DEMO_PRESET: dict[str, Any] = {
    "size": 48,
    "ngf": 16,
    "n_blocks": 4,
    "ndf": 32,
    "steps": 800,
    "batch_size": 4,
    "lambda_pixel": 2.0,  # the demo's twins change only the mouth: a firmer "leave the rest alone"
    "ema": 0.99,  # save the generators' weight average: damps the save-to-save swing of a short GAN run
    "save_every": 200,
    "sample_every": 100,
    "log_every": 20,
    "workers": 0,
}
DEMO_TRAIN_IMAGES = 5000  # faces per domain drawn on the fly; more than the run ever sees twice
DEMO_TEST_IMAGES = 64
DEMO_TEST_SEED_OFFSET = 1000  # the test split uses other faces than training


def resolve_options(values: dict[str, Any], given: set[str]) -> dict[str, Any]:
    """Merge the option sources: Typer's defaults < the demo preset < ``--config`` TOML < the command line."""
    merged = {k: v for k, v in values.items() if k not in CLI_ONLY}
    if values.get("demo"):
        merged.update(DEMO_PRESET)
    if values.get("paper"):
        merged.update(PAPER_PRESET)
    if values.get("config") is not None:
        file_values = load_toml(values["config"])
        if "image_size" in file_values:
            file_values["size"] = file_values.pop("image_size")
        unknown = sorted(set(file_values) - set(merged) - {"load_size", "flip", "pool_size", "beta1", "beta2"})
        if unknown:
            raise ConfigError(f"{values['config']}: unknown option(s) {', '.join(unknown)}")
        merged.update(file_values)
    merged.update({k: values[k] for k in given if k not in CLI_ONLY})
    if "epochs" in given and "steps" not in given:
        merged["steps"] = None  # --epochs on the command line beats a preset's or file's step count
    if "steps" in given and "epochs" not in given:
        merged["epochs"] = None
    return merged


def build_configs(options: dict[str, Any]) -> tuple[ModelConfig, TrainConfig]:
    model = ModelConfig(ngf=options["ngf"], n_blocks=options["n_blocks"], norm=options["norm"],
                        discriminator=options["discriminator"], ndf=options["ndf"], image_size=options["size"])
    train_fields = {k: v for k, v in options.items() if k not in MODEL_KEYS}
    for key in ("domain_a", "domain_b", "runs_dir"):
        if train_fields.get(key) is not None:
            train_fields[key] = str(train_fields[key])
    train_fields["name"] = train_fields.get("name") or ""
    train_fields["domain_a"] = train_fields.get("domain_a") or ""
    train_fields["domain_b"] = train_fields.get("domain_b") or ""
    return model, TrainConfig(**train_fields)


def run_train_command(values: dict[str, Any], given: set[str]) -> None:
    from rich.console import Console

    console = Console(stderr=True, highlight=False)
    options = resolve_options(values, given)
    demo = bool(options.get("demo"))
    if demo and (values.get("domain_a") or values.get("domain_b")):
        raise ConfigError("--demo trains on built-in data: give no DOMAIN_A/DOMAIN_B folders with it")
    runs_dir = Path(options.get("runs_dir") or "runs")
    name = options.get("name") or ("demo" if demo else _default_name(options))
    if name in (".", "..") or "/" in name or "\\" in name or name != name.strip():
        raise ConfigError(f"--name must be a plain folder name, not {name!r}: it names the run's folder under "
                          "--runs-dir, and `aggan translate --ckpt NAME` reads a NAME with a slash as a Hub ORG/REPO")
    run_dir = runs_dir / name
    resume = bool(values.get("resume"))

    from .checkpoint import has_checkpoint

    if resume:
        options = _options_for_resume(run_dir, options, given)
        demo = bool(options.get("demo"))
    else:
        build_configs({**options, "name": name})  # bad option values are reported before anything else
    if not resume and has_checkpoint(run_dir):
        raise TrainingError(f"a run named {name!r} already exists in {run_dir}; continue it with --resume, "
                            "or start a new one with --name NEW_NAME")
    if not demo and not (options.get("domain_a") and options.get("domain_b")):
        raise ConfigError("give two image folders, DOMAIN_A and DOMAIN_B (e.g. aggan train ./neutral ./smile), "
                          "or --demo to train on the built-in data")
    options["name"] = name
    model_config, train_config = build_configs(options)

    from .data import DemoSource, open_domain
    from .dist import distributed_context

    with distributed_context(train_config.device) as dist, contextlib.ExitStack() as held:
        if demo:
            count = DEMO_TRAIN_IMAGES
            source_a = DemoSource("a", seed=train_config.seed, size=model_config.image_size, count=count)
            source_b = DemoSource("b", seed=train_config.seed, size=model_config.image_size, count=count)
            train_config = train_config.replace(load_size=train_config.load_size or model_config.image_size)
        else:
            need = train_config.batch_size
            source_a = open_domain(train_config.domain_a, "DOMAIN_A", minimum=need)
            source_b = open_domain(train_config.domain_b, "DOMAIN_B", minimum=need)
            if dist.is_main:
                _warn_skipped(console, [*source_a.skipped, *source_b.skipped])
        if dist.is_main:
            _hold_run_lock(held, run_dir, console)  # one writer per run folder; released on exit

        from .device import use_threads
        from .trainer import NullReporter, Trainer

        use_threads(values.get("threads"))  # follows the machine's load between steps (device.py)
        # under torchrun only rank 0 talks: N copies of every line would say nothing more
        reporter = RichReporter(console, quiet=bool(values.get("quiet"))) if dist.is_main else NullReporter()
        trainer = Trainer(model_config, train_config, source_a, source_b, run_dir=run_dir, reporter=reporter,
                          resume=resume, rank=dist.rank, world=dist.world, device=dist.device,
                          command=_command_line())
        stop = _StopFlag()
        with stop.installed(), reporter if dist.is_main else contextlib.nullcontext():
            result = trainer.fit(should_stop=stop.is_set)
        if os.environ.get("AGGAN_DEBUG_DIGEST") == "1":
            _write_digest(trainer, dist.rank)
        if not dist.is_main:
            return
        _summary(console, trainer, result, stop, runs_dir, name, demo)
        if demo and not stop.is_set():
            _score_demo(console, trainer)


def _write_digest(trainer, rank: int) -> None:
    """Debugging DDP (AGGAN_DEBUG_DIGEST=1): each rank writes RUN/digest-rank<N>.json with digests of its
    generator and discriminator weights; equal digests on every rank mean the replicas stayed in step."""
    import json

    from .checkpoint import atomic_write_text
    from .dist import state_digest

    model = trainer.model
    generators = {f"{n}.{k}": v for n in ("g_ab", "g_ba") for k, v in getattr(model, n).state_dict().items()}
    discriminators = {f"{n}.{k}": v for n in ("d_a", "d_b", "d_a_attn", "d_b_attn")
                      for k, v in getattr(model, n).state_dict().items()}
    atomic_write_text(trainer.run_dir / f"digest-rank{rank}.json",
                      json.dumps({"rank": rank, "step": trainer.step, "generators": state_digest(generators),
                                  "discriminators": state_digest(discriminators)}))


def _default_name(options: dict[str, Any]) -> str:
    b = options.get("domain_b")
    if not b:
        raise ConfigError("give two image folders, DOMAIN_A and DOMAIN_B, or --demo")
    return Path(b).resolve().name or "run"


def _options_for_resume(run_dir: Path, options: dict[str, Any], given: set[str]) -> dict[str, Any]:
    """A resumed run keeps its saved configuration; only options given now (e.g. a larger --steps) change it."""
    from .checkpoint import find_save, has_checkpoint

    if not has_checkpoint(run_dir):
        raise TrainingError(f"nothing to resume: {run_dir} has no checkpoint; drop --resume to start the run")
    saved = find_save(run_dir, need_state=True).config  # the newest whole save, even one interrupted mid-move
    merged = dict(saved.get("train") or {})
    merged.pop("extra", None)
    model = saved.get("model") or {}
    merged.update({"ngf": model.get("ngf"), "n_blocks": model.get("n_blocks"), "norm": model.get("norm"),
                   "discriminator": model.get("discriminator"), "ndf": model.get("ndf"), "size": model.get("image_size")})
    changed_model = sorted(k for k in given & MODEL_KEYS if options[k] != merged.get(k))
    if changed_model:
        raise ConfigError(f"--resume keeps the run's model; {', '.join('--' + k.replace('_', '-') for k in changed_model)} "
                          "cannot change. Start a new run with --name to change the architecture")
    for key in given - CLI_ONLY - MODEL_KEYS:
        merged[key] = options[key]
    if "epochs" in given:
        merged["steps"] = None
    if "steps" in given:
        merged["epochs"] = None
    return merged


def _warn_skipped(console, skipped: list[tuple[Path, str]], shown: int = 10) -> None:
    """Name the files that were left out because they cannot be opened as images."""
    from rich.markup import escape

    for _, reason in skipped[:shown]:
        console.print(f"[yellow]warning:[/] skipped {escape(reason)}", soft_wrap=True)
    if len(skipped) > shown:
        console.print(f"[yellow]warning:[/] skipped {len(skipped) - shown} more unreadable file(s)")


def _hold_run_lock(stack: contextlib.ExitStack, run_dir: Path, console) -> None:
    """Lock ``run_dir`` for the rest of the command; a lock left by a killed run is taken over."""
    from rich.markup import escape

    from .lock import RunLock

    lock = stack.enter_context(RunLock(run_dir, command=_command_line()))
    if lock.stale is not None:
        console.print(f"[yellow]warning:[/] the previous training of {escape(str(run_dir))} "
                      f"({escape(lock.stale.describe())}) ended without a clean exit; taking over its lock",
                      soft_wrap=True)


def _command_line() -> str:
    return "aggan " + " ".join(shlex.quote(a) for a in sys.argv[1:])


class _StopFlag:
    """Ctrl-C or SIGTERM: finish the current step, save, and exit cleanly. A second Ctrl-C stops at once."""

    def __init__(self) -> None:
        self.reason: str | None = None

    def is_set(self) -> bool:
        return self.reason is not None

    def _handle(self, signum, frame) -> None:
        if self.reason is not None and signum == signal.SIGINT:
            raise KeyboardInterrupt
        self.reason = signal.Signals(signum).name

    def installed(self):
        import contextlib

        @contextlib.contextmanager
        def scope():
            previous = {}
            for sig in (signal.SIGINT, signal.SIGTERM):
                try:
                    previous[sig] = signal.signal(sig, self._handle)
                except ValueError:  # not the main thread (e.g. inside a test runner thread)
                    pass
            try:
                yield
            finally:
                for sig, handler in previous.items():
                    signal.signal(sig, handler)

        return scope()


class RichReporter:
    """Progress bar and warnings on stderr; nothing on stdout."""

    def __init__(self, console, *, quiet: bool) -> None:
        self.console, self.quiet = console, quiet
        self.progress = None
        self.task = None
        self.last: dict[str, float] = {}

    def __enter__(self):
        return self

    def __exit__(self, *exc) -> None:
        if self.progress is not None:
            self.progress.stop()
            self.progress = None

    def start(self, info: dict[str, Any]) -> None:
        a, b = info["domains"]
        where = f"{info['device']}, {info['precision']}" + (f", {info['world']} processes" if info["world"] > 1 else "")
        self.console.print(f"[bold]aggan train[/] {a} → {b} ({info['sizes'][0]} / {info['sizes'][1]} images) on {where}; "
                           f"run folder {info['run_dir']}")
        if info["start_step"]:
            self.console.print(f"resuming at step {info['start_step']} of {info['total_steps']}")
        if self.quiet:
            return
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

        self.progress = Progress(
            BarColumn(bar_width=24), MofNCompleteColumn(), TimeElapsedColumn(), TextColumn("eta"),
            TimeRemainingColumn(), TextColumn("{task.fields[stats]}"), console=self.console, transient=False,
        )
        self.progress.start()
        self.task = self.progress.add_task("train", total=info["end_step"], completed=info["start_step"], stats="")

    def advance(self, step: int, metrics: dict[str, float] | None) -> None:
        if metrics:
            self.last = metrics
        if self.progress is None:
            return
        stats = ""
        if self.last:
            m = self.last
            stats = (f"{m['images_per_s']:.1f} img/s G {m['g_total']:.2f} D {m['d_total']:.2f} "
                     f"mask {m['mask_ab_mean']:.2f}/{m['mask_ba_mean']:.2f}")
        self.progress.update(self.task, completed=step, stats=stats)

    def warn(self, message: str) -> None:
        from rich.markup import escape

        self.console.print(f"[yellow]warning:[/] {escape(message)}", soft_wrap=True)

    def saved(self, step: int, path: Path) -> None:
        pass


def _summary(console, trainer, result, stop, runs_dir: Path, name: str, demo: bool) -> None:
    minutes, seconds = divmod(int(result["seconds"]), 60)
    done = result["step"] >= result["total_steps"]
    ckpt = name if runs_dir == Path("runs") or str(runs_dir) == os.environ.get("AGGAN_RUNS_DIR") else str(runs_dir / name)
    console.print(f"[bold green]{'done' if done else 'stopped'}[/]: {result['steps']} steps in {minutes}m{seconds:02d}s "
                  f"(step {result['step']} of {result['total_steps']}); run folder {trainer.run_dir}")
    if stop.is_set():
        console.print(f"saved at step {result['step']} ({stop.reason}); continue with: "
                      f"aggan train {'--demo ' if demo else ''}--name {shlex.quote(name)} --resume"
                      + (f" --runs-dir {shlex.quote(str(runs_dir))}" if runs_dir != Path("runs") else ""))
    console.print(f"translate with: aggan translate photo.jpg --ckpt {shlex.quote(ckpt)}")
    print(trainer.run_dir)  # the one result on stdout, for scripts


def _score_demo(console, trainer) -> None:
    from rich.table import Table

    from .demo import score

    started = time.perf_counter()
    result = score(trainer.generator("g_ab"), seed=trainer.tcfg.seed + DEMO_TEST_SEED_OFFSET, size=trainer.mcfg.image_size,
                   count=DEMO_TEST_IMAGES, device=trainer.device, out_dir=trainer.run_dir / "demo-eval")
    trainer.record_demo_score(result.to_dict())
    passed = result.passed()
    table = Table(title=f"demo self-score on {result.count} held-out faces ({time.perf_counter() - started:.1f} s)")
    for column in ("measure", "aggan", "identity (output = input)", "target", ""):
        table.add_column(column)
    ok = lambda flag: "[green]✓[/]" if flag else "[red]✗[/]"  # noqa: E731
    table.add_row("attention-mask AUC vs true change region", f"{result.mask_auc:.3f}", "—", "≥ 0.90", ok(passed["mask_auc"]))
    table.add_row("background PSNR (output vs input, outside)", f"{result.background_psnr:.1f} dB", "∞", "≥ 35 dB",
                  ok(passed["background_psnr"]))
    table.add_row("foreground PSNR (output vs true twin, inside)", f"{result.foreground_psnr:.1f} dB",
                  f"{result.identity_foreground_psnr:.1f} dB", "≥ identity + 3 dB", ok(passed["foreground_gain"]))
    console.print(table)
    console.print(f"test images, outputs and masks: {trainer.run_dir / 'demo-eval'}")
