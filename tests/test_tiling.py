"""Tiled transforms equal whole-image transforms (up to float rounding), whatever the tile size."""
import torch

from raqcodec import tiling


def test_tiled_transforms_match_whole_image(tiny_model, monkeypatch):
    f = tiny_model.cfg.downsample
    x = torch.rand(1, 3, 13 * f, 21 * f, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        whole_z = tiny_model.analysis(x)
        whole_x = tiny_model.synthesis(whole_z)
    monkeypatch.setattr(tiling, "TILE", 5)  # 3 x 5 tiles, the last ones partial
    monkeypatch.setattr(tiling, "_cpu_has_bfloat16", lambda: False)  # float32, as whole_z
    tiled_z = tiling.analysis_tiled(tiny_model, x)
    tiled_x = tiling.synthesis_tiled(tiny_model, whole_z)
    assert tiled_z.shape == whole_z.shape and tiled_x.shape == whole_x.shape
    assert tiled_z.is_contiguous() and tiled_x.is_contiguous()
    assert torch.allclose(tiled_z, whole_z, atol=1e-4)
    assert torch.allclose(tiled_x, whole_x, atol=1e-4)


def test_bfloat16_analysis_stays_close_to_float32(tiny_model, monkeypatch):
    f = tiny_model.cfg.downsample
    x = torch.rand(1, 3, 8 * f, 8 * f, generator=torch.Generator().manual_seed(1))
    monkeypatch.setattr(tiling, "_cpu_has_bfloat16", lambda: True)
    fast = tiling.analysis_tiled(tiny_model, x)
    monkeypatch.setattr(tiling, "_cpu_has_bfloat16", lambda: False)
    exact = tiling.analysis_tiled(tiny_model, x)
    assert fast.dtype == torch.float32 and not torch.equal(fast, exact)
    assert float(((fast - exact) ** 2).mean() / (exact ** 2).mean()) < 1e-3
