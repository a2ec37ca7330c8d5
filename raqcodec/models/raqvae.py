"""RAQ-VAE: one VQ autoencoder whose codebook is re-sized to any eK on demand.

Seo & Kang, "Rate-Adaptive Quantization: A Multi-Rate Codebook Adaptation for VQ-based Generative Models"
(arXiv 2405.14222).

    x -> g_a -> z -> Q(z; codebook(eK)) -> indices -> [entropy coder] -> indices -> lookup -> z_q -> g_s -> x_hat
                          ^
        base codebooks e (G, K, dg) --G_psi (Seq2Seq, data-driven) or DKM/IKM (model-based)--> e~ (G, eK, dg)

Training (`forward`) runs both branches on the same z: the base codebooks (EMA-updated) and a generated
codebook of a sampled eK, through one shared decoder; loss = MSE(x_hat_e, x) + MSE(x_hat_e~, x) + VQ terms
(L_VQ + L_RAQ, all weights 1, as the paper) + a coverage term on the generated codebook (not in the paper:
it pulls unused generated codewords toward the encoder outputs; `coverage_weight=0` switches it off).
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from raqcodec.models.config import ModelConfig
from raqcodec.models.generator import CodebookGenerator
from raqcodec.models.model_based import resize_codebook
from raqcodec.models.quantizer import (EMACodebook, coverage_loss, lookup, merge_groups, nearest_indices, quantize_with,
                                       split_groups)
from raqcodec.models.transforms import build_transforms

CODEBOOK_METHODS = ("data", "model")


class RAQVAE(nn.Module):
    """The rate-adaptive VQ autoencoder (no I/O: tensors in, tensors out)."""

    def __init__(self, cfg: ModelConfig) -> None:
        super().__init__()
        self.cfg = cfg
        self.g_a, self.g_s = build_transforms(cfg)
        self.base = EMACodebook(cfg.groups, cfg.base_codebook_size, cfg.group_dim, cfg.ema_decay, cfg.dead_code_threshold)
        self.generator = CodebookGenerator(cfg)
        self._codebook_cache: dict[tuple[str, int, torch.device], torch.Tensor] = {}

    # ----- inference path -------------------------------------------------------------------------------------
    def analysis(self, x: torch.Tensor) -> torch.Tensor:
        """x (B, 3, H, W) in [0, 1], H and W multiples of f -> z (B, d, H/f, W/f)."""
        return self.g_a(x - 0.5)

    def synthesis(self, z_q: torch.Tensor) -> torch.Tensor:
        """z_q (B, d, h, w) -> x_hat (B, 3, h*f, w*f), nominally in [0, 1] (not clamped)."""
        return self.g_s(z_q) + 0.5

    @torch.no_grad()
    def codebook(self, size: int, method: str = "data") -> torch.Tensor:
        """The adapted codebook (G, size, dg) for eK = size, on the model's device.

        Deterministic (eval mode, dropout off) and cached per (method, size, device) until the weights change
        (`train()` or `load_state_dict` clears the cache). method "data": the Seq2Seq generator; "model":
        DKM (size < K) or IKM (size > K) on the base codebooks.
        """
        if method not in CODEBOOK_METHODS:
            raise ValueError(f"unknown codebook method {method!r}")
        cfg = self.cfg
        if not cfg.min_codebook_size <= size <= cfg.max_codebook_size:
            raise ValueError(f"codebook size {size} outside the model's range [{cfg.min_codebook_size}, {cfg.max_codebook_size}]")
        device = self.base.embed.device
        key = (method, size, device)
        if key not in self._codebook_cache:
            was_training = self.training
            self.generator.eval()
            if method == "data":
                table = self.generator(self.base.embed, size)
            else:
                with torch.enable_grad():
                    table = resize_codebook(self.base.embed.cpu(), size).to(device)
            self.generator.train(was_training)
            self._codebook_cache[key] = table.detach()
        return self._codebook_cache[key]

    def clear_codebook_cache(self) -> None:
        self._codebook_cache.clear()

    def train(self, mode: bool = True) -> "RAQVAE":
        if mode or self.training:  # weights may change (or have changed) in training mode
            self.clear_codebook_cache()
        return super().train(mode)

    def load_state_dict(self, *args, **kwargs):  # type: ignore[override]
        self.clear_codebook_cache()
        return super().load_state_dict(*args, **kwargs)

    @torch.no_grad()
    def quantize(self, z: torch.Tensor, codebook: torch.Tensor) -> torch.Tensor:
        """z (B, d, h, w) -> indices (B, G, h, w) int64, nearest codeword per group."""
        b, _, h, w = z.shape
        idx = nearest_indices(split_groups(z, self.cfg.groups), codebook)  # (G, B*h*w)
        return idx.reshape(self.cfg.groups, b, h, w).transpose(0, 1)

    @torch.no_grad()
    def dequantize(self, indices: torch.Tensor, codebook: torch.Tensor) -> torch.Tensor:
        """indices (B, G, h, w) -> z_q (B, d, h, w)."""
        b, g, h, w = indices.shape
        flat = indices.transpose(0, 1).reshape(g, b * h * w)
        return merge_groups(lookup(flat, codebook), b, h, w)

    # ----- training path --------------------------------------------------------------------------------------
    def forward(self, x: torch.Tensor, size: int | None) -> dict[str, torch.Tensor]:
        """Training step on x (B, 3, H, W) in [0, 1] with a generated codebook of eK = size.

        size None trains the base branch alone (a fixed-rate VQ-VAE). Returns the total loss and its parts:
        mse_base, mse_adapted (mean squared error, [0,1] pixels), vq_base, vq_adapted, coverage (the adapted
        parts are 0 when size is None), and the per-group base-codebook indices (for usage statistics).
        """
        z = self.analysis(x)
        b, _, h, w = z.shape
        vectors = split_groups(z, self.cfg.groups)
        base_idx = nearest_indices(vectors.detach(), self.base.embed)
        if self.training:
            self.base.update(vectors.detach(), base_idx)
        chosen = lookup(base_idx, self.base.embed)
        vq_base = self.cfg.beta * F.mse_loss(vectors, chosen)
        z_q_base = merge_groups(vectors + (chosen - vectors).detach(), b, h, w)
        zero = torch.zeros((), device=x.device)
        if size is None:
            mse_base = F.mse_loss(self.synthesis(z_q_base), x)
            return {"loss": mse_base + vq_base, "mse_base": mse_base, "mse_adapted": zero, "vq_base": vq_base,
                    "vq_adapted": zero, "coverage": zero, "base_indices": base_idx}

        adapted = self.generator(self.base.embed, size)
        z_q_adapted, _, vq_adapted = quantize_with(z, adapted, self.cfg.beta)
        coverage = self.cfg.coverage_weight * coverage_loss(vectors.detach(), adapted)

        x_hat = self.synthesis(torch.cat([z_q_base, z_q_adapted]))
        x_base, x_adapted = x_hat[:b], x_hat[b:]
        mse_base, mse_adapted = F.mse_loss(x_base, x), F.mse_loss(x_adapted, x)
        loss = mse_base + mse_adapted + vq_base + vq_adapted + coverage
        return {"loss": loss, "mse_base": mse_base, "mse_adapted": mse_adapted, "vq_base": vq_base,
                "vq_adapted": vq_adapted, "coverage": coverage, "base_indices": base_idx}
