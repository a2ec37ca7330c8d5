"""Long fuzz run of the decoder: N mutated .raq files (default 100,000), each must decode to an image of
the header's size or raise CodecError, within --max-seconds.

    .venv/bin/python benchmarks/fuzz.py --inputs 100000

Seeds: valid files from the test-vector model at several eK and image sizes. Mutations (tests/fuzzing.py):
truncation, bit flips, byte insertions, header fields set to extremes; half get a recomputed CRC so they
reach the payload decoder. Prints JSON (also written to --json); exits 1 on any crash or hang.
"""
from __future__ import annotations

import argparse
import json
import sys
import time
import traceback
from collections import Counter
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))

from conftest import synthetic_image  # noqa: E402
from fuzzing import mutate  # noqa: E402

import raqcodec  # noqa: E402
from raqcodec.modelfile import load_model  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--inputs", type=int, default=100_000)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--max-seconds", type=float, default=5.0)
    parser.add_argument("--json", default="benchmarks/results/fuzz.json")
    args = parser.parse_args()
    torch.set_num_threads(1)
    model = load_model(ROOT / "tests" / "vectors" / "tiny-model.pt")
    seeds = [raqcodec.compress(synthetic_image(h, w, seed=h + w), codebook_size=k, model=model)
             for (h, w), k in (((1, 1), 2), ((9, 13), 16), ((33, 20), 300), ((24, 40), 4096), ((64, 48), 1000),
                               ((5, 70), 64))]
    rng = np.random.default_rng(args.seed)
    outcomes: Counter[str] = Counter()
    crashes, hangs, slowest = [], 0, 0.0
    start = time.perf_counter()
    for i in range(args.inputs):
        data = seeds[int(rng.integers(0, len(seeds)))]
        for _ in range(int(rng.integers(1, 4))):
            data = mutate(data, rng)
        t = time.perf_counter()
        try:
            image = raqcodec.decompress(data, model=model)
            header = raqcodec.read_header(data)
            if image.size != (header.width, header.height):
                raise AssertionError("decoded size differs from the header")
            outcomes["decoded"] += 1
        except raqcodec.CodecError:
            outcomes["codec_error"] += 1
        except Exception:  # a crash: anything but CodecError
            outcomes["crash"] += 1
            crashes.append({"input": i, "data": data.hex(), "traceback": traceback.format_exc(limit=3)})
        elapsed = time.perf_counter() - t
        slowest = max(slowest, elapsed)
        hangs += elapsed > args.max_seconds
    result = {"inputs": args.inputs, "seed": args.seed, "outcomes": dict(outcomes), "crashes": len(crashes),
              "hangs_over_s": args.max_seconds, "hangs": int(hangs), "slowest_s": slowest,
              "total_s": time.perf_counter() - start, "first_crashes": crashes[:5]}
    Path(args.json).write_text(json.dumps(result, indent=1) + "\n")
    print(json.dumps(result, indent=1))
    sys.exit(1 if crashes or hangs else 0)


if __name__ == "__main__":
    main()
