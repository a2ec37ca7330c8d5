"""Tests for raqcodec.bd: Bjontegaard delta rate and PSNR on curves with known answers."""

import math

import numpy as np
import pytest

from raqcodec.bd import bd_psnr, bd_rate
from raqcodec.errors import CodecError

RATES = [0.1, 0.25, 0.5, 1.0, 2.0]
PSNRS = [27.0, 30.5, 33.0, 36.2, 39.9]


def test_identical_curves():
    assert bd_rate(RATES, PSNRS, RATES, PSNRS) == pytest.approx(0.0, abs=1e-9)
    assert bd_psnr(RATES, PSNRS, RATES, PSNRS) == pytest.approx(0.0, abs=1e-9)


def test_scaled_rates_give_exact_bd_rate():
    test_rates = [0.8 * r for r in RATES]
    assert bd_rate(RATES, PSNRS, test_rates, PSNRS) == pytest.approx(-20.0, abs=1e-6)
    assert bd_rate(test_rates, PSNRS, RATES, PSNRS) == pytest.approx(25.0, abs=1e-6)


def test_shifted_psnr_gives_exact_bd_psnr():
    test_psnrs = [p + 1.0 for p in PSNRS]
    assert bd_psnr(RATES, PSNRS, RATES, test_psnrs) == pytest.approx(1.0, abs=1e-9)
    assert bd_psnr(RATES, test_psnrs, RATES, PSNRS) == pytest.approx(-1.0, abs=1e-9)


def test_psnr_shift_on_a_log_linear_curve_gives_known_bd_rate():
    # PSNR = 6 * log2(rate) + 40: +1 dB at equal rate = rate * 2**(-1/6) at equal PSNR.
    rates = np.array([0.125, 0.25, 0.5, 1.0, 2.0])
    psnrs = 6 * np.log2(rates) + 40
    expected = (2 ** (-1 / 6) - 1) * 100
    assert bd_rate(rates, psnrs, rates, psnrs + 1) == pytest.approx(expected, abs=1e-9)


def test_order_of_points_does_not_matter():
    order = [3, 0, 4, 2, 1]
    shuffled_rates = [0.9 * RATES[i] for i in order]
    shuffled_psnrs = [PSNRS[i] + 0.3 for i in order]
    test_rates = [0.9 * r for r in RATES]
    test_psnrs = [p + 0.3 for p in PSNRS]
    assert bd_rate(RATES, PSNRS, shuffled_rates, shuffled_psnrs) == pytest.approx(
        bd_rate(RATES, PSNRS, test_rates, test_psnrs), abs=1e-9
    )


def test_partial_overlap_uses_the_common_interval():
    # Test curve covers only the upper part of the reference range, with rates * 0.5.
    test_rates = [0.5 * r for r in RATES[1:]] + [0.5 * 4.0]
    test_psnrs = PSNRS[1:] + [43.0]
    rates = RATES + [4.0]
    psnrs = PSNRS + [43.0]
    result = bd_rate(rates, psnrs, test_rates, test_psnrs)
    assert result == pytest.approx(-50.0, abs=2.0)  # least-squares fits differ slightly
    assert math.isfinite(bd_psnr(rates, psnrs, test_rates, test_psnrs))


def test_errors_are_value_errors():
    with pytest.raises(CodecError, match="at least 4"):
        bd_rate(RATES[:3], PSNRS[:3], RATES, PSNRS)
    with pytest.raises(ValueError, match="at least 4"):
        bd_psnr(RATES, PSNRS, RATES[:3], PSNRS[:3])
    with pytest.raises(ValueError, match="overlap"):
        bd_rate(RATES, PSNRS, RATES, [p + 20 for p in PSNRS])
    with pytest.raises(ValueError, match="overlap"):
        bd_psnr(RATES, PSNRS, [r * 100 for r in RATES], PSNRS)
    with pytest.raises(ValueError, match="positive"):
        bd_rate([0.0] + RATES[1:], PSNRS, RATES, PSNRS)
    with pytest.raises(ValueError, match="equal length"):
        bd_psnr(RATES, PSNRS[:4], RATES, PSNRS)
