"""The numpy resize, pad and blend (imaging.py) that the onnxruntime backend uses, against the torch
path's own (inference.py): the two backends must give the same pictures."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from aggan_cli.imaging import Prepared, compose, pad_planes, resize_planes
from aggan_cli.inference import Translator, _pad, _resize
from aggan_cli.networks import AttentionGenerator

from images import photo_array

RESIZES = [((48, 64), (96, 128)),    # enlarge
           ((48, 64), (30, 50)),     # shrink: antialiased
           ((48, 64), (200, 30)),    # one side up, one down: antialiased
           ((37, 51), (37, 52)),     # one pixel wider
           ((12, 16), (301, 407)),   # a large, uneven enlargement (the mask of a photo)
           ((5, 5), (9, 3))]


@pytest.mark.parametrize("source, target", RESIZES)
def test_resize_matches_torch_bilinear(source, target):
    rng = np.random.default_rng(0)
    planes = rng.random((3, *source), dtype=np.float32)
    expected = _resize(torch.from_numpy(planes)[None], target)[0].numpy()
    got = resize_planes(planes, target)
    assert got.shape == (3, *target) and got.dtype == np.float32
    assert np.abs(got - expected).max() < 1e-5  # float rounding; the parity limit for masks is 1e-4


def test_resize_keeps_planes_of_the_right_size_untouched():
    planes = np.zeros((1, 8, 8), np.float32)
    assert resize_planes(planes, (8, 8)) is planes


@pytest.mark.parametrize("source, target", [((6, 7), (8, 8)),     # reflection
                                            ((2, 3), (8, 8)),     # too small to reflect: replication
                                            ((8, 12), (8, 12))])  # nothing to pad
def test_pad_equals_torch_exactly(source, target):
    x = np.random.default_rng(1).random((2, 3, *source), dtype=np.float32)
    expected = _pad(torch.from_numpy(x), *target).numpy()
    assert np.array_equal(pad_planes(x, *target), expected)


def test_blend_matches_the_torch_path():
    """Same mask and content in, the same image out (±1 grey level where the resize rounds
    differently), the same content image, and the input's pixels, exactly, wherever the mask is 0."""
    pixels = photo_array((53, 41), seed=3)                                   # (41, 53, 3): H 41, W 53
    item = Prepared(pixels, None, None, None, (24, 32))
    rng = np.random.default_rng(2)
    mask = rng.random((1, 24, 32), dtype=np.float32)
    mask[:, :, :12] = 0.0                                                      # a band left alone
    content = rng.uniform(-1, 1, (3, 24, 32)).astype(np.float32)

    translator = Translator(AttentionGenerator(ngf=4, n_blocks=1), AttentionGenerator(ngf=4, n_blocks=1), image_size=24)
    full = torch.from_numpy(pixels).permute(2, 0, 1).float()
    want = translator._compose(item, full, torch.from_numpy(mask)[None], torch.from_numpy(content)[None], "a2b")
    got = compose(item, mask, content, "a2b")

    assert got.image.size == want.image.size == (53, 41)
    assert np.abs(got.mask - want.mask).max() < 2e-6
    out, ref = np.asarray(got.image, np.int16), np.asarray(want.image, np.int16)
    assert np.abs(out - ref).max() <= 1
    assert np.abs(np.asarray(got.content, np.int16) - np.asarray(want.content, np.int16)).max() <= 1
    untouched = want.mask == 0
    assert untouched.sum() > 100
    assert np.array_equal(out[untouched], pixels[untouched]) and np.array_equal(ref[untouched], pixels[untouched])


@pytest.mark.parametrize("level, changed", [(0.003, False), (0.005, True)])
def test_a_mask_below_one_level_leaves_the_input_exactly_on_both_paths(level, changed):
    """Content 250 levels from the input under a mask of 0.003 would still move each pixel by
    0.75 → 1 level; below 1/255 the blend takes the mask as 0, so the pixel stays exactly as it was (the
    mask handed back is still the network's). At 0.005 (above 1/255) the mask acts: 1.25 → 1 level."""
    pixels = np.full((20, 24, 3), 250, np.uint8)
    item = Prepared(pixels, None, None, None, (20, 24))
    mask = np.full((1, 20, 24), level, np.float32)
    content = np.full((3, 20, 24), -1.0, np.float32)                           # black, 250 levels away
    translator = Translator(AttentionGenerator(ngf=4, n_blocks=1), AttentionGenerator(ngf=4, n_blocks=1), image_size=20)
    full = torch.from_numpy(pixels).permute(2, 0, 1).float()
    # (the torch path works in place: give it its own copies)
    torch_path = translator._compose(item, full, torch.tensor(mask)[None], torch.tensor(content)[None], "a2b")
    numpy_path = compose(item, mask, content, "a2b")
    for result in (torch_path, numpy_path):
        out = np.asarray(result.image, np.int16)
        assert np.allclose(result.mask, level)  # the mask handed back is the network's
        if changed:
            assert (out == 249).all()
        else:
            assert np.array_equal(out, pixels)
