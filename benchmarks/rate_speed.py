"""Compress and decompress seconds per image, and per megapixel, at three fixed settings and three --bpp
targets (model loaded, codebooks cached), on this machine's CPU or GPU.

    .venv/bin/python benchmarks/rate_speed.py ../shared/data/kodak --json benchmarks/results/rate_speed.json
    .venv/bin/python benchmarks/rate_speed.py PHOTO.jpg --json benchmarks/results/rate_speed_photo.json

Inputs are folders (every image in them) or image files. Against an older checkout of the package (same
script, same model file): PYTHONPATH=/path/to/old/checkout ... --model models/raq-default.pt.

Each image is compressed from its file and decompressed from the bytes, through the public API, once per
setting after one warm-up call that generates the setting's codebooks. The process keeps freed memory as `raq`
does (raqcodec.keep_freed_memory, where the measured package has it; --system-allocator: never). Prints JSON
(also written to --json).
"""
from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import torch

import raqcodec
from raqcodec.codec import encode, get_model, setting_label
from raqcodec.data import list_images

SETTINGS = ("4", "256", "4096+256")
TARGETS = (0.1, 0.3, 0.5, 1.2)


def timed(fn):
    start = time.perf_counter()
    out = fn()
    if torch.cuda.is_available():
        torch.cuda.synchronize()
    return out, time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("inputs", nargs="+", help="folders or image files")
    parser.add_argument("--model", default=None)
    parser.add_argument("--device", default="auto")
    parser.add_argument("--limit", type=int, default=None)
    parser.add_argument("--json", default="benchmarks/results/rate_speed.json")
    parser.add_argument("--system-allocator", action="store_true", help="do not keep freed memory as `raq` does")
    args = parser.parse_args()
    keep = None if args.system_allocator else getattr(raqcodec, "keep_freed_memory", None)
    allocator = "kept" if keep is not None and keep() else "system"
    model = get_model(args.model, args.device)
    paths = [p for item in map(Path, args.inputs) for p in (list_images(item) if item.is_dir() else [item])][: args.limit]
    runs = [("codebook_size", s) for s in SETTINGS] + [("bpp", t) for t in TARGETS]
    rows = []
    for key, value in runs:
        encode(paths[0], model=model, **{key: value})  # warm-up: codebooks generated and cached
        per_image = []
        for path in paths:
            enc, t_enc = timed(lambda: encode(path, model=model, **{key: value}))
            _, t_dec = timed(lambda: raqcodec.decompress(enc.data, model=model))
            megapixels = enc.header.width * enc.header.height / 1e6
            per_image.append({"image": path.name, "setting": setting_label(enc.setting), "bpp": enc.bpp,
                              "megapixels": megapixels, "compress_s": t_enc, "decompress_s": t_dec,
                              "compress_s_per_mp": t_enc / megapixels, "decompress_s_per_mp": t_dec / megapixels})
        rows.append({key: value, "images": len(per_image),
                     "bpp_mean": float(np.mean([r["bpp"] for r in per_image])),
                     "compress_s_mean": float(np.mean([r["compress_s"] for r in per_image])),
                     "decompress_s_mean": float(np.mean([r["decompress_s"] for r in per_image])),
                     "compress_s_per_mp": sum(r["compress_s"] for r in per_image) / sum(r["megapixels"] for r in per_image),
                     "decompress_s_per_mp": sum(r["decompress_s"] for r in per_image) / sum(r["megapixels"] for r in per_image),
                     "per_image": per_image})
        print(json.dumps({k: v for k, v in rows[-1].items() if k != "per_image"}))
    device = str(model.base.embed.device)
    doc = {"device": torch.cuda.get_device_name(0) if device.startswith("cuda") else f"cpu, {torch.get_num_threads()} threads",
           "torch": torch.__version__, "package": str(Path(raqcodec.__file__).parent), "allocator": allocator,
           "inputs": args.inputs, "rows": rows}
    Path(args.json).write_text(json.dumps(doc, indent=1) + "\n")


if __name__ == "__main__":
    main()
