"""Compressing a large collection on a Dask cluster (`distributed`): `raq compress DIR OUT --dask ADDRESS`.

The per-file function is the one `raq compress DIR` runs (`batch.run_job`: encode, then an atomic write), mapped
over the files by the cluster's workers; each worker process loads the model once (one torch thread per
task, as `--workers`). Outputs that already exist are skipped (unless force), so a job restarted after a
failure or an interruption does only what is left. Encoding does not depend on the worker, so the files are
byte for byte those of `raq compress DIR` on one machine.

    raq compress photos/ coded/ --bpp 0.3 --dask tcp://scheduler:8786   # an existing cluster
    raq compress photos/ coded/ --bpp 0.3 --dask local:4                # a LocalCluster of 4 worker processes

From Python: `compress_on_cluster(client, jobs)` with a `distributed.Client`.
"""
from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

from raqcodec.batch import Job, JobResult, remove_temp_files, run_job
from raqcodec.errors import CodecError

_worker_models: dict[tuple[str | None, str], object] = {}


def pending(jobs: list[Job]) -> tuple[list[Job], int]:
    """(the jobs whose output does not exist yet, or all of them with force; how many were skipped)."""
    todo = [job for job in jobs if job.force or not Path(job.output).exists()]
    return todo, len(jobs) - len(todo)


def _run_on_worker(job: Job, model_path: str | None, device: str) -> JobResult:
    """run_job on a Dask worker, with the model loaded once per worker process."""
    import torch

    from raqcodec.codec import get_model

    key = (model_path, device)
    if key not in _worker_models:
        torch.set_num_threads(1)
        _worker_models[key] = get_model(model_path, device)
    return run_job(job, _worker_models[key])


def compress_on_cluster(client, jobs: list[Job], model_path: str | None = None,
                        device: str = "cpu") -> Iterator[JobResult]:
    """Yield one JobResult per job as the cluster finishes them (any order)."""
    from distributed import as_completed

    futures = client.map(_run_on_worker, jobs, model_path=model_path, device=device, pure=False)
    try:
        for future in as_completed(futures):
            yield future.result()
    except BaseException:  # Ctrl-C or a lost cluster: stop the tasks, remove their temporary files
        client.cancel(futures)
        remove_temp_files(jobs)
        raise


def connect(address: str):
    """A distributed.Client: "local:N" starts a LocalCluster of N single-threaded worker processes, anything
    else is a scheduler address. CodecError when Dask's distributed is not installed."""
    try:
        from distributed import Client, LocalCluster
    except ImportError:
        raise CodecError("--dask needs Dask's distributed: pip install 'raqcodec[cluster]'") from None
    if address.startswith("local:"):
        try:
            workers = int(address.removeprefix("local:"))
        except ValueError:
            raise CodecError(f"--dask local:N needs a number of workers, got {address!r}") from None
        return Client(LocalCluster(n_workers=workers, threads_per_worker=1, processes=True,
                                   dashboard_address=None))
    return Client(address)
