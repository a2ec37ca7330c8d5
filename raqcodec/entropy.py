"""Entropy coding of codebook-index grids with ``constriction`` range coding.

The codec produces a grid of codebook indices of shape ``(G, h, w)`` with
values in ``[0, eK)``.  This module turns such a grid into the payload bytes
of a ``.raq`` file and back.  Two entropy models exist; the model id is
stored in the file header:

``UNIFORM`` (0)
    Every index has probability ``1/eK``.  Costs ``log2(eK)`` bits per index
    (plus at most a couple of 32-bit words of range-coder termination).

``ADAPTIVE`` (1)
    Block-adaptive frequency counts, one independent model per group.
    Groups are coded one after the other (group 0 first) into a single
    range-coder stream.  For each group:

    1. a 3-bit choice ``j`` (one symbol, uniform over ``len(INCREMENTS)`` = 8)
       selects the count increment ``INCREMENTS[j]``;
    2. the group's ``h*w`` indices are taken in raster order and cut into
       blocks whose lengths follow :func:`block_lengths` (16, 32, 64, then
       128 each; the last block is shorter);
    3. every symbol's count starts at the integer ``PSEUDO_COUNT``; a block is
       coded with one categorical distribution ``counts / counts.sum()``
       built from the counts so far; then every occurrence of a symbol in the
       block adds ``INCREMENTS[j]`` to its count.

    The encoder picks, per group, the ``j`` giving the smallest ideal code
    length (it can evaluate all 8 in one pass over the data).

``CONTEXT`` (2, format version 2 only)
    Each index's distribution is a mixture of what followed the same context
    values so far (the index one row up, and the index at the same position
    in the previous group of the stage) and the group's adaptive order-0
    counts, weight ``alpha``; a group symbol picks (increment, alpha).  Rows
    are coded as one batch of per-symbol distributions, so a decoder fills a
    row at a time.  Stages with eK > ``CONTEXT_MAX_ALPHABET`` are coded as
    ADAPTIVE (their eK x eK count tables would cost more time than the ~2 %
    they save).  Exact spec: ``docs/FORMAT.md``; tables from integers and
    fixed-order, correctly rounded float64 operations only.

Residual stages
---------------
A file with S quantisation stages carries S index grids of the same shape
``(G, h, w)``, stage ``s`` with alphabet ``eK_s``.  They are coded one after
the other (stage 1 first) into ONE range-coder stream, each stage exactly as
a one-stage grid would be (for ADAPTIVE: its own increment choice and counts
per group).  With S = 1 this is the version-1 payload, byte for byte.

Determinism
-----------
Encoder and decoder must build bit-identical probability tables.  Counts
are integers (``np.int64``; at most ``65536 + 128 * 2**27`` in total, far
below 2**53, so exactly representable as float64); the only float step is
``counts / counts.sum()``, a correctly rounded IEEE-754 division that every
platform computes identically.  That array goes straight to
``constriction.stream.model.Categorical(..., perfect=False)``, whose
fixed-point quantisation is itself deterministic.  No other floating-point
result influences the coded bits (the encoder's choice of ``j`` uses floats,
but ``j`` itself is transmitted).

Choice of the ADAPTIVE constants
--------------------------------
Only the ratio ``increment / PSEUDO_COUNT`` matters (increment 8 with pseudo
count 1 is an additive prior of 1/8 per symbol).  Tuned on ideal code lengths
(the real coder is within ~0.1 % plus a few bytes) of synthetic data:
Zipf-like ``p_k ~ 1/(k + 2)^s``, ``s`` set so the perplexity is 5, 15, 30, 45
or 60 % of ``eK``, symbol identities randomly permuted, ``eK`` in
{16, 256, 4096}, 1,536 / 6,144 / 24,576 symbols per group; both i.i.d.
grids and "regional" grids (4 smooth spatial regions, each with its own
partly shuffled permutation).

* The best fixed ratio depends strongly on the data: dense use of a small
  alphabet wants a strong prior (ratio 1-4), sparse use of a large alphabet
  a weak one (ratio 8-128).  Any single ratio loses on average 0.1-1.4 % of
  the bits at some ``eK`` and up to 17-38 % on very peaked data; 8 was the
  best single compromise (1.3 % mean loss, e.g. 11.95 instead of 11.58
  bits/index at eK=4096, 6,144 symbols, perplexity 60 %).  Choosing the
  ratio per group from {1, 2, 4, ..., 128} costs 3 bits and removes that
  loss; ratios 1/2 and 1/4 never gained more than 0.2 %, 256 never mattered.
* Blocks 16, 32, 64 then 128: within 0.1-0.2 % of adapting after every
  symbol (the 16..256 schedule lost 0.1-0.3 %, 64..4096 lost 0.3-0.9 %).
  Building a 4096-entry ``Categorical`` takes ~10 microseconds, so the small
  blocks are cheap: a (4, 96, 128) grid at eK=4096 encodes in ~15 ms.
* Resulting bits per index (mean over the five perplexities; i.i.d. data;
  entropy of the source in brackets): eK=16: 1.94 / 1.94 / 1.93 for
  1,536 / 6,144 / 24,576 symbols [1.93] vs 4; eK=256: 6.12 / 5.96 / 5.90
  [5.86] vs 8; eK=4096: 10.55 / 10.27 / 10.08 [9.86] vs 12.

Bounded decoding
----------------
:func:`decode_indices` always decodes exactly ``G*h*w`` symbols, so its run
time is bounded by the shape, whatever the payload contains.  Any failure
raises :class:`raqcodec.errors.CodecError`.
"""

from __future__ import annotations

import math

import constriction
import numpy as np

from raqcodec.errors import CodecError

__all__ = [
    "UNIFORM",
    "ADAPTIVE",
    "CONTEXT",
    "CONTEXT_MAX_ALPHABET",
    "MIX_WEIGHTS",
    "ENTROPY_MODELS",
    "MIN_ALPHABET",
    "MAX_ALPHABET",
    "PSEUDO_COUNT",
    "INCREMENTS",
    "FIRST_BLOCK",
    "MAX_BLOCK",
    "block_lengths",
    "encode_indices",
    "decode_indices",
    "encode_stages",
    "decode_stages",
    "ideal_code_length_bits",
    "ideal_stage_bits",
    "choose_entropy_model",
    "choose_stage_entropy_model",
    "plan_payload",
]

UNIFORM = 0
ADAPTIVE = 1
CONTEXT = 2
ENTROPY_MODELS = {UNIFORM: "uniform", ADAPTIVE: "adaptive", CONTEXT: "context"}

MIN_ALPHABET = 2
MAX_ALPHABET = 65536

# ADAPTIVE model constants.  Changing any of them changes the bitstream:
# that needs a new FORMAT_VERSION (or a new entropy model id).
PSEUDO_COUNT = 1
INCREMENTS = (1, 2, 4, 8, 16, 32, 64, 128)
FIRST_BLOCK = 16
MAX_BLOCK = 128
# CONTEXT model constants (same rule).
CONTEXT_MAX_ALPHABET = 1024  # stages with a larger eK are coded as ADAPTIVE inside a CONTEXT payload
MIX_WEIGHTS = (16, 32, 64, 128)  # alpha: weight of the order-0 distribution in a context mixture

_Categorical = constriction.stream.model.Categorical
_CATEGORICAL_ROWS = _Categorical(perfect=False)  # one distribution per symbol, given as rows of an array
_RangeEncoder = constriction.stream.queue.RangeEncoder
_RangeDecoder = constriction.stream.queue.RangeDecoder


# --------------------------------------------------------------------------- helpers


def _check_alphabet(alphabet_size) -> int:
    if isinstance(alphabet_size, (bool, np.bool_)) or not isinstance(
        alphabet_size, (int, np.integer)
    ):
        raise CodecError(f"alphabet size must be an integer, got {alphabet_size!r}")
    k = int(alphabet_size)
    if not MIN_ALPHABET <= k <= MAX_ALPHABET:
        raise CodecError(
            f"alphabet size {k} out of range [{MIN_ALPHABET}, {MAX_ALPHABET}]"
        )
    return k


def _check_model(entropy_model) -> int:
    if isinstance(entropy_model, (bool, np.bool_)) or not isinstance(
        entropy_model, (int, np.integer)
    ):
        raise CodecError(f"unknown entropy model {entropy_model!r}")
    m = int(entropy_model)
    if m not in ENTROPY_MODELS:
        raise CodecError(f"unknown entropy model id {m}")
    return m


def _check_shape(shape) -> tuple[int, int, int]:
    try:
        dims = tuple(shape)
    except TypeError:
        dims = ()
    if len(dims) != 3 or any(
        isinstance(d, (bool, np.bool_)) or not isinstance(d, (int, np.integer)) for d in dims
    ):
        raise CodecError(f"latent shape must be three integers (G, h, w), got {shape!r}")
    dims = tuple(int(d) for d in dims)
    if any(d < 1 for d in dims):
        raise CodecError(f"latent shape dimensions must be positive, got {dims}")
    return dims  # type: ignore[return-value]


def _check_indices(indices, alphabet_size: int) -> np.ndarray:
    arr = np.asarray(indices)
    if arr.ndim != 3:
        raise CodecError(f"indices must have shape (G, h, w), got {arr.ndim} dimensions")
    if arr.dtype.kind not in "iu":
        raise CodecError(f"indices must be integers, got dtype {arr.dtype}")
    if any(d < 1 for d in arr.shape):
        raise CodecError(f"indices shape dimensions must be positive, got {arr.shape}")
    lo, hi = int(arr.min()), int(arr.max())
    if lo < 0 or hi >= alphabet_size:
        raise CodecError(
            f"index values must lie in [0, {alphabet_size}), found range [{lo}, {hi}]"
        )
    return np.ascontiguousarray(arr, dtype=np.int32)


def block_lengths(n: int) -> list[int]:
    """Lengths of the ADAPTIVE blocks for ``n`` symbols of one group.

    ``FIRST_BLOCK, 2*FIRST_BLOCK, 4*FIRST_BLOCK, ...`` capped at ``MAX_BLOCK``;
    the last block is shortened so the lengths sum to ``n``.
    """
    lengths: list[int] = []
    size = FIRST_BLOCK
    remaining = int(n)
    while remaining > 0:
        take = min(size, remaining)
        lengths.append(take)
        remaining -= take
        size = min(size * 2, MAX_BLOCK)
    return lengths


def _adaptive_tables(symbols: np.ndarray, alphabet_size: int, increment: int):
    """Yield ``(start, stop, probabilities)`` for the blocks of one group's symbols.

    ``symbols`` is the group's raster-ordered int32 array.  The block
    ``symbols[start:stop]`` is read only after its table has been yielded, so
    the decoder can pass its output buffer and fill each block in turn.
    """
    counts = np.full(alphabet_size, PSEUDO_COUNT, dtype=np.int64)
    start = 0
    for length in block_lengths(symbols.shape[0]):
        stop = start + length
        # Integer counts -> float64 by one correctly rounded division: the same
        # bits on every machine, for encoder and decoder alike.
        probs = counts / counts.sum()
        yield start, stop, probs
        occurrences = np.bincount(symbols[start:stop], minlength=alphabet_size)
        counts += increment * occurrences.astype(np.int64)
        start = stop


def _adaptive_costs(symbols: np.ndarray, alphabet_size: int) -> np.ndarray:
    """Ideal bits for one group's symbols under each entry of ``INCREMENTS``.

    Excludes the ``log2(len(INCREMENTS))`` bits that signal the choice. A symbol coded in block b has
    probability (PSEUDO_COUNT + inc * its occurrences in the blocks before b) / (PSEUDO_COUNT * eK + inc * the
    symbols before b), all blocks at once (_earlier_counts). Only used by the encoder to pick the increment, so
    float rounding here cannot desynchronise anything.
    """
    incs = np.asarray(INCREMENTS, dtype=np.float64)[:, None]
    lengths = np.asarray(block_lengths(symbols.shape[0]))
    before = np.cumsum(lengths) - lengths  # symbols in the blocks before each block
    seen = _earlier_counts(symbols.astype(np.int64), np.repeat(np.arange(lengths.size), lengths))
    denominators = lengths * _log2(PSEUDO_COUNT * alphabet_size + incs * before)  # (I, blocks)
    return denominators.sum(axis=1) - _log2(PSEUDO_COUNT + incs * seen).sum(axis=1)


def _log2(x: np.ndarray) -> np.ndarray:
    """np.log2 of a float64 array, computed by torch: vectorised on AVX2 CPUs, where numpy's float64 log2 is not
    (a (8, 4, 6144) array: 0.27 against 1.1 ms on the 2-core AVX2 machine; 0.27 % of its values differed from
    np.log2's, by one unit in the last place). Encoder-side cost estimates only: torch is imported on first use,
    so decoders never load it."""
    import torch

    return torch.log2(torch.from_numpy(x)).numpy()


def _context_tables(grid: np.ndarray, previous: np.ndarray | None, alphabet_size: int, increment: int,
                    alpha: int):
    """Yield ``(row, weights)`` for the rows of one group under the CONTEXT model.

    grid: the group's (h, w) int32 indices; previous: the (h, w) grid of the group before it in the same
    stage, or None for group 0. weights (w, eK) float64: row x holds symbol x's unnormalised distribution

        n_top[t_x] + n_prev[p_x] + alpha * c0 / sum(c0)

    t_x = grid[row - 1, x] (absent in row 0), p_x = previous[row, x] (absent for group 0); n_top[t] counts, per
    value t, the values that followed t one row below; n_prev[p] counts the values seen at the same position
    as p in the previous group; c0 are the order-0 counts (PSEUDO_COUNT, plus `increment` per occurrence),
    so this is (n + alpha * p0) / (N + alpha) up to normalisation. Counts are updated after each row, so the
    decoder can pass its output buffer and fill row by row. Every step is an exact integer operation or one
    correctly rounded IEEE-754 float64 operation in a fixed order, so all machines build the same weights:
    (alpha * c0 / sum(c0) + n_top[t_x]) + n_prev[p_x], the first sum computed as n_top[t_x] + base (float
    addition commutes exactly).

    ``weights`` is one buffer, overwritten for the next row: use it before advancing. Gathers use
    ``np.take(..., mode="clip")`` into reused buffers (indices are in range): with the default mode numpy
    buffers the whole output, and a (96, 1024) gather took 300 us instead of 14 us on the 2-core AVX2 machine.
    """
    height, width = grid.shape
    counts = np.full(alphabet_size, PSEUDO_COUNT, dtype=np.int64)
    n_top = np.zeros((alphabet_size, alphabet_size), dtype=np.int32)
    n_prev = np.zeros((alphabet_size, alphabet_size), dtype=np.int32) if previous is not None else None
    weights = np.empty((width, alphabet_size), dtype=np.float64)
    gathered = np.empty((width, alphabet_size), dtype=np.int32)
    for row in range(height):
        base = (alpha * counts) / counts.sum()
        if row > 0:
            np.add(np.take(n_top, grid[row - 1], axis=0, out=gathered, mode="clip"), base, out=weights)
        else:
            weights[:] = base
        if n_prev is not None:
            np.add(weights, np.take(n_prev, previous[row], axis=0, out=gathered, mode="clip"), out=weights)
        yield row, weights
        symbols = grid[row]
        if row > 0:
            np.add.at(n_top, (grid[row - 1], symbols), 1)
        if n_prev is not None:
            np.add.at(n_prev, (previous[row], symbols), 1)
        counts += increment * np.bincount(symbols, minlength=alphabet_size)


def _stable_order(keys: np.ndarray) -> np.ndarray:
    """np.argsort(keys, kind="stable") of non-negative int64 keys under 2^32 (here symbols under MAX_ALPHABET =
    2^16, or pair keys under CONTEXT_MAX_ALPHABET^2 = 2^20), by one or two stable passes over 16-bit digits, low
    digit first: numpy sorts uint16 keys by radix, 6 to 10 times faster than int64 keys (6,144 keys on the
    2-core AVX2 machine: 31-52 against 290-325 us)."""
    low = (keys & 0xFFFF).astype(np.uint16)
    order = np.argsort(low, kind="stable")
    high = keys[order] >> 16
    if not high.any():
        return order
    return order[np.argsort(high.astype(np.uint16), kind="stable")]


def _earlier_counts(keys: np.ndarray, blocks: np.ndarray) -> np.ndarray:
    """keys (n,) int64, blocks (n,) their block numbers, non-decreasing -> (n,) int64: for each element, how many
    elements of the blocks before its own hold the same key (what a table updated after each block has counted
    when the element is coded)."""
    order = _stable_order(keys)  # by key, then by position, so by block
    sorted_keys, sorted_blocks = keys[order], blocks[order]
    position = np.arange(keys.size)
    new_key = np.r_[True, sorted_keys[1:] != sorted_keys[:-1]]
    new_block = new_key | np.r_[True, sorted_blocks[1:] != sorted_blocks[:-1]]
    counts = np.empty(keys.size, dtype=np.int64)
    counts[order] = (np.maximum.accumulate(np.where(new_block, position, 0))
                     - np.maximum.accumulate(np.where(new_key, position, 0)))
    return counts


def _earlier_row_counts(keys: np.ndarray) -> np.ndarray:
    """keys (R, w) int64 -> (R, w) int64: _earlier_counts with the rows as blocks."""
    rows = np.repeat(np.arange(keys.shape[0]), keys.shape[1])
    return _earlier_counts(keys.reshape(-1), rows).reshape(keys.shape)


def _context_costs(grid: np.ndarray, previous: np.ndarray | None, alphabet_size: int) -> np.ndarray:
    """Ideal bits of one group under the CONTEXT model for every (increment, alpha) pair, shape (8, 4).

    Excludes the bits that signal the pair. The counts _context_tables holds when it codes each symbol
    (pairs and contexts of earlier rows, order-0 counts of earlier rows) come for all rows at once from
    _earlier_row_counts. Encoder-side only (floats here cannot desynchronise anything).
    """
    height, width = grid.shape
    incs = np.asarray(INCREMENTS, dtype=np.float64)[:, None, None]
    alphas = np.asarray(MIX_WEIGHTS, dtype=np.float64)[None, :, None]
    symbols = grid.astype(np.int64)
    hits = np.zeros((height, width))  # n_top[t_x, x's symbol] + n_prev[p_x, x's symbol]
    total = np.zeros((height, width))  # their sums over symbols
    if height > 1:
        hits[1:] += _earlier_row_counts(symbols[:-1] * alphabet_size + symbols[1:])
        total[1:] += _earlier_row_counts(symbols[:-1])
    if previous is not None:
        context = previous.astype(np.int64)
        hits += _earlier_row_counts(context * alphabet_size + symbols)
        total += _earlier_row_counts(context)
    coded_before = np.repeat(np.arange(height) * width, width)  # symbols in the rows before each one
    p0 = (PSEUDO_COUNT + incs * _earlier_row_counts(symbols).reshape(-1)) \
        / (PSEUDO_COUNT * alphabet_size + incs * coded_before)
    return -_log2((hits.reshape(-1) + alphas * p0) / (total.reshape(-1) + alphas)).sum(-1)


def _uniform_probs(alphabet_size: int) -> np.ndarray:
    return np.full(alphabet_size, 1.0 / alphabet_size, dtype=np.float64)


_CHOICE_BITS = math.log2(len(INCREMENTS))


# --------------------------------------------------------------------------- public API


def encode_indices(indices: np.ndarray, alphabet_size: int, entropy_model: int) -> bytes:
    """Entropy-code an index grid ``(G, h, w)`` and return the payload bytes.

    The payload is the range coder's sequence of 32-bit words, each written
    little-endian.  Raises :class:`CodecError` on bad arguments.
    """
    return encode_stages([indices], [alphabet_size], entropy_model)


def encode_stages(grids: list[np.ndarray], alphabet_sizes: list[int], entropy_model: int,
                  choices: list[int] | None = None) -> bytes:
    """Entropy-code one index grid ``(G, h, w)`` per stage (alphabet ``eK_s``) into one payload.

    ``choices``: the parameter symbol per (stage, group) in coding order, as :func:`plan_payload` gives them;
    None computes the best ones.
    """
    if len(grids) != len(alphabet_sizes) or not grids:
        raise CodecError("need one alphabet size per stage grid, and at least one stage")
    model = _check_model(entropy_model)
    ks = [_check_alphabet(k) for k in alphabet_sizes]
    arrays = [_check_indices(grid, k) for grid, k in zip(grids, ks)]
    if len({a.shape for a in arrays}) != 1:
        raise CodecError("every stage grid must have the same shape")
    stages = list(zip(arrays, ks))
    return _encode(stages, model, _plan(stages, model, {})[1] if choices is None else choices)


def _uses_context(model: int, alphabet_size: int) -> bool:
    """Whether a stage with this alphabet is context-coded (else adaptive) under a non-uniform model."""
    return model == CONTEXT and alphabet_size <= CONTEXT_MAX_ALPHABET


def _choice_model(model: int, alphabet_size: int) -> _Categorical:
    """Uniform distribution of a group's parameter symbol: 8 increments, or 8 x 4 (increment, alpha) pairs."""
    n = len(INCREMENTS) * (len(MIX_WEIGHTS) if _uses_context(model, alphabet_size) else 1)
    return _Categorical(_uniform_probs(n), perfect=False)


def _context_parameters(choice: int) -> tuple[int, int]:
    """(increment, alpha) selected by a CONTEXT group symbol in [0, 32)."""
    return INCREMENTS[choice // len(MIX_WEIGHTS)], MIX_WEIGHTS[choice % len(MIX_WEIGHTS)]


AdaptiveCostCache = dict[tuple[int, int], np.ndarray]
"""(stage, group) -> _adaptive_costs of that group: ADAPTIVE and the non-context stages of CONTEXT share them."""


def _plan(stages: list[tuple[np.ndarray, int]], model: int, cache: AdaptiveCostCache) -> tuple[float, list[int]]:
    """(ideal payload bits, the parameter symbol of smallest cost per (stage, group) in coding order) of
    validated stage grids (G, h, w) under one entropy model. Encoder only: floats here cannot desynchronise."""
    if model == UNIFORM:
        return float(sum(grid.size * math.log2(k) for grid, k in stages)), []
    bits, choices = 0.0, []
    for s, (grid, k) in enumerate(stages):
        for g in range(grid.shape[0]):
            if _uses_context(model, k):
                costs = _context_costs(grid[g], grid[g - 1] if g > 0 else None, k).reshape(-1)
            else:
                if (s, g) not in cache:
                    cache[s, g] = _adaptive_costs(grid[g].reshape(-1), k)
                costs = cache[s, g]
            choice = int(np.argmin(costs))
            bits += math.log2(costs.size) + float(costs[choice])
            choices.append(choice)
    return bits, choices


def _encode(stages: list[tuple[np.ndarray, int]], model: int, choices: list[int]) -> bytes:
    """Range-code each stage's grid (G, h, w) with its alphabet k, stage after stage, group after group.

    `choices`: the parameter symbol per (stage, group) in coding order (none for UNIFORM).
    """
    encoder = _RangeEncoder()
    position = 0
    for grid, k in stages:
        if model == UNIFORM:
            encoder.encode(grid.reshape(-1), _Categorical(_uniform_probs(k), perfect=False))
            continue
        choice_model = _choice_model(model, k)
        for g in range(grid.shape[0]):
            previous = grid[g - 1] if g > 0 else None
            choice = choices[position]
            position += 1
            encoder.encode(np.array([choice], dtype=np.int32), choice_model)
            if _uses_context(model, k):
                inc, alpha = _context_parameters(choice)
                for row, weights in _context_tables(grid[g], previous, k, inc, alpha):
                    encoder.encode(grid[g, row], _CATEGORICAL_ROWS, weights)
                continue
            sym = grid[g].reshape(-1)
            for start, stop, probs in _adaptive_tables(sym, k, INCREMENTS[choice]):
                encoder.encode(sym[start:stop], _Categorical(probs, perfect=False))
    words = np.asarray(encoder.get_compressed(), dtype=np.uint32)
    return words.astype("<u4", copy=False).tobytes()


def decode_indices(
    payload: bytes, shape: tuple[int, int, int], alphabet_size: int, entropy_model: int
) -> np.ndarray:
    """Decode a payload written by :func:`encode_indices`; returns int32 ``shape``.

    Decodes exactly ``G*h*w`` symbols (bounded time on any input).  Every
    failure raises :class:`CodecError`.
    """
    return decode_stages(payload, shape, [alphabet_size], entropy_model)[0]


class _CheckedDecoder:
    """A range decoder that codes every symbol it decodes again, with the same model, into a range encoder.

    The range decoder reads zeros past the end of the data and never fails on garbage, so a payload is accepted
    only if that re-encoding gives it back byte for byte (`reproduces`). Coding in step with decoding builds each
    table once (and needs no float comparison: the parameters are those read from the stream).
    """

    def __init__(self, words: np.ndarray) -> None:
        self.decoder, self.encoder = _RangeDecoder(words), _RangeEncoder()

    def fixed(self, model, count: int) -> np.ndarray:
        """`count` int32 symbols of one fixed model."""
        symbols = np.asarray(self.decoder.decode(model, count), dtype=np.int32)
        self.encoder.encode(symbols, model)
        return symbols

    def rows(self, weights: np.ndarray) -> np.ndarray:
        """One int32 symbol per row of weights (n, k): each row an unnormalised distribution."""
        symbols = np.asarray(self.decoder.decode(_CATEGORICAL_ROWS, weights), dtype=np.int32)
        self.encoder.encode(symbols, _CATEGORICAL_ROWS, weights)
        return symbols

    def reproduces(self, payload: bytes) -> bool:
        """Whether the symbols decoded so far, coded again, are exactly `payload`."""
        words = np.asarray(self.encoder.get_compressed(), dtype=np.uint32)
        return words.astype("<u4", copy=False).tobytes() == payload


def decode_stages(
    payload: bytes, shape: tuple[int, int, int], alphabet_sizes: list[int], entropy_model: int
) -> list[np.ndarray]:
    """Decode a payload written by :func:`encode_stages`: one int32 grid ``shape`` per alphabet size.

    Decodes exactly ``S*G*h*w`` symbols (bounded time on any input).  Every
    failure raises :class:`CodecError`.
    """
    ks = [_check_alphabet(k) for k in alphabet_sizes]
    if not ks:
        raise CodecError("need at least one stage")
    model = _check_model(entropy_model)
    dims = _check_shape(shape)
    if not isinstance(payload, (bytes, bytearray, memoryview)):
        raise CodecError(f"payload must be bytes, got {type(payload).__name__}")
    payload = bytes(payload)
    if len(payload) % 4 != 0:
        raise CodecError(
            f"corrupt payload: length {len(payload)} is not a multiple of 4 bytes"
        )
    words = np.frombuffer(payload, dtype="<u4").astype(np.uint32)
    outs = [np.empty(dims, dtype=np.int32) for _ in ks]
    try:
        stream = _CheckedDecoder(words)
        for out, k in zip(outs, ks):
            if model == UNIFORM:
                out[...] = stream.fixed(_Categorical(_uniform_probs(k), perfect=False), out.size).reshape(dims)
                continue
            choice_model = _choice_model(model, k)
            for g in range(dims[0]):
                choice = int(stream.fixed(choice_model, 1)[0])
                if _uses_context(model, k):
                    inc, alpha = _context_parameters(choice)
                    for row, weights in _context_tables(out[g], out[g - 1] if g > 0 else None, k, inc, alpha):
                        out[g, row] = stream.rows(weights)
                    continue
                sym = out[g].reshape(-1)
                for start, stop, probs in _adaptive_tables(sym, k, INCREMENTS[choice]):
                    sym[start:stop] = stream.fixed(_Categorical(probs, perfect=False), stop - start)
        canonical = stream.reproduces(payload)
    except CodecError:
        raise
    except Exception as exc:  # constriction raises assorted exception types
        raise CodecError(f"corrupt payload: entropy decoding failed ({exc})") from None
    for out, k in zip(outs, ks):
        if int(out.min()) < 0 or int(out.max()) >= k:
            raise CodecError("corrupt payload: decoded index out of range")
    if not canonical:
        raise CodecError("corrupt payload: it does not match the decoded indices")
    return outs


def ideal_code_length_bits(indices: np.ndarray, alphabet_size: int, entropy_model: int) -> float:
    """Sum of ``-log2 p(symbol)`` under the probabilities the coder uses.

    For ADAPTIVE this includes the ``log2(len(INCREMENTS))`` = 3 bits per
    group that signal the chosen increment.  These are the float64 tables
    passed to ``constriction``; the real payload is longer only by the
    coder's 24-bit fixed-point rounding (negligible) and its termination (at
    most a couple of 32-bit words).
    """
    k = _check_alphabet(alphabet_size)
    return _plan([(_check_indices(indices, k), k)], _check_model(entropy_model), {})[0]


def ideal_stage_bits(grids: list[np.ndarray], alphabet_sizes: list[int], entropy_model: int) -> float:
    """:func:`ideal_code_length_bits` summed over the stages of a multi-stage payload."""
    return sum(ideal_code_length_bits(grid, k, entropy_model) for grid, k in zip(grids, alphabet_sizes))


def plan_payload(grids: list[np.ndarray], alphabet_sizes: list[int],
                 models: tuple[int, ...] = (UNIFORM, ADAPTIVE, CONTEXT)) -> tuple[int, list[int], float]:
    """(the entropy model among `models` giving the smallest payload for all stages together, ties to the
    earlier id; its parameter symbol per (stage, group) for :func:`encode_stages`; its ideal code length in
    bits, the payload's size before the range coder's rounding and termination)."""
    ks = [_check_alphabet(k) for k in alphabet_sizes]
    stages = [(_check_indices(grid, k), k) for grid, k in zip(grids, ks)]
    cache: AdaptiveCostCache = {}
    plans = [(*_plan(stages, _check_model(model), cache), model) for model in models]
    bits, choices, model = min(plans, key=lambda plan: plan[0])  # min keeps the first of equal ones
    return model, choices, bits


def choose_stage_entropy_model(grids: list[np.ndarray], alphabet_sizes: list[int],
                               models: tuple[int, ...] = (UNIFORM, ADAPTIVE, CONTEXT)) -> int:
    """Among `models`, the entropy model id giving the smallest payload for all stages together (ties go to
    the earlier id)."""
    return plan_payload(grids, alphabet_sizes, models)[0]


def choose_entropy_model(indices: np.ndarray, alphabet_size: int) -> int:
    """The entropy model id giving the smaller payload for ``indices``.

    Compares ideal code lengths; UNIFORM wins ties, so the result is never
    worse than uniform coding by more than the coders' rounding and
    termination overhead (a few bytes).
    """
    k = _check_alphabet(alphabet_size)
    arr = _check_indices(indices, k)
    uniform = ideal_code_length_bits(arr, k, UNIFORM)
    adaptive = ideal_code_length_bits(arr, k, ADAPTIVE)
    return ADAPTIVE if adaptive < uniform else UNIFORM
