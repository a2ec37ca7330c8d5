"""The quantiser's blocked selections against torch's own, on real distance chunks (CPU).

    .venv/bin/python benchmarks/selection_speed.py [IMAGE] [--json OUT]

For the latent of IMAGE (default: Kodak's kodim05) and the shipped model's codebooks at eK = 256 to 4096, every
distance chunk that `nearest_indices` / `nearest_candidates` compute goes through `row_smallest(., 32)` and
`topk(32)`, `row_argmin` and `argmin`. Prints and writes JSON: per eK, milliseconds per chunk (median of 10
calls on the first chunk), the ratio ours / torch, and over all chunks how many results differ (values of the
32 smallest: must be 0; indices: only where distances are equal).
"""
from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path

import torch

from raqcodec.codec import analyse, get_model
from raqcodec.models.quantizer import _distance_chunks, row_argmin, row_smallest, split_groups

SIZES = (256, 512, 1024, 2048, 4096)
CANDIDATES = 32


def milliseconds(fn, calls: int = 10) -> float:
    fn()
    times = []
    for _ in range(calls):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return 1000 * statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("image", nargs="?", default="../shared/data/kodak/kodim05.png")
    parser.add_argument("--json", default="benchmarks/results/selection_speed.json")
    args = parser.parse_args()
    model = get_model(None, "cpu")
    vectors = split_groups(analyse(model, args.image).z, model.cfg.groups)
    rows = []
    for size in SIZES:
        chunks = [dist.clone() for _, dist in _distance_chunks(vectors, model.codebook(size))]  # one buffer: copy
        value_diffs = index_diffs = argmin_diffs = 0
        for dist in chunks:
            top = dist.topk(CANDIDATES, dim=-1, largest=False)
            values, indices = row_smallest(dist, CANDIDATES)
            value_diffs += int((values != top.values).sum())
            index_diffs += int((indices != top.indices).sum())
            argmin_diffs += int((row_argmin(dist) != dist.argmin(-1)).sum())
        first = chunks[0]
        times = {
            "topk_ms": milliseconds(lambda: first.topk(CANDIDATES, dim=-1, largest=False)),
            "row_smallest_ms": milliseconds(lambda: row_smallest(first, CANDIDATES)),
            "argmin_ms": milliseconds(lambda: first.argmin(-1)),
            "row_argmin_ms": milliseconds(lambda: row_argmin(first)),
        }
        rows.append({"codebook_size": size, "chunk_shape": list(first.shape), "chunks": len(chunks), **times,
                     "smallest_ratio": times["row_smallest_ms"] / times["topk_ms"],
                     "argmin_ratio": times["row_argmin_ms"] / times["argmin_ms"],
                     "value_differences": value_diffs, "index_differences": index_diffs,
                     "argmin_differences": argmin_diffs})
        print(json.dumps(rows[-1]))
    result = {"image": args.image, "threads": torch.get_num_threads(), "candidates": CANDIDATES, "rows": rows}
    Path(args.json).write_text(json.dumps(result, indent=1) + "\n")


if __name__ == "__main__":
    main()
