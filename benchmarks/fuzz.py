"""Long fuzz run of the decoder: N mutated .raq files (default 100,000), each must decode to an image of
the header's size or raise CodecError, within --max-seconds.

    .venv/bin/python benchmarks/fuzz.py --inputs 100000                                  # version-1 files
    .venv/bin/python benchmarks/fuzz.py --inputs 100000 --format 2 --json benchmarks/results/fuzz_v2.json
    .venv/bin/python benchmarks/fuzz.py --format 2 --decoder numpy --json benchmarks/results/fuzz_v2_numpy.json

Seeds (--format 1): valid files from the one-stage test-vector model at several eK and image sizes.
Seeds (--format 2): version-2 files from the two-stage test-vector model: one and two stages, entropy models
1 and 2 (context), eK from 2 to 4096. Mutations (tests/fuzzing.py):
truncation, bit flips, byte insertions, header fields set to extremes; half get a recomputed CRC so they
reach the payload decoder. --decoder numpy decodes with the torch-free decoder that `raq decompress` runs for
one file on a CPU (numpy_decoder.py) instead of the Python API's torch decoder. Prints JSON (also written to
--json); exits 1 on any crash or hang.
"""
from __future__ import annotations

import argparse
import dataclasses
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
from raqcodec import bitstream, entropy  # noqa: E402
from raqcodec.codec import encode  # noqa: E402
from raqcodec.models import RAQVAE  # noqa: E402
from raqcodec.modelfile import load_model  # noqa: E402
from raqcodec.numpy_decoder import NumpyDecoder  # noqa: E402

VECTORS = ROOT / "tests" / "vectors"


def recoded(data: bytes, indices: list[np.ndarray], entropy_model: int) -> bytes:
    """The same file with its payload coded by another entropy model."""
    header = raqcodec.read_header(data)
    payload = entropy.encode_stages(indices, list(header.codebook_sizes), entropy_model)
    return bitstream.pack(dataclasses.replace(header, entropy_model=entropy_model, payload_length=len(payload)),
                          payload)


def seed_files(version: int) -> tuple[RAQVAE, list[bytes]]:
    """(model, valid .raq files to mutate) for format version 1 or 2."""
    if version == 1:
        model = load_model(VECTORS / "tiny-model.pt")
        return model, [raqcodec.compress(synthetic_image(h, w, seed=h + w), codebook_size=k, model=model)
                       for (h, w), k in (((1, 1), 2), ((9, 13), 16), ((33, 20), 300), ((24, 40), 4096),
                                         ((64, 48), 1000), ((5, 70), 64))]
    model = load_model(VECTORS / "tiny-model-2stage.pt")
    seeds = []
    for (h, w), setting, model_id in (((1, 1), (2,), entropy.CONTEXT), ((9, 13), (16, 5), entropy.CONTEXT),
                                      ((33, 20), (300,), entropy.CONTEXT), ((24, 40), (4096, 12), entropy.ADAPTIVE),
                                      ((64, 48), (1000, 64), entropy.CONTEXT), ((5, 70), (64, 4096), entropy.CONTEXT),
                                      ((40, 30), (2, 2), entropy.ADAPTIVE)):
        enc = encode(synthetic_image(h, w, seed=h + w), codebook_size=setting, model=model)
        seeds.append(recoded(enc.data, enc.indices, model_id))
    assert all(raqcodec.read_header(seed).version == 2 for seed in seeds)
    return model, seeds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--inputs", type=int, default=100_000)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--max-seconds", type=float, default=5.0)
    parser.add_argument("--format", type=int, choices=(1, 2), default=1, help="format version of the seeds")
    parser.add_argument("--decoder", choices=("torch", "numpy"), default="torch")
    parser.add_argument("--json", default="benchmarks/results/fuzz.json")
    args = parser.parse_args()
    torch.set_num_threads(1)
    model, seeds = seed_files(args.format)
    if args.decoder == "numpy":
        model_file = VECTORS / ("tiny-model.pt" if args.format == 1 else "tiny-model-2stage.pt")
        decode = NumpyDecoder.load(model_file).decompress
    else:
        decode = lambda data: raqcodec.decompress(data, model=model)  # noqa: E731
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
            image = decode(data)
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
    result = {"format_version": args.format, "decoder": args.decoder, "inputs": args.inputs, "seed": args.seed,
              "outcomes": dict(outcomes), "crashes": len(crashes),
              "hangs_over_s": args.max_seconds, "hangs": int(hangs), "slowest_s": slowest,
              "total_s": time.perf_counter() - start, "first_crashes": crashes[:5]}
    Path(args.json).write_text(json.dumps(result, indent=1) + "\n")
    print(json.dumps(result, indent=1))
    sys.exit(1 if crashes or hangs else 0)


if __name__ == "__main__":
    main()
