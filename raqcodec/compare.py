"""`raq compare`: one picture of an image coded by raqcodec and by other codecs at the same file size.

raqcodec codes the image at a bpp target (rate control); every other codec takes the quality whose file is
the largest not above raqcodec's file (a binary search over its integer quality setting; the lowest quality
when even that is larger, so its bpp in the caption is higher). Each column shows one decoded image: the whole
picture, with the zoomed region outlined, above a nearest-neighbour enlargement of that region; the caption
gives the codec, its whole-file bpp and its PSNR (dB over RGB in [0, 255]).
"""
from __future__ import annotations

import io
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.patches import Rectangle

from raqcodec.codec import decompress, encode, get_model
from raqcodec.errors import CodecError
from raqcodec.image_io import load_image, write_bytes_atomic
from raqcodec.metrics import psnr
from raqcodec.rd import PILLOW_CODECS, parse_codecs, pillow_decode, pillow_encode

QUALITY_RANGES = {"JPEG": (1, 95), "WEBP": (0, 100), "AVIF": (0, 100), "JXL": (0, 100), "HEIF": (0, 100)}
"""Pillow format -> (lowest, highest) quality searched."""
CROP = 128  # side in pixels of the zoomed region (smaller images: their shorter side)


@dataclass
class Panel:
    """One column: a name, decoded (H, W, 3) uint8 pixels, and the whole-file bpp and PSNR (None: original)."""

    name: str
    pixels: np.ndarray
    bpp: float | None = None
    psnr_db: float | None = None


def matched_pillow(pixels: np.ndarray, fmt: str, max_bytes: int) -> bytes:
    """The Pillow-coded file (format fmt) of the highest quality whose size is <= max_bytes; the lowest
    quality's file when none is."""
    lo, hi = QUALITY_RANGES[fmt]
    best = pillow_encode(pixels, fmt, lo)
    while lo < hi:  # invariant: every quality < lo fits, or lo is the lowest
        mid = (lo + hi + 1) // 2
        data = pillow_encode(pixels, fmt, mid)
        if len(data) <= max_bytes:
            lo, best = mid, data
        else:
            hi = mid - 1
    return best


def compare_panels(image, bpp: float, codecs: Sequence[str], *, model=None, device: str = "auto") -> list[Panel]:
    """The original, raqcodec at `bpp`, and each Pillow codec at raqcodec's file size (CodecError for an
    unknown codec; a missing plugin codec is skipped with a warning)."""
    pixels, _ = load_image(image)
    names, _ = parse_codecs(list(codecs))
    net = get_model(model, device)
    raq = encode(pixels, bpp=bpp, model=net)
    pixel_count = pixels.shape[0] * pixels.shape[1]

    def panel(name: str, data: bytes, decoded: np.ndarray) -> Panel:
        return Panel(name, decoded, len(data) * 8 / pixel_count, psnr(pixels, decoded))

    panels = [Panel("original", pixels), panel("raqcodec", raq.data, np.asarray(decompress(raq.data, model=net)))]
    for name in names:
        data = matched_pillow(pixels, PILLOW_CODECS[name][0], len(raq.data))
        panels.append(panel(name, data, pillow_decode(data)))
    return panels


def detail_box(pixels: np.ndarray, side: int) -> tuple[int, int]:
    """(top, left) of the side x side window, on a grid of half-window steps, with the most gradient energy:
    where codecs differ most visibly."""
    grey = pixels.astype(np.float64).mean(-1)
    energy = np.abs(np.diff(grey, axis=0))[:, :-1] + np.abs(np.diff(grey, axis=1))[:-1, :]
    height, width = energy.shape
    step = max(side // 2, 1)
    boxes = [(top, left) for top in range(0, max(height - side, 0) + 1, step)
             for left in range(0, max(width - side, 0) + 1, step)]
    return max(boxes, key=lambda box: energy[box[0]:box[0] + side, box[1]:box[1] + side].sum())


def draw(panels: Sequence[Panel], title: str = "") -> bytes:
    """The comparison picture as PNG bytes: per panel the whole image above the zoomed detail, captioned."""
    height, width = panels[0].pixels.shape[:2]
    side = min(CROP, height, width)
    top, left = detail_box(panels[0].pixels, side)
    column = 3.2
    fig = Figure(figsize=(column * len(panels), column * (height / width + 1) + 0.9), dpi=110)
    FigureCanvasAgg(fig)
    axes = fig.subplots(2, len(panels), squeeze=False, gridspec_kw={"height_ratios": [height / width, 1]})
    for (full, zoom), item in zip(axes.T, panels):
        full.imshow(item.pixels)
        full.add_patch(Rectangle((left, top), side, side, fill=False, edgecolor="red", linewidth=1))
        zoom.imshow(item.pixels[top:top + side, left:left + side], interpolation="nearest")
        caption = item.name if item.bpp is None else f"{item.name}\n{item.bpp:.3f} bpp, {item.psnr_db:.2f} dB"
        full.set_title(caption, fontsize=10)
        for ax in (full, zoom):
            ax.set_axis_off()
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png")
    return buffer.getvalue()


def run_compare(image: str | Path, bpp: float, out_png: str | Path, codecs: Sequence[str], *, model=None,
                device: str = "auto", force: bool = False) -> list[Panel]:
    """compare_panels, drawn and written atomically to out_png (CodecError when it is not a .png path, or
    exists without force)."""
    if Path(out_png).suffix.lower() != ".png":
        raise CodecError(f"{out_png}: the comparison picture is written as PNG; name it .png")
    panels = compare_panels(image, bpp, codecs, model=model, device=device)
    title = f"{Path(image).name} at {bpp:g} bpp (each codec at raqcodec's file size or less)"
    write_bytes_atomic(draw(panels, title), out_png, force=force)
    return panels
