"""One source of truth for the training options: each configuration field is a flag of `aggan train`, a
key of a TOML file and an entry of config.json, checked by the same rule, refused in the same words."""

from __future__ import annotations

import json
import math
import shutil
from pathlib import Path

import pytest
import typer
from typer.testing import CliRunner

from aggan_cli.cli import app
from aggan_cli.config import DEMO_TASKS, PANELS, TrainConfig, all_fields, field_for

from outcomes import assert_one_line_error
from test_train import TINY, make_domains, train_tiny

runner = CliRunner()


def train_command():
    return typer.main.get_command(app).commands["train"]


def parse(*args: str) -> dict:
    """What `aggan train ARGS` hands to the command, parsed by the real command line (nothing runs)."""
    return train_command().make_context("train", list(args)).params


def test_every_configuration_field_is_an_option_of_train_and_a_key_of_a_file():
    flags = {opt: param.name for param in train_command().params for opt in (*param.opts, *param.secondary_opts)}
    for field in all_fields():
        assert field_for(field.name) == field and field_for(field.flag[2:]) == field
        if field.option.cli:
            assert flags[field.flag] == field.name, field.name
    assert flags["--d-layers"] == "d_layers"  # saved in config.json, and settable like every other field


def test_train_help_shows_every_option_in_its_panel():
    result = runner.invoke(app, ["train", "--help"], env={"COLUMNS": "200"})
    assert result.exit_code == 0
    text = result.output
    positions = [text.index(f"─ {panel} ") for panel in PANELS]
    assert positions == sorted(positions)  # panels in their order
    for field in all_fields():
        if field.option.cli:
            panel = PANELS.index(field.option.panel)
            where = text.index(f" {field.flag} ")
            assert positions[panel] < where < (positions[panel + 1] if panel + 1 < len(PANELS) else len(text)), field


def test_demo_takes_an_optional_task_name():
    assert parse("--demo")["demo"].value == DEMO_TASKS[0]
    assert parse("--demo", "--steps", "5")["demo"].value == DEMO_TASKS[0]  # an option after it is not a task
    assert parse("--demo", DEMO_TASKS[0], "--steps", "5")["demo"].value == DEMO_TASKS[0]
    assert parse()["demo"] is None
    result = runner.invoke(app, ["train", "--demo", "no-such-task"])
    assert result.exit_code == 2 and "no-such-task" in result.output


def test_an_old_config_json_with_demo_true_or_false_still_loads():
    assert TrainConfig.from_dict({"demo": True, "extra": {}}).demo == "faces"
    assert TrainConfig.from_dict({"demo": False}).demo is None


# ---------------------------------------------------------------------------------------------
# TOML files: every value checked as its command-line option is

TINY_TOML = 'steps = 1\nsize = 32\nngf = 4\nn-blocks = 1\nndf = 4\nworkers = 0\n'


@pytest.mark.parametrize("line,key,rule", [
    ('demo = "no"', "demo", f"must be one of {', '.join(DEMO_TASKS)}, got 'no'"),
    ('flip = "no"', "flip", "must be true or false, got 'no'"),
    ("pool_size = true", "pool_size", "must be a whole number from 0 to 1000, got true"),
    ("runs_dir = 5", "runs_dir", "must be a folder path, got 5"),
    ('device = ["cpu"]', "device", "must be a device name, got ['cpu']"),
    ("steps = 2.5", "steps", "must be a whole number >= 1, got 2.5"),
    ("[train]\nlr = -1", "train.lr", "must be a number > 0, got -1"),
    ("size = 30", "size", "must be a multiple of 4 from 32 to 4096, got 30; try 32"),
])
def test_toml_values_are_checked_like_the_command_line_option(tmp_path, monkeypatch, line, key, rule):
    monkeypatch.chdir(tmp_path)
    a, b = make_domains(tmp_path)
    config = tmp_path / "train.toml"
    base = [entry for entry in TINY_TOML.splitlines() if not entry.startswith(f"{key} ")]  # TOML forbids twice
    config.write_text("\n".join([*base, line]) + "\n")
    line_out = assert_one_line_error(runner.invoke(app, ["train", str(a), str(b), "--config", str(config), "--quiet"]))
    assert f"{config}: {key} {rule}" in line_out
    assert not (tmp_path / "runs").exists()


@pytest.mark.parametrize("flag,value,rule", [
    ("--pool-size", "-1", "must be a whole number from 0 to 1000, got -1"),
    ("--size", "30", "must be a multiple of 4 from 32 to 4096, got 30; try 32"),
    ("--lr", "nan", "must be a number > 0, got nan"),
])
def test_the_command_line_refuses_in_the_same_words(tmp_path, monkeypatch, flag, value, rule):
    monkeypatch.chdir(tmp_path)
    a, b = make_domains(tmp_path)
    result = runner.invoke(app, ["train", str(a), str(b), *TINY, flag, value])
    assert f"error: {flag} {rule}" in assert_one_line_error(result)


def test_config_that_is_a_folder_is_one_line(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    a, b = make_domains(tmp_path)
    result = runner.invoke(app, ["train", str(a), str(b), "--config", str(tmp_path)])
    assert "is a folder" in assert_one_line_error(result)


def test_a_toml_file_sets_what_had_no_flag_before(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    a, b = make_domains(tmp_path)
    config = tmp_path / "train.toml"
    config.write_text(TINY_TOML + "[model]\nd-layers = 2\n[train]\nflip = false\nbeta1 = 0\n")
    result = runner.invoke(app, ["train", str(a), str(b), "--config", str(config), "--quiet", "--name", "t"])
    assert result.exit_code == 0, result.output
    saved = json.loads((tmp_path / "runs" / "t" / "config.json").read_text())
    assert saved["model"]["d_layers"] == 2 and saved["train"]["flip"] is False and saved["train"]["beta1"] == 0.0


# ---------------------------------------------------------------------------------------------
# config.json of a run being resumed


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory) -> Path:
    return train_tiny(tmp_path_factory.mktemp("finished"))


def _edited_run(tmp_path: Path, finished_run: Path, edit) -> Path:
    shutil.copytree(finished_run, tmp_path / "runs" / "smile")
    config_path = tmp_path / "runs" / "smile" / "config.json"
    config = json.loads(config_path.read_text())
    edit(config)
    config_path.write_text(json.dumps(config))
    return config_path.relative_to(tmp_path)  # as the messages name it: under the relative --runs-dir


def test_resume_ignores_an_unknown_train_key_with_a_warning(tmp_path, monkeypatch, finished_run):
    monkeypatch.chdir(tmp_path)
    config_path = _edited_run(tmp_path, finished_run, lambda c: c["train"].update(warmup_steps=100))
    result = runner.invoke(app, ["train", "--name", "smile", "--resume", "--steps", "3", "--quiet"])
    assert result.exit_code == 0, result.output
    warnings = [line for line in result.output.splitlines() if line.startswith("warning:")]
    assert any(str(config_path) in w and "train.warmup_steps" in w and "newer aggan" in w for w in warnings), warnings
    assert json.loads((tmp_path / config_path).read_text())["step"] == 3


@pytest.mark.parametrize("edit,fragment", [
    (lambda c: c.update(train=[1, 2]), "the 'train' section is not a table of options (it is [1, 2])"),
    (lambda c: c.pop("model"), "the 'model' section is missing"),
    (lambda c: c["train"].update(steps="x"), "train.steps must be a whole number >= 1, got 'x'"),
    (lambda c: c["model"].update(ngf=10 ** 9), "model.ngf must be a whole number from 1 to 256"),
    (lambda c: c["model"].update(attention="v2"), "unknown model option 'attention'"),
])
def test_resume_of_a_malformed_config_json_names_the_file_and_the_key(tmp_path, monkeypatch, finished_run, edit,
                                                                       fragment):
    monkeypatch.chdir(tmp_path)
    config_path = _edited_run(tmp_path, finished_run, edit)
    line = assert_one_line_error(runner.invoke(app, ["train", "--name", "smile", "--resume", "--steps", "3"]))
    assert str(config_path) in line and fragment in line, line


def test_every_option_is_in_the_options_table_of_the_docs():
    docs = (Path(__file__).parents[1] / "docs" / "training.md").read_text(encoding="utf-8")
    table = docs[docs.index("## Options"):docs.index("## The run folder")]
    missing = [f.flag for f in all_fields() if f.option.cli and f"`{f.flag}" not in table]
    assert not missing, f"document these in docs/training.md's options table: {missing}"


def test_paper_is_exactly_the_papers_setup(tmp_path, monkeypatch):
    """Global discriminators, BatchNorm, the log-likelihood GAN loss of Eqs. 2-3, and none of our remedies."""
    monkeypatch.chdir(tmp_path)
    a, b = make_domains(tmp_path)
    result = runner.invoke(app, ["train", str(a), str(b), "--steps", "1", "--paper", *TINY])
    assert result.exit_code == 0, result.output
    saved = json.loads((tmp_path / "runs" / "smile" / "config.json").read_text())
    assert (saved["model"]["discriminator"], saved["model"]["norm"]) == ("global", "batch")
    assert saved["train"]["gan_loss"] == "vanilla"
    assert saved["train"]["lambda_floor"] == 0 and saved["train"]["identity_negatives"] is False
    assert saved["model"]["mask_guide"] == 0  # the paper's generator: the mask straight from its sigmoid
    assert saved["train"]["cycle_ramp"] is False  # the cycle loss at its full weight from the first step
    assert saved["train"]["own_pairs"] is False  # real images paired with the mask made for the other domain's
    assert saved["train"]["lambda_binary"] == 0  # masks left as soft as the objective makes them
    assert saved["train"]["lambda_identity"] == 0  # CycleGAN's identity loss is not in the paper
    assert saved["train"]["cycle_free_below"] == 0  # the cycle loss reaches every mask value
    assert saved["model"]["upsample"] == "transposed"  # the paper's decoder
    # and each stays one option away
    mixed = runner.invoke(app, ["train", str(a), str(b), "--steps", "1", "--paper", "--gan-loss", "lsgan", "--name",
                                "mixed", *TINY])
    assert mixed.exit_code == 0, mixed.output
    assert json.loads((tmp_path / "runs" / "mixed" / "config.json").read_text())["train"]["gan_loss"] == "lsgan"


def test_a_hinge_run_trains_saves_its_loss_and_resumes_with_it(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    a, b = make_domains(tmp_path)
    result = runner.invoke(app, ["train", str(a), str(b), "--steps", "2", "--gan-loss", "hinge", "--log-every", "1",
                                 *TINY])
    assert result.exit_code == 0, result.output
    run = tmp_path / "runs" / "smile"
    assert json.loads((run / "config.json").read_text())["train"]["gan_loss"] == "hinge"
    logged = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    steps = [r for r in logged if "g_total" in r]
    assert [r["step"] for r in steps] == [1, 2]
    # the generator pays minus the discriminator's score: its adversarial terms may be negative, all finite
    assert all(math.isfinite(r[k]) for r in steps for k in ("gan_ab", "agan_ab", "g_total", "d_total"))
    more = runner.invoke(app, ["train", "--name", "smile", "--resume", "--steps", "3"])
    assert more.exit_code == 0, more.output
    assert json.loads((run / "config.json").read_text())["train"]["gan_loss"] == "hinge"


def test_the_mask_guide_is_on_for_new_runs_and_off_for_checkpoints_saved_before_it_existed(tmp_path, monkeypatch):
    """A config.json written before ``mask_guide`` existed describes a generator trained without the filter:
    it loads with the filter off, whatever today's default, so its translations do not change."""
    from aggan_cli.checkpoint import load_generators
    from aggan_cli.config import ModelConfig

    monkeypatch.chdir(tmp_path)
    a, b = make_domains(tmp_path)
    result = runner.invoke(app, ["train", str(a), str(b), "--steps", "1", *TINY])
    assert result.exit_code == 0, result.output
    config = tmp_path / "runs" / "smile" / "config.json"
    saved = json.loads(config.read_text())
    assert saved["model"]["mask_guide"] == ModelConfig().mask_guide > 0
    assert load_generators(config.parent)[0].mask_guide == ModelConfig().mask_guide
    del saved["model"]["mask_guide"]
    config.write_text(json.dumps(saved))
    assert ModelConfig.from_dict(saved["model"]).mask_guide == 0
    assert load_generators(config.parent)[0].mask_guide == 0
    resumed = runner.invoke(app, ["train", "--name", "smile", "--resume", "--steps", "2", "--quiet"])
    assert resumed.exit_code == 0, resumed.output  # it goes on as it was trained, without the filter
    assert json.loads(config.read_text())["model"]["mask_guide"] == 0


def test_each_save_picks_the_guide_to_translate_with_and_translating_uses_it(tmp_path, monkeypatch):
    """config.json's ``translate`` section holds the radius each direction translates with and the agreement
    behind it; load_generators (so translate, evaluate and export) applies it, a run without the section
    translates with the trained radius, and a damaged one is refused in one line."""
    from aggan_cli.checkpoint import load_generators
    from aggan_cli.networks import snap_radii

    monkeypatch.chdir(tmp_path)
    a, b = make_domains(tmp_path)
    result = runner.invoke(app, ["train", str(a), str(b), "--steps", "2", "--save-every", "1", *TINY])
    assert result.exit_code == 0, result.output
    config = tmp_path / "runs" / "smile" / "config.json"
    saved = json.loads(config.read_text())
    section = saved["translate"]
    assert set(section["mask_guide"]) == set(section["agreement"]) == {"a2b", "b2a"}
    for direction in ("a2b", "b2a"):
        assert section["mask_guide"][direction] in snap_radii(3)
        assert set(section["agreement"][direction]) == {str(r) for r in snap_radii(3)}
    assert "| mask_guide when translating | a2b " in (config.parent / "README.md").read_text()  # the model card
    saved["translate"]["mask_guide"] = {"a2b": 6, "b2a": 4}
    config.write_text(json.dumps(saved))
    g_ab, g_ba, _ = load_generators(config.parent)
    assert (g_ab.mask_guide, g_ba.mask_guide) == (6, 4)
    del saved["translate"]
    config.write_text(json.dumps(saved))
    assert load_generators(config.parent)[0].mask_guide == saved["model"]["mask_guide"] == 3
    saved["translate"] = {"mask_guide": {"a2b": "wide", "b2a": 3}}
    config.write_text(json.dumps(saved))
    photo = shutil.copy(next(a.iterdir()), tmp_path / "photo.png")
    result = runner.invoke(app, ["translate", str(photo), "--ckpt", str(config.parent), "--out", str(tmp_path / "out")])
    assert_one_line_error(result, "config.json", "translate section", "a2b", "'wide'")
    assert not (tmp_path / "out").exists()


def test_translate_export_masks_and_evaluate_take_the_guide_radius_asked_for(tmp_path, monkeypatch):
    """``--mask-guide auto`` (the default) translates with the radius training picked, ``trained`` with the
    one it was trained with, a number with that radius (0: none); the header line and evaluate's report say
    which; the masks written are the library's for the same radius, and a wider radius changes them. A bad
    value is one line naming the option, before anything is written."""
    import numpy as np

    from aggan_cli import Translator

    monkeypatch.chdir(tmp_path)
    a, b = make_domains(tmp_path)
    result = runner.invoke(app, ["train", str(a), str(b), "--steps", "2", *TINY])
    assert result.exit_code == 0, result.output
    run = tmp_path / "runs" / "smile"
    saved = json.loads((run / "config.json").read_text())
    saved["translate"]["mask_guide"] = {"a2b": 6, "b2a": 4}
    (run / "config.json").write_text(json.dumps(saved))
    photo = shutil.copy(next(a.iterdir()), tmp_path / "photo.png")
    masks = {}
    for asked, radius, said in (([], 6, "mask guide 6 px"), (["--mask-guide", "trained"], 3, "mask guide 3 px"),
                                (["--mask-guide", "0"], 0, "no mask guide"), (["--mask-guide", "8"], 8, "mask guide 8 px")):
        out = tmp_path / f"masks-{radius}"
        result = runner.invoke(app, ["export-masks", str(photo), "--ckpt", str(run), "--out", str(out),
                                     "--format", "npy", "--no-overlay", *asked])
        assert result.exit_code == 0, result.output
        assert f"{said}\n" in result.stderr, result.stderr
        masks[radius] = np.load(out / "photo_mask.npy")
        chosen = asked[1] if asked else "auto"
        library = Translator.load(run, mask_guide=chosen if chosen in ("auto", "trained") else int(chosen))
        assert (library.mask_guide(), library.mask_guide("b2a")) == (radius, 4 if not asked else radius)
        np.testing.assert_allclose(library.translate(photo).mask, masks[radius], atol=1e-6)
    assert not np.allclose(masks[0], masks[8], atol=1e-3)  # the radius reaches the masks
    result = runner.invoke(app, ["translate", str(photo), "--ckpt", str(run), "--out", str(tmp_path / "t"),
                                 "--mask-guide", "4", "--direction", "b2a"])
    assert result.exit_code == 0 and "mask guide 4 px" in result.stderr, result.output
    result = runner.invoke(app, ["evaluate", str(photo), "--ckpt", str(run), "--twins", str(tmp_path),
                                 "--mask-guide", "trained", "--json"])
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["mask_guide"] == 3
    for command in ("translate", "export-masks", "evaluate"):
        for bad in ("17", "-1", "wide", "3.5"):
            out = tmp_path / f"bad-{command}"
            extra = ["--twins", str(tmp_path)] if command == "evaluate" else ["--out", str(out)]
            result = runner.invoke(app, [command, str(photo), "--ckpt", str(run), "--mask-guide", bad, *extra])
            assert_one_line_error(result, "--mask-guide", repr(bad))
            assert not out.exists()


def _trains_and_resumes_with(tmp_path, a, b, flag, text, key, value):
    """A one-step run with ``flag text`` saves ``key: value`` in config.json, and --resume goes on with it."""
    result = runner.invoke(app, ["train", str(a), str(b), "--steps", "1", flag, text, *TINY])
    assert result.exit_code == 0, result.output
    config = tmp_path / "runs" / "smile" / "config.json"
    assert json.loads(config.read_text())["train"][key] == value
    resumed = runner.invoke(app, ["train", "--name", "smile", "--resume", "--steps", "2", "--quiet"])
    assert resumed.exit_code == 0, resumed.output
    assert json.loads(config.read_text())["train"][key] == value


def test_cycle_free_below_reaches_the_loss_weights_is_saved_and_kept_on_resume(tmp_path, monkeypatch):
    """--cycle-free-below is saved in config.json, handed to the generators' objective, and --resume goes on
    with it; a value outside [0, 1] is refused in one line naming the flag, and no run folder is made."""
    from aggan_cli.config import ModelConfig
    from aggan_cli.data import DemoSource
    from aggan_cli.trainer import Trainer

    monkeypatch.chdir(tmp_path)
    a, b = make_domains(tmp_path)
    _trains_and_resumes_with(tmp_path, a, b, "--cycle-free-below", "0.1", "cycle_free_below", 0.1)
    assert TrainConfig.from_dict({}).cycle_free_below == 0  # older runs, and the default: off
    trainer = Trainer(ModelConfig(ngf=4, n_blocks=0, ndf=4, image_size=32),
                      TrainConfig(steps=4, workers=0, device="cpu", load_size=36, cycle_free_below=0.1),
                      DemoSource("a", seed=3, size=40, count=5), DemoSource("b", seed=3, size=40, count=5),
                      run_dir=tmp_path / "direct")
    assert [trainer.weights_at(step).cycle_free_below for step in (0, 2, 4)] == [0.1, 0.1, 0.1]
    for bad in ("1.5", "-0.1"):
        out = tmp_path / f"bad{bad}"
        refused = runner.invoke(app, ["train", str(a), str(b), "--cycle-free-below", bad, "--runs-dir", str(out), *TINY])
        assert_one_line_error(refused, "--cycle-free-below")
        assert not out.exists()


def test_the_cycle_ramp_is_kept_on_resume_and_off_for_runs_saved_before_it_existed(tmp_path, monkeypatch):
    """--cycle-ramp is a training option like any other: --resume goes on with it. A config.json written
    before the option existed describes a run trained with a constant cycle weight: it reads as off,
    whatever today's default, so resuming it half-way does not drop the cycle loss."""
    from aggan_cli.config import TrainConfig

    monkeypatch.chdir(tmp_path)
    a, b = make_domains(tmp_path)
    result = runner.invoke(app, ["train", str(a), str(b), "--steps", "1", "--cycle-ramp", *TINY])
    assert result.exit_code == 0, result.output
    config = tmp_path / "runs" / "smile" / "config.json"
    assert json.loads(config.read_text())["train"]["cycle_ramp"] is True
    resumed = runner.invoke(app, ["train", "--name", "smile", "--resume", "--steps", "2", "--quiet"])
    assert resumed.exit_code == 0, resumed.output
    saved = json.loads(config.read_text())
    assert saved["train"]["cycle_ramp"] is True
    del saved["train"]["cycle_ramp"]
    config.write_text(json.dumps(saved))
    assert TrainConfig.from_dict(saved["train"]).cycle_ramp is False
    resumed = runner.invoke(app, ["train", "--name", "smile", "--resume", "--steps", "3", "--quiet"])
    assert resumed.exit_code == 0, resumed.output
    assert json.loads(config.read_text())["train"]["cycle_ramp"] is False


def test_own_pairs_are_on_for_new_runs_kept_on_resume_and_off_for_runs_saved_before_they_existed(tmp_path, monkeypatch):
    """Own pairs are the default (docs/training.md, "What softens the mask late"); --no-own-pairs is the
    paper's pairing and --resume goes on with whichever a run was trained with. A config.json written
    before the option existed describes a run trained with the paper's pairs: it reads as off."""
    from aggan_cli.config import TrainConfig

    assert TrainConfig().own_pairs is True
    monkeypatch.chdir(tmp_path)
    a, b = make_domains(tmp_path)
    result = runner.invoke(app, ["train", str(a), str(b), "--steps", "1", *TINY])
    assert result.exit_code == 0, result.output
    assert json.loads((tmp_path / "runs" / "smile" / "config.json").read_text())["train"]["own_pairs"] is True
    result = runner.invoke(app, ["train", str(a), str(b), "--steps", "1", "--no-own-pairs", "--name", "paper", *TINY])
    assert result.exit_code == 0, result.output
    config = tmp_path / "runs" / "paper" / "config.json"
    assert json.loads(config.read_text())["train"]["own_pairs"] is False
    resumed = runner.invoke(app, ["train", "--name", "paper", "--resume", "--steps", "2", "--quiet"])
    assert resumed.exit_code == 0, resumed.output
    assert json.loads(config.read_text())["train"]["own_pairs"] is False
    saved = json.loads((tmp_path / "runs" / "smile" / "config.json").read_text())
    del saved["train"]["own_pairs"]
    assert TrainConfig.from_dict(saved["train"]).own_pairs is False


def test_the_binarisation_term_is_off_unless_asked_and_a_run_keeps_its_weight_on_resume(tmp_path, monkeypatch):
    """--lambda-binary is opt-in (docs/training.md, "Binary masks late"); a config.json written before the
    option existed describes a run trained without it and reads as 0, whatever the default becomes."""
    from aggan_cli.config import TrainConfig

    assert TrainConfig().lambda_binary == 0.0
    saved = TrainConfig(lambda_binary=10.0).to_dict()
    del saved["lambda_binary"]
    assert TrainConfig.from_dict(saved).lambda_binary == 0.0
    monkeypatch.chdir(tmp_path)
    a, b = make_domains(tmp_path)
    _trains_and_resumes_with(tmp_path, a, b, "--lambda-binary", "10", "lambda_binary", 10.0)
    negative = runner.invoke(app, ["train", str(a), str(b), "--steps", "1", "--lambda-binary", "-1", "--name", "neg", *TINY])
    assert negative.exit_code == 1 and "--lambda-binary must be a number >= 0" in negative.output


def test_a_run_saved_before_the_identity_loss_existed_reads_as_trained_without_it():
    from aggan_cli.config import TrainConfig

    saved = TrainConfig(lambda_identity=5.0).to_dict()
    assert TrainConfig.from_dict(saved).lambda_identity == 5.0
    del saved["lambda_identity"]
    assert TrainConfig.from_dict(saved).lambda_identity == 0.0


def test_the_decoder_resizes_unless_told_and_old_runs_read_as_transposed():
    from aggan_cli.config import ModelConfig

    assert ModelConfig().upsample == "resize"
    saved = ModelConfig(upsample="transposed").to_dict()
    assert ModelConfig.from_dict(saved).upsample == "transposed"
    saved = ModelConfig().to_dict()
    del saved["upsample"]  # a run saved before the option existed had transposed convolutions
    assert ModelConfig.from_dict(saved).upsample == "transposed"


def test_the_guide_mix_is_off_unless_told_needs_a_guide_and_old_runs_read_without_it(tmp_path, monkeypatch):
    from aggan_cli.config import ModelConfig

    assert ModelConfig().guide_mix is False
    saved = ModelConfig(guide_mix=True).to_dict()
    assert ModelConfig.from_dict(saved).guide_mix is True
    del saved["guide_mix"]  # a run saved before the option existed used the whole guide
    assert ModelConfig.from_dict(saved).guide_mix is False
    monkeypatch.chdir(tmp_path)
    a, b = make_domains(tmp_path)
    for nothing_to_mix in (["--mask-guide", "0"], ["--paper"]):
        result = runner.invoke(app, ["train", str(a), str(b), "--steps", "1", "--guide-mix", *nothing_to_mix, *TINY])
        assert_one_line_error(result, "--guide-mix")
        assert "--mask-guide" in result.output and not (tmp_path / "runs").exists()


def test_an_unknown_upsampling_is_a_usage_error_naming_the_choices(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    a, b = make_domains(tmp_path)
    result = runner.invoke(app, ["train", str(a), str(b), "--steps", "1", "--upsample", "bilinear", *TINY])
    assert result.exit_code == 2
    assert "bilinear" in result.output and "resize" in result.output
    assert not (tmp_path / "runs").exists()


def test_a_patch_too_deep_for_the_size_names_both_flags_and_writes_nothing(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    a, b = make_domains(tmp_path)
    result = runner.invoke(app, ["train", str(a), str(b), "--steps", "1", *TINY, "--d-layers", "4"])  # 32 px: needs 48
    line = assert_one_line_error(result, "--d-layers", "--size", "at least 48 pixels, got 32")
    assert "fewer discriminator layers" in line
    assert not (tmp_path / "runs").exists()


def test_pasted_negatives_are_off_unless_asked_and_the_flag_reaches_the_run(tmp_path, monkeypatch):
    """--paste-negatives is opt-in (docs/training.md, "Pasted negatives"); a config.json written before the
    option existed describes a run trained without it."""
    from aggan_cli.config import TrainConfig

    assert TrainConfig().paste_negatives is False
    saved = TrainConfig(paste_negatives=True).to_dict()
    del saved["paste_negatives"]
    assert TrainConfig.from_dict(saved).paste_negatives is False
    monkeypatch.chdir(tmp_path)
    a, b = make_domains(tmp_path)
    result = runner.invoke(app, ["train", str(a), str(b), "--steps", "1", "--paste-negatives", *TINY])
    assert result.exit_code == 0, result.output
    assert json.loads((tmp_path / "runs" / "smile" / "config.json").read_text())["train"]["paste_negatives"] is True
