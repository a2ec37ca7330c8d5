"""Reproduce the RAQ paper's CIFAR-10 table (Table 9) with raqcodec's implementation.

    .venv/bin/python benchmarks/paper_cifar10.py ../shared/data/cifar10/cifar10-jpg.zip --steps 3000
    .venv/bin/python benchmarks/paper_cifar10.py ... --train-only fixed_64   # one model, e.g. in the background
    .venv/bin/python benchmarks/paper_cifar10.py ... --evaluate-only          # table from the models trained so far

Every model is the paper configuration (f=4, C=128, d=64, one codebook; `named_config("paper")`) trained for the
same number of steps and batch size on the CIFAR-10 training split minus a seeded random --holdout images, which
pick the checkpoint (the reference code picked checkpoints on the test split). Training is resumable and runs one
model at a time. Rows, each evaluated on the test split at eK in {16, ..., 1024}:
  fixed (a VQ-VAE per K), raq (data-driven, base K=128), raq_no_cf (without cross-forcing),
  model_based_k128 (DKM down / IKM up from fixed K=128), model_based_k1024 (DKM down from fixed K=1024),
  random_subset and topk_used (rows of the fixed K=1024 codebook; usage counted on the training split).
Ablations (under "ablations" in the JSON, so that "rows" keeps its schema): raq_uniform_ek, RAQ trained with eK
drawn uniformly over the integers as the reference code does (raqcodec draws it log-uniformly); and
raq_base_codebook, the RAQ model's own base codebook at eK = K = 128 (what the reference code uses at eK = K);
fixed_1024_no_restart, the K=1024 model trained without dead-code restarts (the reference code has none), with
its own random_subset and topk_used rows (prefixed no_restart_).
Metrics: PSNR (dB, per image, mean), single-scale SSIM (pytorch_msssim, per image, mean), and perplexity and
usage of the codes over the WHOLE test set. Writes benchmarks/results/cifar10_table.{json,md,png}.
"""
from __future__ import annotations

import argparse
import math
from pathlib import Path

import numpy as np
import torch
from pytorch_msssim import ssim

from outputs import plot_methods, write_outputs
from resizing import random_subset, topk_used
from raqcodec.data import load_source
from raqcodec.metrics import code_statistics, usage_counts
from raqcodec.modelfile import load_model, read_model_file
from raqcodec.models.model_based import resize_codebook
from raqcodec.train import TrainOptions, train

SIZES = (16, 32, 64, 128, 256, 512, 1024)
FIXED = {f"fixed_{k}": {"base_codebook_size": k, "adaptive": False} for k in SIZES}
ADAPTIVE = {"raq": {}, "raq_no_cf": {"cross_forcing": False}}
# Ablation models: name -> (config overrides, eK sampling rule of raqcodec.train.SIZE_SAMPLINGS).
ABLATIONS = {"raq_uniform_ek": ({}, "uniform"),
             "fixed_1024_no_restart": ({"base_codebook_size": 1024, "adaptive": False, "dead_code_threshold": 0.0},
                                       "log-uniform")}
# The methods of the "rows" schema; other rows (ablations) go under "ablations".
ROW_METHODS = ("fixed", "raq", "raq_no_cf", "model_based_k128", "model_based_k1024", "random_subset", "topk_used")
# Training order: the models every row needs first, so a cut-short run still fills the table's core.
TRAIN_ORDER = ("raq", "fixed_128", "fixed_1024", "fixed_16", "fixed_64", "fixed_256", "raq_no_cf", "fixed_32",
               "fixed_512", "raq_uniform_ek", "fixed_1024_no_restart")
# Paper Table 9 (arXiv 2405.14222v2), PSNR / SSIM: VQ-VAE (K = eK), random select from K=1024, RAQ K=128, MB K=128.
PAPER = {"fixed": {1024: (25.48, .8648), 512: (24.94, .8490), 256: (24.43, .8310), 128: (23.85, .8096),
                   64: (23.24, .7849), 32: (22.53, .7545), 16: (21.76, .7156)},
         "random_subset": {1024: (25.48, .8648), 512: (24.35, .8305), 256: (22.81, .7822), 128: (20.87, .7254),
                           64: (19.46, .6720), 32: (17.76, .6102)},
         "raq": {1024: (25.18, .8520), 512: (24.82, .8417), 256: (24.34, .8274), 128: (23.91, .8132),
                 64: (22.87, .7770), 32: (21.85, .7356), 16: (20.82, .6918)},
         "model_based_k128": {1024: (24.15, .8213), 512: (24.04, .8177), 256: (23.93, .8139), 128: (23.85, .8096),
                              64: (22.85, .7780), 32: (21.88, .7405), 16: (20.89, .6972)}}


def to_tensor(images: list[np.ndarray]) -> torch.Tensor:
    return torch.from_numpy(np.stack(images)).permute(0, 3, 1, 2).float().div(255)


def train_one(name: str, args, overrides: dict, size_sampling: str = "log-uniform") -> None:
    out = Path(args.workdir) / f"{name}.pt"
    ckpt = out.with_suffix(".ckpt")
    if ckpt.exists() and torch.load(ckpt, map_location="cpu", weights_only=False)["step"] >= args.steps:
        return
    train(TrainOptions(sources=[args.cifar_zip], out=str(out), config="paper", steps=args.steps, batch=args.batch,
                       crop=32, lr=5e-4, seed=args.seed, checkpoint_minutes=3, resume=True, holdout=args.holdout,
                       keep_best=True, config_overrides=overrides, size_sampling=size_sampling))


@torch.no_grad()
def indices_and_recon(model, images: torch.Tensor, codebook: torch.Tensor) -> tuple[np.ndarray, torch.Tensor]:
    idx, recon = [], []
    for chunk in images.split(500):
        i = model.quantize(model.analysis(chunk), codebook)
        idx.append(i.numpy())
        recon.append((model.synthesis(model.dequantize(i, codebook)).clamp(0, 1) * 255).round() / 255)
    return np.concatenate(idx), torch.cat(recon)


def row(method: str, size: int, model, images: torch.Tensor, codebook: torch.Tensor) -> dict:
    idx, recon = indices_and_recon(model, images, codebook)
    mse = ((recon - images) ** 2).flatten(1).mean(1)
    psnr = float(np.mean([10 * math.log10(1 / max(m, 1e-12)) for m in mse.tolist()]))
    ssim_value = float(ssim(recon, images, data_range=1.0, size_average=False).mean())
    perplexity, usage = code_statistics(np.bincount(idx.ravel(), minlength=codebook.shape[1]))
    return {"method": method, "codebook_size": size, "psnr": round(psnr, 4), "ssim": round(ssim_value, 5),
            "perplexity": round(perplexity, 2), "usage": int(usage)}


def resized_rows(model, prefix: str, test: torch.Tensor, cifar_zip: str) -> list[dict]:
    """random_subset and topk_used rows (methods prefixed) from a fixed-rate model's codebook, usage counted on
    10,000 training images."""
    base = model.base.embed
    idx, _ = indices_and_recon(model, to_tensor(load_source(cifar_zip, "train")[:10000]), base)
    counts = usage_counts(np.moveaxis(idx, 1, 0), base.shape[1])  # idx is (N, G, h, w)
    gen = torch.Generator().manual_seed(0)
    rows = [] if not prefix else [row(f"{prefix}fixed", base.shape[1], model, test, base)]
    for size in SIZES:
        rows.append(row(f"{prefix}random_subset", size, model, test, random_subset(base, size, gen)))
        rows.append(row(f"{prefix}topk_used", size, model, test, topk_used(base, counts, size)))
    return rows


def evaluate(args) -> list[dict]:
    work = Path(args.workdir)
    test = to_tensor(load_source(args.cifar_zip, "test")[: args.test_images])
    rows = []
    for name in FIXED:
        if (work / f"{name}.pt").exists():
            model = load_model(work / f"{name}.pt")
            rows.append(row("fixed", model.cfg.base_codebook_size, model, test, model.base.embed))
    for name in (*ADAPTIVE, "raq_uniform_ek"):
        if (work / f"{name}.pt").exists():
            model = load_model(work / f"{name}.pt")
            rows += [row(name, size, model, test, model.codebook(size)) for size in SIZES]
            if name == "raq":  # the reference code uses the base codebook when eK == K
                rows.append(row("raq_base_codebook", model.cfg.base_codebook_size, model, test, model.base.embed))
    for base_name, method in (("fixed_128", "model_based_k128"), ("fixed_1024", "model_based_k1024")):
        if (work / f"{base_name}.pt").exists():
            model = load_model(work / f"{base_name}.pt")
            k = model.cfg.base_codebook_size
            for size in (s for s in SIZES if method.endswith("128") or s <= k):
                table = model.base.embed if size == k else resize_codebook(model.base.embed, size).float()
                rows.append(row(method, size, model, test, table))
    for name, prefix in (("fixed_1024", ""), ("fixed_1024_no_restart", "no_restart_")):
        if (work / f"{name}.pt").exists():
            rows += resized_rows(load_model(work / f"{name}.pt"), prefix, test, args.cifar_zip)
    return rows


def fixed_minus(rows: list[dict], method: str) -> dict[int, float]:
    """PSNR of the fixed-rate model minus PSNR of `method`, per eK where both exist (dB)."""
    psnr = {(r["method"], r["codebook_size"]): r["psnr"] for r in rows}
    return {k: round(psnr["fixed", k] - psnr[method, k], 4) for k in SIZES if ("fixed", k) in psnr and (method, k) in psnr}


def markdown(rows: list[dict]) -> str:
    lines = ["| method | eK | PSNR dB | SSIM | perplexity | usage | paper PSNR | paper SSIM |",
             "|---|---:|---:|---:|---:|---:|---:|---:|"]
    for r in sorted(rows, key=lambda r: (r["method"], -r["codebook_size"])):
        paper = PAPER.get(r["method"].removeprefix("no_restart_"), {}).get(r["codebook_size"])
        ref = f"{paper[0]:.2f} | {paper[1]:.4f}" if paper else "- | -"
        lines.append(f"| {r['method']} | {r['codebook_size']} | {r['psnr']:.2f} | {r['ssim']:.4f} | "
                     f"{r['perplexity']:.1f} | {r['usage']} | {ref} |")
    return "\n".join(lines)


def plot(rows: list[dict], path: Path) -> None:
    plot_methods(rows, "codebook_size", path, xlabel="codebook size eK", log2_x=True,
                 title="CIFAR-10 test set, paper configuration")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("cifar_zip")
    parser.add_argument("--steps", type=int, default=3000, help="training steps per model (the equal budget)")
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--holdout", type=int, default=2000)
    parser.add_argument("--test-images", type=int, default=10000)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--workdir", default="runs/cifar10")
    parser.add_argument("--train-only", default=None, help="train this one model and stop")
    parser.add_argument("--evaluate-only", action="store_true")
    parser.add_argument("--out", default="benchmarks/results/cifar10_table")
    args = parser.parse_args()
    Path(args.workdir).mkdir(parents=True, exist_ok=True)
    models = {**FIXED, **ADAPTIVE, **{name: overrides for name, (overrides, _) in ABLATIONS.items()}}
    if not args.evaluate_only:
        for name in TRAIN_ORDER:
            if args.train_only in (None, name):
                train_one(name, args, models[name], ABLATIONS.get(name, ({}, "log-uniform"))[1])
        if args.train_only:
            return
    rows = evaluate(args)
    steps = {name: read_model_file(Path(args.workdir) / f"{name}.pt")["metadata"]["steps"]
             for name in models if (Path(args.workdir) / f"{name}.pt").exists()}
    gaps = fixed_minus(rows, "raq")
    doc = {"budget": f"{args.steps} steps x batch {args.batch} per model (CIFAR-10 train minus {args.holdout} held out; "
                     f"checkpoint with the best held-out PSNR, steps of the kept checkpoints: {steps})",
           "rows": [r for r in rows if r["method"] in ROW_METHODS],
           "ablations": [r for r in rows if r["method"] not in ROW_METHODS],
           "psnr_gap_fixed_minus_raq_db": gaps}
    table = markdown(rows)
    if gaps:
        worst = max(gaps, key=gaps.get)
        table += ("\n\nPSNR gap fixed - raq per eK (dB): " + ", ".join(f"{k}: {v:+.2f}" for k, v in gaps.items())
                  + f". Largest: {gaps[worst]:.2f} dB at eK={worst}.")
    write_outputs(doc, table, Path(args.out), lambda path: plot(
        [r for r in rows if r["method"] in (*ROW_METHODS, "raq_uniform_ek")], path))


if __name__ == "__main__":
    main()
