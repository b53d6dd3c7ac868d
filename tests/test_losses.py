"""The objective of DESIGN.md: TV by hand, GAN losses, gradients reaching every network."""

from __future__ import annotations

import pytest
import torch

from aggan_cli.config import ModelConfig
from aggan_cli.losses import (LossWeights, _cycle_input, discriminator_objective, gan_loss, generator_objective, l1, pair,
                              tv_loss)
from aggan_cli.networks import AGGAN


def test_tv_loss_matches_a_hand_computation():
    m = torch.tensor([[0.0, 1.0, 1.0], [0.5, 0.5, 0.0]]).view(1, 1, 2, 3)
    # vertical: |0.5-0| + |0.5-1| + |0-1| = 2.0; horizontal: |1-0|+|1-1| + |0.5-0.5|+|0-0.5| = 1.5
    assert tv_loss(m).item() == pytest.approx(3.5)
    # averaged over the batch: two copies give the same value
    assert tv_loss(torch.cat([m, m])).item() == pytest.approx(3.5)


def test_gan_losses():
    s = torch.tensor([[1.0], [0.0]])
    assert gan_loss(s, True, "lsgan").item() == pytest.approx(0.5)
    assert gan_loss(s, False, "lsgan").item() == pytest.approx(0.5)
    z = torch.zeros(4, 1)
    assert gan_loss(z, True, "vanilla").item() == pytest.approx(torch.log(torch.tensor(2.0)).item())


def test_hinge_loss_stops_pulling_past_the_margin_and_the_generator_pays_minus_the_score():
    s = torch.tensor([2.0, 0.5, -0.5, -2.0], requires_grad=True)
    assert gan_loss(s, True, "hinge").item() == pytest.approx((0 + 0.5 + 1.5 + 3.0) / 4)
    assert gan_loss(s, False, "hinge").item() == pytest.approx((3.0 + 1.5 + 0.5 + 0) / 4)
    gan_loss(s, True, "hinge").backward()
    # a real image scored past the margin (2.0) gives no gradient; the others are pushed up alike
    assert s.grad.tolist() == pytest.approx([0.0, -0.25, -0.25, -0.25])
    assert gan_loss(s, True, "hinge", generator=True).item() == pytest.approx(0.0)  # −mean(s)
    assert gan_loss(torch.tensor([1.0, 3.0]), True, "hinge", generator=True).item() == pytest.approx(-2.0)
    # the other kinds ignore the flag: the generator's loss is the discriminator's "real" loss
    for kind in ("lsgan", "vanilla"):
        assert gan_loss(s, True, kind, generator=True).item() == pytest.approx(gan_loss(s, True, kind).item())


def _model():
    torch.manual_seed(0)
    return AGGAN(ModelConfig(ngf=8, n_blocks=1, ndf=8, image_size=32))


@pytest.mark.parametrize("kind", ["lsgan", "vanilla", "hinge"])
def test_generator_objective_terms_and_gradients(kind):
    model = _model()
    x, y = torch.rand(2, 3, 32, 32) * 2 - 1, torch.rand(2, 3, 32, 32) * 2 - 1
    step = generator_objective(model, x, y, LossWeights(gan_loss=kind))
    expected = {"gan_ab", "agan_ab", "gan_ba", "agan_ba", "cycle", "pixel", "tv", "floor", "binary", "g_total"}
    assert set(step.terms) == expected
    assert all(not t.requires_grad for t in step.terms.values())
    if kind == "hinge":  # the generator pays minus the score the discriminator gives its output
        with torch.no_grad():
            torch.testing.assert_close(step.terms["gan_ab"], -model.d_b(step.fake_b).float().mean())
    w = LossWeights()
    recomputed = (step.terms["gan_ab"] + step.terms["agan_ab"] + step.terms["gan_ba"] + step.terms["agan_ba"]
                  + w.lambda_cycle * step.terms["cycle"] + w.lambda_pixel * step.terms["pixel"] + w.lambda_tv * step.terms["tv"])
    torch.testing.assert_close(step.total.detach(), recomputed)
    step.total.backward()
    for g in model.generators:
        last = g.net[-1]  # the 4-channel head: attention (channel 0) and content (1-3) both get gradient
        assert last.weight.grad[0].abs().sum() > 0
        assert last.weight.grad[1:].abs().sum() > 0


def test_discriminator_objective_reaches_all_four_and_pairs_real_with_input_mask():
    model = _model()
    x, y = torch.rand(2, 3, 32, 32) * 2 - 1, torch.rand(2, 3, 32, 32) * 2 - 1
    with torch.no_grad():
        step = generator_objective(model, x, y, LossWeights())
    seen = {}
    hook = model.d_b_attn.register_forward_hook(lambda m, i, o: seen.setdefault("inputs", []).append(i[0]))
    total, terms = discriminator_objective(
        model, x, y, fake_a=step.fake_a, fake_b=step.fake_b,
        fake_pair_a=pair(step.mask_a, step.fake_a), fake_pair_b=pair(step.mask_b, step.fake_b),
        mask_a=step.mask_a, mask_b=step.mask_b,
    )
    hook.remove()
    assert set(terms) == {"d_a", "d_b", "d_a_attn", "d_b_attn", "d_total"}
    real_pair = pair(step.mask_b, y)  # [M_y, y]: the mask g_ab made for x, with a real y
    assert len(seen["inputs"]) == 1  # the fake and the real batch in one call (instance norm: per image)
    assert seen["inputs"][0].shape[0] == 4 and torch.equal(seen["inputs"][0][2:], real_pair)
    total.backward()
    for d in model.discriminators:
        assert d.net[0].weight.grad.abs().sum() > 0
    for g in model.generators:  # the discriminators' loss never trains the generators
        assert all(p.grad is None for p in g.parameters())


def test_identity_negatives_score_the_other_domain_as_fake():
    model = _model()
    x, y = torch.rand(2, 3, 32, 32) * 2 - 1, torch.rand(2, 3, 32, 32) * 2 - 1
    with torch.no_grad():
        step = generator_objective(model, x, y, LossWeights())
    seen = []
    hook = model.d_b.register_forward_hook(lambda m, i, o: seen.append(i[0]))
    fakes = dict(fake_a=step.fake_a, fake_b=step.fake_b, fake_pair_a=pair(step.mask_a, step.fake_a),
                 fake_pair_b=pair(step.mask_b, step.fake_b), mask_a=step.mask_a, mask_b=step.mask_b)
    plain, _ = discriminator_objective(model, x, y, **fakes)
    with_negatives, _ = discriminator_objective(model, x, y, identity_negatives=True, **fakes)
    hook.remove()
    # D_Y saw the real x (an unchanged input) among its fakes: the batch is [fake, negative, real]
    assert any(s.shape[0] == 6 and torch.equal(s[2:4], x) for s in seen)
    assert not torch.allclose(plain, with_negatives)


def test_paste_negatives_show_each_discriminator_its_own_scene_with_the_other_domains_image_under_the_mask():
    model = _model()
    x, y = torch.rand(2, 3, 32, 32) * 2 - 1, torch.rand(2, 3, 32, 32) * 2 - 1
    with torch.no_grad():
        step = generator_objective(model, x, y, LossWeights())
    mask_b = torch.zeros(2, 1, 32, 32)
    mask_b[:, :, 8:20, 4:16] = 1  # where g_ab attends in x
    mask_a = torch.zeros(2, 1, 32, 32)  # g_ba attends nowhere in y
    fakes = dict(fake_a=step.fake_a, fake_b=step.fake_b, fake_pair_a=pair(mask_a, step.fake_a),
                 fake_pair_b=pair(mask_b, step.fake_b), mask_a=mask_a, mask_b=mask_b)
    seen: dict[str, list[torch.Tensor]] = {"d_a": [], "d_b": [], "d_b_attn": []}
    hooks = [getattr(model, n).register_forward_hook(lambda m, i, o, n=n: seen[n].append(i[0])) for n in seen]
    plain, _ = discriminator_objective(model, x, y, identity_negatives=True, **fakes)
    for scores in seen.values():
        scores.clear()
    pasted, _ = discriminator_objective(model, x, y, identity_negatives=True, paste_negatives=True, **fakes)
    for h in hooks:
        h.remove()
    # D_Y's batch is [fake, identity negative, pasted, real]; the pasted scene is y with x's box in it
    (batch,) = seen["d_b"]
    assert batch.shape[0] == 8 and torch.equal(batch[2:4], x) and torch.equal(batch[6:], y)
    expected = y.clone()
    expected[:, :, 8:20, 4:16] = x[:, :, 8:20, 4:16]
    torch.testing.assert_close(batch[4:6], expected)
    # the attention discriminator sees it paired with the mask it was pasted under
    torch.testing.assert_close(seen["d_b_attn"][0][4:6], pair(mask_b, expected))
    # a mask that attends nowhere pastes nothing: D_X is shown its own real image as a fake
    torch.testing.assert_close(seen["d_a"][0][4:6], x)
    assert not torch.allclose(plain, pasted)


def test_attention_floor_only_acts_below_the_floor_and_keeps_a_gradient():
    from aggan_cli.losses import floor_loss

    logits = torch.tensor([-8.0, -4.0, 0.0, 6.0], requires_grad=True)
    loss = floor_loss(torch.sigmoid(logits).view(1, 1, 2, 2), -4.0)
    assert loss.item() == pytest.approx(4.0 / 4, rel=1e-3)  # only the -8 logit is 4 below the floor
    loss.backward()
    # constant-size gradient below the floor, even where the sigmoid is saturated; none above it
    assert logits.grad[0].item() == pytest.approx(-0.25, rel=1e-3)
    assert logits.grad[2:].abs().max().item() < 1e-6


def _separate_calls_objective(model, x, y, fakes, identity_negatives, kind="lsgan", paste_negatives=False):
    """discriminator_objective as it was written before it scored the batches together: one
    discriminator call per batch. The reference for the test below."""
    def half(d, real, fake, negative, pasted):
        shown = ([negative] if identity_negatives else []) + ([pasted] if paste_negatives else [])
        fake_loss = gan_loss(d(fake), False, kind)
        if shown:
            fake_loss = 0.5 * (fake_loss + sum(gan_loss(d(n), False, kind) for n in shown) / len(shown))
        return 0.5 * (gan_loss(d(real), True, kind) + fake_loss)

    m_a, m_b = fakes["mask_a"], fakes["mask_b"]
    pasted_a, pasted_b = m_a * y + (1 - m_a) * x, m_b * x + (1 - m_b) * y
    return (half(model.d_a, x, fakes["fake_a"], y, pasted_a) + half(model.d_b, y, fakes["fake_b"], x, pasted_b)
            + half(model.d_a_attn, pair(m_a, x), fakes["fake_pair_a"], pair(m_a, y), pair(m_a, pasted_a))
            + half(model.d_b_attn, pair(m_b, y), fakes["fake_pair_b"], pair(m_b, x), pair(m_b, pasted_b)))


@pytest.mark.parametrize("kind", ["lsgan", "hinge"])
@pytest.mark.parametrize("identity_negatives,paste_negatives", [(False, False), (True, False), (True, True),
                                                                (False, True)])
def test_one_call_per_discriminator_gives_the_same_loss_and_gradients_as_separate_calls(identity_negatives,
                                                                                       paste_negatives, kind):
    model = _model()
    x, y = torch.rand(2, 3, 32, 32) * 2 - 1, torch.rand(2, 3, 32, 32) * 2 - 1
    with torch.no_grad():
        step = generator_objective(model, x, y, LossWeights())
    fakes = dict(fake_a=step.fake_a, fake_b=step.fake_b, fake_pair_a=pair(step.mask_a, step.fake_a),
                 fake_pair_b=pair(step.mask_b, step.fake_b), mask_a=step.mask_a, mask_b=step.mask_b)
    together, _ = discriminator_objective(model, x, y, identity_negatives=identity_negatives, gan_loss_kind=kind,
                                          paste_negatives=paste_negatives, **fakes)
    together.backward()
    grads = [p.grad.clone() for d in model.discriminators for p in d.parameters()]
    model.zero_grad(set_to_none=True)
    separate = _separate_calls_objective(model, x, y, fakes, identity_negatives, kind, paste_negatives)
    separate.backward()
    torch.testing.assert_close(together, separate)
    for g, d_param in zip(grads, (p for d in model.discriminators for p in d.parameters())):
        torch.testing.assert_close(g, d_param.grad)


def test_binarisation_term_is_the_distance_to_the_nearer_of_0_and_1_and_pulls_each_value_to_it():
    from aggan_cli.losses import binary_loss

    m = torch.tensor([0.0, 0.2, 0.75, 1.0], requires_grad=True)
    loss = binary_loss(m.view(1, 1, 2, 2))
    assert loss.item() == pytest.approx((0 + 0.2 + 0.25 + 0) / 4)
    loss.backward()
    # gradient descent moves 0.2 down to 0 and 0.75 up to 1, at the same rate
    assert m.grad[1].item() == pytest.approx(0.25) and m.grad[2].item() == pytest.approx(-0.25)
    binary = torch.tensor([0.0, 1.0, 1.0, 0.0]).view(1, 1, 2, 2)
    assert binary_loss(binary).item() == 0.0


def test_the_binarisation_term_enters_the_generators_total_only_with_its_weight():
    model = _model()
    x, y = torch.rand(1, 3, 32, 32) * 2 - 1, torch.rand(1, 3, 32, 32) * 2 - 1
    with torch.no_grad():
        off = generator_objective(model, x, y, LossWeights())
        on = generator_objective(model, x, y, LossWeights(lambda_binary=3.0))
    assert off.terms["binary"].item() > 0  # an untrained mask sits near 0.5
    assert on.total.item() == pytest.approx(off.total.item() + 3.0 * off.terms["binary"].item(), rel=1e-5)


@pytest.mark.parametrize("norm", ["instance", "batch"])
def test_the_identity_loss_runs_each_generator_on_its_own_output_domain_and_enters_with_its_weight(norm):
    """With instance norm each generator's two inputs go through in one call, with batch norm in two (one
    batch's statistics must not mix with the other's): the same figures either way."""
    from aggan_cli.losses import l1

    torch.manual_seed(0)
    model = AGGAN(ModelConfig(ngf=8, n_blocks=1, ndf=8, image_size=32, norm=norm)).train()
    x, y = torch.rand(2, 3, 32, 32) * 2 - 1, torch.rand(2, 3, 32, 32) * 2 - 1
    with torch.no_grad():
        off = generator_objective(model, x, y, LossWeights())
        on = generator_objective(model, x, y, LossWeights(lambda_identity=5.0))
        expected = l1(model.g_ab(y).image, y) + l1(model.g_ba(x).image, x)
    assert "identity" not in off.terms  # off: the two extra generator passes are not run at all
    assert on.terms["identity"].item() == pytest.approx(expected.item(), rel=1e-6)
    assert expected.item() > 0  # an untrained generator changes its input
    assert on.total.item() == pytest.approx(off.total.item() + 5.0 * expected.item(), rel=1e-5)


def test_cycle_free_below_keeps_the_image_and_stops_the_gradient_only_at_mask_values_below_it():
    """The cycle's input is the same image; the mask values below the threshold get no gradient through it,
    those at or above it the same gradient as without, and the content its gradient everywhere."""
    torch.manual_seed(0)
    source, content = torch.rand(1, 3, 4, 4), torch.rand(1, 3, 4, 4)
    values = torch.tensor([0.0, 0.01, 0.05, 0.099, 0.1, 0.2, 0.5, 0.9] * 2).reshape(1, 1, 4, 4)
    grads, paints = {}, {}
    for free in (0.0, 0.1, 1.0):
        mask, paint = values.clone().requires_grad_(), content.clone().requires_grad_()
        image = paint * mask + source * (1 - mask)
        out = _cycle_input(image, mask, paint, source, free)
        torch.testing.assert_close(out, image)
        (out * torch.linspace(-1, 1, 48).reshape(1, 3, 4, 4)).sum().backward()
        grads[free] = torch.zeros_like(values) if mask.grad is None else mask.grad.clone()  # None: no path at all
        paints[free] = paint.grad.clone()
    below = values < 0.1
    assert (grads[0.1][below] == 0).all() and (grads[0.0][below] != 0).any()
    torch.testing.assert_close(grads[0.1][~below], grads[0.0][~below])
    assert (grads[1.0] == 0).all()
    torch.testing.assert_close(paints[0.1], paints[0.0])
    torch.testing.assert_close(paints[1.0], paints[0.0])
    assert paints[0.0].abs().sum() > 0


def test_cycle_free_below_changes_no_loss_value_and_frees_the_mask_from_the_cycle_term_alone():
    """Through the whole objective: every term has the same value; the reconstruction of x no longer reaches
    g_ab's attention head when the whole mask is free, and still reaches its content head."""
    x, y = torch.rand(1, 3, 32, 32) * 2 - 1, torch.rand(1, 3, 32, 32) * 2 - 1
    steps, heads = {}, {}
    for free in (0.0, 1.0):
        model = _model()
        steps[free] = generator_objective(model, x, y, LossWeights(cycle_free_below=free))
        l1(steps[free].rec_a, x).backward()  # C_x = g_ba(G_y): the cycle through g_ab's mask M_y
        heads[free] = model.g_ab.net[-1].weight.grad
    for name, value in steps[0.0].terms.items():
        torch.testing.assert_close(steps[1.0].terms[name], value, msg=name)
    assert heads[0.0][0].abs().sum() > 0 and (heads[1.0][0] == 0).all()
    assert heads[1.0][1:].abs().sum() > 0
