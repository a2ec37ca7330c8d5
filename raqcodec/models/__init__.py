"""The RAQ-VAE model: configuration, transforms, quantiser, codebook generators."""
from raqcodec.models.config import CONFIGS, ModelConfig, named_config
from raqcodec.models.raqvae import RAQVAE

__all__ = ["CONFIGS", "ModelConfig", "RAQVAE", "named_config"]
