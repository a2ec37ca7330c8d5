"""`raq rd`: rate-distortion curves of raqcodec and of JPEG, WebP, AVIF, JPEG XL and HEIC (via Pillow and its
plugins) over an image folder.

A curve is a dict in CompressAI's results format, its points sorted by rate:

    {"name": str, "results": {"bpp": [...], "psnr-rgb": [...], "ms-ssim-rgb": [...]}}

bpp: bits per pixel of the whole coded file; psnr-rgb: PSNR in dB over RGB in [0, 255]; ms-ssim-rgb: raw MS-SSIM
in (0, 1]. Curves are measured the CompressAI way: every image is coded, decoded to 8-bit RGB and scored, then each
rate point is the MEAN over the images of bpp, PSNR and MS-SSIM. Published curves ("anchors") are read from
CompressAI JSON files, where either quality key may be missing.
"""
from __future__ import annotations

import importlib
import io
import json
import math
import sys
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from matplotlib.axes import Axes
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from PIL import Image, features
from tqdm import tqdm

from raqcodec.bd import bd_psnr, bd_rate
from raqcodec.codec import (ENTROPY_MODELS, FORMAT_1_CODER, Setting, analyse, as_setting, check_setting, encode_latent,
                            get_model, reconstruct)
from raqcodec.data import list_images
from raqcodec.errors import CodecError
from raqcodec.image_io import load_image
from raqcodec.metrics import DB_CAP, ms_ssim, psnr
from raqcodec.models import RAQVAE
from raqcodec.ratecontrol import choose_setting, smallest_file

Curve = dict[str, Any]

RAQ_SIZES = (2, 3, 4, 6, 8, 12, 16, 24, 32, 48, 64, 128, 256, 512, 1024, 2048, 4096)
"""Default eK sweep of a raqcodec curve along each stage of the rate ladder, clipped to each model's range."""

JXL_QUALITIES = (1, 5, 10, 20, 30, 40, 50, 60, 70, 80, 85)
HEIC_QUALITIES = (1, 5, 10, 15, 20, 25, 30, 35, 40, 45, 50)
PILLOW_CODECS = {
    "jpeg": ("JPEG", (3, 5, 10, 15, 20, 30, 40, 50, 60, 75, 85)),
    "webp": ("WEBP", (0, 5, 10, 20, 30, 40, 50, 60, 70, 80, 90)),
    "avif": ("AVIF", (10, 15, 20, 25, 30, 40, 50, 60, 70, 80)),
    "jxl": ("JXL", JXL_QUALITIES),
    "heic": ("HEIF", HEIC_QUALITIES),
}
"""Codec name -> (Pillow format, quality sweep spanning about 0.1 to 2 bits per pixel on Kodak)."""

PLUGIN_CODECS = {"jxl": "pillow_jxl", "heic": "pillow_heif"}
"""Codecs that need a Pillow plugin (the optional 'baselines' extra) -> its module; skipped when missing."""

RAQ_TARGETS = (0.06, 0.08, 0.1, 0.125, 0.15, 0.2, 0.25, 0.3, 0.4, 0.5, 0.6, 0.75, 0.9, 1.1, 1.3, 1.5)
"""Default --bpp targets of a raqcodec curve (each image coded by rate control at every target)."""

CODECS = ("raq", "raq-nearest", *PILLOW_CODECS)
"""raq: rate control at each target (rate-aware indices, every entropy model); raq-nearest: the format-1 coder
(nearest codewords, entropy models 0 and 1) over the rate ladder: the coder before entropy model 2."""


@dataclass
class RDResult:
    """The rd.json document and the names of the curves measured here (the others are anchors)."""

    doc: dict[str, Any]
    measured: list[str]

    def markdown(self) -> str:
        """A Markdown table of points per measured curve, then the BD table."""
        tables = [f"### {name}\n\n{points_markdown(self.doc['codecs'][name])}" for name in self.measured]
        return "\n\n".join([*tables, bd_markdown(self.doc["bd"])])


def load_images(folder: str | Path, limit: int | None = None) -> list[np.ndarray]:
    """The first `limit` images of `folder` by name (all when None), as (H, W, 3) uint8 RGB in [0, 255]."""
    folder = Path(folder)
    if not folder.is_dir():
        raise CodecError(f"no such folder: {folder}")
    paths = list_images(folder)[:limit]
    if not paths:
        raise CodecError(f"no images in {folder}")
    return [load_image(path)[0] for path in paths]


def make_curve(name: str, results: dict[str, Sequence[float]]) -> Curve:
    """A curve from per-point lists of equal length (any order); every list is re-ordered by increasing bpp."""
    order = np.argsort(np.asarray(results["bpp"], dtype=np.float64), kind="stable")
    return {"name": name, "results": {key: [float(values[i]) for i in order] for key, values in results.items()}}


def _score(original: np.ndarray, decoded: np.ndarray, nbytes: int) -> tuple[float, float, float]:
    """(bits per pixel of an nbytes file, PSNR in dB, raw MS-SSIM) of one decoded (H, W, 3) uint8 image."""
    height, width = original.shape[:2]
    return nbytes * 8 / (width * height), psnr(original, decoded), ms_ssim(original, decoded)


def _mean_curve(name: str, scores: np.ndarray) -> Curve:
    """The curve of per-point means of scores (points, images, 3) of (bpp, PSNR dB, MS-SSIM)."""
    bpp, psnr_db, ssim = scores.mean(axis=1).T
    return make_curve(name, {"bpp": bpp, "psnr-rgb": psnr_db, "ms-ssim-rgb": ssim})


def _progress(name: str, total: int, enabled: bool) -> tqdm:
    """A progress bar on stderr counting coded images."""
    return tqdm(total=total, desc=name, file=sys.stderr, disable=not enabled)


def pillow_encode(image: np.ndarray, fmt: str, quality: int) -> bytes:
    """Code (H, W, 3) uint8 pixels with Pillow ("JPEG", "WEBP", "AVIF") at a quality (default subsampling)."""
    buffer = io.BytesIO()
    Image.fromarray(image).save(buffer, format=fmt, quality=quality)
    return buffer.getvalue()


def pillow_decode(data: bytes) -> np.ndarray:
    """The inverse of pillow_encode: (H, W, 3) uint8 RGB pixels."""
    with Image.open(io.BytesIO(data)) as decoded:
        return np.asarray(decoded.convert("RGB"))


def pillow_roundtrip(image: np.ndarray, fmt: str, quality: int) -> tuple[np.ndarray, int]:
    """pillow_encode then pillow_decode -> (decoded RGB pixels, coded bytes)."""
    data = pillow_encode(image, fmt, quality)
    return pillow_decode(data), len(data)


def measure_pillow(images: Sequence[np.ndarray], fmt: str, qualities: Sequence[int], *, name: str | None = None,
                   progress: bool = True) -> Curve:
    """The curve of a Pillow format ("JPEG", "WEBP", "AVIF") over a quality sweep, named `name` (default fmt)."""
    name = name or fmt
    scores = np.zeros((len(qualities), len(images), 3))
    with _progress(name, len(qualities) * len(images), progress) as bar:
        for i, image in enumerate(images):
            for j, quality in enumerate(qualities):
                decoded, nbytes = pillow_roundtrip(image, fmt, quality)
                scores[j, i] = _score(image, decoded, nbytes)
                bar.update()
    return _mean_curve(name, scores)


def ladder_sweep(model: RAQVAE, sizes: Sequence[int | Setting] = RAQ_SIZES) -> list[Setting]:
    """Settings of a raqcodec curve: plain eK values are swept along every stage of the model's rate ladder
    (stage 1 alone at each eK, then stage s at each eK with the earlier stages at the largest), clipped to its
    range; tuples are exact settings, kept as given (CodecError if one does not fit the model)."""
    cfg = model.cfg
    exact = [size for size in sizes if isinstance(size, tuple)]
    for setting in exact:
        check_setting(model, setting)
    kept = [size for size in sizes if not isinstance(size, tuple) and cfg.min_codebook_size <= size <= cfg.max_codebook_size]
    if not kept and not exact:
        raise CodecError(f"no codebook size in {list(sizes)} is inside the model's range "
                         f"{cfg.min_codebook_size}..{cfg.max_codebook_size}")
    return cfg.ladder(kept) + exact


@torch.no_grad()
def measure_raq(model: RAQVAE, images: Sequence[np.ndarray], settings: Sequence[Setting], *, name: str = "raqcodec",
                progress: bool = True, entropy_models: tuple[int, ...] = ENTROPY_MODELS) -> Curve:
    """The curve of a model over settings (one eK per stage, all inside its range), with real .raq file sizes,
    nearest-codeword indices and the writer's choice among entropy_models.

    Each image is analysed once; its latent is re-quantised, coded and decoded per setting.
    """
    scores = np.zeros((len(settings), len(images), 3))
    with _progress(name, len(settings) * len(images), progress) as bar:
        for i, image in enumerate(images):
            latent = analyse(model, image)
            for j, setting in enumerate(settings):
                encoded = encode_latent(model, latent, setting, entropy_models=entropy_models)
                decoded = reconstruct(model, encoded.indices, setting, latent.width, latent.height)
                scores[j, i] = _score(image, decoded, len(encoded.data))
                bar.update()
    return _mean_curve(name, scores)


@torch.no_grad()
def measure_raq_targets(model: RAQVAE, images: Sequence[np.ndarray], targets: Sequence[float], *,
                        name: str = "raqcodec", progress: bool = True) -> Curve:
    """The curve of a model coding every image at each bpp target by rate control (raq compress --bpp).

    A target below an image's smallest achievable rate gives its smallest file; above its largest, the
    largest (as --bpp does, without the warning).
    """
    scores = np.zeros((len(targets), len(images), 3))
    with _progress(name, len(targets) * len(images), progress) as bar:
        for i, image in enumerate(images):
            latent = analyse(model, image)
            for j, target in enumerate(targets):
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore")
                    try:
                        encoded = choose_setting(model, latent, target)
                    except CodecError:
                        encoded = smallest_file(model, latent)
                decoded = reconstruct(model, encoded.indices, encoded.setting, latent.width, latent.height)
                scores[j, i] = _score(image, decoded, len(encoded.data))
                bar.update()
    return _mean_curve(name, scores)


def load_anchor(path: str | Path) -> Curve:
    """A published curve from a CompressAI results JSON file, named by its "name" field.

    Keeps bpp, psnr-rgb and ms-ssim-rgb; an "ms-ssim-db-rgb" list (dB) stands in for a missing ms-ssim-rgb.
    At least one quality list is required. CodecError for an unreadable or malformed file.
    """
    path = Path(path)
    try:
        doc = json.loads(path.read_text())
    except OSError as exc:
        raise CodecError(f"cannot read anchor {path}: {exc.strerror}") from None
    except ValueError:
        raise CodecError(f"anchor {path} is not a JSON file") from None
    results = doc.get("results") if isinstance(doc, dict) else None
    if not isinstance(results, dict) or not isinstance(doc.get("name"), str) or "bpp" not in results:
        raise CodecError(f"anchor {path} is not a CompressAI results file (needs 'name' and 'results' with 'bpp')")
    count = len(results["bpp"]) if isinstance(results["bpp"], list) else -1
    kept = {key: _numbers(results[key], count, f"{path}: {key}") for key in ("bpp", "psnr-rgb", "ms-ssim-rgb")
            if key in results}
    if "ms-ssim-rgb" not in kept and "ms-ssim-db-rgb" in results:
        ssim_db = _numbers(results["ms-ssim-db-rgb"], count, f"{path}: ms-ssim-db-rgb")
        kept["ms-ssim-rgb"] = [1.0 - 10.0 ** (-db / 10.0) for db in ssim_db]
    if len(kept) == 1:
        raise CodecError(f"anchor {path} has no psnr-rgb, ms-ssim-rgb or ms-ssim-db-rgb results")
    return make_curve(doc["name"], kept)


def _numbers(values: Any, count: int, what: str) -> list[float]:
    """`values` as floats, checked to be a list of `count` finite numbers (CodecError naming `what` if not)."""
    if not isinstance(values, list) or len(values) != count or not all(
            isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v) for v in values):
        raise CodecError(f"{what} must be a list of finite numbers, one per bpp value")
    return [float(v) for v in values]


def bd_table(curves: dict[str, Curve], reference: str) -> dict[str, Any]:
    """BD-rate (percent) and BD-PSNR (dB) of every curve against the reference curve, both PSNR based.

    Returns {"reference": name, "rows": {name: {"bd_rate_percent": float|None, "bd_psnr_db": float|None}}};
    None where a curve has no PSNR, fewer than 4 points, or no overlap with the reference.
    """
    if reference not in curves:
        raise CodecError(f"reference codec {reference!r} is not among the curves: {', '.join(curves)}")
    ref = curves[reference]["results"]
    rows = {name: {"bd_rate_percent": _bd_or_none(bd_rate, ref, curve["results"]),
                   "bd_psnr_db": _bd_or_none(bd_psnr, ref, curve["results"])} for name, curve in curves.items()}
    return {"reference": reference, "rows": rows}


def _bd_or_none(metric: Callable[..., float], ref: dict[str, list[float]],
                test: dict[str, list[float]]) -> float | None:
    """metric(ref bpp, ref PSNR, test bpp, test PSNR), or None when either has no PSNR or the metric is undefined."""
    if "psnr-rgb" not in ref or "psnr-rgb" not in test:
        return None
    try:
        return metric(ref["bpp"], ref["psnr-rgb"], test["bpp"], test["psnr-rgb"])
    except CodecError:
        return None


def bd_markdown(bd: dict[str, Any]) -> str:
    """The BD table as Markdown (n/a where undefined)."""
    def cell(value: float | None) -> str:
        return "n/a" if value is None else f"{value:+.2f}"

    lines = [f"BD against {bd['reference']} (PSNR):", "", "| codec | BD-rate % | BD-PSNR dB |", "|---|---:|---:|"]
    lines += [f"| {name} | {cell(row['bd_rate_percent'])} | {cell(row['bd_psnr_db'])} |"
              for name, row in bd["rows"].items()]
    return "\n".join(lines)


def points_markdown(curve: Curve) -> str:
    """A measured curve's points as Markdown: bpp, PSNR dB, MS-SSIM and MS-SSIM dB."""
    results = curve["results"]
    lines = ["| bpp | PSNR dB | MS-SSIM | MS-SSIM dB |", "|---:|---:|---:|---:|"]
    for bpp, psnr_db, ssim, ssim_db in zip(results["bpp"], results["psnr-rgb"], results["ms-ssim-rgb"],
                                           ms_ssim_to_db(results["ms-ssim-rgb"])):
        lines.append(f"| {bpp:.4f} | {psnr_db:.2f} | {ssim:.4f} | {ssim_db:.2f} |")
    return "\n".join(lines)


def ms_ssim_to_db(values: Sequence[float]) -> np.ndarray:
    """Raw MS-SSIM values -> dB, -10 log10(1 - ms_ssim), capped at DB_CAP (100 dB)."""
    distance = 1.0 - np.asarray(values, dtype=np.float64)
    return -10.0 * np.log10(np.maximum(distance, 10.0 ** (-DB_CAP / 10.0)))


def plot(curves: dict[str, Curve], path: str | Path, title: str, *, dashed: Sequence[str] = (),
         x_max: float = 1.5) -> None:
    """Write a PNG (Agg) of two panels: PSNR (dB) and MS-SSIM (dB) against rate (bits per pixel).

    Curves named in `dashed` (anchors) are dashed lines labelled "(anchor)"; the others solid with markers.
    The rate axis spans 0..x_max bits per pixel and each quality axis the points inside it.
    """
    fig = Figure(figsize=(12, 5), dpi=120)
    FigureCanvasAgg(fig)
    ax_psnr, ax_ssim = fig.subplots(1, 2)
    for index, (name, curve) in enumerate(curves.items()):
        style = {"color": f"C{index % 10}", "linewidth": 1.5}
        if name in dashed:
            style.update(label=f"{name} (anchor)", linestyle="--")
        else:
            style.update(label=name, linestyle="-", marker="o", markersize=3.5)
        results = curve["results"]
        if "psnr-rgb" in results:
            ax_psnr.plot(results["bpp"], results["psnr-rgb"], **style)
        if "ms-ssim-rgb" in results:
            ax_ssim.plot(results["bpp"], ms_ssim_to_db(results["ms-ssim-rgb"]), **style)
    _finish_axes(ax_psnr, "PSNR (dB)", x_max)
    _finish_axes(ax_ssim, "MS-SSIM (dB)", x_max)
    fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(path)


def _finish_axes(ax: Axes, ylabel: str, x_max: float) -> None:
    """Labels, grid and legend; the rate axis 0..x_max and the quality axis fitted to the points inside it."""
    ax.set_xlim(0.0, x_max)
    visible = [np.asarray(line.get_ydata())[np.asarray(line.get_xdata()) <= x_max] for line in ax.lines]
    values = np.concatenate(visible) if visible else np.zeros(0)
    if values.size:
        margin = max(0.05 * (values.max() - values.min()), 0.5)
        ax.set_ylim(values.min() - margin, values.max() + margin)
    ax.set_xlabel("rate (bits per pixel)")
    ax.set_ylabel(ylabel)
    ax.grid(True, alpha=0.3)
    if ax.lines:
        ax.legend(fontsize="small", loc="lower right")


def _x_max(curves: Sequence[Curve]) -> float:
    """Rate-axis end in bits per pixel: 2.5 times the highest rate of the raqcodec curves, else 1.5."""
    if not curves:
        return 1.5
    return 2.5 * max(max(curve["results"]["bpp"]) for curve in curves)


def split_list(text: str, option: str) -> list[str]:
    """The non-empty, stripped items of a comma-separated option value (CodecError if there are none)."""
    items = [item.strip() for item in text.split(",") if item.strip()]
    if not items:
        raise CodecError(f"{option} is empty")
    return items


def parse_sizes(text: str) -> list[int | Setting]:
    """A comma-separated list of codebook sizes: integers eK (swept along the ladder) or exact settings
    eK+eK+... (tuples)."""
    items = split_list(text, "--codebook-sizes")
    try:
        return [as_setting(item) if "+" in item else int(item) for item in items]
    except (ValueError, CodecError):
        raise CodecError(f"--codebook-sizes must be comma-separated integers or eK+eK settings, got {text!r}") from None


def parse_targets(text: str) -> list[float]:
    """A comma-separated list of positive bpp targets."""
    items = split_list(text, "--targets")
    try:
        values = [float(item) for item in items]
    except ValueError:
        values = []
    if not values or any(not (math.isfinite(v) and v > 0) for v in values):
        raise CodecError(f"--targets must be comma-separated positive numbers, got {text!r}")
    return values


def plugin_codec_ready(codec: str) -> bool:
    """Whether a PLUGIN_CODECS codec can be written here: its plugin imports (and is registered)."""
    try:
        module = importlib.import_module(PLUGIN_CODECS[codec])
    except ImportError:
        return False
    if hasattr(module, "register_heif_opener"):
        module.register_heif_opener()
    return PILLOW_CODECS[codec][0] in Image.SAVE


def parse_codecs(codecs: Sequence[str]) -> tuple[list[str], dict[str, str]]:
    """(codec names checked against CODECS and AVIF support of this Pillow, {skipped plugin codec: why})."""
    unknown = [codec for codec in codecs if codec not in CODECS]
    if unknown:
        raise CodecError(f"unknown codec {unknown[0]!r}; choose from {', '.join(CODECS)}")
    if "avif" in codecs and not features.check("avif"):
        raise CodecError("this Pillow cannot write AVIF; leave avif out of the codecs")
    skipped = {codec: f"{PLUGIN_CODECS[codec]} is not installed (pip install 'raqcodec[baselines]')"
               for codec in codecs if codec in PLUGIN_CODECS and not plugin_codec_ready(codec)}
    for codec, why in skipped.items():
        warnings.warn(f"{codec} skipped: {why}", stacklevel=2)
    return [codec for codec in dict.fromkeys(codecs) if codec not in skipped], skipped


def _raq_names(models: Sequence[str | None]) -> list[str]:
    """Curve names: "raqcodec" for one model, "raqcodec:<file stem>" for several (CodecError if stems repeat)."""
    if len(models) == 1:
        return ["raqcodec"]
    names = [f"raqcodec:{Path(model).stem if model else 'default'}" for model in models]
    if len(set(names)) < len(names):
        raise CodecError("models must have different file names (their curves are named after them)")
    return names


def _name_anchors(anchors: Sequence[Curve], sources: Sequence[str | Path], taken: set[str]) -> dict[str, Curve]:
    """Anchors keyed by name; a name already taken becomes "name (file stem)" (CodecError if that is taken too)."""
    named: dict[str, Curve] = {}
    for curve, source in zip(anchors, sources):
        name = curve["name"]
        if name in taken:
            name = f"{name} ({Path(source).stem})"
        if name in taken:
            raise CodecError(f"two curves are named {name!r}")
        taken.add(name)
        named[name] = {**curve, "name": name}
    return named


def run_rd(folder: str | Path, *, models: Sequence[str | None] = (None,), codecs: Sequence[str] = CODECS,
           anchors: Sequence[str | Path] = (), limit: int | None = None, reference: str = "jpeg",
           sizes: Sequence[int | Setting] = RAQ_SIZES, targets: Sequence[float] = RAQ_TARGETS,
           device: str = "auto", out_png: str | Path | None = None, out_json: str | Path | None = None,
           progress: bool = True) -> RDResult:
    """Measure the codecs on the first `limit` images of `folder`, add the anchors, BD against `reference`.

    models: model files for "raq" and "raq-nearest" (None or none given: the shipped model), one curve each:
    "raq" codes each image at every bpp target (rate control), "raq-nearest" (curve name suffixed "-nearest")
    at every setting of the ladder sweep of `sizes` with the format-1 coder. Writes the rd.json document to
    out_json and the plot to out_png when given. Inputs are checked before anything is measured.
    """
    codecs, skipped = parse_codecs(codecs)
    models = list(models or [None])
    names = _raq_names(models) if {"raq", "raq-nearest"} & set(codecs) else []
    raq_names = names if "raq" in codecs else []
    nearest_names = [f"{name}-nearest" for name in names] if "raq-nearest" in codecs else []
    pillow = [codec for codec in codecs if codec in PILLOW_CODECS]
    measured_names = raq_names + nearest_names + pillow
    anchor_curves = _name_anchors([load_anchor(path) for path in anchors], anchors, set(measured_names))
    if reference not in measured_names and reference not in anchor_curves:
        raise CodecError(f"reference codec {reference!r} is not among the curves: "
                         f"{', '.join(measured_names + list(anchor_curves))}")
    if raq_names and (not targets or any(not (math.isfinite(t) and t > 0) for t in targets)):
        raise CodecError(f"bpp targets must be positive numbers, got {list(targets)}")
    images = load_images(folder, limit)
    raq_models = {name: get_model(path, device) for name, path in zip(names, models)}
    raq_sizes = {name: ladder_sweep(model, sizes) for name, model in raq_models.items()}
    measured: dict[str, Curve] = {}
    for name, model in raq_models.items():
        if name in raq_names:
            measured[name] = measure_raq_targets(model, images, targets, name=name, progress=progress)
        if nearest_names:
            nearest = f"{name}-nearest"
            measured[nearest] = measure_raq(model, images, raq_sizes[name], name=nearest, progress=progress,
                                            entropy_models=FORMAT_1_CODER)
    for codec in pillow:
        fmt, qualities = PILLOW_CODECS[codec]
        measured[codec] = measure_pillow(images, fmt, qualities, name=codec, progress=progress)
    curves = {**measured, **anchor_curves}
    title = f"{Path(folder).resolve().name}: {len(images)} image{'s' if len(images) != 1 else ''}"
    doc = {"dataset": str(folder), "images": len(images), "codecs": curves, "bd": bd_table(curves, reference),
           "skipped": skipped}
    if out_json is not None:
        Path(out_json).write_text(json.dumps(doc, indent=2) + "\n")
    if out_png is not None:
        plot(curves, out_png, title, dashed=list(anchor_curves),
             x_max=_x_max([measured[name] for name in raq_names + nearest_names]))
    return RDResult(doc, list(measured))
