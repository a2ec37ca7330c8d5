"""The learned scalar-quantisation reference: CompressAI's bmshj2018-factorized architecture trained here.

`FactorizedPrior(N=128, M=192)` (the architecture of `compressai.zoo.bmshj2018_factorized` qualities 1-5), trained
from scratch on the same crops as the RAQ baselines for a wall-clock budget, with CompressAI's usual
rate-distortion loss  lambda * 255^2 * MSE + bpp  and its auxiliary loss on the entropy bottleneck quantiles.
Coded with its own entropy coder (`net.compress`, rANS); the rate counts the bytes of its strings only, as
CompressAI's own evaluation does (the 2 x 2-byte latent shape would add 32 bits per image).
"""
from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import torch
from compressai.models import FactorizedPrior

from raqcodec.data import CropSampler, list_images, load_source
from raqcodec.image_io import load_image, pad_to_multiple, to_tensor, to_uint8
from raqcodec.metrics import ms_ssim_db, psnr

DOWNSAMPLE = 16  # the analysis transform's total stride


def build() -> FactorizedPrior:
    return FactorizedPrior(N=128, M=192)


def train_factorized(sources: list[str], out: Path, *, minutes: float, lam: float, lr: float = 2e-4,
                     batch: int = 16, crop: int = 64, seed: int = 0, checkpoint_minutes: float = 3.0) -> dict:
    """Train (or resume) until `minutes` of training wall-clock IN TOTAL; writes out (state dict + metadata)."""
    torch.manual_seed(seed)
    sampler = CropSampler([img for src in sources for img in load_source(src)], crop, seed)
    net = build()
    main_params = [p for n, p in net.named_parameters() if not n.endswith(".quantiles")]
    aux_params = [p for n, p in net.named_parameters() if n.endswith(".quantiles")]
    optimizer, aux_optimizer = torch.optim.Adam(main_params, lr=lr), torch.optim.Adam(aux_params, lr=1e-3)
    step, elapsed = 0, 0.0
    if out.exists():
        ckpt = torch.load(out, map_location="cpu", weights_only=False)
        net.load_state_dict(ckpt["model"])
        optimizer.load_state_dict(ckpt["optimizer"])
        aux_optimizer.load_state_dict(ckpt["aux_optimizer"])
        sampler.set_state(ckpt["sampler"])
        step, elapsed = ckpt["step"], ckpt["elapsed"]

    def save() -> None:
        meta = {"steps": step, "train_seconds": round(elapsed, 1), "lambda": lam, "lr": lr, "batch": batch,
                "crop": crop, "data": sources}
        torch.save({"model": net.state_dict(), "optimizer": optimizer.state_dict(),
                    "aux_optimizer": aux_optimizer.state_dict(), "sampler": sampler.state(), "step": step,
                    "elapsed": elapsed, "metadata": meta}, out.with_suffix(".tmp"))
        out.with_suffix(".tmp").replace(out)

    net.train()
    start, base_elapsed, last = time.monotonic(), elapsed, time.monotonic()
    while elapsed < minutes * 60:
        x = sampler.sample(batch)
        result = net(x)
        bpp = sum(torch.log(v).sum() for v in result["likelihoods"].values()) / (-np.log(2) * x.shape[0] * crop * crop)
        loss = lam * 255**2 * torch.nn.functional.mse_loss(result["x_hat"], x) + bpp
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(main_params, 1.0)
        optimizer.step()
        aux_optimizer.zero_grad(set_to_none=True)
        net.aux_loss().backward()
        aux_optimizer.step()
        step += 1
        elapsed = base_elapsed + time.monotonic() - start
        if time.monotonic() - last > checkpoint_minutes * 60:
            save()
            last = time.monotonic()
    save()
    return {"steps": step, "train_seconds": elapsed}


def load(path: Path) -> tuple[FactorizedPrior, dict]:
    """The trained network, entropy tables built, in eval mode; and its training metadata."""
    ckpt = torch.load(path, map_location="cpu", weights_only=False)
    net = build()
    net.load_state_dict(ckpt["model"])
    net.update(force=True)
    return net.eval(), ckpt["metadata"]


@torch.no_grad()
def compress(net: FactorizedPrior, pixels: np.ndarray) -> tuple[list[bytes], tuple[int, int]]:
    """(H, W, 3) uint8 -> (the coded strings, the latent shape)."""
    x = pad_to_multiple(to_tensor(pixels), DOWNSAMPLE)
    out = net.compress(x)
    return [s[0] for s in out["strings"]], tuple(out["shape"])


@torch.no_grad()
def decompress(net: FactorizedPrior, strings: list[bytes], shape: tuple[int, int], height: int, width: int) -> np.ndarray:
    """The inverse of compress: (height, width, 3) uint8."""
    x_hat = net.decompress([[s] for s in strings], shape)["x_hat"]
    return to_uint8(x_hat[:, :, :height, :width])


def evaluate(net: FactorizedPrior, images: list[np.ndarray]) -> dict:
    """Mean per-image bpp (coded strings), PSNR (dB) and MS-SSIM (dB) over (H, W, 3) uint8 images."""
    bpps, psnrs, ssims = [], [], []
    for px in images:
        strings, shape = compress(net, px)
        decoded = decompress(net, strings, shape, *px.shape[:2])
        bpps.append(sum(len(s) for s in strings) * 8 / (px.shape[0] * px.shape[1]))
        psnrs.append(psnr(px, decoded))
        ssims.append(ms_ssim_db(px, decoded))
    return {"bpp": float(np.mean(bpps)), "psnr": float(np.mean(psnrs)), "ms_ssim": float(np.mean(ssims))}


def main() -> None:
    parser = argparse.ArgumentParser(description="Train (or resume) one factorized model, then evaluate it.")
    parser.add_argument("bsds", help="BSDS500 folder with train/ and test/ (the training images)")
    parser.add_argument("images", help="evaluation image folder")
    parser.add_argument("--lam", type=float, required=True, help="rate-distortion lambda")
    parser.add_argument("--minutes", type=float, required=True, help="training wall-clock in total (the budget)")
    parser.add_argument("--model", required=True, help="the model file, resumed when it exists")
    parser.add_argument("--json", required=True, help="where to write the evaluation")
    args = parser.parse_args()
    sources = [str(Path(args.bsds) / "train"), str(Path(args.bsds) / "test")]
    train_factorized(sources, Path(args.model), minutes=args.minutes, lam=args.lam)
    net, meta = load(Path(args.model))
    result = {**evaluate(net, [load_image(p)[0] for p in list_images(args.images)]), "folder": args.images,
              "lambda": meta["lambda"], "steps": meta["steps"], "train_seconds": meta["train_seconds"]}
    Path(args.json).write_text(json.dumps(result, indent=1) + "\n")
    print(json.dumps(result))


if __name__ == "__main__":
    main()
