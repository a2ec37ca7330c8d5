"""Training data: image folders and the CIFAR-10 zip, held in memory as uint8 arrays, sampled as random crops."""
from __future__ import annotations

import io
import zipfile
from functools import lru_cache
from pathlib import Path

import numpy as np
import torch
from PIL import Image

IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp", ".ppm"}


def list_images(folder: str | Path) -> list[Path]:
    """Image files directly in `folder`, sorted by name."""
    return sorted(p for p in Path(folder).iterdir() if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file())


def _rgb_array(img: Image.Image) -> np.ndarray:
    return np.asarray(img.convert("RGB"), dtype=np.uint8)


def load_source(source: str | Path, split: str = "train") -> list[np.ndarray]:
    """All images of a folder, or of one split ('train'/'test') of the CIFAR-10 zip, as (H, W, 3) uint8."""
    source = Path(source)
    if source.suffix == ".zip":
        return list(_load_zip(source.resolve(), split))
    return [_rgb_array(Image.open(p)) for p in list_images(source)]


@lru_cache(maxsize=2)
def _load_zip(path: Path, split: str) -> tuple[np.ndarray, ...]:
    """Decoded images of one split of a zip archive, kept in memory (CIFAR-10 train: 150 MB)."""
    with zipfile.ZipFile(path) as zf:
        names = sorted(n for n in zf.namelist() if n.startswith(f"{split}/") and n.lower().endswith((".jpg", ".png")))
        return tuple(_rgb_array(Image.open(io.BytesIO(zf.read(n)))) for n in names)


class CropSampler:
    """Random crops (with horizontal flips) from in-memory images, as (B, 3, S, S) float tensors in [0, 1].

    Images smaller than the crop are padded by reflection first.
    """

    def __init__(self, images: list[np.ndarray], crop: int, seed: int) -> None:
        if not images:
            raise ValueError("no training images")
        self.images, self.crop = images, crop
        self.rng = np.random.default_rng(seed)

    def _crop(self, img: np.ndarray) -> np.ndarray:
        s = self.crop
        h, w = img.shape[:2]
        if h < s or w < s:
            img = np.pad(img, ((0, max(0, s - h)), (0, max(0, s - w)), (0, 0)), mode="reflect")
            h, w = img.shape[:2]
        y, x = self.rng.integers(0, h - s + 1), self.rng.integers(0, w - s + 1)
        out = img[y:y + s, x:x + s]
        return out[:, ::-1] if self.rng.random() < 0.5 else out

    def sample(self, batch: int) -> torch.Tensor:
        picks = self.rng.integers(0, len(self.images), batch)
        arr = np.stack([self._crop(self.images[i]) for i in picks])
        return torch.from_numpy(arr.copy()).permute(0, 3, 1, 2).float().div_(255.0)

    def state(self) -> dict:
        return self.rng.bit_generator.state

    def set_state(self, state: dict) -> None:
        self.rng.bit_generator.state = state


def center_crops(images: list[np.ndarray], size: int) -> torch.Tensor:
    """Central size x size crops of images at least that large, (N, 3, size, size) in [0, 1]."""
    crops = []
    for img in images:
        h, w = img.shape[:2]
        if h >= size and w >= size:
            y, x = (h - size) // 2, (w - size) // 2
            crops.append(img[y:y + size, x:x + size])
    return torch.from_numpy(np.stack(crops)).permute(0, 3, 1, 2).float().div_(255.0)
