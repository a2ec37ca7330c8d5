"""Reading, writing and tensor conversion of images.

Pixel arrays are numpy uint8 ``(H, W, 3)`` in [0, 255]; image tensors are float32
``(1, 3, H, W)`` in [0, 1]. Every bad input raises :class:`CodecError` with a one-line
message; files are written atomically (temp file in the same folder, then ``os.replace``).
"""

from __future__ import annotations

import io
import os
import secrets
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, BinaryIO

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from raqcodec.errors import CodecError

if TYPE_CHECKING:  # torch is imported by the three functions that need it: reading and writing images does not
    import torch

MAX_PIXELS = 2**27
"""Largest image accepted (width * height), checked before any pixel is decoded."""

PNG_COMPRESS_LEVEL = 3
"""zlib level of the PNGs written: on a decoded 1280x960 photo 0.17 s and 1.0 % larger than Pillow's default 6
(0.53 s)."""

COLOR_RGB = 0
"""``color_mode`` of a colour source image."""
COLOR_GREY = 1
"""``color_mode`` of a greyscale source image (L, LA, 1-bit, 16-bit grey, H x W arrays)."""

_SIXTEEN_BIT_MODES = frozenset({"I;16", "I;16L", "I;16B", "I;16N", "I"})
_GREY_MODES = frozenset({"L", "LA", "1"})
_RGB_MODES = frozenset({"RGB", "RGBA", "RGBX", "CMYK", "YCbCr", "P", "PA"})
_ALPHA_MODES = frozenset({"RGBA", "LA", "PA"})
_DECODE_ERRORS = (OSError, ValueError, EOFError, SyntaxError)


def load_image(image: str | os.PathLike | Image.Image | np.ndarray) -> tuple[np.ndarray, int]:
    """Load an image file, PIL image or array as 8-bit RGB.

    Accepted arrays: uint8 or uint16, shaped (H, W), (H, W, 3) or (H, W, 4). 16-bit values
    v are reduced to round(v / 257), so 65535 -> 255 and 257 * k -> k. Alpha (or PNG
    transparency) is dropped with a warning. Greyscale sources are replicated to 3 channels.
    EXIF orientation is applied. Pillow itself reduces 16-bit *colour* PNGs to their high
    byte (floor(v / 256)), which can differ from rounding by 1.

    Returns:
        (pixels, color_mode): pixels uint8 (H, W, 3) in [0, 255], writable and contiguous;
        color_mode is COLOR_RGB (0) or COLOR_GREY (1).
    """
    if isinstance(image, np.ndarray):
        return _from_array(image)
    if isinstance(image, Image.Image):
        return _from_pil(image, "PIL image")
    path = Path(image)
    with _open_lazily(path) as im:
        return _from_pil(im, str(path))


def _open_lazily(path: Path) -> Image.Image:
    """Open the image file at ``path`` reading only its header (size, mode), not its pixels."""
    if not path.exists():
        raise CodecError(f"{path}: no such file")
    if path.is_dir():
        raise CodecError(f"{path}: is a directory, not an image file")
    if path.stat().st_size == 0:
        raise CodecError(f"{path}: empty file")
    return _open_checked(path, str(path))


def open_image_bytes(data: bytes, name: str = "<stdin>") -> Image.Image:
    """A lazily opened PIL image from the bytes of an image file (e.g. read from a pipe), checked as
    load_image checks files; ``name`` labels error messages."""
    if not data:
        raise CodecError(f"{name}: empty input")
    return _open_checked(io.BytesIO(data), name)


def _open_checked(source: Path | BinaryIO, name: str) -> Image.Image:
    """Image.open with its failures turned into one-line CodecErrors."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            return Image.open(source)
    except UnidentifiedImageError:
        raise CodecError(f"{name}: not an image file Pillow can read") from None
    except Image.DecompressionBombError:
        raise CodecError(f"{name}: image has more than {MAX_PIXELS} pixels") from None
    except OSError as e:
        raise CodecError(f"{name}: cannot read ({_reason(e)})") from None


def _from_pil(im: Image.Image, name: str) -> tuple[np.ndarray, int]:
    """Decode a (possibly lazy) PIL image; ``name`` labels error messages."""
    _check_size(im.width, im.height, name)
    try:
        im.load()
        if im.mode in _ALPHA_MODES or "transparency" in im.info:
            _warn_alpha_dropped(name)
        im = ImageOps.exif_transpose(im)
    except _DECODE_ERRORS:
        raise CodecError(f"{name}: corrupt or truncated image data") from None
    return _expand_grey(_pil_to_array(im, name))


def _pil_to_array(im: Image.Image, name: str) -> np.ndarray:
    """Return uint8 pixels of a decoded PIL image: (H, W) for grey modes, else (H, W, 3)."""
    if im.mode in _SIXTEEN_BIT_MODES:
        return _reduce_16_to_8(np.asarray(im), name)
    if im.mode in _GREY_MODES:
        return np.array(im.convert("L"))
    if im.mode in _RGB_MODES:
        return np.array(im.convert("RGB"))
    raise CodecError(f"{name}: unsupported pixel mode {im.mode!r}")


def _from_array(arr: np.ndarray) -> tuple[np.ndarray, int]:
    """Validate a uint8/uint16 array (H, W), (H, W, 3) or (H, W, 4) and convert it."""
    name = "array"
    if arr.dtype not in (np.uint8, np.uint16):
        raise CodecError(f"{name}: dtype {arr.dtype} not supported (use uint8 or uint16)")
    if not (arr.ndim == 2 or (arr.ndim == 3 and arr.shape[2] in (3, 4))):
        raise CodecError(f"{name}: shape {arr.shape} not supported (use HxW, HxWx3 or HxWx4)")
    _check_size(arr.shape[1], arr.shape[0], name)
    if arr.ndim == 3 and arr.shape[2] == 4:
        _warn_alpha_dropped(name)
        arr = arr[:, :, :3]
    arr = _reduce_16_to_8(arr, name) if arr.dtype == np.uint16 else arr.copy()
    return _expand_grey(arr)


def _check_size(width: int, height: int, name: str) -> None:
    """Refuse empty images and images of more than MAX_PIXELS pixels."""
    if width < 1 or height < 1:
        raise CodecError(f"{name}: image is empty ({width}x{height} pixels)")
    if width * height > MAX_PIXELS:
        raise CodecError(f"{name}: image is {width}x{height}, more than the {MAX_PIXELS} pixels allowed")


def _reduce_16_to_8(values: np.ndarray, name: str) -> np.ndarray:
    """Map 16-bit values v in [0, 65535] to uint8 round(v / 257) (exact: 257 is odd, no ties)."""
    if values.size and (values.min() < 0 or values.max() > 65535):
        raise CodecError(f"{name}: pixel values outside the 16-bit range [0, 65535]")
    return ((values.astype(np.uint32) + 128) // 257).astype(np.uint8)


def _expand_grey(pixels: np.ndarray) -> tuple[np.ndarray, int]:
    """(H, W) -> replicated (H, W, 3), COLOR_GREY; (H, W, 3) -> itself (contiguous, writable), COLOR_RGB."""
    if pixels.ndim == 2:
        return np.repeat(pixels[:, :, None], 3, axis=2), COLOR_GREY
    return np.require(pixels, requirements=["C", "W"]), COLOR_RGB


def _warn_alpha_dropped(name: str) -> None:
    """Warn that transparency is discarded (the codec codes opaque RGB only)."""
    # stacklevel 4: the line that called load_image
    warnings.warn(f"{name}: alpha channel dropped; only RGB is coded", stacklevel=4)


def to_pil(pixels: np.ndarray, color_mode: int) -> Image.Image:
    """(H, W, 3) uint8 pixels -> an RGB image, or for COLOR_GREY an L image of the rounded channel mean."""
    if pixels.dtype != np.uint8 or pixels.ndim != 3 or pixels.shape[2] != 3:
        raise CodecError(f"pixels must be uint8 (H, W, 3), got {pixels.dtype} {pixels.shape}")
    if color_mode == COLOR_RGB:
        return Image.fromarray(pixels)
    if color_mode == COLOR_GREY:
        total = pixels.sum(axis=2, dtype=np.uint16)
        return Image.fromarray(((total + 1) // 3).astype(np.uint8))
    raise CodecError(f"unknown color mode {color_mode} (expected 0 = RGB or 1 = greyscale)")


def save_image_atomic(img: Image.Image, path: str | os.PathLike, *, force: bool) -> None:
    """Write ``img`` to ``path`` in the format its extension names (.png, .jpg, ...).

    An unknown or missing extension, an existing path without ``force``, or a write
    failure raises CodecError; no partial or temporary file is left behind.
    """
    path = Path(path)
    image_format = Image.registered_extensions().get(path.suffix.lower())
    if image_format is None or image_format not in Image.SAVE:
        raise CodecError(f"{path}: unknown image file extension {path.suffix!r} (try .png)")
    options = {"compress_level": PNG_COMPRESS_LEVEL} if image_format == "PNG" else {}
    _write_atomic(path, lambda f: img.save(f, format=image_format, **options), force=force)


def png_bytes(img: Image.Image) -> bytes:
    """The image as a PNG file in memory (for a pipe)."""
    buffer = io.BytesIO()
    img.save(buffer, format="PNG", compress_level=PNG_COMPRESS_LEVEL)
    return buffer.getvalue()


def write_bytes_atomic(data: bytes, path: str | os.PathLike, *, force: bool) -> None:
    """Write ``data`` to ``path`` with the same rules as :func:`save_image_atomic`."""
    _write_atomic(Path(path), lambda f: f.write(data), force=force)


def _write_atomic(path: Path, write: Callable[[BinaryIO], object], *, force: bool) -> None:
    """Call ``write`` on a fresh temp file next to ``path``, fsync it, then rename it onto ``path``.

    The temp file is created with mode 0o666 (the umask applies, as for a plain open) and is
    removed if anything fails, including KeyboardInterrupt.
    """
    if path.is_dir():
        raise CodecError(f"{path}: is a directory")
    if path.exists() and not force:
        raise CodecError(f"{path}: already exists (overwriting not requested)")
    tmp = path.with_name(f".{path.name}.{secrets.token_hex(6)}.tmp")
    try:
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
    except OSError as e:
        raise CodecError(f"{path}: cannot write ({_reason(e)})") from None
    try:
        with os.fdopen(fd, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException as e:
        tmp.unlink(missing_ok=True)
        if isinstance(e, OSError):
            raise CodecError(f"{path}: cannot write ({_reason(e)})") from None
        raise


def _reason(e: OSError) -> str:
    """A one-line reason for an OSError (its strerror, else the first line of its message)."""
    return e.strerror or (str(e).splitlines() or [type(e).__name__])[0]


def pad_to_multiple(x: torch.Tensor, multiple: int) -> torch.Tensor:
    """(B, C, H, W) -> (B, C, H', W') with H', W' the next multiples of ``multiple``.

    Pads at the bottom and right by repeating the edge pixels (works for 1-pixel images,
    unlike reflection). Crop back with ``y[..., :H, :W]``.
    """
    import torch.nn.functional as F

    if x.dim() != 4 or multiple < 1:
        raise CodecError(f"pad_to_multiple needs (B, C, H, W) and multiple >= 1: {tuple(x.shape)} {multiple}")
    pad_h = -x.shape[2] % multiple
    pad_w = -x.shape[3] % multiple
    if pad_h == 0 and pad_w == 0:
        return x
    return F.pad(x, (0, pad_w, 0, pad_h), mode="replicate")


def to_tensor(pixels: np.ndarray) -> torch.Tensor:
    """(H, W, 3) uint8 in [0, 255] -> float32 (1, 3, H, W) in [0, 1]."""
    import torch

    if pixels.dtype != np.uint8 or pixels.ndim != 3 or pixels.shape[2] != 3:
        raise CodecError(f"pixels must be uint8 (H, W, 3), got {pixels.dtype} {pixels.shape}")
    return torch.tensor(pixels).permute(2, 0, 1).unsqueeze(0).float().div(255.0).contiguous()


def to_uint8(x: torch.Tensor) -> np.ndarray:
    """(1, 3, H, W) float in [0, 1] (clamped, rounded) -> (H, W, 3) uint8 in [0, 255]."""
    if x.dim() != 4 or x.shape[0] != 1 or x.shape[1] != 3:
        raise CodecError(f"expected a (1, 3, H, W) tensor, got {tuple(x.shape)}")
    import torch

    scaled = x.detach()[0].clamp(0.0, 1.0).mul(255.0).round().to(torch.uint8)
    return scaled.permute(1, 2, 0).contiguous().cpu().numpy()
