"""Baselines at equal budget for the shipped architecture: fixed-rate VQ-VAEs, naive re-sizing, model-based RAQ
and a learned scalar quantiser, against a RAQ model trained for the same wall-clock.

    .venv/bin/python benchmarks/baselines.py ../shared/data/bsds500 ../shared/data/kodak --minutes 8
    .venv/bin/python benchmarks/baselines.py ... --train-only      # train what is missing (resumable), no table
    .venv/bin/python benchmarks/baselines.py ... --evaluate-only   # table from the models trained so far

Every model trains from scratch for the same wall-clock (--minutes, in total across resumptions, one model at a
time on an otherwise idle machine) on 64x64 crops of BSDS500 train+test, batch 16, lr 2e-4, validation on
BSDS500 val: `raq` (the default config), `fixed_64`, `fixed_256`, `fixed_1024` (the default config with the
adaptive branch off and K base codewords), and `factorized` (CompressAI's bmshj2018-factorized architecture,
benchmarks/factorized_baseline.py). Rows, each evaluated on Kodak with real coded file sizes at eK/K in
{64, 256, 1024}:
  raq            the generated codebook of the equal-budget RAQ model
  fixed          each fixed-rate model with its own codebook
  random_subset  a seeded random subset of fixed_1024's codewords (per product group)
  topk_used      fixed_1024's most used codewords, usage counted on the BSDS500 training images
  kmeans         k-means (scipy kmeans2, k-means++) of fixed_1024's codewords
  model_based    DKM down / IKM up from fixed_256's codewords (raqcodec.models.model_based)
  raq_shipped    the shipped model (a longer budget, stated in its model card), for reference
  factorized     the scalar-quantisation model, one model per lambda in FACTORIZED_LAMBDAS
Writes benchmarks/results/baselines.{json,md,png}.
"""
from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import torch
from scipy.cluster.vq import kmeans2

import factorized_baseline
from outputs import plot_methods, write_outputs
from resizing import random_subset, topk_used
from raqcodec.codec import analyse
from raqcodec.data import list_images, load_source
from raqcodec.evaluate import SizeResult, evaluate_table
from raqcodec.image_io import load_image
from raqcodec.metrics import usage_counts
from raqcodec.modelfile import DEFAULT_MODEL_PATH, load_model, read_model_file
from raqcodec.models import RAQVAE
from raqcodec.models.model_based import resize_codebook
from raqcodec.train import TrainOptions, train

SIZES = (64, 256, 1024)
VQ_MODELS = {"raq": {}, **{f"fixed_{k}": {"adaptive": False, "base_codebook_size": k} for k in SIZES}}
FACTORIZED_LAMBDAS = (0.0018, 0.0035, 0.0067)  # CompressAI's lambdas for bmshj2018-factorized qualities 1, 2, 3


def factorized_path(work: Path, lam: float) -> Path:
    return work / f"factorized_{lam}.pt"


def train_all(args) -> None:
    """Train every missing model up to the budget, one at a time."""
    work = Path(args.workdir)
    sources = [str(Path(args.bsds) / "train"), str(Path(args.bsds) / "test")]
    for name, overrides in VQ_MODELS.items():
        out = work / f"{name}.pt"
        ckpt = out.with_suffix(".ckpt")
        done = torch.load(ckpt, map_location="cpu", weights_only=False)["elapsed"] if ckpt.exists() else 0.0
        if done < args.minutes * 60:
            train(TrainOptions(sources=sources, out=str(out), config="default-v1", val_source=str(Path(args.bsds) / "val"),
                               minutes=args.minutes - done / 60, lr=2e-4, batch=16, crop=64, seed=args.seed,
                               checkpoint_minutes=3, resume=True, config_overrides=overrides))
    for lam in FACTORIZED_LAMBDAS:
        factorized_baseline.train_factorized(sources, factorized_path(work, lam), minutes=args.minutes, lam=lam,
                                             seed=args.seed)


@torch.no_grad()
def usage_on(model: RAQVAE, images: list[np.ndarray]) -> np.ndarray:
    """Counts (G, K) of each base codeword over whole images."""
    return sum(usage_counts(model.quantize(analyse(model, image).z, model.base.embed)[0].numpy(),
                            model.cfg.base_codebook_size) for image in images)


class KodakSet:
    """Kodak decoded once; each model's latents computed once."""

    def __init__(self, folder: str, limit: int | None) -> None:
        self.originals = [load_image(p)[0] for p in list_images(folder)[:limit]]

    def rows(self, method: str, model: RAQVAE, tables: dict[int, torch.Tensor]) -> list[dict]:
        latents = [analyse(model, px) for px in self.originals]
        rows = []
        for size, table in tables.items():
            result: SizeResult = evaluate_table(model, latents, self.originals, (size,), [table.float()])
            rows.append({"method": method, **result.to_json()})
            print(f"{method:14s} {size:5d}  {result.bpp:.4f} bpp  {result.psnr:.2f} dB", flush=True)
        return rows

    def factorized_row(self, path: Path) -> dict:
        net, meta = factorized_baseline.load(path)
        return {"method": "factorized", "lambda": meta["lambda"], **factorized_baseline.evaluate(net, self.originals)}


def evaluate_all(args) -> list[dict]:
    work = Path(args.workdir)
    kodak = KodakSet(args.kodak, args.limit)
    rows: list[dict] = []
    if (work / "raq.pt").exists():
        model = load_model(work / "raq.pt")
        rows += kodak.rows("raq", model, {s: model.codebook(s) for s in SIZES})
    for k in SIZES:
        if (work / f"fixed_{k}.pt").exists():
            model = load_model(work / f"fixed_{k}.pt")
            rows += kodak.rows("fixed", model, {k: model.base.embed})
    if (work / "fixed_1024.pt").exists():
        model = load_model(work / "fixed_1024.pt")
        base = model.base.embed
        gen = torch.Generator().manual_seed(args.seed)
        counts = usage_on(model, load_source(Path(args.bsds) / "train"))
        small = [s for s in SIZES if s < base.shape[1]]
        rows += kodak.rows("random_subset", model, {s: random_subset(base, s, gen) for s in small})
        rows += kodak.rows("topk_used", model, {s: topk_used(base, counts, s) for s in small})
        rows += kodak.rows("kmeans", model, {
            s: torch.stack([torch.from_numpy(kmeans2(cb.double().numpy(), s, minit="++", seed=args.seed)[0])
                            for cb in base]) for s in small})
    if (work / "fixed_256.pt").exists():
        model = load_model(work / "fixed_256.pt")
        rows += kodak.rows("model_based", model, {s: resize_codebook(model.base.embed, s) for s in SIZES})
    shipped = load_model(DEFAULT_MODEL_PATH)
    rows += kodak.rows("raq_shipped", shipped, {s: shipped.codebook(s) for s in SIZES})
    for lam in FACTORIZED_LAMBDAS:
        if factorized_path(work, lam).exists():
            rows.append(kodak.factorized_row(factorized_path(work, lam)))
            print(rows[-1], flush=True)
    return rows


def budgets(work: Path) -> dict[str, dict]:
    """Steps and training seconds of each trained model."""
    out = {}
    for name in VQ_MODELS:
        if (work / f"{name}.pt").exists():
            meta = read_model_file(work / f"{name}.pt")["metadata"]
            out[name] = {"steps": meta["steps"], "train_seconds": meta["train_seconds"]}
    for lam in FACTORIZED_LAMBDAS:
        if factorized_path(work, lam).exists():
            meta = torch.load(factorized_path(work, lam), map_location="cpu", weights_only=False)["metadata"]
            out[f"factorized_{lam}"] = {"steps": meta["steps"], "train_seconds": meta["train_seconds"], "lambda": lam}
    return out


def markdown(rows: list[dict]) -> str:
    """PSNR (dB) per method and eK/K, then the rate of each cell."""
    methods = list(dict.fromkeys(r["method"] for r in rows if "codebook_size" in r))
    cell = {(r["method"], r["codebook_size"]): r for r in rows if "codebook_size" in r}

    def table(key: str, fmt: str) -> list[str]:
        lines = ["| method | " + " | ".join(f"eK/K={s}" for s in SIZES) + " |", "|---|" + "---:|" * len(SIZES)]
        for m in methods:
            lines.append(f"| {m} | " + " | ".join(format(cell[m, s][key], fmt) if (m, s) in cell else "-"
                                                  for s in SIZES) + " |")
        return lines

    lines = ["PSNR (dB, Kodak):", "", *table("psnr", ".2f"), "", "Rate (bpp, whole .raq file):", "",
             *table("bpp", ".4f")]
    for r in rows:
        if r["method"] == "factorized":
            lines += ["", f"factorized (lambda {r['lambda']}): {r['bpp']:.4f} bpp, {r['psnr']:.2f} dB PSNR, "
                          f"{r['ms_ssim']:.2f} dB MS-SSIM"]
    return "\n".join(lines)


def plot(rows: list[dict], path: Path) -> None:
    plot_methods(rows, "bpp", path, xlabel="bits per pixel (whole file)", dashed=("raq_shipped",),
                 title="Kodak: baselines at equal training budget (eK/K = 64, 256, 1024)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("bsds", help="BSDS500 folder with train/, test/ and val/")
    parser.add_argument("kodak", help="evaluation image folder")
    parser.add_argument("--minutes", type=float, default=8.0, help="training wall-clock per model (the budget)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--limit", type=int, default=None, help="evaluate on the first N images only")
    parser.add_argument("--workdir", default="runs/baselines")
    parser.add_argument("--train-only", action="store_true")
    parser.add_argument("--evaluate-only", action="store_true")
    parser.add_argument("--out", default="benchmarks/results/baselines")
    args = parser.parse_args()
    Path(args.workdir).mkdir(parents=True, exist_ok=True)
    if not args.evaluate_only:
        train_all(args)
    if args.train_only:
        return
    rows = evaluate_all(args)
    doc = {"budget": f"{args.minutes} min training wall-clock per model, 2 CPU threads, one model at a time; "
                     "64x64 crops of BSDS500 train+test, batch 16, lr 2e-4; raq_shipped: see models/MODEL_CARD.md",
           "trained": budgets(Path(args.workdir)), "rows": rows}
    write_outputs(doc, markdown(rows), Path(args.out), lambda path: plot(rows, path))

if __name__ == "__main__":
    main()
