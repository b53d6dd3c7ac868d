"""The small parts of training, each alone: the weight average, the NaN/Inf guard, the centre crop of
sample grids and the attention floor's schedule."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image
from torch import nn

from aggan_cli.data import centre_crop
from aggan_cli.ema import WeightAverage
from aggan_cli.guard import NonFiniteGuard
from aggan_cli.trainer import floor_fade


def _batchnorm_net() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4), nn.ReLU())


def test_weight_average_covers_parameters_and_batchnorm_statistics():
    live = _batchnorm_net()
    average = WeightAverage(live, decay=0.75)
    average.update(live)  # the first update copies: the average of one set of weights is that set
    before = {k: v.clone() for k, v in average.network.state_dict().items()}
    live(torch.randn(2, 3, 8, 8))  # a training-mode pass moves BatchNorm's running statistics
    with torch.no_grad():
        for p in live.parameters():
            p.add_(1.0)
    average.update(live)
    now, current = average.network.state_dict(), live.state_dict()
    for key, value in now.items():
        if value.is_floating_point():  # running_mean/var too; bias-corrected weight (1 − d) / (1 − d²) = 4/7
            torch.testing.assert_close(value, 3 / 7 * before[key] + 4 / 7 * current[key])
        else:
            assert torch.equal(value, current[key]), key  # num_batches_tracked is copied
    assert not torch.equal(now["1.running_mean"], before["1.running_mean"])


def test_weight_average_keeps_none_of_the_initial_weights():
    """Bias-corrected: after t updates the average is Σ d^(t−i)(1 − d) wᵢ / (1 − dᵗ) over the weights it
    saw, with no share left for the weights it was built from (uncorrected, 0.999 keeps 99.7% of them
    after three updates, 13.5% after 2,000)."""
    live = nn.Linear(1, 1, bias=False)
    with torch.no_grad():
        live.weight.fill_(100.0)  # the random initialisation
    decay, seen = 0.999, [1.0, 2.0, 4.0]
    average = WeightAverage(live, decay=decay)
    for value in seen:
        with torch.no_grad():
            live.weight.fill_(value)
        average.update(live)
    t = len(seen)
    expected = sum(decay ** (t - i) * (1 - decay) * w for i, w in enumerate(seen, 1)) / (1 - decay ** t)
    assert average.updates == t
    assert abs(average.network.weight.item() - expected) < 1e-4 and 2.3 < expected < 2.4
    average.reset(live)
    assert average.updates == 0


def test_weight_average_stays_in_eval_mode_and_a_forward_pass_changes_nothing():
    live = _batchnorm_net()
    average = WeightAverage(live, decay=0.9)
    live.train()
    assert not average.network.training and not any(p.requires_grad for p in average.network.parameters())
    before = {k: v.clone() for k, v in average.network.state_dict().items()}
    average.network(torch.randn(2, 3, 8, 8))  # a sample grid or the demo's score
    for key, value in average.network.state_dict().items():
        assert torch.equal(value, before[key]), key


def test_weight_average_reset_starts_from_the_live_network():
    live = _batchnorm_net()
    average = WeightAverage(live, decay=0.9)
    with torch.no_grad():
        for p in live.parameters():
            p.mul_(3.0)
    average.reset(live)
    for a, b in zip(average.network.state_dict().values(), live.state_dict().values()):
        assert torch.equal(a, b)
    with pytest.raises(ValueError):
        WeightAverage(live, decay=1.0)


@pytest.mark.parametrize("fused", [False, True], ids=["foreach", "fused"])
def test_guard_skips_exactly_the_steps_whose_loss_is_not_finite_and_counts_them(fused):
    """A NaN or Inf loss leaves weights and Adam's state (its step count) untouched; ``read`` says how many
    steps were skipped since the last read and how long the current run of them is. The fused path
    (CUDA's) reads the flag on the device through ``found_inf``."""
    weight = nn.Parameter(torch.ones(3))
    optimizer = torch.optim.Adam([weight], lr=0.1, fused=fused)
    guard = NonFiniteGuard(torch.device("cpu"))
    history = []
    for scale in (1.0, float("nan"), float("inf"), 1.0, float("nan")):
        optimizer.zero_grad()
        loss = (weight * scale).sum()
        loss.backward()
        before = weight.detach().clone()
        guard.step(optimizer, loss)
        guard.end_step()
        history.append(not torch.equal(before, weight.detach()))
        if scale == 1.0 and len(history) == 4:
            assert guard.read() == (2, 0)  # two skipped, and the run of them ended
    assert history == [True, False, False, True, False]
    assert guard.read() == (1, 1)
    assert int(optimizer.state[weight]["step"]) == 2 and not hasattr(optimizer, "found_inf")


def test_centre_crop_is_the_centre_square_at_the_training_size():
    pixels = np.zeros((40, 80, 3), dtype=np.uint8)  # 80 wide, 40 high
    pixels[:, 20:60] = 255  # the centre 40×40 square is white
    crop = centre_crop(Image.fromarray(pixels), size=32)
    assert crop.shape == (3, 32, 32) and crop.dtype == torch.float32
    assert crop.min() >= -1 and crop.max() <= 1
    assert crop[:, :, 2:-2].min() > 0.9  # all white: the centre, with no margin of the black sides
    assert torch.equal(crop, centre_crop(Image.fromarray(pixels), size=32))


def test_attention_floor_is_full_for_a_third_then_fades_out_by_two_thirds():
    assert [floor_fade(p) for p in (0.0, 1 / 3, 0.5, 2 / 3, 0.9, 1.0)] == pytest.approx([1, 1, 0.5, 0, 0, 0])
