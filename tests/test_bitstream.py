"""Tests for raqcodec.bitstream: the .raq container."""

from __future__ import annotations

import dataclasses
import struct
import zlib

import numpy as np
import pytest

from raqcodec import bitstream as B
from raqcodec import entropy as E
from raqcodec.errors import CodecError

FP = bytes.fromhex("0123456789abcdef")

# Field order in the header, per docs/FORMAT.md (written out independently of
# the implementation's struct so a layout change is caught).
LAYOUT = "<4sHHHHBBBB8sI"


def make_header(**overrides) -> B.Header:
    fields = dict(
        model_fingerprint=FP, width=100, height=70, color_mode=0, codebook_size=4096,
        groups=4, downsample=16, entropy_model=E.ADAPTIVE, payload_length=12,
    )
    fields.update(overrides)
    return B.Header(**fields)


def raw_file(*, magic=b"RAQC", version=1, width=100, height=70, codebook_size=4096,
             color_mode=0, groups=4, downsample=16, entropy_model=1, fingerprint=FP,
             payload=b"\x01\x02\x03\x04" * 3, payload_length=None, crc=None) -> bytes:
    """Hand-built file with a correct CRC unless one is given."""
    plen = len(payload) if payload_length is None else payload_length
    body = struct.pack(LAYOUT, magic, version, width, height, codebook_size, color_mode,
                       groups, downsample, entropy_model, fingerprint, plen) + payload
    if crc is None:
        crc = zlib.crc32(body) & 0xFFFFFFFF
    return body + struct.pack("<I", crc)


def test_constants():
    assert B.MAGIC == b"RAQC"
    assert B.FORMAT_VERSION == 2 and B.SUPPORTED_VERSIONS == (1, 2)
    assert B.HEADER_SIZE == 28 == struct.calcsize(LAYOUT)
    assert B.MAX_SIDE == 65535 and B.MAX_PIXELS == 2**27


def test_layout_matches_spec():
    payload = b"\x01\x02\x03\x04" * 3
    assert B.pack(make_header(), payload) == raw_file(payload=payload)


@pytest.mark.parametrize("overrides", [
    {},
    dict(width=1, height=1, downsample=1, groups=1, codebook_size=2, payload_length=0),
    dict(width=65535, height=2048, color_mode=1, codebook_size=65535, groups=255, downsample=255,
         entropy_model=E.UNIFORM),
    dict(model_fingerprint=b"\x00" * 8, width=641, height=479, downsample=8),
])
def test_header_round_trip(overrides):
    header = make_header(**overrides)
    payload = bytes(range(header.payload_length % 256)) * (header.payload_length // 256) \
        + bytes(range(header.payload_length % 256))
    payload = payload[: header.payload_length]
    data = B.pack(header, payload)
    assert len(data) == B.HEADER_SIZE + len(payload) + 4
    h2, p2 = B.unpack(data)
    assert h2 == header and p2 == payload
    assert B.read_header(data) == header


def test_latent_shape():
    assert make_header(width=100, height=70, downsample=16, groups=4).latent_shape == (4, 5, 7)
    assert make_header(width=64, height=32, downsample=16, groups=2).latent_shape == (2, 2, 4)
    assert make_header(width=1, height=1, downsample=255, groups=1).latent_shape == (1, 1, 1)


def test_full_round_trip_with_entropy_coder():
    rng = np.random.default_rng(0)
    header0 = make_header(width=200, height=130, downsample=16, codebook_size=300)
    idx = rng.integers(0, 300, header0.latent_shape) // 3
    model = E.choose_entropy_model(idx, 300)
    payload = E.encode_indices(idx, 300, model)
    header = dataclasses.replace(header0, entropy_model=model, payload_length=len(payload))
    h, p = B.unpack(B.pack(header, payload))
    out = E.decode_indices(p, h.latent_shape, h.codebook_size, h.entropy_model)
    np.testing.assert_array_equal(out, idx)


def test_accepts_bytearray_and_memoryview():
    data = B.pack(make_header(), b"abcdefghijkl")
    for view in (bytearray(data), memoryview(data)):
        assert B.unpack(view)[1] == b"abcdefghijkl"
        assert B.read_header(view) == make_header()


# --------------------------------------------------------------------------- construction / pack errors


@pytest.mark.parametrize("overrides", [
    dict(model_fingerprint=b"short"), dict(model_fingerprint="01234567"),
    dict(width=0), dict(width=65536), dict(height=0), dict(height=65536), dict(width=-5),
    dict(width=65535, height=65535),  # > MAX_PIXELS
    dict(color_mode=2), dict(codebook_size=1), dict(codebook_size=65536),
    dict(groups=0), dict(groups=256), dict(downsample=0), dict(downsample=256),
    dict(entropy_model=3), dict(payload_length=-1), dict(payload_length=2**32),
    dict(width=10.0), dict(groups=True),
    dict(width=16384, height=8192, groups=2, downsample=1),  # latent grid too large
])
def test_header_rejects_nonsense(overrides):
    with pytest.raises(CodecError):
        make_header(**overrides)


def test_codec_error_is_value_error():
    with pytest.raises(ValueError):
        make_header(width=0)


def test_pack_rejects_mismatched_payload():
    with pytest.raises(CodecError):
        B.pack(make_header(payload_length=12), b"short")
    with pytest.raises(CodecError):
        B.pack("not a header", b"")
    with pytest.raises(CodecError):
        B.pack(make_header(payload_length=3), "abc")


# --------------------------------------------------------------------------- corrupt files


def assert_rejected(data, *fragments):
    with pytest.raises(CodecError) as info:
        B.unpack(data)
    msg = str(info.value)
    assert "\n" not in msg
    for frag in fragments:
        assert frag in msg, msg
    return msg


def test_empty_and_foreign():
    assert_rejected(b"", "not a .raq file")
    assert_rejected(b"\x89PNG\r\n\x1a\n" + b"\x00" * 100, "not a .raq file")
    assert_rejected(raw_file(magic=b"RAQD"), "not a .raq file")
    assert_rejected(b"RAQX", "not a .raq file")
    with pytest.raises(CodecError):
        B.unpack("RAQC")  # str, not bytes
    with pytest.raises(CodecError):
        B.read_header(b"")


def test_truncated_everywhere():
    data = raw_file()
    for cut in [1, 3, 4, 5, 10, 27, 28, 31, 32, len(data) - 5, len(data) - 4, len(data) - 1]:
        assert_rejected(data[:cut])
        with pytest.raises(CodecError):
            B.read_header(data[:cut])
    assert_rejected(data[:20], "truncated")
    assert_rejected(data[:-1], "truncated")


def test_trailing_garbage():
    data = raw_file()
    assert_rejected(data + b"\x00")
    assert_rejected(data + b"junkjunk")


def test_every_single_bit_flip_is_detected():
    data = B.pack(make_header(payload_length=16), bytes(range(16)))
    for pos in range(len(data)):
        for bit in (0, 5):
            flipped = bytearray(data)
            flipped[pos] ^= 1 << bit
            assert_rejected(bytes(flipped))


def test_checksum_mismatch_message_and_read_header_skips_crc():
    data = bytearray(raw_file())
    data[B.HEADER_SIZE] ^= 0xFF  # inside the payload
    assert_rejected(bytes(data), "checksum mismatch")
    assert B.read_header(bytes(data)).payload_length == 12  # header itself is fine
    assert_rejected(raw_file(crc=0), "checksum mismatch")


def test_future_and_invalid_version():
    msg = assert_rejected(raw_file(version=3), "newer raqcodec", "format version 3", "versions 1 to 2")
    assert msg == "written by a newer raqcodec (format version 3); this reads versions 1 to 2"
    assert_rejected(raw_file(version=65535), "newer raqcodec")
    assert_rejected(raw_file(version=0), "version")
    # version is checked before the fields: a future file with odd fields still gets the version error
    assert_rejected(raw_file(version=4, width=0, entropy_model=200), "newer raqcodec")


@pytest.mark.parametrize("fields", [
    dict(width=0), dict(height=0), dict(width=65535, height=65535),
    dict(color_mode=2), dict(color_mode=255),
    dict(codebook_size=0), dict(codebook_size=1),
    dict(groups=0), dict(downsample=0), dict(entropy_model=2), dict(entropy_model=255),
    dict(width=16384, height=8192, groups=2, downsample=1),
])
def test_out_of_range_fields(fields):
    assert_rejected(raw_file(**fields), "corrupt .raq header")


@pytest.mark.parametrize("claimed", [0, 8, 13, 16, 2**32 - 1])
def test_payload_length_lying(claimed):
    # CRC is recomputed so only the length check can catch it
    assert_rejected(raw_file(payload_length=claimed))


def test_random_garbage_never_escapes():
    rng = np.random.default_rng(0)
    valid = raw_file()
    for n in list(range(0, 40)) + [100, 1000]:
        blob = rng.integers(0, 256, n, dtype=np.uint8).tobytes()
        assert_rejected(blob)
        assert_rejected(b"RAQC" + blob)
        assert_rejected(valid[:28] + blob)
