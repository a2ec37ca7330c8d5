"""Tests for raqcodec.metrics: PSNR, SSIM, MS-SSIM (incl. small images) and code statistics."""

import math

import numpy as np
import pytest
import pytorch_msssim
import torch

from raqcodec import metrics
from raqcodec.errors import CodecError
from raqcodec.metrics import DB_CAP, code_statistics, ms_ssim, ms_ssim_db, psnr, ssim, usage_counts

torch.set_num_threads(1)


def _image(h: int, w: int, seed: int = 0) -> np.ndarray:
    """A smooth-ish uint8 (h, w, 3) test image."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:h, 0:w]
    base = 128 + 60 * np.sin(xx / 7.0)[:, :, None] * np.cos(yy / 5.0)[:, :, None]
    return np.clip(base + rng.normal(0, 20, (h, w, 3)), 0, 255).astype(np.uint8)


def _noisy(pixels: np.ndarray, sigma: float, seed: int = 1) -> np.ndarray:
    noise = np.random.default_rng(seed).normal(0, sigma, pixels.shape)
    return np.clip(pixels + noise, 0, 255).astype(np.uint8)


def test_psnr_of_known_mse():
    a = np.zeros((4, 5, 3), np.uint8)
    b = np.full((4, 5, 3), 2, np.uint8)  # MSE = 4
    assert psnr(a, b) == pytest.approx(10 * math.log10(255**2 / 4), abs=1e-12)
    ta = torch.zeros(1, 3, 4, 5)
    tb = torch.full((3, 4, 5), 0.1)  # MSE = 0.01 with data_range 1
    assert psnr(ta, tb, data_range=1.0) == pytest.approx(20.0, abs=1e-5)


def test_psnr_uses_uint8_values_without_overflow():
    a = np.zeros((2, 2, 3), np.uint8)
    b = np.full((2, 2, 3), 255, np.uint8)
    assert psnr(a, b) == pytest.approx(0.0, abs=1e-12)


def test_identical_images_give_the_cap():
    pixels = _image(32, 32)
    assert psnr(pixels, pixels) == DB_CAP == 100.0
    assert ms_ssim(pixels, pixels) == pytest.approx(1.0, abs=1e-12)
    assert ms_ssim_db(pixels, pixels) == DB_CAP
    assert ssim(pixels, pixels) == pytest.approx(1.0, abs=1e-12)


def test_numpy_and_tensor_inputs_agree():
    a, b = _image(40, 30), _noisy(_image(40, 30), 10)
    ta = torch.from_numpy(a).permute(2, 0, 1).float() / 255
    tb = torch.from_numpy(b).permute(2, 0, 1).unsqueeze(0).float() / 255
    assert psnr(ta, tb, data_range=1.0) == pytest.approx(psnr(a, b), abs=1e-4)
    assert ms_ssim(ta, tb, data_range=1.0) == pytest.approx(ms_ssim(a, b), abs=1e-6)


def test_ms_ssim_matches_library_on_large_images():
    a, b = _image(170, 200), _noisy(_image(170, 200), 15)
    x = torch.from_numpy(a).permute(2, 0, 1)[None].double()
    y = torch.from_numpy(b).permute(2, 0, 1)[None].double()
    value = ms_ssim(a, b)
    assert 0.0 < value < 1.0
    assert value == pytest.approx(pytorch_msssim.ms_ssim(x, y, data_range=255).item(), abs=1e-12)
    assert ms_ssim_db(a, b) == pytest.approx(-10 * math.log10(1 - value), abs=1e-9)
    assert ssim(a, b) == pytest.approx(pytorch_msssim.ssim(x, y, data_range=255).item(), abs=1e-12)


def test_own_multiscale_implementation_equals_library():
    """The fallback code, run with all 5 scales, reproduces pytorch_msssim (whose window is float32)."""
    a, b = _image(165, 181), _noisy(_image(165, 181), 25)
    x = torch.from_numpy(a).permute(2, 0, 1)[None].double()
    y = torch.from_numpy(b).permute(2, 0, 1)[None].double()
    weights = torch.tensor([0.0448, 0.2856, 0.3001, 0.2363, 0.1333], dtype=torch.float64)
    own = metrics._multiscale_ssim(x, y, 255.0, weights, metrics._gaussian_window(11))
    assert own == pytest.approx(pytorch_msssim.ms_ssim(x, y, data_range=255).item(), abs=1e-6)
    own_ssim = metrics._ssim_and_cs(x, y, 255.0, metrics._gaussian_window(11))[0].mean().item()
    assert own_ssim == pytest.approx(pytorch_msssim.ssim(x, y, data_range=255).item(), abs=1e-6)


@pytest.mark.parametrize(
    ("side", "levels"), [(1, 1), (10, 1), (11, 1), (20, 1), (21, 2), (41, 3), (81, 4), (160, 4)]
)
def test_scale_count_for_small_images(side, levels):
    assert metrics._levels_for_side(side) == levels


@pytest.mark.parametrize(("h", "w"), [(160, 300), (64, 64), (21, 30), (12, 12), (5, 7), (1, 9), (1, 1)])
def test_ms_ssim_small_images_in_range(h, w):
    a = _image(h, w)
    b = _noisy(a, 30)
    value = ms_ssim(a, b)
    assert 0.0 <= value <= 1.0
    assert ms_ssim(a, a) == pytest.approx(1.0, abs=1e-12)
    assert -1.0 <= ssim(a, b) <= 1.0
    assert math.isfinite(ms_ssim_db(a, b))


def test_ms_ssim_decreases_with_noise():
    a = _image(200, 200)
    values = [ms_ssim(a, _noisy(a, sigma)) for sigma in (2, 10, 40)]
    assert values[0] > values[1] > values[2] > 0


def test_greyscale_arrays_accepted():
    a = _image(30, 30)[:, :, 0]
    assert psnr(a, a) == DB_CAP
    assert ms_ssim(a, _noisy(a, 10)) < 1.0


def test_shape_mismatch_and_bad_shapes_raise():
    with pytest.raises(CodecError, match="shape"):
        psnr(np.zeros((4, 4, 3), np.uint8), np.zeros((4, 5, 3), np.uint8))
    with pytest.raises(CodecError):
        ms_ssim(torch.zeros(2, 3, 8, 8), torch.zeros(2, 3, 8, 8))
    with pytest.raises(CodecError):
        ssim(np.zeros(5), np.zeros(5))


def test_code_statistics():
    assert code_statistics(np.full(8, 5)) == (pytest.approx(8.0), 8)
    assert code_statistics(np.array([5, 0, 5, 0])) == (pytest.approx(2.0), 2)
    assert code_statistics(np.array([0, 7, 0])) == (pytest.approx(1.0), 1)
    p = np.array([0.5, 0.25, 0.25])
    perplexity, usage = code_statistics(np.array([2, 1, 1, 0, 0]))
    assert perplexity == pytest.approx(math.exp(-(p * np.log(p)).sum()))
    assert usage == 3


def test_usage_counts_per_group():
    indices = np.array([[[0, 1], [1, 3]], [[2, 2], [2, 0]]])  # (G=2, h=2, w=2)
    counts = usage_counts(indices, 4)
    assert counts.tolist() == [[1, 2, 0, 1], [1, 0, 3, 0]]
    assert counts.shape == (2, 4)


@pytest.mark.parametrize("bad", [np.zeros(4), np.array([1, -1]), np.ones((2, 2)), np.array([1.0, np.nan])])
def test_code_statistics_rejects_bad_counts(bad):
    with pytest.raises(CodecError):
        code_statistics(bad)
