"""Tests for raqcodec.entropy: round trips, code lengths, model choice, robustness."""

from __future__ import annotations

import hashlib
import math

import numpy as np
import pytest

from raqcodec import entropy as E
from raqcodec.errors import CodecError

MODELS = (E.UNIFORM, E.ADAPTIVE)


def zipf_indices(shape, k, exponent=1.0, seed=0):
    """Skewed indices: Zipf-like probabilities over a random permutation of [0, k)."""
    rng = np.random.default_rng(seed)
    p = 1.0 / (np.arange(k) + 2.0) ** exponent
    p /= p.sum()
    perm = rng.permutation(k)
    return perm[rng.choice(k, size=int(np.prod(shape)), p=p)].reshape(shape).astype(np.int32)


def golden_indices():
    """A fixed, RNG-free grid (2, 20, 30) over 64 values, skewed towards 0."""
    i = np.arange(2 * 20 * 30, dtype=np.int64)
    h = ((i * 2654435761) % (2**32)) >> 20
    return ((h * h * 64) // (4096 * 4096)).reshape(2, 20, 30)


def reference_adaptive_bits(indices, k):
    """Independent, slow re-derivation of the ADAPTIVE ideal code length."""
    total = 0.0
    for sym in indices.reshape(indices.shape[0], -1):
        best = math.inf
        for inc in E.INCREMENTS:
            counts = [E.PSEUDO_COUNT] * k
            bits, pos = 0.0, 0
            for length in E.block_lengths(len(sym)):
                tot = sum(counts)
                block = sym[pos : pos + length]
                bits -= sum(math.log2(counts[s] / tot) for s in block)
                for s in block:
                    counts[s] += inc
                pos += length
            best = min(best, bits)
        total += math.log2(len(E.INCREMENTS)) + best
    return total


# --------------------------------------------------------------------------- round trips


@pytest.mark.parametrize("model", MODELS)
@pytest.mark.parametrize("k", [2, 16, 100, 4096])
@pytest.mark.parametrize("shape", [(4, 1, 1), (1, 1, 1), (1, 3, 5), (4, 7, 5), (2, 33, 17), (4, 24, 32)])
def test_round_trip(shape, k, model):
    x = zipf_indices(shape, k, seed=sum(shape) + k)
    payload = E.encode_indices(x, k, model)
    assert isinstance(payload, bytes) and len(payload) % 4 == 0 and len(payload) > 0
    y = E.decode_indices(payload, shape, k, model)
    assert y.dtype == np.int32 and y.shape == shape
    np.testing.assert_array_equal(y, x)


@pytest.mark.parametrize("model", MODELS)
def test_round_trip_extremes(model):
    # largest alphabet, constant data, the top symbol only, every dtype flavour
    cases = [
        (np.random.default_rng(1).integers(0, 65536, (2, 9, 11)), 65536),
        (np.zeros((4, 30, 40), dtype=np.uint8), 2),
        (np.full((3, 20, 20), 4095, dtype=np.int64), 4096),
        (np.arange(4 * 16 * 16, dtype=np.uint16).reshape(4, 16, 16) % 1000, 1000),
    ]
    for x, k in cases:
        payload = E.encode_indices(x, k, model)
        y = E.decode_indices(payload, x.shape, k, model)
        np.testing.assert_array_equal(y, x)


def test_round_trip_non_contiguous_input():
    x = zipf_indices((4, 20, 30), 256)
    view = np.transpose(x, (0, 2, 1))  # non-contiguous
    for model in MODELS:
        y = E.decode_indices(E.encode_indices(view, 256, model), view.shape, 256, model)
        np.testing.assert_array_equal(y, view)


def test_deterministic_and_golden():
    x = golden_indices()
    expected = {
        E.UNIFORM: (904, "b1035d0be282a42674890177a8de1cafb1f33cd4beeaa7224cd1b590ae375170"),
        E.ADAPTIVE: (860, "f541fed082b1646f64ee00331e11fc8706698a2b43b32d76fb3d5219d08ea163"),
    }
    for model, (length, digest) in expected.items():
        a = E.encode_indices(x, 64, model)
        b = E.encode_indices(x.copy(), 64, model)
        assert a == b
        # A change here changes the file format: bump FORMAT_VERSION.
        assert (len(a), hashlib.sha256(a).hexdigest()) == (length, digest)


def test_block_lengths():
    assert E.block_lengths(1) == [1]
    assert E.block_lengths(16) == [16]
    assert E.block_lengths(17) == [16, 1]
    assert E.block_lengths(600) == [16, 32, 64, 128, 128, 128, 104]
    for n in (1, 15, 16, 100, 1000, 12288):
        lengths = E.block_lengths(n)
        assert sum(lengths) == n
        assert all(1 <= length <= E.MAX_BLOCK for length in lengths)


# --------------------------------------------------------------------------- code lengths


def test_ideal_matches_reference_derivation():
    x = zipf_indices((2, 10, 23), 20, seed=5)
    got = E.ideal_code_length_bits(x, 20, E.ADAPTIVE)
    assert got == pytest.approx(reference_adaptive_bits(x, 20), rel=1e-9)
    assert E.ideal_code_length_bits(x, 20, E.UNIFORM) == pytest.approx(x.size * math.log2(20))


def test_adaptive_costs_equal_the_code_lengths_under_the_adaptive_tables():
    """The encoder's all-blocks-at-once cost of every increment is -log2 of what the coder's own block-by-block
    tables give each symbol (600 symbols: 7 blocks of unequal lengths)."""
    symbols = zipf_indices((1, 20, 30), 40, seed=11).reshape(-1)
    costs = E._adaptive_costs(symbols, 40)
    for i, increment in enumerate(E.INCREMENTS):
        bits = 0.0
        for start, stop, probs in E._adaptive_tables(symbols, 40, increment):
            bits -= np.log2(probs[symbols[start:stop]]).sum()
        assert costs[i] == pytest.approx(bits, rel=1e-12)


@pytest.mark.parametrize("high", [2 ** 12, 2 ** 20, 2 ** 31])
def test_stable_order_equals_a_stable_argsort(high):
    """The encoder's radix order of keys (one 16-bit pass, or two) is np.argsort(kind="stable")'s, ties in
    position order included: keys below 2^12 (a single pass), and pair keys up to 2^20 and 2^31 with many
    repeated keys that differ only in their high digit."""
    rng = np.random.default_rng(high)
    keys = rng.integers(0, high, 5000, dtype=np.int64)
    keys[::3] = keys[0]  # ties
    keys[1::7] = (keys[1::7] & 0xFFFF) | (rng.integers(0, high >> 16, keys[1::7].size) << 16 if high > 2 ** 16 else 0)
    assert np.array_equal(E._stable_order(keys), np.argsort(keys, kind="stable"))


@pytest.mark.parametrize("with_previous", [False, True])
def test_context_costs_equal_the_code_lengths_under_the_context_tables(with_previous):
    """The encoder's vectorised cost of every (increment, alpha) pair is -log2 of what the coder's own
    row-by-row tables give each symbol."""
    grids = zipf_indices((2, 9, 7), 12, seed=3)
    grid, previous = grids[1], grids[0] if with_previous else None
    costs = E._context_costs(grid, previous, 12)
    for i, increment in enumerate(E.INCREMENTS):
        for j, alpha in enumerate(E.MIX_WEIGHTS):
            bits = 0.0
            for row, weights in E._context_tables(grid, previous, 12, increment, alpha):
                bits -= np.log2(weights[np.arange(7), grid[row]] / weights.sum(1)).sum()
            assert costs[i, j] == pytest.approx(bits, rel=1e-12)


@pytest.mark.parametrize("with_previous", [False, True])
def test_context_tables_follow_the_format_bit_for_bit(with_previous):
    """Every weight equals docs/FORMAT.md's steps done literally (fresh arrays, the spec's order of additions),
    compared as bit patterns: the reused buffers and gathers of the coder change no bit of any table. (On these
    grids, adding n_top + n_prev to the base in one step instead of two changes 23 weights.)"""
    k, increment, alpha = 12, 2, 16
    grids = zipf_indices((2, 16, 16), k, seed=7)
    grid, previous = grids[1], grids[0] if with_previous else None
    c0 = np.full(k, E.PSEUDO_COUNT, dtype=np.int64)
    n_top, n_prev = np.zeros((k, k), dtype=np.int64), np.zeros((k, k), dtype=np.int64)
    rows = 0
    for row, weights in E._context_tables(grid, previous, k, increment, alpha):
        expected = np.empty((grid.shape[1], k))
        for j in range(grid.shape[1]):
            expected[j] = (alpha * c0) / c0.sum()
            if row > 0:
                expected[j] += n_top[grid[row - 1, j]]
            if previous is not None:
                expected[j] += n_prev[previous[row, j]]
        assert np.array_equal(weights.view(np.int64), expected.view(np.int64))
        for j, symbol in enumerate(grid[row]):
            if row > 0:
                n_top[grid[row - 1, j], symbol] += 1
            if previous is not None:
                n_prev[previous[row, j], symbol] += 1
            c0[symbol] += increment
        rows += 1
    assert rows == grid.shape[0]


@pytest.mark.parametrize("k", [16, 256, 4096])
@pytest.mark.parametrize("model", MODELS)
def test_payload_close_to_ideal(k, model):
    x = zipf_indices((4, 64, 96), k, exponent=1.1, seed=k)
    ideal_bytes = E.ideal_code_length_bits(x, k, model) / 8
    actual = len(E.encode_indices(x, k, model))
    assert actual >= ideal_bytes - 1e-6 - 0.001 * ideal_bytes
    assert actual <= ideal_bytes * 1.01 + 16


@pytest.mark.parametrize("k", [16, 256, 4096])
def test_adaptive_beats_uniform_on_skewed_data(k):
    x = zipf_indices((4, 48, 64), k, exponent=1.2, seed=3)
    uniform = len(E.encode_indices(x, k, E.UNIFORM))
    adaptive = len(E.encode_indices(x, k, E.ADAPTIVE))
    assert adaptive < 0.95 * uniform
    assert E.choose_entropy_model(x, k) == E.ADAPTIVE


@pytest.mark.parametrize("k", [2, 16, 100, 4096])
@pytest.mark.parametrize("shape", [(4, 1, 1), (1, 2, 3), (4, 12, 16), (4, 40, 50)])
def test_choice_never_much_worse_than_uniform(shape, k):
    rng = np.random.default_rng(k + shape[1])
    datasets = [rng.integers(0, k, shape), zipf_indices(shape, k, exponent=0.3, seed=k)]
    for x in datasets:
        chosen = E.choose_entropy_model(x, k)
        assert chosen in MODELS
        best = len(E.encode_indices(x, k, chosen))
        uniform = len(E.encode_indices(x, k, E.UNIFORM))
        assert best <= uniform + 8


def test_uniform_data_picks_uniform():
    x = np.random.default_rng(0).integers(0, 4096, (4, 20, 20))
    assert E.choose_entropy_model(x, 4096) == E.UNIFORM


# --------------------------------------------------------------------------- bad input


@pytest.mark.parametrize(
    "indices, k, model",
    [
        (np.zeros((2, 3), np.int32), 16, 0),  # wrong ndim
        (np.zeros((1, 0, 3), np.int32), 16, 0),  # empty
        (np.zeros((1, 2, 3), np.float32), 16, 0),  # not integers
        (np.full((1, 2, 3), 16), 16, 1),  # value == k
        (np.full((1, 2, 3), -1), 16, 1),  # negative
        (np.zeros((1, 2, 3), np.int32), 1, 0),  # alphabet too small
        (np.zeros((1, 2, 3), np.int32), 65537, 0),  # alphabet too large
        (np.zeros((1, 2, 3), np.int32), 16.0, 0),  # alphabet not int
        (np.zeros((1, 2, 3), np.int32), 16, 3),  # unknown model
        (np.zeros((1, 2, 3), np.int32), 16, True),  # bool is not a model id
    ],
)
def test_encode_rejects_bad_input(indices, k, model):
    with pytest.raises(CodecError):
        E.encode_indices(indices, k, model)


def test_other_functions_reject_bad_input():
    with pytest.raises(CodecError):
        E.ideal_code_length_bits(np.full((1, 2, 2), 9), 8, E.ADAPTIVE)
    with pytest.raises(CodecError):
        E.choose_entropy_model(np.zeros((2, 2)), 8)


def test_decode_rejects_bad_arguments():
    good = E.encode_indices(np.zeros((1, 2, 2), np.int32), 8, E.ADAPTIVE)
    bad_calls = [
        (good[:-1], (1, 2, 2), 8, 1),  # length not a multiple of 4
        (good + b"\x00", (1, 2, 2), 8, 1),
        (good, (1, 2), 8, 1),  # shape rank
        (good, (1, 0, 2), 8, 1),  # empty shape
        (good, (1, 2.0, 2), 8, 1),  # non-integer dims
        (good, None, 8, 1),
        (good, (1, 2, 2), 1, 1),  # alphabet
        (good, (1, 2, 2), 8, 7),  # model
        ("not bytes", (1, 2, 2), 8, 1),
    ]
    for args in bad_calls:
        with pytest.raises(CodecError):
            E.decode_indices(*args)


def test_decode_accepts_bytearray_and_numpy_shape():
    x = zipf_indices((2, 5, 6), 32)
    payload = bytearray(E.encode_indices(x, 32, E.ADAPTIVE))
    shape = tuple(np.array(x.shape, dtype=np.int64))
    np.testing.assert_array_equal(E.decode_indices(payload, shape, np.int64(32), 1), x)


@pytest.mark.parametrize("model", MODELS)
@pytest.mark.parametrize("k", [2, 16, 100, 4096, 65536])
def test_decode_garbage_is_safe(model, k):
    rng = np.random.default_rng(k * 10 + model)
    shape = (4, 9, 13)
    for n_words in (0, 1, 2, 3, 8, 64, 1000):
        for _ in range(3):
            payload = rng.integers(0, 256, 4 * n_words, dtype=np.uint8).tobytes()
            try:
                y = E.decode_indices(payload, shape, k, model)
            except CodecError:
                continue
            assert y.shape == shape and y.dtype == np.int32
            assert y.min() >= 0 and y.max() < k


def test_decode_with_wrong_parameters_is_safe():
    x = zipf_indices((4, 16, 16), 256)
    payload = E.encode_indices(x, 256, E.ADAPTIVE)
    for shape, k, model in [((4, 16, 16), 16, 1), ((4, 32, 32), 256, 1), ((1, 1, 1), 256, 1),
                            ((4, 16, 16), 256, 0), ((4, 16, 16), 4096, 0)]:
        try:
            y = E.decode_indices(payload, shape, k, model)
        except CodecError:
            continue
        assert y.shape == shape and y.min() >= 0 and y.max() < k
