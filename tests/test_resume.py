"""What `--resume` keeps, refuses and changes (docs/training.md, "Resume and extend"): the data, the
weight average, the schedules of an extended run, and a step count below where the run is."""

from __future__ import annotations

import json

import pytest
import torch
from typer.testing import CliRunner

from aggan_cli.checkpoint import load_generators
from aggan_cli.cli import app
from aggan_cli.trainer import FLOOR_CHECK_EVERY, FLOOR_FADE, Trainer

from outcomes import assert_one_line_error
from test_train import TINY, _trainer, make_domains

runner = CliRunner()


@pytest.fixture
def trained(tmp_path, monkeypatch):
    """A 4-step run `smile`, trained on neutral → smile, in the current folder."""
    monkeypatch.chdir(tmp_path)
    a, b = make_domains(tmp_path)
    result = runner.invoke(app, ["train", str(a), str(b), "--steps", "4", "--save-every", "2", *TINY])
    assert result.exit_code == 0, result.output
    return a, b, tmp_path / "runs" / "smile"


def test_resume_refuses_other_data_unless_told(trained):
    a, b, run = trained
    swapped = runner.invoke(app, ["train", str(b), str(a), "--name", "smile", "--resume", "--steps", "6"])
    line = assert_one_line_error(swapped)
    assert "neutral → smile" in line and "smile → neutral" in line and "--data-changed" in line
    line = assert_one_line_error(runner.invoke(app, ["train", "--demo", "--name", "smile", "--resume", "--steps", "6"]))
    assert "the demo faces" in line and "--data-changed" in line
    assert json.loads((run / "config.json").read_text())["step"] == 4  # nothing trained
    same = runner.invoke(app, ["train", str(a), str(b), "--name", "smile", "--resume", "--steps", "5", "--quiet"])
    assert same.exit_code == 0, same.output  # the same folders, given again: fine
    told = runner.invoke(app, ["train", str(b), str(a), "--name", "smile", "--resume", "--steps", "6", "--data-changed",
                               "--quiet"])
    assert told.exit_code == 0, told.output
    config = json.loads((run / "config.json").read_text())
    assert config["step"] == 6 and config["domains"] == {"a": "smile", "b": "neutral"}


def test_resume_with_fewer_steps_than_done_is_an_error(trained):
    _, _, run = trained
    line = assert_one_line_error(runner.invoke(app, ["train", "--name", "smile", "--resume", "--steps", "2"]))
    assert "step 4" in line and "2 steps" in line and "--steps" in line
    done = runner.invoke(app, ["train", "--name", "smile", "--resume", "--steps", "4"])
    assert done.exit_code == 0 and "already complete" in done.output  # nothing to do, said so


def test_resuming_an_averaged_run_without_ema_goes_on_from_the_live_weights(tmp_path):
    first = _trainer(tmp_path / "run", ema=0.5)
    first.fit(stop_at=4)
    second = _trainer(tmp_path / "run", resume=True)
    for (name, live), resumed in zip(first.model.g_ab.state_dict().items(), second.model.g_ab.state_dict().values()):
        assert torch.equal(live, resumed), name  # not the average
    assert any("without it" in w for w in second.reporter.warnings)
    second.fit()
    g_ab, _, _ = load_generators(tmp_path / "run")  # checkpoints now hold the live weights
    for saved, live in zip(g_ab.state_dict().values(), second.model.g_ab.state_dict().values()):
        assert torch.equal(saved, live)


def test_resuming_a_run_with_ema_starts_the_average_from_the_live_weights(tmp_path):
    first = _trainer(tmp_path / "run")
    first.fit(stop_at=4)
    second = _trainer(tmp_path / "run", resume=True, ema=0.5)
    for live, average in zip(second.model.g_ab.state_dict().values(), second.ema["g_ab"].network.state_dict().values()):
        assert torch.equal(live, average)
    assert any("starts now" in w for w in second.reporter.warnings)
    second.fit()
    assert second.step == 8
    assert second.ema["g_ab"].updates == 4  # counted from the resume, not from step 0


def test_an_average_started_on_resume_counts_its_updates_across_a_second_resume(tmp_path):
    """The bias correction's update count is saved: a run whose average began at a resume, resumed
    again, averages exactly as one that went on without the second stop."""
    for name in ("straight", "split"):
        _trainer(tmp_path / name).fit(stop_at=2)
    straight = _trainer(tmp_path / "straight", resume=True, ema=0.5)
    straight.fit()
    first = _trainer(tmp_path / "split", resume=True, ema=0.5)
    first.fit(stop_at=5)
    second = _trainer(tmp_path / "split", resume=True, ema=0.5)
    assert second.ema["g_ab"].updates == 3
    second.fit()
    assert second.ema["g_ab"].updates == straight.ema["g_ab"].updates == 6
    for (key, a), b in zip(straight.ema["g_ab"].network.state_dict().items(), second.ema["g_ab"].network.state_dict().values()):
        assert torch.equal(a, b), key


def test_extending_a_finished_run_keeps_the_faded_floor_off_the_cycle_on_and_says_what_the_learning_rate_does(tmp_path):
    first = _trainer(tmp_path / "run", steps=6, cycle_ramp=True)
    first.fit()
    assert first.opt_g.param_groups[0]["lr"] == 0.0  # finished: decayed to zero
    longer = _trainer(tmp_path / "run", steps=12, resume=True, cycle_ramp=True)
    assert longer.weights_at(6).lambda_floor == 0.0  # a fresh 12-step run would be at half the floor here
    assert longer.weights_at(6).lambda_cycle == 10.0  # and the cycle loss, ramped in, stays at full weight
    assert any("stays off" in w and "stays at full weight" in w for w in longer.reporter.warnings)
    assert longer.opt_g.param_groups[0]["lr"] == pytest.approx(2e-4)  # the schedule of a 12-step run, at step 6
    assert any("learning-rate" in w and "12-step run" in w for w in longer.reporter.warnings), longer.reporter.warnings
    early = _trainer(tmp_path / "early", steps=12, cycle_ramp=True)
    early.fit(stop_at=2)
    extended = _trainer(tmp_path / "early", steps=24, resume=True, cycle_ramp=True)
    assert extended.weights_at(2).lambda_floor == 1.0  # the floor had not faded yet: it goes on as planned
    assert extended.weights_at(2).lambda_cycle == 0.0


@pytest.mark.parametrize("lambda_floor", [1.0, 0.0])
def test_the_cycle_loss_ramps_in_as_the_floor_fades_and_is_constant_without_the_ramp(tmp_path, lambda_floor):
    """Off for the first third, half at the middle, full from two thirds on: the mirror image of the
    floor's fade, also with the floor switched off; without --cycle-ramp (the default) it is constant."""
    ramped = _trainer(tmp_path / "ramped", steps=12, lambda_floor=lambda_floor, cycle_ramp=True)
    ramped.fit(stop_at=5)  # past a third, with a fresh model's masks (open): the fixed schedule
    assert ramped.floor_end == FLOOR_FADE[1]
    assert [ramped.weights_at(s).lambda_cycle for s in (0, 4, 6, 8, 11)] == pytest.approx([0, 0, 5, 10, 10])
    assert [ramped.weights_at(s).lambda_floor for s in (0, 6, 8)] == pytest.approx([lambda_floor, lambda_floor / 2, 0])
    constant = _trainer(tmp_path / "constant", steps=12, lambda_floor=lambda_floor, lambda_cycle=7.0)
    assert {constant.weights_at(s).lambda_cycle for s in (0, 4, 6, 8, 11)} == {7.0}


def test_the_identity_loss_ramps_in_as_the_floor_fades_is_constant_without_a_floor_and_stays_on_when_extended(tmp_path):
    """Off while the floor holds (it would shut masks that have not formed), half at the middle, full from
    two thirds on; with --lambda-floor 0 at full weight from the first step; an extended run keeps it on."""
    ramped = _trainer(tmp_path / "ramped", steps=12, lambda_identity=5.0)
    assert ramped.weights_at(0).lambda_identity == 0.0  # masks not yet looked at: the floor holds
    ramped.fit(stop_at=5)  # past a third, with a fresh model's masks (open): the fixed schedule
    assert [ramped.weights_at(s).lambda_identity for s in (0, 4, 6, 8, 11)] == pytest.approx([0, 0, 2.5, 5, 5])
    no_floor = _trainer(tmp_path / "no-floor", steps=12, lambda_identity=5.0, lambda_floor=0.0)
    assert {no_floor.weights_at(s).lambda_identity for s in (0, 4, 6, 11)} == {5.0}
    off = _trainer(tmp_path / "off", steps=12, lambda_identity=0.0)
    off.fit(stop_at=5)
    assert {off.weights_at(s).lambda_identity for s in (0, 6, 11)} == {0.0}
    finished = _trainer(tmp_path / "finished", steps=6, lambda_identity=5.0)
    finished.fit()
    longer = _trainer(tmp_path / "finished", steps=12, resume=True, lambda_identity=5.0)
    assert longer.weights_at(6).lambda_identity == 5.0  # a fresh 12-step run would be at half weight here
    assert any("identity loss" in w and "stays at full weight" in w for w in longer.reporter.warnings)


def _set_masks(trainer, logit: float) -> None:
    """Both generators' masks shut (a very negative logit everywhere) or open, through the bias of the
    mask's channel in their last layer."""
    with torch.no_grad():
        for g in (trainer.model.g_ab, trainer.model.g_ba):
            g.net[-1].bias[0] = logit


def test_the_floor_is_held_while_the_masks_are_closed_and_fades_over_a_third_once_they_open(tmp_path):
    """Masks still shut at a third of training keep the floor (and a ramped cycle loss off); when they
    open, the floor fades over a third of training from there; a run whose masks never opened says so."""
    run = _trainer(tmp_path / "late", steps=30, cycle_ramp=True)
    _set_masks(run, -12.0)  # far below the floor's logit (-4): it cannot pull them above 0.1 in 30 steps
    run.fit(stop_at=15)
    assert run.floor_end is None and run.open_updates == 15
    assert run.weights_at(15).lambda_floor == 1.0 and run.weights_at(29).lambda_floor == 1.0
    assert run.weights_at(15).lambda_cycle == 0.0
    _set_masks(run, 3.0)  # open: every value about 0.95
    run.fit(stop_at=2 * FLOOR_CHECK_EVERY + 1)  # the next look is at step 20
    assert run.floor_end == pytest.approx(20 / 30 + FLOOR_FADE[1] - FLOOR_FADE[0])
    assert run.open_updates == 20  # no longer counted once open
    assert [run.weights_at(s).lambda_floor for s in (20, 25, 29)] == pytest.approx([1.0, 0.5, 0.1])
    assert [run.weights_at(s).lambda_cycle for s in (20, 25, 29)] == pytest.approx([0.0, 5.0, 9.0])
    assert not any("never opened" in w for w in run.reporter.warnings)

    shut = _trainer(tmp_path / "shut", steps=12)
    _set_masks(shut, -12.0)
    shut.fit()
    assert shut.floor_end is None and shut.weights_at(11).lambda_floor == 1.0
    warning = [w for w in shut.reporter.warnings if "never opened" in w]
    assert len(warning) == 1, shut.reporter.warnings
    assert "neutral→smile and smile→neutral" in warning[0] and "--steps" in warning[0]
    # the default 70-px patch sees all of the 32-px crop: one layer fewer is suggested, with its patch
    assert "--d-layers 2 (34 px" in warning[0] and "70-px patch sees the whole 32-px crop" in warning[0]
    assert "--d-batch 4" in warning[0]  # at batch 1: a larger discriminator batch
    small = _trainer(tmp_path / "small-patch", steps=12, model={"d_layers": 1})
    _set_masks(small, -12.0)
    small.fit()  # a 16-px patch is smaller than the crop: nothing to suggest about it
    warning = [w for w in small.reporter.warnings if "never opened" in w]
    assert len(warning) == 1 and "--steps" in warning[0] and "--d-layers" not in warning[0]
    topped = _trainer(tmp_path / "topped-up", steps=12, d_batch=4)
    _set_masks(topped, -12.0)
    topped.fit()  # already topped up: nothing to suggest about it
    warning = [w for w in topped.reporter.warnings if "never opened" in w]
    assert len(warning) == 1 and "--d-batch" not in warning[0]
    paper = _trainer(tmp_path / "paper", steps=12, lambda_floor=0.0, cycle_ramp=True)
    _set_masks(paper, -12.0)
    paper.fit()  # no floor to hold: the ramp keeps its fixed schedule, and nothing is said
    assert paper.floor_end == FLOOR_FADE[1] and paper.weights_at(11).lambda_cycle == 10.0
    assert not any("never opened" in w for w in paper.reporter.warnings)


def test_a_floor_still_waiting_for_the_masks_resumes_exactly(tmp_path):
    """Stopped past a third with the masks shut, then resumed: the running share of open mask values
    and its count come back, so the run goes on as if it had not stopped."""
    straight = _trainer(tmp_path / "straight", steps=30)
    split = _trainer(tmp_path / "split", steps=30)
    for run in (straight, split):
        _set_masks(run, -12.0)
    straight.fit(stop_at=25)
    split.fit(stop_at=12)
    split.save()
    resumed = _trainer(tmp_path / "split", steps=30, resume=True)
    assert resumed.floor_end is None and resumed.open_updates == 12
    assert torch.equal(resumed.open_share, split.open_share)
    resumed.fit(stop_at=25)
    assert resumed.open_updates == straight.open_updates == 25
    assert torch.equal(resumed.open_share, straight.open_share)
    for (name, p), q in zip(straight.model.state_dict().items(), resumed.model.state_dict().values()):
        assert torch.equal(p, q), name


def test_a_run_saved_before_the_floor_waited_for_the_masks_resumes_with_the_fixed_schedule(tmp_path, monkeypatch):
    """A training state without the floor's new keys is from a version whose floor faded from a third to
    two thirds whatever the masks did: it goes on that way, masks shut or not."""
    new_keys = ("floor_end", "open_share", "open_updates")
    saving = Trainer.training_state
    monkeypatch.setattr(Trainer, "training_state",
                        lambda self: {k: v for k, v in saving(self).items() if k not in new_keys})
    old = _trainer(tmp_path / "old", steps=30)
    _set_masks(old, -12.0)  # shut: this version would hold the floor
    old.fit(stop_at=6)
    monkeypatch.undo()
    resumed = _trainer(tmp_path / "old", steps=30, resume=True)
    assert resumed.floor_end == FLOOR_FADE[1]
    assert [resumed.weights_at(s).lambda_floor for s in (6, 15, 20)] == pytest.approx([1.0, 0.5, 0.0])


def test_the_binarisation_term_is_on_for_the_last_quarter_and_stays_on_when_a_run_is_extended(tmp_path):
    """Off while the mask finds the object, at full weight for the last quarter (docs/training.md); an
    extended run does not switch it off again, and 0 (the default, the paper) keeps it off throughout."""
    run = _trainer(tmp_path / "run", steps=12, lambda_binary=4.0)
    assert [run.weights_at(s).lambda_binary for s in (0, 6, 8, 9, 11)] == [0.0, 0.0, 0.0, 4.0, 4.0]
    run.fit(stop_at=10)
    run.save()
    longer = _trainer(tmp_path / "run", steps=24, resume=True, lambda_binary=4.0)
    assert longer.weights_at(10).lambda_binary == 4.0  # a fresh 24-step run would not have started it yet
    assert any("binarisation term" in w and "stays on" in w for w in longer.reporter.warnings)
    default = _trainer(tmp_path / "default", steps=12)
    assert {default.weights_at(s).lambda_binary for s in (0, 6, 11)} == {0.0}

def test_at_the_first_step_of_a_ramped_run_the_generators_total_has_no_cycle_term(tmp_path):
    """The schedule is what training uses: at step 0 of a --cycle-ramp run the generators' loss is the
    sum of its other terms; without the ramp it also holds λ_cycle × the cycle loss."""
    for ramp in (True, False):
        trainer = _trainer(tmp_path / str(ramp), steps=12, cycle_ramp=ramp)
        batch = next(trainer.batches())
        terms = {k: float(v) for k, v in trainer.train_step(batch["a"], batch["b"]).items()}
        rest = (terms["gan_ab"] + terms["agan_ab"] + terms["gan_ba"] + terms["agan_ba"] + terms["pixel"]
                + 1e-6 * terms["tv"] + terms["floor"])
        assert terms["cycle"] > 0.01
        expected = rest if ramp else rest + 10 * terms["cycle"]
        assert terms["g_total"] == pytest.approx(expected, rel=1e-4), (ramp, terms)
