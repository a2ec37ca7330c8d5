"""Quality target: the smallest file whose DECODED image reaches a PSNR (dB over RGB in [0, 255]).

`raq compress --psnr 30` / `compress(image, psnr=30)`. Rate control (`ratecontrol.choose_setting`) makes the
best file for a bpp target; here the encoder searches the bpp target, decoding every candidate and scoring it
against the source pixels:
1. The largest setting of the rate ladder is coded; below the target it is a CodecError naming the PSNR and
   bpp it reaches. The smallest file (`ratecontrol.smallest_file`) is returned if it already reaches it.
2. Otherwise the target lies between two bpp targets, one whose file is under the PSNR target and one whose
   file reaches it. Each step codes the bpp target where the line through them, in (log bpp, PSNR), meets
   target + TOLERANCE_DB / 2 (kept inside the middle of the bracket so it shrinks), for at most SEARCH_STEPS
   steps or until a file lands within [target, target + TOLERANCE_DB]. A step that gives the lower end's
   file again only moves that end up. The file of the upper end is returned.

Where rate control's files jump in PSNR between two close rates (at the very bottom of the range, on small
images, a step of eK may add 1.5 dB), the file returned can exceed the target by more than TOLERANCE_DB.
"""
from __future__ import annotations

import math
import warnings
from dataclasses import dataclass

import numpy as np

from raqcodec.codec import Encoded, Latent, encode_latent, reconstruct, setting_label
from raqcodec.errors import CodecError
from raqcodec.metrics import psnr
from raqcodec.models import RAQVAE
from raqcodec.ratecontrol import choose_setting, search_ladder, smallest_file

TOLERANCE_DB = 0.3  # a file within [target, target + this] ends the search
SEARCH_STEPS = 8  # bpp targets tried between the smallest and the largest file
BRACKET_MARGIN = 0.1  # each step's log bpp stays this fraction of the bracket away from its ends
MIN_BRACKET_RATIO = 1.005  # the search ends when the bracket's bpp targets are closer than this ratio


def decoded_psnr(model: RAQVAE, latent: Latent, pixels: np.ndarray, encoded: Encoded) -> float:
    """PSNR in dB of the encode's decoded image against the source pixels (H, W, 3) uint8."""
    decoded = reconstruct(model, encoded.indices, encoded.setting, latent.width, latent.height)
    return psnr(pixels, decoded)


def choose_for_psnr(model: RAQVAE, latent: Latent, pixels: np.ndarray, target_db: float) -> Encoded:
    """The smallest file found whose decoded PSNR is >= target_db (module docstring); CodecError when even
    the largest setting stays under it."""
    if not (math.isfinite(target_db) and target_db > 0):
        raise CodecError(f"psnr must be a positive number of dB, got {target_db}")
    largest = encode_latent(model, latent, search_ladder(model)[-1])
    high_db = decoded_psnr(model, latent, pixels, largest)
    if high_db < target_db:
        raise CodecError(f"PSNR target {target_db:g} dB is out of reach for this image: the largest setting "
                         f"(eK={setting_label(largest.setting)}) gives {high_db:.2f} dB at {largest.bpp:.4f} bpp")
    smallest = smallest_file(model, latent)
    low = _Point(smallest.bpp, decoded_psnr(model, latent, pixels, smallest), smallest)
    if low.psnr_db >= target_db:
        return smallest
    high = _Point(largest.bpp, high_db, largest)
    aim = target_db + TOLERANCE_DB / 2
    for _ in range(SEARCH_STEPS):
        if high.psnr_db <= target_db + TOLERANCE_DB or high.bpp_target < low.bpp_target * MIN_BRACKET_RATIO:
            break
        share = min(max((aim - low.psnr_db) / (high.psnr_db - low.psnr_db), BRACKET_MARGIN), 1 - BRACKET_MARGIN)
        bpp = low.bpp_target * (high.bpp_target / low.bpp_target) ** share
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # a target above the image's largest rate
            trial = choose_setting(model, latent, bpp)
        if trial.data == low.encoded.data:  # rate control's files jump here: move the bracket, not the file
            low = _Point(bpp, low.psnr_db, low.encoded)
            continue
        db = decoded_psnr(model, latent, pixels, trial)
        if db >= target_db:
            smaller = len(trial.data) <= len(high.encoded.data)
            high = _Point(bpp, db, trial) if smaller else _Point(bpp, high.psnr_db, high.encoded)
        else:
            low = _Point(bpp, db, trial)
    return high.encoded


@dataclass
class _Point:
    """One end of the search bracket: the bpp target tried, the decoded PSNR in dB, the file it gave."""

    bpp_target: float
    psnr_db: float
    encoded: Encoded
