"""Rate control: for a target in bits per pixel, the encode of best quality whose WHOLE file fits.

An operating point is (setting, strength m). The setting is one eK per stage (see codec.py); the strength
says how the encoder picks indices. m = 0 is the nearest codeword. m > 0 is entropy-constrained VQ: every
stage takes, per latent vector, the codeword minimising

    squared error + lam * bits,    lam = m * (that stage's mean squared error per latent element under
                                             nearest-codeword quantisation)

(`quantizer.entropy_constrained_indices`), bits under the entropy model the stage is written with: the CONTEXT
model's for eK <= entropy.CONTEXT_MAX_ALPHABET (`quantizer.context_bits`: the indices above and in the group
before as contexts), the order-0 adaptive model's above. So m is a dimensionless exchange rate: m = 1 trades one
bit for the mean error of one latent element. Only the encoder changes; any decoder reads the files.

Search (`choose_setting`). Sizes are predicted from symbol counts (`adaptive_bits`, a closed form). The files
that may be kept are planned (`Draft`: the entropy coder's choices and ideal code length, a file size known to a
few bytes, decided on the real file when that is too close to call), 3 on a typical image, and only the
chosen one is written:
1. A search with nearest codewords on predicted sizes finds the highest setting L that fits on a coarse
   rate ladder (eK = 2, 3, 4, 6, 8, 12, ... per stage; `_nearest_pick`); L's file is planned (option 1).
2. A few larger settings are coded rate-aware (`candidate_settings`): the same stage at 4 and 16 x L's eK (and 64 x
   in stage 2, in stage 1 only when no other file reaches the rate window; at most the largest eK), and, when L is at
   the top of a stage, the next stage at eK 256 and 4096. For each, a search on log m (the range's ends, then
   `_refine` from the last m found inside it) finds the smallest m whose PREDICTED file fits, and its latent error
   there, on a sample of the latent (`_sample`: a quarter of the positions, 4x fewer distance computations). Only the
   candidate of lowest predicted error is planned, first at the sample's m, then at the m `fit_rate_aware` finds on
   planned files, each search on the whole latent starting from the last file's m (`_refine`, secant steps on log m)
   (option 2; the next candidates too while the files fall under RATE_WINDOW x the target). A context-coded last
   stage (eK <= 1024) is then chosen again with the CONTEXT model's bits near that m (`_context_polish`, 1 or 3 planned
   files): on 12 Kodak images at 0.1 to 0.5 bpp, BD-rate -4.7 % against order-0 bits throughout (ad hoc, 2026-11-27).
   A multi-stage L whose nearest file does not fit, or the top of the ladder, is also tried with its earlier stages
   at nearest codewords (strength 0): rate-aware earlier stages alone can drop the file under the window.
   Measured on BSDS500 validation photos, large codebooks coded with a strong m beat nearest coding with a
   small codebook at equal rate, and writing only the predicted best candidate costs +0.08 % latent error
   against writing them all. A single candidate is coded without a preview. Stage 1 at the largest eK is
   quantised once, through its nearest candidates, for the ladder search, the rate-aware candidates and the
   previews' sample.
3. Of the options, the one with the lowest latent error wins (quality judged in the latent: the encoder does
   not decode), among those of at least RATE_WINDOW x the target when there are any, and is written.

A target below the ladder's smallest file is still met when the smallest setting coded at STRENGTH_MAX
fits; otherwise it is a CodecError naming the smallest achievable bpp. A target above the largest file gives
the largest setting with a warning.
"""
from __future__ import annotations

import functools
import math
import warnings

import numpy as np
import torch

from raqcodec import entropy
from raqcodec.bitstream import CRC_SIZE, HEADER_SIZE
from raqcodec.codec import (Encoded, Latent, PrefixCache, Setting, _index_tensors, check_setting, file_header,
                            plan_coding, quantize_latent, setting_label, write_file)
from raqcodec.errors import CodecError
from raqcodec.models import RAQVAE
from raqcodec.models.quantizer import (entropy_constrained_indices, lookup, merge_groups, nearest_candidates,
                                       split_groups)

# Nearest codewords among which entropy-constrained VQ chooses, in the files written. Measured on 8 Kodak images
# x 5 targets: 16 gives 0.03 dB less mean PSNR for 11 % less time, 64 0.02 dB more for 45 % more time.
CANDIDATES = 32
PREVIEW_CANDIDATES = 16  # the same on the latent's sample, which only ranks the candidate settings
# The same in a stage after the first at the largest eK, the costliest search (32 of 4096 per position), reached at
# the highest rates, where that stage's m is small. Against CANDIDATES there, on 12 Kodak images (odd numbers) and 16
# BSDS500 validation photos (0.1-1.2 bpp, decoded PSNR; ad hoc, 2026-12-05): 16 gave BD-rate +0.03 % and +0.01 %
# (-0.018 and -0.003 dB at 1.2 bpp), 8 +0.02 % and +0.02 % (-0.015 and -0.017 dB; files up to 0.3 % smaller);
# `--bpp` compress at 1.2 bpp (24 Kodak images, benchmarks/paired_speed.py, two rounds): 16 took 6 to 7 % less time
# than 32, 8 a further 5 % less. Only the targets that reach 4096+4096 changed. Fewer candidates in every stage after
# the first (16) cost -0.05 dB at 0.8 bpp on Kodak.
LARGEST_LATER_STAGE_CANDIDATES = 8
# Passes of entropy-constrained VQ: re-estimations of the code lengths, PASSES with order-0 lengths and then at most
# CONTEXT_PASSES with the CONTEXT model's. The context passes never reached a fixed point in 75 calls (8 Kodak
# images, 0.1 to 0.3 bpp). On 12 Kodak images (odd numbers) and 16 BSDS500 validation photos (targets 0.1-1.2 bpp,
# decoded PSNR; ad hoc, 2026-11-28), against 4 and 4: CONTEXT_PASSES 2 gave BD-rate +0.06 % and +0.28 % (3: -0.17 %
# and +0.17 %) with `--bpp` compress 9 / 7 / 6 % faster at 0.1 / 0.2 / 0.3 bpp (24 Kodak images,
# benchmarks/paired_speed.py, one round); PASSES 3 on top of that cost +0.57 % and +1.11 % more.
PASSES, CONTEXT_PASSES = 4, 2
STRENGTH_MIN, STRENGTH_MAX = 1e-4, 300.0  # range of m searched (the file shrinks little beyond STRENGTH_MAX)
SEARCH_STEPS = 8  # bisection steps on log m over the whole range, on predicted sizes; every search ends as fine
# _refine's searches from the last file's m: they stop at a predicted size within REFINE_TOLERANCE under the target;
# the first step follows the slope REFINE_SLOPE of log(predicted bpp) against log m, a step is at most ln SEARCH_SPAN
# long (or SEARCH_SPAN x the last step), and after REFINE_STEPS predictions the bracket left is bisected.
# REFINE_START is the m a search starts from when there is no file yet.
REFINE_TOLERANCE, REFINE_SLOPE, REFINE_START, REFINE_STEPS = 0.004, -0.15, 1.0, 6
SEARCH_SPAN = 4.0
REAL_SEARCH_STEPS = 4  # further steps on planned files (Draft) when the predicted picks miss the rate window
CALIBRATIONS = 3  # predicted searches, each followed by a planned file that recalibrates the prediction
CLOSE_ENOUGH = 0.98  # a fitting file of at least this fraction of the target ends the calibrations (and the polish)
PREFIX_STRENGTH = 3.0  # strength m of the stages before the last (only the last stage's m is searched)
POLISH_RANGE, POLISH_STEPS = 2.0, 2  # _context_polish's bisection: between m / POLISH_RANGE and m, this many steps
RATE_WINDOW = 0.9  # options under this fraction of the target are used only when no other option fits
SAMPLE_STRIDE = 2  # searches start on every 2nd latent row and column (`_sample`) ...
SAMPLE_MIN_POSITIONS = 2048  # ... of latents of at least this many positions (a 512x256 image)
# The ladder search on the sample first tries the one-stage setting of the largest eK up to FIRST_PROBE, so that a
# target below that setting's rate never quantises the sample at a larger eK.
FIRST_PROBE = 1024
# eK ratios (capped at the largest eK) of the rate-aware candidates in the pick's stage, for a one-stage pick and
# for a later stage's (candidate_settings), and of a one-stage pick's reserve candidate (reserve_settings)
FIRST_STAGE_FACTORS, LATER_STAGE_FACTORS, RESERVE_FACTOR = (4, 16), (4, 16, 64), 64
# A Draft's payload is estimated as its ideal code length plus PAYLOAD_SLACK_BITS. The real payload exceeded the
# ideal by 3.5 to 35.5 bits in the 80 files rate control wrote for 6 Kodak images x 4 targets (2026-11-27): 32-bit
# words and the range coder's termination. A draft whose estimate is within EXACT_MARGIN_BITS of a size it is
# compared with is written, so every comparison is decided on real sizes.
PAYLOAD_SLACK_BITS = 20.0
EXACT_MARGIN_BITS = 64.0


class Draft:
    """A file rate control may keep: the setting, its (G, h, w) index grids per stage and the coder's plan,
    written only when needed (`write`). Until then its size is estimated from the plan's ideal code length;
    comparisons of its size (`fits`, `larger_than`) write it when the estimate is too close to call, so they
    give the answers real files would. Planning a file costs a fraction of writing it (at eK 1024, on a
    Kodak latent: 20-37 ms against a further 86-117 ms to range-code it), and only the chosen file is written.
    """

    def __init__(self, model: RAQVAE, latent: Latent, setting: Setting, indices: list[np.ndarray]) -> None:
        self.model, self.latent, self.setting, self.indices = model, latent, setting, indices
        self.plan = plan_coding(setting, indices)
        header = file_header(model, latent, setting, self.plan.entropy_model, 0)
        self._estimated_bits = 8.0 * (header.header_size + CRC_SIZE) + self.plan.ideal_bits + PAYLOAD_SLACK_BITS
        self._encoded: Encoded | None = None

    @property
    def size_bits(self) -> float:
        """Bits of the whole file: exact once written, else estimated."""
        return self._estimated_bits if self._encoded is None else 8.0 * len(self._encoded.data)

    @property
    def bpp(self) -> float:
        """Whole-file bits per pixel (size_bits / pixels)."""
        return self.size_bits / (self.latent.width * self.latent.height)

    def write(self) -> Encoded:
        """The file, written once."""
        if self._encoded is None:
            self._encoded = write_file(self.model, self.latent, self.setting, self.indices, plan=self.plan)
        return self._encoded

    def _settle(self, bits: float) -> None:
        """Write the file if its estimated size is within EXACT_MARGIN_BITS of `bits`."""
        if self._encoded is None and abs(self.size_bits - bits) < EXACT_MARGIN_BITS:
            self.write()

    def fits(self, bpp: float) -> bool:
        """Whether the whole file is <= bpp bits per pixel."""
        self._settle(bpp * self.latent.width * self.latent.height)
        return self.bpp <= bpp

    def larger_than(self, other: Draft) -> bool:
        """Whether this file is larger than `other` (of the same image)."""
        if abs(self.size_bits - other.size_bits) < 2 * EXACT_MARGIN_BITS:
            self.write()
            other.write()
        return self.size_bits > other.size_bits


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
    candidates (`candidates` of them, LARGEST_LATER_STAGE_CANDIDATES in a later stage at the largest eK) are
    computed once (or taken from `cache`), so a call costs only the entropy-constrained choice.
    A quantiser of a `_sample` of the latent predicts sizes with the sample's weight (adaptive_bits).
    """

    def __init__(self, model: RAQVAE, latent: Latent, setting: Setting, prefix_strength: float = 0.0,
                 cache: CandidateCache | None = None, weight: float = 1.0, candidates: int = CANDIDATES) -> None:
        check_setting(model, setting)
        self.model, self.latent, self.setting, self.weight = model, latent, setting, weight
        self.tables = model.codebooks(setting)
        _, _, self.height, self.width = latent.z.shape
        cache = {} if cache is None else cache
        residual, prefix = latent.z, []
        for stage, table in enumerate(self.tables):
            key = (setting[:stage + 1], prefix_strength if stage else None)
            if key not in cache:
                largest_later = stage > 0 and table.shape[1] == model.cfg.max_codebook_size
                count = min(candidates, LARGEST_LATER_STAGE_CANDIDATES) if largest_later else candidates
                cache[key] = nearest_candidates(split_groups(residual, model.cfg.groups), table, count)
            if stage == len(self.tables) - 1:
                self.last = cache[key]
                break
            idx, _ = self._choose(cache[key], table, prefix_strength)
            prefix.append(idx)
            residual = residual - merge_groups(lookup(idx, table), 1, self.height, self.width)
        self.prefix = [self._grid(idx) for idx in prefix]
        self._prefix_bits = sum(adaptive_bits(idx, size, weight) for idx, size in zip(prefix, setting))
        self._points: dict[tuple[float, bool], tuple[torch.Tensor, float, float]] = {}

    @property
    def context_coded(self) -> bool:
        """Whether the last stage is written with the CONTEXT model (eK <= entropy.CONTEXT_MAX_ALPHABET)."""
        return self.setting[-1] <= entropy.CONTEXT_MAX_ALPHABET

    def _choose(self, candidates: tuple[torch.Tensor, torch.Tensor], table: torch.Tensor, strength: float,
                context: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
        """Entropy-constrained choice at strength m; with `context`, bits under the CONTEXT model, starting from
        `_context_start`."""
        dist, cand = candidates
        lam = strength * float(dist[..., 0].mean()) / self.model.cfg.group_dim
        grid = (self.height, self.width) if context else None
        start = self._context_start(strength) if context and candidates is self.last else None
        return entropy_constrained_indices(dist, cand, table.shape[1], lam, PASSES, grid, start, CONTEXT_PASSES)

    def _context_start(self, strength: float) -> torch.Tensor | None:
        """Last-stage indices (G, N) from which the context choice at m starts: the order-0 choice at m when it
        was computed (`_point`), else the context choice at the strength nearest m (on a log scale) already
        computed, else None (the order-0 passes at m run first).

        The second case is _context_polish's bisection. Starting there instead of from the order-0 choice at m
        saves its order-0 passes and gave better files: on 12 Kodak images (odd numbers) and 16 BSDS500
        validation photos at 0.1 to 1.2 bpp, BD-rate -1.84 % and -1.26 % (decoded PSNR; +0.06 to +0.12 dB at
        0.2 and 0.3 bpp, -0.02 to -0.04 dB at 0.1 bpp with files 1 % smaller), rate control 9 to 14 % faster
        at 0.1 bpp (ad hoc, 2026-11-28)."""
        order0 = self._points.get((strength, False))
        if order0 is not None:
            return order0[0]
        nearby = [m for m, context in self._points if context]
        if not nearby:
            return None
        return self._points[min(nearby, key=lambda m: abs(math.log(m / strength))), True][0]

    def _grid(self, idx: torch.Tensor) -> np.ndarray:
        return idx.reshape(self.model.cfg.groups, self.height, self.width).cpu().numpy().astype(np.int32)

    def _point(self, strength: float, context: bool = False) -> tuple[torch.Tensor, float, float]:
        """(last stage's indices (G, N), predicted payload bits, latent error) at strength m, computed once;
        with `context`, the last stage's bits are those of the CONTEXT model (context_coded settings only)."""
        if (strength, context) not in self._points:
            idx, sq_dist = self._choose(self.last, self.tables[-1], strength, context)
            bits = self._prefix_bits + adaptive_bits(idx, self.setting[-1], self.weight)
            error = float(sq_dist.mean()) / self.model.cfg.group_dim
            self._points[strength, context] = idx, bits, error
        return self._points[strength, context]

    @torch.no_grad()
    def indices(self, strength: float, context: bool = False) -> list[np.ndarray]:
        """One (G, h, w) int32 index grid per stage, the last at strength m."""
        return [*self.prefix, self._grid(self._point(strength, context)[0])]

    def predicted_bpp(self, strength: float, scale: float) -> float:
        """Whole-file bpp predicted at strength m: `scale` x adaptive_bits of every stage, plus the overhead."""
        return (scale * self._point(strength)[1] + 8 * _overhead_bytes(self.setting)) / (self.latent.width * self.latent.height)

    def payload_scale(self, draft: Draft, strength: float) -> float:
        """Payload bits of the file draft(strength) / its predicted bits (calibrates predicted_bpp)."""
        return _payload_bits(draft) / self._point(strength)[1]

    def error(self, strength: float, context: bool = False) -> float:
        """Mean squared latent error at strength m (latent units; = latent_error of the indices)."""
        return self._point(strength, context)[2]

    def draft(self, strength: float, context: bool = False) -> Draft:
        """The file of the setting at strength m, planned (not written)."""
        return Draft(self.model, self.latent, self.setting, self.indices(strength, context))


def adaptive_bits(indices: torch.Tensor, size: int, weight: float = 1.0) -> float:
    """Predicted code length in bits of indices (G, N) into `size` codewords, without coding; with weight w,
    of w x N indices whose counts are w x those of `indices` (a sample standing for a w times larger latent).

    Per group, the ideal code length of a sequential adaptive model with pseudo-count 1 and count increment
    inc, in closed form from the group's counts c_k (a Dirichlet(1/inc) mixture):
        log2 G(N + size/inc) - log2 G(size/inc) - sum_k [log2 G(c_k + 1/inc) - log2 G(1/inc)],  G = Gamma,
    at the best inc of entropy.INCREMENTS, plus the bits that signal inc. The ADAPTIVE model (tables updated
    in blocks) codes a little more, the CONTEXT model a few % less: callers scale it to real files.
    """
    groups, n = indices.shape
    counts = torch.zeros(groups, size, dtype=torch.int64, device=indices.device).scatter_add_(
        1, indices, torch.ones_like(indices))
    top = int(counts.max()) + 1
    offsets = top * torch.arange(groups, device=indices.device)[:, None]
    # repeats[g, c]: codewords that occur c times in group g; the sum over codewords runs once per distinct count
    repeats = torch.bincount((counts + offsets).reshape(-1), minlength=groups * top).reshape(groups, top)
    distinct = repeats.any(0).nonzero()[:, 0]
    a = 1.0 / torch.tensor(entropy.INCREMENTS, dtype=torch.float64, device=indices.device)[:, None]  # (I, 1)
    per_count = torch.lgamma(weight * distinct.to(torch.float64) + a) - torch.lgamma(a)  # (I, distinct counts)
    start = torch.lgamma(n * weight + size * a[:, 0]) - torch.lgamma(size * a[:, 0])  # (I,)
    nats = float((start - repeats[:, distinct].to(torch.float64) @ per_count.T).amin(1).sum())  # best inc per group
    return nats / math.log(2) + groups * math.log2(len(entropy.INCREMENTS))


def _grid_bits(grids: list[np.ndarray], setting: Setting, weight: float = 1.0) -> float:
    """adaptive_bits summed over one (G, h, w) index grid per stage."""
    return sum(adaptive_bits(torch.from_numpy(grid.reshape(grid.shape[0], -1).astype(np.int64)), size, weight)
               for grid, size in zip(grids, setting))


def _overhead_bytes(setting: Setting) -> int:
    """Bytes of a file beyond its payload's code length: header, stage extension, checksum, 8 of coder
    termination."""
    return HEADER_SIZE + 1 + 2 * (len(setting) - 1) + CRC_SIZE + 8


def _payload_bits(draft: Draft) -> float:
    """Bits of a whole file less _overhead_bytes: what adaptive_bits predicts."""
    return draft.size_bits - 8.0 * _overhead_bytes(draft.setting)


def _final_width() -> float:
    """Width on log m of the bracket SEARCH_STEPS bisection steps leave of the whole range: how fine every
    search of m ends."""
    return math.log(STRENGTH_MAX / STRENGTH_MIN) / 2 ** SEARCH_STEPS


def _bisect(quantizer: RateAwareQuantizer, bpp: float, scale: float,
            lo: float = STRENGTH_MIN, hi: float = STRENGTH_MAX) -> float | None:
    """About the smallest strength m in [lo, hi] whose predicted file is <= bpp, by bisection on log m down to
    _final_width(); None if even hi is predicted over. lo is taken to be over (or the range's bottom)."""
    if quantizer.predicted_bpp(hi, scale) > bpp:
        return None
    for _ in range(math.ceil(math.log2(max(math.log(hi / lo), _final_width()) / _final_width()))):  # hi fits
        mid = (lo * hi) ** 0.5
        lo, hi = (lo, mid) if quantizer.predicted_bpp(mid, scale) <= bpp else (mid, hi)
    return hi


def _refine(quantizer: RateAwareQuantizer, bpp: float, scale: float, start: float) -> float | None:
    """About the smallest strength m whose predicted file is <= bpp, searched from `start` (the last file's m):
    a strength predicted within REFINE_TOLERANCE under bpp, or the fitting end of a bracket no wider than
    _final_width() on log m, or STRENGTH_MIN; None if even STRENGTH_MAX is predicted over.

    The predicted size is smooth and decreasing in m, nearly linear in log m over a step, so the search runs on
    g(m) = log(predicted bpp / bpp) toward g = log(1 - REFINE_TOLERANCE / 2), the middle of the window:
    - until a strength over and one that fits are known, secant steps on log m (the first with slope
      REFINE_SLOPE), each at most ln SEARCH_SPAN long, or SEARCH_SPAN x the last step when that is longer, and
      cut at the range's ends;
    - then regula falsi inside the bracket, the Illinois variant (an end kept twice counts half).
    After REFINE_STEPS predictions it bisects what is left of the bracket (_bisect). It replaced a bisection
    around the last file's m (between m / 2 and 2 m, then down to the final width) and CALIBRATIONS went from 2
    to 3: whole-latent predictions per image (24 Kodak images, from _fit_order0) 4.8 / 2.9 / 3.4 / 1.8 / 3.8
    against 6.0 / 6.1 / 7.5 / 5.1 / 4.9 at 0.1 / 0.3 / 0.5 / 0.8 / 1.2 bpp; files closer to the target (0.4986
    against 0.4930 bpp at 0.5 bpp on 12 Kodak images, +0.025 dB) and BD-rate -0.00 % on those 12 Kodak images
    (odd numbers) and -0.03 % on 16 BSDS500 validation photos (targets 0.1-1.2 bpp, decoded PSNR; with FIRST_PROBE;
    ad hoc, 2026-12-05).
    """
    goal = math.log(1 - REFINE_TOLERANCE / 2)
    ends = (math.log(STRENGTH_MIN), math.log(STRENGTH_MAX))
    exact = {ends[0]: STRENGTH_MIN, ends[1]: STRENGTH_MAX}  # log m -> m, so that the ends hit cached points

    def gap(x: float) -> float:
        """g(m) - goal at x = log m: > 0 over bpp, <= 0 within the window's upper half or under it."""
        return math.log(quantizer.predicted_bpp(exact.setdefault(x, math.exp(x)), scale) / bpp) - goal

    def in_window(h: float) -> bool:
        return math.log(1 - REFINE_TOLERANCE) - goal <= h <= -goal

    x = min(max(math.log(start), ends[0]), ends[1])
    h = gap(x)
    over = fit = None  # (log m, gap) of the largest m over bpp and of the smallest m that fits
    slope, step, replaced = REFINE_SLOPE, 0.0, None  # replaced: the bracket's end the last step replaced
    predictions = 1
    while True:
        if in_window(h):
            return exact[x]
        if h > 0 and (over is None or x > over[0]):
            if over is not None and fit is not None and replaced == "over":
                fit = (fit[0], fit[1] / 2)  # Illinois: the fitting end stayed twice
            over, replaced = (x, h), "over"
        elif h <= 0 and (fit is None or x < fit[0]):
            if over is not None and fit is not None and replaced == "fit":
                over = (over[0], over[1] / 2)
            fit, replaced = (x, h), "fit"
        if fit is not None and fit[0] == ends[0]:
            return STRENGTH_MIN
        if over is not None and over[0] == ends[1]:
            return None
        bracketed = over is not None and fit is not None
        if bracketed and fit[0] - over[0] <= _final_width():
            return exact[fit[0]]
        if predictions > REFINE_STEPS:
            break
        if bracketed:
            new = over[0] - over[1] * (fit[0] - over[0]) / (fit[1] - over[1])
            inset = 0.01 * (fit[0] - over[0])
            new = min(max(new, over[0] + inset), fit[0] - inset)
        else:
            longest = max(math.log(SEARCH_SPAN), SEARCH_SPAN * abs(step))
            step = min(max(-h / slope, -longest), longest)
            new = min(max(x + step, ends[0]), ends[1])
        if new == x:
            break
        new_h, predictions = gap(new), predictions + 1
        if (new_h - h) / (new - x) < 0:
            slope = (new_h - h) / (new - x)
        x, h = new, new_h
    lo = STRENGTH_MIN if over is None else exact[over[0]]
    hi = STRENGTH_MAX if fit is None else exact[fit[0]]
    return _bisect(quantizer, bpp, scale, lo, hi)


def fit_rate_aware(quantizer: RateAwareQuantizer, bpp: float, scale: float,
                   first: float | None = None) -> Draft | None:
    """The quantiser's setting coded at (about) the smallest strength m whose whole file is <= bpp; None if
    none is. The search chooses indices with order-0 bits (`_fit_order0`, its first file at m = `first` when
    given); a context-coded last stage is then chosen again with the CONTEXT model's bits (`_context_polish`)."""
    fitted = _fit_order0(quantizer, bpp, scale, first)
    if fitted is None or not quantizer.context_coded:
        return None if fitted is None else fitted[0]
    return _context_polish(quantizer, *fitted, bpp)


def _context_polish(quantizer: RateAwareQuantizer, fitting: Draft, strength: float, bpp: float) -> Draft:
    """The file of lowest latent error among `fitting` (order-0 choice at strength m, <= bpp) and the last stage
    chosen with the CONTEXT model's bits (`models.quantizer.context_bits`) at about the smallest strength whose
    file fits: at m the context choice codes smaller, so a bisection over planned files runs between
    m / POLISH_RANGE and m, POLISH_STEPS times, each step's choice starting from the context choice at the
    nearest strength tried (`RateAwareQuantizer._context_start`), unless the file at m is already at least
    CLOSE_ENOUGH x the target, the rule that ends _fit_order0's calibrations. There the bisection's files added
    little: on 12 Kodak images (odd numbers) at 0.9 and 1.0 bpp, 12 of 16 context files at m were, and the
    bisection made them 0.5 to 0.9 % larger at the cost of two more context choices and planned files each;
    skipping it gave BD-rate +0.03 % on those Kodak images and +0.11 % on 16 BSDS500 validation photos (0.1-1.2
    bpp, decoded PSNR; ad hoc, 2026-12-05)."""
    trial = quantizer.draft(strength, context=True)
    if not trial.fits(bpp):
        return fitting
    best, best_strength, lo, hi = trial, strength, strength / POLISH_RANGE, strength
    for _ in range(POLISH_STEPS if trial.fits(CLOSE_ENOUGH * bpp) else 0):
        mid = (lo * hi) ** 0.5
        trial = quantizer.draft(mid, context=True)
        if trial.fits(bpp):
            best, best_strength, hi = trial, mid, mid
        else:
            lo = mid
    return best if quantizer.error(best_strength, context=True) < quantizer.error(strength) else fitting


def _fit_order0(quantizer: RateAwareQuantizer, bpp: float, scale: float,
                first: float | None = None) -> tuple[Draft, float] | None:
    """(the file, its strength m) of fit_rate_aware with order-0 bits; None if no file fits.

    Searches of m run on predicted sizes (predicted_bpp at `scale`); a file is planned after each (a Draft, whose
    comparisons give a real file's answers) and recalibrates the scale by its size (estimated unless a close call
    wrote it), at most CALIBRATIONS times (fewer once a file fits within CLOSE_ENOUGH of the target), and the
    largest file that fits is kept. The first file is planned at m = `first` when it is given (the m of the
    candidate's preview on the latent's _sample, from _preview_order); every search runs on the quantiser from the
    last file's m, or from REFINE_START without one (`_refine`). Starting each later search near the last file's m
    (then a bisection between m / 2 and 2 m) instead of whole-range bisections on the whole latent each time gave
    BD-rate +0.23 % on 12 Kodak images (odd numbers) and -0.43 % on 16 BSDS500 validation photos (targets 0.1-1.2
    bpp, decoded PSNR), `--bpp` compress 12 / 4 / 5 / 0 % faster at 0.1 / 0.3 / 0.5 / 1.2 bpp (24 Kodak images,
    benchmarks/paired_speed.py, one round; ad hoc, 2026-11-28); 10 / 4 / 0.5 / 2.6 % in two rounds
    (benchmarks/results/paired_speed_kodak_c95425a.json). When no file fits (every prediction was optimistic), the
    file at STRENGTH_MAX must; when the kept file is under RATE_WINDOW x the target, bisection goes on over planned
    files, REAL_SEARCH_STEPS times, between its m and the largest m seen to overshoot.
    """
    fitting, fit_strength, over_strength = None, STRENGTH_MAX, STRENGTH_MIN
    strength = None  # the last file's m, from which the next search starts
    for _ in range(CALIBRATIONS):
        if strength is None and first is not None:
            strength = first
        else:
            last, strength = strength, _refine(quantizer, bpp, scale, REFINE_START if strength is None else strength)
            if strength == last:  # the last file's m again: every further calibration would repeat it
                break
        if strength is None:
            break
        trial = quantizer.draft(strength)
        fits = trial.fits(bpp)  # first: a close call writes the file, and the scale below then uses its size
        scale = quantizer.payload_scale(trial, strength)
        if not fits:
            over_strength = max(over_strength, strength)
        elif fitting is None or trial.larger_than(fitting):
            fitting, fit_strength = trial, strength
        if fitting is not None and not fitting.fits(CLOSE_ENOUGH * bpp):
            return fitting, fit_strength
    if fitting is None:
        fitting = quantizer.draft(STRENGTH_MAX)
        if not fitting.fits(bpp):
            return None
    for _ in range(REAL_SEARCH_STEPS if fitting.fits(RATE_WINDOW * bpp) else 0):
        strength = (over_strength * fit_strength) ** 0.5
        if strength == fit_strength:  # nothing seen to overshoot below the kept file's m (STRENGTH_MIN)
            break
        trial = quantizer.draft(strength)
        if trial.fits(bpp):
            fitting, fit_strength = trial, strength
        else:
            over_strength = strength
    return fitting, fit_strength


def candidate_settings(model: RAQVAE, pick: Setting) -> list[Setting]:
    """Settings above the nearest-codeword pick that rate-aware coding may bring under the target.

    A next stage is tried only from the top of the pick's stage: from a pick below it (eK 256 to 2048 on 8
    Kodak images x targets 0.3 to 0.7 bpp) the winner was always in the pick's own stage, and skipping the
    two-stage previews changed none of those 48 files and took 12-18 % less time at 0.5-0.6 bpp.

    In stage 1 the candidates stop at 16 x the pick's eK; 64 x is a reserve_settings one, tried only when no
    other file reaches the rate window. As a candidate, 64 x won 1 of 84 files at 0.1-0.3 bpp (12 Kodak images,
    odd numbers, and 16 BSDS500 validation photos), and leaving it out gave BD-rate +0.04 % on those Kodak images
    and 0.00 % on the photos (targets 0.1-1.2 bpp, decoded PSNR; adding the reserve changed no mean bpp or PSNR
    there) and `--bpp` compress 1 %, 9 % and 6 % faster at 0.1, 0.2 and 0.3 bpp (24 Kodak images,
    benchmarks/paired_speed.py, one round; ad hoc, 2026-11-28). In stage 2, 64 x won 7 of 28 files at 0.8 bpp."""
    cfg = model.cfg
    largest = cfg.max_codebook_size
    *prefix, size = pick
    factors = LATER_STAGE_FACTORS if prefix else FIRST_STAGE_FACTORS
    out = [(*prefix, min(size * factor, largest)) for factor in factors]
    if len(pick) < cfg.stages and size == largest:
        out += [(*prefix, largest, 256), (*prefix, largest, largest)]
    return [s for s in dict.fromkeys(out) if s != pick]


def reserve_settings(model: RAQVAE, pick: Setting) -> list[Setting]:
    """Settings coded rate-aware only when no other option's file reaches RATE_WINDOW x the target: for a one-stage
    pick, 64 x its eK (at most the largest eK) when candidate_settings do not hold it. They are not previewed."""
    if len(pick) > 1:
        return []
    larger = (min(pick[0] * RESERVE_FACTOR, model.cfg.max_codebook_size),)
    return [] if larger == pick or larger in candidate_settings(model, pick) else [larger]


def search_ladder(model: RAQVAE) -> list[Setting]:
    """The rate ladder at eK = 2^k and 3 * 2^(k-1) (2, 3, 4, 6, 8, 12, ...) per stage, within the model's range:
    fine enough for step 1, since the rate-aware candidates fill the gaps between its steps."""
    cfg = model.cfg
    sizes = sorted({n for k in range(1, 17) for n in (2 ** k, 3 * 2 ** (k - 1))
                    if cfg.min_codebook_size <= n <= cfg.max_codebook_size} | {cfg.min_codebook_size, cfg.max_codebook_size})
    return cfg.ladder(sizes)


def _every(tensor: torch.Tensor, stride: int) -> torch.Tensor:
    """(..., h, w) -> every stride-th row and column (a view): the positions of a latent's _sample."""
    return tensor[..., ::stride, ::stride]


def _sample(latent: Latent) -> tuple[Latent, float]:
    """(every SAMPLE_STRIDE-th row and column of the latent, same image size; the weight of its counts in
    adaptive_bits): searches run on it first. A latent under SAMPLE_MIN_POSITIONS is its own sample."""
    _, _, height, width = latent.z.shape
    if height * width < SAMPLE_MIN_POSITIONS:
        return latent, 1.0
    z = _every(latent.z, SAMPLE_STRIDE).contiguous()
    return Latent(z, latent.width, latent.height, latent.color_mode), float(SAMPLE_STRIDE ** 2)


def _seed_first_stage(model: RAQVAE, latent: Latent, size: int, prefixes: PrefixCache,
                      candidates: CandidateCache) -> None:
    """Quantise stage 1 of the latent at eK = size through its nearest candidates (cached in `candidates`,
    where rate-aware coding of any setting that starts with size finds them), into `prefixes`: the nearest
    codeword is the first candidate, so the ladder's nearest-codeword search and rate-aware coding share one
    distance computation."""
    key = ((size,), None)
    table = model.codebooks((size,))[0]
    if key not in candidates:
        candidates[key] = nearest_candidates(split_groups(latent.z, model.cfg.groups), table, CANDIDATES)
    _, _, height, width = latent.z.shape
    grid = candidates[key][1][..., 0].reshape(model.cfg.groups, 1, height, width).transpose(0, 1)
    prefixes[(size,)] = ([grid], latent.z - model.dequantize(grid, table))


def _cut_prefix(prefix: tuple[list[torch.Tensor], torch.Tensor],
                stride: int) -> tuple[list[torch.Tensor], torch.Tensor]:
    """A PrefixCache entry of the whole latent (index grids (1, G, h, w) per stage, residual (1, C, h, w)) cut to
    every stride-th row and column: the same entry of its _sample, since nearest codewords are chosen per position."""
    grids, residual = prefix
    return [_every(grid, stride) for grid in grids], _every(residual, stride).contiguous()


def _nearest_pick(model: RAQVAE, latent: Latent, bpp: float,
                  candidates: CandidateCache | None = None) -> tuple[Setting, Draft | None]:
    """(the highest setting of the search ladder predicted to fit with nearest codewords, or the ladder's first
    when none is; that setting's nearest-codeword file, planned, if it really fits, else None).

    File size grows along the ladder (nearly monotonically). A binary search, above or below the FIRST_PROBE setting
    as that fits or not, first runs on a sample of the latent (every SAMPLE_STRIDE-th row and column, counts scaled
    up; it underestimates large codebooks' sizes by up to 9 %; when the sample's pick does not fit, a second search
    below it runs on the sample's sizes scaled by the whole latent's at that pick), then a walk on the whole
    latent's predicted sizes (adaptive_bits) moves from the sample's pick to the highest setting that fits: the same
    result as a binary search on the whole latent, for about half its distance computations. Only the pick is
    planned. Stage 1 at the largest eK, which rate-aware coding above any pick near it needs, is quantised once, on
    the whole latent through `candidates` (_seed_first_stage), when either search first reaches it; the sample's is
    cut from it (_cut_prefix).
    """
    ladder = search_ladder(model)
    largest, candidates = model.cfg.max_codebook_size, {} if candidates is None else candidates
    budget = bpp * latent.width * latent.height
    sample, weight = _sample(latent)
    grids: dict[int, list[np.ndarray]] = {}
    prefixes: PrefixCache = {}
    sample_prefixes: PrefixCache = {}

    def whole_first_stage() -> tuple[list[torch.Tensor], torch.Tensor]:
        """The whole latent's stage 1 at the largest eK (its PrefixCache entry), quantised once."""
        if (largest,) not in prefixes:
            _seed_first_stage(model, latent, largest, prefixes, candidates)
        return prefixes[(largest,)]

    @functools.cache
    def sample_bits(i: int) -> float:
        if ladder[i][0] == largest and (largest,) not in sample_prefixes:
            sample_prefixes[(largest,)] = _cut_prefix(whole_first_stage(), SAMPLE_STRIDE)
        sample_grids = quantize_latent(model, sample, ladder[i], model.codebooks(ladder[i]), sample_prefixes)
        return _grid_bits(sample_grids, ladder[i], weight)

    @functools.cache
    def bits(i: int) -> float:
        if ladder[i][0] == largest:
            whole_first_stage()
        grids[i] = quantize_latent(model, latent, ladder[i], model.codebooks(ladder[i]), prefixes)
        return _grid_bits(grids[i], ladder[i])

    def fits(i: int) -> bool:
        return bits(i) + 8 * _overhead_bytes(ladder[i]) <= budget

    def sample_fits(i: int, scale: float) -> bool:
        """Whether ladder[i] fits on the sample's sizes x scale (a latent that is its own sample: its own)."""
        return fits(i) if sample is latent else scale * sample_bits(i) + 8 * _overhead_bytes(ladder[i]) <= budget

    def highest_fitting(lo: int, hi: int, scale: float) -> int:
        """Binary search between lo (fits, or -1) and hi (does not fit, or past the ladder's end)."""
        while hi - lo > 1:
            mid = (lo + hi) // 2
            lo, hi = (mid, hi) if sample_fits(mid, scale) else (lo, mid)
        return lo

    first = max((i for i, setting in enumerate(ladder) if len(setting) == 1 and setting[0] <= FIRST_PROBE),
                default=0)
    if sample_fits(first, 1.0):
        pick = highest_fitting(first, len(ladder), 1.0)
    else:
        pick = max(highest_fitting(-1, first, 1.0), 0)
    if sample is not latent and pick > 0 and not fits(pick):
        # The sample underestimates large codebooks' sizes: scale its sizes to the whole latent's at the pick
        # and search again below it, galloping down from it, so that the walk below starts next to its end.
        scale, hi, step = bits(pick) / sample_bits(pick), pick, 1
        while hi - step >= 0 and not sample_fits(hi - step, scale):
            hi, step = hi - step, 2 * step
        pick = max(highest_fitting(max(hi - step, -1), hi, scale), 0)
    if fits(pick):
        while pick + 1 < len(ladder) and fits(pick + 1):
            pick += 1
    else:
        while pick > 0 and not fits(pick):
            pick -= 1
        if not fits(pick):
            return ladder[0], None
    draft = Draft(model, latent, ladder[pick], grids[pick])
    return ladder[pick], draft if draft.fits(bpp) else None


def smallest_file(model: RAQVAE, latent: Latent) -> Encoded:
    """The smallest file rate control makes: the ladder's first setting at strength STRENGTH_MAX."""
    return RateAwareQuantizer(model, latent, model.cfg.ladder()[0]).draft(STRENGTH_MAX).write()


def rate_aware_specs(model: RAQVAE, base: Setting, pick: Draft | None) -> list[tuple[Setting, float]]:
    """(setting, strength of its earlier stages) of every rate-aware candidate above the nearest-codeword ladder
    pick `base` (its file `pick`, None when that does not fit): base itself when its file does not fit, the
    candidate_settings, and a multi-stage base whose file does not fit, or the top of the ladder, once more
    with its earlier stages at nearest codewords (the rates just below base's)."""
    settings = ([base] if pick is None else []) + candidate_settings(model, base)
    specs = [(setting, PREFIX_STRENGTH) for setting in settings]
    if len(base) > 1 and (pick is None or base == search_ladder(model)[-1]):
        specs.append((base, 0.0))
    return specs


def size_scale(pick: Draft | None) -> float:
    """Payload bits / adaptive_bits of the nearest pick's file (1.0 without one): the first calibration of
    predicted sizes for the rate-aware candidates."""
    return 1.0 if pick is None else _payload_bits(pick) / _grid_bits(pick.indices, pick.setting)


def _sample_candidates(latent: Latent, cache: CandidateCache, stride: int) -> CandidateCache:
    """The stage-1 entries of the whole latent's cache, cut to every stride-th latent row and column (its
    _sample) and to the PREVIEW_CANDIDATES nearest: the sample's own stage-1 candidates, not computed again."""
    _, _, height, width = latent.z.shape

    def cut(table: torch.Tensor) -> torch.Tensor:  # (G, h*w, m) -> (G, sample positions, kept)
        groups, _, count = table.shape
        kept = min(count, PREVIEW_CANDIDATES)
        return table.reshape(groups, height, width, count)[:, ::stride, ::stride, :kept].reshape(groups, -1, kept)

    return {key: (cut(dist), cut(cand)) for key, (dist, cand) in cache.items()
            if key[1] is None}  # stage 1: its input is the latent itself


def _preview_strength(preview: RateAwareQuantizer, bpp: float, scale: float, start: float) -> float | None:
    """The strength m of a preview: None when STRENGTH_MAX is predicted over bpp, STRENGTH_MIN when it is
    predicted to fit (a setting too large or too small for the target costs one or two predictions), else
    _refine's from `start`."""
    if preview.predicted_bpp(STRENGTH_MAX, scale) > bpp:
        return None
    if preview.predicted_bpp(STRENGTH_MIN, scale) <= bpp:
        return STRENGTH_MIN
    return _refine(preview, bpp, scale, start)


def _preview_order(model: RAQVAE, latent: Latent, bpp: float, specs: list[tuple[Setting, float]],
                   scale: float, cache: CandidateCache) -> tuple[list[int], list[float | None]]:
    """(positions in specs, of lowest predicted latent error first, of the candidates predicted to fit bpp on
    the latent's _sample, [0] when none is; per spec, the strength m its preview on the sample found, where its
    first file is planned: STRENGTH_MAX when the preview predicts no file fits, None without a preview). A single
    candidate needs no preview: it is coded whatever its prediction (at the high end, every larger setting of a
    stage-2 pick is the largest one). The whole latent's stage-1 candidates already in `cache` serve the sample
    too (_sample_candidates). Each preview first predicts the range's ends (_preview_strength), then searches
    (`_refine`) from the m of the last preview found inside the range, or from REFINE_START. Sample predictions per
    image (24 Kodak images) 11.6 / 8.2 / 13.1 / 11.8 / 6.5 at 0.3 / 0.5 / 0.8 / 1.0 / 1.2 bpp against 13.8 / 11.8 /
    29.3 / 28.3 / 17.2 when the first preview bisected the whole range and later ones searched from the last m
    that fit, even STRENGTH_MIN, where the predicted size is flat and the secant steps crawl; BD-rate +0.10 % on
    12 Kodak images (odd numbers) and +0.06 % on 16 BSDS500 validation photos (0.1-1.2 bpp, decoded PSNR; ad
    hoc, 2026-12-05)."""
    if len(specs) == 1:
        return [0], [None]
    sample, weight = _sample(latent)
    sample_cache = _sample_candidates(latent, cache, 1 if sample is latent else SAMPLE_STRIDE)
    previews = [RateAwareQuantizer(model, sample, setting, strength, sample_cache, weight, PREVIEW_CANDIDATES)
                for setting, strength in specs]
    strengths: list[float | None] = []
    for preview in previews:
        inside = [m for m in strengths if m is not None and STRENGTH_MIN < m < STRENGTH_MAX]
        strengths.append(_preview_strength(preview, bpp, scale, inside[-1] if inside else REFINE_START))
    ranked = sorted((preview.error(m), i) for i, (preview, m) in enumerate(zip(previews, strengths))
                    if m is not None)
    return [i for _, i in ranked] or [0], [STRENGTH_MAX if m is None else m for m in strengths]


def choose_setting(model: RAQVAE, latent: Latent, bpp: float) -> Encoded:
    """The encode of lowest latent error, among the nearest-codeword ladder pick and the rate-aware candidate
    of lowest PREDICTED error, whose whole file is <= bpp bits per pixel (module docstring)."""
    cache: CandidateCache = {}
    base, pick = _nearest_pick(model, latent, bpp, cache)
    if pick is not None and base == search_ladder(model)[-1]:
        encoded = pick.write()
        if encoded.bpp < bpp:
            warnings.warn(f"target {bpp:g} bpp is above the model's largest rate for this image; using the "
                          f"largest setting eK={setting_label(encoded.setting)} ({encoded.bpp:.4f} bpp)",
                          stacklevel=3)
        return encoded
    specs = rate_aware_specs(model, base, pick)
    scale = size_scale(pick)
    options = [] if pick is None else [pick]

    def in_window(draft: Draft) -> bool:
        return not draft.fits(RATE_WINDOW * bpp)

    order, firsts = _preview_order(model, latent, bpp, specs, scale, cache)
    # The loop stops at the first file in the window, so it reaches the reserve only when no file is, unless the
    # nearest pick is: then the reserve is left out.
    reserve = [] if pick is not None and in_window(pick) else reserve_settings(model, base)
    for spec, first in ([(specs[i], firsts[i]) for i in order]
                        + [((setting, PREFIX_STRENGTH), None) for setting in reserve]):
        fitted = fit_rate_aware(RateAwareQuantizer(model, latent, *spec, cache), bpp, scale, first)
        if fitted is not None:
            options.append(fitted)
            if in_window(fitted):
                break
    in_window_options = [draft for draft in options if in_window(draft)] or options
    for draft in sorted(in_window_options,
                        key=lambda draft: latent_error(model, latent, draft.setting, draft.indices)):
        encoded = draft.write()
        if encoded.bpp <= bpp:  # always, unless a file exceeded its estimate by EXACT_MARGIN_BITS
            return encoded
    floor = smallest_file(model, latent)
    raise CodecError(f"target {bpp:g} bpp is below the smallest achievable rate for this image, "
                     f"{floor.bpp:.4f} bpp (eK={setting_label(floor.setting)})")
