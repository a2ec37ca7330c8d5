"""The codec: image <-> .raq bytes, with rate control over the adapted codebook size eK.

    image -> pad to f -> g_a -> z -> quantize(codebook(eK)) -> indices (G, h, w) -> entropy coder -> header + payload
    bytes -> header checks -> entropy decoder -> indices -> lookup(codebook(eK)) -> g_s -> crop -> image

The latent z is computed once per image; rate control then only re-quantises and re-codes it per trial eK.
"""
from __future__ import annotations

import math
import os
import warnings
from dataclasses import dataclass

import numpy as np
import torch
from PIL import Image

from raqcodec import bitstream, entropy
from raqcodec.errors import CodecError
from raqcodec.image_io import load_image, pad_to_multiple, to_pil, to_tensor, to_uint8
from raqcodec.modelfile import cached_model, fingerprint, resolve_device
from raqcodec.models import RAQVAE
from raqcodec.tiling import analysis_tiled, synthesis_tiled


def get_model(model: RAQVAE | str | os.PathLike | None, device: str = "auto") -> RAQVAE:
    """A model instance: given, or loaded (and kept in memory) from a path, or the shipped default."""
    dev = resolve_device(device)
    if isinstance(model, RAQVAE):
        return model.to(dev).eval() if model.training or model.base.embed.device != dev else model
    return cached_model(None if model is None else os.fspath(model), str(dev))


def model_fingerprint(model: RAQVAE) -> bytes:
    """fingerprint(model), computed once per model instance."""
    if getattr(model, "_fingerprint", None) is None:
        model._fingerprint = fingerprint(model)
    return model._fingerprint


@dataclass
class Latent:
    """An image analysed once: z (1, d, h, w) plus what the header needs."""

    z: torch.Tensor
    width: int
    height: int
    color_mode: int


@dataclass
class Encoded:
    """One encode: the .raq bytes, its header and the indices (G, h, w) int32 it carries."""

    data: bytes
    header: bitstream.Header
    indices: np.ndarray

    @property
    def bpp(self) -> float:
        """Whole-file bits per pixel."""
        return len(self.data) * 8 / (self.header.width * self.header.height)


@torch.no_grad()
def analyse(model: RAQVAE, image) -> Latent:
    """Load an image (path, PIL image or array) and compute its latent once."""
    pixels, color_mode = load_image(image)
    height, width = pixels.shape[:2]
    x = pad_to_multiple(to_tensor(pixels), model.cfg.downsample).to(model.base.embed.device)
    return Latent(analysis_tiled(model, x), width, height, color_mode)


def encode_latent(model: RAQVAE, latent: Latent, codebook_size: int, codebook: torch.Tensor | None = None) -> Encoded:
    """Quantise a latent with codebook(eK) (or the given (G, eK, dg) table) and write the whole .raq file."""
    cfg = model.cfg
    if not cfg.min_codebook_size <= codebook_size <= cfg.max_codebook_size:
        raise CodecError(f"codebook size {codebook_size} is outside the model's range "
                         f"{cfg.min_codebook_size}..{cfg.max_codebook_size}")
    table = model.codebook(codebook_size) if codebook is None else codebook
    indices = model.quantize(latent.z, table)[0].cpu().numpy().astype(np.int32)
    entropy_model = entropy.choose_entropy_model(indices, codebook_size)
    payload = entropy.encode_indices(indices, codebook_size, entropy_model)
    header = bitstream.Header(
        model_fingerprint=model_fingerprint(model), width=latent.width, height=latent.height,
        color_mode=latent.color_mode, codebook_size=codebook_size, groups=cfg.groups,
        downsample=cfg.downsample, entropy_model=entropy_model, payload_length=len(payload))
    return Encoded(bitstream.pack(header, payload), header, indices)


def choose_codebook_size(model: RAQVAE, latent: Latent, bpp: float) -> Encoded:
    """The encode with the LARGEST eK whose whole file is <= bpp bits per pixel (real trial encodes).

    File size grows with eK but not strictly (each eK has its own generated codebook), so a binary search
    brackets a boundary, then probes 2 to 20% above it look for a larger eK that still fits; when one does,
    the search resumes above it. A target below the smallest file is a CodecError naming the smallest
    achievable bpp; a target above the largest file gives the largest eK with a warning.
    """
    cfg = model.cfg
    trials: dict[int, Encoded] = {}

    def fits(size: int) -> bool:
        if size not in trials:
            trials[size] = encode_latent(model, latent, size)
        return trials[size].bpp <= bpp

    lo, hi = cfg.min_codebook_size, cfg.max_codebook_size
    if not fits(lo):
        raise CodecError(f"target {bpp:g} bpp is below the smallest achievable rate for this image, "
                         f"{trials[lo].bpp:.4f} bpp (eK={lo})")
    if fits(hi):
        if trials[hi].bpp < bpp:
            warnings.warn(f"target {bpp:g} bpp is above the model's largest rate for this image; "
                          f"using the largest codebook eK={hi} ({trials[hi].bpp:.4f} bpp)", stacklevel=3)
        return trials[hi]
    while True:
        while hi - lo > 1:  # invariant: lo fits, hi does not
            mid = (lo + hi) // 2
            lo, hi = (mid, hi) if fits(mid) else (lo, mid)
        probes = sorted({min(round(lo * f), cfg.max_codebook_size - 1) for f in (1.02, 1.05, 1.1, 1.2)} - {lo})
        above = [size for size in probes if size > lo and fits(size)]
        if not above:
            return trials[lo]
        lo = max(above)
        hi = min(size for size, enc in trials.items() if size > lo and enc.bpp > bpp)


def encode(image, *, bpp: float | None = None, codebook_size: int | None = None,
           model: RAQVAE | str | os.PathLike | None = None, device: str = "auto") -> Encoded:
    """compress() with the details: the Encoded record (bytes, header, indices)."""
    if (bpp is None) == (codebook_size is None):
        raise CodecError("give exactly one of bpp or codebook_size")
    if bpp is not None and not (math.isfinite(bpp) and bpp > 0):
        raise CodecError(f"bpp must be a positive number, got {bpp}")
    net = get_model(model, device)
    latent = analyse(net, image)
    if codebook_size is not None:
        return encode_latent(net, latent, int(codebook_size))
    return choose_codebook_size(net, latent, float(bpp))


def compress(image, *, bpp: float | None = None, codebook_size: int | None = None,
             model: RAQVAE | str | os.PathLike | None = None, device: str = "auto") -> bytes:
    """Encode an image (path, PIL image, or HxWx3 uint8 array) to .raq bytes.

    bpp: target whole-file bits per pixel (the largest eK that fits is chosen); codebook_size: a fixed eK.
    Give exactly one. model: a RAQVAE, a model-file path, or None for the shipped model.
    """
    return encode(image, bpp=bpp, codebook_size=codebook_size, model=model, device=device).data


def read_header(data: bytes) -> bitstream.Header:
    """The header of .raq bytes, validated (CodecError when it is not a valid .raq header)."""
    return bitstream.read_header(bytes(data))


def check_compatible(model: RAQVAE, header: bitstream.Header) -> None:
    """CodecError unless the file was written by this model."""
    cfg = model.cfg
    if header.model_fingerprint != model_fingerprint(model):
        raise CodecError("this .raq file was written with a different model "
                         f"(fingerprint {header.model_fingerprint.hex()}, model has {model_fingerprint(model).hex()})")
    if (header.groups, header.downsample) != (cfg.groups, cfg.downsample):
        raise CodecError("this .raq file's latent layout does not match the model")
    if not cfg.min_codebook_size <= header.codebook_size <= cfg.max_codebook_size:
        raise CodecError(f"codebook size {header.codebook_size} is outside the model's range")


@torch.no_grad()
def reconstruct(model: RAQVAE, indices: np.ndarray, codebook_size: int, width: int, height: int,
                codebook: torch.Tensor | None = None) -> np.ndarray:
    """Indices (G, h, w) -> decoded pixels (height, width, 3) uint8, with codebook(eK) or the given table."""
    codebook = model.codebook(codebook_size) if codebook is None else codebook
    idx = torch.from_numpy(indices.astype(np.int64)).unsqueeze(0).to(codebook.device)
    x_hat = synthesis_tiled(model, model.dequantize(idx, codebook))
    return to_uint8(x_hat[:, :, :height, :width])


def decompress(data: bytes, *, model: RAQVAE | str | os.PathLike | None = None, device: str = "auto") -> Image.Image:
    """Decode .raq bytes to a PIL image (RGB, or L for a greyscale source). CodecError for any bad input."""
    if not isinstance(data, (bytes, bytearray, memoryview)):
        raise CodecError("decompress expects bytes")
    header, payload = bitstream.unpack(bytes(data))
    net = get_model(model, device)
    check_compatible(net, header)
    indices = entropy.decode_indices(payload, header.latent_shape, header.codebook_size, header.entropy_model)
    pixels = reconstruct(net, indices, header.codebook_size, header.width, header.height)
    return to_pil(pixels, header.color_mode)
