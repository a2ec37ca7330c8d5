"""Model files on disk: config + weights + metadata, a fingerprint, and the shipped default model.

A model file is a `torch.save` dict (loaded with weights_only=True, so it cannot run code):
    {"format": "raqcodec-model", "version": 1, "config": dict, "state_dict": {name: tensor}, "metadata": dict}
"""
from __future__ import annotations

import os
from functools import lru_cache
from pathlib import Path
from typing import Any

import torch

from raqcodec.errors import CodecError
from raqcodec.models import RAQVAE, ModelConfig
from raqcodec.weightfile import (DEFAULT_MODEL_PATH, MODEL_FORMAT, MODEL_FORMAT_VERSION, check_model_payload,
                                 state_fingerprint)


def fingerprint(model: RAQVAE) -> bytes:
    """8-byte SHA-256 prefix of the weights: every tensor of the state dict, sorted by name, with its shape.

    Written into each .raq header, so a file from another model is refused rather than mis-decoded. Only the
    weights count (not the config dict), so a config field added later does not change old models' fingerprints.
    """
    return state_fingerprint((name, tuple(tensor.shape), str(tensor.dtype), tensor.detach().cpu().contiguous().numpy())
                             for name, tensor in model.state_dict().items())


def save_model(model: RAQVAE, path: str | os.PathLike, metadata: dict[str, Any]) -> None:
    """Write a model file atomically (temp file + rename)."""
    path = Path(path)
    payload = {
        "format": MODEL_FORMAT, "version": MODEL_FORMAT_VERSION, "config": model.cfg.to_dict(),
        "state_dict": {k: v.detach().cpu() for k, v in model.state_dict().items()}, "metadata": metadata,
    }
    tmp = path.with_name(path.name + ".tmp")
    torch.save(payload, tmp)
    os.replace(tmp, path)


def read_model_file(path: str | os.PathLike) -> dict[str, Any]:
    """The raw dict of a model file; CodecError when it is not one."""
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
    except FileNotFoundError:
        raise CodecError(f"model file not found: {path}") from None
    except Exception as exc:  # torch raises many types for a non-model file
        raise CodecError(f"not a raqcodec model file: {path} ({type(exc).__name__})") from None
    return check_model_payload(payload, path)


def load_model(path: str | os.PathLike | None = None, device: str | torch.device = "cpu") -> RAQVAE:
    """Load a model file (the shipped default when path is None) in eval mode on `device`."""
    payload = read_model_file(DEFAULT_MODEL_PATH if path is None else path)
    model = RAQVAE(ModelConfig.from_dict(payload["config"]))
    model.load_state_dict(payload["state_dict"])
    model.metadata = payload.get("metadata", {})
    return model.to(device).eval()


@lru_cache(maxsize=4)
def cached_model(path: str | None, device: str) -> RAQVAE:
    """load_model, kept in memory per (path, device) so repeated calls reuse the model and its codebook cache."""
    return load_model(path, device)


def resolve_device(device: str) -> torch.device:
    """'auto' -> CUDA when available, else CPU; 'cpu' / 'cuda' as given (CodecError if CUDA is absent)."""
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if device == "cuda" and not torch.cuda.is_available():
        raise CodecError("--device cuda asked for, but no CUDA device is available")
    if device not in ("cpu", "cuda"):
        raise CodecError(f"unknown device {device!r}: use auto, cpu or cuda")
    return torch.device(device)
