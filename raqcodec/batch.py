"""Compress many images, serially or with worker processes, writing every output atomically.

Workers are spawned processes with one torch thread each; each loads the model once. Encoding does not
depend on the thread count, so a parallel run writes exactly the bytes a serial run writes. On Ctrl-C the
workers are stopped and any temporary file they left is removed: no half-written output survives.
"""
from __future__ import annotations

import multiprocessing as mp
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

_worker_model = None


@dataclass(frozen=True)
class Job:
    """One image to compress: source and output paths and the rate settings."""

    source: str
    output: str
    bpp: float | None
    codebook_size: str | None  # a setting label: "512" or "4096+64"
    psnr: float | None  # a quality target in dB
    force: bool


@dataclass(frozen=True)
class JobResult:
    """What `raq compress` prints for one image; error is a one-line message when it failed."""

    source: str
    setting: str = ""  # the setting used, as a label ("512", "4096+64")
    nbytes: int = 0
    bpp: float = 0.0
    seconds: float = 0.0
    error: str | None = None


def run_job(job: Job, model) -> JobResult:
    """Compress one image with a loaded model and write it atomically."""
    from raqcodec.codec import encode, setting_label
    from raqcodec.errors import CodecError
    from raqcodec.image_io import write_bytes_atomic

    start = time.perf_counter()
    try:
        enc = encode(job.source, bpp=job.bpp, codebook_size=job.codebook_size, psnr=job.psnr, model=model)
        write_bytes_atomic(enc.data, job.output, force=job.force)
    except CodecError as exc:
        return JobResult(job.source, error=str(exc))
    return JobResult(job.source, setting_label(enc.setting), len(enc.data), enc.bpp, time.perf_counter() - start)


def _init_worker(model_path: str | None, device: str) -> None:
    import torch

    from raqcodec.codec import get_model

    global _worker_model
    torch.set_num_threads(1)
    _worker_model = get_model(model_path, device)


def _run_in_worker(job: Job) -> JobResult:
    return run_job(job, _worker_model)


def remove_temp_files(jobs: list[Job]) -> None:
    """Delete temporary files (".NAME.*.tmp") that killed workers may have left next to the outputs."""
    for job in jobs:
        out = Path(job.output)
        for tmp in out.parent.glob(f".{out.name}.*.tmp"):
            tmp.unlink(missing_ok=True)


def compress_many(jobs: list[Job], model, model_path: str | None, device: str, workers: int) -> Iterator[JobResult]:
    """Yield one JobResult per job, in order. workers <= 1 runs in this process with `model`."""
    if workers <= 1:
        for job in jobs:
            yield run_job(job, model)
        return
    pool = mp.get_context("spawn").Pool(workers, initializer=_init_worker, initargs=(model_path, device))
    try:
        yield from pool.imap(_run_in_worker, jobs)
        pool.close()
    except BaseException:
        pool.terminate()
        pool.join()
        remove_temp_files(jobs)
        raise
    pool.join()
