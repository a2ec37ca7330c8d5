"""raqcodec: a neural image codec built on Rate-Adaptive Quantization (RAQ).

    import raqcodec
    data = raqcodec.compress("photo.png", bpp=0.3)        # or codebook_size=512
    image = raqcodec.decompress(data)                      # PIL.Image.Image
    header = raqcodec.read_header(data)                    # eK, size, model fingerprint, ...
    data = raqcodec.compress("photo.png", psnr=32)        # the smallest file decoding to >= 32 dB

    raqcodec.keep_freed_memory()                          # what `raq` does: faster coding, memory kept

Importing the package is cheap: torch and the model load on the first compress, decompress or load_model.
It registers the Pillow plugin: Image.open("photo.raq") and img.save("photo.raq", bpp=0.3) (pillow_plugin.py).
"""
from __future__ import annotations

import importlib
from typing import Any

from raqcodec import pillow_plugin
from raqcodec.errors import CodecError

pillow_plugin.register()

__all__ = ["CodecError", "compress", "decompress", "keep_freed_memory", "load_model", "read_header"]
__version__ = "0.1.0"

_LAZY = {"compress": "raqcodec.codec", "decompress": "raqcodec.codec", "read_header": "raqcodec.bitstream",
         "load_model": "raqcodec.modelfile", "keep_freed_memory": "raqcodec.allocator"}


def __getattr__(name: str) -> Any:
    """The public functions, imported (with torch, where they need it) on first use."""
    if name not in _LAZY:
        raise AttributeError(f"module 'raqcodec' has no attribute {name!r}")
    value = getattr(importlib.import_module(_LAZY[name]), name)
    globals()[name] = value
    return value
