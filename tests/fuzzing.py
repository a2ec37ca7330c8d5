"""Mutations of valid .raq files for fuzzing the decoder (shared by the test suite and benchmarks/fuzz.py).

Every mutation returns new bytes. `fix_crc` recomputes the checksum so that the mutated header and payload
reach the parser and decoder instead of stopping at the CRC check.
"""
from __future__ import annotations

import struct
import zlib

import numpy as np

from raqcodec import bitstream

# (offset, struct format) of each header field, see docs/FORMAT.md
HEADER_FIELDS = {"version": (4, "<H"), "width": (6, "<H"), "height": (8, "<H"), "codebook_size": (10, "<H"),
                 "color_mode": (12, "<B"), "groups": (13, "<B"), "downsample": (14, "<B"),
                 "entropy_model": (15, "<B"), "payload_length": (24, "<I"),
                 "stages": (28, "<B"), "residual_size": (29, "<H")}  # the last two: version 2 files only
EXTREMES = {"<H": (0, 1, 2, 255, 4097, 65535), "<B": (0, 1, 2, 3, 255), "<I": (0, 1, 4, 2**31, 2**32 - 1)}


def fix_crc(data: bytes) -> bytes:
    if len(data) < bitstream.HEADER_SIZE + 4:
        return data
    body = data[:-4]
    return body + struct.pack("<I", zlib.crc32(body))


def truncate(data: bytes, rng: np.random.Generator) -> bytes:
    return data[: int(rng.integers(0, len(data)))]


def flip_bits(data: bytes, rng: np.random.Generator) -> bytes:
    out = bytearray(data)
    for _ in range(int(rng.integers(1, 9))):
        pos = int(rng.integers(0, len(out)))
        out[pos] ^= 1 << int(rng.integers(0, 8))
    return bytes(out)


def insert_bytes(data: bytes, rng: np.random.Generator) -> bytes:
    pos = int(rng.integers(0, len(data) + 1))
    extra = rng.integers(0, 256, int(rng.integers(1, 17)), dtype=np.uint8).tobytes()
    return data[:pos] + extra + data[pos:]


def set_field(data: bytes, rng: np.random.Generator) -> bytes:
    name = list(HEADER_FIELDS)[int(rng.integers(0, len(HEADER_FIELDS)))]
    offset, fmt = HEADER_FIELDS[name]
    choices = EXTREMES[fmt]
    value = int(choices[int(rng.integers(0, len(choices)))])
    if name == "payload_length" and rng.random() < 0.5:
        value = max(0, len(data) - 32 + int(rng.integers(-8, 9)))
    out = bytearray(data)
    if offset + struct.calcsize(fmt) > len(out):  # a file truncated before this field
        return bytes(out)
    struct.pack_into(fmt, out, offset, value)
    return bytes(out)


MUTATIONS = (truncate, flip_bits, insert_bytes, set_field)


def mutate(data: bytes, rng: np.random.Generator) -> bytes:
    """One random mutation; half of the results get a recomputed CRC. Inputs too short to mutate are kept."""
    if len(data) < bitstream.HEADER_SIZE:
        return data
    out = MUTATIONS[int(rng.integers(0, len(MUTATIONS)))](data, rng)
    return fix_crc(out) if rng.random() < 0.5 else out
