"""The decoder's layers in numpy (no torch): convolutions, GDN and an LSTM, on channels-last float32 arrays.

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

import numpy as np

CHUNK_ELEMENTS = 1 << 20  # patch-matrix elements per chunk of rows (4 MB of float32)
STACKED_PHASES_MAX_OUT = 16  # deconv2d: layers of at most this many outputs compute the four phases at once
SMALL_CHUNK_ROWS = 32768  # deconv2d of few outputs: input positions per chunk (16 MB at 128 channels)
LEAKY_SLOPE = 0.01  # torch.nn.LeakyReLU's default, as the residual block uses


class Padded:
    """An (H, W, C) float32 image inside a zero border: `buffer` (H + 3, W + 2, C), the image at [1:H+1, 1:W+1].

    Layers write only the interior; elementwise steps that keep zero at zero (LeakyReLU, GDN, sums of padded
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


def _row_chunks(rows: int, width: int, columns: int) -> list[tuple[int, int]]:
    """Chunks (first row, last row + 1) of an output `rows` high whose patch matrix has width*columns elements
    per row."""
    step = max(1, CHUNK_ELEMENTS // (width * columns))
    return [(r, min(r + step, rows)) for r in range(0, rows, step)]


def pointwise_conv(x: np.ndarray, weight: np.ndarray, bias: np.ndarray) -> Padded:
    """1x1 convolution: x (H, W, C_in), weight (C_out, C_in, 1, 1) as torch's Conv2d, bias (C_out,) -> Padded."""
    h, w, cin = x.shape
    out = Padded(h, w, weight.shape[0])
    out.interior[...] = (np.ascontiguousarray(x).reshape(-1, cin) @ weight[:, :, 0, 0].T + bias).reshape(h, w, -1)
    return out


def conv3x3(x: Padded, weight: np.ndarray, bias: np.ndarray) -> Padded:
    """Stride-1 3x3 convolution with zero padding 1: weight (C_out, C_in, 3, 3) as torch's Conv2d, bias (C_out,)."""
    h, w, cin = x.height, x.width, x.channels
    cout = weight.shape[0]
    flat, wp = x.flat, x.row_width
    offsets = [ky * wp + kx for ky in range(3) for kx in range(3)]
    matrix = np.ascontiguousarray(weight.transpose(2, 3, 1, 0).reshape(9 * cin, cout))
    out = Padded(h, w, cout)
    chunks = _row_chunks(h, wp, 9 * cin)
    buffer = np.empty(((chunks[0][1] - chunks[0][0]) * wp, 9 * cin), dtype=np.float32)
    for r0, r1 in chunks:
        patch = _patches(flat, offsets, r0 * wp, (r1 - r0) * wp, buffer)
        out.buffer[1 + r0:1 + r1, 1:w + 1] = (patch @ matrix + bias).reshape(r1 - r0, wp, cout)[:, :w]
    return out


# The nine input offsets (dy, dx) of a k=5, stride-2 transposed convolution, ordered so that each output phase's
# taps are a contiguous range: phase (0, 1) the first 6, (1, 1) 2..5, (1, 0) 2..7, (0, 0) all 9.
_DECONV_OFFSETS = [(-1, 0), (-1, 1), (0, 0), (0, 1), (1, 0), (1, 1), (0, -1), (1, -1), (-1, -1)]
_PHASE_RANGES = {(0, 0): (0, 9), (0, 1): (0, 6), (1, 0): (2, 8), (1, 1): (2, 6)}


def _phase_tap(phase: int, offset: int) -> int:
    """Kernel index of input offset d for output phase r (k=5, s=2, p=2): k = r + 2 - 2d."""
    return phase + 2 - 2 * offset


def _phase_matrix(weight: np.ndarray, ry: int, rx: int, a: int, b: int) -> np.ndarray:
    """The stacked (taps a..b-1) x C_in rows, C_out columns of output phase (ry, rx)."""
    cin, cout = weight.shape[:2]
    matrix = np.empty((b - a, cin, cout), dtype=np.float32)
    for t in range(a, b):
        dy, dx = _DECONV_OFFSETS[t]
        matrix[t - a] = weight[:, :, _phase_tap(ry, dy), _phase_tap(rx, dx)]
    return matrix.reshape((b - a) * cin, cout)


def deconv2d(x: Padded, weight: np.ndarray, bias: np.ndarray,
             igdn: tuple[np.ndarray, np.ndarray] | None = None) -> Padded:
    """ConvTranspose2d(k=5, stride=2, padding=2, output_padding=1) as torch's: x (H, W, C_in), weight (C_in,
    C_out, 5, 5), bias (C_out,) -> (2H, 2W, C_out); then, if given (beta, gamma), IGDN (see `gdn`), applied to
    each chunk of output rows while it is in cache.

    Wide layers run one matrix product per phase over its own taps (25 taps in all: no zero terms). Layers of
    at most STACKED_PHASES_MAX_OUT outputs run one product of every input position with all nine offsets' taps
    of all four phases (zeros where a phase has no tap), whose shifted rows are then summed: a product with
    C_out = 3 columns runs far below the BLAS's peak, one with 9 x 4 x 3 nearer it.
    """
    h, w, cin = x.height, x.width, x.channels
    cout = weight.shape[1]
    if weight.shape[2:] != (5, 5):
        raise ValueError(f"deconv2d supports 5x5 kernels, got {weight.shape[2:]}")
    flat, wp = x.flat, x.row_width
    offsets = [(dy + 1) * wp + dx + 1 for dy, dx in _DECONV_OFFSETS]
    out = Padded(2 * h, 2 * w, cout)
    # out[2q + ry, 2p + rx] of the rows 2 r0 .. 2 r1 as (q, ry, p, rx, c)
    rows = lambda r0, r1: out.buffer[1 + 2 * r0:1 + 2 * r1, 1:2 * w + 1].reshape(r1 - r0, 2, w, 2, cout)
    if cout <= STACKED_PHASES_MAX_OUT:
        stacked = np.zeros((9 * cin, 2, 2, cout), dtype=np.float32)
        for (ry, rx), (a, b) in _PHASE_RANGES.items():
            stacked[a * cin:b * cin, ry, rx] = _phase_matrix(weight, ry, rx, a, b)
        # One product gives every input position's contribution through each offset (rows t * 4 C_out ...);
        # shifted sums of its rows place them.
        by_offset = np.ascontiguousarray(stacked.reshape(9, cin, 4 * cout).transpose(0, 2, 1)).reshape(-1, cin)
        reach = max(offsets)
        step = max(1, SMALL_CHUNK_ROWS // wp)
        chunks = [(r, min(r + step, h)) for r in range(0, h, step)]
    else:
        phases = [(ry, rx, a, b, _phase_matrix(weight, ry, rx, a, b)) for (ry, rx), (a, b) in _PHASE_RANGES.items()]
        chunks = _row_chunks(h, wp, 9 * cin)
        buffer = np.empty(((chunks[0][1] - chunks[0][0]) * wp, 9 * cin), dtype=np.float32)
    for r0, r1 in chunks:
        start, count = r0 * wp, (r1 - r0) * wp
        if cout <= STACKED_PHASES_MAX_OUT:
            contributions = (by_offset @ flat[start:start + count + reach].T).reshape(9, 4 * cout, -1)
            part = contributions[0, :, offsets[0]:offsets[0] + count].copy()
            for t, offset in enumerate(offsets[1:], 1):
                part += contributions[t, :, offset:offset + count]
            part = part.reshape(2, 2, cout, r1 - r0, wp)[..., :w].transpose(3, 0, 4, 1, 2)
            np.add(part, bias, out=rows(r0, r1))
        else:
            patch = _patches(flat, offsets, start, count, buffer)
            target = rows(r0, r1)
            for ry, rx, a, b, matrix in phases:
                product = patch[:, a * cin:b * cin] @ matrix
                np.add(product.reshape(r1 - r0, wp, cout)[:, :w], bias, out=target[:, ry, :, rx])
        if igdn is not None:  # whole buffer rows: their border pixels are zero and stay zero
            gdn(out.flat[(1 + 2 * r0) * out.row_width:(1 + 2 * r1) * out.row_width], *igdn, inverse=True)
    return out


def gdn(x: np.ndarray, beta: np.ndarray, gamma: np.ndarray, inverse: bool) -> np.ndarray:
    """GDN (inverse: IGDN) in place on x (..., C): x_c * (beta_c + sum_j gamma_cj x_j^2)^(-1/2 or +1/2), with
    the effective (already reparametrised) beta (C,) and gamma (C, C). Returns x. Zero stays zero."""
    c = x.shape[-1]
    flat = x.reshape(-1, c)
    gamma_t = np.ascontiguousarray(gamma.T)
    step = max(1, CHUNK_ELEMENTS // (2 * c))
    for start in range(0, flat.shape[0], step):
        part = flat[start:start + step]
        norm = np.square(part) @ gamma_t
        norm += beta
        np.sqrt(norm, out=norm)
        if inverse:
            part *= norm
        else:
            part /= norm
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

    A layer's input terms for all steps are one matrix product. The step loop then does a few small numpy
    operations: sigmoid(x) = 0.5 + 0.5 tanh(x / 2), so the i, f, o columns are pre-scaled by 1/2 and one tanh
    gives all four gates.
    """
    steps, batch, _ = inputs.shape
    hidden = layers[0][1].shape[1]
    scale = np.full(4 * hidden, 0.5, dtype=np.float32)
    scale[2 * hidden:3 * hidden] = 1.0  # g: tanh itself
    shift = np.float32(1.0) - scale  # 0.5 for i, f, o; 0 for g
    h_out, c_out = [], []
    sequence = inputs
    for n, (w_ih, w_hh, bias) in enumerate(layers):
        h = np.zeros((batch, hidden), np.float32) if state is None else state[0][n].copy()
        c = np.zeros((batch, hidden), np.float32) if state is None else state[1][n].copy()
        gates_in = (sequence.reshape(-1, sequence.shape[-1]) @ w_ih.T + bias) * scale
        gates_in = gates_in.reshape(steps, batch, 4 * hidden)
        w_hh_t = np.ascontiguousarray(w_hh.T * scale)
        outputs = np.empty((steps, batch, hidden), np.float32)
        gates = np.empty((batch, 4 * hidden), np.float32)
        ig = np.empty((batch, hidden), np.float32)
        i, f, g, o = (gates[:, k * hidden:(k + 1) * hidden] for k in range(4))
        for t in range(steps):
            np.matmul(h, w_hh_t, out=gates)
            gates += gates_in[t]
            np.tanh(gates, out=gates)
            gates *= scale
            gates += shift
            np.multiply(i, g, out=ig)
            c *= f
            c += ig
            h = outputs[t]
            np.tanh(c, out=h)
            h *= o
        h_out.append(h.copy())
        c_out.append(c)
        sequence = outputs
    return sequence, (np.stack(h_out), np.stack(c_out))
