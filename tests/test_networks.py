"""Shapes, ranges and Eq. 1 of the generators; the discriminators' outputs; the init."""

from __future__ import annotations

import pytest
import torch

from aggan_cli.config import ModelConfig
from aggan_cli.errors import ConfigError
from aggan_cli.networks import (AGGAN, SNAP_AGREEMENT, AttentionGenerator, Discriminator, choose_translate_guide,
                                count_parameters, guided_filter, patch_size, snap_radii, widest_agreeing)


@pytest.mark.parametrize("norm", ["instance", "batch"])
@pytest.mark.parametrize("hw", [(32, 32), (48, 64), (36, 20)])
def test_generator_shapes_ranges_and_eq1(seeded, norm, hw):
    g = AttentionGenerator(ngf=8, n_blocks=2, norm=norm)
    x = torch.rand(2, 3, *hw) * 2 - 1
    image, mask, content = g(x)
    assert image.shape == x.shape and content.shape == x.shape
    assert mask.shape == (2, 1, *hw)
    assert mask.min() >= 0 and mask.max() <= 1
    assert content.min() >= -1 and content.max() <= 1
    # Eq. 1, to float precision: G_y = R_y * M_y + x * (1 - M_y)
    torch.testing.assert_close(image, content * mask + x * (1 - mask), rtol=0, atol=1e-6)


def test_generator_layers_follow_the_paper():
    g = AttentionGenerator(ngf=64, n_blocks=9)
    convs = [m for m in g.modules() if isinstance(m, (torch.nn.Conv2d, torch.nn.ConvTranspose2d))]
    # c7s1-64, d128, d256, 9 × (two 3×3 convs), u128, u64, c7s1-4
    assert [c.out_channels for c in convs] == [64, 128, 256] + [256] * 18 + [128, 64, 4]
    assert convs[0].kernel_size == (7, 7) and convs[-1].kernel_size == (7, 7)
    assert convs[1].stride == (2, 2) and isinstance(convs[-3], torch.nn.ConvTranspose2d)
    assert count_parameters(g) == 11_381_316


def test_generator_mask_can_be_zero_or_one_and_then_output_is_input_or_content():
    g = AttentionGenerator(ngf=4, n_blocks=1)
    last = g.net[-1]
    x = torch.rand(1, 3, 16, 16) * 2 - 1
    with torch.no_grad():
        last.weight.zero_()
        last.bias.copy_(torch.tensor([-30.0, 0.0, 0.0, 0.0]))
    assert torch.equal(g(x).image, x)  # mask 0: the input passes through untouched
    with torch.no_grad():
        last.bias.copy_(torch.tensor([30.0, 0.5, 0.5, 0.5]))
    torch.testing.assert_close(g(x).image, torch.full_like(x, torch.tanh(torch.tensor(0.5)).item()))


def _guided_filter_by_definition(p, guide, radius, eps):
    """He et al. 2010, written the slow way: for every window k a least-squares fit p ≈ a_k·I + b_k with
    ridge eps on a_k (colours in [0, 1]), then each pixel averages the a_k, b_k of the windows holding it."""
    import numpy as np

    p, image = p[0, 0].double().numpy(), ((guide[0].double() + 1) / 2).permute(1, 2, 0).numpy()
    h, w = p.shape
    a, b = np.zeros((h, w, 3)), np.zeros((h, w))
    for y in range(h):
        for x in range(w):
            window = (slice(max(0, y - radius), y + radius + 1), slice(max(0, x - radius), x + radius + 1))
            colours, values = image[window].reshape(-1, 3), p[window].ravel()
            mean_i, mean_p = colours.mean(0), values.mean()
            cov = (colours - mean_i).T @ (colours - mean_i) / len(values)
            a[y, x] = np.linalg.solve(cov + eps * np.eye(3), (colours - mean_i).T @ (values - mean_p) / len(values))
            b[y, x] = mean_p - a[y, x] @ mean_i
    out = np.zeros((h, w))
    for y in range(h):
        for x in range(w):
            window = (slice(max(0, y - radius), y + radius + 1), slice(max(0, x - radius), x + radius + 1))
            out[y, x] = a[window].reshape(-1, 3).mean(0) @ image[y, x] + b[window].mean()
    return torch.from_numpy(out).float()[None, None]


@pytest.mark.parametrize("radius", [1, 3])
def test_the_guided_filter_is_he_et_al_s(seeded, radius):
    p, guide = torch.rand(1, 1, 11, 9), torch.rand(1, 3, 11, 9) * 2 - 1
    torch.testing.assert_close(guided_filter(p, guide, radius), _guided_filter_by_definition(p, guide, radius, 1e-2),
                               rtol=0, atol=1e-5)


def test_the_guided_filter_snaps_a_blurred_mask_to_the_edges_of_the_image(seeded):
    """A red square on a grey background, and mask logits that are the square blurred by 3 px (what the
    decoder's quarter-resolution output looks like): filtered, the attention outside the square falls to
    less than half and the attention inside rises, the step sits on the square's edge, and on a flat
    guide the filter only averages."""
    guide = torch.full((1, 3, 32, 32), -0.2)
    guide[:, :, 10:22, 10:22] = torch.tensor([0.9, -0.8, -0.8]).view(1, 3, 1, 1)
    inside = torch.zeros(1, 1, 32, 32, dtype=torch.bool)
    inside[:, :, 10:22, 10:22] = True
    blurred = torch.nn.functional.avg_pool2d(inside.float(), 7, stride=1, padding=3, count_include_pad=False)
    logit = 12 * (blurred - 0.5)
    before, after = torch.sigmoid(logit), torch.sigmoid(guided_filter(logit, guide, 3))
    assert after[~inside].sum() < 0.5 * before[~inside].sum()
    assert after[inside].mean() > before[inside].mean() + 0.05
    row = after[0, 0, 16]
    assert row[10] - row[9] > 0.8 and row[9] < 0.05  # one pixel in: attended; one pixel out: left alone
    def box(t):
        return torch.nn.functional.avg_pool2d(t, 5, stride=1, padding=2, count_include_pad=False)

    flat = torch.zeros(1, 3, 32, 32)  # nothing to follow: the window means of the window means
    torch.testing.assert_close(guided_filter(blurred, flat, 2), box(box(blurred)))


@pytest.mark.parametrize("hw", [(32, 32), (36, 20)])
def test_a_generator_with_the_mask_guide_keeps_eq1(seeded, hw):
    g = AttentionGenerator(ngf=8, n_blocks=1, mask_guide=3)
    x = torch.rand(2, 3, *hw) * 2 - 1
    image, mask, content = g(x)
    assert mask.shape == (2, 1, *hw) and mask.min() >= 0 and mask.max() <= 1
    torch.testing.assert_close(image, content * mask + x * (1 - mask), rtol=0, atol=1e-6)
    last = g.net[-1]
    with torch.no_grad():  # a mask logit of -1000 stays far below zero after the filter: output = input
        last.weight[0].zero_()
        last.bias[0] = -1000.0
    assert torch.equal(g(x).image, x)
    assert count_parameters(g) == count_parameters(AttentionGenerator(ngf=8, n_blocks=1))  # no weights of its own



class _FixedLogits(torch.nn.Module):
    """Stands in for a generator's layers: the mask logit it returns is fixed (content 0)."""

    def __init__(self, logit: torch.Tensor) -> None:
        super().__init__()
        self.logit = logit

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.cat([self.logit.expand(len(x), -1, -1, -1), torch.zeros(len(x), 3, *x.shape[-2:])], 1)


def _generator_with(logit: torch.Tensor) -> AttentionGenerator:
    g = AttentionGenerator(ngf=4, n_blocks=0, mask_guide=3)
    g.net = _FixedLogits(logit)
    return g


def test_translating_takes_the_widest_guide_that_keeps_the_mask_and_no_wider():
    """Two hand-made edits. A red square whose mask spills two pixels over its edge (a recolour's halo):
    the wider guides snap the mask onto the square and still agree with the trained radius's mask, so
    the widest (16) is taken, and its mask leaves the background alone. A 10×10 patch in a flat grey image
    (a grin drawn on skin, no edge to follow): a wider window averages the patch away, so the trained
    radius stays. A generator whose masks are all shut, or trained without a guide, keeps its radius."""
    assert snap_radii(3) == (3, 4, 6, 8, 12, 16) and snap_radii(1) == (1, 2, 3, 4, 6) and snap_radii(0) == (0,)
    assert snap_radii(6) == (6, 8, 12, 16) and snap_radii(16) == (16,)  # no wider than --mask-guide allows
    images = torch.full((2, 3, 48, 48), -0.2)
    images[:, :, 12:36, 12:36] = torch.tensor([0.9, -0.8, -0.8]).view(1, 3, 1, 1)
    spill = torch.full((1, 1, 48, 48), -6.0)
    spill[:, :, 10:38, 10:38] = 6.0                      # the 24×24 square and two pixels of halo around it
    outside = torch.ones(48, 48, dtype=torch.bool)
    outside[12:36, 12:36] = False
    g = _generator_with(spill)
    before = g(images).mask[0, 0][outside]
    assert (before > 0.5).sum() > 50                     # the trained radius keeps most of the halo
    radius, agreement = choose_translate_guide(g, images)
    assert radius == 16 and min(agreement.values()) >= SNAP_AGREEMENT and agreement[3] == 1.0
    g.mask_guide = radius
    after = g(images).mask[0, 0][outside]
    assert (after > 0.5).sum() == 0 and after.mean() < 0.3 * before.mean()  # the halo is gone
    flat = torch.full((2, 3, 48, 48), -0.2)
    patch = torch.full((1, 1, 48, 48), -6.0)
    patch[:, :, 19:29, 19:29] = 6.0
    radius, agreement = choose_translate_guide(_generator_with(patch), flat)
    assert radius == 3 and agreement[4] < SNAP_AGREEMENT
    assert choose_translate_guide(_generator_with(torch.full((1, 1, 48, 48), -6.0)), images)[0] == 3
    unguided = _generator_with(spill)
    unguided.mask_guide = 0
    assert choose_translate_guide(unguided, images) == (0, {})


def test_a_wider_radius_is_taken_only_when_every_narrower_one_agrees_too():
    """Agreement usually falls as the window widens; where it dips and rises again (a mask that a wider
    window happens to restore), the pick stops at the dip, as it would on a mask it erodes."""
    low = SNAP_AGREEMENT - 0.01
    assert widest_agreeing({3: 1.0, 4: 0.97, 6: 0.9, 8: 0.86, 12: 0.8, 16: 0.7}) == 8
    assert widest_agreeing({3: 1.0, 4: 0.97, 6: low, 8: 0.9, 12: 0.9, 16: 0.9}) == 4
    assert widest_agreeing({3: 1.0, 4: low, 6: 0.95}) == 3
    assert widest_agreeing({3: 1.0, 4: 0.99, 6: 0.98, 8: 0.96, 12: 0.92, 16: SNAP_AGREEMENT}) == 16


def test_the_resize_decoder_keeps_the_shapes_and_the_weights_count_and_has_no_checkerboard(seeded):
    """--upsample resize: nearest-neighbour ×2 then a 3×3 conv in place of each transposed conv. Fed a
    constant feature map, a transposed conv's uneven kernel overlap prints a period-2 pattern; the resize
    decoder's output is flat away from the border."""
    from aggan_cli.config import ModelConfig

    g = AttentionGenerator.from_config(ModelConfig(ngf=8, n_blocks=1, upsample="resize"))
    assert not any(isinstance(m, torch.nn.ConvTranspose2d) for m in g.modules())
    assert count_parameters(g) == count_parameters(AttentionGenerator(ngf=8, n_blocks=1))
    x = torch.rand(2, 3, 36, 20) * 2 - 1
    image, mask, content = g(x)
    assert image.shape == x.shape and mask.shape == (2, 1, 36, 20)
    torch.testing.assert_close(image, content * mask + x * (1 - mask), rtol=0, atol=1e-6)

    def decoded(upsample):  # the first upsampling layer (u128) alone, before its norm
        torch.manual_seed(1)
        net = AttentionGenerator(ngf=8, n_blocks=0, upsample=upsample).net
        up = net[10:13] if upsample == "resize" else net[10:11]
        with torch.no_grad():
            return up(torch.ones(1, 32, 8, 8))[0, :, 2:-2, 2:-2]  # away from the border
    flat = decoded("resize")
    assert flat.shape[-1] == 12
    assert (flat - flat.mean(dim=(1, 2), keepdim=True)).abs().max() < 1e-5
    checker = decoded("transposed")
    assert (checker - checker.mean(dim=(1, 2), keepdim=True)).abs().max() > 1e-3
    with pytest.raises(Exception, match="upsampling"):
        AttentionGenerator(ngf=8, n_blocks=0, upsample="bilinear")

@pytest.mark.parametrize("kind", ["global", "patch"])
@pytest.mark.parametrize("channels", [3, 4])
def test_discriminators_take_3_and_4_channels(seeded, kind, channels):
    d = Discriminator(channels, ndf=8, kind=kind)
    score = d(torch.randn(3, channels, 64, 64))
    assert score.shape[0] == 3
    if kind == "global":
        assert score.shape == (3, 1)  # one score per image
    else:
        assert score.ndim == 4 and score.shape[1] == 1  # one score per patch


@pytest.mark.parametrize("layers", [1, 2, 3, 4])
def test_patch_size_is_what_one_patchgan_score_sees(layers):
    """patch_size (quoted by the options' help and by training's advice) against the network itself: the
    input pixels one score in the middle depends on span exactly patch_size(layers) on each side."""
    d = Discriminator(3, ndf=2, norm="batch", n_layers=layers).eval()  # batch norm in eval: no mixing across pixels
    with torch.no_grad():
        for m in d.modules():
            if isinstance(m, torch.nn.Conv2d):
                m.weight.fill_(0.01)  # positive weights: no pixel's contribution cancels out
    side = 2 * patch_size(layers) + 32
    x = torch.zeros(1, 3, side, side, requires_grad=True)
    score = d(x)
    score[0, 0, score.shape[2] // 2, score.shape[3] // 2].backward()
    seen = x.grad[0].abs().sum(0) > 0
    rows, cols = seen.any(1).nonzero().flatten(), seen.any(0).nonzero().flatten()
    assert int(rows[-1] - rows[0]) + 1 == patch_size(layers) == int(cols[-1] - cols[0]) + 1
    assert patch_size(layers) == {1: 16, 2: 34, 3: 70, 4: 142}[layers]


def test_global_discriminator_is_the_paper_layout():
    d = Discriminator(3, ndf=64, kind="global")
    convs = [m for m in d.modules() if isinstance(m, torch.nn.Conv2d)]
    assert [c.out_channels for c in convs] == [64, 128, 256, 512, 512, 1]
    assert [c.stride[0] for c in convs[:5]] == [2, 2, 2, 2, 1]
    assert any(isinstance(m, torch.nn.AdaptiveAvgPool2d) for m in d.modules())
    norms = [m for m in d.modules() if isinstance(m, torch.nn.InstanceNorm2d)]
    assert len(norms) == 3  # none on the first C64 and the last C512


def test_model_builds_four_discriminators_and_inits_n002():
    torch.manual_seed(0)
    model = AGGAN(ModelConfig(ngf=16, n_blocks=2, ndf=16, image_size=32))
    assert [d.net[0].in_channels for d in model.discriminators] == [3, 3, 4, 4]
    w = torch.cat([m.weight.flatten() for m in model.modules() if isinstance(m, torch.nn.Conv2d)])
    assert abs(w.std().item() - 0.02) < 0.002 and abs(w.mean().item()) < 0.001


def test_bad_model_config_is_a_clear_error():
    with pytest.raises(ConfigError, match="multiple of 4"):
        ModelConfig(image_size=30)
    with pytest.raises(ConfigError, match="norm"):
        ModelConfig(norm="group")
    with pytest.raises(ConfigError, match="ngf"):
        ModelConfig(ngf=0)


def test_the_learned_guide_mix_blends_the_guided_and_the_plain_logit(seeded):
    """--guide-mix: one weight per generator, a = sigmoid(50·w), starting at a half; the mask's logit is
    a·guided + (1 − a)·plain. a → 1 is the fixed guide, a → 0 no guide; the weight is learned (it gets a
    gradient) and Eq. 1 holds. Translating with radius 0 turns the guide, and so the mix, off."""
    g = AttentionGenerator(ngf=8, n_blocks=1, mask_guide=3, guide_mix=True)
    guided, plain = AttentionGenerator(ngf=8, n_blocks=1, mask_guide=3), AttentionGenerator(ngf=8, n_blocks=1)
    guided.net = plain.net = g.net
    assert count_parameters(g) == count_parameters(guided) + 1 and guided.guide_weight() is None
    x = torch.rand(2, 3, 36, 20) * 2 - 1
    assert g.guide_weight().item() == 0.5
    raw = g.net(x)[:, :1]
    torch.testing.assert_close(g(x).mask, torch.sigmoid(0.5 * guided_filter(raw, x, 3) + 0.5 * raw))
    image, mask, content = g(x)
    torch.testing.assert_close(image, content * mask + x * (1 - mask), rtol=0, atol=1e-6)
    g(x).mask.square().mean().backward()
    assert g.guide_mix.grad is not None and float(g.guide_mix.grad.abs()) > 0
    with torch.no_grad():
        g.guide_mix.fill_(1.0)                                   # a = sigmoid(50): the whole guide
        torch.testing.assert_close(g(x).mask, guided(x).mask)
        assert not torch.allclose(g(x).mask, plain(x).mask, atol=1e-3)
        g.guide_mix.fill_(-1.0)                                  # a = sigmoid(-50): none of it
        torch.testing.assert_close(g(x).mask, plain(x).mask)
        g.guide_mix.fill_(0.02)                                  # a = sigmoid(1)
        g.mask_guide = 0
        torch.testing.assert_close(g(x).mask, plain(x).mask)
    with pytest.raises(ConfigError, match="guide_mix"):
        AttentionGenerator(ngf=8, n_blocks=1, mask_guide=0, guide_mix=True)
    with pytest.raises(ConfigError, match=r"guide_mix \(--guide-mix\) needs a mask guide"):
        ModelConfig(mask_guide=0, guide_mix=True)
    assert AGGAN(ModelConfig(ngf=4, n_blocks=0, ndf=4, image_size=32, guide_mix=True)).g_ba.guide_weight() is not None


def test_the_guide_to_translate_with_is_picked_through_the_learned_mix():
    """A generator that learned to use none of the guide has the same mask at every radius: every wider
    radius agrees. One that uses all of it picks as the fixed guide does (the grin-like patch keeps 3)."""
    flat = torch.full((2, 3, 48, 48), -0.2)
    patch = torch.full((1, 1, 48, 48), -6.0)
    patch[:, :, 19:29, 19:29] = 6.0
    for w, want in ((-1.0, 16), (1.0, 3)):
        g = AttentionGenerator(ngf=4, n_blocks=0, mask_guide=3, guide_mix=True)
        g.net = _FixedLogits(patch)
        with torch.no_grad():
            g.guide_mix.fill_(w)
        radius, agreement = choose_translate_guide(g, flat)
        assert radius == want, agreement
