"""`raq eval`: quality and rate of a model over an image folder, per setting (one codebook size eK per stage).

Metrics the CompressAI way: RGB, decoded output rounded to 8 bits, [0, 255] range, mean of per-image values.
Rate: bits per pixel of the whole coded .raq file, and the raw fixed-length rate sum_s G*log2(eK_s)/f^2.
Perplexity and usage come from one histogram of indices over the WHOLE set (not per batch) of the setting's
LAST stage (the one whose eK the setting varies); with G product groups they are averaged over the groups
(each group has its own codebook of eK rows).
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from raqcodec.codec import Latent, Setting, analyse, encode_latent, reconstruct, setting_label
from raqcodec.data import list_images
from raqcodec.image_io import load_image
from raqcodec.metrics import code_statistics, ms_ssim_db, psnr, usage_counts
from raqcodec.models import RAQVAE


@dataclass
class SizeResult:
    """Mean results over the set for one setting. bpp: whole .raq file; raw_bpp: fixed-length indices.

    codebook_size: eK of stage 1; setting: every stage's eK as a label ("256", "4096+64").
    """

    codebook_size: int
    setting: str
    bpp: float
    raw_bpp: float
    psnr: float
    ms_ssim: float
    perplexity: float
    usage: float
    bits_per_index: float  # entropy-coded payload bits per index (compare with log2 eK)

    def to_json(self) -> dict:
        return {k: (round(v, 6) if isinstance(v, float) else v) for k, v in self.__dict__.items()}


@torch.no_grad()
def evaluate(model: RAQVAE, folder: str | Path, settings: list[Setting], *, limit: int | None = None,
             method: str = "data", progress: bool = True) -> list[SizeResult]:
    """Evaluate every setting on the images of `folder` (first `limit` by name)."""
    paths = list_images(folder)[:limit]
    if not paths:
        raise ValueError(f"no images in {folder}")
    originals = [load_image(p)[0] for p in paths]  # (H, W, 3) uint8, each file decoded once
    latents: list[Latent] = [analyse(model, px) for px in tqdm(originals, desc="analyse", disable=not progress)]
    return [evaluate_table(model, latents, originals, setting, model.codebooks(setting, method))
            for setting in tqdm(settings, desc="eK", disable=not progress)]


@torch.no_grad()
def evaluate_table(model: RAQVAE, latents: list[Latent], originals: list[np.ndarray], setting: Setting,
                   tables: list[torch.Tensor]) -> SizeResult:
    """Code and decode every analysed image with one (G, eK_s, dg) codebook per stage; mean results."""
    last = setting[-1]
    counts = np.zeros((model.cfg.groups, last), dtype=np.int64)
    bpps, psnrs, ssims, index_bits, n_index = [], [], [], 0.0, 0
    for latent, original in zip(latents, originals):
        enc = encode_latent(model, latent, setting, tables)
        counts += usage_counts(enc.indices[-1], last)
        index_bits += enc.header.payload_length * 8
        n_index += sum(grid.size for grid in enc.indices)
        decoded = reconstruct(model, enc.indices, setting, latent.width, latent.height, tables)
        bpps.append(enc.bpp)
        psnrs.append(psnr(original, decoded))
        ssims.append(ms_ssim_db(original, decoded))
    stats = [code_statistics(c) for c in counts]
    return SizeResult(
        codebook_size=setting[0], setting=setting_label(setting), bpp=float(np.mean(bpps)),
        raw_bpp=model.cfg.raw_bpp(setting),
        psnr=float(np.mean(psnrs)), ms_ssim=float(np.mean(ssims)),
        perplexity=float(np.mean([s[0] for s in stats])), usage=float(np.mean([s[1] for s in stats])),
        bits_per_index=index_bits / n_index)


def markdown_table(results: list[SizeResult]) -> str:
    """The results as a Markdown table."""
    lines = ["| eK | bpp (file) | raw bpp | PSNR dB | MS-SSIM dB | perplexity | usage | bits/index |",
             "|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for r in results:
        lines.append(f"| {r.setting} | {r.bpp:.4f} | {r.raw_bpp:.4f} | {r.psnr:.2f} | {r.ms_ssim:.2f} | "
                     f"{r.perplexity:.1f} | {r.usage:.1f} | {r.bits_per_index:.3f} |")
    return "\n".join(lines)
