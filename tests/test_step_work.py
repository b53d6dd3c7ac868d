"""A training step does the work the objective needs and no more: four generator passes (no identity
passes), each discriminator evaluated only as often as its terms need, gradients freed with
set_to_none, and no read of a device tensor back to the host."""

from __future__ import annotations

import sys
from collections import Counter

import pytest
import torch

from aggan_cli.config import ModelConfig, TrainConfig
from aggan_cli.trainer import Trainer, fused_adam_supported

DISCRIMINATORS = ("d_a", "d_b", "d_a_attn", "d_b_attn")


class _Source:
    def __init__(self, name: str) -> None:
        self.name = name

    def __len__(self) -> int:
        return 4

    def load(self, index: int):  # pragma: no cover - the tests feed tensors to train_step directly
        raise AssertionError("not used")


def _trainer(tmp_path, norm: str = "instance", **train) -> Trainer:
    mc = ModelConfig(ngf=4, n_blocks=1, ndf=4, image_size=32, norm=norm)
    tc = TrainConfig(steps=100, workers=0, seed=0, device="cpu", pool_size=2, **train)
    return Trainer(mc, tc, _Source("a"), _Source("b"), run_dir=tmp_path / "run")


def _batch(seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return torch.rand(2, 3, 32, 32, generator=g) * 2 - 1, torch.rand(2, 3, 32, 32, generator=g) * 2 - 1


@pytest.mark.parametrize("norm", ["instance", "batch"])
@pytest.mark.parametrize("identity_negatives,paste_negatives", [(False, False), (True, False), (True, True)])
def test_four_generator_passes_and_each_discriminator_as_often_as_the_objective_needs(tmp_path, identity_negatives,
                                                                                      paste_negatives, norm):
    trainer = _trainer(tmp_path, norm=norm, identity_negatives=identity_negatives, paste_negatives=paste_negatives)
    x, y = _batch()
    trainer.train_step(x, y)  # warm: fills the pools
    calls: Counter = Counter()
    inputs: dict[str, list[torch.Tensor]] = {"g_ab": [], "g_ba": []}

    def count(name):
        def hook(module, args):
            calls[name] += 1
            if name in inputs:
                inputs[name].append(args[0])
        return hook

    handles = [getattr(trainer.model, n).register_forward_pre_hook(count(n)) for n in ("g_ab", "g_ba", *DISCRIMINATORS)]
    try:
        trainer.train_step(x, y)
    finally:
        for h in handles:
            h.remove()
    # x→y, y→x and the two reconstructions: two passes per generator
    assert calls["g_ab"] == 2 and calls["g_ba"] == 2
    # no identity pass: g_ab (A→B) never sees a real B image, g_ba never a real A image
    assert not any(t is y or torch.equal(t, y) for t in inputs["g_ab"])
    assert not any(t is x or torch.equal(t, x) for t in inputs["g_ba"])
    # one score of the fakes for the generators' loss; real and fake (and the negatives) for its own:
    # in one call with instance norm, which scores each image alone; BatchNorm needs a call for each
    own = 1 if norm == "instance" else 2 + int(identity_negatives) + int(paste_negatives)
    for name in DISCRIMINATORS:
        assert calls[name] == 1 + own, name


@pytest.mark.parametrize("d_batch,seen", [(1, 2), (2, 2), (5, 5)])
def test_the_discriminators_batch_is_topped_up_to_d_batch_with_earlier_images(tmp_path, d_batch, seen):
    """--d-batch N: below N images per step, each discriminator scores N real, N generated and N negative
    images in its own call (the batch of 2 and N - 2 drawn back from the replay stores and history pools);
    at or above the batch size nothing is added."""
    trainer = _trainer(tmp_path, d_batch=d_batch, batch_size=2)
    x, y = _batch()
    trainer.train_step(x, y)
    sizes: dict[str, list[int]] = {name: [] for name in DISCRIMINATORS}
    handles = [getattr(trainer.model, n).register_forward_pre_hook(
        lambda module, args, n=n: sizes[n].append(args[0].shape[0])) for n in DISCRIMINATORS]
    try:
        trainer.train_step(x, y)
    finally:
        for h in handles:
            h.remove()
    for name in DISCRIMINATORS:
        assert sizes[name] == [2, 3 * seen], name  # the generators' score of the fakes, then its own call
    assert bool(trainer.replay) == (d_batch > 2)


def test_a_replayed_real_image_comes_back_with_the_mask_made_for_it(tmp_path):
    """The attention discriminators judge each real image with its own mask: what the store gives back
    pairs each image with the mask that was stored with it, and the fakes grow from the history pools."""
    trainer = _trainer(tmp_path, d_batch=4, batch_size=1)
    x, y = (t[:1] for t in _batch())
    mask_b, mask_a = torch.full((1, 1, 32, 32), 0.25), torch.full((1, 1, 32, 32), 0.75)
    for pool in trainer.pools.values():
        pool.query(torch.zeros(1, 4 if pool is trainer.pools["a_attn"] or pool is trainer.pools["b_attn"] else 3,
                               32, 32))
    fakes = {"fake_a": torch.ones(1, 3, 32, 32), "fake_b": torch.ones(1, 3, 32, 32),
             "fake_pair_a": torch.ones(1, 4, 32, 32), "fake_pair_b": torch.ones(1, 4, 32, 32),
             "mask_a": mask_a, "mask_b": mask_b}
    real_x, real_y = trainer._top_up(x, y, mask_b, mask_a, fakes)
    assert real_x.shape[0] == real_y.shape[0] == 4
    assert all(torch.equal(image, x[0]) for image in real_x) and all(torch.equal(image, y[0]) for image in real_y)
    assert torch.equal(fakes["mask_b"], mask_b.expand(4, -1, -1, -1))  # x's mask, M_y
    assert torch.equal(fakes["mask_a"], mask_a.expand(4, -1, -1, -1))
    for key in ("fake_a", "fake_b", "fake_pair_a", "fake_pair_b"):
        assert fakes[key].shape[0] == 4 and fakes[key][0].eq(1).all() and fakes[key][1:].eq(0).all(), key


def test_gradients_are_freed_with_set_to_none(tmp_path, monkeypatch):
    trainer = _trainer(tmp_path)
    seen = []
    original = torch.optim.Optimizer.zero_grad

    def zero_grad(self, set_to_none=True):
        seen.append(set_to_none)
        return original(self, set_to_none=set_to_none)

    monkeypatch.setattr(torch.optim.Optimizer, "zero_grad", zero_grad)
    trainer.train_step(*_batch())
    assert seen == [True, True]  # one per optimiser, and never by filling with zeros


_HOST_READS = ("item", "tolist", "numpy", "cpu", "__bool__", "__float__", "__int__", "__index__")


@pytest.mark.parametrize("d_batch", [1, 4])
def test_no_host_reads_in_a_step_except_the_pools_cpu_coin_flips(tmp_path, monkeypatch, d_batch):
    """Reading a tensor's value on the host stalls a GPU until its queue drains. On the CPU nothing
    stalls, so the test records every such read and where it came from: the only ones allowed are the
    history pools' (and with --d-batch the replay stores') draws from their own CPU random generator
    (never a device tensor)."""
    if not fused_adam_supported(torch.device("cpu")):
        pytest.skip("needs fused Adam on the CPU (torch >= 2.4); the per-parameter loop reads its NaN flag on the host")
    trainer = _trainer(tmp_path, d_batch=d_batch)
    assert trainer.opt_g.defaults.get("fused")  # fused Adam takes its NaN flag on the device, no host read
    x, y = _batch()
    for _ in range(3):  # past the pools' filling, so they draw
        trainer.train_step(x, y)
    reads: list[tuple[str, str]] = []

    def recorder(name):
        original = getattr(torch.Tensor, name)

        def read(self, *args, **kwargs):
            caller = sys._getframe(1)
            reads.append((name, f"{caller.f_code.co_name} ({caller.f_code.co_filename.rsplit('/', 1)[-1]})"))
            return original(self, *args, **kwargs)
        return read

    for name in _HOST_READS:
        monkeypatch.setattr(torch.Tensor, name, recorder(name))
    trainer.train_step(x, y)
    monkeypatch.undo()
    callers = {caller for _, caller in reads}
    allowed = {"query (trainer.py)"} | ({"add (trainer.py)", "draw_stored (trainer.py)"}
                                        if d_batch > 2 else set())
    assert callers <= allowed, reads
    assert reads, "the pools drew no coin: the test did not exercise them"


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA: a device sync only exists there")
def test_no_device_sync_in_a_cuda_step(tmp_path):
    mc = ModelConfig(ngf=4, n_blocks=1, ndf=4, image_size=32)
    tc = TrainConfig(steps=100, workers=0, seed=0, device="cuda", pool_size=2)
    trainer = Trainer(mc, tc, _Source("a"), _Source("b"), run_dir=tmp_path / "run")
    x, y = (t.cuda() for t in _batch())
    for _ in range(3):
        trainer.train_step(x, y)
    torch.cuda.synchronize()
    torch.cuda.set_sync_debug_mode("error")
    try:
        trainer.train_step(x, y)
    finally:
        torch.cuda.set_sync_debug_mode("default")


def test_channels_last_training_keeps_the_layout_and_matches_contiguous(tmp_path):
    x, y = _batch()
    plain = _trainer(tmp_path / "plain", channels_last=False)
    nhwc = _trainer(tmp_path / "nhwc", channels_last=True)
    conv = nhwc.model.g_ab.net[1]
    assert conv.weight.is_contiguous(memory_format=torch.channels_last)
    a = plain.train_step(x, y)
    b = nhwc.train_step(x.contiguous(memory_format=torch.channels_last), y.contiguous(memory_format=torch.channels_last))
    for key in ("g_total", "d_total", "cycle"):
        torch.testing.assert_close(a[key], b[key], rtol=1e-4, atol=1e-5)
    assert conv.weight.is_contiguous(memory_format=torch.channels_last)  # the optimiser kept the layout
