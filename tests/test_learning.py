"""A short real training must learn: attention on the changed region, output moving towards the target.

The easy demo variant (centred faces on plain backgrounds, neutral mouth → open grin) with a tiny
model, 100 steps of batch 4 on the CPU. Seeds are fixed; the thresholds are far above what an
untrained or collapsed model scores (mask AUC ~0.5, foreground gain 0 dB for output = input).
"""

from __future__ import annotations

import pytest

from aggan_cli import demo
from aggan_cli.config import ModelConfig, TrainConfig
from aggan_cli.data import DemoSource
from aggan_cli.scoring import Evaluator
from aggan_cli.tasks import TaskSource
from aggan_cli.trainer import Trainer


@pytest.mark.slow  # ~45 s on a quiet 2-core machine
def test_short_training_puts_attention_on_the_change(tmp_path):
    size = 48
    model = ModelConfig(ngf=8, n_blocks=2, ndf=16, image_size=size)
    train = TrainConfig(steps=100, batch_size=4, workers=0, seed=0, device="cpu", log_every=50,
                        sample_every=10**6, save_every=10**6, load_size=size)
    sources = [DemoSource(d, seed=0, size=size, count=400, easy=True) for d in ("a", "b")]
    trainer = Trainer(model, train, *sources, run_dir=tmp_path / "run")
    before = demo.score(trainer.model.g_ab, seed=99, size=size, count=16, easy=True)
    trainer.model.train()
    trainer.fit()
    after = demo.score(trainer.model.g_ab, seed=99, size=size, count=16, easy=True)
    assert before.mask_auc < 0.6  # untrained: attention is unrelated to the change
    assert after.mask_auc >= 0.80, after
    assert after.foreground_gain >= max(3.0, before.foreground_gain + 2.0), (before, after)  # towards the twin
    assert after.background_psnr >= before.background_psnr + 5.0, (before, after)  # background left more alone


# Measured with seed 0 (tiny model, 200 steps of batch 4, 48 px; before → after; today's defaults, the
# identity loss included):
#   recolour: mask AUC 0.34 → 0.91, background 17.9 → 31.0 dB
#   texture:  mask AUC 0.34 → 0.85, background 17.9 → 40.6 dB
#   shape:    mask AUC 0.35 → 0.52, background 17.9 → 44.7 dB — the mask closes: nothing is learnt at
#             this size and length (docs/training.md, "Crisp attention"), so shape has no learning test yet.
# The foreground does not yet move towards the twins in 200 steps; it is not asserted.
@pytest.mark.slow  # ~50 s each on a quiet 2-core machine
@pytest.mark.parametrize("task", ["recolour", "texture"])
def test_short_training_on_a_built_in_task_puts_attention_on_the_object(tmp_path, task):
    size = 48
    model = ModelConfig(ngf=8, n_blocks=2, ndf=16, image_size=size)
    train = TrainConfig(steps=200, batch_size=4, workers=0, seed=0, device="cpu", log_every=50,
                        sample_every=10**6, save_every=10**6, load_size=size)
    sources = [TaskSource(task, d, seed=0, size=size, count=400) for d in ("a", "b")]
    held_out = Evaluator.from_task(task, seed=99, size=size, count=16)
    trainer = Trainer(model, train, *sources, run_dir=tmp_path / "run")
    before, _ = held_out(trainer.model.g_ab, image_size=size)
    trainer.fit()
    after, _ = held_out(trainer.model.g_ab, image_size=size)
    assert before.mask_auc < 0.6, before  # untrained: attention is unrelated to the object
    assert after.mask_auc >= 0.78, after
    assert after.background_psnr >= before.background_psnr + 8.0, (before, after)
