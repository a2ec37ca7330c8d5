"""The ``.raq`` container: a fixed header, the entropy-coded payload, a CRC32.

Layout (all integers little-endian; see ``docs/FORMAT.md`` for the spec)::

    offset size type     field
     0      4  bytes    magic b"RAQC"
     4      2  uint16   format version (1: one stage, entropy model 0 or 1; 2: otherwise)
     6      2  uint16   width  (pixels, 1..65535)
     8      2  uint16   height (pixels, 1..65535)
    10      2  uint16   codebook_size eK (2..65535)
    12      1  uint8    color_mode (0 RGB, 1 greyscale)
    13      1  uint8    groups G (1..255)
    14      1  uint8    downsample f (1..255)
    15      1  uint8    entropy_model (ids of raqcodec.entropy)
    16      8  bytes    model_fingerprint
    24      4  uint32   payload_length
    version 2 only, E = 1 + 2 * (S - 1) bytes:
    28      1  uint8    stages S (1..MAX_STAGES)
    29  2(S-1) uint16   codebook size eK of stages 2..S
    28+E    n  bytes    payload (E = 0 in version 1)
    28+E+n  4  uint32   CRC32 (zlib) of bytes [0, 28+E+n)

A writer uses version 1 for a one-stage file coded with entropy model 0 or 1 (byte for byte what raqcodec
wrote before stages existed) and version 2 for every other file (residual stages, or entropy model 2 and
later, which version-1 readers do not know). Each header has exactly one valid encoding.

Validation happens before anything large is allocated, in this order:
length, magic, version, field ranges, payload length, checksum.  Every
rejection raises :class:`raqcodec.errors.CodecError` with a one-line message.
"""

from __future__ import annotations

import struct
import zlib
from dataclasses import dataclass

import numpy as np

from raqcodec.entropy import ENTROPY_MODELS
from raqcodec.errors import CodecError

__all__ = [
    "MAGIC",
    "FORMAT_VERSION",
    "SUPPORTED_VERSIONS",
    "MAX_STAGES",
    "MAX_SIDE",
    "MAX_PIXELS",
    "MAX_LATENT_SYMBOLS",
    "COLOR_RGB",
    "COLOR_GREY",
    "HEADER_SIZE",
    "CRC_SIZE",
    "Header",
    "pack",
    "unpack",
    "read_header",
]

MAGIC: bytes = b"RAQC"
FORMAT_VERSION: int = 2  # the newest version this module reads and writes
SUPPORTED_VERSIONS = (1, 2)
MAX_STAGES = 8
_VERSION_1_ENTROPY_MODELS = (0, 1)  # uniform, adaptive: the ids version-1 readers know
MAX_SIDE: int = 65535
MAX_PIXELS: int = 2**27
# Cap on G * h * w, the number of coded indices: bounds what a decoder
# allocates (4 bytes per index) whatever a header claims.
MAX_LATENT_SYMBOLS: int = 2**27

COLOR_RGB = 0
COLOR_GREY = 1
_COLOR_MODES = (COLOR_RGB, COLOR_GREY)

FINGERPRINT_SIZE = 8
MIN_CODEBOOK, MAX_CODEBOOK = 2, 65535
MAX_GROUPS = 255
MAX_DOWNSAMPLE = 255
MAX_PAYLOAD = 2**32 - 1

_HEADER = struct.Struct("<4sHHHHBBBB8sI")
HEADER_SIZE: int = _HEADER.size  # 28
_STAGE_COUNT = struct.Struct("<B")
_CRC = struct.Struct("<I")
CRC_SIZE: int = _CRC.size  # 4


def _ceil_div(a: int, b: int) -> int:
    return -(-a // b)


def _as_int(name: str, value) -> int:
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, (int, np.integer)):
        raise CodecError(f"header field {name} must be an integer, got {value!r}")
    return int(value)


def _check_range(name: str, value: int, lo: int, hi: int) -> None:
    if not lo <= value <= hi:
        raise CodecError(f"header field {name}={value} out of range [{lo}, {hi}]")


@dataclass(frozen=True)
class Header:
    """The fields of a ``.raq`` header.  Construction validates every field."""

    model_fingerprint: bytes
    width: int
    height: int
    color_mode: int
    codebook_size: int
    groups: int
    downsample: int
    entropy_model: int
    payload_length: int
    residual_sizes: tuple[int, ...] = ()  # eK of stages 2..S (empty for a one-stage file)

    def __post_init__(self) -> None:
        fp = self.model_fingerprint
        if not isinstance(fp, (bytes, bytearray)) or len(fp) != FINGERPRINT_SIZE:
            raise CodecError(
                f"header field model_fingerprint must be {FINGERPRINT_SIZE} bytes, got {fp!r}"
            )
        object.__setattr__(self, "model_fingerprint", bytes(fp))
        for name in (
            "width",
            "height",
            "color_mode",
            "codebook_size",
            "groups",
            "downsample",
            "entropy_model",
            "payload_length",
        ):
            object.__setattr__(self, name, _as_int(name, getattr(self, name)))
        _check_range("width", self.width, 1, MAX_SIDE)
        _check_range("height", self.height, 1, MAX_SIDE)
        if self.width * self.height > MAX_PIXELS:
            raise CodecError(
                f"image of {self.width}x{self.height} pixels exceeds the limit of "
                f"{MAX_PIXELS} pixels"
            )
        if self.color_mode not in _COLOR_MODES:
            raise CodecError(
                f"header field color_mode={self.color_mode} is not 0 (RGB) or 1 (greyscale)"
            )
        _check_range("codebook_size", self.codebook_size, MIN_CODEBOOK, MAX_CODEBOOK)
        _check_range("groups", self.groups, 1, MAX_GROUPS)
        _check_range("downsample", self.downsample, 1, MAX_DOWNSAMPLE)
        if self.entropy_model not in ENTROPY_MODELS:
            raise CodecError(f"header field entropy_model={self.entropy_model} is unknown")
        _check_range("payload_length", self.payload_length, 0, MAX_PAYLOAD)
        if not isinstance(self.residual_sizes, (tuple, list)):
            raise CodecError(f"header field residual_sizes must be a tuple, got {self.residual_sizes!r}")
        sizes = tuple(_as_int("residual_sizes", v) for v in self.residual_sizes)
        object.__setattr__(self, "residual_sizes", sizes)
        _check_range("stages", len(sizes) + 1, 1, MAX_STAGES)
        for size in sizes:
            _check_range("codebook_size", size, MIN_CODEBOOK, MAX_CODEBOOK)
        g, h, w = self.latent_shape
        if self.stages * g * h * w > MAX_LATENT_SYMBOLS:
            raise CodecError(
                f"latent grid {self.stages}x{g}x{h}x{w} exceeds the limit of {MAX_LATENT_SYMBOLS} indices"
            )

    @property
    def codebook_sizes(self) -> tuple[int, ...]:
        """eK of every stage, stage 1 first."""
        return (self.codebook_size, *self.residual_sizes)

    @property
    def stages(self) -> int:
        return 1 + len(self.residual_sizes)

    @property
    def version(self) -> int:
        """The format version this header is written in: 1 for one stage and entropy model 0 or 1, else 2."""
        return 1 if not self.residual_sizes and self.entropy_model in _VERSION_1_ENTROPY_MODELS else 2

    @property
    def header_size(self) -> int:
        """Bytes before the payload."""
        return HEADER_SIZE + (0 if self.version == 1 else _STAGE_COUNT.size + 2 * len(self.residual_sizes))

    @property
    def latent_shape(self) -> tuple[int, int, int]:
        """``(groups, ceil(height / downsample), ceil(width / downsample))``."""
        return (
            self.groups,
            _ceil_div(self.height, self.downsample),
            _ceil_div(self.width, self.downsample),
        )

    @property
    def num_pixels(self) -> int:
        return self.width * self.height


def _as_bytes(data, what: str) -> bytes | memoryview:
    if isinstance(data, bytes):
        return data
    if isinstance(data, (bytearray, memoryview)):
        return memoryview(data).cast("B")
    raise CodecError(f"{what} must be bytes, got {type(data).__name__}")


def pack(header: Header, payload: bytes) -> bytes:
    """Serialise ``header`` and ``payload`` into a complete ``.raq`` file."""
    if not isinstance(header, Header):
        raise CodecError(f"header must be a Header, got {type(header).__name__}")
    payload = bytes(_as_bytes(payload, "payload"))
    if header.payload_length != len(payload):
        raise CodecError(
            f"header payload_length={header.payload_length} but the payload has "
            f"{len(payload)} bytes"
        )
    head = _HEADER.pack(
        MAGIC,
        header.version,
        header.width,
        header.height,
        header.codebook_size,
        header.color_mode,
        header.groups,
        header.downsample,
        header.entropy_model,
        header.model_fingerprint,
        header.payload_length,
    )
    if header.version == 2:
        head += _STAGE_COUNT.pack(header.stages) + struct.pack(f"<{len(header.residual_sizes)}H", *header.residual_sizes)
    body = head + payload
    return body + _CRC.pack(zlib.crc32(body) & 0xFFFFFFFF)


def read_header(data: bytes) -> Header:
    """Parse and validate the header of a complete ``.raq`` file.

    Checks the magic, the version, every field and that the file length
    matches ``payload_length``; does not check the CRC (:func:`unpack` does).
    """
    buf = _as_bytes(data, ".raq data")
    n = len(buf)
    if n == 0:
        raise CodecError("not a .raq file: the input is empty")
    prefix = bytes(buf[: len(MAGIC)])
    if not MAGIC.startswith(prefix) or (n >= len(MAGIC) and prefix != MAGIC):
        raise CodecError("not a .raq file: bad magic bytes")
    if n < HEADER_SIZE + CRC_SIZE:
        raise CodecError(
            f"truncated .raq file: {n} bytes, shorter than the "
            f"{HEADER_SIZE + CRC_SIZE}-byte minimum"
        )
    (
        _magic,
        version,
        width,
        height,
        codebook_size,
        color_mode,
        groups,
        downsample,
        entropy_model,
        fingerprint,
        payload_length,
    ) = _HEADER.unpack_from(buf, 0)
    if version > FORMAT_VERSION:
        raise CodecError(
            f"written by a newer raqcodec (format version {version}); "
            f"this reads versions 1 to {FORMAT_VERSION}"
        )
    if version not in SUPPORTED_VERSIONS:
        raise CodecError(
            f"unsupported .raq format version {version}; this reads versions 1 to {FORMAT_VERSION}"
        )
    residual_sizes: tuple[int, ...] = ()
    if version == 2:
        residual_sizes = _read_residual_sizes(buf)
    try:
        header = Header(
            model_fingerprint=fingerprint,
            width=width,
            height=height,
            color_mode=color_mode,
            codebook_size=codebook_size,
            groups=groups,
            downsample=downsample,
            entropy_model=entropy_model,
            payload_length=payload_length,
            residual_sizes=residual_sizes,
        )
    except CodecError as exc:
        raise CodecError(f"corrupt .raq header: {exc}") from None
    if version != header.version:
        raise CodecError(f"corrupt .raq header: version {version} does not fit {header.stages} stage(s) "
                         f"with entropy model {header.entropy_model}")
    actual = n - header.header_size - CRC_SIZE
    if payload_length > actual:
        raise CodecError(
            f"truncated .raq file: header announces a {payload_length}-byte payload, "
            f"only {actual} bytes present"
        )
    if payload_length < actual:
        raise CodecError(
            f"corrupt .raq file: {actual - payload_length} unexpected bytes after the payload"
        )
    return header


def _read_residual_sizes(buf) -> tuple[int, ...]:
    """The version-2 extension after the fixed header: stage count, then eK of stages 2..S."""
    n = len(buf)
    if n < HEADER_SIZE + _STAGE_COUNT.size + CRC_SIZE:
        raise CodecError(f"truncated .raq file: {n} bytes, too short for a version 2 header")
    (stages,) = _STAGE_COUNT.unpack_from(buf, HEADER_SIZE)
    if not 1 <= stages <= MAX_STAGES:
        raise CodecError(f"corrupt .raq header: stages={stages} out of range [1, {MAX_STAGES}]")
    end = HEADER_SIZE + _STAGE_COUNT.size + 2 * (stages - 1)
    if n < end + CRC_SIZE:
        raise CodecError(f"truncated .raq file: {n} bytes, too short for a {stages}-stage header")
    return struct.unpack_from(f"<{stages - 1}H", buf, HEADER_SIZE + _STAGE_COUNT.size)


def unpack(data: bytes) -> tuple[Header, bytes]:
    """Validate a complete ``.raq`` file and return its header and payload."""
    header = read_header(data)
    buf = _as_bytes(data, ".raq data")
    end = header.header_size + header.payload_length
    (stored,) = _CRC.unpack_from(buf, end)
    if zlib.crc32(buf[:end]) & 0xFFFFFFFF != stored:
        raise CodecError("corrupt .raq file: checksum mismatch")
    return header, bytes(buf[header.header_size:end])
