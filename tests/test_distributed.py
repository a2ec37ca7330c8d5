"""Data-parallel training with torchrun: 2 CPU processes (gloo) on the tiny configuration."""
from __future__ import annotations

import subprocess
import sys

import pytest
import torch

from raqcodec import distributed
from raqcodec.errors import CodecError
from raqcodec.modelfile import read_model_file

TORCHRUN = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2"]

RANK_SCRIPT = """
import os, sys, torch
from raqcodec.train import TrainOptions, train
folder, out, steps = sys.argv[1], sys.argv[2], int(sys.argv[3])
model = train(TrainOptions(sources=[folder], out=out, config="tiny", steps=steps, batch=2, crop=32, lr=2e-3,
                           seed=0, checkpoint_minutes=60, resume=True))
torch.save(dict(model.named_parameters()), f"{out}.rank{os.environ['RANK']}")
"""


def run(args: list[str]) -> subprocess.CompletedProcess:
    done = subprocess.run(args, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    return done


def test_two_processes_keep_identical_weights_and_resume(image_folder, tmp_path):
    script, out = tmp_path / "rank.py", tmp_path / "model.pt"
    script.write_text(RANK_SCRIPT)
    run([*TORCHRUN, str(script), image_folder, str(out), "3"])
    ranks = [torch.load(f"{out}.rank{r}") for r in (0, 1)]
    # Each rank draws its own crops, so equal weights after the steps mean the gradients were averaged.
    assert ranks[0].keys() == ranks[1].keys()
    assert all(torch.equal(ranks[0][name], ranks[1][name]) for name in ranks[0])
    meta = read_model_file(out)["metadata"]
    assert (meta["steps"], meta["processes"]) == (3, 2)
    ckpt = torch.load(out.with_suffix(".ckpt"), weights_only=False)
    assert len(ckpt["samplers"]) == 2 and ckpt["samplers"][0] != ckpt["samplers"][1]

    # Resumed through the command line, exactly as documented.
    run([*TORCHRUN, "-m", "raqcodec.cli", "train", image_folder, "--out", str(out), "--config", "tiny",
         "--steps", "5", "--batch", "2", "--crop", "32", "--lr", "2e-3", "--resume", "--device", "cpu"])
    meta = read_model_file(out)["metadata"]
    assert (meta["steps"], meta["processes"]) == (5, 2)
    resumed = read_model_file(out)["state_dict"]
    assert any(not torch.equal(resumed[name], ranks[0][name]) for name in ranks[0])


def test_more_gpu_ranks_than_gpus_is_a_clear_error(monkeypatch):
    monkeypatch.setattr(distributed, "launched", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)
    monkeypatch.setenv("LOCAL_RANK", "1")
    with pytest.raises(CodecError, match="local rank 1 but this machine has 1 GPU"):
        distributed.setup("cuda")
