"""Hostile files, determinism, format stability and odd image sizes."""
from __future__ import annotations

import hashlib
import json
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import synthetic_image
from fuzzing import fix_crc, mutate
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image

import raqcodec
from raqcodec import bitstream, entropy
from raqcodec.codec import encode
from raqcodec.modelfile import load_model

VECTORS = Path(__file__).parent / "vectors"


@pytest.fixture(scope="module")
def vector_model():
    return load_model(VECTORS / "tiny-model.pt")


@pytest.fixture(scope="module")
def seed_files(vector_model) -> list[bytes]:
    files = []
    for (h, w), size in (((1, 1), 2), ((9, 13), 16), ((33, 20), 300), ((24, 40), 4096)):
        files.append(raqcodec.compress(synthetic_image(h, w, seed=w), codebook_size=size, model=vector_model))
    return files


def _check_decode(data: bytes, model) -> None:
    """The fuzz property: an image of the header's size, or CodecError; within a few seconds."""
    start = time.perf_counter()
    try:
        image = raqcodec.decompress(data, model=model)
    except raqcodec.CodecError:
        pass
    else:
        header = raqcodec.read_header(data)
        assert image.size == (header.width, header.height)
    assert time.perf_counter() - start < 5.0


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(which=st.integers(0, 3), seed=st.integers(0, 2**32 - 1), rounds=st.integers(1, 3))
def test_fuzz_decompress(vector_model, seed_files, which, seed, rounds):
    rng = np.random.default_rng(seed)
    data = seed_files[which]
    for _ in range(rounds):
        data = mutate(data, rng)
    _check_decode(data, vector_model)


@settings(max_examples=200, deadline=None)
@given(data=st.binary(max_size=64))
def test_fuzz_read_header_on_random_bytes(data):
    for candidate in (data, b"RAQC" + data, fix_crc(b"RAQC\x01\x00" + data)):
        try:
            raqcodec.read_header(candidate)
        except raqcodec.CodecError:
            pass


def test_lying_payload_with_valid_crc_is_refused(vector_model, seed_files):
    data = bytearray(seed_files[2])
    data[bitstream.HEADER_SIZE] ^= 0xFF  # first payload byte, CRC recomputed below
    with pytest.raises(raqcodec.CodecError):
        raqcodec.decompress(fix_crc(bytes(data)), model=vector_model)


@pytest.mark.parametrize("name", json.loads((VECTORS / "vectors.json").read_text()))
def test_format_vectors_still_decode(name):
    expected = json.loads((VECTORS / "vectors.json").read_text())[name]
    model = load_model(VECTORS / expected.get("model", "tiny-model.pt"))
    data = (VECTORS / f"{name}.raq").read_bytes()
    header, payload = bitstream.unpack(data)
    assert header.version == expected["format_version"]
    grids = entropy.decode_stages(payload, header.latent_shape, list(header.codebook_sizes), header.entropy_model)
    indices = b"".join(grid.astype("<i4").tobytes() for grid in grids)
    assert hashlib.sha256(indices).hexdigest() == expected["indices_sha256"]
    decoded = np.asarray(raqcodec.decompress(data, model=model)).astype(int)
    stored = np.asarray(Image.open(VECTORS / f"{name}.png")).astype(int)
    # pixels depend on float maths: equal here, at most one level apart on another CPU
    assert decoded.shape == stored.shape and np.abs(decoded - stored).max() <= 1


def test_encoding_identical_across_thread_counts(vector_model):
    pixels = synthetic_image(96, 120, seed=11)
    outputs = {}
    before = torch.get_num_threads()
    try:
        for threads in (1, 2):
            torch.set_num_threads(threads)
            data = raqcodec.compress(pixels, codebook_size=700, model=vector_model)
            outputs[threads] = (data, np.asarray(raqcodec.decompress(data, model=vector_model)))
    finally:
        torch.set_num_threads(before)
    assert outputs[1][0] == outputs[2][0]
    assert np.array_equal(outputs[1][1], outputs[2][1])


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_gpu_encoded_file_decodes_on_cpu_to_the_same_indices():
    gpu_model = load_model(VECTORS / "tiny-model.pt", device="cuda")
    enc = encode(synthetic_image(64, 80, seed=4), codebook_size=500, model=gpu_model)
    header, payload = bitstream.unpack(enc.data)
    indices = entropy.decode_indices(payload, header.latent_shape, header.codebook_size, header.entropy_model)
    assert np.array_equal(indices, enc.indices[0])
    cpu_model = load_model(VECTORS / "tiny-model.pt", device="cpu")
    assert raqcodec.decompress(enc.data, model=cpu_model).size == (80, 64)


@pytest.mark.parametrize("height,width", [(1, 1), (1, 5000), (5000, 1), (3, 2)])
def test_odd_sizes_round_trip(vector_model, height, width):
    data = raqcodec.compress(synthetic_image(height, width), codebook_size=64, model=vector_model)
    assert raqcodec.decompress(data, model=vector_model).size == (width, height)
