"""`aggan train`: data from real folders, the run folder, refusals, exact resume, TOML configs."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
import torch
from typer.testing import CliRunner

from aggan_cli.cli import app
from aggan_cli.config import ModelConfig, TrainConfig
from aggan_cli.data import DemoSource, EpochSampler, UnpairedDataset, open_domain
from aggan_cli.errors import DataError
from aggan_cli.trainer import Trainer

from images import write_empty, write_exif_rotated, write_mode, write_rgb, write_text, write_truncated_jpeg

runner = CliRunner()
TINY = ["--size", "32", "--ngf", "4", "--n-blocks", "1", "--ndf", "4", "--workers", "0", "--quiet"]


def make_domains(root: Path, n_a: int = 3, n_b: int = 4) -> tuple[Path, Path]:
    a, b = root / "neutral", root / "smile"
    for i in range(n_a):
        write_rgb(a / f"a{i}.jpg", (40 + i, 36), seed=i)
    for i in range(n_b):
        write_rgb(b / "nested" / f"b{i}.PNG", (36, 44 + i), seed=10 + i)
    return a, b


def train_tiny(root: Path, steps: int = 2) -> Path:
    """A finished tiny run on make_domains' folders, with its run folder under ROOT/runs; returns that."""
    a, b = make_domains(root)
    result = runner.invoke(app, ["train", str(a), str(b), "--steps", str(steps), "--runs-dir", str(root / "runs"),
                                 *TINY])
    assert result.exit_code == 0, result.output
    return root / "runs" / "smile"


def test_awkward_real_files_train_and_broken_ones_are_named(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    a, b = make_domains(tmp_path)
    write_mode(a / "grey.png", "L", (33, 41))
    write_mode(a / "palette.png", "P", (45, 37))
    write_mode(b / "cmyk.jpg", "CMYK", (40, 40))
    write_mode(b / "deep.png", "I;16", (37, 50))
    write_mode(b / "rgba.png", "RGBA", (50, 37))
    write_exif_rotated(a / "rotated.jpg", (60, 34))
    write_truncated_jpeg(a / "broken.jpg")
    write_empty(b / "empty.png")
    write_text(b / "notes.jpg")
    result = runner.invoke(app, ["train", str(a), str(b), "--steps", "12", "--log-every", "4", *TINY])
    assert result.exit_code == 0, result.output
    assert "broken.jpg" in result.output  # the truncated file is named in a warning; training went on
    run = tmp_path / "runs" / "smile"  # the run name defaults to DOMAIN_B's folder name
    for name in ("config.json", "model.safetensors", "training-state.safetensors", "metrics.jsonl", "metrics.png",
                 "README.md"):
        assert (run / name).is_file(), name
    assert list((run / "samples").glob("step-*.png"))
    config = json.loads((run / "config.json").read_text())
    assert config["step"] == 12 and config["domains"] == {"a": "neutral", "b": "smile"}
    rows = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows] == [4, 8, 12]
    for key in ("mask_ab_mean", "mask_ab_frac", "mask_ba_mean", "mask_ba_frac", "cycle", "lr"):
        assert key in rows[0]


@pytest.mark.parametrize("problem,expected", [
    ("missing", "does not exist"),
    ("empty", "no images"),
    ("file", "must be a folder"),
    ("too_few", "batch size"),
])
def test_bad_folders_fail_before_any_work(tmp_path, monkeypatch, problem, expected):
    monkeypatch.chdir(tmp_path)
    a, b = make_domains(tmp_path)
    if problem == "missing":
        b = tmp_path / "nope"
    elif problem == "empty":
        b = tmp_path / "empty_dir"
        b.mkdir()
        write_text(b / "readme.jpg")  # an unreadable "image" does not count
    elif problem == "file":
        b = write_rgb(tmp_path / "single.png", (32, 32))
    args = ["train", str(a), str(b), "--steps", "2", *TINY]
    if problem == "too_few":
        args += ["--batch-size", "5"]
    result = runner.invoke(app, args)
    assert result.exit_code == 1
    assert expected in result.output
    assert "Traceback" not in result.output
    assert not (tmp_path / "runs").exists()  # nothing was started


def test_existing_run_is_refused_then_resume_extends_it(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    a, b = make_domains(tmp_path)
    assert runner.invoke(app, ["train", str(a), str(b), "--steps", "4", *TINY]).exit_code == 0
    again = runner.invoke(app, ["train", str(a), str(b), "--steps", "4", *TINY])
    assert again.exit_code == 1 and "--resume" in again.output and "--name" in again.output
    # resume without repeating folders or architecture flags; raise the step count to extend
    more = runner.invoke(app, ["train", "--name", "smile", "--resume", "--steps", "6", "--quiet"])
    assert more.exit_code == 0, more.output
    assert json.loads((tmp_path / "runs" / "smile" / "config.json").read_text())["step"] == 6
    changed = runner.invoke(app, ["train", "--name", "smile", "--resume", "--ngf", "8"])
    assert changed.exit_code == 1 and "--ngf" in changed.output


def test_toml_config_and_command_line_precedence(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    a, b = make_domains(tmp_path)
    cfg = tmp_path / "train.toml"
    cfg.write_text('steps = 3\nsize = 32\nngf = 4\nn-blocks = 1\nndf = 4\nlambda_pixel = 0.5\nname = "fromfile"\nworkers = 0\n'
                   'cycle_ramp = true\nguide_mix = true\n')
    result = runner.invoke(app, ["train", str(a), str(b), "--config", str(cfg), "--lambda-pixel", "2", "--no-cycle-ramp",
                                 "--quiet"])
    assert result.exit_code == 0, result.output
    saved = json.loads((tmp_path / "runs" / "fromfile" / "config.json").read_text())
    assert saved["step"] == 3 and saved["model"]["ngf"] == 4
    assert saved["train"]["lambda_pixel"] == 2.0  # the command line beats the file
    assert saved["train"]["cycle_ramp"] is False and saved["model"]["guide_mix"] is True  # a switch, either way
    bad = tmp_path / "bad.toml"
    bad.write_text("stepz = 3\n")
    result = runner.invoke(app, ["train", str(a), str(b), "--config", str(bad)])
    assert result.exit_code == 1 and "stepz" in result.output


class Recorder:
    """A reporter that keeps the trainer's warnings."""

    def __init__(self):
        self.warnings = []

    def start(self, info): pass
    def advance(self, step, metrics): pass
    def saved(self, step, path): pass

    def warn(self, message):
        self.warnings.append(message)


def _trainer(run_dir, steps=8, resume=False, model=None, **options):
    mc = ModelConfig(**{"ngf": 4, "n_blocks": 1, "ndf": 4, "image_size": 32, **(model or {})})
    tc = TrainConfig(**{"steps": steps, "workers": 0, "seed": 3, "device": "cpu", "log_every": 2, "sample_every": 100,
                        "save_every": 100, "pool_size": 3, "load_size": 36, **options})
    src_a = DemoSource("a", seed=3, size=40, count=5)
    src_b = DemoSource("b", seed=3, size=40, count=7)
    return Trainer(mc, tc, src_a, src_b, run_dir=run_dir, resume=resume, reporter=Recorder())


@pytest.mark.parametrize("model", [None, {"guide_mix": True}], ids=["defaults", "guide-mix"])
def test_resume_is_exact(tmp_path, model):
    """N steps, stop, resume, N more == 2N straight: weights, optimisers, pools and data order."""
    straight = _trainer(tmp_path / "straight", model=model)
    straight.fit()
    first = _trainer(tmp_path / "split", model=model)
    first.fit(stop_at=4)
    first.save()
    second = _trainer(tmp_path / "split", resume=True, model=model)
    assert second.step == 4
    second.fit()
    for (name, p), (_, q) in zip(straight.model.state_dict().items(), second.model.state_dict().items()):
        assert torch.equal(p, q), name
    assert straight.opt_d.param_groups[0]["lr"] == second.opt_d.param_groups[0]["lr"]


def test_a_topped_up_discriminator_batch_resumes_exactly_and_changes_the_run(tmp_path):
    """--d-batch: the replay stores are saved with the pools, so a resumed run goes on as a straight one;
    and the option does change what is learnt."""
    straight = _trainer(tmp_path / "straight", d_batch=3)
    straight.fit()
    first = _trainer(tmp_path / "split", d_batch=3)
    first.fit(stop_at=4)
    first.save()
    second = _trainer(tmp_path / "split", resume=True, d_batch=3)
    assert [len(r.images) for r in second.replay.values()] == [4, 4]
    second.fit()
    for (name, p), (_, q) in zip(straight.model.state_dict().items(), second.model.state_dict().items()):
        assert torch.equal(p, q), name
    plain = _trainer(tmp_path / "plain")
    plain.fit()
    assert any(not torch.equal(p, q) for p, q in zip(plain.model.d_b.state_dict().values(),
                                                      straight.model.d_b.state_dict().values()))


def test_weight_average_is_saved_and_resumes_exactly(tmp_path):
    """With --ema, model.safetensors holds the averaged generators, and resume restores both."""
    from aggan_cli.checkpoint import load_generators

    straight = _trainer(tmp_path / "straight", ema=0.5)
    straight.fit()
    first = _trainer(tmp_path / "split", ema=0.5)
    first.fit(stop_at=4)
    second = _trainer(tmp_path / "split", resume=True, ema=0.5)
    second.fit()
    g_ab, _, _ = load_generators(tmp_path / "straight")
    for (name, p), (_, q), (_, live) in zip(g_ab.state_dict().items(), straight.ema["g_ab"].network.state_dict().items(),
                                            straight.model.g_ab.state_dict().items()):
        assert torch.equal(p, q), name  # the file holds the average ...
    assert any(not torch.equal(a, b) for a, b in zip(g_ab.state_dict().values(), straight.model.g_ab.state_dict().values()))
    for a, b in zip(straight.ema["g_ab"].network.state_dict().values(), second.ema["g_ab"].network.state_dict().values()):
        assert torch.equal(a, b)  # ... and a resumed run averages exactly as a straight one
    for a, b in zip(straight.model.state_dict().values(), second.model.state_dict().values()):
        assert torch.equal(a, b)


def test_learning_rate_is_constant_then_decays_to_zero(tmp_path):
    t = _trainer(tmp_path / "lr", steps=8)
    assert [t.schedule.lr_factor(s) for s in (0, 3, 4, 6, 8)] == [1.0, 1.0, 1.0, 0.5, 0.0]


def test_data_order_is_independent_of_workers_and_sharded_by_rank(tmp_path):
    a, b = make_domains(tmp_path, n_a=5, n_b=3)
    ds = UnpairedDataset(open_domain(a, "A", minimum=1), open_domain(b, "B", minimum=1), size=32, load_size=36,
                         flip=True, seed=0)
    assert len(ds) == 5  # one epoch = max(|A|, |B|)
    torch.testing.assert_close(ds[(0, 2)]["a"], ds[(0, 2)]["a"])
    keys = list(zip(range(10), EpochSampler(5, seed=0)))
    assert sorted(k[1][1] for k in keys[:5]) == [0, 1, 2, 3, 4]  # each epoch a permutation
    r0 = [k for _, k in zip(range(4), EpochSampler(4, seed=0, rank=0, world=2))]
    r1 = [k for _, k in zip(range(4), EpochSampler(4, seed=0, rank=1, world=2))]
    assert {i for _, i in r0[:2]}.isdisjoint({i for _, i in r1[:2]})  # disjoint shards per epoch
    resumed = [k for _, k in zip(range(3), EpochSampler(5, seed=0, start=7))]
    assert resumed == [k for _, k in keys[7:10]]


def test_open_domain_rejects_folder_without_enough_images(tmp_path):
    with pytest.raises(DataError, match="does not exist"):
        open_domain(tmp_path / "x", "DOMAIN_A", minimum=1)


def test_collapse_warning_only_recommends_options_that_exist():
    import re

    from aggan_cli.trainer import collapse_message

    import typer

    train_command = typer.main.get_command(app).commands["train"]
    known = {opt for param in train_command.params for opt in (*param.opts, *param.secondary_opts)}
    paper = collapse_message("a→b", "collapsed", 0.001, ModelConfig(discriminator="global"),
                             TrainConfig(lambda_floor=0, identity_negatives=False, cycle_ramp=False))
    saturated = collapse_message("a→b", "saturated", 0.99, ModelConfig(), TrainConfig())
    flags = set(re.findall(r"--[a-z][a-z-]+", paper + saturated))
    assert {"--lambda-floor", "--identity-negatives", "--discriminator", "--cycle-ramp"} <= flags
    assert flags <= known, flags - known


def test_weight_average_with_batchnorm_translates_like_the_weights_it_averages(tmp_path, monkeypatch):
    """--ema with --norm batch: the saved average carries BatchNorm's running statistics (averaged with the
    weights, never touched by sample-grid passes), so `aggan translate` with it gives what the live
    generators it averages give (decay 0.01: the average is nearly the live weights)."""
    import numpy as np
    from PIL import Image

    from aggan_cli.checkpoint import load_run, load_training_state, save_run
    from aggan_cli.networks import AttentionGenerator

    monkeypatch.chdir(tmp_path)
    a, b = make_domains(tmp_path)
    result = runner.invoke(app, ["train", str(a), str(b), "--steps", "6", "--norm", "batch", "--ema", "0.01",
                                 "--batch-size", "2", *TINY])
    assert result.exit_code == 0, result.output
    run = tmp_path / "runs" / "smile"
    saved, live = load_run(run), load_training_state(run)
    for key, value in live["live_g_ab"].items():
        if "running_var" in key:
            torch.testing.assert_close(saved.generators[f"g_ab.{key}"], value, rtol=0.05, atol=1e-4)
    # the live generators as a checkpoint of their own, to translate with
    cfg = saved.model_config
    nets = []
    for name in ("g_ab", "g_ba"):
        g = AttentionGenerator.from_config(cfg)
        g.load_state_dict(live[f"live_{name}"])
        nets.append(g)
    save_run(tmp_path / "live", model_config=cfg, g_ab=nets[0], g_ba=nets[1], step=6)
    photo = write_rgb(tmp_path / "photo.png", (40, 36), seed=3)
    outputs = []
    for ckpt in (run, tmp_path / "live"):
        out = tmp_path / f"out-{ckpt.name}"
        done = runner.invoke(app, ["translate", str(photo), "--ckpt", str(ckpt), "--out", str(out), "--device", "cpu"])
        assert done.exit_code == 0, done.output
        outputs.append(np.asarray(Image.open(out / "photo.png"), dtype=np.float64))
    mse = np.mean((outputs[0] - outputs[1]) ** 2)
    assert 10 * np.log10(255 ** 2 / max(mse, 1e-10)) > 35, mse  # PSNR: the same picture


def test_a_name_longer_than_the_file_system_allows_is_one_line(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    a, b = make_domains(tmp_path)
    result = runner.invoke(app, ["train", str(a), str(b), "--steps", "1", *TINY, "--name", "x" * 300])
    assert result.exit_code == 1 and "Traceback" not in result.output, result.output
    lines = [line for line in result.output.splitlines() if line.startswith("error:")]
    assert len(lines) == 1 and "300 bytes long" in lines[0] and "shorter --name" in lines[0], result.output


def test_a_size_that_only_looks_like_a_number_is_a_usage_error(tmp_path):
    result = runner.invoke(app, ["train", str(tmp_path), str(tmp_path), "--size", "²"])
    assert result.exit_code == 2 and "Traceback" not in result.output


def test_a_disk_full_before_the_first_save_does_not_advise_resume(tmp_path, monkeypatch):
    import errno
    import os

    import aggan_cli.checkpoint as checkpoint

    def full(path, data):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(checkpoint, "write_durably", full)
    a, b = make_domains(tmp_path)
    result = runner.invoke(app, ["train", str(a), str(b), "--steps", "2", *TINY])
    lines = [line for line in result.output.splitlines() if line.startswith("error:")]
    assert result.exit_code == 1 and len(lines) == 1, result.output
    assert "No checkpoint had been saved yet" in lines[0] and "start the run again" in lines[0]
    assert "continue with --resume" not in lines[0]


def test_the_same_folder_twice_and_runs_inside_a_domain_are_warned_about(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    a, _ = make_domains(tmp_path)
    result = runner.invoke(app, ["train", str(a), str(a), "--steps", "1", "--runs-dir", str(a / "runs"), *TINY])
    assert result.exit_code == 0, result.output  # legal, and trained
    warnings = [line for line in result.output.splitlines() if line.startswith("warning:")]
    assert any("DOMAIN_A and DOMAIN_B are the same folder" in w for w in warnings), warnings
    assert any("lies inside DOMAIN_A" in w for w in warnings) and any("lies inside DOMAIN_B" in w for w in warnings)


@pytest.mark.slow  # worker processes: ~40 s on a loaded 2-core machine
def test_more_workers_than_cores_is_one_line_of_ours_not_pytorchs(tmp_path):
    """A real process (PyTorch's warning goes to stderr there): one line that says what to do instead of
    PyTorch's paragraph, printed twice."""
    from aggan_cli.config import MAX_WORKERS
    from aggan_cli.trainer import usable_cores

    from processes import start

    workers = usable_cores() + 1
    if workers > MAX_WORKERS:
        pytest.skip(f"this machine has {workers - 1} cores: more workers than cores is refused by the bound")
    a, b = make_domains(tmp_path)
    process = start(["train", a, b, "--steps", "2", *TINY[:-3], "--workers", workers, "--quiet"], tmp_path)
    assert process.wait() == 0, process.log()
    log = process.log()
    assert "This DataLoader will create" not in log, log
    assert len([line for line in log.splitlines() if line.startswith(f"warning: --workers {workers}")]) == 1, log


@pytest.mark.slow  # a fresh interpreter, then a 1024-px step until memory runs out: ~35 s loaded
@pytest.mark.skipif(not Path("/proc/self/status").exists(), reason="the address-space limit is set from /proc (Linux)")
def test_running_out_of_memory_is_one_line_with_the_request_and_what_to_lower(tmp_path):
    """A real process whose address space is limited to what it holds after start-up plus 1.5 GiB, asked to
    train at 1024 px: the allocator refuses, and the answer is one line, not a traceback."""
    import subprocess
    import sys
    import textwrap

    a, b = make_domains(tmp_path)
    script = textwrap.dedent("""
        import resource, sys
        for module in ("torch", "torchvision", "matplotlib.pyplot", "aggan_cli.cli", "aggan_cli.train_cli",
                       "aggan_cli.trainer", "aggan_cli.visuals", "aggan_cli.modelcard"):
            __import__(module)
        with open("/proc/self/status") as status:
            size = next(int(line.split()[1]) for line in status if line.startswith("VmSize:")) * 1024
        resource.setrlimit(resource.RLIMIT_AS, (size + 1536 * 2 ** 20, resource.RLIM_INFINITY))
        sys.argv = ["aggan", *sys.argv[1:]]
        from aggan_cli.cli import main
        main()
    """)
    command = [sys.executable, "-c", script, "train", str(a), str(b), "--steps", "1", "--size", "1024", "--ngf", "64",
               "--n-blocks", "2", "--ndf", "8", "--workers", "0", "--quiet", "--device", "cpu"]
    done = subprocess.run(command, cwd=tmp_path, capture_output=True, text=True, timeout=1800,
                          env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert done.returncode == 1 and "Traceback" not in done.stderr, done.stderr[-3000:]
    lines = [line for line in done.stderr.splitlines() if line.startswith("error:")]
    assert len(lines) == 1, done.stderr
    assert "out of memory" in lines[0] and "a request for" in lines[0] and "size 1024" in lines[0]
    assert "lower --size, --ngf or --n-blocks" in lines[0] and "--batch-size" not in lines[0]  # batch 1 already


def test_the_learned_guide_mix_is_logged_plotted_saved_and_told(tmp_path, monkeypatch):
    """--guide-mix: each generator's share of the guide is in metrics.jsonl at every log, the summary
    says what was learned, and the saved generators carry it (translating uses it)."""
    from aggan_cli.checkpoint import load_generators

    monkeypatch.chdir(tmp_path)
    a, b = make_domains(tmp_path)
    result = runner.invoke(app, ["train", str(a), str(b), "--steps", "6", "--log-every", "3", "--guide-mix", *TINY])
    assert result.exit_code == 0, result.output
    run = tmp_path / "runs" / "smile"
    rows = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows] == [3, 6] and all(0 < r[k] < 1 for r in rows for k in ("guide_ab", "guide_ba"))
    g_ab, g_ba, _ = load_generators(run)
    told = f"share of the mask guide learned (--guide-mix): neutral→smile {g_ab.guide_weight().item():.2f}, " \
           f"smile→neutral {g_ba.guide_weight().item():.2f}"
    assert told in " ".join(result.output.split()), result.output
    assert json.loads((run / "config.json").read_text())["model"]["guide_mix"] is True
