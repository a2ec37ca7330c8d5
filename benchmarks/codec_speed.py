"""Seconds to compress and decompress one image, cold (fresh process: model load + codebook generation)
and with the model and codebook cached; codebook generation time per eK.

    .venv/bin/python benchmarks/codec_speed.py ../shared/data/kodak/kodim01.png --codebook-size 1024

Each "cold" figure is measured in a new Python process (imports excluded, model load included).
Prints JSON (also written to --json).
"""
from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

import torch

from speed_memory import codebook_generation

COLD_SNIPPET = """
import time, sys, json
import raqcodec
from raqcodec.codec import encode
image, size = sys.argv[1], int(sys.argv[2])
t = time.perf_counter(); enc = encode(image, codebook_size=size); t_enc = time.perf_counter() - t
from raqcodec import modelfile, codec
modelfile.cached_model.cache_clear()
t = time.perf_counter(); raqcodec.decompress(enc.data); t_dec = time.perf_counter() - t
print(json.dumps({"compress_cold_s": t_enc, "decompress_cold_s": t_dec, "bytes": len(enc.data), "bpp": enc.bpp}))
"""


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("image")
    parser.add_argument("--codebook-size", type=int, default=1024)
    parser.add_argument("--bpp", type=float, default=0.3)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--json", default="benchmarks/results/codec_speed.json")
    args = parser.parse_args()
    cold = json.loads(subprocess.run([sys.executable, "-c", COLD_SNIPPET, args.image, str(args.codebook_size)],
                                     capture_output=True, text=True, check=True).stdout.strip().splitlines()[-1])
    import raqcodec
    from raqcodec.codec import encode, get_model

    model = get_model(None, "auto")
    data = encode(args.image, codebook_size=args.codebook_size).data  # warm: model and codebook cached

    def best(fn) -> float:
        times = []
        for _ in range(args.repeats):
            t = time.perf_counter()
            fn()
            times.append(time.perf_counter() - t)
        return min(times)

    result = {"image": args.image, "codebook_size": args.codebook_size, "torch_threads": torch.get_num_threads(),
              "device": str(model.base.embed.device), **cold,
              "compress_cached_s": best(lambda: encode(args.image, codebook_size=args.codebook_size)),
              "decompress_cached_s": best(lambda: raqcodec.decompress(data)),
              "compress_bpp_target_s": best(lambda: encode(args.image, bpp=args.bpp)), "bpp_target": args.bpp}
    result["codebook_generation"] = codebook_generation()
    Path(args.json).write_text(json.dumps(result, indent=1) + "\n")
    print(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
