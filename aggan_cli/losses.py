"""AGGAN's objective (paper §III-C): adversarial, attention-guided adversarial, cycle, pixel, attention.

Two functions do all of it, so the training loop reads like the algorithm:

* :func:`generator_objective` runs both generators on a batch ``(x, y)`` (four forward passes: x→y,
  y→x and the two reconstructions; six with the identity loss, y→y and x→x) and returns the weighted
  total, each term for logging, and the generated tensors the discriminators need.
* :func:`discriminator_objective` scores real and generated samples with all four discriminators.

Terms are returned as detached tensors, never Python floats: reading them forces a host-device sync,
which the trainer does only at logging intervals.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import Tensor

from .errors import ConfigError
from .networks import AGGAN, GeneratorOutput


@dataclass(frozen=True)
class LossWeights:
    """Weights of the generator objective; defaults are DESIGN.md's."""

    gan_loss: str = "lsgan"      # "lsgan" (least squares, CycleGAN/authors' code), "vanilla" (Eqs. 2-3) or "hinge"
    lambda_cycle: float = 10.0
    lambda_pixel: float = 1.0
    lambda_tv: float = 1e-6      # TV is summed over pixels (Eq. 7), so the weight is tiny
    lambda_floor: float = 0.0    # weight of the attention floor (keeps mask logits above floor_logit)
    floor_logit: float = -4.0
    lambda_binary: float = 0.0   # weight of the binarisation term (pulls each mask value to 0 or 1)
    lambda_identity: float = 0.0  # weight of CycleGAN's identity loss |g_ab(y) − y| + |g_ba(x) − x|
    cycle_free_below: float = 0.0  # mask values below this get no gradient from the cycle loss (0 = the paper)


def gan_loss(score: Tensor, target_is_real: bool, kind: str, *, generator: bool = False) -> Tensor:
    """Adversarial loss of a discriminator score against "real" (1) or "fake" (0).

    ``lsgan``: mean squared distance to the target (Mao et al.). ``vanilla``: the log-likelihood of
    the paper's Eqs. 2-3, as binary cross-entropy on logits (numerically stable; the generator uses
    the non-saturating form −log D(G(x)), as is standard). ``hinge`` (Lim & Ye 2017; SAGAN, BigGAN):
    the discriminator pays ``relu(1 − s)`` on real and ``relu(1 + s)`` on fake scores, so a score already
    past its margin gives no gradient and the easy images stop pulling; the generator (``generator=True``,
    always against "real") pays ``−s``. Computed in float32 under autocast.
    """
    score = score.float()
    if kind == "hinge":
        if generator:
            return -score.mean()
        return F.relu(1 - score).mean() if target_is_real else F.relu(1 + score).mean()
    target = torch.ones_like(score) if target_is_real else torch.zeros_like(score)
    if kind == "lsgan":
        return F.mse_loss(score, target)
    if kind == "vanilla":
        return F.binary_cross_entropy_with_logits(score, target)
    raise ConfigError(f"unknown GAN loss {kind!r}; use 'lsgan', 'vanilla' or 'hinge'")


def tv_loss(mask: Tensor) -> Tensor:
    """Total variation of an attention mask, paper Eq. 7: the sum over pixels of the absolute
    differences between vertical and horizontal neighbours; averaged over the batch so the weight
    does not depend on the batch size. ``mask``: (B, 1, H, W)."""
    mask = mask.float()
    dh = (mask[:, :, 1:, :] - mask[:, :, :-1, :]).abs().sum()
    dw = (mask[:, :, :, 1:] - mask[:, :, :, :-1]).abs().sum()
    return (dh + dw) / mask.shape[0]


def floor_loss(mask: Tensor, floor_logit: float) -> Tensor:
    """Mean of relu(floor − logit(M)): zero while every mask logit is above ``floor_logit``, and a
    gradient of constant size below it, however saturated the sigmoid (logit∘sigmoid is the identity)."""
    m = mask.float().clamp(1e-7, 1 - 1e-7)
    return torch.relu(floor_logit - torch.log(m / (1 - m))).mean()


def binary_loss(mask: Tensor) -> Tensor:
    """Mean of min(M, 1 − M), the distance of each mask value to the nearer of 0 and 1: its gradient pulls
    values above 0.5 up to 1 and values below it down to 0, at the same rate however close they are."""
    m = mask.float()
    return torch.minimum(m, 1 - m).mean()


def l1(a: Tensor, b: Tensor) -> Tensor:
    return (a.float() - b.float()).abs().mean()


def pair(mask: Tensor, image: Tensor) -> Tensor:
    """The attention-guided discriminators' input ``[M, image]``: (B, 1+3, H, W)."""
    return torch.cat([mask.to(image.dtype), image], dim=1)


class GeneratorStep(NamedTuple):
    total: Tensor
    terms: dict[str, Tensor]
    fake_a: Tensor      # G_x = g_ba(y).image
    fake_b: Tensor      # G_y = g_ab(x).image
    mask_a: Tensor      # M_x
    mask_b: Tensor      # M_y
    content_a: Tensor   # R_x
    content_b: Tensor   # R_y
    rec_a: Tensor       # C_x = g_ba(G_y)
    rec_b: Tensor       # C_y = g_ab(G_x)


def generator_objective(model: AGGAN, x: Tensor, y: Tensor, weights: LossWeights) -> GeneratorStep:
    """The generators' loss of DESIGN.md for a batch ``x`` from A and ``y`` from B (both (B, 3, H, W)):

        L = L_GAN(g_ab, d_b) + L_AGAN(g_ab, d_b_attn) + L_GAN(g_ba, d_a) + L_AGAN(g_ba, d_a_attn)
            + λ_cycle (|g_ba(g_ab(x)) − x|₁ + |g_ab(g_ba(y)) − y|₁)          (Eq. 4)
            + λ_pixel (|g_ab(x) − x|₁ + |g_ba(y) − y|₁)                      (Eq. 5)
            + λ_tv (TV(M_x) + TV(M_y))                                         (Eq. 7)
            + λ_floor (floor(M_x) + floor(M_y))        (ours, against mask collapse; 0 = the paper)
            + λ_binary (bin(M_x) + bin(M_y))          (ours, near-binary masks late; off by default)
            + λ_identity (|g_ab(y) − y|₁ + |g_ba(x) − x|₁)  (CycleGAN's identity loss; not in the paper)

    The trainer sets the weights for each step (``Trainer.weights_at``): λ_floor fades out over training,
    λ_binary is on for the last quarter, and, with ``--cycle-ramp`` (ours, off by default), λ_cycle ramps in as
    λ_floor fades.

    The attention-guided terms score the fake pair ``[M_y, G_y]`` (Eq. 3); the gradient flows into
    both the mask and the image.

    With ``cycle_free_below`` (``--cycle-free-below``, ours, off by default) the cycle's input is the same
    image, but the mask values below that threshold carry no gradient from the cycle term
    (:func:`_cycle_input`).

    The identity term (CycleGAN's, Zhu et al. 2017) runs each generator on the domain it produces, which
    has nothing to translate, and charges whatever it changes there: the one term that shows ``g_ab``
    scenes it must leave alone (docs/training.md, "The identity loss"). It costs two more generator
    passes per step, so it is computed only when its weight is not zero, each generator's two inputs
    batched into one call where that gives the same outputs.
    """
    kind = weights.gan_loss
    if weights.lambda_identity:
        (fake_b, mask_b, content_b), same_b = _with_identity(model.g_ab, x, y)
        (fake_a, mask_a, content_a), same_a = _with_identity(model.g_ba, y, x)
    else:
        fake_b, mask_b, content_b = model.g_ab(x)   # x -> [M_y, R_y, G_y]
        fake_a, mask_a, content_a = model.g_ba(y)   # y -> [M_x, R_x, G_x]
    rec_a = model.g_ba(_cycle_input(fake_b, mask_b, content_b, x, weights.cycle_free_below)).image  # C_x
    rec_b = model.g_ab(_cycle_input(fake_a, mask_a, content_a, y, weights.cycle_free_below)).image  # C_y

    terms = {
        "gan_ab": gan_loss(model.d_b(fake_b), True, kind, generator=True),
        "agan_ab": gan_loss(model.d_b_attn(pair(mask_b, fake_b)), True, kind, generator=True),
        "gan_ba": gan_loss(model.d_a(fake_a), True, kind, generator=True),
        "agan_ba": gan_loss(model.d_a_attn(pair(mask_a, fake_a)), True, kind, generator=True),
        "cycle": l1(rec_a, x) + l1(rec_b, y),
        "pixel": l1(fake_b, x) + l1(fake_a, y),
        "tv": tv_loss(mask_a) + tv_loss(mask_b),
    }
    terms["floor"] = floor_loss(mask_a, weights.floor_logit) + floor_loss(mask_b, weights.floor_logit)
    adversarial = terms["gan_ab"] + terms["agan_ab"] + terms["gan_ba"] + terms["agan_ba"]
    total = (adversarial
             + weights.lambda_cycle * terms["cycle"]
             + weights.lambda_pixel * terms["pixel"]
             + weights.lambda_tv * terms["tv"])
    if weights.lambda_identity:  # CycleGAN's identity loss (docs/training.md); 0 = the paper
        terms["identity"] = l1(same_b, y) + l1(same_a, x)
        total = total + weights.lambda_identity * terms["identity"]
    if weights.lambda_floor:  # ours, against mask collapse (docs/training.md); 0 = the paper
        total = total + weights.lambda_floor * terms["floor"]
    terms["binary"] = binary_loss(mask_a) + binary_loss(mask_b)
    if weights.lambda_binary:  # ours, near-binary masks late (docs/training.md); off by default, 0 = the paper
        total = total + weights.lambda_binary * terms["binary"]
    terms = {k: v.detach() for k, v in terms.items()}
    terms["g_total"] = total.detach()
    return GeneratorStep(total, terms, fake_a, fake_b, mask_a, mask_b, content_a, content_b, rec_a, rec_b)


def _cycle_input(image: Tensor, mask: Tensor, content: Tensor, source: Tensor, free_below: float) -> Tensor:
    """What the other generator reconstructs from: ``image`` itself, or, with ``free_below`` > 0, the same
    blend (Eq. 1) with the gradient stopped at the mask values below ``free_below`` (all of them from 1 on).
    The cycle still trains the content and the other generator there, but can no longer hold a shut mask
    shut: at full width, an edit on an object the mask missed is one the other generator has not learnt to
    undo, so the cycle term is what keeps the mask closed there (docs/training.md, "What holds a missed
    object's mask shut")."""
    if free_below <= 0:
        return image
    held = mask.detach() if free_below >= 1 else torch.where(mask < free_below, mask.detach(), mask)
    return content * held + source * (1 - held)


def _with_identity(g: torch.nn.Module, source: Tensor, target: Tensor) -> tuple[GeneratorOutput, Tensor]:
    """``g(source)`` and ``g(target).image``: one call on the concatenated batch where that gives the same
    outputs (instance norm normalises each image by itself), which on a CPU at batch 1 runs faster than
    two calls of one image (see :func:`score_together`)."""
    if not scores_each_image_alone(g):
        return g(source), g(target).image
    n = source.shape[0]
    both = g(torch.cat([source, target]))
    return GeneratorOutput(*(t[:n] for t in both)), both.image[n:]


def scores_each_image_alone(d: torch.nn.Module) -> bool:
    """True when ``d`` has no BatchNorm, so its score for an image does not depend on the rest of the
    batch (instance norm normalises each image by itself)."""
    return not any(isinstance(m, torch.nn.modules.batchnorm._BatchNorm) for m in d.modules())


def score_together(d: torch.nn.Module, batches: list[Tensor]) -> list[Tensor]:
    """``[d(b) for b in batches]``, computed as one call on the concatenated batch where that gives
    the same scores (up to float rounding): fewer, larger convolutions, which on a CPU at batch 1 run
    at a much higher fraction of the hardware's speed (docs/performance.md). With BatchNorm the batch
    statistics would mix the batches, so each keeps its own call, as in CycleGAN."""
    if len(batches) == 1 or not scores_each_image_alone(d):
        return [d(b) for b in batches]
    return list(d(torch.cat(batches)).split([b.shape[0] for b in batches]))


def discriminator_objective(
    model: AGGAN,
    real_a: Tensor,
    real_b: Tensor,
    *,
    fake_a: Tensor,
    fake_b: Tensor,
    fake_pair_a: Tensor,
    fake_pair_b: Tensor,
    mask_a: Tensor,
    mask_b: Tensor,
    gan_loss_kind: str = "lsgan",
    identity_negatives: bool = False,
    own_pairs: bool = False,
    paste_negatives: bool = False,
) -> tuple[Tensor, dict[str, Tensor]]:
    """The four discriminators' loss, each ½(real + fake) as CycleGAN.

    ``fake_*`` and ``fake_pair_*`` are generated samples (detached, usually drawn from history pools).
    ``mask_b`` is M_y, the mask g_ab produced for the current x: the attention-guided D_YA tells the
    fake pair ``[M_y, G_y]`` from the *real* pair ``[M_y, y]`` (paper §III-B), so the real image is
    paired with the mask produced for the input.

    ``identity_negatives`` (ours, against mask collapse): each discriminator also scores the *other*
    domain's real images as fake (D_Y sees x, D_YA sees ``[M_y, x]``), averaged with the generated
    fakes. An unchanged input is exactly what a collapsed generator outputs, so this teaches the
    discriminators from the first step what tells the domains apart, instead of only "looks generated".

    ``paste_negatives`` (ours, an option): each discriminator also scores as fake a real image of its own
    domain with the other domain's real image pasted in where the translating generator's mask is (D_Y
    sees ``M_y·x + (1 - M_y)·y``): a scene of the target domain with the source's object still in it,
    which is what an output looks like where the generator painted elsewhere and left the object. The
    identity negatives can be told from real images by the target's object alone; these cannot.

    With instance norm each discriminator scores its fake, negative and real batches in one call
    (:func:`score_together`).
    """
    kind = gan_loss_kind
    mask_a, mask_b = mask_a.detach(), mask_b.detach()
    # The mask paired with each real image: the paper's M_y (made for the input x, so on unaligned data it
    # marks a place where y has no object), or the mask the other generator made for that real image.
    real_mask_a, real_mask_b = (mask_b, mask_a) if own_pairs else (mask_a, mask_b)

    def half(d: torch.nn.Module, real: Tensor, fake: Tensor, negative: Tensor, pasted: Tensor) -> Tensor:
        negatives = ([negative] if identity_negatives else []) + ([pasted] if paste_negatives else [])
        scores = score_together(d, [fake.detach(), *negatives, real])
        fake_loss = gan_loss(scores[0], False, kind)
        if negatives:  # the generated fakes keep half the weight; the negatives share the other half
            shown = sum(gan_loss(score, False, kind) for score in scores[1:-1]) / len(negatives)
            fake_loss = 0.5 * (fake_loss + shown)
        return 0.5 * (gan_loss(scores[-1], True, kind) + fake_loss)

    # the other domain's image pasted into each real image where the translating generator attends
    pasted_b = mask_b * real_a + (1 - mask_b) * real_b if paste_negatives else real_b
    pasted_a = mask_a * real_b + (1 - mask_a) * real_a if paste_negatives else real_a
    terms = {
        "d_a": half(model.d_a, real_a, fake_a, real_b, pasted_a),
        "d_b": half(model.d_b, real_b, fake_b, real_a, pasted_b),
        "d_a_attn": half(model.d_a_attn, pair(real_mask_a, real_a), fake_pair_a, pair(mask_a, real_b),
                         pair(mask_a, pasted_a)),
        "d_b_attn": half(model.d_b_attn, pair(real_mask_b, real_b), fake_pair_b, pair(mask_b, real_a),
                         pair(mask_b, pasted_b)),
    }
    total = terms["d_a"] + terms["d_b"] + terms["d_a_attn"] + terms["d_b_attn"]
    terms = {k: v.detach() for k, v in terms.items()}
    terms["d_total"] = total.detach()
    return total, terms
