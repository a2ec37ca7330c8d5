"""Peak memory (RSS) to compress and decompress a large image with the shipped model.

    .venv/bin/python benchmarks/large_image.py --width 6000 --height 4000 --bpp 0.3

The image is built from a smooth pattern with noise (or --source, resized). Compression and
decompression each run in their own process, which reports its own peak RSS (getrusage, MB) and keeps freed
memory as `raq` does (raqcodec.keep_freed_memory; --system-allocator: not).
Prints JSON (also written to --json).
"""
from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from PIL import Image

CHILD = """
import resource, sys, time, raqcodec
from pathlib import Path
mode, src, dst, bpp, keep = sys.argv[1:6]
if keep == "kept":
    raqcodec.keep_freed_memory()
t = time.perf_counter()
if mode == "compress":
    Path(dst).write_bytes(raqcodec.compress(src, bpp=float(bpp)))
else:
    raqcodec.decompress(Path(src).read_bytes()).save(dst)
print(time.perf_counter() - t, resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024)
"""


def make_image(width: int, height: int, source: str | None) -> Image.Image:
    if source:
        return Image.open(source).convert("RGB").resize((width, height), Image.Resampling.BICUBIC)
    yy, xx = np.mgrid[0:height, 0:width].astype(np.float32)
    img = np.stack([xx / width, yy / height, 0.5 + 0.5 * np.sin(xx / 37.0) * np.cos(yy / 23.0)], -1) * 220
    img += np.random.default_rng(0).normal(0, 8, img.shape)
    return Image.fromarray(np.clip(img, 0, 255).astype(np.uint8))


def run_child(*args: str) -> tuple[float, float]:
    """(seconds, peak RSS in MB) of one child process, as the child reports them."""
    out = subprocess.run([sys.executable, "-c", CHILD, *args], capture_output=True, text=True, check=True)
    seconds, rss_mb = out.stdout.strip().splitlines()[-1].split()
    return float(seconds), float(rss_mb)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--width", type=int, default=6000)
    parser.add_argument("--height", type=int, default=4000)
    parser.add_argument("--bpp", type=float, default=0.3)
    parser.add_argument("--source", default=None, help="resize this photo instead of a synthetic pattern")
    parser.add_argument("--json", default="benchmarks/results/large_image.json")
    parser.add_argument("--system-allocator", action="store_true", help="do not keep freed memory as `raq` does")
    args = parser.parse_args()
    allocator = "system" if args.system_allocator else "kept"
    with tempfile.TemporaryDirectory() as tmp:
        src, raq, out = Path(tmp) / "big.png", Path(tmp) / "big.raq", Path(tmp) / "out.png"
        make_image(args.width, args.height, args.source).save(src)
        t0 = time.perf_counter()
        c_s, c_rss = run_child("compress", str(src), str(raq), str(args.bpp), allocator)
        d_s, d_rss = run_child("decompress", str(raq), str(out), "0", allocator)
        assert Image.open(out).size == (args.width, args.height)
        result = {"width": args.width, "height": args.height, "megapixels": args.width * args.height / 1e6,
                  "bpp_target": args.bpp, "allocator": allocator, "file_bytes": raq.stat().st_size,
                  "bpp": raq.stat().st_size * 8 / (args.width * args.height),
                  "compress_s": c_s, "decompress_s": d_s, "compress_peak_rss_mb": c_rss,
                  "decompress_peak_rss_mb": d_rss, "wall_s": time.perf_counter() - t0}
    Path(args.json).write_text(json.dumps(result, indent=1) + "\n")
    print(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
