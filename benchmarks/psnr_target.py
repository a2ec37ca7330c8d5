"""Quality target (`raq compress --psnr`) on an image folder: decoded PSNR against the target, bpp, seconds.

    .venv/bin/python benchmarks/psnr_target.py ../shared/data/kodak --targets 28,32 --json benchmarks/results/psnr_target.json

Every image is compressed through the public API at each target; the file is decoded with
raqcodec.decompress and scored against the source (PSNR over RGB in [0, 255]). A target out of reach for an
image is recorded with its error message. Prints JSON (also written to --json).
"""
from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np

import raqcodec
from raqcodec.codec import get_model
from raqcodec.data import list_images
from raqcodec.errors import CodecError
from raqcodec.image_io import load_image
from raqcodec.metrics import psnr


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("folder")
    parser.add_argument("--targets", default="28,32")
    parser.add_argument("--model", default=None)
    parser.add_argument("--limit", type=int, default=None)
    parser.add_argument("--json", default="benchmarks/results/psnr_target.json")
    args = parser.parse_args()
    model = get_model(args.model, "auto")
    targets = [float(t) for t in args.targets.split(",")]
    rows = []
    for path in list_images(args.folder)[: args.limit]:
        pixels, _ = load_image(path)
        for target in targets:
            row = {"image": path.name, "target_db": target}
            start = time.perf_counter()
            try:
                data = raqcodec.compress(path, psnr=target, model=model)
            except CodecError as exc:
                row.update(error=str(exc), seconds=time.perf_counter() - start)
            else:
                row.update(seconds=time.perf_counter() - start, bpp=len(data) * 8 / (pixels.shape[0] * pixels.shape[1]),
                           psnr_db=psnr(pixels, np.asarray(raqcodec.decompress(data, model=model))))
                row["excess_db"] = row["psnr_db"] - target
            rows.append(row)
            print(json.dumps(row), flush=True)
    summary = {}
    for target in targets:
        done = [r for r in rows if r["target_db"] == target and "psnr_db" in r]
        excess = [r["excess_db"] for r in done]
        summary[str(target)] = {
            "images": sum(r["target_db"] == target for r in rows), "reached": len(done),
            "out_of_reach": sum(r["target_db"] == target and "error" in r for r in rows),
            "within_1_db": sum(0 <= e <= 1 for e in excess),
            "excess_db_min": min(excess, default=None), "excess_db_max": max(excess, default=None),
            "excess_db_mean": float(np.mean(excess)) if excess else None,
            "bpp_mean": float(np.mean([r["bpp"] for r in done])) if done else None,
            "seconds_mean": float(np.mean([r["seconds"] for r in rows if r["target_db"] == target]))}
    doc = {"folder": str(args.folder), "targets": targets, "summary": summary, "rows": rows}
    print(json.dumps(summary, indent=1))
    Path(args.json).write_text(json.dumps(doc, indent=1) + "\n")


if __name__ == "__main__":
    main()
