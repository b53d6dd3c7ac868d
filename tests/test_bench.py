"""`aggan bench`: the JSON result, the table, FLOPs that match the architecture, bf16 on the CPU, and the
speed options of `aggan train` (--precision bf16, --channels-last, --compile) on tiny models."""

from __future__ import annotations

import json
import math

import pytest
import torch
from torch import nn
from typer.testing import CliRunner

from aggan_cli.cli import app
from aggan_cli.config import ModelConfig
from aggan_cli.networks import AttentionGenerator

from test_train import TINY, make_domains

runner = CliRunner()
BENCH_TINY = ["--size", "32", "--ngf", "4", "--n-blocks", "1", "--ndf", "4", "--device", "cpu",
              "--repeats", "2", "--warmup", "1"]


def conv_flops_per_image(g: nn.Module, size: int) -> int:
    """Convolution FLOPs of one forward pass, counted from the layer shapes (2 per multiply-add)."""
    total = 0

    def hook(module, inputs, output):
        nonlocal total
        k = module.kernel_size[0] * module.kernel_size[1]
        spatial = inputs[0].shape[-2:] if isinstance(module, nn.ConvTranspose2d) else output.shape[-2:]
        total += 2 * module.in_channels * module.out_channels * k * spatial[0] * spatial[1]

    handles = [m.register_forward_hook(hook) for m in g.modules() if isinstance(m, (nn.Conv2d, nn.ConvTranspose2d))]
    with torch.no_grad():
        g(torch.zeros(1, 3, size, size))
    for h in handles:
        h.remove()
    return total


def bench_json(*args: str) -> dict:
    result = runner.invoke(app, ["bench", *BENCH_TINY, "--json", *args])
    assert result.exit_code == 0, result.output
    return json.loads(result.stdout)


def test_bench_measures_the_decoder_it_is_told():
    """--upsample: the resize decoder's two convolutions run at twice the resolution of the transposed
    ones they replace, so it costs more FLOPs for the same weights; bench measures either."""
    flops = {kind: bench_json("--upsample", kind, "--only", "inference")["inference"]["flops_per_image"]
             for kind in ("transposed", "resize")}
    for kind, counted in flops.items():
        assert counted == conv_flops_per_image(AttentionGenerator(ngf=4, n_blocks=1, upsample=kind), 32)
    assert flops["resize"] > flops["transposed"]


def test_bench_measures_the_patchgan_it_is_told():
    """--d-layers: train builds the PatchGAN of that depth; a shallower one is fewer FLOPs per step and
    leaves the generators (inference) alone."""
    runs = {layers: bench_json("--d-layers", str(layers)) for layers in (1, 3)}
    assert runs[1]["inference"]["flops_per_image"] == runs[3]["inference"]["flops_per_image"]
    assert runs[1]["train"]["flops_per_image"] < runs[3]["train"]["flops_per_image"]
    result = runner.invoke(app, ["bench", *BENCH_TINY, "--d-layers", "4"])  # 32 px is too small for it
    assert result.exit_code == 1 and "needs a size (--size) of at least 48 pixels" in result.output, result.output
    assert "Traceback" not in result.output


def test_bench_times_the_step_with_the_identity_loss_train_uses():
    """The default step is the one of the last two thirds of training, with the identity loss's two extra
    generator passes; --lambda-identity 0 times the step without them (the first third's, or the paper's)."""
    runs = {weight: bench_json("--only", "train", *(("--lambda-identity", weight) if weight else ()))
            for weight in (None, "0")}
    generator = conv_flops_per_image(AttentionGenerator(ngf=4, n_blocks=1, upsample=ModelConfig().upsample), 32)
    extra = runs[None]["train"]["flops_per_image"] - runs["0"]["train"]["flops_per_image"]
    # two more passes, each a forward and a backward (about twice a forward; the first layer needs no input gradient)
    assert 2 * 2.5 * generator < extra <= 2 * 3 * generator


def test_bench_json_reports_both_phases_against_the_ceiling():
    data = bench_json("--batch-size", "2")
    assert data["precision"] == "fp32" and data["batch_size"] == 2 and data["device"].startswith("cpu")
    inference, train = data["inference"], data["train"]
    expected = conv_flops_per_image(AttentionGenerator(ngf=4, n_blocks=1, upsample=ModelConfig().upsample), 32)
    assert inference["flops_per_image"] == expected  # per image, although the batch held two; train's decoder
    # a step: four generator passes forward and back, plus the discriminators
    assert train["flops_per_image"] > 8 * expected
    for phase in (inference, train):
        t = phase["seconds"]
        assert 0 < t["min"] <= t["median"] <= t["max"]
        assert phase["images_per_s"] == pytest.approx(2 / t["median"])
        assert phase["gflops"] == pytest.approx(phase["flops_per_image"] * 2 / t["median"] / 1e9)
        assert phase["ceiling_gflops"] > 0
        assert phase["efficiency"] == pytest.approx(phase["gflops"] / phase["ceiling_gflops"])
        assert phase["peak_memory_mb"] > 10  # the process's peak resident set, in MiB
        assert phase["channels_last"] is False  # the CPU default for both (docs/performance.md)


def test_bench_table_and_only_and_layout_override():
    result = runner.invoke(app, ["bench", *BENCH_TINY, "--only", "inference", "--channels-last"])
    assert result.exit_code == 0, result.output
    assert "inference" in result.stdout and "train step" not in result.stdout
    assert "of ceiling" in result.stdout and "NHWC" in result.stdout
    data = bench_json("--only", "train")
    assert data["inference"] is None and data["train"]["images_per_s"] > 0


@pytest.mark.slow  # bf16 convolutions on a CPU without bf16 units: emulated, slow
def test_bench_bf16_on_the_cpu(monkeypatch):
    from aggan_cli import bench

    # the ceiling's calibration convolution (10 GFLOP a call) took minutes in emulated bf16; a sixteenth
    # of it exercises the same path
    monkeypatch.setattr(bench, "CALIBRATION_SIZE", bench.CALIBRATION_SIZE // 4)
    data = bench_json("--precision", "bf16", "--only", "train")
    assert data["precision"] == "bf16"
    assert math.isfinite(data["train"]["gflops"]) and data["train"]["gflops"] > 0


def test_bench_refuses_what_the_machine_lacks():
    result = runner.invoke(app, ["bench", *BENCH_TINY, "--precision", "fp16"])
    assert result.exit_code == 1 and "fp16" in result.output and "Traceback" not in result.output
    result = runner.invoke(app, ["bench", "--size", "30", "--device", "cpu"])
    assert result.exit_code == 1 and "multiple of 4" in result.output


def test_bench_refuses_a_size_beyond_the_bound_before_allocating():
    # --size 100000 used to allocate a 100,000² batch (and swap or fail with a traceback); now one line
    # before anything is built, whatever the model-size bounds of ModelConfig
    result = runner.invoke(app, ["bench", *BENCH_TINY, "--size", "100000"])
    errors = [line for line in result.output.splitlines() if line.startswith("error:")]
    assert result.exit_code == 1 and len(errors) == 1 and "Traceback" not in result.output, result.output
    assert "--size" in errors[0] and "4096" in errors[0] and "aggan bench" not in result.output


def test_train_in_bf16_with_channels_last_on_the_cpu(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    a, b = make_domains(tmp_path)
    result = runner.invoke(app, ["train", str(a), str(b), "--steps", "4", "--log-every", "2", "--precision", "bf16",
                                 "--channels-last", *TINY])
    assert result.exit_code == 0, result.output
    run = tmp_path / "runs" / "smile"
    saved = json.loads((run / "config.json").read_text())
    assert saved["train"]["precision"] == "bf16" and saved["train"]["channels_last"] is True
    rows = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert all(math.isfinite(r["g_total"]) and math.isfinite(r["d_total"]) for r in rows)


@pytest.mark.slow
def test_train_compiled_saves_plain_weights(tmp_path, monkeypatch):
    """--compile on the CPU (inductor; about a minute here): training runs, and the saved keys carry no
    wrapper prefix, so the run loads like any other."""
    from safetensors.torch import load_file

    from aggan_cli.inference import Translator

    monkeypatch.chdir(tmp_path)
    a, b = make_domains(tmp_path)
    result = runner.invoke(app, ["train", str(a), str(b), "--steps", "2", "--compile", *TINY])
    assert result.exit_code == 0, result.output
    run = tmp_path / "runs" / "smile"
    keys = load_file(run / "model.safetensors").keys()
    assert keys and all(k.startswith(("g_ab.net.", "g_ba.net.")) for k in keys)
    assert json.loads((run / "config.json").read_text())["train"]["compile"] is True
    Translator.load(run, device="cpu")
