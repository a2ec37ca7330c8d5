"""Image quality metrics and codebook usage statistics, following CompressAI conventions.

Images are given either as numpy arrays (H, W, C) or (H, W), or as torch tensors (C, H, W)
or (1, C, H, W), with values in [0, data_range]: [0, 255] for uint8 pixels (the default),
[0, 1] for model tensors (pass ``data_range=1.0``). Metrics are computed per image over all
channels, in float64.
"""

from __future__ import annotations

import math

import numpy as np
import pytorch_msssim
import torch
import torch.nn.functional as F

from raqcodec.errors import CodecError

DB_CAP = 100.0
"""Ceiling of every dB value: identical images give exactly 100 dB instead of infinity."""

_MS_SSIM_WEIGHTS = (0.0448, 0.2856, 0.3001, 0.2363, 0.1333)
_WIN_SIZE = 11
_WIN_SIGMA = 1.5
_K1, _K2 = 0.01, 0.03

ImageLike = np.ndarray | torch.Tensor


def psnr(a: ImageLike, b: ImageLike, data_range: float = 255.0) -> float:
    """Peak signal-to-noise ratio in dB: 10 log10(data_range^2 / MSE), MSE over all pixels and channels.

    Capped at DB_CAP (100 dB), which identical images return.
    """
    x, y = _pair(a, b)
    mse = torch.mean((x - y) ** 2).item()
    return _capped_db(mse / data_range**2)


def ssim(a: ImageLike, b: ImageLike, data_range: float = 255.0) -> float:
    """Single-scale SSIM (11x11 Gaussian window, sigma 1.5, via pytorch_msssim.ssim), in [-1, 1].

    Images with a side under 11 px use the largest odd window that fits (1 px at worst).
    """
    x, y = _pair(a, b)
    side = min(x.shape[-2:])
    if side >= _WIN_SIZE:
        return pytorch_msssim.ssim(x, y, data_range=data_range).item()
    ssim_per_channel, _ = _ssim_and_cs(x, y, data_range, _gaussian_window(_largest_odd(side)))
    return ssim_per_channel.mean().item()


def ms_ssim(a: ImageLike, b: ImageLike, data_range: float = 255.0) -> float:
    """Multi-scale SSIM in [0, 1] (1 = identical), via pytorch_msssim.ms_ssim.

    The standard 5 scales need a shorter side over 160 px. Smaller images use fewer scales:
    the most L for which the side exceeds 10 * 2^(L-1) (the library's own rule per scale),
    with the first L standard weights rescaled to sum to 1; a side under 11 px uses one
    scale with the largest odd window that fits. Scores of such images are therefore not
    directly comparable with 5-scale scores.
    """
    x, y = _pair(a, b)
    side = min(x.shape[-2:])
    if side > (_WIN_SIZE - 1) * 2 ** (len(_MS_SSIM_WEIGHTS) - 1):
        return pytorch_msssim.ms_ssim(x, y, data_range=data_range).item()
    levels = _levels_for_side(side)
    weights = torch.tensor(_MS_SSIM_WEIGHTS[:levels], dtype=torch.float64)
    window = _gaussian_window(min(_WIN_SIZE, _largest_odd(side)))
    return _multiscale_ssim(x, y, data_range, weights / weights.sum(), window)


def ms_ssim_db(a: ImageLike, b: ImageLike, data_range: float = 255.0) -> float:
    """MS-SSIM in dB: -10 log10(1 - ms_ssim), capped at DB_CAP (100 dB) for identical images."""
    return _capped_db(1.0 - ms_ssim(a, b, data_range))


def usage_counts(indices: np.ndarray, codebook_size: int) -> np.ndarray:
    """Codeword indices with the product group on axis 0, (G, ...) -> (G, codebook_size) int64 counts of each
    codeword per group."""
    per_group = indices.reshape(indices.shape[0], -1)
    return np.stack([np.bincount(row, minlength=codebook_size) for row in per_group])


def code_statistics(counts: np.ndarray) -> tuple[float, int]:
    """Summarise a 1-D histogram of code usage (counts per codebook entry, over a whole set).

    Returns:
        (perplexity, usage): perplexity = exp(entropy in nats) of the empirical code
        distribution, between 1 and the codebook size; usage = number of codes with count > 0.
    """
    counts = np.asarray(counts, dtype=np.float64)
    if counts.ndim != 1 or not np.all(np.isfinite(counts)) or np.any(counts < 0):
        raise CodecError("code counts must be a 1-D array of finite non-negative numbers")
    total = counts.sum()
    if total <= 0:
        raise CodecError("code counts are all zero")
    p = counts[counts > 0] / total
    entropy_nats = float(-(p * np.log(p)).sum())
    return math.exp(entropy_nats), int(np.count_nonzero(counts))


def _capped_db(fraction: float) -> float:
    """-10 log10(fraction), at most DB_CAP (also for fraction <= 0)."""
    if fraction <= 10 ** (-DB_CAP / 10):
        return DB_CAP
    return -10.0 * math.log10(fraction)


def _pair(a: ImageLike, b: ImageLike) -> tuple[torch.Tensor, torch.Tensor]:
    """Both images as float64 (1, C, H, W) tensors of the same shape."""
    x, y = _as_nchw(a), _as_nchw(b)
    if x.shape != y.shape:
        raise CodecError(f"images differ in shape: {tuple(x.shape)} vs {tuple(y.shape)}")
    return x, y.to(x.device)


def _as_nchw(image: ImageLike) -> torch.Tensor:
    """numpy (H, W) / (H, W, C), or torch (C, H, W) / (1, C, H, W) -> float64 (1, C, H, W)."""
    if isinstance(image, np.ndarray):
        if image.ndim == 2:
            image = image[:, :, None]
        if image.ndim != 3:
            raise CodecError(f"expected an (H, W) or (H, W, C) array, got shape {image.shape}")
        return torch.from_numpy(np.array(image, dtype=np.float64)).permute(2, 0, 1).unsqueeze(0)
    if image.dim() == 3:
        image = image.unsqueeze(0)
    if image.dim() != 4 or image.shape[0] != 1:
        raise CodecError(f"expected a (C, H, W) or (1, C, H, W) tensor, got shape {tuple(image.shape)}")
    return image.detach().to(torch.float64)


def _levels_for_side(side: int) -> int:
    """Most scales (1..5) whose coarsest level still holds an 11-px window: side > 10 * 2^(L-1)."""
    levels = 1
    while levels < len(_MS_SSIM_WEIGHTS) and side > (_WIN_SIZE - 1) * 2**levels:
        levels += 1
    return levels


def _largest_odd(n: int) -> int:
    """Largest odd number <= n (n >= 1)."""
    return n if n % 2 else n - 1


def _gaussian_window(size: int) -> torch.Tensor:
    """1-D Gaussian window of odd ``size`` (sigma 1.5), summing to 1, float64 (size,)."""
    offsets = torch.arange(size, dtype=torch.float64) - size // 2
    window = torch.exp(-(offsets**2) / (2 * _WIN_SIGMA**2))
    return window / window.sum()


def _blur(x: torch.Tensor, window: torch.Tensor) -> torch.Tensor:
    """Separable Gaussian filter of (1, C, H, W), no padding -> (1, C, H-k+1, W-k+1)."""
    channels, k = x.shape[1], window.numel()
    kernel = window.to(x)
    x = F.conv2d(x, kernel.view(1, 1, k, 1).expand(channels, 1, k, 1), groups=channels)
    return F.conv2d(x, kernel.view(1, 1, 1, k).expand(channels, 1, 1, k), groups=channels)


def _ssim_and_cs(
    x: torch.Tensor, y: torch.Tensor, data_range: float, window: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-channel mean SSIM and contrast-structure term of (1, C, H, W) images -> two (C,) tensors."""
    c1, c2 = (_K1 * data_range) ** 2, (_K2 * data_range) ** 2
    mu_x, mu_y = _blur(x, window), _blur(y, window)
    var_x = _blur(x * x, window) - mu_x**2
    var_y = _blur(y * y, window) - mu_y**2
    cov = _blur(x * y, window) - mu_x * mu_y
    cs_map = (2 * cov + c2) / (var_x + var_y + c2)
    ssim_map = (2 * mu_x * mu_y + c1) / (mu_x**2 + mu_y**2 + c1) * cs_map
    return ssim_map.mean(dim=(0, 2, 3)), cs_map.mean(dim=(0, 2, 3))


def _multiscale_ssim(
    x: torch.Tensor, y: torch.Tensor, data_range: float, weights: torch.Tensor, window: torch.Tensor
) -> float:
    """MS-SSIM of (1, C, H, W) images over len(weights) scales, as pytorch_msssim computes it.

    Contrast-structure terms of the finer scales and SSIM of the coarsest, clamped at 0,
    raised to their weights and multiplied per channel, then averaged over channels.
    Scales are halved by 2x2 average pooling (odd sides zero-padded, as the library does).
    """
    *finer_weights, coarsest_weight = weights.tolist()
    per_channel = torch.ones(x.shape[1], dtype=x.dtype, device=x.device)
    for weight in finer_weights:
        _, cs = _ssim_and_cs(x, y, data_range, window)
        per_channel = per_channel * torch.relu(cs) ** weight
        padding = [side % 2 for side in x.shape[2:]]
        x = F.avg_pool2d(x, kernel_size=2, padding=padding)
        y = F.avg_pool2d(y, kernel_size=2, padding=padding)
    ssim_per_channel, _ = _ssim_and_cs(x, y, data_range, window)
    per_channel = per_channel * torch.relu(ssim_per_channel) ** coarsest_weight
    return per_channel.mean().item()
