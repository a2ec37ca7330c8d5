"""Decoding seconds per megapixel of the torch-free decoder (what `raq decompress` runs for one file on a CPU)
against the torch decoder (the Python API), model loaded and codebooks cached, on the same files.

    .venv/bin/python benchmarks/numpy_decoder_speed.py ../shared/data/kodak \
        --json benchmarks/results/numpy_decoder_speed.json

Every image is encoded by this process at each --settings eK and each --targets bpp. Then, --rounds times, one
worker process per decoder (numpy first, then torch; each keeps freed memory as `raq` does, and the numpy
worker never imports torch) decodes every file once per group after a warm-up decode of the group's first file
(its codebooks), timing each decode. Prints JSON (also written to --json): per group and decoder, seconds per
megapixel summed over the files, per round.
"""
from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path


def worker(decoder_name: str, folder: Path) -> None:
    """Decode every group's files (folder/<group>/*.raq), print {group: [seconds, megapixels]}."""
    from raqcodec.allocator import keep_freed_memory
    from raqcodec.bitstream import read_header

    keep_freed_memory()
    if decoder_name == "numpy":
        from raqcodec.numpy_decoder import NumpyDecoder

        decode = NumpyDecoder.load().decompress
    else:
        import raqcodec
        from raqcodec.codec import get_model

        model = get_model(None, "cpu")
        decode = lambda data: raqcodec.decompress(data, model=model)  # noqa: E731
    result = {}
    for group in sorted(p for p in folder.iterdir() if p.is_dir()):
        files = [path.read_bytes() for path in sorted(group.glob("*.raq"))]
        decode(files[0])  # warm-up: the group's codebooks
        seconds = megapixels = 0.0
        for data in files:
            start = time.perf_counter()
            decode(data)
            seconds += time.perf_counter() - start
            header = read_header(data)
            megapixels += header.width * header.height / 1e6
        result[group.name] = [seconds, megapixels]
    if decoder_name == "numpy":
        result["torch_imported"] = "torch" in sys.modules
    print(json.dumps(result))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("inputs", nargs="*", help="folders or image files")
    parser.add_argument("--settings", default="4,256,4096+256")
    parser.add_argument("--targets", default="0.3,0.5,1.2")
    parser.add_argument("--rounds", type=int, default=1)
    parser.add_argument("--json", default="benchmarks/results/numpy_decoder_speed.json")
    parser.add_argument("--worker", nargs=2, metavar=("DECODER", "FOLDER"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        worker(args.worker[0], Path(args.worker[1]))
        return

    from raqcodec.codec import encode, get_model
    from raqcodec.data import list_images

    model = get_model(None, "cpu")
    paths = [p for item in map(Path, args.inputs) for p in (list_images(item) if item.is_dir() else [item])]
    groups = [("eK " + s, {"codebook_size": s}) for s in args.settings.split(",") if s] + \
             [(f"bpp {t}", {"bpp": float(t)}) for t in args.targets.split(",") if t]
    folder = Path(tempfile.mkdtemp(prefix="raq-numpy-speed-"))
    for name, options in groups:
        (folder / name).mkdir()
        for path in paths:
            (folder / name / f"{path.stem}.raq").write_bytes(encode(path, model=model, **options).data)
    rounds = []
    for _ in range(args.rounds):
        runs = {}
        for decoder_name in ("numpy", "torch"):
            done = subprocess.run([sys.executable, __file__, "--worker", decoder_name, str(folder)],
                                  capture_output=True, text=True, check=True)
            runs[decoder_name] = json.loads(done.stdout.strip().splitlines()[-1])
        rounds.append(runs)
    rows = {}
    for name, _ in groups:
        rows[name] = {decoder_name: [round(r[decoder_name][name][0] / r[decoder_name][name][1], 3) for r in rounds]
                      for decoder_name in ("numpy", "torch")}
        rows[name]["megapixels"] = round(rounds[0]["numpy"][name][1], 3)
    doc = {"inputs": args.inputs, "images": len(paths), "rounds": args.rounds,
           "numpy_worker_imported_torch": any(r["numpy"]["torch_imported"] for r in rounds),
           "decode_seconds_per_megapixel": rows}
    print(json.dumps(doc, indent=1))
    Path(args.json).write_text(json.dumps(doc, indent=1) + "\n")


if __name__ == "__main__":
    main()
