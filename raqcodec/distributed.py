"""Data-parallel training with PyTorch's own DistributedDataParallel, launched by torchrun.

    torchrun --nproc_per_node 2 -m raqcodec.cli train IMAGES/ --out model.pt ...     # gloo on CPU, NCCL on GPUs

torchrun sets RANK, WORLD_SIZE and LOCAL_RANK; without them (a plain `raq train`) everything here is a no-op
and training runs in one process. In a distributed run:
- every rank draws its own crops (sampler seed + rank) and the same eK per step (the same seed), so
  `--batch` is per process and one step sees WORLD_SIZE x batch crops;
- DDP averages the gradients, so the ranks' parameters stay identical;
- the EMA codebook statistics (counts and sums) are summed over the ranks before each EMA step, and the
  buffers are broadcast from rank 0 at every forward (dead-code restarts are rank 0's);
- stopping and checkpointing are decided together (a MAX all-reduce of the ranks' flags), rank 0 validates
  and writes the checkpoint and the model file, with every rank's sampler state so a resume is intact.
"""
from __future__ import annotations

import os

import torch
import torch.distributed as dist

from raqcodec.errors import CodecError


def launched() -> bool:
    """Whether torchrun started this process as one of several."""
    return int(os.environ.get("WORLD_SIZE", "1")) > 1


def is_rank_zero() -> bool:
    """Whether this process writes the files: the only one, or rank 0 of a torchrun launch."""
    return int(os.environ.get("RANK", "0")) == 0


def setup(device: str) -> tuple[int, int, str]:
    """Join the process group when launched by torchrun: (rank, world size, this rank's device).

    CPU: gloo; CUDA: NCCL, one GPU per local rank ("cuda" becomes "cuda:LOCAL_RANK").
    """
    if not launched():
        return 0, 1, device
    on_gpu = device.startswith("cuda")
    if on_gpu:
        local_rank, gpus = int(os.environ.get("LOCAL_RANK", "0")), torch.cuda.device_count()
        if local_rank >= gpus:
            raise CodecError(f"torchrun started local rank {local_rank} but this machine has {gpus} GPU(s): "
                             "use --nproc_per_node at most that, or --device cpu")
        device = f"cuda:{local_rank}"
        torch.cuda.set_device(device)
    if not dist.is_initialized():
        dist.init_process_group("nccl" if on_gpu else "gloo")
    return dist.get_rank(), dist.get_world_size(), device


def active() -> bool:
    """Whether this process is one rank of an initialised group of several."""
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def sum_over_ranks(*tensors: torch.Tensor) -> None:
    """All-reduce (sum) tensors in place across the ranks; nothing in a single process."""
    if active():
        for tensor in tensors:
            dist.all_reduce(tensor)


def any_rank(flag: bool) -> bool:
    """The flag OR-ed over the ranks (every rank must call this at the same point)."""
    if not active():
        return flag
    value = torch.tensor([float(flag)])
    dist.all_reduce(value, op=dist.ReduceOp.MAX)
    return bool(value.item())


def gather_objects(obj) -> list:
    """Every rank's obj, in rank order (a one-element list in a single process)."""
    if not active():
        return [obj]
    out = [None] * dist.get_world_size()
    dist.all_gather_object(out, obj)
    return out


def wrap(model: torch.nn.Module, device: str) -> torch.nn.Module:
    """The module to call for training steps: DDP around model in a distributed run, else model itself."""
    if not active():
        return model
    ids = [torch.device(device).index] if device.startswith("cuda") else None
    return torch.nn.parallel.DistributedDataParallel(model, device_ids=ids, broadcast_buffers=True)


def teardown() -> None:
    if dist.is_available() and dist.is_initialized():
        dist.barrier()
        dist.destroy_process_group()
