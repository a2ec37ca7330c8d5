"""Decoded pixels across torch thread counts: how reproducible decoding is on one machine.

    .venv/bin/python benchmarks/decode_conformance.py ../shared/data/kodak --json benchmarks/results/decode_conformance.json

Every image is encoded once per setting (and once per --bpp target, with rate control); each file is decoded
with every thread count of --threads (in this process, torch.set_num_threads; timed, s/MP) and the decoded
indices and pixels are compared with the first thread count's: files whose indices differ (must be none: index
decoding is exact), files whose pixels differ, the number of differing pixel values and the largest difference
(levels of 255). Prints JSON (also --json).

Across environments (another torch version or machine): --save DIR keeps this run's files and pixels; a run
elsewhere with --against DIR compares its own files with those bytes and decodes them, comparing the pixels:

    .venv/bin/python benchmarks/decode_conformance.py ../shared/data/kodak --save /tmp/conformance
    OTHER/bin/python benchmarks/decode_conformance.py ../shared/data/kodak --against /tmp/conformance --json ...

--precision float64 decodes as `raq decompress --exact` does (codec.exact_decoder): does it give the same pixels
everywhere, and at what cost?

--numpy also decodes every file with the torch-free decoder that `raq decompress` runs for one file on a CPU
(numpy_decoder.py; timed, s/MP, after the torch decodes) and compares its pixels with the first thread count's,
and both decoders' PSNR against the source image; then decodes every file again as on a machine of one core
(numpy_layers.WORKERS = 1, OpenBLAS's thread count 1) and compares the pixels.
"""
from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image

import raqcodec
from raqcodec import bitstream, entropy, numpy_layers
from raqcodec.codec import encode, exact_decoder, get_model
from raqcodec.data import list_images
from raqcodec.image_io import load_image
from raqcodec.metrics import psnr
from raqcodec.numpy_decoder import NumpyDecoder


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("folder")
    parser.add_argument("--settings", default="16,256,4096+256")
    parser.add_argument("--bpp", default="", help="also encode with rate control at these targets (bits per pixel)")
    parser.add_argument("--threads", default="1,2")
    parser.add_argument("--model", default=None)
    parser.add_argument("--json", default="benchmarks/results/decode_conformance.json")
    parser.add_argument("--save", default=None, help="folder for this run's files and decoded pixels")
    parser.add_argument("--against", default=None, help="a --save folder of another environment")
    parser.add_argument("--precision", choices=["float32", "float64"], default="float32",
                        help="decoder arithmetic (float64: decompress(exact=True), raq decompress --exact)")
    parser.add_argument("--numpy", action="store_true", help="compare the torch-free decoder with torch's")
    args = parser.parse_args()
    model = get_model(args.model, "auto")
    decoder = model if args.precision == "float32" else exact_decoder(model)
    threads = [int(t) for t in args.threads.split(",")]
    settings = args.settings.split(",")
    requests = [{"codebook_size": setting} for setting in settings]
    requests += [{"bpp": float(target)} for target in args.bpp.split(",") if target]
    jobs = [(path, request) for path in list_images(args.folder) for request in requests]
    sources = [path for path, _ in jobs]
    files = [encode(path, model=model, **request).data for path, request in jobs]
    megapixels = sum(header.width * header.height for header in map(raqcodec.read_header, files)) / 1e6
    decoded: dict[int, list[tuple[list[np.ndarray], np.ndarray]]] = {}
    seconds_per_megapixel = {}
    for count in threads:
        torch.set_num_threads(count)
        decoded[count], seconds = [], 0.0
        for data in files:
            header, payload = bitstream.unpack(data)
            indices = entropy.decode_stages(payload, header.latent_shape, list(header.codebook_sizes),
                                            header.entropy_model)
            start = time.perf_counter()
            image = raqcodec.decompress(data, model=decoder)
            seconds += time.perf_counter() - start
            decoded[count].append((indices, np.asarray(image, dtype=np.int16)))
        seconds_per_megapixel[str(count)] = round(seconds / megapixels, 3)
    reference = decoded[threads[0]]
    rows = {}
    for count in threads[1:]:
        index_files = sum(any(not np.array_equal(a, b) for a, b in zip(ref[0], got[0]))
                          for ref, got in zip(reference, decoded[count]))
        diffs = [np.abs(ref[1] - got[1]) for ref, got in zip(reference, decoded[count])]
        rows[f"{threads[0]}_vs_{count}"] = {"files": len(files), "files_with_different_indices": index_files,
                                            **pixel_differences(diffs)}
    doc = {"folder": str(args.folder), "settings": settings, "bpp": args.bpp, "torch": torch.__version__,
           "device": str(model.base.embed.device), "precision": args.precision,
           "decode_seconds_per_megapixel_by_threads": seconds_per_megapixel, "comparisons": rows}
    if args.numpy:
        doc["numpy_decoder"] = compare_numpy_decoder(args.model, files, sources, [pixels for _, pixels in reference],
                                                     megapixels)
    if args.save:
        save_run(Path(args.save), files, [pixels for _, pixels in reference])
    if args.against:
        doc["against"] = compare_with_saved(Path(args.against), files, decoder)
    print(json.dumps(doc, indent=1))
    Path(args.json).write_text(json.dumps(doc, indent=1) + "\n")


def save_run(folder: Path, files: list[bytes], pixels: list[np.ndarray]) -> None:
    """Write file i as i.raq and its decoded pixels as i.png (lossless), with this environment's torch version."""
    folder.mkdir(parents=True, exist_ok=True)
    for i, (data, image) in enumerate(zip(files, pixels)):
        (folder / f"{i:04d}.raq").write_bytes(data)
        Image.fromarray(image.astype(np.uint8)).save(folder / f"{i:04d}.png")
    (folder / "torch.txt").write_text(torch.__version__ + "\n")


def compare_with_saved(folder: Path, files: list[bytes], model) -> dict:
    """This run's files against a save_run folder's bytes; its files decoded here against its pixels."""
    theirs = [(folder / f"{i:04d}.raq").read_bytes() for i in range(len(files))]
    diffs = [np.abs(np.asarray(raqcodec.decompress(data, model=model), dtype=np.int16)
                    - np.asarray(Image.open(folder / f"{i:04d}.png"), dtype=np.int16)) for i, data in enumerate(theirs)]
    return {"saved_torch": (folder / "torch.txt").read_text().strip(), "files": len(files),
            "files_with_different_bytes": sum(a != b for a, b in zip(files, theirs)), **pixel_differences(diffs)}


def compare_numpy_decoder(model_path: str | None, files: list[bytes], sources: list[str],
                          torch_pixels: list[np.ndarray], megapixels: float) -> dict:
    """The numpy decoder's pixels against the torch decoder's, its decoding time, and the PSNR (dB) of both
    against the source images."""
    decoder = NumpyDecoder.load(model_path)
    seconds, diffs, psnr_changes, numpy_pixels = 0.0, [], [], []
    for data, source, theirs in zip(files, sources, torch_pixels):
        start = time.perf_counter()
        image = decoder.decompress(data)
        seconds += time.perf_counter() - start
        ours = np.asarray(image, dtype=np.int16)
        numpy_pixels.append(ours)
        diffs.append(np.abs(ours - theirs))
        original = load_image(source)[0]  # (H, W, 3) uint8, as the codec coded it
        psnr_changes.append(psnr(ours, original) - psnr(theirs, original))
    one_core = decode_as_on_one_core(model_path, files)
    return {"decode_seconds_per_megapixel": round(seconds / megapixels, 3), "vs_torch": pixel_differences(diffs),
            "psnr_change_db": {"min": round(min(psnr_changes), 6), "max": round(max(psnr_changes), 6),
                               "mean": round(float(np.mean(psnr_changes)), 6)},
            f"{numpy_layers.WORKERS}_cores_vs_1": pixel_differences(
                [np.abs(theirs - ours) for theirs, ours in zip(one_core, numpy_pixels)])}


def decode_as_on_one_core(model_path: str | None, files: list[bytes]) -> list[np.ndarray]:
    """Every file decoded by a fresh numpy decoder with one worker and OpenBLAS single-threaded."""
    cores, blas = numpy_layers.WORKERS, numpy_layers._openblas_threads()
    before = blas[1]() if blas else None
    numpy_layers.WORKERS = 1
    if blas:
        blas[0](1)
    try:
        decoder = NumpyDecoder.load(model_path)
        return [np.asarray(decoder.decompress(data), dtype=np.int16) for data in files]
    finally:
        numpy_layers.WORKERS = cores
        if blas:
            blas[0](before)


def pixel_differences(diffs: list[np.ndarray]) -> dict:
    """Summary of per-file absolute pixel differences (levels of 255)."""
    return {"files_with_different_pixels": sum(int(d.any()) for d in diffs),
            "different_values": int(sum(int((d > 0).sum()) for d in diffs)),
            "values": int(sum(d.size for d in diffs)), "max_difference": int(max(int(d.max()) for d in diffs))}


if __name__ == "__main__":
    main()
