"""Entropy model 2 (CONTEXT): round trips, its fallback above CONTEXT_MAX_ALPHABET, its gain where indices
are spatially correlated, corrupt payloads, and one-stage version-2 files."""
from __future__ import annotations

import dataclasses

import numpy as np
import pytest

import raqcodec
from raqcodec import bitstream as B
from raqcodec import entropy as E
from raqcodec.codec import analyse, encode_latent, reconstruct
from raqcodec.errors import CodecError

from conftest import synthetic_image


def correlated_grid(k: int, shape=(3, 20, 24), seed=0) -> np.ndarray:
    """Indices that mostly repeat the value above them or in the previous group (smooth regions)."""
    rng = np.random.default_rng(seed)
    g, h, w = shape
    grid = rng.integers(0, k, shape)
    for gi in range(g):
        for r in range(h):
            for c in range(w):
                u = rng.random()
                if r > 0 and u < 0.5:
                    grid[gi, r, c] = grid[gi, r - 1, c]
                elif gi > 0 and u < 0.8:
                    grid[gi, r, c] = (grid[gi - 1, r, c] * 7) % k
    return grid.astype(np.int32)


@pytest.mark.parametrize("sizes", [(2,), (16,), (300,), (1024,), (1025,), (4096, 64), (64, 2, 1024)])
def test_context_round_trip(sizes):
    rng = np.random.default_rng(len(sizes))
    grids = [correlated_grid(k, seed=i) if i % 2 == 0 else rng.integers(0, k, (3, 20, 24)).astype(np.int32)
             for i, k in enumerate(sizes)]
    payload = E.encode_stages(grids, list(sizes), E.CONTEXT)
    for got, want in zip(E.decode_stages(payload, (3, 20, 24), list(sizes), E.CONTEXT), grids):
        assert np.array_equal(got, want)


def test_context_codes_large_alphabets_exactly_as_adaptive():
    grids = [correlated_grid(k, seed=k) for k in (1025, 4096)]
    assert E.encode_stages(grids, [1025, 4096], E.CONTEXT) == E.encode_stages(grids, [1025, 4096], E.ADAPTIVE)


@pytest.mark.parametrize("k", [16, 256, 1024])
def test_context_saves_bits_on_correlated_indices_and_codes_them_at_the_ideal_length(k):
    grid = correlated_grid(k, shape=(4, 32, 40), seed=k)
    adaptive = E.ideal_code_length_bits(grid, k, E.ADAPTIVE)
    context = E.ideal_code_length_bits(grid, k, E.CONTEXT)
    assert context < 0.85 * adaptive
    assert E.choose_stage_entropy_model([grid], [k]) == E.CONTEXT
    coded_bits = len(E.encode_indices(grid, k, E.CONTEXT)) * 8
    assert context <= coded_bits <= 1.01 * context + 64


def test_context_is_not_chosen_for_independent_uniform_indices():
    grid = np.random.default_rng(1).integers(0, 64, (4, 32, 40)).astype(np.int32)
    assert E.choose_stage_entropy_model([grid], [64]) == E.UNIFORM


def test_bit_flips_of_a_context_payload_are_refused_or_decode_canonically():
    grid = correlated_grid(40, shape=(2, 6, 7))
    payload = E.encode_indices(grid, 40, E.CONTEXT)
    refused = 0
    for i in range(len(payload) * 8):
        flipped = bytearray(payload)
        flipped[i // 8] ^= 1 << (i % 8)
        try:
            other = E.decode_indices(bytes(flipped), (2, 6, 7), 40, E.CONTEXT)
        except CodecError:
            refused += 1
        else:  # a flip may turn the payload into the canonical code of other indices (the file's CRC catches it)
            assert not np.array_equal(other, grid)
    assert refused >= 0.9 * len(payload) * 8


def test_one_stage_context_file_is_version_2_with_one_stage():
    header = B.Header(model_fingerprint=b"\x01" * 8, width=50, height=30, color_mode=0, codebook_size=64,
                      groups=4, downsample=8, entropy_model=E.CONTEXT, payload_length=4)
    data = B.pack(header, b"\x00" * 4)
    assert header.version == 2 and data[4:6] == b"\x02\x00" and data[28] == 1
    assert B.unpack(data)[0] == header
    # the same header claiming version 1 (which knows models 0 and 1 only) is refused
    v1 = bytearray(data[:28] + data[29:-4])
    v1[4:6] = b"\x01\x00"
    import struct
    import zlib
    v1 += struct.pack("<I", zlib.crc32(bytes(v1)) & 0xFFFFFFFF)
    with pytest.raises(CodecError, match="version 1 does not fit"):
        B.unpack(bytes(v1))


def test_codec_writes_the_smallest_model_and_context_files_decode(two_stage_model):
    latent = analyse(two_stage_model, synthetic_image(64, 96, seed=2))
    for setting in ((40,), (300, 12)):
        enc = encode_latent(two_stage_model, latent, setting)
        sizes = {m: E.ideal_stage_bits(enc.indices, list(setting), m) for m in E.ENTROPY_MODELS}
        assert enc.header.entropy_model == min(sizes, key=sizes.get)
        payload = E.encode_stages(enc.indices, list(setting), E.CONTEXT)
        header = dataclasses.replace(enc.header, entropy_model=E.CONTEXT, payload_length=len(payload))
        decoded = np.asarray(raqcodec.decompress(B.pack(header, payload), model=two_stage_model))
        assert np.array_equal(decoded, reconstruct(two_stage_model, enc.indices, setting, 96, 64))
