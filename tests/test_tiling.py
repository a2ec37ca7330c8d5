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
    tiled_z = tiling.analysis_tiled(tiny_model, x)
    tiled_x = tiling.synthesis_tiled(tiny_model, whole_z)
    assert tiled_z.shape == whole_z.shape and tiled_x.shape == whole_x.shape
    assert tiled_z.is_contiguous() and tiled_x.is_contiguous()
    assert torch.allclose(tiled_z, whole_z, atol=1e-4)
    assert torch.allclose(tiled_x, whole_x, atol=1e-4)
