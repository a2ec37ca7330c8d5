"""Product vector quantisation: nearest-neighbour assignment and the EMA-trained base codebooks.

Shapes: a latent z (B, G*dg, h, w) holds G sub-vectors of dg dims per position; a codebook is (G, n, dg),
one table of n codewords per group; indices are (B, G, h, w) int64.
"""
from __future__ import annotations

import functools

import torch
import torch.nn.functional as F
from torch import nn

from raqcodec import distributed

# Elements of the (G, rows, n) distance matrix computed at once: 8 MB of float32, which keeps each chunk in cache
# for the argmin / topk that follows. On the 2-core AVX2 machine (2026-11-27; a Kodak latent, eK 4096, best of 3)
# 32 candidates took 222-258 ms against 407-433 ms with 16 MB chunks, the nearest index 79-102 against 225-253 ms;
# 4 MB chunks were as fast. (On the earlier AVX-512 machine, 16 MB chunks were 2x faster than 64 MB.)
_DISTANCE_CHUNK_ELEMENTS = 1 << 21


def split_groups(z: torch.Tensor, groups: int) -> torch.Tensor:
    """(B, G*dg, h, w) -> (G, B*h*w, dg)."""
    b, c, h, w = z.shape
    return z.reshape(b, groups, c // groups, h, w).permute(1, 0, 3, 4, 2).reshape(groups, b * h * w, c // groups)


def merge_groups(vectors: torch.Tensor, batch: int, height: int, width: int) -> torch.Tensor:
    """(G, B*h*w, dg) -> (B, G*dg, h, w); inverse of split_groups."""
    g, _, dg = vectors.shape
    return vectors.reshape(g, batch, height, width, dg).permute(1, 0, 4, 2, 3).reshape(batch, g * dg, height, width)


def _distance_chunks(vectors: torch.Tensor, codebook: torch.Tensor, penalty: torch.Tensor | None = None):
    """Yield (start, D): D (G, rows, n) = |c|^2 - 2 v.c (+ penalty) for vectors[:, start:start + rows].

    |v|^2 is left out (the same for every codeword of a row). Rows are chunked so that memory stays bounded
    whatever N and n (eK=4096 on a 12-megapixel image included). Every D is written into one buffer, which the
    next chunk overwrites: use D before advancing. A new tensor per chunk took twice as long (a Kodak latent's
    shape, random values, eK 4096, the 48 chunks: 57 against 28 ms on the 2-core AVX-512 machine, freed memory
    kept; 118 against 28 ms with glibc's default, which returns every chunk's memory to the system).
    """
    g, n_vec, _ = vectors.shape
    n_code = codebook.shape[1]
    code_sq = (codebook * codebook).sum(-1)  # (G, n)
    code_sq = (code_sq if penalty is None else code_sq + penalty).unsqueeze(1)  # (G, 1, n)
    chunk = max(1, _DISTANCE_CHUNK_ELEMENTS // (g * n_code))
    buffer = torch.empty(g * min(chunk, n_vec) * n_code, dtype=vectors.dtype, device=vectors.device)
    for start in range(0, n_vec, chunk):
        part = vectors[:, start:start + chunk]
        out = buffer[:g * part.shape[1] * n_code].view(g, part.shape[1], n_code)
        yield start, torch.baddbmm(code_sq, part, codebook.transpose(1, 2), alpha=-2.0, out=out)


# Strided blocks of a row: block j holds elements j, j + n/B, j + 2n/B, ... Their minima are an elementwise minimum
# of B contiguous slices (one vectorised pass), so a selection can run on n/B block minima and then on the
# members of the few blocks that matter. Measured on the 2-core CPU (benchmarks/selection_speed.py: distance chunks
# of a Kodak latent and the shipped model's codebooks): the 32 smallest of 1024 / 2048 / 4096 in 0.84 / 0.70 /
# 0.77 x topk's time, the argmin of 512 to 4096 in 0.44 to 0.52 x argmin's. On a GPU the plain operations are used.
_SELECT_BLOCKS = 8  # for row_smallest, rows of at least _SELECT_MIN_WIDTH
_SELECT_MIN_WIDTH = 1024
_ARGMIN_BLOCKS = 16  # for row_argmin, rows of at least _ARGMIN_MIN_WIDTH
_ARGMIN_MIN_WIDTH = 512


def _block_minima(rows: torch.Tensor, blocks: int) -> torch.Tensor:
    """rows (..., n), n a multiple of blocks -> (..., n / blocks): the minimum of each strided block."""
    return rows.reshape(*rows.shape[:-1], blocks, rows.shape[-1] // blocks).amin(-2)


def _block_members(block: torch.Tensor, blocks: int, width: int) -> torch.Tensor:
    """Block numbers (..., k) -> the indices of their members (..., blocks * k), member by member."""
    offsets = width * torch.arange(blocks, device=block.device).unsqueeze(-1)  # (blocks, 1)
    return (block.unsqueeze(-2) + offsets).flatten(-2)


def row_smallest(rows: torch.Tensor, k: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The k smallest values of each row, smallest first, and their indices: rows (..., n) -> two (..., k).

    The same as rows.topk(k, largest=False) up to the order (or choice, at the k-th) of equal values. Blocked
    on the CPU: the k smallest values lie in the k blocks of smallest minima (a member of any other block has
    k smaller values before it: those k minima), so topk runs on the n/B minima and on k*B members.
    """
    n = rows.shape[-1]
    if rows.device.type != "cpu" or n < _SELECT_MIN_WIDTH or n % _SELECT_BLOCKS or k > n // _SELECT_BLOCKS:
        top = rows.topk(k, dim=-1, largest=False)
        return top.values, top.indices
    width = n // _SELECT_BLOCKS
    best_blocks = _block_minima(rows, _SELECT_BLOCKS).topk(k, dim=-1, largest=False, sorted=False).indices
    members = _block_members(best_blocks, _SELECT_BLOCKS, width)
    top = rows.gather(-1, members).topk(k, dim=-1, largest=False)
    return top.values, members.gather(-1, top.indices)


def row_argmin(rows: torch.Tensor) -> torch.Tensor:
    """rows (..., n) -> (...) int64: the index of each row's smallest value (rows.argmin(-1) up to the choice
    among equal values). Blocked on the CPU: the block of smallest minimum, then its smallest member."""
    n = rows.shape[-1]
    if rows.device.type != "cpu" or n < _ARGMIN_MIN_WIDTH or n % _ARGMIN_BLOCKS:
        return rows.argmin(-1)
    width = n // _ARGMIN_BLOCKS
    members = _block_members(_block_minima(rows, _ARGMIN_BLOCKS).argmin(-1, keepdim=True), _ARGMIN_BLOCKS, width)
    return members.gather(-1, rows.gather(-1, members).argmin(-1, keepdim=True))[..., 0]


@torch.no_grad()
def nearest_indices(vectors: torch.Tensor, codebook: torch.Tensor, penalty: torch.Tensor | None = None) -> torch.Tensor:
    """Index of the nearest codeword (squared L2) for each vector, or of the smallest squared distance + penalty.

    vectors (G, N, dg), codebook (G, n, dg), penalty (G, n) or None -> (G, N) int64.
    """
    out = torch.empty(vectors.shape[:2], dtype=torch.long, device=vectors.device)
    for start, dist in _distance_chunks(vectors, codebook, penalty):
        out[:, start:start + dist.shape[1]] = row_argmin(dist)
    return out


@torch.no_grad()
def nearest_candidates(vectors: torch.Tensor, codebook: torch.Tensor, count: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The `count` nearest codewords of each vector, nearest first.

    vectors (G, N, dg), codebook (G, n, dg) -> (squared distances (G, N, m) float, indices (G, N, m) int64),
    m = min(count, n).
    """
    m = min(count, codebook.shape[1])
    dist = torch.empty(*vectors.shape[:2], m, device=vectors.device)
    idx = torch.empty(*vectors.shape[:2], m, dtype=torch.long, device=vectors.device)
    v_sq = (vectors * vectors).sum(-1, keepdim=True)  # (G, N, 1)
    for start, part in _distance_chunks(vectors, codebook):
        stop = start + part.shape[1]
        values, indices = row_smallest(part, m)
        dist[:, start:stop] = (values + v_sq[:, start:stop]).clamp_min(0.0)
        idx[:, start:stop] = indices
    return dist, idx


# Weight of the order-0 distribution in context_bits' mixture: one of the CONTEXT model's MIX_WEIGHTS (the writer
# picks the best per group; the encoder's estimate uses one).
CONTEXT_ALPHA = 32.0


@torch.no_grad()
def entropy_constrained_indices(dist: torch.Tensor, candidates: torch.Tensor, codebook_size: int, lam: float,
                                passes: int, grid: tuple[int, int] | None = None, start: torch.Tensor | None = None,
                                context_passes: int | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Entropy-constrained VQ (Chou, Lookabaugh and Gray 1989) among each vector's nearest candidates.

    dist, candidates: (G, N, m) from nearest_candidates. Each vector takes the candidate minimising squared
    distance + lam * bits, where bits are the code length under the current assignment: without `grid`,
    -log2 of codeword k's share of its group (counts + 1/2, the order-0 cost an adaptive coder converges to);
    with grid = (h, w), N = h * w positions in raster order, the CONTEXT model's cost (`context_bits`).
    The assignment starts at the nearest codewords and is re-estimated up to `passes` times: a pass that keeps
    every choice is a fixed point, and the passes left would repeat it (rate control on 4 Kodak images, order-0:
    at 1.2 bpp 81 of 138 calls reach one, and 198 of their 552 passes are skipped; at 0.1 bpp 12 of 116 calls,
    10 passes; at 0.5 bpp none of 80). lam: squared-distance units per bit (0: nearest). start (with `grid`):
    indices (G, N), each among its vector's candidates, from which the context passes start instead of running
    the order-0 passes first: rate control gives the order-0 choice at the same lam (the same result, without
    computing it again) or the context choice at a nearby lam (`ratecontrol.RateAwareQuantizer`).
    context_passes: the most passes with the context model's cost (default: `passes`).
    Returns (indices (G, N) int64, their squared distances (G, N)).
    """
    if lam <= 0:
        return candidates[..., 0].contiguous(), dist[..., 0].contiguous()
    slot = torch.zeros(candidates.shape[:2] + (1,), dtype=torch.long, device=candidates.device)
    rounds = [(functools.partial(order0_bits, codebook_size=codebook_size), passes)]  # (cost, most passes)
    if grid is not None and start is not None:  # candidates are distinct: the one equal to start is its slot
        slot, rounds = (candidates == start.unsqueeze(-1)).to(torch.uint8).argmax(-1, keepdim=True), []
    if grid is not None:  # from the order-0 choice: from the nearest, kodim04 lost 0.16 / 0.37 dB at 0.1 / 0.3 bpp
        rounds.append((functools.partial(context_bits, codebook_size=codebook_size, height=grid[0], width=grid[1]),
                       passes if context_passes is None else context_passes))
    for bits_of, most in rounds:
        for _ in range(most):
            bits = bits_of(torch.gather(candidates, 2, slot)[..., 0], candidates)
            chosen = bits.mul_(lam).add_(dist).argmin(-1, keepdim=True)  # dist + lam * bits, in place
            if torch.equal(chosen, slot):
                break
            slot = chosen
    return torch.gather(candidates, 2, slot)[..., 0], torch.gather(dist, 2, slot)[..., 0]


def order0_bits(choice: torch.Tensor, candidates: torch.Tensor, codebook_size: int) -> torch.Tensor:
    """Bits (G, N, m) of every candidate: -log2 of its share of its group in the assignment choice (G, N),
    counts + 1/2."""
    g, n, m = candidates.shape
    counts = torch.zeros(g, codebook_size, device=choice.device).scatter_add_(
        1, choice, torch.ones_like(choice, dtype=torch.float32))
    bits = torch.log2(counts.sum(1, keepdim=True) + 0.5 * codebook_size) - torch.log2(counts + 0.5)
    return torch.gather(bits, 1, candidates.reshape(g, n * m)).reshape(g, n, m)


def context_bits(choice: torch.Tensor, candidates: torch.Tensor, codebook_size: int, height: int,
                 width: int) -> torch.Tensor:
    """Bits (G, N, m) of every candidate under the CONTEXT entropy model (entropy.py) estimated from the
    assignment choice (G, N = height * width, raster order):

        -log2 (n_top[t, k] + n_prev[p, k] + CONTEXT_ALPHA * p0[k]) / (n_top[t] + n_prev[p] + CONTEXT_ALPHA)

    t is the index one row above in the same group (no term in row 0), p the index at the same position in the
    previous group (no term for group 0); n_top[t, k] counts the pairs (t above, k below) of the whole
    assignment, n_prev[p, k] the pairs (p in the group before, k), n_top[t] and n_prev[p] their sums over k;
    p0 is the order-0 share (counts + 1/2). The coder adapts these counts row by row; the encoder uses the whole
    grid's, which is what they converge to. Memory: one (G, eK^2) float32 table (16 MB at eK 1024, G = 4).
    """
    g, n, m = candidates.shape
    grid = choice.reshape(g, height, width)
    ones = torch.ones(g, n, device=choice.device)
    p0 = torch.zeros(g, codebook_size, device=choice.device).scatter_add_(1, choice, ones)
    p0 = (p0 + 0.5) / (n + 0.5 * codebook_size)
    mixed = CONTEXT_ALPHA * torch.gather(p0, 1, candidates.reshape(g, n * m)).reshape(g, height, width, m)
    total = torch.full((g, height, width, 1), CONTEXT_ALPHA, device=choice.device)
    cand = candidates.reshape(g, height, width, m)
    pairs = torch.zeros(g, codebook_size * codebook_size, device=choice.device)

    def add_context(context: torch.Tensor, symbols: torch.Tensor, target: slice, rows: slice) -> None:
        """Count the pairs (context, symbol), (G', P) each, into `pairs`; add each candidate's pair count and
        its context's count to mixed and total at groups `target`, rows `rows`; clear the counts again."""
        groups = context.shape[0]
        keys = context * codebook_size + symbols
        table = pairs[:groups].scatter_add_(1, keys, ones[:groups, :keys.shape[1]])
        per_context = torch.zeros(groups, codebook_size, device=choice.device).scatter_add_(
            1, context, ones[:groups, :keys.shape[1]])
        shape = (groups, -1, width)
        hits = torch.gather(table, 1, (context[..., None] * codebook_size + cand[target, rows].reshape(groups, -1, m))
                            .reshape(groups, -1)).reshape(*shape, m)
        mixed[target, rows] += hits
        total[target, rows] += torch.gather(per_context, 1, context).reshape(*shape, 1)
        table.scatter_(1, keys, 0.0)

    if height > 1:  # the index above, rows 1..h-1
        add_context(grid[:, :-1].reshape(g, -1), grid[:, 1:].reshape(g, -1), slice(None), slice(1, None))
    if g > 1:  # the same position in the group before, groups 1..G-1
        add_context(choice[:-1], choice[1:], slice(1, None), slice(None))
    return (torch.log2(total) - torch.log2(mixed)).reshape(g, n, m)


def lookup(indices: torch.Tensor, codebook: torch.Tensor) -> torch.Tensor:
    """indices (G, N) into codebook (G, n, dg) -> vectors (G, N, dg)."""
    return torch.gather(codebook, 1, indices.unsqueeze(-1).expand(-1, -1, codebook.shape[-1]))


def quantize_with(z: torch.Tensor, codebook: torch.Tensor, beta: float) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Quantise z (B, G*dg, h, w) with a codebook (G, n, dg), straight-through.

    Returns (z_q with straight-through gradient (B, G*dg, h, w), indices (G, B*h*w),
    loss = beta * ||z - sg(z_q)||^2 + ||sg(z) - z_q||^2, means over elements). The second term is what trains a
    generated codebook (its gradient reaches the generator through z_q).
    """
    b, _, h, w = z.shape
    vectors = split_groups(z, codebook.shape[0])
    indices = nearest_indices(vectors.detach(), codebook.detach())
    chosen = lookup(indices, codebook)
    loss = beta * F.mse_loss(vectors, chosen.detach()) + F.mse_loss(vectors.detach(), chosen)
    straight = vectors + (chosen - vectors).detach()
    return merge_groups(straight, b, h, w), indices, loss


def coverage_loss(vectors: torch.Tensor, codebook: torch.Tensor) -> torch.Tensor:
    """Mean over codewords of the squared distance to the NEAREST vector, per element.

    vectors (G, N, dg) (detached encoder outputs), codebook (G, n, dg) -> scalar. The codebook term of
    quantize_with only moves codewords that some vector chose; this term also pulls every unused codeword
    toward the data, so large generated codebooks do not keep dead rows.
    """
    dist = (codebook * codebook).sum(-1, keepdim=True) - 2.0 * torch.bmm(codebook, vectors.transpose(1, 2)) \
        + (vectors * vectors).sum(-1).unsqueeze(1)  # (G, n, N)
    return dist.min(-1).values.clamp_min(0).mean() / codebook.shape[-1]


class EMACodebook(nn.Module):
    """G base codebooks of K codewords, trained by exponential moving averages (no gradient).

    Fixes the reference code's dead codes: a codeword whose EMA usage falls below `dead_threshold` is
    restarted from a random encoder output of the current batch.
    """

    def __init__(self, groups: int, size: int, dim: int, decay: float, dead_threshold: float, eps: float = 1e-5) -> None:
        super().__init__()
        self.decay, self.dead_threshold, self.eps = decay, dead_threshold, eps
        embed = torch.randn(groups, size, dim) * 0.1
        self.register_buffer("embed", embed)  # (G, K, dg)
        self.register_buffer("cluster_size", torch.ones(groups, size))  # (G, K) EMA of assignments per step
        self.register_buffer("embed_sum", embed.clone())  # (G, K, dg) EMA of assigned vector sums

    @torch.no_grad()
    def update(self, vectors: torch.Tensor, indices: torch.Tensor) -> None:
        """One EMA step from vectors (G, N, dg) assigned to indices (G, N), then dead-code restarts."""
        g, k, dg = self.embed.shape
        onehot_counts = torch.zeros(g, k, device=vectors.device).scatter_add_(1, indices, torch.ones_like(indices, dtype=vectors.dtype))
        sums = torch.zeros(g, k, dg, device=vectors.device).scatter_add_(1, indices.unsqueeze(-1).expand(-1, -1, dg), vectors)
        distributed.sum_over_ranks(onehot_counts, sums)  # data-parallel training: the statistics of every rank
        self.cluster_size.mul_(self.decay).add_(onehot_counts, alpha=1 - self.decay)
        self.embed_sum.mul_(self.decay).add_(sums, alpha=1 - self.decay)
        total = self.cluster_size.sum(1, keepdim=True)
        smoothed = (self.cluster_size + self.eps) / (total + k * self.eps) * total
        self.embed.copy_(self.embed_sum / smoothed.unsqueeze(-1))
        self._restart_dead(vectors)

    @torch.no_grad()
    def _restart_dead(self, vectors: torch.Tensor) -> None:
        dead = self.cluster_size < self.dead_threshold  # (G, K)
        if not dead.any():
            return
        n = vectors.shape[1]
        for group in range(self.embed.shape[0]):
            rows = dead[group].nonzero().squeeze(1)
            if rows.numel() == 0:
                continue
            picks = vectors[group, torch.randint(0, n, (rows.numel(),), device=vectors.device)]
            self.embed[group, rows] = picks
            self.embed_sum[group, rows] = picks
            self.cluster_size[group, rows] = 1.0
