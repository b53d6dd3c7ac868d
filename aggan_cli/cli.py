"""The ``aggan`` command line: parse, call the core, render. No tensor math here, and no torch at
import time, so ``aggan --help`` and ``aggan --version`` answer at once.

Errors from the core are :class:`~aggan_cli.errors.AgganError`; they are caught once, in
:func:`user_errors`, printed as one red line on stderr, and end the command with exit code 1.
"""

from __future__ import annotations

import contextlib
import inspect
from enum import Enum
from pathlib import Path
from typing import Annotated, Any, Iterator, Optional

import typer
from typer.core import TyperCommand

from . import __version__
from .config import DATA, MASK_GUIDE_HELP, MODEL, PANELS, RUNTIME, all_fields
from .errors import AgganError

app = typer.Typer(
    name="aggan",
    help="Unpaired image-to-image translation with attention (AGGAN, Tang et al. 2019).\n\n"
    "Train on two folders of unpaired images, translate photos, and see where the model chose to edit:\n\n"
    "  aggan train ./neutral ./smile\n\n"
    "  aggan translate photo.jpg --ckpt smile\n\n"
    "  aggan export-masks photo.jpg --ckpt smile",
    context_settings={"help_option_names": ["-h", "--help"]},
    rich_markup_mode="rich",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)


class Norm(str, Enum):
    instance = "instance"
    batch = "batch"


class DiscriminatorKind(str, Enum):
    patch = "patch"
    global_ = "global"


class Upsample(str, Enum):
    transposed = "transposed"
    resize = "resize"


class Direction(str, Enum):
    a2b = "a2b"
    b2a = "b2a"


class Backend(str, Enum):
    torch = "torch"
    onnxruntime = "onnxruntime"


class Precision(str, Enum):
    auto = "auto"
    fp32 = "fp32"
    bf16 = "bf16"
    fp16 = "fp16"


_THREADS_HELP = ("CPU threads for PyTorch \\[default: OMP_NUM_THREADS if set, else one per core that other "
                 "processes leave free, re-checked while running; see docs/performance.md].")


def _stderr_console():
    from rich.console import Console

    return Console(stderr=True, highlight=False)


def error_line(message: str) -> None:
    """One red line on stderr (escaping rich markup in the message)."""
    from rich.markup import escape

    _stderr_console().print(f"[bold red]error:[/] {escape(message)}", soft_wrap=True)


@contextlib.contextmanager
def user_errors() -> Iterator[None]:
    """Turn AgganError into one red line and exit 1; Ctrl-C into exit 130 without a traceback."""
    try:
        yield
    except AgganError as exc:
        error_line(_one_line(str(exc)))
        raise typer.Exit(1) from None
    except KeyboardInterrupt:
        error_line("interrupted")
        raise typer.Exit(130) from None


def _one_line(message: str) -> str:
    """The message itself, also when a DataLoader worker re-raised it with the worker's traceback
    folded in ("Caught DataError in DataLoader worker process 0. Original Traceback ... DataError: msg")."""
    if "Original Traceback" not in message:
        return message
    last = message.strip().splitlines()[-1]
    return last.split(": ", 1)[1] if ": " in last else last


def _version_callback(value: bool) -> None:
    if value:
        typer.echo(f"aggan {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    version: Annotated[
        Optional[bool],
        typer.Option("--version", "-V", callback=_version_callback, is_eager=True, help="Print the version and exit."),
    ] = None,
) -> None:
    """Unpaired image-to-image translation with attention."""


# ---------------------------------------------------------------------------------------------
# train
#
# The command's options are the configuration fields of config.py (type, default, bounds, help and
# panel are declared there, once); train() declares only what is not configuration: the data
# folders and the few switches that steer the command itself.


def _was_given(ctx: typer.Context, name: str) -> bool:
    """True when an option came from the command line or its environment variable, not its default.
    (Compared by name: Typer may use its own copy of click's ParameterSource enum.)"""
    source = ctx.get_parameter_source(name)
    return source is not None and source.name in ("COMMANDLINE", "ENVIRONMENT")


def _config_parameter(field) -> inspect.Parameter:
    """The ``aggan train`` option of one configuration field (a config.Field)."""
    o = field.option
    kind: Any = Enum(field.name, {c: c for c in o.choices}, type=str) if o.choices else field.kind
    default = kind(field.default) if o.choices and field.default is not None else field.default
    two_way = field.kind is bool  # --x/--no-x: either overrides a TOML file (command line > --config)
    declaration = f"{field.flag}/--no-{field.flag[2:]}" if two_way else field.flag
    help = f"{o.help} \\[default: {o.default_text}]" if o.default_text else o.help
    show_default = not o.default_text and field.default is not None
    info = typer.Option(declaration, help=help, rich_help_panel=o.panel, envvar=o.envvar, show_default=show_default)
    annotation = Annotated[Optional[kind] if field.optional else kind, info]  # type: ignore[valid-type]
    return inspect.Parameter(field.name, inspect.Parameter.KEYWORD_ONLY, default=default, annotation=annotation)


def _with_config_options(command):
    """``command``'s signature, with ``**options`` replaced by one option per configuration field."""
    own = [p for p in inspect.signature(command, eval_str=True).parameters.values() if p.kind != p.VAR_KEYWORD]
    fixed = [p for p in own if _panel(p) is None]  # the context and the arguments come first
    options = [*map(_config_parameter, (f for f in all_fields() if f.option.cli)), *(p for p in own if _panel(p))]
    options.sort(key=lambda p: PANELS.index(_panel(p)))  # --help shows panels in order of first appearance
    command.__signature__ = inspect.Signature([*fixed, *(p.replace(kind=p.KEYWORD_ONLY) for p in options)])
    return command


def _panel(parameter: inspect.Parameter) -> str | None:
    infos = getattr(parameter.annotation, "__metadata__", ())
    return next((info.rich_help_panel for info in infos if isinstance(info, typer.models.OptionInfo)), None)


class _TrainCommand(TyperCommand):
    """``--demo`` with no task name after it means the first built-in task (``--demo`` = ``--demo faces``)."""

    def parse_args(self, ctx, args: list[str]) -> list[str]:
        from .config import DEMO_TASKS

        args = list(args)
        for i in reversed(range(len(args))):
            if args[i] == "--demo" and (i + 1 == len(args) or args[i + 1].startswith("-")):
                args.insert(i + 1, DEMO_TASKS[0])
        return super().parse_args(ctx, args)


@app.command(cls=_TrainCommand)
@_with_config_options
def train(
    ctx: typer.Context,
    domain_a: Annotated[Optional[Path], typer.Argument(help="Folder of domain-A images (searched recursively).", show_default=False)] = None,
    domain_b: Annotated[Optional[Path], typer.Argument(help="Folder of domain-B images (searched recursively).", show_default=False)] = None,
    resume: Annotated[bool, typer.Option("--resume", help="Continue the run NAME exactly where it stopped.", rich_help_panel=DATA)] = False,
    data_changed: Annotated[bool, typer.Option("--data-changed", help="With --resume: allow other data than the run was trained on (other folders, swapped domains, or the demo).", rich_help_panel=DATA)] = False,
    config: Annotated[Optional[Path], typer.Option("--config", help="TOML file of options; command-line options override it.", rich_help_panel=DATA, show_default=False)] = None,
    paper: Annotated[bool, typer.Option("--paper", help="The paper's exact setup: global discriminators, BatchNorm, the log-likelihood GAN loss, no attention floor, no identity negatives, no mask guide, the paper's real pairs (and no cycle ramp).", rich_help_panel=MODEL)] = False,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="No progress bar; warnings and the summary only.", rich_help_panel=RUNTIME)] = False,
    threads: Annotated[Optional[int], typer.Option(min=1, envvar="AGGAN_THREADS", help=_THREADS_HELP, rich_help_panel=RUNTIME, show_default=False)] = None,
    **options: Any,
) -> None:
    """Train AGGAN on two folders of unpaired images (or on a built-in data set with --demo)."""
    given = {key for key in ctx.params if _was_given(ctx, key)}
    values = {key: (value.value if isinstance(value, Enum) else value) for key, value in ctx.params.items()}
    with user_errors():
        from .train_cli import run_train_command

        run_train_command(values, given)


# ---------------------------------------------------------------------------------------------
# bench


class BenchOnly(str, Enum):
    both = "both"
    train = "train"
    inference = "inference"
    startup = "startup"


@app.command()
def bench(
    size: Annotated[int, typer.Option(help="Image size in pixels (a multiple of 4).")] = 256,
    ngf: Annotated[int, typer.Option(help="Generator width.")] = 64,
    n_blocks: Annotated[int, typer.Option(help="Residual blocks in each generator.")] = 9,
    ndf: Annotated[int, typer.Option(help="Discriminator width.")] = 64,
    norm: Annotated[Norm, typer.Option(help="instance or batch.")] = Norm.instance,
    discriminator: Annotated[DiscriminatorKind, typer.Option(help="patch or global.")] = DiscriminatorKind.patch,
    upsample: Annotated[Optional[Upsample], typer.Option(help="The generator's decoder: transposed or resize \\[default: train's].", show_default=False)] = None,
    d_layers: Annotated[int, typer.Option(min=1, max=5, help="PatchGAN depth: 3 = 70×70 receptive field, 2 = 34×34, 1 = 16×16.")] = 3,
    batch_size: Annotated[int, typer.Option(min=1, help="Images per step and per forward pass.")] = 1,
    lambda_identity: Annotated[Optional[float], typer.Option(min=0, help="Weight of the identity loss, as train's: not 0 adds two generator passes to each step \\[default: train's].", show_default=False)] = None,
    device: Annotated[str, typer.Option(envvar="AGGAN_DEVICE", help="auto, cpu, cuda, cuda:N or mps.")] = "auto",
    precision: Annotated[Precision, typer.Option(help="auto (bf16 on CUDA, fp32 elsewhere), fp32, bf16 or fp16.")] = Precision.auto,
    compile: Annotated[bool, typer.Option("--compile", help="torch.compile the networks (the warm-up then includes compiling).")] = False,
    channels_last: Annotated[Optional[bool], typer.Option("--channels-last/--no-channels-last", help="Force a memory layout \\[default: what train and translate use on this device].", show_default=False)] = None,
    repeats: Annotated[int, typer.Option(min=1, help="Timed repeats; the median is reported, with min and max.")] = 5,
    warmup: Annotated[int, typer.Option(min=0, help="Untimed calls first (compilation, allocator, cuDNN autotuning).")] = 2,
    only: Annotated[BenchOnly, typer.Option(help="Measure both phases, or only train or inference; or startup: process start to the written file of `aggan translate` on one photo.")] = BenchOnly.both,
    seed: Annotated[int, typer.Option(help="Seed for the random weights and images.")] = 0,
    json_: Annotated[bool, typer.Option("--json", help="Print one JSON object on stdout instead of the table.")] = False,
    backend: Annotated[Backend, typer.Option(help="Run inference (and startup) with torch, or with onnxruntime on the exported network (CPU, inference only; needs aggan\\[onnx]).")] = Backend.torch,
    threads: Annotated[Optional[int], typer.Option(min=1, envvar="AGGAN_THREADS", help="Intra-op threads for torch and onnxruntime \\[default: what train would use now: OMP_NUM_THREADS if set, else one per core that other processes leave free; onnxruntime: its own].", show_default=False)] = None,
    photo_size: Annotated[int, typer.Option(help="--only startup: the photo's long side in pixels (4:3).")] = 1024,
) -> None:
    """Time training steps and generator inference on random data, and compare with this device's ceiling.

    Reports images/s, peak memory, FLOPs per image and achieved GFLOP/s as a percentage of a
    calibration convolution in the same precision and memory layout. See docs/performance.md.

      aggan bench --size 64 --ngf 64 --n-blocks 6 --json

      aggan bench --only inference --backend onnxruntime --device cpu --threads 1
    """
    with user_errors():
        from .bench_cli import run_bench_command

        run_bench_command(size=size, ngf=ngf, n_blocks=n_blocks, ndf=ndf, norm=norm.value,
                          discriminator=discriminator.value, upsample=upsample.value if upsample else None,
                          d_layers=d_layers, lambda_identity=lambda_identity, batch_size=batch_size, device=device,
                          precision=precision.value, compile=compile, channels_last=channels_last, repeats=repeats,
                          warmup=warmup, only=only.value, seed=seed, as_json=json_, backend=backend.value,
                          threads=threads, photo_size=photo_size)


# ---------------------------------------------------------------------------------------------
# translate / export-masks

_CKPT_HELP = ("Checkpoint: a run folder or model.safetensors, a run name under the runs dir, a cached or bundled "
              "name (see download-weights --list), or a Hugging Face Hub ORG/REPO.")
_BACKEND_HELP = ("torch, or onnxruntime: the files of `aggan export CKPT` (or an export folder or .onnx file as "
                 "--ckpt), without PyTorch. See docs/deploy.md.")


@app.command()
def translate(
    inputs: Annotated[list[str], typer.Argument(metavar="INPUT...", help="Image files, folders (recursive) and glob patterns.", show_default=False)],
    ckpt: Annotated[Optional[str], typer.Option(help=_CKPT_HELP + " \\[default: demo-smile, a bundled toy model of procedural faces]", show_default=False)] = None,
    direction: Annotated[Direction, typer.Option(help="a2b (domain A → B) or b2a.")] = Direction.a2b,
    out: Annotated[Optional[Path], typer.Option(help="Output folder \\[default: ./translated].", show_default=False)] = None,
    suffix: Annotated[str, typer.Option(help="Added to each output name: photo.jpg → OUT/photo<SUFFIX>.png (inputs are never overwritten).")] = "",
    size: Annotated[str, typer.Option(help="Working size: 'auto' (the network at the checkpoint's training size, blended at full resolution), 'native' (the network at full resolution) or N (short side in pixels). See docs/translate.md.")] = "auto",
    batch_size: Annotated[int, typer.Option(help="Images of equal working size per forward pass (GPU; the CPU runs one at a time).")] = 4,
    device: Annotated[str, typer.Option(envvar="AGGAN_DEVICE", help="auto, cpu, cuda, cuda:N or mps.")] = "auto",
    precision: Annotated[Precision, typer.Option(help="auto, fp32, bf16 or fp16.")] = Precision.auto,
    offline: Annotated[bool, typer.Option("--offline", help="Use only local and cached checkpoints (also: HF_HUB_OFFLINE=1).")] = False,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="No progress bar.")] = False,
    backend: Annotated[Backend, typer.Option(envvar="AGGAN_BACKEND", help=_BACKEND_HELP)] = Backend.torch,
    print0: Annotated[bool, typer.Option("--print0", help="End each printed path with a NUL byte instead of a newline (for xargs -0); without it, line breaks in names are printed escaped (\\n).")] = False,
    threads: Annotated[Optional[int], typer.Option(min=1, envvar="AGGAN_THREADS", help=_THREADS_HELP, show_default=False)] = None,
    mask_guide: Annotated[str, typer.Option(metavar="auto|trained|N", help=MASK_GUIDE_HELP)] = "auto",
) -> None:
    """Translate images with a trained checkpoint; outputs keep each input's exact size.

    Writes OUT/<stem>.png for each input (a folder's layout is kept) and prints each written path.
    """
    with user_errors():
        from .translate_cli import run_translate_command

        code = run_translate_command(
            inputs, ckpt=ckpt, direction=direction.value, out=out, size=size, batch_size=batch_size,
            device=device, precision=precision.value, offline=offline, quiet=quiet, masks=False, suffix=suffix,
            print0=print0, backend=backend.value, threads=threads, mask_guide=mask_guide,
        )
    raise typer.Exit(code)


class MaskFormat(str, Enum):
    png = "png"
    npy = "npy"


@app.command("export-masks")
def export_masks(
    inputs: Annotated[list[str], typer.Argument(metavar="INPUT...", help="Image files, folders (recursive) and glob patterns.", show_default=False)],
    ckpt: Annotated[Optional[str], typer.Option(help=_CKPT_HELP + " \\[default: demo-smile, a bundled toy model of procedural faces]", show_default=False)] = None,
    direction: Annotated[Direction, typer.Option(help="a2b (domain A → B) or b2a.")] = Direction.a2b,
    out: Annotated[Optional[Path], typer.Option(help="Output folder \\[default: ./masks].", show_default=False)] = None,
    suffix: Annotated[str, typer.Option(help="Added to each output name: photo.jpg → OUT/photo<SUFFIX>_mask.png.")] = "",
    overlay: Annotated[bool, typer.Option("--overlay/--no-overlay", help="Also write a heat-map overlay on the dimmed photo.")] = True,
    content: Annotated[bool, typer.Option("--content", help="Also write the content image R.")] = False,
    threshold: Annotated[Optional[float], typer.Option(help="Write a binary mask: 255 where attention > T (0 < T < 1).", show_default=False)] = None,
    format: Annotated[MaskFormat, typer.Option("--format", help="png (8-bit grey, 255 = fully attended) or npy (float32 in [0, 1]).")] = MaskFormat.png,
    size: Annotated[str, typer.Option(help="Working size: 'auto', 'native' or N (see translate).")] = "auto",
    batch_size: Annotated[int, typer.Option(help="Images of equal working size per forward pass (GPU; the CPU runs one at a time).")] = 4,
    device: Annotated[str, typer.Option(envvar="AGGAN_DEVICE", help="auto, cpu, cuda, cuda:N or mps.")] = "auto",
    precision: Annotated[Precision, typer.Option(help="auto, fp32, bf16 or fp16.")] = Precision.auto,
    offline: Annotated[bool, typer.Option("--offline", help="Use only local and cached checkpoints.")] = False,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="No progress bar.")] = False,
    backend: Annotated[Backend, typer.Option(envvar="AGGAN_BACKEND", help=_BACKEND_HELP)] = Backend.torch,
    print0: Annotated[bool, typer.Option("--print0", help="End each printed path with a NUL byte instead of a newline (for xargs -0); without it, line breaks in names are printed escaped (\\n).")] = False,
    threads: Annotated[Optional[int], typer.Option(min=1, envvar="AGGAN_THREADS", help=_THREADS_HELP, show_default=False)] = None,
    mask_guide: Annotated[str, typer.Option(metavar="auto|trained|N", help=MASK_GUIDE_HELP)] = "auto",
) -> None:
    """Write the attention masks that show where the model chose to edit.

    Writes OUT/<stem>_mask.png (8-bit grey, 255 = fully attended) and <stem>_overlay.png, and with
    --content <stem>_content.png, at each input's exact size.
    """
    with user_errors():
        from .translate_cli import run_translate_command

        code = run_translate_command(
            inputs, ckpt=ckpt, direction=direction.value, out=out, size=size, batch_size=batch_size,
            device=device, precision=precision.value, offline=offline, quiet=quiet, masks=True,
            overlay=overlay, content=content, threshold=threshold, mask_format=format.value, suffix=suffix,
            print0=print0, backend=backend.value, threads=threads, mask_guide=mask_guide,
        )
    raise typer.Exit(code)


# ---------------------------------------------------------------------------------------------
# export


class ExportDirection(str, Enum):
    both = "both"
    a2b = "a2b"
    b2a = "b2a"


@app.command()
def export(
    ckpt: Annotated[str, typer.Argument(metavar="RUN_OR_NAME", help=_CKPT_HELP, show_default=False)],
    out: Annotated[Optional[Path], typer.Option(help="Output folder \\[default: RUN/onnx/ for a run; CACHE/onnx/NAME-SHA12/ for a bundled or downloaded checkpoint, CACHE being AGGAN_HOME or the user cache folder].", show_default=False)] = None,
    direction: Annotated[ExportDirection, typer.Option(help="Export both generators, or only a2b (g_ab.onnx) or b2a (g_ba.onnx).")] = ExportDirection.both,
    offline: Annotated[bool, typer.Option("--offline", help="Use only local and cached checkpoints (also: HF_HUB_OFFLINE=1).")] = False,
    mask_guide: Annotated[str, typer.Option(metavar="auto|trained|N", help=MASK_GUIDE_HELP + " The radius becomes part of the exported network.")] = "auto",
) -> None:
    """Export a checkpoint's generators to ONNX, for onnxruntime and other runtimes (needs aggan\\[onnx]).

    Each file maps an RGB image in [-1, 1] of any batch, height and width (multiples of 4, at least 8)
    to the attention mask and the content; the blend stays outside, as in translate. Prints each
    written path. Then: aggan translate PHOTO --ckpt RUN_OR_NAME --backend onnxruntime.
    See docs/deploy.md.
    """
    with user_errors():
        from .export_cli import run_export_command

        run_export_command(ckpt, out=out, direction=direction.value, offline=offline, mask_guide=mask_guide)


# ---------------------------------------------------------------------------------------------
# evaluate


@app.command()
def evaluate(
    inputs: Annotated[list[str], typer.Argument(metavar="INPUT...", help="Domain images to translate: files, folders (recursive) and glob patterns.", show_default=False)],
    ckpt: Annotated[str, typer.Option(help=_CKPT_HELP, show_default=False)],
    twins: Annotated[Optional[Path], typer.Option(help="Folder of the perfect translations, named like the inputs.", show_default=False)] = None,
    masks: Annotated[Optional[Path], typer.Option(help="Folder of the true change regions (white = changed), named like the inputs.", show_default=False)] = None,
    direction: Annotated[Direction, typer.Option(help="a2b (domain A → B) or b2a.")] = Direction.a2b,
    size: Annotated[str, typer.Option(help="Working size: 'auto', 'native' or N, as in translate.")] = "auto",
    device: Annotated[str, typer.Option(envvar="AGGAN_DEVICE", help="auto, cpu, cuda, cuda:N or mps.")] = "auto",
    precision: Annotated[Precision, typer.Option(help="auto, fp32, bf16 or fp16.")] = Precision.auto,
    offline: Annotated[bool, typer.Option("--offline", help="Use only local and cached checkpoints.")] = False,
    json_: Annotated[bool, typer.Option("--json", help="Print one JSON object on stdout instead of the table.")] = False,
    worst: Annotated[int, typer.Option(min=0, help="Also list the N images whose background changed most, with each one's share of the background error: where the model edits what it should not.")] = 0,
    mask_guide: Annotated[str, typer.Option(metavar="auto|trained|N", help=MASK_GUIDE_HELP)] = "auto",
    threads: Annotated[Optional[int], typer.Option(min=1, envvar="AGGAN_THREADS", help=_THREADS_HELP, show_default=False)] = None,
) -> None:
    """Score a checkpoint against ground truth: perfect translations (--twins) and/or true change regions (--masks).

    Reports foreground PSNR against the twins (next to output = input), background PSNR, mask AUC and
    IoU, and how binary the masks are (docs/evaluate.md):

      aggan evaluate photos/ --ckpt smile --twins smiling/ --masks regions/
    """
    with user_errors():
        from .evaluate_cli import run_evaluate_command

        run_evaluate_command(inputs, ckpt=ckpt, twins=twins, masks=masks, direction=direction.value, size=size,
                             device=device, precision=precision.value, offline=offline, as_json=json_,
                             worst=worst, mask_guide=mask_guide, threads=threads)


# ---------------------------------------------------------------------------------------------
# download-weights


@app.command("download-weights")
def download_weights(
    name: Annotated[Optional[str], typer.Argument(metavar="NAME|ORG/REPO", help="A checkpoint name (see --list) or a Hugging Face Hub ORG/REPO.", show_default=False)] = None,
    list_: Annotated[bool, typer.Option("--list", help="List the known checkpoints and whether each is bundled or cached (no network).")] = False,
    revision: Annotated[Optional[str], typer.Option(help="Hub revision: a branch, tag or commit (default: the registry's pinned commit, or main).", show_default=False)] = None,
    force: Annotated[bool, typer.Option("--force", help="Download again even if the checkpoint is already cached.")] = False,
    cache_dir: Annotated[Optional[Path], typer.Option(envvar="AGGAN_HOME", help="Cache folder (default: AGGAN_HOME, else the user cache folder).", show_default=False)] = None,
    offline: Annotated[bool, typer.Option("--offline", help="Use only the cache, never the network (also: HF_HUB_OFFLINE=1).")] = False,
) -> None:
    """Download a published checkpoint into the cache, verify it, and print its local path.

    aggan download-weights --list

    aggan download-weights ORG/REPO --revision v1.0
    """
    with user_errors():
        from .weights_cli import run_download_command

        run_download_command(name, list_=list_, revision=revision, force=force, cache_dir=cache_dir, offline=offline)


def main() -> None:
    """Console-script entry point."""
    from . import cpuload

    cpuload.begin()  # before torch loads: the import is the first window for measuring the machine's load
    app(prog_name="aggan")


if __name__ == "__main__":  # pragma: no cover
    main()
