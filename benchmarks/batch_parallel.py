"""Batch compression: a folder of N images with several workers writes exactly the bytes a serial run
writes, and an interrupted (SIGINT) parallel run leaves no half-written or temporary file.

    .venv/bin/python benchmarks/batch_parallel.py --images 200 --workers 2

Uses the test-vector model (small and fast) so that the check is about the batch machinery.
Prints JSON (also written to --json).
"""
from __future__ import annotations

import argparse
import hashlib
import json
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from PIL import Image

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))

from conftest import synthetic_image  # noqa: E402

MODEL = ROOT / "tests" / "vectors" / "tiny-model.pt"


def raq(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "raqcodec.cli", *args], capture_output=True, text=True)


def digests(folder: Path) -> dict[str, str]:
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(folder.iterdir())}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=200)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--json", default="benchmarks/results/batch_parallel.json")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        src = Path(tmp) / "src"
        src.mkdir()
        for i in range(args.images):
            Image.fromarray(synthetic_image(48 + i % 7 * 16, 64 + i % 5 * 16, seed=i)).save(src / f"{i:04d}.png")
        common = ["--bpp", "1.0", "--model", str(MODEL)]
        t = time.perf_counter()
        serial = raq("compress", str(src), str(Path(tmp) / "serial"), *common)
        serial_s = time.perf_counter() - t
        t = time.perf_counter()
        parallel = raq("compress", str(src), str(Path(tmp) / "parallel"), *common, "--workers", str(args.workers))
        parallel_s = time.perf_counter() - t
        same = digests(Path(tmp) / "serial") == digests(Path(tmp) / "parallel")

        out = Path(tmp) / "interrupted"
        proc = subprocess.Popen([sys.executable, "-m", "raqcodec.cli", "compress", str(src), str(out), *common,
                                 "--workers", str(args.workers)], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        while not out.exists() or not any(out.iterdir()):  # interrupt as soon as the first output appears
            time.sleep(0.005)
        proc.send_signal(signal.SIGINT)
        proc.wait(timeout=60)
        left = sorted(p.name for p in out.iterdir())
        tmp_files = [n for n in left if n.endswith(".tmp")]
        reference = digests(Path(tmp) / "serial")
        partial = [n for n in left if not n.endswith(".tmp") and
                   hashlib.sha256((out / n).read_bytes()).hexdigest() != reference.get(n)]
    result = {"images": args.images, "workers": args.workers, "serial_exit": serial.returncode,
              "parallel_exit": parallel.returncode, "serial_s": serial_s, "parallel_s": parallel_s,
              "identical_outputs": same, "interrupt_exit": proc.returncode,
              "files_after_interrupt": len(left), "interrupted_before_the_end": len(left) < args.images,
              "temp_files_left": tmp_files, "partial_or_wrong_files": partial}
    Path(args.json).write_text(json.dumps(result, indent=1) + "\n")
    print(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
