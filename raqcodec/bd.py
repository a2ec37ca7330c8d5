"""Bjontegaard delta metrics (VCEG-M33) between two rate-distortion curves.

Each curve is given as rates (bits per pixel, > 0) and qualities (PSNR in dB, or any other
dB quality such as MS-SSIM dB), at least 4 points, in any order. Each fit is a cubic
least-squares polynomial, integrated over the interval both curves cover.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
from numpy.polynomial import Polynomial

from raqcodec.errors import CodecError

_DEGREE = 3


def bd_rate(
    rate_ref: Sequence[float],
    psnr_ref: Sequence[float],
    rate_test: Sequence[float],
    psnr_test: Sequence[float],
) -> float:
    """Average rate difference of the test curve at equal quality, in percent.

    Fits log(rate) as a cubic in PSNR for each curve and compares their means over the
    overlapping PSNR interval. Negative: the test codec needs fewer bits (-20.0 = 20 % fewer).
    Raises CodecError (a ValueError) for fewer than 4 points per curve or no PSNR overlap.
    """
    log_rate_ref, quality_ref = _curve(rate_ref, psnr_ref, "reference")
    log_rate_test, quality_test = _curve(rate_test, psnr_test, "test")
    mean_diff = _mean_difference(quality_ref, log_rate_ref, quality_test, log_rate_test, "PSNR")
    return (math.exp(mean_diff) - 1.0) * 100.0


def bd_psnr(
    rate_ref: Sequence[float],
    psnr_ref: Sequence[float],
    rate_test: Sequence[float],
    psnr_test: Sequence[float],
) -> float:
    """Average PSNR difference of the test curve at equal rate, in dB (positive: test is better).

    Fits PSNR as a cubic in log(rate) for each curve and compares their means over the
    overlapping log-rate interval. Raises CodecError (a ValueError) for fewer than 4 points
    per curve or no rate overlap.
    """
    log_rate_ref, quality_ref = _curve(rate_ref, psnr_ref, "reference")
    log_rate_test, quality_test = _curve(rate_test, psnr_test, "test")
    return _mean_difference(log_rate_ref, quality_ref, log_rate_test, quality_test, "rate")


def _curve(rates: Sequence[float], qualities: Sequence[float], name: str) -> tuple[np.ndarray, np.ndarray]:
    """Validate one RD curve -> (natural log of rates, qualities), float64 arrays of equal length."""
    rates_arr = np.asarray(rates, dtype=np.float64)
    qualities_arr = np.asarray(qualities, dtype=np.float64)
    if rates_arr.ndim != 1 or rates_arr.shape != qualities_arr.shape:
        raise CodecError(f"{name} curve: rates and qualities must be 1-D sequences of equal length")
    if rates_arr.size <= _DEGREE:
        raise CodecError(f"{name} curve: need at least {_DEGREE + 1} points, got {rates_arr.size}")
    if not (np.all(np.isfinite(rates_arr)) and np.all(np.isfinite(qualities_arr)) and np.all(rates_arr > 0)):
        raise CodecError(f"{name} curve: rates must be positive and all values finite")
    return np.log(rates_arr), qualities_arr


def _mean_difference(
    x_ref: np.ndarray, y_ref: np.ndarray, x_test: np.ndarray, y_test: np.ndarray, axis: str
) -> float:
    """Mean of (test fit - reference fit) of y over the x interval both curves cover."""
    low = max(x_ref.min(), x_test.min())
    high = min(x_ref.max(), x_test.max())
    if high <= low:
        raise CodecError(f"the two curves do not overlap in {axis}")
    area_ref = _integral(x_ref, y_ref, low, high)
    area_test = _integral(x_test, y_test, low, high)
    return (area_test - area_ref) / (high - low)


def _integral(x: np.ndarray, y: np.ndarray, low: float, high: float) -> float:
    """Integral over [low, high] of the cubic least-squares fit of y as a function of x."""
    antiderivative = Polynomial.fit(x, y, _DEGREE).integ()
    return float(antiderivative(high) - antiderivative(low))
