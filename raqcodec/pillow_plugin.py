"""Pillow plugin for .raq files, registered by `import raqcodec`.

    from PIL import Image
    import raqcodec                                   # registers the plugin (cheap: no torch yet)
    img = Image.open("photo.raq")                     # reads the file and its header: size and mode
    img.load()                                        # decodes (torch and the shipped model load here)
    img.save("copy.raq", bpp=0.3)                     # or codebook_size=512 / "4096+64" / psnr=32; model=, device=
    raqcodec.pillow_plugin.register(model="other.pt") # decode with another model (as pillow-heif's options)

Errors keep Pillow's usual types and carry the CodecError message (chained as __cause__): a file with .raq
magic bytes but a bad header raises PIL.UnidentifiedImageError from Image.open; a payload that does not
decode (corrupt, or from another model) raises OSError from load(); an encode that fails raises OSError
from save(), and Pillow removes the file it had created.
"""
from __future__ import annotations

from typing import IO, Any

from PIL import Image, ImageFile, UnidentifiedImageError

from raqcodec.errors import CodecError

FORMAT = "RAQ"
EXTENSION = ".raq"
MIME_TYPE = "image/x-raq"
SAVE_OPTIONS = ("bpp", "codebook_size", "psnr", "model", "device")
"""Keyword arguments of Image.save passed on to raqcodec.compress."""

_decode_options: dict[str, Any] = {"model": None, "device": "auto"}
"""Keyword arguments of raqcodec.decompress for load(), set by register()."""


def _accept(prefix: bytes) -> bool:
    from raqcodec.bitstream import MAGIC

    return prefix[:len(MAGIC)] == MAGIC


class RaqImageFile(ImageFile.ImageFile):
    """A .raq image: opening parses the header, load() decodes with the shipped model."""

    format = FORMAT
    format_description = "raqcodec neural image"

    def _open(self) -> None:
        from raqcodec.bitstream import COLOR_GREY, read_header

        self._data = self.fp.read()
        try:
            header = read_header(self._data)
        except CodecError as exc:
            raise UnidentifiedImageError(f"cannot identify .raq file: {exc}") from exc
        self._size = (header.width, header.height)
        self._mode = "L" if header.color_mode == COLOR_GREY else "RGB"
        self.tile = []
        self.info["codebook_size"] = "+".join(str(size) for size in header.codebook_sizes)

    def load(self):
        if self._im is None:
            from raqcodec.codec import decompress

            try:
                decoded = decompress(self._data, **_decode_options)
            except CodecError as exc:
                raise OSError(f"cannot decode .raq file: {exc}") from exc
            self.im = decoded.im
        return Image.Image.load(self)


def _save(im: Image.Image, fp: IO[bytes], filename: str | bytes) -> None:
    from raqcodec.codec import compress

    options = {key: im.encoderinfo[key] for key in SAVE_OPTIONS if key in im.encoderinfo}
    try:
        fp.write(compress(im, **options))
    except CodecError as exc:
        raise OSError(f"cannot write .raq file: {exc}") from exc


def register(model: Any = None, device: str = "auto") -> None:
    """Register the format, its extension and MIME type with Pillow (idempotent); images opened afterwards
    decode with `model` (a RAQVAE, a model-file path, or None for the shipped model) on `device`."""
    _decode_options.update(model=model, device=device)
    Image.register_open(FORMAT, RaqImageFile, _accept)
    Image.register_save(FORMAT, _save)
    Image.register_extension(FORMAT, EXTENSION)
    Image.register_mime(FORMAT, MIME_TYPE)
