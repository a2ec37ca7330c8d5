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

Residual stages (cfg.stages > 1, not in the paper): stage s quantises r_s = z - (q_1 + ... + q_{s-1}) with its own
EMA base codebooks and its own generator, so every stage is rate-adaptive. During training the earlier stages
are taken at their LARGEST eK (the setting the codec's rate ladder uses before it adds a stage), with a
codebook regenerated without gradient every PREFIX_REFRESH_STEPS steps; each step decodes every prefix of
stages (stage 1 alone, stages 1+2, ...), which is what lets any prefix of stages decode.
"""
from __future__ import annotations

from collections.abc import Iterator

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
PREFIX_REFRESH_STEPS = 8  # training steps between regenerations of the earlier stages' largest codebooks


class ResidualStage(nn.Module):
    """A quantisation stage after the first: EMA base codebooks (G, K, dg) and a codebook generator."""

    def __init__(self, cfg: ModelConfig) -> None:
        super().__init__()
        self.base = EMACodebook(cfg.groups, cfg.base_codebook_size, cfg.group_dim, cfg.ema_decay,
                                cfg.dead_code_threshold)
        self.generator = CodebookGenerator(cfg)


class RAQVAE(nn.Module):
    """The rate-adaptive VQ autoencoder (no I/O: tensors in, tensors out)."""

    def __init__(self, cfg: ModelConfig) -> None:
        super().__init__()
        self.cfg = cfg
        self.g_a, self.g_s = build_transforms(cfg)
        self.base = EMACodebook(cfg.groups, cfg.base_codebook_size, cfg.group_dim, cfg.ema_decay, cfg.dead_code_threshold)
        self.generator = CodebookGenerator(cfg)
        self.residual_stages = nn.ModuleList(ResidualStage(cfg) for _ in range(cfg.stages - 1))
        self._codebook_cache: dict[tuple[str, int, int, torch.device], torch.Tensor] = {}
        self._prefix_tables: list[torch.Tensor] = []  # training: earlier stages' largest codebooks, no grad
        self._prefix_age = 0

    def stage_parts(self, stage: int) -> tuple[EMACodebook, CodebookGenerator]:
        """(base codebooks, generator) of stage `stage` (0-based; stage 0 is the paper's single quantiser)."""
        if not 0 <= stage < self.cfg.stages:
            raise ValueError(f"stage {stage} outside the model's {self.cfg.stages} stage(s)")
        if stage == 0:
            return self.base, self.generator
        part = self.residual_stages[stage - 1]
        return part.base, part.generator

    # ----- inference path -------------------------------------------------------------------------------------
    def analysis(self, x: torch.Tensor) -> torch.Tensor:
        """x (B, 3, H, W) in [0, 1], H and W multiples of f -> z (B, d, H/f, W/f)."""
        return self.g_a(x - 0.5)

    def synthesis(self, z_q: torch.Tensor) -> torch.Tensor:
        """z_q (B, d, h, w) -> x_hat (B, 3, h*f, w*f), nominally in [0, 1] (not clamped)."""
        return self.g_s(z_q) + 0.5

    @torch.no_grad()
    def codebook(self, size: int, method: str = "data", stage: int = 0) -> torch.Tensor:
        """The adapted codebook (G, size, dg) of stage `stage` for eK = size, on the model's device.

        Deterministic (eval mode, dropout off) and cached per (method, stage, size, device) until the weights
        change or move (`train()`, `load_state_dict`, `.to()`, `.double()` clear the cache). method "data": the
        Seq2Seq generator; "model": DKM (size < K) or IKM (size > K) on the base codebooks.
        """
        if method not in CODEBOOK_METHODS:
            raise ValueError(f"unknown codebook method {method!r}")
        cfg = self.cfg
        if not cfg.min_codebook_size <= size <= cfg.max_codebook_size:
            raise ValueError(f"codebook size {size} outside the model's range [{cfg.min_codebook_size}, {cfg.max_codebook_size}]")
        base = self.stage_parts(stage)[0]
        device = base.embed.device
        key = (method, stage, size, device)
        if key not in self._codebook_cache:
            if method == "data":
                table = self._generate(stage, size)
            else:
                with torch.enable_grad():
                    table = resize_codebook(base.embed.cpu(), size).to(device)
            self._codebook_cache[key] = table.detach()
        return self._codebook_cache[key]

    @torch.no_grad()
    def _generate(self, stage: int, size: int) -> torch.Tensor:
        """Stage `stage`'s generated codebook (G, size, dg), in eval mode (no dropout), not cached."""
        base, generator = self.stage_parts(stage)
        was_training = generator.training
        generator.eval()
        table = generator(base.embed, size)
        generator.train(was_training)
        return table

    def codebooks(self, sizes: tuple[int, ...], method: str = "data") -> list[torch.Tensor]:
        """One adapted codebook per stage for eK sizes (eK_1, ..., eK_S'), S' <= stages."""
        return [self.codebook(size, method, stage) for stage, size in enumerate(sizes)]

    def clear_codebook_cache(self) -> None:
        self._codebook_cache.clear()

    def train(self, mode: bool = True) -> "RAQVAE":
        if mode or self.training:  # weights may change (or have changed) in training mode
            self.clear_codebook_cache()
        return super().train(mode)

    def load_state_dict(self, *args, **kwargs):  # type: ignore[override]
        self.clear_codebook_cache()
        return super().load_state_dict(*args, **kwargs)

    def _apply(self, fn, recurse: bool = True):  # type: ignore[override]
        self.clear_codebook_cache()  # .to(), .double(), .cuda(): cached tables would keep the old dtype or device
        return super()._apply(fn, recurse)

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

    @torch.no_grad()
    def iter_stages(self, z: torch.Tensor, codebooks: list[torch.Tensor]) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        """Per stage, (indices (B, G, h, w), the residual (B, d, h, w) left after it); stage s quantises what
        stage s-1 left of z."""
        residual = z
        for table in codebooks:
            idx = self.quantize(residual, table)
            residual = residual - self.dequantize(idx, table)
            yield idx, residual

    @torch.no_grad()
    def quantize_stages(self, z: torch.Tensor, codebooks: list[torch.Tensor]) -> list[torch.Tensor]:
        """z (B, d, h, w) -> one indices tensor (B, G, h, w) per stage; stage s quantises what s-1 left."""
        return [idx for idx, _ in self.iter_stages(z, codebooks)]

    @torch.no_grad()
    def dequantize_stages(self, indices: list[torch.Tensor], codebooks: list[torch.Tensor]) -> torch.Tensor:
        """One indices tensor (B, G, h, w) per stage -> z_q (B, d, h, w), the sum of the stages' codewords."""
        return sum(self.dequantize(idx, table) for idx, table in zip(indices, codebooks))

    @torch.no_grad()
    def init_residual_codebooks(self, x: torch.Tensor, first_stage: int = 1) -> None:
        """Set the base codebooks of stages >= first_stage to random residual vectors of a batch x in [0, 1].

        Used when a model starts from weights that lack those stages: EMA codebooks drawn at random would sit
        far from the (small) residuals until dead-code restarts reached them.
        """
        vectors = split_groups(self.analysis(x), self.cfg.groups)
        for stage in range(first_stage):  # what the stages before first_stage leave, at their largest eK
            table = self._largest_codebook(stage)
            vectors = vectors - lookup(nearest_indices(vectors, table), table)
        for stage in range(first_stage, self.cfg.stages):
            base = self.stage_parts(stage)[0]
            picks = torch.randint(0, vectors.shape[1], (base.embed.shape[1],), device=vectors.device)
            base.embed.copy_(vectors[:, picks])
            base.embed_sum.copy_(base.embed)
            base.cluster_size.fill_(1.0)
            if stage + 1 < self.cfg.stages:
                table = self._largest_codebook(stage)
                vectors = vectors - lookup(nearest_indices(vectors, table), table)

    # ----- training path --------------------------------------------------------------------------------------
    def _largest_codebook(self, stage: int) -> torch.Tensor:
        """Stage `stage`'s codebook at the largest eK, generated in eval mode (no dropout), not cached."""
        return self._generate(stage, self.cfg.max_codebook_size)

    def _prefix_codebooks(self, count: int) -> list[torch.Tensor]:
        """The largest codebooks of stages 0..count-1, regenerated every PREFIX_REFRESH_STEPS calls."""
        if len(self._prefix_tables) != count or self._prefix_age % PREFIX_REFRESH_STEPS == 0:
            self._prefix_tables = [self._largest_codebook(stage) for stage in range(count)]
        self._prefix_age += 1
        return self._prefix_tables

    def forward(self, x: torch.Tensor, size: int | None, residual_sizes: tuple[int, ...] = ()) -> dict[str, torch.Tensor]:
        """Training step on x (B, 3, H, W) in [0, 1] with a generated codebook of eK = size.

        size None trains the base branch alone (a fixed-rate VQ-VAE). residual_sizes: one eK per residual stage
        to train (at most stages - 1; each stage quantises what the earlier stages at their largest eK left).
        Returns the total loss and its parts: mse_base, mse_adapted (stage 1), mse_residual (the last residual
        stage's adapted branch; mean squared error, [0,1] pixels), vq_base, vq_adapted, coverage (adapted parts
        are 0 when size is None), and the per-group base-codebook indices (for usage statistics).
        """
        if residual_sizes and (size is None or len(residual_sizes) >= self.cfg.stages):
            raise ValueError("residual stages need an adaptive model with that many stages")
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
            return {"loss": mse_base + vq_base, "mse_base": mse_base, "mse_adapted": zero, "mse_residual": zero,
                    "vq_base": vq_base, "vq_adapted": zero, "coverage": zero, "base_indices": base_idx}

        adapted = self.generator(self.base.embed, size)
        z_q_adapted, _, vq_adapted = quantize_with(z, adapted, self.cfg.beta)
        coverage = self.cfg.coverage_weight * coverage_loss(vectors.detach(), adapted)
        decodes = [z_q_base, z_q_adapted]

        approx = torch.zeros_like(vectors)  # earlier stages' codewords at their largest eK (no gradient)
        for stage, (stage_size, table) in enumerate(zip(residual_sizes, self._prefix_codebooks(len(residual_sizes))), 1):
            with torch.no_grad():
                approx = approx + lookup(nearest_indices(vectors - approx, table), table)
            residual = vectors - approx
            stage_base, stage_generator = self.stage_parts(stage)
            idx = nearest_indices(residual.detach(), stage_base.embed)
            if self.training:
                stage_base.update(residual.detach(), idx)
            chosen = lookup(idx, stage_base.embed)
            vq_base = vq_base + self.cfg.beta * F.mse_loss(residual, chosen)
            stage_adapted = stage_generator(stage_base.embed, stage_size)
            picked = lookup(nearest_indices(residual.detach(), stage_adapted.detach()), stage_adapted)
            vq_adapted = vq_adapted + self.cfg.beta * F.mse_loss(residual, picked.detach()) \
                + F.mse_loss(residual.detach(), picked)
            coverage = coverage + self.cfg.coverage_weight * coverage_loss(residual.detach(), stage_adapted)
            decodes += [merge_groups(vectors + (approx + codewords - vectors).detach(), b, h, w)
                        for codewords in (chosen.detach(), picked.detach())]

        x_hat = self.synthesis(torch.cat(decodes))
        mses = [F.mse_loss(part, x) for part in x_hat.split(b)]
        loss = sum(mses) + vq_base + vq_adapted + coverage
        return {"loss": loss, "mse_base": mses[0], "mse_adapted": mses[1], "mse_residual": mses[-1] if residual_sizes
                else zero, "vq_base": vq_base, "vq_adapted": vq_adapted, "coverage": coverage, "base_indices": base_idx}
