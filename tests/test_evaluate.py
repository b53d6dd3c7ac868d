"""``aggan evaluate`` on plain folders of inputs, twins and masks, through the real command line."""

from __future__ import annotations

import json
import math
import shutil

import pytest
from typer.testing import CliRunner

from aggan_cli.cli import app
from aggan_cli.tasks import write_test_split

runner = CliRunner()


@pytest.fixture(scope="module")
def split(tmp_path_factory):
    folder = tmp_path_factory.mktemp("split")
    write_test_split("recolour", folder, seed=0, size=32, count=5)
    return folder


def _constant_mask_ckpt(folder, bias: float, seed: int):
    """A checkpoint whose a→b mask logit is ``bias`` everywhere (sigmoid ±30: exactly 0 or 1)."""
    import torch

    from aggan_cli.checkpoint import save_run
    from aggan_cli.config import ModelConfig
    from aggan_cli.networks import AGGAN

    torch.manual_seed(seed)
    config = ModelConfig(ngf=4, n_blocks=0, image_size=32, mask_guide=0)  # the mask exactly as set below
    model = AGGAN(config, with_discriminators=False)
    with torch.no_grad():
        model.g_ab.net[-1].weight[0].zero_()
        model.g_ab.net[-1].bias[0].fill_(bias)
    save_run(folder, model_config=config, g_ab=model.g_ab, g_ba=model.g_ba, step=1, domains=("warm", "cool"))
    return folder


@pytest.fixture(scope="module")
def blank_ckpt(tmp_path_factory):
    """A checkpoint whose a→b mask is 0 everywhere: its output is its input, bit for bit."""
    return _constant_mask_ckpt(tmp_path_factory.mktemp("runs") / "blank", -30.0, seed=0)


@pytest.fixture(scope="module")
def open_ckpt(tmp_path_factory):
    """A checkpoint whose a→b mask is 1 everywhere: every output is its random content, background too."""
    return _constant_mask_ckpt(tmp_path_factory.mktemp("runs") / "open", 30.0, seed=1)


def _json(result):
    assert result.exit_code == 0, result.output
    return json.loads(result.stdout)


def test_scores_a_folder_with_twins_and_masks(split, blank_ckpt):
    out = _json(runner.invoke(app, ["evaluate", str(split / "inputs"), "--ckpt", str(blank_ckpt), "--twins",
                                    str(split / "twins"), "--masks", str(split / "masks"), "--json"]))
    assert out["count"] == 5
    assert out["background_psnr"] == "inf" and out["exact_fraction"] == 1.0  # nothing changed, nothing touched
    assert out["foreground_gain"] == 0.0 and out["mask_iou"] == 0.0
    assert out["missed_fraction"] == 1.0 and out["background_psnr_found"] is None  # a shut mask finds no object
    assert out["rim_inside"] < 1e-6 and out["rim_outside"] < 1e-6  # a closed mask reaches neither side of the edge
    assert out["foreground_psnr"] == out["identity_foreground_psnr"] < 20


def test_masks_alone_and_twins_alone(split, blank_ckpt):
    only_masks = _json(runner.invoke(app, ["evaluate", str(split / "inputs"), "--ckpt", str(blank_ckpt),
                                           "--masks", str(split / "masks"), "--json"]))
    assert only_masks["mask_auc"] == 0.5 and only_masks["foreground_psnr"] is None  # no twins: no foreground figure
    only_twins = _json(runner.invoke(app, ["evaluate", str(split / "inputs"), "--ckpt", str(blank_ckpt),
                                           "--twins", str(split / "twins"), "--json"]))
    assert math.isfinite(only_twins["image_psnr"]) and only_twins["mask_auc"] == 0.5  # region from the twins


def test_the_table_names_each_measure(split, blank_ckpt):
    result = runner.invoke(app, ["evaluate", str(split / "inputs"), "--ckpt", str(blank_ckpt), "--twins",
                                 str(split / "twins"), "--masks", str(split / "masks")])
    assert result.exit_code == 0, result.output
    for text in ("background PSNR", "mask IoU at 0.5", "∞", "gain over output = input", "just inside the region's edge",
                 "images whose object the mask missed (IoU < 0.1)"):
        assert text in result.stdout


def test_the_bundled_demo_reproduces_its_recorded_self_score(tmp_path):
    """Scored by `aggan evaluate` (the translate pipeline) on the faces it was scored on when trained."""
    from aggan_cli.checkpoint import read_config
    from aggan_cli.weights import bundled_path, REGISTRY

    recorded = read_config(bundled_path(REGISTRY["demo-smile"]) / "config.json")["demo_score"]
    write_test_split("faces", tmp_path, seed=1000, size=48, count=64)
    out = _json(runner.invoke(app, ["evaluate", str(tmp_path / "inputs"), "--ckpt", "demo-smile", "--twins",
                                    str(tmp_path / "twins"), "--masks", str(tmp_path / "masks"), "--json"]))
    assert out["mask_auc"] == pytest.approx(recorded["mask_auc"], abs=0.002)
    assert out["background_psnr"] == pytest.approx(recorded["background_psnr"], abs=0.3)
    assert out["foreground_psnr"] == pytest.approx(recorded["foreground_psnr"], abs=0.3)


@pytest.mark.parametrize("damage, message", [
    ("no-folders", "give --twins DIR"),
    ("missing-twin", "no twin for input 002"),
    ("wrong-size", "must be the same size"),
    ("not-a-folder", "is not a folder"),
])
def test_bad_ground_truth_is_one_clear_line(split, blank_ckpt, tmp_path, damage, message):
    twins = tmp_path / "twins"
    shutil.copytree(split / "twins", twins)
    args = ["evaluate", str(split / "inputs"), "--ckpt", str(blank_ckpt), "--twins", str(twins)]
    if damage == "no-folders":
        args = args[:4]
    elif damage == "missing-twin":
        (twins / "002.png").unlink()
    elif damage == "wrong-size":
        from PIL import Image

        Image.new("RGB", (20, 20)).save(twins / "001.png")
    else:
        args[-1] = str(twins / "001.png")
    result = runner.invoke(app, args)
    assert result.exit_code == 1
    errors = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and message in errors[0] and "Traceback" not in result.output


def test_demo_task_names_match_the_built_in_tasks():
    from aggan_cli.config import DEMO_TASKS
    from aggan_cli.tasks import TASKS

    assert sorted(DEMO_TASKS) == sorted(TASKS)
    assert DEMO_TASKS[0] == "faces"  # --demo alone keeps training on the faces


def test_train_demo_task_scores_every_save_keeps_the_best_and_self_scores(tmp_path):
    """`aggan train --demo recolour` in a real process: each save is scored into metrics.jsonl, the best
    save is a checkpoint of its own, and the end prints the table and writes demo-eval/."""
    import subprocess
    import sys

    runs = tmp_path / "runs"
    command = [sys.executable, "-m", "aggan_cli", "train", "--demo", "recolour", "--steps", "4", "--save-every", "2",
               "--size", "32", "--ngf", "4", "--n-blocks", "0", "--ndf", "8", "--runs-dir", str(runs), "-q"]
    out = subprocess.run(command, capture_output=True, text=True, timeout=900, cwd=tmp_path)
    assert out.returncode == 0, out.stderr
    run = runs / "demo-recolour"
    assert out.stdout.strip() == str(run)
    assert "recolour" in out.stderr and "mask IoU at 0.5" in out.stderr and "background PSNR" in out.stderr
    evals = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines() if '"eval"' in line]
    assert [e["step"] for e in evals] == [2, 4]
    assert all(e["eval"]["count"] == 64 and 0.0 <= e["eval"]["mask_auc"] <= 1.0 for e in evals)
    best = json.loads((run / "best" / "config.json").read_text())
    assert best["step"] in (2, 4) and (run / "best" / "model.safetensors").is_file()
    config = json.loads((run / "config.json").read_text())
    assert config["demo_score"]["count"] == 64 and "mask_iou" in config["demo_score"]
    assert config["train"]["demo"] == "recolour"
    for sub in ("inputs", "twins", "masks", "outputs", "attention"):
        assert len(list((run / "demo-eval" / sub).glob("*.png"))) == 64, sub
    # the held-out scenes are laid out for aggan evaluate, and the best save is a checkpoint like any other
    scored = runner.invoke(app, ["evaluate", str(run / "demo-eval" / "inputs"), "--ckpt", str(run / "best"),
                                 "--twins", str(run / "demo-eval" / "twins"), "--masks", str(run / "demo-eval" / "masks"),
                                 "--json"])
    assert scored.exit_code == 0, scored.output
    assert json.loads(scored.stdout)["count"] == 64


def test_train_eval_dir_scores_every_save_and_a_bad_one_is_refused_before_training(tmp_path, split):
    import subprocess
    import sys

    from aggan_cli.tasks import TaskSource

    for domain in ("a", "b"):
        source = TaskSource("recolour", domain, seed=3, size=32, count=4)
        (tmp_path / domain).mkdir()
        for i in range(len(source)):
            source.load(i).save(tmp_path / domain / f"{i}.png")
    base = [sys.executable, "-m", "aggan_cli", "train", str(tmp_path / "a"), str(tmp_path / "b"), "--steps", "2",
            "--save-every", "1", "--size", "32", "--ngf", "4", "--n-blocks", "0", "--ndf", "8", "--workers", "0",
            "--runs-dir", str(tmp_path / "runs"), "-q"]
    bad = subprocess.run([*base, "--eval", str(tmp_path / "a")], capture_output=True, text=True, timeout=900)
    assert bad.returncode == 1 and "inputs/" in bad.stderr and "Traceback" not in bad.stderr, bad.stderr
    assert not (tmp_path / "runs" / "b" / "model.safetensors").exists()
    out = subprocess.run([*base, "--eval", str(split)], capture_output=True, text=True, timeout=900)
    assert out.returncode == 0, out.stderr
    run = tmp_path / "runs" / "b"
    evals = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines() if '"eval"' in line]
    assert [e["step"] for e in evals] == [1, 2] and all(e["eval"]["count"] == 5 for e in evals)
    assert (run / "best" / "model.safetensors").is_file()


def test_an_input_that_does_not_exist_is_named_in_one_line(split, blank_ckpt, tmp_path):
    missing = tmp_path / "nope.png"
    result = runner.invoke(app, ["evaluate", str(missing), "--ckpt", str(blank_ckpt), "--twins", str(split / "twins")])
    assert result.exit_code == 1
    errors = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert errors == [f"error: {missing}: no such file, folder or pattern"], result.stderr


def test_worst_lists_the_images_whose_background_changed_most(split, open_ckpt, blank_ckpt):
    """--worst N: the images ranked by their background's squared error (outside the true region), each
    with its own background PSNR, its share of the set's error and its IoU, computed here anew from what
    the checkpoint writes for each input."""
    import numpy as np
    from PIL import Image

    from aggan_cli.inference import Translator
    from aggan_cli.scoring import psnr

    base = ["evaluate", str(split / "inputs"), "--ckpt", str(open_ckpt), "--masks", str(split / "masks")]
    out = _json(runner.invoke(app, [*base, "--worst", "9", "--json"]))
    rows = out["worst"]
    assert len(rows) == 5  # all five changed; nine asked
    translator = Translator.load(str(open_ckpt), device="cpu")
    expected = {}
    for path in sorted((split / "inputs").iterdir()):
        region = np.asarray(Image.open(split / "masks" / path.name).convert("L")) > 127
        source = np.asarray(Image.open(path).convert("RGB"))
        output = np.asarray(translator.translate(Image.open(path)).image.convert("RGB"))
        error = ((output[~region].astype(float) - source[~region].astype(float)) ** 2).sum()
        expected[path.stem] = (error, psnr(output[~region], source[~region]), float(region.sum() / region.size))
    total = sum(e for e, _, _ in expected.values())
    assert [r["name"] for r in rows] == sorted(expected, key=lambda n: -expected[n][0])
    for row in rows:
        error, background, fraction = expected[row["name"]]
        assert row["background_psnr"] == pytest.approx(background, abs=1e-9)
        assert row["background_error_share"] == pytest.approx(error / total, rel=1e-9)
        assert row["mask_iou"] == pytest.approx(fraction)  # the mask is on everywhere: IoU = region / image

    table = runner.invoke(app, [*base, "--worst", "2"])
    assert table.exit_code == 0, table.output
    assert "the 2 images whose background changed most" in table.stdout and rows[0]["name"] in table.stdout
    untouched = runner.invoke(app, ["evaluate", str(split / "inputs"), "--ckpt", str(blank_ckpt), "--masks",
                                    str(split / "masks"), "--worst", "3"])
    assert untouched.exit_code == 0 and "no image's background changed" in untouched.stdout
    assert _json(runner.invoke(app, [*base, "--json"])).get("worst") is None  # only when asked
    assert runner.invoke(app, [*base, "--worst", "-1"]).exit_code == 2


def test_the_best_save_and_its_tiebreak_survive_a_resume(tmp_path, split):
    """The best save's quality and mask IoU are kept in the training state, so a resumed run weighs its new
    saves against the same best as an unbroken one would."""
    from aggan_cli.checkpoint import load_training_state
    from aggan_cli.config import ModelConfig, TrainConfig
    from aggan_cli.data import DemoSource
    from aggan_cli.scoring import Evaluator
    from aggan_cli.trainer import Trainer

    from test_train import Recorder

    def trainer(resume):
        mc = ModelConfig(ngf=4, n_blocks=0, ndf=4, image_size=32)
        tc = TrainConfig(steps=4, workers=0, seed=3, device="cpu", log_every=2, sample_every=100, save_every=1,
                         pool_size=3, load_size=36)
        return Trainer(mc, tc, DemoSource("a", seed=3, size=40, count=5), DemoSource("b", seed=3, size=40, count=7),
                       run_dir=tmp_path / "run", resume=resume, reporter=Recorder(), evaluator=Evaluator.from_folder(split))

    first = trainer(False)
    first.fit(stop_at=2)
    first.save()
    best = load_training_state(tmp_path / "run")["best"]
    assert best["step"] == first.best["step"] in (1, 2)
    assert best["quality"] == pytest.approx(first.best["quality"]) and 0.0 <= best["tiebreak"] <= 1.0
    assert best["tiebreak"] == pytest.approx(first.best["tiebreak"])
    second = trainer(True)
    assert second.best["step"] == best["step"] and second.best["tiebreak"] == pytest.approx(best["tiebreak"])
    second.fit()
    evals = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines() if '"eval"' in line]
    assert [e["step"] for e in evals] == [1, 2, 3, 4]
    assert json.loads((tmp_path / "run" / "best" / "config.json").read_text())["step"] == second.best["step"]
