"""The decoder's layers in numpy (no torch): convolutions, IGDN and an LSTM, on channels-last float32 arrays.

Images are (H, W, C). Between layers they live in a `Padded` buffer: a border of one zero on every side and one
more zero row at the bottom, so a layer reads its input's taps without a padded copy (on the 2-core KVM machine,
the first touch of fresh memory cost up to 2 ms per MB: a copy of a 157 MB layer cost more than its arithmetic).

A convolution is a set of taps, each an input offset (oy, ox) and a (C_in, C_out) matrix: out[y, x] = bias +
sum over taps of x_padded[y + oy, x + ox] @ matrix. It runs a chunk of output rows at a time: the chunk's patches
(one column block per tap, copied from contiguous slices of the flattened padded input, whose rows are Wp = W + 2
wide; the 2 extra outputs per row are computed and dropped) and one matrix product with the taps' stacked matrices
(OpenBLAS through numpy). A stride-2 transposed convolution is four such correlations, one per output phase
(out[2q + ry, 2p + rx]), over the nine input offsets its 5x5 kernel reaches; the offsets are ordered so that every
phase's taps are one contiguous range of patch columns.

The same sums as torch's layers in another order: float32 results differ by rounding (tests compare them).
"""
from __future__ import annotations

import contextlib
import ctypes
import functools
import os
import re
import sys
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor

import numpy as np

CHUNK_ELEMENTS = 1 << 20  # patch-matrix elements per chunk of rows (4 MB of float32)
STACKED_PHASES_MAX_OUT = 16  # TransposedConv: layers of at most this many outputs compute the four phases at once
SMALL_CHUNK_ROWS = 32768  # TransposedConv of few outputs: input positions per chunk (16 MB at 128 channels)
LEAKY_SLOPE = 0.01  # torch.nn.LeakyReLU's default, as the residual block uses
WORKERS = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)


@functools.cache
def _openblas_threads() -> tuple[Callable[[int], None], Callable[[], int]] | None:
    """(set, get) of the thread count of the OpenBLAS numpy loaded, found among the process's mapped libraries
    (Linux); None where there is none or it has no such functions."""
    if not sys.platform.startswith("linux"):
        return None
    with open("/proc/self/maps") as maps:
        paths = sorted(set(re.findall(r"(/\S*openblas\S*\.so\S*)", maps.read())))
    for path in paths:
        library = ctypes.CDLL(path)
        for suffix in ("64_", "", "_64_"):
            for prefix in ("openblas", "scipy_openblas"):
                setter = getattr(library, f"{prefix}_set_num_threads{suffix}", None)
                getter = getattr(library, f"{prefix}_get_num_threads{suffix}", None)
                if setter is not None and getter is not None:
                    getter.restype = ctypes.c_int
                    return (lambda n: setter(ctypes.c_int(n))), getter
    return None


@contextlib.contextmanager
def single_threaded_blas() -> Iterator[None]:
    """Inside the block, OpenBLAS runs single-threaded (where its thread count can be set; otherwise nothing
    changes). Its products differ in rounding with its thread count (a (644, 1152) x (1152, 128) product by up to
    6e-5 between 1 and 2 threads), so the decoder computes every product this way: with the chunks of rows fixed
    by the image alone (`_chunk_groups`), each product is then the same call whatever the number of cores, and so
    are the decoded pixels."""
    blas = _openblas_threads()
    if blas is None:
        yield
        return
    set_threads, get_threads = blas
    previous = get_threads()
    set_threads(1)
    try:
        yield
    finally:
        set_threads(previous)


def _parallel(jobs: list[Callable[[], None]]) -> None:
    """Run the jobs on up to WORKERS threads with single-threaded OpenBLAS (numpy's products and copies release
    the GIL, so the copies and elementwise steps between products use every core too). Where OpenBLAS's thread
    count cannot be set, one after the other with its own threads."""
    with single_threaded_blas():
        if len(jobs) == 1 or WORKERS == 1 or _openblas_threads() is None:
            for job in jobs:
                job()
            return
        with ThreadPoolExecutor(min(WORKERS, len(jobs))) as pool:
            for future in [pool.submit(job) for job in jobs]:
                future.result()


def _chunk_groups(stop: int, step: int, count: int) -> list[tuple[int, int]]:
    """0..stop, whose chunks of rows are step long from 0, cut into at most `count` contiguous groups of whole
    chunks: every group starts on a chunk boundary, so a job that chunks its group from its start by `step`
    makes the same chunks as one job over all."""
    chunks = -(-stop // step)
    bounds = [min(stop, step * (chunks * i // count)) for i in range(count + 1)]
    return [(a, b) for a, b in zip(bounds, bounds[1:]) if a < b]


class Padded:
    """An (H, W, C) float32 image inside a zero border: `buffer` (H + 3, W + 2, C), the image at [1:H+1, 1:W+1].

    Layers write only the interior; elementwise steps that keep zero at zero (LeakyReLU, IGDN, sums of padded
    images) may run on the whole buffer.
    """

    def __init__(self, height: int, width: int, channels: int) -> None:
        self.height, self.width, self.channels = height, width, channels
        self.buffer = np.empty((height + 3, width + 2, channels), dtype=np.float32)
        self.buffer[0] = 0
        self.buffer[height + 1:] = 0
        self.buffer[:, 0] = 0
        self.buffer[:, width + 1] = 0

    @classmethod
    def of(cls, x: np.ndarray) -> Padded:
        """A padded copy of x (H, W, C)."""
        padded = cls(*x.shape)
        padded.interior[...] = x
        return padded

    @property
    def interior(self) -> np.ndarray:
        """The image (H, W, C), a view."""
        return self.buffer[1:self.height + 1, 1:self.width + 1]

    @property
    def flat(self) -> np.ndarray:
        """The buffer as ((H + 3) * (W + 2), C) rows."""
        return self.buffer.reshape(-1, self.channels)

    @property
    def row_width(self) -> int:
        """Wp = W + 2, the buffer's row length in pixels."""
        return self.width + 2


def _patches(flat: np.ndarray, offsets: list[int], start: int, count: int, out: np.ndarray) -> np.ndarray:
    """Rows start..start+count of the patch matrix: one column block of C_in per flat offset."""
    cin = flat.shape[1]
    block = out[:count]
    for t, offset in enumerate(offsets):
        block[:, t * cin:(t + 1) * cin] = flat[start + offset:start + offset + count]
    return block


def _row_step(width: int, columns: int) -> int:
    """Rows per chunk of an output whose patch matrix has width*columns elements per row (CHUNK_ELEMENTS)."""
    return max(1, CHUNK_ELEMENTS // (width * columns))


def _chunks(first: int, last: int, step: int) -> list[tuple[int, int]]:
    """(r0, r1) of the chunks of rows first..last, step long from first."""
    return [(r, min(r + step, last)) for r in range(first, last, step)]


def pointwise_conv(x: np.ndarray, weight: np.ndarray, bias: np.ndarray) -> Padded:
    """1x1 convolution: x (H, W, C_in), weight (C_out, C_in, 1, 1) as torch's Conv2d, bias (C_out,) -> Padded."""
    h, w, cin = x.shape
    out = Padded(h, w, weight.shape[0])
    matrix = np.ascontiguousarray(weight[:, :, 0, 0].T)
    step = _row_step(w, max(cin, weight.shape[0]))

    def rows(first: int, last: int) -> None:
        for r0, r1 in _chunks(first, last, step):
            out.interior[r0:r1] = (np.ascontiguousarray(x[r0:r1]).reshape(-1, cin) @ matrix + bias).reshape(
                r1 - r0, w, -1)

    _parallel([functools.partial(rows, a, b) for a, b in _chunk_groups(h, step, WORKERS)])
    return out


def conv3x3(x: Padded, weight: np.ndarray, bias: np.ndarray) -> Padded:
    """Stride-1 3x3 convolution with zero padding 1: weight (C_out, C_in, 3, 3) as torch's Conv2d, bias (C_out,)."""
    h, w, cin = x.height, x.width, x.channels
    cout = weight.shape[0]
    flat, wp = x.flat, x.row_width
    offsets = [ky * wp + kx for ky in range(3) for kx in range(3)]
    matrix = np.ascontiguousarray(weight.transpose(2, 3, 1, 0).reshape(9 * cin, cout))
    out = Padded(h, w, cout)
    step = _row_step(wp, 9 * cin)

    def rows(first: int, last: int) -> None:
        buffer = np.empty((step * wp, 9 * cin), dtype=np.float32)
        for r0, r1 in _chunks(first, last, step):
            patch = _patches(flat, offsets, r0 * wp, (r1 - r0) * wp, buffer)
            out.buffer[1 + r0:1 + r1, 1:w + 1] = (patch @ matrix + bias).reshape(r1 - r0, wp, cout)[:, :w]

    _parallel([functools.partial(rows, a, b) for a, b in _chunk_groups(h, step, WORKERS)])
    return out


def transposed_conv_taps(kernel: int, stride: int, padding: int) -> dict[int, dict[int, int]]:
    """A transposed convolution as stride ordinary correlations per axis: for each output phase r, {input offset
    d: kernel index r + padding - stride * d} of the taps inside the kernel, so that output pixel stride * q + r
    sums x[q + d] * weight[index] over them (also used by models/transforms.PolyphaseConvTranspose2d)."""
    return {r: {d: r + padding - stride * d for d in range(-kernel, kernel + 1)
                if 0 <= r + padding - stride * d < kernel} for r in range(stride)}


# The nine input offsets (dy, dx) of a k=5, stride-2 transposed convolution, ordered so that each output phase's
# taps are a contiguous range: phase (0, 1) the first 6, (1, 1) 2..5, (1, 0) 2..7, (0, 0) all 9.
_DECONV_OFFSETS = [(-1, 0), (-1, 1), (0, 0), (0, 1), (1, 0), (1, 1), (0, -1), (1, -1), (-1, -1)]
_PHASE_RANGES = {(0, 0): (0, 9), (0, 1): (0, 6), (1, 0): (2, 8), (1, 1): (2, 6)}
_DECONV_TAPS = transposed_conv_taps(5, 2, 2)


def _phase_matrix(weight: np.ndarray, ry: int, rx: int, a: int, b: int) -> np.ndarray:
    """The stacked (taps a..b-1) x C_in rows, C_out columns of output phase (ry, rx)."""
    cin, cout = weight.shape[:2]
    matrix = np.empty((b - a, cin, cout), dtype=np.float32)
    for t in range(a, b):
        dy, dx = _DECONV_OFFSETS[t]
        matrix[t - a] = weight[:, :, _DECONV_TAPS[ry][dy], _DECONV_TAPS[rx][dx]]
    return matrix.reshape((b - a) * cin, cout)


class TransposedConv:
    """ConvTranspose2d(k=5, stride=2, padding=2, output_padding=1) as torch's, with its matrices prepared once:
    weight (C_in, C_out, 5, 5), bias (C_out,); then, if given (beta, gamma), IGDN (see `igdn`), applied to each
    chunk of output rows while it is in cache.

    Wide layers run one matrix product per phase over its own taps (25 taps in all: no zero terms). Layers of
    at most STACKED_PHASES_MAX_OUT outputs run one product of every input position with all nine offsets' taps
    of all four phases (zeros where a phase has no tap), whose shifted rows are then summed: a product with
    C_out = 3 columns runs far below the BLAS's peak, one with 9 x 4 x 3 nearer it.
    """

    def __init__(self, weight: np.ndarray, bias: np.ndarray, igdn: tuple[np.ndarray, np.ndarray] | None = None):
        if weight.shape[2:] != (5, 5):
            raise ValueError(f"TransposedConv supports 5x5 kernels, got {weight.shape[2:]}")
        self.in_channels, self.out_channels = weight.shape[:2]
        self.bias, self.igdn = bias, igdn
        cin, cout = self.in_channels, self.out_channels
        self.stacked = cout <= STACKED_PHASES_MAX_OUT
        if self.stacked:
            stacked = np.zeros((9 * cin, 2, 2, cout), dtype=np.float32)
            for (ry, rx), (a, b) in _PHASE_RANGES.items():
                stacked[a * cin:b * cin, ry, rx] = _phase_matrix(weight, ry, rx, a, b)
            # rows t * 4 C_out ...: every input position's contribution through offset t
            self.by_offset = np.ascontiguousarray(stacked.reshape(9, cin, 4 * cout).transpose(0, 2, 1)).reshape(-1, cin)
        else:
            self.phases = [(ry, rx, a, b, _phase_matrix(weight, ry, rx, a, b))
                           for (ry, rx), (a, b) in _PHASE_RANGES.items()]

    def __call__(self, x: Padded) -> Padded:
        """x (H, W, C_in) -> (2H, 2W, C_out)."""
        out = Padded(2 * x.height, 2 * x.width, self.out_channels)
        groups = _chunk_groups(x.height, self._step(x.row_width), WORKERS)
        _parallel([functools.partial(self.rows, x.flat, x.width, 0, a, b, out.buffer, 1 + 2 * a) for a, b in groups])
        return out

    def _step(self, row_width: int) -> int:
        """Input rows per chunk for an input row_width pixels wide (padded)."""
        if self.stacked:
            return max(1, SMALL_CHUNK_ROWS // row_width)
        return _row_step(row_width, 9 * self.in_channels)

    def rows(self, flat: np.ndarray, width: int, top: int, q0: int, q1: int, target: np.ndarray, target_row: int):
        """Output rows 2 q0 .. 2 q1 from input rows q0 .. q1 - 1, into target (rows, 2 width + 2, C_out) from
        row target_row on, columns 1 .. 2 width (its other columns are left alone).

        flat: a padded input, rows of width + 2 pixels flattened, whose row 1 + q - top holds input row q (the
        rows q0 - 1 .. q1 and one more, for the slices of the last row's taps, must be there; zero outside the
        image).
        """
        cin, cout, wp = self.in_channels, self.out_channels, width + 2
        offsets = [(1 + dy + (q0 - top)) * wp + dx + 1 for dy, dx in _DECONV_OFFSETS]  # relative to row q0 - 1
        step = self._step(wp)
        if not self.stacked:
            buffer = np.empty((step * wp, 9 * cin), dtype=np.float32)
        for r0, r1 in _chunks(q0, q1, step):
            start, count = (r0 - q0) * wp, (r1 - r0) * wp
            first = target_row + 2 * (r0 - q0)
            # output rows 2 r0 .. 2 r1 as (q, ry, p, rx, c): out[2q + ry, 2p + rx]
            rows = target[first:first + 2 * (r1 - r0), 1:2 * width + 1].reshape(r1 - r0, 2, width, 2, cout)
            if self.stacked:
                contributions = (self.by_offset @ flat[start:start + count + max(offsets)].T).reshape(9, 4 * cout, -1)
                part = contributions[0, :, offsets[0]:offsets[0] + count].copy()
                for t, offset in enumerate(offsets[1:], 1):
                    part += contributions[t, :, offset:offset + count]
                part = part.reshape(2, 2, cout, r1 - r0, wp)[..., :width].transpose(3, 0, 4, 1, 2)
                np.add(part, self.bias, out=rows)
            else:
                patch = _patches(flat, offsets, start, count, buffer)
                for ry, rx, a, b, matrix in self.phases:
                    product = patch[:, a * cin:b * cin] @ matrix
                    np.add(product.reshape(r1 - r0, wp, cout)[:, :width], self.bias, out=rows[:, ry, :, rx])
            if self.igdn is not None:  # whole target rows: their border pixels are zero and stay zero
                igdn(target[first:first + 2 * (r1 - r0)], *self.igdn)


def upsample_pair(x: Padded, first: TransposedConv, second: TransposedConv, band_rows: int = 32) -> Padded:
    """second(first(x)) without first's whole output: first's output is made band_rows input rows at a time
    (plus one row pair on each side, for second's taps) into a reused band buffer per worker thread, and second
    runs on the band. The largest layer of the synthesis, 157 MB for a 1280x960 image, then takes a band of about
    22 MB per worker. x (H, W, C) -> (4H, 4W, second's C_out)."""
    h, w, mid = x.height, x.width, first.out_channels
    out = Padded(4 * h, 4 * w, second.out_channels)

    def bands(starts: list[int]) -> None:
        band = np.zeros((2 * band_rows + 5, 2 * w + 2, mid), dtype=np.float32)  # row j: first's row 2 q0 - 2 + j
        for q0 in starts:
            q1 = min(q0 + band_rows, h)
            a, b = max(q0 - 1, 0), min(q1 + 1, h)  # first's input rows: output rows 2a .. 2b cover 2 q0 - 1 .. 2 q1
            low, high = 2 * a - (2 * q0 - 2), 2 * b - (2 * q0 - 2)  # band rows written
            band[:low] = 0  # above the image: second's zero padding
            band[high:] = 0  # below it, and the spare row
            first.rows(x.flat, w, 0, a, b, band, low)
            second.rows(band.reshape(-1, mid), 2 * w, 2 * q0 - 1, 2 * q0, 2 * q1, out.buffer, 1 + 4 * q0)

    starts = list(range(0, h, band_rows))
    _parallel([functools.partial(bands, starts[i::WORKERS]) for i in range(min(WORKERS, len(starts)))])
    return out


def igdn(x: np.ndarray, beta: np.ndarray, gamma: np.ndarray) -> np.ndarray:
    """Inverse GDN in place on x (..., C): x_c * sqrt(beta_c + sum_j gamma_cj x_j^2), with the effective (already
    reparametrised) beta (C,) and gamma (C, C). Returns x. Zero stays zero."""
    c = x.shape[-1]
    flat = x.reshape(-1, c)
    gamma_t = np.ascontiguousarray(gamma.T)
    step = max(1, CHUNK_ELEMENTS // (2 * c))
    for start in range(0, flat.shape[0], step):
        part = flat[start:start + step]
        norm = np.square(part) @ gamma_t
        norm += beta
        np.sqrt(norm, out=norm)
        part *= norm
    return x


def leaky_relu(x: np.ndarray) -> np.ndarray:
    """In place: x where x >= 0, else LEAKY_SLOPE * x. Returns x. Zero stays zero."""
    np.maximum(x, x * np.float32(LEAKY_SLOPE), out=x)
    return x


def lstm(inputs: np.ndarray, layers: list[tuple[np.ndarray, np.ndarray, np.ndarray]],
         state: tuple[np.ndarray, np.ndarray] | None = None) -> tuple[np.ndarray, tuple[np.ndarray, np.ndarray]]:
    """A multi-layer LSTM as torch.nn.LSTM (gate order i, f, g, o): inputs (T, B, I); per layer (W_ih (4H, I),
    W_hh (4H, H), bias b_ih + b_hh (4H,)); state (h0, c0) each (layers, B, H), zeros when None.
    Returns outputs (T, B, H) of the last layer and (h_T, c_T) each (layers, B, H).

    A sequential loop of small numpy operations, whose cost is their number (each call takes microseconds
    whatever its size), so the loop runs all L layers at once as a wavefront: at step k layer l computes time
    k - l, from layer l - 1's output at that time (computed at step k - 1) and its own state. One product of the
    stacked states, column per batch item, [h_0; ...; h_{L-1}; 1] (L H + 1, B) with one block matrix (4 L H,
    L H + 1) gives every layer's gates: rows ordered i, f, o, g, each for layers 0..L-1; layer l's block holds
    W_hh of layer l, W_ih of layer l > 0 and the biases. Layer 0's input terms for all steps are one product
    before the loop. sigmoid(x) = 0.5 + 0.5 tanh(x / 2), so the i, f, o rows are pre-scaled by 1/2 and one tanh
    gives all gates. On the 2-core machine a codebook of eK = 4096 (2 layers, H = 64, B = 4) took 0.47 s, against
    0.60 s with one loop per layer and 0.09 s with torch's LSTM (one run each, 2026-11-27).
    """
    steps, batch, _ = inputs.shape
    count, hidden = len(layers), layers[0][1].shape[1]
    size = count * hidden
    order = [0, 1, 3, 2]  # ours i, f, o, g <- torch's i, f, g, o
    scale = np.full((4, 1, 1), 0.5, dtype=np.float32)
    scale[3] = 1.0  # g: tanh itself
    matrix = np.zeros((4, count, hidden, size + 1), dtype=np.float32)  # (gate, layer, unit, state or bias)
    for n, (w_ih, w_hh, bias) in enumerate(layers):
        gates_of = lambda w: w.reshape(4, hidden, -1)[order]  # noqa: E731  (4, H, columns) in our gate order
        matrix[:, n, :, n * hidden:(n + 1) * hidden] = gates_of(w_hh)
        if n > 0:
            matrix[:, n, :, (n - 1) * hidden:n * hidden] = gates_of(w_ih)
            matrix[:, n, :, size] = gates_of(bias[:, None])[..., 0]
    matrix *= scale.reshape(4, 1, 1, 1)
    matrix = matrix.reshape(4 * size, size + 1)
    w_ih0, _, bias0 = layers[0]
    first_in = (inputs.reshape(-1, inputs.shape[-1]) @ w_ih0.T + bias0).reshape(steps, batch, 4, hidden)
    first_in = np.ascontiguousarray(first_in[:, :, order].transpose(0, 2, 3, 1)) * scale  # (T, 4, H, B)

    states = np.zeros((size + 1, batch), dtype=np.float32)  # [h_0; ...; h_{L-1}; 1]
    cells = np.zeros((size, batch), dtype=np.float32)
    if state is not None:
        states[:size] = state[0].transpose(0, 2, 1).reshape(size, batch)
        cells[:] = state[1].transpose(0, 2, 1).reshape(size, batch)
    states[size] = 1.0
    hidden_states, h = states[:size], states[:size].reshape(count, hidden, batch)
    gates = np.empty((4, count, hidden, batch), dtype=np.float32)
    i, f, o, g = gates[0], gates[1], gates[2], gates[3]
    ig = np.empty((count, hidden, batch), dtype=np.float32)
    c = cells.reshape(count, hidden, batch)
    outputs = np.empty((steps, hidden, batch), dtype=np.float32)
    for k in range(steps + count - 1):
        active = slice(max(0, k - steps + 1), min(count, k + 1))  # layers whose time k - l is in 0..T-1
        kept = None if (active.start, active.stop) == (0, count) else (h.copy(), c.copy())
        np.matmul(matrix, states, out=gates.reshape(4 * size, batch))
        if k < steps:
            gates[:, 0] += first_in[k]
        np.tanh(gates, out=gates)
        sigmoids = gates[:3]  # i, f, o: 0.5 + 0.5 tanh(x / 2)
        sigmoids *= np.float32(0.5)
        sigmoids += np.float32(0.5)
        np.multiply(i, g, out=ig)
        c *= f
        c += ig
        np.tanh(c, out=h)
        h *= o
        if kept is not None:  # the layers outside their time range keep their state
            outside = [n for n in range(count) if not active.start <= n < active.stop]
            h[outside], c[outside] = kept[0][outside], kept[1][outside]
        if k >= count - 1:
            outputs[k - count + 1] = h[count - 1]
    final_h = h.transpose(0, 2, 1).copy()
    final_c = c.transpose(0, 2, 1).copy()
    return np.ascontiguousarray(outputs.transpose(0, 2, 1)), (final_h, final_c)
