"""The RAQ-VAE model: configuration, transforms, quantiser, codebook generators.

RAQVAE (and with it torch) is imported on first use, so that the configuration alone (models.config) loads
without torch: the numpy decoder reads it.
"""
from __future__ import annotations

from typing import Any

from raqcodec.models.config import CONFIGS, ModelConfig, named_config

__all__ = ["CONFIGS", "ModelConfig", "RAQVAE", "named_config"]


def __getattr__(name: str) -> Any:
    if name != "RAQVAE":
        raise AttributeError(f"module 'raqcodec.models' has no attribute {name!r}")
    from raqcodec.models.raqvae import RAQVAE

    return RAQVAE
