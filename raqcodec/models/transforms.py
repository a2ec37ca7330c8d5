"""Analysis and synthesis transforms g_a, g_s.

    x (B,3,H,W) in [0,1] -> g_a -> z (B,d,H/f,W/f)        z_q (B,d,H/f,W/f) -> g_s -> x_hat (B,3,H,W)

Both take and give pixels centred as x - 0.5 internally, the same at training and test time (the reference code
normalised its training and test splits differently; here there is one convention).
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from raqcodec.models.config import ModelConfig
from raqcodec.models.gdn import GDN, ResidualBlock
from raqcodec.numpy_layers import transposed_conv_taps


class PaperResBlock(nn.Module):
    """RAQ-VAE residual block: ReLU -> conv3x3 (C->R) -> ReLU -> conv1x1 (R->C), plus identity."""

    def __init__(self, channels: int, residual_channels: int) -> None:
        super().__init__()
        self.body = nn.Sequential(
            nn.ReLU(), nn.Conv2d(channels, residual_channels, 3, padding=1),
            nn.ReLU(), nn.Conv2d(residual_channels, channels, 1),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.body(x)


class FastGDN(GDN):
    """GDN / IGDN (CompressAI's parameters and state_dict), with a leaner inference path.

    y_c = x_c * (beta_c + sum_j gamma_cj x_j^2)^(-1/2), or ^(+1/2) for the inverse. Without autograd the
    1x1 convolution runs as a matrix product over the channels of a channels-last view, and the square root
    and product work in place: a third less time than the parent at 128 channels on a 2-core CPU. It runs
    PIXEL_CHUNK pixels at a time into one output, so the squares and norms of a chunk stay in cache and no
    image-sized temporary is allocated. For a 384x256x128 input on the 2-core AVX2 machine (best of 9, two
    runs): 47-49 -> 30-37 ms with allocator.keep_freed_memory, 99-105 -> 69-76 ms without. Chunked and whole
    products gave the same bits there, but not on a 16-core CPU with torch 2.11 (its BLAS rounds a short product
    differently): the chunk size may move float32 results by rounding.
    """

    PIXEL_CHUNK = 4096  # pixels per matrix product: 2 MB of float32 squares at 128 channels

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if torch.is_grad_enabled():
            return super().forward(x)
        b, c, h, w = x.shape
        pixels = x.permute(0, 2, 3, 1).reshape(-1, c)  # a view when x is channels-last
        beta, gamma_t = self.beta_reparam(self.beta), self.gamma_reparam(self.gamma).t()
        out = None
        for start in range(0, pixels.shape[0], self.PIXEL_CHUNK):
            part = pixels[start:start + self.PIXEL_CHUNK]
            norm = torch.addmm(beta, part * part, gamma_t)  # not out=: autocast (bfloat16 analysis) skips those
            out = norm.new_empty(pixels.shape) if out is None else out
            torch.mul(norm.sqrt_() if self.inverse else norm.rsqrt_(), part, out=out[start:start + len(norm)])
        return out.reshape(b, h, w, c).permute(0, 3, 1, 2)


class PolyphaseConvTranspose2d(nn.ConvTranspose2d):
    """ConvTranspose2d (same parameters and state_dict) whose float32 CPU inference runs as one ordinary
    convolution that gives all s x s output phases at once, followed by a pixel shuffle.

    Output pixel o = s*q + r of a transposed convolution sums x[q + d] * weight[r + p - s*d] over the offsets d
    whose kernel tap r + p - s*d lies in [0, k): for each phase r, a small correlation over input positions
    q + d. Stacking the phases' kernels (zero where a phase has no tap) as s*s*C' output channels of one
    convolution computes the same sums (in another order: float32 results differ by rounding, about 1e-6 of
    the output's range). C' is out_channels padded with zero filters so s*s*C' is a multiple of 16.

    Used only for layers with few output channels, whose transposed convolution oneDNN runs far below the
    CPU's peak: the 128 -> 3 channel, stride-2 output layer on a 768x512 Kodak image took 55-64 ms, this 26-35
    ms (2-core AVX2 machine, medians of 7 or 9 in several ad-hoc runs). Training, other devices, float64 (the
    exact decoder) and layers with out = s * in (k + output_padding - 2p = s) not met run the parent's
    operation. The phase kernel is built on each call from the current weight (under 1 ms), so nothing is
    cached.
    """

    MAX_OUT_CHANNELS = 16  # above this, the parent's transposed convolution runs near the CPU's peak

    def forward(self, x: torch.Tensor, output_size: list[int] | None = None) -> torch.Tensor:
        if (torch.is_grad_enabled() or output_size is not None or x.device.type != "cpu" or x.dtype != torch.float32
                or not self._polyphase_shape()):
            return super().forward(x, output_size)
        stride = self.stride[0]
        weight, bias, low, high = self._phase_kernel()
        if low == high:  # the usual case (k = 5, s = 2, p = 2): the convolution pads without a copy of x
            phases = F.conv2d(x, weight, bias, padding=low)
        else:
            phases = F.conv2d(F.pad(x, (low, high, low, high)), weight, bias)
        return F.pixel_shuffle(phases, stride)[:, :self.out_channels]

    def _polyphase_shape(self) -> bool:
        """Whether the layer qualifies: square, undilated, ungrouped, output s times the input, few outputs."""
        (k, k2), (s, s2), (p, p2), (op, op2) = self.kernel_size, self.stride, self.padding, self.output_padding
        return (k == k2 and s == s2 and p == p2 and op == op2 and self.dilation == (1, 1) and self.groups == 1
                and self.padding_mode == "zeros" and k + op - 2 * p == s and self.out_channels <= self.MAX_OUT_CHANNELS)

    def _phase_kernel(self) -> tuple[torch.Tensor, torch.Tensor, int, int]:
        """(weight (s*s*C', C_in, n, n), bias (s*s*C',), padding before, padding after) of the phase convolution;
        channel c * s*s + ry * s + rx is output channel c at phase (ry, rx), pixel_shuffle's order."""
        k, s, p = self.kernel_size[0], self.stride[0], self.padding[0]
        taps = transposed_conv_taps(k, s, p)
        low = min(d for r in taps for d in taps[r])
        high = max(d for r in taps for d in taps[r])
        channels = self.out_channels
        while (s * s * channels) % 16:
            channels += 1
        weight = self.weight.new_zeros(channels, s, s, self.in_channels, high - low + 1, high - low + 1)
        for ry in range(s):
            for dy, ky in taps[ry].items():
                for rx in range(s):
                    for dx, kx in taps[rx].items():
                        weight[:self.out_channels, ry, rx, :, dy - low, dx - low] = self.weight[:, :, ky, kx].t()
        bias = self.weight.new_zeros(channels)
        if self.bias is not None:
            bias[:self.out_channels] = self.bias
        return weight.flatten(0, 2), bias.repeat_interleave(s * s), -low, high


def _conv(cin: int, cout: int, kernel: int = 5, stride: int = 2) -> nn.Conv2d:
    return nn.Conv2d(cin, cout, kernel, stride=stride, padding=kernel // 2)


def _deconv(cin: int, cout: int, kernel: int = 5, stride: int = 2) -> nn.ConvTranspose2d:
    return PolyphaseConvTranspose2d(cin, cout, kernel, stride=stride, padding=kernel // 2, output_padding=stride - 1)


def _paper_analysis(cfg: ModelConfig) -> nn.Sequential:
    """Conv(3->C, k8, s4) -> 2 ResBlocks -> ReLU -> 1x1 (C->d): the RAQ-VAE encoder, f=4."""
    c = cfg.channels
    return nn.Sequential(
        nn.Conv2d(3, c, 8, stride=4, padding=2),
        PaperResBlock(c, c // 2), PaperResBlock(c, c // 2), nn.ReLU(),
        nn.Conv2d(c, cfg.latent_dim, 1),
    )


def _paper_synthesis(cfg: ModelConfig) -> nn.Sequential:
    """Conv(d->C, k3) -> 2 ResBlocks -> ReLU -> ConvT(C->3, k8, s4): the RAQ-VAE decoder, f=4."""
    c = cfg.channels
    return nn.Sequential(
        nn.Conv2d(cfg.latent_dim, c, 3, padding=1),
        PaperResBlock(c, c // 2), PaperResBlock(c, c // 2), nn.ReLU(),
        PolyphaseConvTranspose2d(c, 3, 8, stride=4, padding=2),
    )


def _gdn_analysis(cfg: ModelConfig) -> nn.Sequential:
    """log2(f) stride-2 5x5 convs with GDN between them, a residual block at the latent grid, 1x1 to d."""
    c, steps = cfg.channels, cfg.downsample.bit_length() - 1
    layers: list[nn.Module] = []
    for i in range(steps):
        layers.append(_conv(3 if i == 0 else c, c))
        if i < steps - 1:
            layers.append(FastGDN(c))
    layers += [ResidualBlock(c), nn.Conv2d(c, cfg.latent_dim, 1)]
    return nn.Sequential(*layers)


def _gdn_synthesis(cfg: ModelConfig) -> nn.Sequential:
    """Mirror of the GDN analysis: 1x1 from d, a residual block, stride-2 5x5 transposed convs with IGDN."""
    c, steps = cfg.channels, cfg.downsample.bit_length() - 1
    layers: list[nn.Module] = [nn.Conv2d(cfg.latent_dim, c, 1), ResidualBlock(c)]
    for i in range(steps):
        last = i == steps - 1
        layers.append(_deconv(c, 3 if last else c))
        if not last:
            layers.append(FastGDN(c, inverse=True))
    return nn.Sequential(*layers)


def build_transforms(cfg: ModelConfig) -> tuple[nn.Module, nn.Module]:
    """(g_a, g_s) for the configuration's backbone."""
    if cfg.downsample & (cfg.downsample - 1):
        raise ValueError("downsample must be a power of two")
    if cfg.backbone == "paper":
        if cfg.downsample != 4:
            raise ValueError("the paper backbone has a fixed stride of 4")
        return _paper_analysis(cfg), _paper_synthesis(cfg)
    if cfg.backbone == "gdn":
        return _gdn_analysis(cfg), _gdn_synthesis(cfg)
    raise ValueError(f"unknown backbone {cfg.backbone!r}")
