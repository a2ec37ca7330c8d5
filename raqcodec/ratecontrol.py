"""Rate control: for a target in bits per pixel, the encode of best quality whose WHOLE file fits.

An operating point is (setting, strength m). The setting is one eK per stage (see codec.py); the strength
says how the encoder picks indices. m = 0 is the nearest codeword. m > 0 is entropy-constrained VQ: every
stage takes, per latent vector, the codeword minimising

    squared error + lam * bits,    lam = m * (that stage's mean squared error per latent element under
                                             nearest-codeword quantisation)

(`quantizer.entropy_constrained_indices`). So m is a dimensionless exchange rate: m = 1 trades one bit for
the mean error of one latent element. Only the encoder changes; any decoder reads the files.

Search (`choose_setting`):
1. A binary search with nearest codewords on predicted sizes finds the highest setting L that fits on a
   coarse rate ladder (eK = 2, 3, 4, 6, 8, 12, ... per stage).
2. A few larger settings are then coded rate-aware, each at the smallest m whose file fits (bisection on
   log m): the same stage at 4, 16 and 64 x L's eK (at most the largest eK), and, near the top of a stage,
   the next stage at eK 256 and 4096 (`candidate_settings`). Measured on BSDS500 validation photos, large codebooks
   coded with a strong m beat nearest coding with a small codebook at equal rate.
3. The encode with the lowest latent error wins (quality judged in the latent: the encoder does not decode),
   among those of at least RATE_WINDOW x the target when there are any.

A target below the ladder's smallest file is still met when the smallest setting coded at STRENGTH_MAX
fits; otherwise it is a CodecError naming the smallest achievable bpp. A target above the largest file gives
the largest setting with a warning.
"""
from __future__ import annotations

import warnings

import numpy as np
import torch

from raqcodec import entropy
from raqcodec.bitstream import CRC_SIZE, HEADER_SIZE
from raqcodec.codec import (Encoded, Latent, PrefixCache, Setting, _index_tensors, check_setting, quantize_latent,
                            setting_label, write_file)
from raqcodec.errors import CodecError
from raqcodec.models import RAQVAE
from raqcodec.models.quantizer import (entropy_constrained_indices, lookup, merge_groups, nearest_candidates,
                                       split_groups)

CANDIDATES = 64  # nearest codewords among which entropy-constrained VQ chooses
PASSES = 4  # re-estimations of the code lengths in entropy-constrained VQ
STRENGTH_MIN, STRENGTH_MAX = 1e-4, 300.0  # range of m searched (the file shrinks little beyond STRENGTH_MAX)
SEARCH_STEPS = 8  # bisection steps on log m, on predicted sizes
REAL_SEARCH_STEPS = 4  # further steps on real files when the predicted picks overshoot
CALIBRATIONS = 2  # predicted bisections, each followed by a real file that recalibrates the prediction
PREFIX_STRENGTH = 3.0  # strength m of the stages before the last (only the last stage's m is searched)
RATE_WINDOW = 0.9  # options under this fraction of the target are used only when no other option fits
LARGER_FACTORS = (4, 16, 64)  # eK ratios (capped at the largest eK) of the rate-aware candidates in the pick's stage


@torch.no_grad()
def latent_error(model: RAQVAE, latent: Latent, setting: Setting, indices: list[np.ndarray]) -> float:
    """Mean squared error between the latent z and the sum of the stages' chosen codewords (latent units)."""
    tables = model.codebooks(setting)
    return float(((model.dequantize_stages(_index_tensors(indices, tables[0].device), tables) - latent.z) ** 2).mean())


CandidateCache = dict[tuple[Setting, float | None], tuple[torch.Tensor, torch.Tensor]]
"""(setting prefix up to stage s, strength of the stages before s or None for stage 1) -> nearest_candidates of
stage s's input, for one latent: rate control's candidate settings share stages."""


class RateAwareQuantizer:
    """One latent and one setting, its LAST stage quantised at any strength m (see the module docstring).

    The earlier stages are quantised once, at strength `prefix_strength`, and the last stage's nearest
    candidates are computed once (or taken from `cache`), so a call costs only the entropy-constrained choice.
    """

    def __init__(self, model: RAQVAE, latent: Latent, setting: Setting, prefix_strength: float = 0.0,
                 cache: CandidateCache | None = None) -> None:
        check_setting(model, setting)
        self.model, self.latent, self.setting = model, latent, setting
        self.tables = model.codebooks(setting)
        _, _, self.height, self.width = latent.z.shape
        cache = {} if cache is None else cache
        residual, self.prefix = latent.z, []
        for stage, table in enumerate(self.tables):
            key = (setting[:stage + 1], prefix_strength if stage else None)
            if key not in cache:
                cache[key] = nearest_candidates(split_groups(residual, model.cfg.groups), table, CANDIDATES)
            if stage == len(self.tables) - 1:
                self.last = cache[key]
                break
            idx = self._choose(cache[key], table, prefix_strength)
            self.prefix.append(self._grid(idx))
            residual = residual - merge_groups(lookup(idx, table), 1, self.height, self.width)

    def _choose(self, candidates: tuple[torch.Tensor, torch.Tensor], table: torch.Tensor, strength: float) -> torch.Tensor:
        dist, cand = candidates
        lam = strength * float(dist[..., 0].mean()) / self.model.cfg.group_dim
        return entropy_constrained_indices(dist, cand, table.shape[1], lam, PASSES)

    def _grid(self, idx: torch.Tensor) -> np.ndarray:
        return idx.reshape(self.model.cfg.groups, self.height, self.width).cpu().numpy().astype(np.int32)

    @torch.no_grad()
    def indices(self, strength: float) -> list[np.ndarray]:
        """One (G, h, w) int32 index grid per stage, the last at strength m."""
        return [*self.prefix, self._grid(self._choose(self.last, self.tables[-1], strength))]

    @torch.no_grad()
    def order0_bpp(self, strength: float) -> float:
        """A fast size proxy at strength m, in bits per pixel: the empirical order-0 entropy of every stage's
        indices per group, plus the container and coder overhead (fit_rate_aware scales it to real sizes)."""
        if not hasattr(self, "_prefix_bits"):
            self._prefix_bits = sum(_order0_bits(torch.from_numpy(grid.reshape(grid.shape[0], -1).astype(np.int64)),
                                                 size) for grid, size in zip(self.prefix, self.setting))
        last = _order0_bits(self._choose(self.last, self.tables[-1], strength), self.setting[-1])
        return (self._prefix_bits + last + 8 * _overhead_bytes(self.setting)) / (self.latent.width * self.latent.height)

    def encode(self, strength: float) -> Encoded:
        return write_file(self.model, self.latent, self.setting, self.indices(strength))


def _order0_bits(indices: torch.Tensor, size: int) -> float:
    """Sum over groups of n * H(empirical distribution) for indices (G, n) into `size` codewords, in bits."""
    counts = torch.zeros(indices.shape[0], size, device=indices.device).scatter_add_(
        1, indices, torch.ones_like(indices, dtype=torch.float32))
    n = float(indices.shape[1])
    return float(indices.shape[0] * n * np.log2(n) - (counts * torch.log2(counts.clamp_min(1.0))).sum())


def estimated_bpp(latent: Latent, setting: Setting, grids: list[np.ndarray]) -> float:
    """Whole-file bpp predicted without coding: the ADAPTIVE model's ideal code length plus header, checksum
    and 8 bytes of coder termination. The writer picks the smallest model, so the real file is rarely larger."""
    bits = entropy.ideal_stage_bits(grids, list(setting), entropy.ADAPTIVE)
    return (bits + 8 * _overhead_bytes(setting)) / (latent.width * latent.height)


def _overhead_bytes(setting: Setting) -> int:
    """Bytes of a file beyond its ideal code length: header, stage extension, checksum, 8 of coder termination."""
    return HEADER_SIZE + 1 + 2 * (len(setting) - 1) + CRC_SIZE + 8


def fit_rate_aware(model: RAQVAE, latent: Latent, setting: Setting, bpp: float,
                   prefix_strength: float = 0.0, cache: CandidateCache | None = None) -> Encoded | None:
    """The setting coded at (about) the smallest strength m whose whole file is <= bpp; None if none is.

    Bisections on log m run on a fast size proxy (RateAwareQuantizer.order0_bpp) times the ratio real
    file / proxy of the last real file; a real file is written after each, CALIBRATIONS times, and the
    largest one that fits is returned. If none does, bisection continues on real files above the prediction.
    """
    quantizer = RateAwareQuantizer(model, latent, setting, prefix_strength, cache)
    floor = quantizer.encode(STRENGTH_MAX)
    if floor.bpp > bpp:
        return None
    fitting, last, last_strength = floor, floor, STRENGTH_MAX
    lo, hi = STRENGTH_MIN, STRENGTH_MAX
    for _ in range(CALIBRATIONS):
        scale = last.bpp / quantizer.order0_bpp(last_strength)
        lo, hi, pick = STRENGTH_MIN, STRENGTH_MAX, None  # invariant: hi fits (predicted)
        for _ in range(SEARCH_STEPS):
            mid = (lo * hi) ** 0.5
            if scale * quantizer.order0_bpp(mid) <= bpp:
                hi, pick = mid, mid
            else:
                lo = mid
        if pick is None:
            break
        last, last_strength = quantizer.encode(pick), pick
        if last.bpp <= bpp and (last.bpp > fitting.bpp or fitting is floor):
            fitting = last
    if fitting is not floor:
        return fitting
    lo, hi = hi, STRENGTH_MAX  # every prediction was optimistic: bisect on real files above it
    for _ in range(REAL_SEARCH_STEPS):
        mid = (lo * hi) ** 0.5
        trial = quantizer.encode(mid)
        if trial.bpp <= bpp:
            hi, fitting = mid, trial
        else:
            lo = mid
    return fitting


def candidate_settings(model: RAQVAE, pick: Setting) -> list[Setting]:
    """Settings above the nearest-codeword pick that rate-aware coding may bring under the target."""
    cfg = model.cfg
    largest = cfg.max_codebook_size
    *prefix, size = pick
    out = [(*prefix, min(size * factor, largest)) for factor in LARGER_FACTORS]
    if len(pick) < cfg.stages and size * LARGER_FACTORS[1] >= largest:
        out += [(*prefix, largest, 256), (*prefix, largest, largest)]
    return [s for s in dict.fromkeys(out) if s != pick]


def search_ladder(model: RAQVAE) -> list[Setting]:
    """The rate ladder at eK = 2^k and 3 * 2^(k-1) (2, 3, 4, 6, 8, 12, ...) per stage, within the model's range:
    fine enough for step 1, since the rate-aware candidates fill the gaps between its steps."""
    cfg = model.cfg
    sizes = sorted({n for k in range(1, 17) for n in (2 ** k, 3 * 2 ** (k - 1))
                    if cfg.min_codebook_size <= n <= cfg.max_codebook_size} | {cfg.min_codebook_size, cfg.max_codebook_size})
    return cfg.ladder(sizes)


def _nearest_pick(model: RAQVAE, latent: Latent, bpp: float) -> tuple[Encoded | None, Encoded, Encoded]:
    """(highest fitting nearest-codeword encode on the search ladder or None, smallest ladder encode, largest).

    A binary search on predicted sizes (estimated_bpp; file size grows along the ladder, nearly monotonically);
    the three files returned are real.
    """
    ladder = search_ladder(model)
    grids: dict[int, list[np.ndarray]] = {}
    prefixes: PrefixCache = {}

    def encoded(i: int) -> Encoded:
        return write_file(model, latent, ladder[i], grids[i])

    def fits(i: int) -> bool:
        if i not in grids:
            grids[i] = quantize_latent(model, latent, ladder[i], model.codebooks(ladder[i]), prefixes)
        return estimated_bpp(latent, ladder[i], grids[i]) <= bpp

    lo, hi = 0, len(ladder) - 1
    fits(lo)
    smallest = encoded(lo)
    if smallest.bpp > bpp:
        return None, smallest, smallest
    fits(hi)
    largest = encoded(hi)
    if largest.bpp <= bpp:
        return largest, smallest, largest
    if not fits(lo):
        return smallest, smallest, largest
    while hi - lo > 1:  # invariant: lo fits, hi does not
        mid = (lo + hi) // 2
        lo, hi = (mid, hi) if fits(mid) else (lo, mid)
    return encoded(lo), smallest, largest


def smallest_file(model: RAQVAE, latent: Latent) -> Encoded:
    """The smallest file rate control makes: the ladder's first setting at strength STRENGTH_MAX."""
    return RateAwareQuantizer(model, latent, model.cfg.ladder()[0]).encode(STRENGTH_MAX)


def choose_setting(model: RAQVAE, latent: Latent, bpp: float) -> Encoded:
    """The encode of lowest latent error among the nearest-codeword ladder pick and the rate-aware candidates
    whose whole file is <= bpp bits per pixel (module docstring)."""
    pick, smallest, largest = _nearest_pick(model, latent, bpp)
    if pick is largest and largest.bpp <= bpp:
        if largest.bpp < bpp:
            warnings.warn(f"target {bpp:g} bpp is above the model's largest rate for this image; using the "
                          f"largest setting eK={setting_label(largest.setting)} ({largest.bpp:.4f} bpp)", stacklevel=3)
        return largest
    base = pick.setting if pick is not None else smallest.setting
    options = [enc for enc in [pick] if enc is not None]
    cache: CandidateCache = {}
    for setting in ([base] if pick is None else []) + candidate_settings(model, base):
        enc = fit_rate_aware(model, latent, setting, bpp, PREFIX_STRENGTH, cache)
        if enc is not None:
            options.append(enc)
    if not options:
        floor = smallest_file(model, latent)
        raise CodecError(f"target {bpp:g} bpp is below the smallest achievable rate for this image, "
                         f"{floor.bpp:.4f} bpp (eK={setting_label(smallest.setting)})")
    in_window = [enc for enc in options if enc.bpp >= RATE_WINDOW * bpp] or options
    return min(in_window, key=lambda enc: latent_error(model, latent, enc.setting, enc.indices))
