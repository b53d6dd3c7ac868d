"""``aggan train``: resolve the options (defaults < demo preset < ``--paper`` < TOML file < command line),
check them, set up the run folder, draw progress, handle Ctrl-C/SIGTERM, and print the summary (and the
demo's self-score).

Options are the fields of config.ModelConfig and config.TrainConfig, by field name, wherever they come
from; each value is checked with its field's rules, and a refusal names where the value came from
(``--size``, ``train.toml: size``, ``runs/x/config.json: model.image_size``).
"""

from __future__ import annotations

import contextlib
import os
import shlex
import signal
import sys
import time
from pathlib import Path
from typing import Any

from .config import DEMO_TASKS, ModelConfig, TrainConfig, all_fields, checked, config_fields, load_toml
from .errors import ConfigError, TrainingError

# `--paper`: the configuration of the paper (§III), one option away from our defaults.
PAPER_PRESET: dict[str, Any] = {"discriminator": "global", "norm": "batch", "gan_loss": "vanilla",
                                "lambda_floor": 0.0, "identity_negatives": False, "mask_guide": 0,
                                "cycle_ramp": False, "own_pairs": False, "lambda_binary": 0.0,
                                "lambda_identity": 0.0, "cycle_free_below": 0.0, "upsample": "transposed"}

# The demo preset: small enough for a 2-core CPU in under five minutes (docs/training.md has the
# measurements); every value can still be overridden on the command line.
DEMO_PRESET: dict[str, Any] = {
    "image_size": 48,
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
DATA_KEYS = ("domain_a", "domain_b", "demo")  # what a run trains on; --resume keeps it unless --data-changed


def resolve_options(values: dict[str, Any], given: set[str]) -> tuple[dict[str, Any], set[str]]:
    """Merge the option sources: the fields' defaults < the demo preset < ``--paper`` < ``--config`` TOML <
    the command line. Returns the options by field name and the names the user set explicitly
    (on the command line, in the file, or with ``--paper``)."""
    fields = {f.name: f for f in all_fields()}
    command_line = {name: checked(fields[name], _plain(values[name]), fields[name].flag)
                    for name in sorted(given & fields.keys())}
    from_file = load_toml(values["config"]) if values.get("config") is not None else {}
    options = {f.name: f.default for f in fields.values()}
    paper = PAPER_PRESET if values.get("paper") else {}
    demo = command_line.get("demo", from_file.get("demo"))
    for layer in (DEMO_PRESET if demo else {}, paper, from_file, command_line):
        _apply(options, layer)
    return options, {*paper, *from_file, *command_line}


def _plain(value: Any) -> Any:
    return str(value) if isinstance(value, Path) else value


def _apply(options: dict[str, Any], layer: dict[str, Any]) -> None:
    """``options.update(layer)``, where a layer that sets only one of --epochs and --steps unsets the other."""
    options.update(layer)
    for one, other in (("epochs", "steps"), ("steps", "epochs")):
        if layer.get(one) is not None and other not in layer:
            options[other] = None


def build_configs(options: dict[str, Any]) -> tuple[ModelConfig, TrainConfig]:
    """The two configuration objects from options by field name (checked again on construction)."""
    model = ModelConfig(**{f.name: options[f.name] for f in config_fields(ModelConfig)})
    return model, TrainConfig(**{f.name: options[f.name] for f in config_fields(TrainConfig)})


def run_train_command(values: dict[str, Any], given: set[str]) -> None:
    from rich.console import Console

    console = Console(stderr=True, highlight=False)
    options, explicit = resolve_options(values, given)
    folders = bool(values.get("domain_a") or values.get("domain_b"))
    if options["demo"] and folders:
        raise ConfigError("--demo trains on built-in data: give no DOMAIN_A/DOMAIN_B folders with it")
    resume = bool(values.get("resume"))
    if resume and not (options["name"] or options["demo"] or options["domain_b"]):
        raise ConfigError("--resume continues a run: give its --name (the folder under --runs-dir)")
    runs_dir = Path(options["runs_dir"])
    options["name"] = name = options["name"] or _default_name(options)
    check_run_name(name, runs_dir)
    run_dir = runs_dir / name

    from .checkpoint import has_checkpoint

    if resume:
        options = _options_for_resume(run_dir, options, explicit, console,
                                      data_changed=bool(values.get("data_changed")))
    else:
        build_configs(options)  # bad option values are reported before anything else
    if not resume and has_checkpoint(run_dir):
        raise TrainingError(f"a run named {name!r} already exists in {run_dir}; continue it with --resume, "
                            "or start a new one with --name NEW_NAME")
    if not options["demo"] and not (options["domain_a"] and options["domain_b"]):
        raise ConfigError("give two image folders, DOMAIN_A and DOMAIN_B (e.g. aggan train ./neutral ./smile), "
                          "or --demo to train on the built-in data")
    model_config, train_config = build_configs(options)
    demo = train_config.demo is not None

    from .data import DemoSource, open_domain
    from .dist import distributed_context

    with distributed_context(train_config.device) as dist, contextlib.ExitStack() as held:
        evaluator = None
        if demo:
            from .scoring import Evaluator
            from .tasks import TaskSource

            count, task, size = DEMO_TRAIN_IMAGES, train_config.demo, model_config.image_size
            if task == "faces":  # the original demo's faces, drawn exactly as before
                source_a = DemoSource("a", seed=train_config.seed, size=size, count=count)
                source_b = DemoSource("b", seed=train_config.seed, size=size, count=count)
            else:
                source_a = TaskSource(task, "a", seed=train_config.seed, size=size, count=count)
                source_b = TaskSource(task, "b", seed=train_config.seed, size=size, count=count)
                source_a.load(0)  # a -photo task without scikit-image says so now, in one line
            # the held-out split scored at every save (metrics.jsonl) and after training; RUN/best/ keeps the best
            evaluator = Evaluator.from_task(task, seed=train_config.seed + DEMO_TEST_SEED_OFFSET, size=size,
                                            count=DEMO_TEST_IMAGES)
            train_config = train_config.replace(load_size=train_config.load_size or model_config.image_size)
        else:
            need = train_config.batch_size
            source_a = open_domain(train_config.domain_a, "DOMAIN_A", minimum=need)
            source_b = open_domain(train_config.domain_b, "DOMAIN_B", minimum=need)
            if dist.is_main:
                _warn_skipped(console, [*source_a.skipped, *source_b.skipped])
                _warn_about_folders(console, train_config)
        if train_config.eval_dir:  # read (and checked) now, not at the first save
            from .scoring import Evaluator  # noqa: F811

            evaluator = Evaluator.from_folder(train_config.eval_dir)
        if dist.is_main:
            _hold_run_lock(held, run_dir, console)  # one writer per run folder; released on exit

        from .device import use_threads
        from .trainer import NullReporter, Trainer

        use_threads(values.get("threads"))  # follows the machine's load between steps (device.py)
        # under torchrun only rank 0 talks: N copies of every line would say nothing more
        reporter = RichReporter(console, quiet=bool(values.get("quiet"))) if dist.is_main else NullReporter()
        trainer = Trainer(model_config, train_config, source_a, source_b, run_dir=run_dir, reporter=reporter,
                          resume=resume, rank=dist.rank, world=dist.world, device=dist.device,
                          command=_command_line(), evaluator=evaluator if dist.is_main else None)
        stop = _StopFlag()
        with stop.installed(), reporter if dist.is_main else contextlib.nullcontext():
            result = trainer.fit(should_stop=stop.is_set)
        if os.environ.get("AGGAN_DEBUG_DIGEST") == "1":
            _write_digest(trainer, dist.rank)
        if not dist.is_main:
            return
        _summary(console, trainer, result, stop, runs_dir, name, demo)
        if demo and not stop.is_set():
            if train_config.demo == "faces":
                _score_demo(console, trainer)
            else:
                _score_task(console, trainer, evaluator)


def check_run_name(name: str, runs_dir: Path) -> None:
    """A run name is one plain folder name that the file system can hold."""
    if name in (".", "..") or "/" in name or "\\" in name or name != name.strip() or not name.isprintable():
        raise ConfigError(f"--name must be a plain folder name, not {name!r}: it names the run's folder under "
                          "--runs-dir, and `aggan translate --ckpt NAME` reads a NAME with a slash as a Hub ORG/REPO")
    limit = _name_max(runs_dir)
    if len(os.fsencode(name)) > limit:
        raise ConfigError(f"--name is {len(os.fsencode(name))} bytes long, but the file system of {runs_dir} allows "
                          f"at most {limit} for a folder name; choose a shorter --name")


def _name_max(folder: Path) -> int:
    """The longest file name (in bytes) the file system under ``folder`` allows (255 on common ones)."""
    for candidate in (folder.absolute(), *folder.absolute().parents):
        try:
            return os.pathconf(candidate, "PC_NAME_MAX")
        except (OSError, ValueError, AttributeError):  # missing folder, or no pathconf (Windows)
            continue
    return 255


def _write_digest(trainer, rank: int) -> None:
    """Debugging DDP (AGGAN_DEBUG_DIGEST=1): each rank writes RUN/digest-rank<N>.json with digests of its
    generator and discriminator weights; equal digests on every rank mean the replicas stayed in step."""
    import json

    import torch.distributed

    from .checkpoint import atomic_write_text
    from .dist import state_digest

    if torch.distributed.is_available() and torch.distributed.is_initialized():
        # rank 0's last save sweeps the run folder's stray temporary files, a digest's half-written one
        # included (seen under load): write only once every rank, rank 0 too, is past its last save
        torch.distributed.barrier()
    model = trainer.model
    generators = {f"{n}.{k}": v for n in ("g_ab", "g_ba") for k, v in getattr(model, n).state_dict().items()}
    discriminators = {f"{n}.{k}": v for n in ("d_a", "d_b", "d_a_attn", "d_b_attn")
                      for k, v in getattr(model, n).state_dict().items()}
    atomic_write_text(trainer.run_dir / f"digest-rank{rank}.json",
                      json.dumps({"rank": rank, "step": trainer.step, "generators": state_digest(generators),
                                  "discriminators": state_digest(discriminators)}))


def _default_name(options: dict[str, Any]) -> str:
    """DOMAIN_B's folder name; "demo" for the demo faces, "demo-TASK" for another built-in task."""
    if options.get("demo"):
        return "demo" if options["demo"] == DEMO_TASKS[0] else f"demo-{options['demo']}"
    b = options.get("domain_b")
    if not b:
        raise ConfigError("give two image folders, DOMAIN_A and DOMAIN_B, or --demo")
    return Path(b).resolve().name or "run"


def _options_for_resume(run_dir: Path, options: dict[str, Any], explicit: set[str], console, *,
                        data_changed: bool) -> dict[str, Any]:
    """A resumed run keeps its saved configuration; only options set now (e.g. a larger --steps) change it.
    The model cannot change, and the data only with ``--data-changed``."""
    from .checkpoint import find_save, has_checkpoint
    from .config import saved_options

    if not has_checkpoint(run_dir):
        raise TrainingError(f"nothing to resume: {run_dir} has no checkpoint; drop --resume to start the run")
    found = find_save(run_dir, need_state=True)  # the newest whole save, even one interrupted mid-move
    saved, ignored = saved_options(found.config, found.config_path)
    if ignored:
        warn(console, f"{found.config_path}: ignoring {', '.join(ignored)}, written by a newer aggan")
    changed_model = [f.flag for f in config_fields(ModelConfig)
                     if f.name in explicit and options[f.name] != saved[f.name]]
    if changed_model:
        raise ConfigError(f"--resume keeps the run's model; {', '.join(changed_model)} cannot change. Start a new run "
                          "with --name to change the architecture")
    data_given = explicit & set(DATA_KEYS)
    if bool(options["domain_a"]) != bool(options["domain_b"]):
        raise ConfigError("with --resume, give both DOMAIN_A and DOMAIN_B, or neither (the run keeps its folders)")
    if data_given and not data_changed:
        now, before = _data_description(options, None), _data_description(saved, found.config.get("domains"))
        if now != before:
            raise ConfigError(f"{run_dir} was trained on {before}, not {now}; resume without DOMAIN_A/DOMAIN_B and "
                              "--demo to keep its data, or add --data-changed to go on with the new data")
    merged = {f.name: f.default for f in all_fields()} | saved
    _apply(merged, {key: options[key] for key in explicit})
    if data_given:
        merged.update({key: options[key] for key in DATA_KEYS})  # the new data replace the old, all of them
    return merged


def _data_description(options: dict[str, Any], domains: Any) -> str:
    """What a run trains on, in words: "the demo faces", or "neutral → smile" (DOMAIN_A's and DOMAIN_B's
    folder names, as config.json records them under ``domains``)."""
    if options.get("demo"):
        return f"the demo {options['demo']}"
    if isinstance(domains, dict) and domains.get("a") is not None:
        return f"{domains.get('a')} → {domains.get('b')}"
    names = (Path(options[key]).name or str(options[key]) for key in ("domain_a", "domain_b"))
    return " → ".join(names)


def warn(console, message: str) -> None:
    """One yellow ``warning:`` line on stderr (rich markup in the message is shown as it is)."""
    from rich.markup import escape

    console.print(f"[yellow]warning:[/] {escape(message)}", soft_wrap=True)


def _warn_skipped(console, skipped: list[tuple[Path, str]], shown: int = 10) -> None:
    """Name the files that were left out because they cannot be opened as images."""
    for _, reason in skipped[:shown]:
        warn(console, f"skipped {reason}")
    if len(skipped) > shown:
        warn(console, f"skipped {len(skipped) - shown} more unreadable file(s)")


def _warn_about_folders(console, train_config: TrainConfig) -> None:
    """Legal but most likely a mistake: both domains in one folder, or run folders inside a domain's (the
    next run would train on this run's sample grids)."""
    a, b = (Path(train_config.domain_a).resolve(), Path(train_config.domain_b).resolve())
    runs = Path(train_config.runs_dir).resolve()
    if a == b:
        warn(console, f"DOMAIN_A and DOMAIN_B are the same folder ({a}): the model can only learn to change "
                      "nothing; give one folder per domain")
    for label, folder in (("DOMAIN_A", a), ("DOMAIN_B", b)):
        if runs == folder or folder in runs.parents:
            warn(console, f"--runs-dir {train_config.runs_dir} lies inside {label} ({folder}): a later run on that "
                          "folder would train on this run's sample grids; keep run folders elsewhere")


def _hold_run_lock(stack: contextlib.ExitStack, run_dir: Path, console) -> None:
    """Lock ``run_dir`` for the rest of the command; a lock left by a killed run is taken over."""
    from .lock import RunLock

    lock = stack.enter_context(RunLock(run_dir, command=_command_line()))
    if lock.stale is not None:
        warn(console, f"the previous training of {run_dir} ({lock.stale.describe()}) ended without a clean exit; "
                      "taking over its lock")


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
        if info["start_step"] >= info["total_steps"]:
            self.console.print(f"the run is already complete (step {info['start_step']} of {info['total_steps']}): "
                               "nothing to train; to train it further, give a larger --steps or --epochs")
        elif info["start_step"]:
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
            if "guide_ab" in m:  # --guide-mix
                stats += f" guide {m['guide_ab']:.2f}/{m['guide_ba']:.2f}"
        self.progress.update(self.task, completed=step, stats=stats)

    def warn(self, message: str) -> None:
        warn(self.console, message)

    def saved(self, step: int, path: Path) -> None:
        pass


def _demo_flag(task: str | None) -> str:
    """The --demo part of a command line that trains on ``task`` again."""
    if task is None:
        return ""
    return "--demo " if task == DEMO_TASKS[0] else f"--demo {task} "


def _summary(console, trainer, result, stop, runs_dir: Path, name: str, demo: bool) -> None:
    minutes, seconds = divmod(int(result["seconds"]), 60)
    done = result["step"] >= result["total_steps"]
    ckpt = name if runs_dir == Path("runs") or str(runs_dir) == os.environ.get("AGGAN_RUNS_DIR") else str(runs_dir / name)
    console.print(f"[bold green]{'done' if done else 'stopped'}[/]: {result['steps']} steps in {minutes}m{seconds:02d}s "
                  f"(step {result['step']} of {result['total_steps']}); run folder {trainer.run_dir}")
    if stop.is_set():
        console.print(f"saved at step {result['step']} ({stop.reason}); continue with: "
                      f"aggan train {_demo_flag(trainer.tcfg.demo)}--name {shlex.quote(name)} --resume"
                      + (f" --runs-dir {shlex.quote(str(runs_dir))}" if runs_dir != Path("runs") else ""))
    a, b = trainer.domains
    shares = {d: trainer.generator(g).guide_weight() for d, g in ((f"{a}→{b}", "g_ab"), (f"{b}→{a}", "g_ba"))}
    if all(share is not None for share in shares.values()):  # --guide-mix: what each generator learned
        console.print("share of the mask guide learned (--guide-mix): "
                      + ", ".join(f"{d} {share.item():.2f}" for d, share in shares.items()))
    console.print(f"translate with: aggan translate photo.jpg --ckpt {shlex.quote(ckpt)}")
    print(trainer.run_dir)  # the one result on stdout, for scripts


def _score_demo(console, trainer) -> None:
    from rich.table import Table

    from .demo import score

    started = time.perf_counter()
    with trainer.translating():  # the mask guide aggan translate will use (config.json's "translate")
        result = score(trainer.generator("g_ab"), seed=trainer.tcfg.seed + DEMO_TEST_SEED_OFFSET,
                       size=trainer.mcfg.image_size, count=DEMO_TEST_IMAGES, device=trainer.device,
                       out_dir=trainer.run_dir / "demo-eval")
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


def _score_task(console, trainer, evaluator) -> None:
    """After ``--demo TASK``: score the saved generator on the task's held-out scenes against the
    targets of docs/evaluate.md, and write the scenes, outputs and masks to RUN/demo-eval/."""
    from .evaluate_cli import print_score_table
    from .scoring import json_number
    from .tasks import get_task

    started = time.perf_counter()
    with trainer.translating():  # the mask guide aggan translate will use (config.json's "translate")
        result, translations = evaluator(trainer.generator("g_ab"), image_size=trainer.mcfg.image_size,
                                         device=trainer.device)
    trainer.record_demo_score({k: json_number(round(v, 4) if isinstance(v, float) else v)
                               for k, v in result.to_dict().items()})
    trainer.best_effort("demo-eval/", lambda: _write_task_examples(trainer.run_dir / "demo-eval", evaluator,
                                                                   translations))
    task = get_task(trainer.tcfg.demo)
    print_score_table(result, f"{task.name}: {task.description}; {result.count} held-out scenes "
                              f"({time.perf_counter() - started:.1f} s)", console)
    if trainer.best is not None and trainer.best["step"] != trainer.step:
        console.print(f"the best save scored was step {trainer.best['step']}: {trainer.run_dir / 'best'}")
    console.print(f"test scenes, outputs and masks: {trainer.run_dir / 'demo-eval'}")


def _write_task_examples(out_dir: Path, evaluator, translations) -> None:
    """The held-out scenes as ``aggan evaluate`` reads them (inputs/, twins/, masks/: true change regions),
    next to what the model made of them (outputs/, attention/), all named NNN.png."""
    import numpy as np
    from PIL import Image

    for sub in ("inputs", "twins", "masks", "outputs", "attention"):
        (out_dir / sub).mkdir(parents=True, exist_ok=True)
    for i, (name, source, translation) in enumerate(zip(evaluator.names, evaluator.sources, translations)):
        source.save(out_dir / "inputs" / f"{name}.png")
        if evaluator.twins is not None:
            Image.fromarray(evaluator.twins[i]).save(out_dir / "twins" / f"{name}.png")
        if evaluator.regions is not None:
            Image.fromarray(np.where(evaluator.regions[i], 255, 0).astype(np.uint8), "L").save(
                out_dir / "masks" / f"{name}.png")
        translation.image.save(out_dir / "outputs" / f"{name}.png")
        Image.fromarray(np.rint(translation.mask * 255).astype(np.uint8), "L").save(out_dir / "attention" / f"{name}.png")
