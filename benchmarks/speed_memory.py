"""Encode/decode speed (seconds per megapixel) and peak memory of raqcodec, Pillow JPEG/WebP/AVIF and the locally
trained CompressAI bmshj2018-factorized baseline, on one image set, measured in one run; ratios to JPEG and to
the CompressAI baseline; and the time to generate a codebook for eK in {16, 256, 4096}.

    .venv/bin/python benchmarks/speed_memory.py ../shared/data/kodak --factorized runs/baselines/factorized_0.0067.pt

Each codec runs in its own fresh worker process (python benchmarks/speed_memory.py --worker CODEC ...), which
decodes the image files into memory, then encodes and decodes every image once, in memory.
- cold: the first image, including what the first call loads (model weights, codebook generation, entropy
  tables); cached: the mean over the other images. Both in seconds per megapixel of the input image.
- peak RSS: the worker's high-water resident memory (MB), which includes the interpreter and its imports (every
  worker imports torch, to load images the same way); working MB is that minus the resident memory once the
  images are loaded, before the first encode.
Ratios (in the table: cached figures) divide each codec's figure by JPEG's or by the CompressAI baseline's.
Settings (chosen near 0.4-0.5 bpp on Kodak; the measured bpp is printed): raq eK=256 and raq --bpp 0.4 (rate
control: several trial encodes), JPEG q=20, WebP q=40, AVIF q=40 (Pillow defaults otherwise).
Prints JSON (also written to --json) and a Markdown table (--md).
"""
from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

PILLOW = {"jpeg": ("JPEG", 20), "webp": ("WEBP", 40), "avif": ("AVIF", 40)}
CODECS = ("raq_ek256", "raq_bpp0.4", *PILLOW, "factorized")


def rss_mb() -> float:
    """Current resident memory of this process in MB."""
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * resource.getpagesize() / 2**20


def codec_functions(codec: str, factorized: str | None):
    """(encode(pixels) -> bytes-like payload, decode(payload, pixels) -> pixels), imported lazily per codec."""
    if codec.startswith("raq"):
        import raqcodec

        kwargs = {"codebook_size": 256} if codec == "raq_ek256" else {"bpp": 0.4}
        return (lambda px: raqcodec.compress(px, **kwargs)), (lambda data, px: np.asarray(raqcodec.decompress(data)))
    if codec in PILLOW:
        from raqcodec.rd import pillow_decode, pillow_encode

        fmt, quality = PILLOW[codec]
        return (lambda px: pillow_encode(px, fmt, quality)), (lambda data, px: pillow_decode(data))
    sys.path.insert(0, str(Path(__file__).parent))
    import factorized_baseline

    state: dict = {}

    def net():
        if "net" not in state:
            state["net"] = factorized_baseline.load(Path(factorized))[0]
        return state["net"]

    def encode(px):
        return factorized_baseline.compress(net(), px)

    def decode(payload, px):
        return factorized_baseline.decompress(net(), *payload, *px.shape[:2])

    return encode, decode


def payload_bytes(payload) -> int:
    if isinstance(payload, (bytes, bytearray)):
        return len(payload)
    return sum(len(s) for s in payload[0])  # factorized: (strings, shape)


def worker(codec: str, folder: str, limit: int | None, factorized: str | None) -> dict:
    import torch

    from raqcodec.data import list_images
    from raqcodec.image_io import load_image

    images = [load_image(p)[0] for p in list_images(folder)[:limit]]
    encode, decode = codec_functions(codec, factorized)
    start_rss = rss_mb()
    enc_s, dec_s, bpp = [], [], []
    for px in images:
        megapixels = px.shape[0] * px.shape[1] / 1e6
        t = time.perf_counter()
        payload = encode(px)
        t_enc = time.perf_counter() - t
        t = time.perf_counter()
        decode(payload, px)
        t_dec = time.perf_counter() - t
        enc_s.append(t_enc / megapixels)
        dec_s.append(t_dec / megapixels)
        bpp.append(payload_bytes(payload) * 8 / (megapixels * 1e6))
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    return {"codec": codec, "images": len(images), "torch_threads": torch.get_num_threads(),
            "encode_cold_s_per_mp": enc_s[0], "decode_cold_s_per_mp": dec_s[0],
            "encode_cached_s_per_mp": float(np.mean(enc_s[1:])), "decode_cached_s_per_mp": float(np.mean(dec_s[1:])),
            "bpp": float(np.mean(bpp)), "peak_rss_mb": peak, "working_mb": peak - start_rss}


def codebook_generation() -> dict:
    """Seconds to generate the shipped model's codebook per eK: cold (cache cleared) and cached (best of 3)."""
    from raqcodec.codec import get_model

    model = get_model(None)
    out = {}
    for size in (16, 256, 4096):
        model.clear_codebook_cache()
        t = time.perf_counter()
        model.codebook(size)
        cold = time.perf_counter() - t
        cached = []
        for _ in range(3):
            t = time.perf_counter()
            model.codebook(size)
            cached.append(time.perf_counter() - t)
        out[str(size)] = {"cold_s": cold, "cached_s": min(cached)}
    return out


def ratios(results: dict[str, dict], reference: str) -> dict[str, dict]:
    keys = ("encode_cold_s_per_mp", "decode_cold_s_per_mp", "encode_cached_s_per_mp", "decode_cached_s_per_mp",
            "peak_rss_mb")
    return {codec: {k: r[k] / results[reference][k] for k in keys} for codec, r in results.items()}


def _ratio(x: float) -> str:
    return f"{x:.3g}" if x < 1000 else f"{x:.0f}"


def markdown(doc: dict) -> str:
    lines = ["| codec | bpp | enc cold s/MP | enc cached s/MP | dec cold s/MP | dec cached s/MP | peak RSS MB | "
             "working MB | enc / JPEG | dec / JPEG | enc / factorized | dec / factorized |",
             "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for codec, r in doc["codecs"].items():
        vs_jpeg, vs_fact = doc["ratio_to_jpeg"][codec], doc.get("ratio_to_factorized", {}).get(codec)
        fact = (f"{_ratio(vs_fact['encode_cached_s_per_mp'])} | {_ratio(vs_fact['decode_cached_s_per_mp'])}"
                if vs_fact else "- | -")
        lines.append(f"| {codec} | {r['bpp']:.3f} | {r['encode_cold_s_per_mp']:.3f} | {r['encode_cached_s_per_mp']:.3f} | "
                     f"{r['decode_cold_s_per_mp']:.3f} | {r['decode_cached_s_per_mp']:.3f} | {r['peak_rss_mb']:.0f} | "
                     f"{r['working_mb']:.0f} | {_ratio(vs_jpeg['encode_cached_s_per_mp'])} | "
                     f"{_ratio(vs_jpeg['decode_cached_s_per_mp'])} | {fact} |")
    gen = doc["codebook_generation"]
    lines += ["", "Codebook generation (shipped model): " + ", ".join(
        f"eK={k}: {v['cold_s'] * 1e3:.1f} ms cold, {v['cached_s'] * 1e6:.1f} us cached" for k, v in gen.items())]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("folder")
    parser.add_argument("--factorized", default=None, help="the trained bmshj2018-factorized checkpoint")
    parser.add_argument("--limit", type=int, default=None)
    parser.add_argument("--worker", default=None, help=argparse.SUPPRESS)
    parser.add_argument("--json", default="benchmarks/results/speed_memory.json")
    parser.add_argument("--md", default="benchmarks/results/speed_memory.md")
    args = parser.parse_args()
    if args.worker:
        print(json.dumps(worker(args.worker, args.folder, args.limit, args.factorized)))
        return
    codecs = [c for c in CODECS if c != "factorized" or args.factorized]
    results = {}
    for codec in codecs:
        cmd = [sys.executable, __file__, args.folder, "--worker", codec]
        cmd += ["--factorized", args.factorized] if args.factorized else []
        cmd += ["--limit", str(args.limit)] if args.limit else []
        run = subprocess.run(cmd, capture_output=True, text=True, check=True)
        results[codec] = json.loads(run.stdout.strip().splitlines()[-1])
        print(f"{codec}: {results[codec]}", file=sys.stderr, flush=True)
    doc = {"folder": args.folder, "machine": "2 CPU cores, no GPU; one worker process at a time",
           "codecs": results, "ratio_to_jpeg": ratios(results, "jpeg"),
           "codebook_generation": codebook_generation()}
    if "factorized" in results:
        doc["ratio_to_factorized"] = ratios(results, "factorized")
    Path(args.json).write_text(json.dumps(doc, indent=1) + "\n")
    Path(args.md).write_text(markdown(doc) + "\n")
    print(json.dumps(doc, indent=1))
    print(markdown(doc))


if __name__ == "__main__":
    main()
