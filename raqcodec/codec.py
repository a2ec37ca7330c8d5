"""The codec: image <-> .raq bytes, with rate control over the rate ladder of codebook sizes.

    image -> pad to f -> g_a -> z -> quantize stage by stage (codebook(eK_s) of each stage s, on the residual the
             earlier stages left) -> indices, one (G, h, w) grid per stage -> entropy coder -> header + payload
    bytes -> header checks -> entropy decoder -> indices -> sum of lookups in codebook(eK_s) -> g_s -> crop -> image

A SETTING is one eK per stage used, stage 1 first: (256,) or (4096, 64). A model with S stages has the rate
ladder: stage 1 alone at eK = min..max, then for s = 2..S the earlier stages at the largest eK and stage s at
eK = min..max (the settings the model was trained on; `ModelConfig.ladder`). The latent z is computed once per image; rate control
then only re-quantises and re-codes it per trial setting.
"""
from __future__ import annotations

import copy
import math
import os
from dataclasses import dataclass

import numpy as np
import torch
from PIL import Image

from raqcodec import bitstream, compatibility, entropy
from raqcodec.allocator import image_memory
from raqcodec.errors import CodecError
from raqcodec.image_io import load_image, pad_to_multiple, to_pil, to_tensor, to_uint8
from raqcodec.modelfile import cached_model, fingerprint, resolve_device
from raqcodec.models import RAQVAE
from raqcodec.tiling import analysis_tiled, synthesis_tiled


def get_model(model: RAQVAE | str | os.PathLike | None, device: str = "auto") -> RAQVAE:
    """A model instance: given, or loaded (and kept in memory) from a path, or the shipped default.

    A given instance stays on its own device with device "auto"; an explicit "cpu" or "cuda" moves it there
    (in place, as nn.Module.to does). It is put in eval mode.
    """
    if isinstance(model, RAQVAE):
        dev = model.base.embed.device if device == "auto" else resolve_device(device)
        return model.to(dev).eval() if model.training or model.base.embed.device != dev else model
    return cached_model(None if model is None else os.fspath(model), str(resolve_device(device)))


def model_fingerprint(model: RAQVAE) -> bytes:
    """fingerprint(model), computed once per model instance."""
    if getattr(model, "_fingerprint", None) is None:
        model._fingerprint = fingerprint(model)
    return model._fingerprint


def exact_decoder(model: RAQVAE) -> RAQVAE:
    """A float64 copy of the model (codebook generation and synthesis), made once per model instance, that reads
    the float32 model's files: decompress(exact=True). Float32 decoding may differ by one level of 255 on a few
    pixels between machines, thread counts and CPU/GPU; float64 rounding errors are about 1e-16 of a level's
    width, so the pixels agree wherever they were measured (docs/FORMAT.md, Conformance), at about 3-4x the
    CPU decoding time."""
    cached = model.__dict__.pop("_exact_decoder", None)  # a plain attribute: not a submodule, not in state_dict
    if cached is None or cached.base.embed.device != model.base.embed.device:
        cached = copy.deepcopy(model).double()
        cached._fingerprint = model_fingerprint(model)
    model.__dict__["_exact_decoder"] = cached
    return cached


@dataclass
class Latent:
    """An image analysed once: z (1, d, h, w) plus what the header needs."""

    z: torch.Tensor
    width: int
    height: int
    color_mode: int


Setting = tuple[int, ...]


def as_setting(codebook_size: int | tuple[int, ...] | list[int] | str) -> Setting:
    """A setting from an eK (512), one eK per stage ((4096, 64)), or a label ("4096+64")."""
    if isinstance(codebook_size, str):
        try:
            return tuple(int(part) for part in codebook_size.split("+"))
        except ValueError:
            raise CodecError(f"codebook size {codebook_size!r} is not an integer or eK+eK+...") from None
    if isinstance(codebook_size, (int, np.integer)) and not isinstance(codebook_size, bool):
        return (int(codebook_size),)
    if isinstance(codebook_size, (tuple, list)) and codebook_size and \
            all(isinstance(v, (int, np.integer)) and not isinstance(v, bool) for v in codebook_size):
        return tuple(int(v) for v in codebook_size)
    raise CodecError(f"codebook size must be an integer or one integer per stage, got {codebook_size!r}")


def setting_label(setting: Setting) -> str:
    """'256' for one stage, '4096+64' for two."""
    return "+".join(str(size) for size in setting)


def check_setting(model: RAQVAE, setting: Setting) -> None:
    """CodecError unless the model has that many stages and every eK is in its range."""
    compatibility.check_setting(model.cfg, setting)


ENTROPY_MODELS = (entropy.UNIFORM, entropy.ADAPTIVE, entropy.CONTEXT)
"""Entropy models the writer chooses from by default."""
FORMAT_1_CODER = (entropy.UNIFORM, entropy.ADAPTIVE)
"""The entropy models of format version 1 (with nearest-codeword indices: the coder before entropy model 2)."""


@dataclass
class Encoded:
    """One encode: the .raq bytes, its header and the index grids it carries (one (G, h, w) int32 per stage)."""

    data: bytes
    header: bitstream.Header
    indices: list[np.ndarray]

    @property
    def setting(self) -> Setting:
        return self.header.codebook_sizes

    @property
    def bpp(self) -> float:
        """Whole-file bits per pixel."""
        return len(self.data) * 8 / (self.header.width * self.header.height)


@torch.no_grad()
def analyse(model: RAQVAE, image) -> Latent:
    """Load an image (path, PIL image or array) and compute its latent once."""
    return analyse_pixels(model, *load_image(image))


def analyse_pixels(model: RAQVAE, pixels: np.ndarray, color_mode: int) -> Latent:
    """The latent of loaded pixels (H, W, 3) uint8 (load_image's output)."""
    height, width = pixels.shape[:2]
    x = pad_to_multiple(to_tensor(pixels), model.cfg.downsample).to(model.base.embed.device)
    return Latent(analysis_tiled(model, x), width, height, color_mode)


PrefixCache = dict[Setting, tuple[list[torch.Tensor], torch.Tensor]]
"""Setting prefix -> (index tensors (1, G, h, w) of its stages, the residual they leave), for one latent."""


@torch.no_grad()
def quantize_latent(model: RAQVAE, latent: Latent, setting: Setting, tables: list[torch.Tensor],
                    cache: PrefixCache | None = None) -> list[np.ndarray]:
    """One (G, h, w) int32 index grid per stage of the setting. With a cache, the stages of a prefix already
    quantised for this latent (rate control tries many settings that share stage 1) are taken from it."""
    done = max((n for n in range(len(setting), 0, -1) if cache is not None and setting[:n] in cache), default=0)
    grids, residual = (list(cache[setting[:done]][0]), cache[setting[:done]][1]) if done else ([], latent.z)
    for stage, (idx, residual) in enumerate(model.iter_stages(residual, tables[done:]), done):
        grids.append(idx)
        if cache is not None:
            cache[setting[:stage + 1]] = (list(grids), residual)
    return [idx[0].cpu().numpy().astype(np.int32) for idx in grids]


def _index_tensors(indices: list[np.ndarray], device: torch.device) -> list[torch.Tensor]:
    """One (G, h, w) index grid per stage -> (1, G, h, w) int64 tensors on `device`."""
    return [torch.from_numpy(grid.astype(np.int64)).unsqueeze(0).to(device) for grid in indices]


def encode_latent(model: RAQVAE, latent: Latent, codebook_size: int | Setting,
                  codebooks: list[torch.Tensor] | None = None, cache: PrefixCache | None = None,
                  entropy_models: tuple[int, ...] = ENTROPY_MODELS) -> Encoded:
    """Quantise a latent with one codebook(eK_s) per stage of the setting (or the given (G, eK_s, dg) tables),
    nearest codeword, and write the whole .raq file. cache: see quantize_latent (only with the model's own
    codebooks). entropy_models: the ids the writer may choose from (FORMAT_1_CODER: the format-1 coder)."""
    setting = as_setting(codebook_size)
    check_setting(model, setting)
    tables = model.codebooks(setting) if codebooks is None else codebooks
    indices = quantize_latent(model, latent, setting, tables, cache if codebooks is None else None)
    return write_file(model, latent, setting, indices, entropy_models)


@dataclass
class CodingPlan:
    """How write_file codes a setting's index grids: the entropy model (among those allowed) of smallest ideal
    code length, its parameter symbol per (stage, group), and that ideal code length in bits (the payload
    before the range coder's word rounding and termination)."""

    entropy_model: int
    choices: list[int]
    ideal_bits: float


def plan_coding(setting: Setting, indices: list[np.ndarray],
                entropy_models: tuple[int, ...] = ENTROPY_MODELS) -> CodingPlan:
    """The CodingPlan of one (G, h, w) index grid per stage of the setting."""
    return CodingPlan(*entropy.plan_payload(indices, list(setting), entropy_models))


def file_header(model: RAQVAE, latent: Latent, setting: Setting, entropy_model: int,
                payload_length: int) -> bitstream.Header:
    """The header of the file that codes the latent at this setting with this entropy model."""
    cfg = model.cfg
    return bitstream.Header(
        model_fingerprint=model_fingerprint(model), width=latent.width, height=latent.height,
        color_mode=latent.color_mode, codebook_size=setting[0], groups=cfg.groups,
        downsample=cfg.downsample, entropy_model=entropy_model, payload_length=payload_length,
        residual_sizes=setting[1:])


def write_file(model: RAQVAE, latent: Latent, setting: Setting, indices: list[np.ndarray],
               entropy_models: tuple[int, ...] = ENTROPY_MODELS, plan: CodingPlan | None = None) -> Encoded:
    """Entropy-code one (G, h, w) index grid per stage of the setting into a whole .raq file, with the entropy
    model (among entropy_models) of smallest ideal code length: `plan`, when it was made already."""
    plan = plan_coding(setting, indices, entropy_models) if plan is None else plan
    payload = entropy.encode_stages(indices, list(setting), plan.entropy_model, plan.choices)
    header = file_header(model, latent, setting, plan.entropy_model, len(payload))
    return Encoded(bitstream.pack(header, payload), header, indices)


def encode(image, *, bpp: float | None = None, codebook_size: int | Setting | str | None = None,
           psnr: float | None = None, model: RAQVAE | str | os.PathLike | None = None,
           device: str = "auto") -> Encoded:
    """compress() with the details: the Encoded record (bytes, header, indices)."""
    if sum(arg is not None for arg in (bpp, codebook_size, psnr)) != 1:
        raise CodecError("give exactly one of bpp, codebook_size or psnr")
    if bpp is not None and not (math.isfinite(bpp) and bpp > 0):
        raise CodecError(f"bpp must be a positive number, got {bpp}")
    net = get_model(model, device)
    pixels, color_mode = load_image(image)
    with image_memory(pixels.shape[0] * pixels.shape[1]):
        latent = analyse_pixels(net, pixels, color_mode)
        if codebook_size is not None:
            return encode_latent(net, latent, as_setting(codebook_size))
        if psnr is not None:
            from raqcodec.quality import choose_for_psnr  # imports this module

            return choose_for_psnr(net, latent, pixels, float(psnr))
        from raqcodec.ratecontrol import choose_setting  # imports this module

        return choose_setting(net, latent, float(bpp))


def compress(image, *, bpp: float | None = None, codebook_size: int | Setting | str | None = None,
             psnr: float | None = None, model: RAQVAE | str | os.PathLike | None = None,
             device: str = "auto") -> bytes:
    """Encode an image (path, PIL image, or HxWx3 uint8 array) to .raq bytes.

    Give exactly one of: bpp, a target of whole-file bits per pixel (the best quality that fits, by rate
    control); codebook_size, a fixed setting: an eK (stage 1 alone), one eK per stage such as (4096, 64), or
    "4096+64"; psnr, a quality target in dB (the smallest file whose decoded PSNR reaches it; the encoder
    decodes its candidates). model: a RAQVAE, a model-file path, or None for the shipped model.
    """
    return encode(image, bpp=bpp, codebook_size=codebook_size, psnr=psnr, model=model, device=device).data


def read_header(data: bytes) -> bitstream.Header:
    """The header of .raq bytes, validated (CodecError when it is not a valid .raq header)."""
    return bitstream.read_header(bytes(data))


def check_compatible(model: RAQVAE, header: bitstream.Header) -> None:
    """CodecError unless the file was written by this model."""
    compatibility.check_header(model.cfg, model_fingerprint(model), header)


@torch.no_grad()
def reconstruct(model: RAQVAE, indices: list[np.ndarray], codebook_size: int | Setting, width: int, height: int,
                codebooks: list[torch.Tensor] | None = None) -> np.ndarray:
    """One index grid (G, h, w) per stage -> decoded pixels (height, width, 3) uint8, with codebook(eK_s) of
    each stage or the given tables."""
    tables = model.codebooks(as_setting(codebook_size)) if codebooks is None else codebooks
    x_hat = synthesis_tiled(model, model.dequantize_stages(_index_tensors(indices, tables[0].device), tables))
    return to_uint8(x_hat[:, :, :height, :width])


def decompress(data: bytes, *, model: RAQVAE | str | os.PathLike | None = None, device: str = "auto",
               exact: bool = False) -> Image.Image:
    """Decode .raq bytes to a PIL image (RGB, or L for a greyscale source). CodecError for any bad input.

    exact: decode in float64 (exact_decoder), for the same pixels on every machine and device."""
    if not isinstance(data, (bytes, bytearray, memoryview)):
        raise CodecError("decompress expects bytes")
    header, payload = bitstream.unpack(bytes(data))
    net = get_model(model, device)
    check_compatible(net, header)
    if exact:
        net = exact_decoder(net)
    with image_memory(header.width * header.height):
        indices = entropy.decode_stages(payload, header.latent_shape, list(header.codebook_sizes),
                                        header.entropy_model)
        pixels = reconstruct(net, indices, header.codebook_sizes, header.width, header.height)
    return to_pil(pixels, header.color_mode)
