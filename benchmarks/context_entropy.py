"""How many bits a context model could save over raqcodec's context-free index coder, on an image set.

    .venv/bin/python benchmarks/context_entropy.py ../shared/data/kodak --json benchmarks/results/context_entropy.json

For the shipped model's indices at each eK of --codebook-sizes, gives the cross-entropy in bits per index of three models whose
counts come from every OTHER image (leave-one-image-out, add-1/2 smoothing, so no image is coded with its own
statistics): no context; the index at the same position in the previous product group; the left neighbour in
the same group. Also the .raq coder's actual bits per index (whole files). Prints JSON, also written to --json.
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import torch

from raqcodec.codec import analyse, encode_latent
from raqcodec.data import list_images
from raqcodec.image_io import load_image
from raqcodec.modelfile import DEFAULT_MODEL_PATH, load_model


def pairs(idx: np.ndarray, context: str) -> tuple[np.ndarray, np.ndarray]:
    """(G, h, w) indices -> (contexts, symbols), every index once; context = neighbour index + 1, or 0 where the
    neighbour does not exist (group 0, first column) or context is "none"."""
    ctx = np.zeros_like(idx)
    if context == "previous_group":
        ctx[1:] = idx[:-1] + 1
    elif context == "left_neighbour":
        ctx[:, :, 1:] = idx[:, :, :-1] + 1
    return ctx.ravel(), idx.ravel()


def loo_bits(grids: list[np.ndarray], context: str, size: int) -> float:
    """Mean bits per symbol, each image coded with counts from all other images."""
    per_image = [pairs(g, context) for g in grids]
    total = np.zeros((size + 1, size))
    for ctx, sym in per_image:
        np.add.at(total, (ctx, sym), 1)
    bits, n = 0.0, 0
    for ctx, sym in per_image:
        own = np.zeros((size + 1, size))
        np.add.at(own, (ctx, sym), 1)
        counts = total - own + 0.5
        probs = counts[ctx, sym] / counts[ctx].sum(axis=1)
        bits -= np.log2(probs).sum()
        n += sym.size
    return bits / n


@torch.no_grad()
def measure(model, images: list[np.ndarray], size: int) -> dict:
    """The bits per index of the .raq files and of each leave-one-out context model at eK=size."""
    encoded = [encode_latent(model, analyse(model, px), size) for px in images]
    grids = [enc.indices[0].astype(np.int64) for enc in encoded]
    coded_bits = sum(len(enc.data) * 8 for enc in encoded)
    return {"raq_file": coded_bits / sum(g.size for g in grids),
            **{f"loo_{c}": loo_bits(grids, c, size) for c in ("none", "previous_group", "left_neighbour")}}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("folder")
    parser.add_argument("--codebook-sizes", default="64,256,1024", help="comma-separated eK values")
    parser.add_argument("--json", default=None)
    args = parser.parse_args()
    model = load_model(DEFAULT_MODEL_PATH)
    images = [load_image(p)[0] for p in list_images(args.folder)]
    result = {"folder": args.folder, "images": len(images), "unit": "bits per index",
              "by_codebook_size": {int(k): measure(model, images, int(k)) for k in args.codebook_sizes.split(",")}}
    text = json.dumps(result, indent=1)
    if args.json:
        Path(args.json).write_text(text + "\n")
    print(text)


if __name__ == "__main__":
    main()
