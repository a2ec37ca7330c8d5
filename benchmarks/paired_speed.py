"""Compress speed of this checkout against another one, interleaved image by image, so that drift in the
machine's speed (up to 31 % between runs on the project's 2-core machine) falls on both alike.

    git worktree add /tmp/before <commit>
    .venv/bin/python benchmarks/paired_speed.py ../shared/data/kodak --other /tmp/before --targets 0.5,1.2 \\
        --json benchmarks/results/paired_speed.json

Two worker processes load the same model file, one importing this checkout's package and one the --other
checkout's (by PYTHONPATH). For every round, target and image, both compress the image with `--bpp` (the public
`raqcodec.codec.encode`, from the file), one after the other, the first alternating from image to image; each
worker warms up once per target. Each worker keeps freed memory as its checkout's `raq` does (where that
package has raqcodec.keep_freed_memory; --system-allocator: neither does). Prints JSON (also written to
--json): per target, seconds per megapixel of each side (sum of times / sum of megapixels) and their ratio, the
same from each image's fastest round (which drops the stalls a shared machine inflicts on single encodes), and
how many files came out byte-identical. With --decompress, each worker also decompresses the file it just
wrote (`raqcodec.codec.decompress`, model loaded), and the same figures are given for decoding.
"""
from __future__ import annotations

import argparse
import hashlib
import json
import os
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve()
REPO = HERE.parent.parent


def worker(model_path: str, system_allocator: bool) -> None:
    """Read {"path", "bpp", "decompress"} lines on stdin; answer each with {"seconds", "megapixels", "sha1"} and,
    when asked to decompress the file, "decode_seconds" on stdout."""
    import warnings

    import raqcodec
    from raqcodec.codec import decompress, encode, get_model

    keep = None if system_allocator else getattr(raqcodec, "keep_freed_memory", None)
    allocator = "kept" if keep is not None and keep() else "system"
    warnings.simplefilter("ignore")  # a target above an image's largest rate warns on every call
    model = get_model(model_path, "auto")
    print(json.dumps({"package": str(Path(raqcodec.__file__).parent), "allocator": allocator}), flush=True)
    for line in sys.stdin:
        job = json.loads(line)
        start = time.perf_counter()
        encoded = encode(job["path"], model=model, bpp=job["bpp"])
        answer = {"seconds": time.perf_counter() - start,
                  "megapixels": encoded.header.width * encoded.header.height / 1e6,
                  "sha1": hashlib.sha1(encoded.data).hexdigest()}
        if job["decompress"]:
            start = time.perf_counter()
            decompress(encoded.data, model=model)
            answer["decode_seconds"] = time.perf_counter() - start
        print(json.dumps(answer), flush=True)


class Worker:
    """One worker process importing the package found first on `pythonpath` (None: this checkout's)."""

    def __init__(self, pythonpath: str | None, model_path: str, system_allocator: bool) -> None:
        env = dict(os.environ, PYTHONPATH=pythonpath or str(REPO))
        command = [sys.executable, str(HERE), "--worker", "--model", model_path]
        self.proc = subprocess.Popen(command + ["--system-allocator"] * system_allocator, env=env,
                                     stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, cwd="/")
        hello = json.loads(self.proc.stdout.readline())
        self.package, self.allocator = hello["package"], hello["allocator"]

    def time_coding(self, path: Path, bpp: float, decompress: bool) -> dict:
        """The worker's answer for one image: its encode timed, and its decode too when `decompress`."""
        self.proc.stdin.write(json.dumps({"path": str(path), "bpp": bpp, "decompress": decompress}) + "\n")
        self.proc.stdin.flush()
        return json.loads(self.proc.stdout.readline())

    def close(self) -> None:
        self.proc.stdin.close()
        self.proc.wait()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("inputs", nargs="*", help="folders or image files")
    parser.add_argument("--other", help="root of the other checkout (holds raqcodec/); default this checkout, which "
                                        "measures the noise of the comparison itself")
    parser.add_argument("--model", default=str(REPO / "models" / "raq-default.pt"))
    parser.add_argument("--targets", default="0.5,1.2", help="comma-separated bpp targets")
    parser.add_argument("--rounds", type=int, default=1)
    parser.add_argument("--json", default="benchmarks/results/paired_speed.json")
    parser.add_argument("--system-allocator", action="store_true", help="neither side keeps freed memory")
    parser.add_argument("--decompress", action="store_true", help="also time decompressing each file")
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        worker(args.model, args.system_allocator)
        return
    if not args.inputs:
        parser.error("give at least one folder or image file")
    from raqcodec.data import list_images

    paths = [p.resolve() for item in map(Path, args.inputs) for p in (list_images(item) if item.is_dir() else [item])]
    targets = [float(t) for t in args.targets.split(",")]
    model = str(Path(args.model).resolve())
    sides = {"this": Worker(None, model, args.system_allocator),
             "other": Worker(args.other, model, args.system_allocator)}
    rows = []
    for target in targets:
        for side in sides.values():
            side.time_coding(paths[0], target, args.decompress)  # warm-up: this target's codebooks generated and cached
        measures = ("seconds", "decode_seconds") if args.decompress else ("seconds",)
        # per measure, side and image: seconds of each round
        times = {measure: {name: [[] for _ in paths] for name in sides} for measure in measures}
        megapixels, identical = [0.0] * len(paths), 0
        for _ in range(args.rounds):
            for i, path in enumerate(paths):
                order = list(sides) if i % 2 == 0 else list(sides)[::-1]
                results = {name: sides[name].time_coding(path, target, args.decompress) for name in order}
                for measure in measures:
                    for name, result in results.items():
                        times[measure][name][i].append(result[measure])
                megapixels[i] = results["this"]["megapixels"]
                identical += results["this"]["sha1"] == results["other"]["sha1"]
        row = {"bpp": target, "encodes_per_side": args.rounds * len(paths), "identical_files": identical}
        for measure, prefix in zip(measures, ("", "decompress_")):
            total = {name: sum(map(sum, times[measure][name])) / (args.rounds * sum(megapixels)) for name in sides}
            best = {name: sum(map(min, times[measure][name])) / sum(megapixels) for name in sides}  # stalls dropped
            row.update({**{f"{prefix}{name}_s_per_mp": total[name] for name in sides},
                        f"{prefix}this_over_other": total["this"] / total["other"],
                        **{f"{prefix}{name}_best_of_rounds_s_per_mp": best[name] for name in sides},
                        f"{prefix}this_over_other_best_of_rounds": best["this"] / best["other"]})
        rows.append(row)
        print(json.dumps(rows[-1]), flush=True)
    doc = {"this": sides["this"].package, "other": sides["other"].package,
           "allocators": {name: side.allocator for name, side in sides.items()}, "model": model,
           "inputs": args.inputs, "rounds": args.rounds, "rows": rows}
    for side in sides.values():
        side.close()
    Path(args.json).write_text(json.dumps(doc, indent=1) + "\n")


if __name__ == "__main__":
    main()
