"""Training loop for RAQ-VAE models: random crops, joint L_VQ + L_RAQ loss, eK sampled per step.

eK is drawn once per step from a LOG-UNIFORM distribution over the integers [min_codebook_size,
max_codebook_size] (round(exp(U(log min, log max)))). The reference code draws eK uniformly over integers, which
puts ~3/4 of the steps above 512; log-uniform gives every octave of rate the same share of training.
`size_sampling="uniform"` trains with the reference code's rule instead (an ablation). A model with residual
stages draws one eK per stage, independently, by the same rule.

Learning rate: constant, or with `lr_end` a cosine decay from `lr` to `lr_end` over this run's budget (the
larger of the fractions of `steps` and of `minutes` used so far).

Several processes: `torchrun --nproc_per_node N -m raqcodec.cli train ...` trains data-parallel with
DistributedDataParallel (`raqcodec.distributed`: gloo on CPU, NCCL on GPUs; --batch is per process).
"""
from __future__ import annotations

import math
import random
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from raqcodec import distributed
from raqcodec.codec import setting_label
from raqcodec.data import CropSampler, center_crops, load_source
from raqcodec.modelfile import read_model_file, save_model
from raqcodec.models import RAQVAE, ModelConfig, named_config


@dataclass
class TrainOptions:
    """What `raq train` was asked to do. Times in minutes, learning rate per Adam step."""

    sources: list[str]
    out: str
    config: str | None = None  # named config; None: "default", or the --init file's own config
    val_source: str | None = None
    steps: int = 100_000
    minutes: float = float("inf")
    batch: int = 16
    crop: int = 64
    lr: float = 2e-4
    lr_end: float | None = None  # cosine decay of the learning rate to this value over the run (None: constant)
    seed: int = 0
    checkpoint_minutes: float = 5.0
    resume: bool = False
    init: str | None = None  # start from the weights of a model file (e.g. the shipped model)
    device: str = "cpu"
    split: str = "train"  # split of a CIFAR-10 zip source
    holdout: int = 0  # validate on `holdout` random training images (taken out of training) instead of val_source
    keep_best: bool = False  # write the model file only when the mean validation PSNR improves
    config_overrides: dict = field(default_factory=dict)
    size_sampling: str = "log-uniform"  # how eK is drawn per step: "log-uniform" or "uniform" (the reference code)


SIZE_SAMPLINGS = ("log-uniform", "uniform")


def sample_codebook_size(rng: random.Random, lo: int, hi: int, sampling: str = "log-uniform") -> int:
    """One eK from the integers [lo, hi]: log-uniform, or uniform (the reference code's rule)."""
    if sampling == "uniform":
        return rng.randint(lo, hi)
    if sampling != "log-uniform":
        raise ValueError(f"unknown eK sampling {sampling!r}; known: {', '.join(SIZE_SAMPLINGS)}")
    return min(hi, max(lo, round(math.exp(rng.uniform(math.log(lo), math.log(hi + 0.5))))))


def cosine_lr(lr: float, lr_end: float | None, progress: float) -> float:
    """Learning rate after a fraction `progress` in [0, 1] of the run: lr, or cosine from lr to lr_end."""
    if lr_end is None:
        return lr
    return lr_end + 0.5 * (lr - lr_end) * (1 + math.cos(math.pi * min(1.0, max(0.0, progress))))


def git_commit() -> str:
    try:
        return subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True, timeout=5,
                              cwd=Path(__file__).parent).stdout.strip() or "unknown"
    except (OSError, subprocess.SubprocessError):
        return "unknown"


def psnr_from_mse(mse: float) -> float:
    """PSNR in dB of a mean squared error on [0, 1] pixels."""
    return 10 * math.log10(1.0 / max(mse, 1e-12))


def validation_settings(cfg: ModelConfig) -> list[tuple[int, ...]]:
    """The settings validated during training: stage 1 at the smallest, base and largest eK, then each further
    stage at those sizes with the earlier stages at their largest (one setting for a fixed-rate model)."""
    if not cfg.adaptive:
        return [(cfg.base_codebook_size,)]
    return cfg.ladder((cfg.min_codebook_size, cfg.base_codebook_size, cfg.max_codebook_size))


@torch.no_grad()
def validate(model: RAQVAE, crops: torch.Tensor, settings: list[tuple[int, ...]]) -> dict[str, float]:
    """PSNR (dB, [0,1] pixels, 8-bit rounded) of val crops (N, 3, S, S) per setting (one eK per stage used),
    generated codebooks (the base codebook, whatever the size, for a fixed-rate model), keyed by setting_label."""
    was_training = model.training
    model.eval()
    out = {}
    for sizes in settings:
        codebooks = model.codebooks(sizes) if model.cfg.adaptive else [model.base.embed]
        mses = []
        for chunk in crops.split(8):
            chunk = chunk.to(model.base.embed.device)
            z = model.analysis(chunk)
            x_hat = model.synthesis(model.dequantize_stages(model.quantize_stages(z, codebooks), codebooks))
            x_hat = (x_hat.clamp(0, 1) * 255).round() / 255
            mses.append(((x_hat - chunk) ** 2).flatten(1).mean(1))
        out[setting_label(sizes)] = float(np.mean([psnr_from_mse(m) for m in torch.cat(mses).tolist()]))
    model.train(was_training)
    return out


def _build_model(opts: TrainOptions) -> tuple[RAQVAE, int]:
    """The model to train and the first stage whose weights are new (cfg.stages when all were loaded).

    With --init and no --config, the init file's configuration; with both, the named configuration, taking
    every weight of the init file whose name and shape match. Residual stages the file lacks start with a copy
    of stage 1's generator (a trained codebook-to-codebook mapping) and base codebooks set from the data.
    """
    if not opts.init:
        return RAQVAE(named_config(opts.config or "default", **opts.config_overrides)), 1
    payload = read_model_file(opts.init)
    cfg = ModelConfig.from_dict(payload["config"]) if opts.config is None else \
        named_config(opts.config, **opts.config_overrides)
    model = RAQVAE(cfg)
    own = model.state_dict()
    loaded = {k: v for k, v in payload["state_dict"].items() if k in own and own[k].shape == v.shape}
    model.load_state_dict(loaded, strict=False)
    new_stage = next((s for s in range(1, cfg.stages)
                      if not any(k.startswith(f"residual_stages.{s - 1}.") for k in loaded)), cfg.stages)
    for stage in range(new_stage, cfg.stages):
        model.stage_parts(stage)[1].load_state_dict(model.generator.state_dict())
    model.init_metadata = payload.get("metadata", {})
    return model, new_stage


def train(opts: TrainOptions) -> RAQVAE:
    """Train (or resume) and write the model file to opts.out; returns the trained model. Under torchrun, one
    rank of a data-parallel run (module docstring); rank 0 writes the files."""
    rank, world, device_name = distributed.setup(opts.device)
    torch.manual_seed(opts.seed)
    py_rng = random.Random(opts.seed)  # the same on every rank: the same eK per step
    device = torch.device(device_name)
    images = [img for src in opts.sources for img in load_source(src, opts.split)]
    if opts.holdout:  # a seeded random subset (sources may be sorted by class)
        order = np.random.default_rng(opts.seed).permutation(len(images))
        held = [images[i] for i in order[:opts.holdout]]
        images = [images[i] for i in order[opts.holdout:]]
        val_crops = center_crops(held, min(min(im.shape[:2]) for im in held))
    else:
        val_crops = center_crops(load_source(opts.val_source), 256)[:32] if opts.val_source else None
    sampler = CropSampler(images, opts.crop, opts.seed + rank)  # each rank its own crops

    model, new_stage = _build_model(opts)
    model = model.to(device)
    cfg = model.cfg
    optimizer = torch.optim.Adam(model.parameters(), lr=opts.lr)
    prior = getattr(model, "init_metadata", {})
    step, elapsed = int(prior.get("steps", 0)), float(prior.get("train_seconds", 0.0))
    history: list[dict] = list(prior.get("validation", []))
    lr_schedule: list[list] = list(prior.get("lr_schedule", []))  # [first step, learning rate] per sitting
    ckpt_path = Path(opts.out).with_suffix(".ckpt")
    if opts.resume and ckpt_path.exists():
        ckpt = torch.load(ckpt_path, map_location=device, weights_only=False)
        model.load_state_dict(ckpt["model"])
        optimizer.load_state_dict(ckpt["optimizer"])
        for group in optimizer.param_groups:  # the learning rate asked for now, not the checkpoint's
            group["lr"] = opts.lr
        step, elapsed, history = ckpt["step"], ckpt["elapsed"], ckpt["history"]
        lr_schedule = ckpt.get("lr_schedule", [[0, ckpt["optimizer"]["param_groups"][0]["lr"]]])
        samplers = ckpt.get("samplers", [ckpt["sampler"]])  # one per rank of the run that wrote it
        if rank < len(samplers):
            sampler.set_state(samplers[rank])
        py_rng.setstate(ckpt["py_rng"])
        torch.set_rng_state(ckpt["torch_rng"])

    if not lr_schedule or lr_schedule[-1][1] != opts.lr:
        lr_schedule.append([step, opts.lr])

    def metadata() -> dict:
        return {"data": [str(s) for s in opts.sources], "val": opts.val_source, "steps": step,
                "train_seconds": round(elapsed, 1), "batch": opts.batch, "crop": opts.crop, "lr": opts.lr,
                "lr_schedule": lr_schedule, "lr_end": opts.lr_end, "device": str(device),
                "seed": opts.seed, "processes": world, "codebook_size_sampling": f"{opts.size_sampling} integer", "git_commit": git_commit(),
                "validation": history, "codebook_range": [cfg.min_codebook_size, cfg.max_codebook_size]}

    def checkpoint() -> None:
        samplers = distributed.gather_objects(sampler.state())  # every rank takes part
        if rank != 0:
            return
        improved = True
        if val_crops is not None:
            psnrs = validate(model, val_crops, validation_settings(cfg))
            mean = float(np.mean(list(psnrs.values())))
            improved = not history or mean > max(np.mean(list(h["psnr"].values())) for h in history)
            history.append({"step": step, "psnr": {k: round(v, 3) for k, v in psnrs.items()}})
        torch.save({"model": model.state_dict(), "optimizer": optimizer.state_dict(), "step": step,
                    "elapsed": elapsed, "history": history, "lr_schedule": lr_schedule, "sampler": samplers[0], "samplers": samplers,
                    "py_rng": py_rng.getstate(), "torch_rng": torch.get_rng_state()}, ckpt_path.with_suffix(".tmp"))
        ckpt_path.with_suffix(".tmp").replace(ckpt_path)
        if improved or not opts.keep_best:
            save_model(model, opts.out, metadata())

    model.train()
    if not (opts.resume and ckpt_path.exists()) and new_stage < cfg.stages:
        model.init_residual_codebooks(sampler.sample(max(opts.batch, 16)).to(device), new_stage)
    start, last_ckpt = time.monotonic(), time.monotonic()
    base_elapsed, first_step = elapsed, step

    def draw_size() -> int:
        return sample_codebook_size(py_rng, cfg.min_codebook_size, cfg.max_codebook_size, opts.size_sampling)

    step_model = distributed.wrap(model, device_name)
    bar = tqdm(total=opts.steps, initial=step, desc="train", dynamic_ncols=True, mininterval=5, disable=rank != 0)
    while not distributed.any_rank(step >= opts.steps or elapsed - base_elapsed >= opts.minutes * 60):
        progress = max((step - first_step) / max(opts.steps - first_step, 1), (elapsed - base_elapsed) / (opts.minutes * 60))
        for group in optimizer.param_groups:
            group["lr"] = cosine_lr(opts.lr, opts.lr_end, progress)
        size = draw_size() if cfg.adaptive else None
        residual_sizes = tuple(draw_size() for _ in range(cfg.stages - 1)) if cfg.adaptive else ()
        x = sampler.sample(opts.batch).to(device)
        out = step_model(x, size, residual_sizes)
        optimizer.zero_grad(set_to_none=True)
        out["loss"].backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        step += 1
        elapsed = base_elapsed + time.monotonic() - start
        bar.update(1)
        shown = out["mse_adapted"] if cfg.adaptive else out["mse_base"]
        bar.set_postfix(loss=f"{out['loss'].item():.4f}", psnr=f"{psnr_from_mse(shown.item()):.2f}", eK=size,
                        psnr_residual=f"{psnr_from_mse(out['mse_residual'].item()):.2f}" if residual_sizes else "-")
        if distributed.any_rank(time.monotonic() - last_ckpt > opts.checkpoint_minutes * 60):
            checkpoint()
            last_ckpt = time.monotonic()
    bar.close()
    checkpoint()
    distributed.teardown()
    return model.eval()
