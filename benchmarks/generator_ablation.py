"""Ablation of the generator choice: size-conditioned generator (raqcodec's choice) vs the reference
code's size-blind generator (codebooks are prefixes of one list), same budget, same data, same seed.

    .venv/bin/python benchmarks/generator_ablation.py ../shared/data/cifar10/cifar10-jpg.zip --steps 1500

Trains the paper configuration (f=4, C=128, d=64, one codebook, K=128, eK 16..1024) twice on the CIFAR-10
training split (32x32 images), then measures PSNR (dB, per image, 8-bit output, mean) on the first
--test-images of the test split at eK in {16, ..., 1024}. Prints JSON (also written to --json).
"""
from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import torch

from raqcodec.data import load_source
from raqcodec.train import TrainOptions, train, validate

SIZES = (16, 32, 64, 128, 256, 512, 1024)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("cifar_zip")
    parser.add_argument("--steps", type=int, default=1500)
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--test-images", type=int, default=2000)
    parser.add_argument("--workdir", default="runs/ablation")
    parser.add_argument("--json", default="benchmarks/results/generator_ablation.json")
    args = parser.parse_args()
    Path(args.workdir).mkdir(parents=True, exist_ok=True)
    test = load_source(args.cifar_zip, "test")[: args.test_images]
    images = torch.from_numpy(np.stack(test)).permute(0, 3, 1, 2).float().div(255)
    rows = {}
    for name, conditioned in (("size_conditioned", True), ("size_blind_prefix", False)):
        start = time.perf_counter()
        model = train(TrainOptions(sources=[args.cifar_zip], out=f"{args.workdir}/{name}.pt", config="paper",
                                   steps=args.steps, batch=args.batch, crop=32, lr=5e-4, seed=0,
                                   checkpoint_minutes=10, resume=True,
                                   config_overrides={"condition_on_size": conditioned}))
        rows[name] = {"train_s": time.perf_counter() - start, "psnr": validate(model, images, [(s,) for s in SIZES])}
        print(name, rows[name])
    result = {"budget": f"{args.steps} steps x batch {args.batch} (32x32 CIFAR-10 train), seed 0, per model",
              "test_images": len(test), "sizes": list(SIZES), "rows": rows,
              "psnr_gain_conditioned_minus_blind": {str(s): rows["size_conditioned"]["psnr"][str(s)] - rows["size_blind_prefix"]["psnr"][str(s)]
                                                    for s in SIZES}}
    Path(args.json).write_text(json.dumps(result, indent=1) + "\n")
    print(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
