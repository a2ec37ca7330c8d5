"""raqcodec: a neural image codec built on Rate-Adaptive Quantization (RAQ).

    import raqcodec
    data = raqcodec.compress("photo.png", bpp=0.3)        # or codebook_size=512
    image = raqcodec.decompress(data)                      # PIL.Image.Image
    header = raqcodec.read_header(data)                    # eK, size, model fingerprint, ...
"""
from raqcodec.codec import compress, decompress, read_header
from raqcodec.errors import CodecError
from raqcodec.modelfile import load_model

__all__ = ["CodecError", "compress", "decompress", "load_model", "read_header"]
__version__ = "0.1.0"
