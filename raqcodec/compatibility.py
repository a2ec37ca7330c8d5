"""Whether a setting or a .raq header fits a model, from its configuration and fingerprint alone (no torch):
shared by the torch codec (codec.py) and the numpy decoder (numpy_decoder.py)."""
from __future__ import annotations

from raqcodec.bitstream import Header
from raqcodec.errors import CodecError
from raqcodec.models.config import ModelConfig


def check_setting(cfg: ModelConfig, setting: tuple[int, ...]) -> None:
    """CodecError unless the model has that many stages and every eK is in its range."""
    if len(setting) > cfg.stages:
        raise CodecError(f"{len(setting)} codebook sizes given, but the model has {cfg.stages} stage(s)")
    for size in setting:
        if not cfg.min_codebook_size <= size <= cfg.max_codebook_size:
            raise CodecError(f"codebook size {size} is outside the model's range "
                             f"{cfg.min_codebook_size}..{cfg.max_codebook_size}")


def check_header(cfg: ModelConfig, model_fingerprint: bytes, header: Header) -> None:
    """CodecError unless the file was written by the model of this configuration and fingerprint."""
    if header.model_fingerprint != model_fingerprint:
        raise CodecError("this .raq file was written with a different model "
                         f"(fingerprint {header.model_fingerprint.hex()}, model has {model_fingerprint.hex()})")
    if (header.groups, header.downsample) != (cfg.groups, cfg.downsample):
        raise CodecError("this .raq file's latent layout does not match the model")
    check_setting(cfg, header.codebook_sizes)
