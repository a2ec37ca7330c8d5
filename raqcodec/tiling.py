"""Bounded-memory transforms: run g_a / g_s over tiles of the latent grid with a halo, and stitch.

A tile covers TILE x TILE latent positions (TILE*f pixels) plus HALO positions of context on each side; only the
centre is kept (tile_grid.py: the same tiling for the encoder and both decoders).
"""
from __future__ import annotations

import functools
from collections.abc import Callable

import torch

from raqcodec.tile_grid import HALO, TILE, halo_box, tile_boxes


def _tiled(fn: Callable[[torch.Tensor], torch.Tensor], inp: torch.Tensor, latent_hw: tuple[int, int],
           in_scale: int, out_scale: int, out_channels: int) -> torch.Tensor:
    """Apply fn tile by tile, on a channels-last copy of inp. in_scale / out_scale: input and output pixels per
    latent position. Returns a contiguous tensor.

    On CUDA, cuDNN runs with deterministic algorithms, no autotuning and no TF32, so that one GPU decodes a
    file to the same pixels on every call (autotuned or TF32 kernels may differ from call to call).
    """
    with torch.backends.cudnn.flags(enabled=True, benchmark=False, deterministic=True, allow_tf32=False):
        return _tiles(fn, inp.contiguous(memory_format=torch.channels_last), latent_hw, in_scale, out_scale,
                      out_channels)


def _tiles(fn: Callable[[torch.Tensor], torch.Tensor], inp: torch.Tensor, latent_hw: tuple[int, int],
           in_scale: int, out_scale: int, out_channels: int) -> torch.Tensor:
    h, w = latent_hw
    if h <= TILE and w <= TILE:
        return fn(inp).contiguous()
    out = torch.empty(inp.shape[0], out_channels, h * out_scale, w * out_scale, device=inp.device)
    for y0, y1, x0, x1 in tile_boxes(h, w, TILE):
        ya, yb, xa, xb = halo_box((y0, y1, x0, x1), h, w, HALO)
        part = fn(inp[:, :, ya * in_scale:yb * in_scale, xa * in_scale:xb * in_scale])
        out[:, :, y0 * out_scale:y1 * out_scale, x0 * out_scale:x1 * out_scale] = part[
            :, :, (y0 - ya) * out_scale:(y1 - ya) * out_scale, (x0 - xa) * out_scale:(x1 - xa) * out_scale]
    return out


@functools.cache
def _cpu_has_bfloat16() -> bool:
    return bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())


@torch.no_grad()
def analysis_tiled(model, x: torch.Tensor) -> torch.Tensor:
    """x (1, 3, H, W) in [0,1], H and W multiples of f -> z (1, d, H/f, W/f) float32.

    On a CPU with bfloat16 support in oneDNN, g_a runs under bfloat16 autocast: 2.2x faster on the project's
    2-core AVX-512 CPU (0.26 -> 0.12 s for a 768x512 image), for a relative squared error of 2e-5 in z, far
    below the quantisation error. Only the encoder's choice of indices can change (files stay valid
    everywhere); the decoder's g_s stays float32.
    """
    f = model.cfg.downsample
    fast = x.device.type == "cpu" and _cpu_has_bfloat16()
    with torch.autocast("cpu", dtype=torch.bfloat16, enabled=fast):
        z = _tiled(model.analysis, x, (x.shape[2] // f, x.shape[3] // f), f, 1, model.cfg.latent_dim)
    return z.float()


@torch.no_grad()
def synthesis_tiled(model, z_q: torch.Tensor) -> torch.Tensor:
    """z_q (1, d, h, w) -> x_hat (1, 3, h*f, w*f), not clamped."""
    return _tiled(model.synthesis, z_q, (z_q.shape[2], z_q.shape[3]), 1, model.cfg.downsample, 3)
