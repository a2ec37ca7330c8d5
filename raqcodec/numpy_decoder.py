"""A .raq decoder in numpy, without torch: what `raq decompress` runs for one file on a CPU, where importing torch
alone took 3 s or more of a whole command on the project's 2-core machine.

It reads the model file itself (weightfile.py), generates the adapted codebooks with the same Seq2Seq LSTM as
models/generator.py, decodes the indices with the same integer entropy decoder as the torch path (entropy.py:
identical indices), and runs the synthesis transform of the GDN backbone (models/transforms.py) with
numpy_layers.py, tile by tile as tiling.py. Its float32 sums run in another order than torch's, so pixels may
differ from the torch decoder's by one level of 255 (docs/FORMAT.md, Conformance; tests compare them).
Only the "gdn" backbone is implemented; `supports` tells the caller when to use the torch decoder instead.
"""
from __future__ import annotations

import os
import sys

import numpy as np
from PIL import Image

from raqcodec import bitstream, entropy, numpy_layers
from raqcodec.compatibility import check_header
from raqcodec.errors import CodecError
from raqcodec.image_io import to_pil
from raqcodec.models.config import ModelConfig
from raqcodec.tile_grid import HALO, TILE, halo_box, tile_boxes
from raqcodec.weightfile import (DEFAULT_MODEL_PATH, WeightArray, check_model_payload, read_weight_file,
                                 state_fingerprint)


def cuda_may_be_present() -> bool:
    """Whether torch might find a GPU here, judged without importing it: on Linux, an NVIDIA or AMD (ROCm)
    driver's device files; macOS has no CUDA; elsewhere, assume it might."""
    if sys.platform.startswith("linux"):
        return any(os.path.exists(p) for p in ("/dev/nvidiactl", "/dev/nvidia0", "/proc/driver/nvidia", "/dev/kfd"))
    return sys.platform != "darwin"


def supports(cfg: ModelConfig) -> bool:
    """Whether this decoder implements the model's synthesis transform (the GDN backbone)."""
    return cfg.backbone == "gdn" and cfg.downsample >= 2 and cfg.downsample & (cfg.downsample - 1) == 0


def fingerprint(state: dict[str, WeightArray]) -> bytes:
    """modelfile.fingerprint of a state dict read by weightfile: the same bytes hashed in the same order."""
    return state_fingerprint((name, array.shape, array.torch_dtype, array) for name, array in state.items())


class _Generator:
    """models/generator.py's CodebookGenerator in eval mode: base (G, K, dg) -> adapted codebook (G, eK, dg)."""

    def __init__(self, cfg: ModelConfig, state: dict[str, np.ndarray], prefix: str) -> None:
        self.cfg = cfg
        self.weights = {name[len(prefix):]: array for name, array in state.items() if name.startswith(prefix)}

    def _lstm_layers(self, name: str) -> list[tuple[np.ndarray, np.ndarray, np.ndarray]]:
        w = self.weights
        return [(w[f"{name}.weight_ih_l{n}"], w[f"{name}.weight_hh_l{n}"],
                 w[f"{name}.bias_ih_l{n}"] + w[f"{name}.bias_hh_l{n}"]) for n in range(self.cfg.generator_layers)]

    def _size_embedding(self, size: int) -> np.ndarray:
        """size_embed(cfg.size_feature(eK)) (hid,), as CodebookGenerator."""
        w = self.weights
        u = np.array([[self.cfg.size_feature(size)]], dtype=np.float32)
        first = np.tanh(u @ w["size_embed.0.weight"].T + w["size_embed.0.bias"])
        return (first @ w["size_embed.2.weight"].T + w["size_embed.2.bias"])[0]

    def __call__(self, base: np.ndarray, size: int) -> np.ndarray:
        cfg, w = self.cfg, self.weights
        base_in = (base @ w["in_proj.weight"].T + w["in_proj.bias"]).transpose(1, 0, 2)  # (K, G, hid)
        _, state = numpy_layers.lstm(np.ascontiguousarray(base_in), self._lstm_layers("encoder"))
        k = base_in.shape[0]
        prev = np.arange(size) - 1
        use_code = (prev >= 0) & (prev % 2 == 0) & (prev // 2 < k) & cfg.cross_forcing
        from_codes = base_in[np.clip(prev // 2, 0, k - 1)]  # (eK, G, hid)
        from_positions = w["positions.weight"][np.maximum(prev, 0)][:, None, :]
        inputs = np.where(use_code[:, None, None], from_codes, from_positions).astype(np.float32)
        if cfg.condition_on_size:
            inputs += self._size_embedding(size)
        out, _ = numpy_layers.lstm(inputs, self._lstm_layers("decoder"), state)
        return np.ascontiguousarray((out @ w["out_proj.weight"].T + w["out_proj.bias"]).transpose(1, 0, 2))


def _gdn_parameters(state: dict[str, np.ndarray], prefix: str) -> tuple[np.ndarray, np.ndarray]:
    """(beta, gamma) of a GDN layer from its stored parameters: max(p, bound)^2 - pedestal (gdn.py's
    NonNegativeParametrizer)."""
    def effective(name: str) -> np.ndarray:
        bound = state[f"{prefix}{name}_reparam.lower_bound.bound"]
        return np.maximum(state[f"{prefix}{name}"], bound) ** 2 - state[f"{prefix}{name}_reparam.pedestal"]

    return effective("beta"), effective("gamma")


class NumpyDecoder:
    """A model's decoding half (codebooks and synthesis) in numpy, read from a model file."""

    def __init__(self, cfg: ModelConfig, state: dict[str, WeightArray]) -> None:
        if not supports(cfg):
            raise CodecError(f"the numpy decoder does not implement the {cfg.backbone!r} backbone")
        self.cfg = cfg
        self.fingerprint = fingerprint(state)
        self.state = state
        self.generators = [_Generator(cfg, state, "generator." if stage == 0 else
                                      f"residual_stages.{stage - 1}.generator.") for stage in range(cfg.stages)]
        self.bases = [state["base.embed" if stage == 0 else f"residual_stages.{stage - 1}.base.embed"]
                      for stage in range(cfg.stages)]
        steps = cfg.downsample.bit_length() - 1
        self.upsampling = [numpy_layers.TransposedConv(state[f"g_s.{2 + 2 * i}.weight"], state[f"g_s.{2 + 2 * i}.bias"],
                                                       _gdn_parameters(state, f"g_s.{3 + 2 * i}.") if i < steps - 1
                                                       else None) for i in range(steps)]
        self._codebooks: dict[tuple[int, int], np.ndarray] = {}

    @classmethod
    def load(cls, path: str | os.PathLike | None = None) -> NumpyDecoder | None:
        """From a model file (the shipped default when None); None when `supports` says no; CodecError when
        it is not a model file."""
        path = DEFAULT_MODEL_PATH if path is None else path
        payload = check_model_payload(read_weight_file(path), path)
        try:
            cfg = ModelConfig.from_dict(payload["config"])
            return cls(cfg, payload["state_dict"]) if supports(cfg) else None
        except (TypeError, KeyError, ValueError, AttributeError) as exc:  # a config or weights of another shape
            raise CodecError(f"not a raqcodec model file: {path} ({type(exc).__name__}: {exc})") from None

    def codebook(self, size: int, stage: int = 0) -> np.ndarray:
        """Stage `stage`'s adapted codebook (G, size, dg) float32, cached per (stage, size)."""
        if (stage, size) not in self._codebooks:
            with numpy_layers.single_threaded_blas():  # the same sums whatever the number of cores
                self._codebooks[stage, size] = self.generators[stage](self.bases[stage], size)
        return self._codebooks[stage, size]

    def latent(self, indices: list[np.ndarray], setting: tuple[int, ...]) -> np.ndarray:
        """One index grid (G, h, w) per stage -> z_q (h, w, d) channels-last: the sum of the stages' codewords."""
        g, h, w = indices[0].shape
        z = np.zeros((h, w, g, self.cfg.group_dim), dtype=np.float32)
        for stage, (grid, size) in enumerate(zip(indices, setting)):
            table = self.codebook(size, stage)
            for group in range(g):
                z[:, :, group] += table[group][grid[group]]
        return z.reshape(h, w, g * self.cfg.group_dim)

    def _synthesis(self, z: np.ndarray) -> np.ndarray:
        """g_s of the GDN backbone on z (h, w, d) -> x_hat - 0.5 (h*f, w*f, 3)."""
        s = self.state
        x = numpy_layers.pointwise_conv(z, s["g_s.0.weight"], s["g_s.0.bias"])
        y = numpy_layers.conv3x3(x, s["g_s.1.conv1.weight"], s["g_s.1.conv1.bias"])
        numpy_layers.leaky_relu(y.buffer)
        y = numpy_layers.conv3x3(y, s["g_s.1.conv2.weight"], s["g_s.1.conv2.bias"])
        numpy_layers.leaky_relu(y.buffer)
        y.buffer += x.buffer
        x = y
        for layer in self.upsampling[:-2]:
            x = layer(x)
        x = numpy_layers.upsample_pair(x, *self.upsampling[-2:]) if len(self.upsampling) >= 2 \
            else self.upsampling[0](x)
        return x.interior

    def synthesis(self, z: np.ndarray) -> np.ndarray:
        """z_q (h, w, d) -> x_hat (h*f, w*f, 3) float32, nominally in [0, 1], tile by tile as tiling.py."""
        h, w, _ = z.shape
        f = self.cfg.downsample
        if h <= TILE and w <= TILE:
            return self._synthesis(z) + np.float32(0.5)
        out = np.empty((h * f, w * f, 3), dtype=np.float32)
        for box in tile_boxes(h, w, TILE):
            y0, y1, x0, x1 = box
            ya, yb, xa, xb = halo_box(box, h, w, HALO)
            part = self._synthesis(z[ya:yb, xa:xb])
            out[y0 * f:y1 * f, x0 * f:x1 * f] = part[(y0 - ya) * f:(y1 - ya) * f, (x0 - xa) * f:(x1 - xa) * f]
        return out + np.float32(0.5)

    def decompress(self, data: bytes) -> Image.Image:
        """.raq bytes -> a PIL image (RGB, or L for a greyscale source); CodecError for any bad input."""
        if not isinstance(data, (bytes, bytearray, memoryview)):
            raise CodecError("decompress expects bytes")
        header, payload = bitstream.unpack(bytes(data))
        check_header(self.cfg, self.fingerprint, header)
        indices = entropy.decode_stages(payload, header.latent_shape, list(header.codebook_sizes),
                                        header.entropy_model)
        x_hat = self.synthesis(self.latent(indices, header.codebook_sizes))[:header.height, :header.width]
        np.clip(x_hat, 0.0, 1.0, out=x_hat)  # in place, as image_io.to_uint8: clamp, scale, round half to even
        x_hat *= np.float32(255.0)
        return to_pil(np.rint(x_hat, out=x_hat).astype(np.uint8), header.color_mode)
