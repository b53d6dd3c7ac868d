"""AGGAN's networks, read top to bottom: blocks, the attention generator, the discriminators, the model.

Code names and the paper's symbols (Tang et al., IJCNN 2019, §III), one place for all of them:

    g_ab       G_{X→Y}   generator from domain A (= X) to domain B (= Y)
    g_ba       G_{Y→X}
    d_a, d_b   D_X, D_Y  vanilla discriminators on images
    d_a_attn   D_XA      attention-guided discriminator on [M_x, image] pairs
    d_b_attn   D_YA      attention-guided discriminator on [M_y, image] pairs
    mask_b     M_y       attention mask produced by g_ab for input x
    content_b  R_y       content image produced by g_ab
    fake_b     G_y       = R_y · M_y + x · (1 − M_y)        (Eq. 1)
    rec_a      C_x       = g_ba(fake_b), the cycle reconstruction of x

(``d_ba`` is *not* used for D_YA: ``ba`` already means the direction b→a.)
"""

from __future__ import annotations

import math
from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .config import MAX_MASK_GUIDE, UPSAMPLINGS, ModelConfig
from .errors import ConfigError


class InstanceNorm(nn.InstanceNorm2d):
    """``nn.InstanceNorm2d`` without affine parameters or running statistics (CycleGAN's), computed on
    the CPU as ``group_norm`` with one group per channel: the same statistics (equal to float rounding),
    but PyTorch's CPU kernels for it are 3-6× faster forward and backward (docs/performance.md).
    Same class family, same (empty) state dict: checkpoints do not see the difference."""

    def __init__(self, channels: int) -> None:
        super().__init__(channels, affine=False, track_running_stats=False)

    def forward(self, x: Tensor) -> Tensor:
        if x.device.type == "cpu" and x.dim() == 4:
            return F.group_norm(x, x.shape[1], eps=self.eps)
        return super().forward(x)


def norm_layer(norm: str, channels: int) -> nn.Module:
    if norm == "instance":
        # affine=False and no running stats, as CycleGAN: the statistics come from each image alone.
        return InstanceNorm(channels)
    if norm == "batch":
        return nn.BatchNorm2d(channels)
    raise ConfigError(f"unknown norm {norm!r}; use 'instance' or 'batch'")


class ResidualBlock(nn.Module):
    """``Rk``: two 3×3 convolutions with reflection padding, added to the input."""

    def __init__(self, channels: int, norm: str) -> None:
        super().__init__()
        bias = norm == "instance"  # a following affine BatchNorm makes a conv bias redundant
        self.body = nn.Sequential(
            nn.ReflectionPad2d(1), nn.Conv2d(channels, channels, 3, bias=bias), norm_layer(norm, channels), nn.ReLU(True),
            nn.ReflectionPad2d(1), nn.Conv2d(channels, channels, 3, bias=bias), norm_layer(norm, channels),
        )

    def forward(self, x: Tensor) -> Tensor:
        return x + self.body(x)


def guided_filter(p: Tensor, guide: Tensor, radius: int, eps: float = 1e-2) -> Tensor:
    """He et al.'s guided filter (ECCV 2010, colour-guide form): ``p`` (B, 1, H, W) filtered so that its
    edges follow those of ``guide`` (B, 3, H, W), an image in [-1, 1]. ``p`` may be any real map (the
    generator filters mask logits).

    In each (2r+1)² window the output is a linear function of the guide's colour, fitted to ``p`` by
    least squares with ridge ``eps`` (in units of the guide's variance, colours in [0, 1]): where the guide
    is flat it is ``p`` averaged over the window, and across an edge of the guide it steps where the
    guide steps. Windows are clipped at the border. Computed in float32 (variances are differences of
    means, which half precision cannot resolve); the 3×3 systems are solved by cofactors, elementwise.
    """
    dtype = p.dtype
    p, guide = p.float(), (guide.float() + 1) / 2

    def box(t: Tensor) -> Tensor:  # mean over the window, clipped at the border
        return F.avg_pool2d(t, 2 * radius + 1, stride=1, padding=radius, count_include_pad=False)

    mean_i, mean_p = box(guide), box(p)                                  # (B, 3, H, W), (B, 1, H, W)
    cov_ip = box(guide * p) - mean_i * mean_p                            # (B, 3, H, W)
    first, second = [0, 0, 0, 1, 1, 2], [0, 1, 2, 1, 2, 2]               # rr rg rb gg gb bb
    var = box(guide[:, first] * guide[:, second]) - mean_i[:, first] * mean_i[:, second]  # (B, 6, H, W)
    rr, rg, rb, gg, gb, bb = var.split(1, dim=1)
    rr, gg, bb = rr + eps, gg + eps, bb + eps
    # inverse of the symmetric [[rr rg rb] [rg gg gb] [rb gb bb]] by cofactors
    c_rr, c_rg, c_rb = gg * bb - gb * gb, rb * gb - rg * bb, rg * gb - rb * gg
    c_gg, c_gb, c_bb = rr * bb - rb * rb, rg * rb - rr * gb, rr * gg - rg * rg
    det = rr * c_rr + rg * c_rg + rb * c_rb
    cr, cg, cb = cov_ip.split(1, dim=1)
    a = torch.cat([c_rr * cr + c_rg * cg + c_rb * cb,
                   c_rg * cr + c_gg * cg + c_gb * cb,
                   c_rb * cr + c_gb * cg + c_bb * cb], dim=1) / det     # (B, 3, H, W)
    b = mean_p - (a * mean_i).sum(1, keepdim=True)                      # (B, 1, H, W)
    return ((box(a) * guide).sum(1, keepdim=True) + box(b)).to(dtype)


class GeneratorOutput(NamedTuple):
    image: Tensor    # (B, 3, H, W) in [-1, 1]: the translated image, Eq. 1
    mask: Tensor     # (B, 1, H, W) in [0, 1]: attention, 1 = replaced by content
    content: Tensor  # (B, 3, H, W) in [-1, 1]: what the attended region becomes


class AttentionGenerator(nn.Module):
    """Paper §III-A/D: ``c7s1-64, d128, d256, R256 × n_blocks, u128, u64, c7s1-4``.

    The last layer has four channels: channel 0 through a sigmoid is the attention mask, channels 1-3
    through a tanh are the content; the output blends them with the input (Eq. 1). Height and width
    must be multiples of 4 (two stride-2 downsamplings).

    ``mask_guide`` > 0 (ours; 0 is the paper): the mask's logit passes through a guided filter of that
    radius with the input as the guide before the sigmoid, so the mask steps where the object's edge is
    instead of across the decoder's quarter-resolution blur. Filtering the logit, not the mask, keeps the
    two sides of an edge apart: the window averages a filter takes on each side stay large and negative
    outside an object, so no halo of partial attention forms there. The filter has no weights.

    ``guide_mix`` (ours, needs ``mask_guide``): the generator learns one weight ``a`` = sigmoid(GUIDE_MIX_SCALE ·
    ``guide_mix``) and the logit is ``a`` · guided + (1 − ``a``) · unguided, so an edit that draws a new
    outline where the input has none (a shape change) can use less of the guide than one that follows
    the object's outline. ``a`` starts at a half.

    ``upsample="resize"`` (ours, ModelConfig's default; ``transposed`` is the paper's): each of ``u128, u64`` is a
    nearest-neighbour ×2 resize and a 3×3 convolution instead of a stride-2 transposed convolution, whose
    kernel overlaps unevenly and prints a checkerboard into the content (Odena et al., Distill 2016).
    Same number of weights.
    """

    def __init__(self, *, ngf: int = 64, n_blocks: int = 9, norm: str = "instance", mask_guide: int = 0,
                 upsample: str = "transposed", guide_mix: bool = False) -> None:
        super().__init__()
        self.mask_guide = mask_guide
        if guide_mix and not mask_guide:
            raise ConfigError("guide_mix needs a mask guide to mix: set mask_guide above 0")
        # one weight, scaled (GUIDE_MIX_SCALE) so that Adam's steps of about the learning rate move the
        # mix's logit by a hundredth: a can go from a half to 0.1 or 0.9 in a few hundred steps
        self.guide_mix = nn.Parameter(torch.zeros(1)) if guide_mix else None
        if upsample not in UPSAMPLINGS:
            raise ConfigError(f"unknown upsampling {upsample!r}; use " + " or ".join(map(repr, UPSAMPLINGS)))
        bias = norm == "instance"
        layers: list[nn.Module] = [
            nn.ReflectionPad2d(3), nn.Conv2d(3, ngf, 7, bias=bias), norm_layer(norm, ngf), nn.ReLU(True),  # c7s1-64
        ]
        for mult in (1, 2):  # d128, d256
            layers += [nn.Conv2d(ngf * mult, ngf * mult * 2, 3, stride=2, padding=1, bias=bias),
                       norm_layer(norm, ngf * mult * 2), nn.ReLU(True)]
        layers += [ResidualBlock(ngf * 4, norm) for _ in range(n_blocks)]  # R256 × n_blocks
        for mult in (4, 2):  # u128, u64
            if upsample == "resize":  # ours: no checkerboard (Odena et al. 2016)
                up: list[nn.Module] = [nn.Upsample(scale_factor=2, mode="nearest"), nn.ReflectionPad2d(1),
                                       nn.Conv2d(ngf * mult, ngf * mult // 2, 3, bias=bias)]
            else:
                up = [nn.ConvTranspose2d(ngf * mult, ngf * mult // 2, 3, stride=2, padding=1, output_padding=1, bias=bias)]
            layers += [*up, norm_layer(norm, ngf * mult // 2), nn.ReLU(True)]
        layers += [nn.ReflectionPad2d(3), nn.Conv2d(ngf, 4, 7)]  # c7s1-4: 1 attention + 3 content channels
        self.net = nn.Sequential(*layers)

    @classmethod
    def from_config(cls, config: ModelConfig) -> "AttentionGenerator":
        return cls(ngf=config.ngf, n_blocks=config.n_blocks, norm=config.norm, mask_guide=config.mask_guide,
                   upsample=config.upsample, guide_mix=config.guide_mix)

    def forward(self, x: Tensor) -> GeneratorOutput:
        h = self.net(x)                       # (B, 4, H, W)
        mask = torch.sigmoid(self.mask_logit(h[:, :1], x))  # (B, 1, H, W), broadcast over RGB below
        content = torch.tanh(h[:, 1:])        # (B, 3, H, W)
        image = content * mask + x * (1 - mask)  # Eq. 1
        return GeneratorOutput(image, mask, content)

    def guide_weight(self) -> Tensor | None:
        """``a``, the share of the guided logit in the mask's (``guide_mix``), or None without the mix."""
        return None if self.guide_mix is None else torch.sigmoid(GUIDE_MIX_SCALE * self.guide_mix)

    def mask_logit(self, raw: Tensor, x: Tensor, radius: int | None = None) -> Tensor:
        """The mask's logit from the last layer's channel 0 (``raw``, (B, 1, H, W)) and the input ``x``:
        through the guided filter of ``radius`` (default: the generator's ``mask_guide``; 0 = none), mixed
        with the unfiltered logit where the generator learns the mix. ours: the mask's edges snapped to the
        input's (docs/training.md)."""
        radius = self.mask_guide if radius is None else radius
        if not radius:
            return raw
        guided = guided_filter(raw, x, radius)
        if self.guide_mix is None:
            return guided
        a = self.guide_weight().to(raw.dtype)
        return a * guided + (1 - a) * raw


# Translating with a wider mask guide than training used (docs/training.md, "A wider guide to translate
# with"): the widest of these radii (multiples of the trained one) whose masks, and those of every
# narrower one, agree with the trained radius's on the training images (IoU of the masks at 0.5 >=
# SNAP_AGREEMENT) is what translating uses.
SNAP_FACTORS = (4 / 3, 2, 8 / 3, 4, 16 / 3)  # a trained radius of 3 tries 4, 6, 8, 12 and 16
SNAP_AGREEMENT = 0.85
GUIDE_MIX_SCALE = 50.0  # guide_mix: a = sigmoid(GUIDE_MIX_SCALE · w), so one Adam step of ~2e-4 moves a by ~1/400


def snap_radii(trained: int) -> tuple[int, ...]:
    """The guide radii to try for translating, widest last: the trained one, then its SNAP_FACTORS multiples."""
    wider = (min(MAX_MASK_GUIDE, math.ceil(trained * f - 1e-9)) for f in SNAP_FACTORS)
    return tuple(sorted({trained, *wider}))


@torch.no_grad()
def choose_translate_guide(g: "AttentionGenerator", images: Tensor, chunk: int = 8) -> tuple[int, dict[int, float]]:
    """The mask-guide radius to translate with, and the agreement of each radius tried: the widest radius
    of :func:`snap_radii` whose masks on ``images`` ((N, 3, H, W) in [-1, 1], from the domain ``g``
    translates) agree with those of the radius ``g`` was trained with (IoU of the masks > 0.5, pooled
    over the images) at least SNAP_AGREEMENT, as do those of every narrower radius.

    Why: a wider window snaps a mask's edge to the input's edge more firmly, which removes the halo
    around an object whose outline the edit follows (a recolour), but where the edit draws a new outline
    in a flat area (a grin on skin) the wider window averages the mask away. The agreement tells the two
    apart without ground truth: a snap that keeps the mask is taken, one that erodes it is not. A
    generator without a guide, or whose masks are all shut, keeps its own radius."""
    trained = g.mask_guide
    if not trained or images is None or len(images) == 0:
        return trained, {}
    was_training = g.training
    g.eval()
    try:
        logits = torch.cat([g.net(images[i:i + chunk])[:, :1].float() for i in range(0, len(images), chunk)])
    finally:
        g.train(was_training)
    images = images.float()
    base = g.mask_logit(logits, images, trained) > 0  # sigmoid(l) > 0.5 where l > 0
    agreement = {}
    for radius in snap_radii(trained):
        hard = base if radius == trained else g.mask_logit(logits, images, radius) > 0
        union = int((hard | base).sum())
        agreement[radius] = float((hard & base).sum()) / union if union else 1.0  # both shut: alike
    if not base.any():
        return trained, agreement
    return widest_agreeing(agreement), agreement


def widest_agreeing(agreement: dict[int, float]) -> int:
    """The widest radius that agrees, as every narrower one does (the narrowest, the trained radius,
    agrees with itself): a wider radius that agrees again after one that did not is not taken."""
    chosen = min(agreement)
    for radius in sorted(agreement):
        if agreement[radius] < SNAP_AGREEMENT:
            break
        chosen = radius
    return chosen


def patch_size(n_layers: int) -> int:
    """The receptive field, in pixels, of one score of an ``n_layers`` PatchGAN (:class:`Discriminator`):
    ``n_layers`` 4×4 convolutions of stride 2, then two of stride 1. 1: 16, 2: 34, 3: 70, 4: 142, 5: 286."""
    field = 1
    for stride in (1, 1, *[2] * n_layers):  # from the score back to the image
        field = (field - 1) * stride + 4
    return field


class Discriminator(nn.Module):
    """Vanilla (3 input channels) or attention-guided (4: ``[mask, image]``) discriminator.

    ``kind="global"`` is the paper's (§III-D): ``C64, C128, C256, C512, C512`` with 4×4 convs, stride 2
    but stride 1 for the last, no norm on the first and last, LeakyReLU 0.2, then adaptive average
    pooling and a 1×1 conv to one score per image: ``(B, 1)``.

    ``kind="patch"`` is the 70×70 PatchGAN of pix2pix/CycleGAN: ``C64, C128, C256, C512`` then a conv
    to one score per overlapping patch: ``(B, 1, h, w)``. A score per patch keeps the gradient local,
    which is what keeps the attention mask alive in our measurements (docs/training.md).
    """

    def __init__(self, in_channels: int = 3, *, ndf: int = 64, norm: str = "instance", kind: str = "patch",
                 n_layers: int = 3) -> None:
        super().__init__()
        if kind not in ("global", "patch"):
            raise ConfigError(f"unknown discriminator {kind!r}; use 'patch' or 'global'")
        self.kind = kind
        bias = norm == "instance"

        def block(c_in: int, c_out: int, stride: int, normed: bool) -> list[nn.Module]:
            layers: list[nn.Module] = [nn.Conv2d(c_in, c_out, 4, stride=stride, padding=1, bias=bias or not normed)]
            if normed:
                layers.append(norm_layer(norm, c_out))
            return layers + [nn.LeakyReLU(0.2, True)]

        if kind == "global":
            layers = (block(in_channels, ndf, 2, False) + block(ndf, ndf * 2, 2, True) + block(ndf * 2, ndf * 4, 2, True)
                      + block(ndf * 4, ndf * 8, 2, True) + block(ndf * 8, ndf * 8, 1, False))
            layers += [nn.AdaptiveAvgPool2d(1), nn.Conv2d(ndf * 8, 1, 1)]
        else:
            layers = block(in_channels, ndf, 2, False)
            mult = 1
            for i in range(1, n_layers):
                prev, mult = mult, min(2 ** i, 8)
                layers += block(ndf * prev, ndf * mult, 2, True)
            prev, mult = mult, min(2 ** n_layers, 8)
            layers += block(ndf * prev, ndf * mult, 1, True)
            layers += [nn.Conv2d(ndf * mult, 1, 4, stride=1, padding=1)]
        self.net = nn.Sequential(*layers)

    def forward(self, x: Tensor) -> Tensor:
        score = self.net(x)  # global: (B, 1, 1, 1); patch: (B, 1, h, w)
        return score.flatten(1) if self.kind == "global" else score


def init_weights(module: nn.Module, std: float = 0.02) -> None:
    """N(0, 0.02) for conv weights, N(1, 0.02) for norm scales, zero biases (DESIGN.md, as CycleGAN)."""
    for m in module.modules():
        if isinstance(m, (nn.Conv2d, nn.ConvTranspose2d)):
            nn.init.normal_(m.weight, 0.0, std)
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, nn.BatchNorm2d):
            nn.init.normal_(m.weight, 1.0, std)
            nn.init.zeros_(m.bias)


class AGGAN(nn.Module):
    """The two generators and four discriminators, built from one ModelConfig.

    Only the generators are needed to translate (``model.safetensors`` holds just ``g_ab.*`` and
    ``g_ba.*``); ``with_discriminators=False`` skips building the rest.
    """

    def __init__(self, config: ModelConfig, *, with_discriminators: bool = True) -> None:
        super().__init__()
        self.config = config
        self.g_ab = AttentionGenerator.from_config(config)
        self.g_ba = AttentionGenerator.from_config(config)
        if with_discriminators:
            d = dict(ndf=config.ndf, norm=config.norm, kind=config.discriminator, n_layers=config.d_layers)
            self.d_a = Discriminator(3, **d)
            self.d_b = Discriminator(3, **d)
            self.d_a_attn = Discriminator(4, **d)
            self.d_b_attn = Discriminator(4, **d)
        init_weights(self)

    @property
    def generators(self) -> list[nn.Module]:
        return [self.g_ab, self.g_ba]

    @property
    def discriminators(self) -> list[nn.Module]:
        return [self.d_a, self.d_b, self.d_a_attn, self.d_b_attn]


def count_parameters(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())
