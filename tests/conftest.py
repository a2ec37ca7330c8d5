"""Shared fixtures: a tiny model trained in seconds, and synthetic images (no ../shared needed)."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

torch.set_num_threads(2)


def synthetic_image(height: int, width: int, seed: int = 0) -> np.ndarray:
    """A smooth image with edges: gradients plus a few rectangles, (H, W, 3) uint8."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:height, 0:width].astype(np.float32)
    img = np.stack([xx / max(width, 1), yy / max(height, 1), 0.5 + 0.5 * np.sin((xx + yy) / 7.0)], -1) * 200
    for _ in range(4):
        y0, x0 = rng.integers(0, max(height, 1)), rng.integers(0, max(width, 1))
        img[y0:y0 + height // 3, x0:x0 + width // 3] = rng.integers(0, 256, 3)
    return np.clip(img + rng.normal(0, 3, img.shape), 0, 255).astype(np.uint8)


@pytest.fixture(scope="session")
def image_folder(tmp_path_factory) -> str:
    folder = tmp_path_factory.mktemp("images")
    for i in range(6):
        Image.fromarray(synthetic_image(80, 96, seed=i)).save(folder / f"img{i}.png")
    return str(folder)


@pytest.fixture(scope="session")
def tiny_model(image_folder, tmp_path_factory):
    """The 'tiny' configuration trained for a few seconds on synthetic images (eK range 2..4096)."""
    from raqcodec.train import TrainOptions, train

    out = tmp_path_factory.mktemp("model") / "tiny.pt"
    model = train(TrainOptions(sources=[image_folder], out=str(out), config="tiny", steps=40, batch=4, crop=32,
                               lr=2e-3, seed=0, checkpoint_minutes=60))
    model.path = str(out)
    return model


@pytest.fixture(scope="session")
def two_stage_model(image_folder, tmp_path_factory):
    """The 'tiny' configuration with a residual stage (eK 2..4096 per stage), trained for a few seconds."""
    from raqcodec.train import TrainOptions, train

    out = tmp_path_factory.mktemp("model2") / "tiny2.pt"
    model = train(TrainOptions(sources=[image_folder], out=str(out), config="tiny", steps=40, batch=4, crop=32,
                               lr=2e-3, seed=0, checkpoint_minutes=60, config_overrides={"stages": 2}))
    model.path = str(out)
    return model
