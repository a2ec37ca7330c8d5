"""Whole `raq` commands, cold (a new process each: imports, model load, work, exit), in wall-clock seconds.

    .venv/bin/python benchmarks/cold_commands.py IMAGE [--before CHECKOUT] [--runs 9] [--json OUT]

IMAGE is compressed once at --bpp 0.3 by this checkout; then `raq decompress` of that file runs --runs times
(and `raq compress --bpp 0.3` a third as often), and `raq info` and `raq --help` 5 times each. With --before (a
checkout of an earlier commit, e.g. from `git worktree add`), the same commands of that checkout run in
alternation with this one's, from its `raq` entry point (`raqcodec.cli.run`, or `cli.main` before commit
e53bbe8) with the same interpreter, so that both see the same machine load. Prints and writes JSON: per
command, the median, min, max and every run.
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

RAQ = Path(sys.executable).with_name("raq")  # this checkout's executable, beside the interpreter
# The earlier checkout's executable: its `raq` entry point (cli.run since e53bbe8, cli.main before).
BEFORE_MAIN = "import sys; sys.argv[0] = 'raq'; from raqcodec import cli; getattr(cli, 'run', cli.main)()"


def timed(command: list[str], env: dict[str, str] | None = None) -> float:
    """Seconds one command takes from start to exit (run from a neutral folder); it must succeed."""
    start = time.perf_counter()
    done = subprocess.run(command, capture_output=True, env=env, cwd=tempfile.gettempdir())
    seconds = time.perf_counter() - start
    if done.returncode != 0:
        raise SystemExit(f"{' '.join(command)} failed: {done.stderr.decode().strip()}")
    return seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("image")
    parser.add_argument("--before", default=None, help="a checkout of an earlier commit, timed in alternation")
    parser.add_argument("--runs", type=int, default=9)
    parser.add_argument("--json", default="benchmarks/results/cold_commands.json")
    args = parser.parse_args()

    work = Path(tempfile.mkdtemp(prefix="raq-cold-"))
    image, coded, decoded = str(Path(args.image).resolve()), str(work / "a.raq"), str(work / "a.png")
    timed([str(RAQ), "compress", image, coded, "--bpp", "0.3"])
    versions = [("now", [str(RAQ)], None)]
    if args.before:
        env = dict(os.environ, PYTHONPATH=str(Path(args.before).resolve()))
        versions.append(("before", [sys.executable, "-c", BEFORE_MAIN], env))

    runs: dict[str, list[float]] = {}
    for i in range(args.runs):
        for name, command, env in versions:
            Path(decoded).unlink(missing_ok=True)
            runs.setdefault(f"decompress {name}", []).append(timed(command + ["decompress", coded, decoded], env))
            if i % 3 == 0:
                runs.setdefault(f"compress --bpp 0.3 {name}", []).append(
                    timed(command + ["compress", image, str(work / "b.raq"), "--bpp", "0.3", "--force"], env))
    for _ in range(5):
        runs.setdefault("info now", []).append(timed([str(RAQ), "info", coded]))
        runs.setdefault("--help now", []).append(timed([str(RAQ), "--help"]))

    result = {"image": args.image, "before": args.before, "commands": {
        name: {"median_s": statistics.median(values), "min_s": min(values), "max_s": max(values),
               "runs_s": [round(v, 3) for v in values]} for name, values in runs.items()}}
    print(json.dumps(result, indent=1))
    Path(args.json).write_text(json.dumps(result, indent=1) + "\n")


if __name__ == "__main__":
    main()
