"""The model: shapes, the codebook generator, model-based resizing, the codebook cache, training."""
from __future__ import annotations

import time

import pytest
import torch
from torch import nn

from raqcodec.data import CropSampler
from raqcodec.models import RAQVAE, named_config
from raqcodec.models.model_based import dkm, resize_codebook
from raqcodec.models.quantizer import lookup, nearest_candidates, nearest_indices, row_argmin, row_smallest


def test_shapes_default_and_paper_configs():
    for name, f in (("default", 8), ("paper", 4)):
        cfg = named_config(name)
        model = RAQVAE(cfg).eval()
        x = torch.rand(2, 3, 64, 96)
        z = model.analysis(x)
        assert z.shape == (2, cfg.latent_dim, 64 // f, 96 // f)
        codebook = model.codebook(37)
        assert codebook.shape == (cfg.groups, 37, cfg.group_dim)
        idx = model.quantize(z, codebook)
        assert idx.shape == (2, cfg.groups, 64 // f, 96 // f) and int(idx.max()) < 37
        assert model.synthesis(model.dequantize(idx, codebook)).shape == x.shape


def test_generator_yields_exactly_ek_rows():
    cfg = named_config("default")
    model = RAQVAE(cfg).eval()
    for size in (17, 1000, cfg.max_codebook_size):
        assert model.codebook(size).shape == (cfg.groups, size, cfg.group_dim)


def test_same_size_twice_gives_identical_codebooks_and_cache_hits():
    model = RAQVAE(named_config("default")).eval()
    first = model.codebook(300).clone()
    model.clear_codebook_cache()
    assert torch.equal(first, model.codebook(300))  # regenerated, not cached
    start = time.perf_counter()
    again = model.codebook(300)
    assert torch.equal(first, again) and time.perf_counter() - start < 0.01  # cached


def test_sizes_differ_and_out_of_range_is_refused():
    model = RAQVAE(named_config("default")).eval()
    a, b = model.codebook(100), model.codebook(101)
    assert not torch.equal(a, b[:, :100])  # size-conditioned: not a prefix of the larger codebook
    for bad in (model.cfg.min_codebook_size - 1, model.cfg.max_codebook_size + 1):
        try:
            model.codebook(bad)
        except ValueError:
            continue
        raise AssertionError(f"codebook({bad}) accepted")


def test_size_blind_generator_gives_prefix_codebooks():
    model = RAQVAE(named_config("default", condition_on_size=False)).eval()
    assert torch.allclose(model.codebook(100), model.codebook(300)[:, :100], atol=1e-6)


def _distortion(points: torch.Tensor, centroids: torch.Tensor) -> float:
    idx = nearest_indices(points.unsqueeze(0), centroids.unsqueeze(0))
    return float(((points - lookup(idx, centroids.unsqueeze(0))[0]) ** 2).sum(-1).mean())


def test_dkm_rows_and_lower_distortion_than_random_selection():
    gen = torch.Generator().manual_seed(1)
    centres = torch.randn(8, 4, generator=gen) * 3
    codebook = (centres.repeat_interleave(32, 0) + 0.3 * torch.randn(256, 4, generator=gen))
    reduced = dkm(codebook, 8)
    assert reduced.shape == (8, 4)
    random_subset = codebook[torch.randperm(256, generator=gen)[:8]]
    assert _distortion(codebook, reduced) < _distortion(codebook, random_subset)


def test_model_based_resize_both_directions():
    base = torch.randn(2, 32, 4)
    assert resize_codebook(base, 8).shape == (2, 8, 4)
    assert resize_codebook(base, 48, ikm_steps=5).shape == (2, 48, 4)


def test_short_training_lowers_the_loss(image_folder):
    """A short run on synthetic images: the loss on a fixed batch falls by 30% or more."""
    from raqcodec.data import load_source

    torch.manual_seed(0)
    model = RAQVAE(named_config("tiny"))
    sampler = CropSampler(load_source(image_folder), 32, seed=0)
    fixed = sampler.sample(16)

    def loss() -> float:
        with torch.no_grad():
            model.eval()
            out = model(fixed, 64)
            model.train()
            return float(out["mse_adapted"] + out["mse_base"])

    before = loss()
    opt = torch.optim.Adam(model.parameters(), lr=2e-3)
    for _ in range(200):  # ~10 s on 2 cores: a fixed step count, so the test does not depend on machine load
        out = model(sampler.sample(8), 64)
        opt.zero_grad()
        out["loss"].backward()
        opt.step()
    assert loss() < 0.7 * before


def test_coverage_loss_pulls_unused_codewords_to_the_data():
    from raqcodec.models.quantizer import coverage_loss

    vectors = torch.randn(1, 50, 4)
    assert float(coverage_loss(vectors, vectors[:, :10].clone())) < 1e-5
    far = (vectors[:, :10] + 10.0).requires_grad_(True)
    loss = coverage_loss(vectors, far)
    loss.backward()
    assert loss.item() > 1.0 and float(far.grad.abs().sum()) > 0


def test_codebook_size_sampling_rules():
    import random
    import statistics

    from raqcodec.train import sample_codebook_size

    rng = random.Random(0)
    log_uniform = [sample_codebook_size(rng, 16, 1024) for _ in range(4000)]
    uniform = [sample_codebook_size(rng, 16, 1024, "uniform") for _ in range(4000)]
    assert min(log_uniform) >= 16 and max(log_uniform) <= 1024 and min(uniform) >= 16 and max(uniform) <= 1024
    assert 100 <= statistics.median(log_uniform) <= 156  # geometric middle of [16, 1024] is 128
    assert 470 <= statistics.median(uniform) <= 570  # arithmetic middle is 520
    with pytest.raises(ValueError):
        sample_codebook_size(rng, 16, 1024, "gaussian")


def test_gdn_and_residual_block_match_compressai():
    layers = pytest.importorskip("compressai.layers")
    from raqcodec.models.gdn import GDN, ResidualBlock

    torch.manual_seed(0)
    x = torch.randn(2, 8, 5, 7)
    for inverse in (False, True):
        ours, theirs = GDN(8, inverse=inverse), layers.GDN(8, inverse=inverse)
        with torch.no_grad():
            theirs.beta.uniform_(-0.1, 1.0)  # some entries below the bound: the custom gradient matters
            theirs.gamma.uniform_(-0.1, 0.5)
        ours.load_state_dict(theirs.state_dict())
        a, b = x.clone().requires_grad_(), x.clone().requires_grad_()
        out_ours, out_theirs = ours(a), theirs(b)
        assert torch.equal(out_ours, out_theirs)
        (out_ours ** 2).sum().backward()
        (out_theirs ** 2).sum().backward()
        assert torch.equal(a.grad, b.grad)
        assert torch.equal(ours.beta.grad, theirs.beta.grad) and torch.equal(ours.gamma.grad, theirs.gamma.grad)
    ours, theirs = ResidualBlock(8), layers.ResidualBlock(8, 8)
    ours.load_state_dict(theirs.state_dict())
    assert torch.equal(ours(x), theirs(x))


@pytest.mark.parametrize("width", [300, 512, 1024, 4096])
def test_blocked_selection_matches_topk_and_argmin(width):
    """row_smallest / row_argmin (blocked for wide rows on the CPU) give topk's and argmin's results on rows
    without equal values, including rows whose smallest values crowd into one strided block."""
    gen = torch.Generator().manual_seed(width)
    rows = torch.rand(3, 200, width, generator=gen, dtype=torch.float64).float()
    rows[0, :, torch.arange(width) % (width // 16) < 2] -= 1.0  # the smallest values in a few strided blocks
    rows[1, :, :40] -= 1.0  # the smallest values at contiguous indices: one per block
    top = rows.topk(32, dim=-1, largest=False)
    values, indices = row_smallest(rows, 32)
    assert torch.equal(values, top.values) and torch.equal(indices, top.indices)
    assert torch.equal(row_argmin(rows), rows.argmin(-1))


def test_blocked_selection_with_equal_values():
    """With ties the k smallest VALUES still match topk, and every index points at its value."""
    rows = torch.randint(0, 50, (4, 100, 2048), generator=torch.Generator().manual_seed(1)).float()
    values, indices = row_smallest(rows, 32)
    assert torch.equal(values, rows.topk(32, dim=-1, largest=False).values)
    assert torch.equal(rows.gather(-1, indices), values)
    assert torch.equal(rows.gather(-1, row_argmin(rows).unsqueeze(-1))[..., 0], rows.amin(-1))


@pytest.mark.parametrize("count", [500, 1300])  # 1300: three distance chunks (512 rows each here), the last partial
def test_nearest_candidates_agree_with_nearest_indices(count):
    gen = torch.Generator().manual_seed(2)
    vectors, codebook = torch.randn(2, count, 8, generator=gen), torch.randn(2, 2048, 8, generator=gen)
    dist, cand = nearest_candidates(vectors, codebook, 16)
    assert torch.equal(cand[..., 0], nearest_indices(vectors, codebook))
    exact = ((vectors.unsqueeze(2) - codebook.unsqueeze(1)) ** 2).sum(-1)  # (G, N, n)
    assert torch.allclose(dist, exact.topk(16, dim=-1, largest=False).values, atol=1e-4)


@pytest.mark.parametrize("lam", [0.0, 1e-6, 0.3, 3.0])
def test_entropy_constrained_choice_equals_every_pass_done(lam):
    """Stopping at a fixed point (a pass that keeps every choice) gives what all the passes give."""
    from raqcodec.models.quantizer import entropy_constrained_indices

    gen = torch.Generator().manual_seed(3)
    vectors, codebook = torch.randn(2, 400, 4, generator=gen), torch.randn(2, 64, 4, generator=gen)
    dist, cand = nearest_candidates(vectors, codebook, 8)
    slot = torch.zeros(2, 400, 1, dtype=torch.long)
    for _ in range(4 if lam > 0 else 0):
        counts = torch.stack([torch.bincount(row, minlength=64) for row in cand.gather(2, slot)[..., 0]]).float()
        bits = torch.log2(counts.sum(1, keepdim=True) + 0.5 * 64) - torch.log2(counts + 0.5)
        slot = (dist + lam * bits.gather(1, cand.flatten(1)).reshape(cand.shape)).argmin(-1, keepdim=True)
    indices, sq_dist = entropy_constrained_indices(dist, cand, 64, lam, 4)
    assert torch.equal(indices, cand.gather(2, slot)[..., 0])
    assert torch.equal(sq_dist, dist.gather(2, slot)[..., 0])
    assert lam < 0.3 or not torch.equal(indices, cand[..., 0])  # a strong lam moves choices off the nearest


def test_context_bits_follow_their_definition():
    """context_bits against a direct count, position by position, of the pairs its docstring defines."""
    import math

    from raqcodec.models.quantizer import CONTEXT_ALPHA, context_bits

    groups, height, width, size, m = 3, 5, 6, 7, 4
    gen = torch.Generator().manual_seed(0)
    choice = torch.randint(0, size, (groups, height * width), generator=gen)
    cand = torch.randint(0, size, (groups, height * width, m), generator=gen)
    bits = context_bits(choice, cand, size, height, width)
    grid = choice.reshape(groups, height, width).tolist()
    cells = [(r, x) for r in range(height) for x in range(width)]
    for g in range(groups):
        share = [(sum(v == k for row in grid[g] for v in row) + 0.5) / (height * width + 0.5 * size) for k in range(size)]
        for r, x in cells:
            for j in range(m):
                k = int(cand[g, r * width + x, j])
                hits = total = 0
                if r > 0:
                    above = [(rr, xx) for rr, xx in cells if rr > 0 and grid[g][rr - 1][xx] == grid[g][r - 1][x]]
                    total += len(above)
                    hits += sum(grid[g][rr][xx] == k for rr, xx in above)
                if g > 0:
                    same = [(rr, xx) for rr, xx in cells if grid[g - 1][rr][xx] == grid[g - 1][r][x]]
                    total += len(same)
                    hits += sum(grid[g][rr][xx] == k for rr, xx in same)
                expected = -math.log2((hits + CONTEXT_ALPHA * share[k]) / (total + CONTEXT_ALPHA))
                assert abs(float(bits[g, r * width + x, j]) - expected) < 1e-4


def test_context_choice_costs_less_under_the_context_coder():
    """On a latent with vertical structure, choosing with context bits gives a lower squared error + lam x
    (the CONTEXT coder's ideal code length) than choosing with order-0 bits, at the same lam."""
    import numpy as np

    from raqcodec import entropy
    from raqcodec.models.quantizer import entropy_constrained_indices

    gen = torch.Generator().manual_seed(1)
    groups, height, width, size = 2, 24, 32, 64
    codebook = torch.randn(groups, size, 4, generator=gen)
    columns = torch.randint(0, size, (groups, 1, width), generator=gen).expand(groups, height, width)  # stripes
    vectors = lookup(columns.reshape(groups, -1), codebook) + 0.8 * torch.randn(groups, height * width, 4,
                                                                                generator=gen)
    dist, cand = nearest_candidates(vectors, codebook, 16)
    lam = 0.5 * float(dist[..., 0].mean())

    def cost(grid: tuple[int, int] | None) -> float:
        indices, sq_dist = entropy_constrained_indices(dist, cand, size, lam, 4, grid)
        grids = indices.reshape(groups, height, width).numpy().astype(np.int32)
        return float(sq_dist.sum()) + lam * entropy.ideal_code_length_bits(grids, size, entropy.CONTEXT)

    assert cost((height, width)) < 0.97 * cost(None)


def test_context_choice_from_a_given_order0_choice_is_the_same():
    """Passing the order-0 choice at the same lam (start=) skips the order-0 passes and changes nothing."""
    from raqcodec.models.quantizer import entropy_constrained_indices

    gen = torch.Generator().manual_seed(2)
    groups, height, width, size = 2, 12, 16, 64
    codebook = torch.randn(groups, size, 4, generator=gen)
    dist, cand = nearest_candidates(torch.randn(groups, height * width, 4, generator=gen), codebook, 16)
    lam = 0.5 * float(dist[..., 0].mean())
    order0, _ = entropy_constrained_indices(dist, cand, size, lam, 4)
    direct = entropy_constrained_indices(dist, cand, size, lam, 4, (height, width))
    given = entropy_constrained_indices(dist, cand, size, lam, 4, (height, width), order0)
    assert not torch.equal(direct[0], cand[..., 0])  # the choice is not the nearest one
    assert torch.equal(given[0], direct[0]) and torch.equal(given[1], direct[1])


@pytest.mark.parametrize("cin, cout, kernel, stride, padding, output_padding", [
    (16, 3, 5, 2, 2, 1),  # the GDN backbone's output layer
    (16, 3, 8, 4, 2, 0),  # the paper backbone's output layer (asymmetric phase window: padded before the conv)
    (6, 5, 4, 2, 1, 0),
])
def test_polyphase_transposed_convolution_matches_the_parent(cin, cout, kernel, stride, padding, output_padding):
    from raqcodec.models.transforms import PolyphaseConvTranspose2d

    torch.manual_seed(0)
    layer = PolyphaseConvTranspose2d(cin, cout, kernel, stride=stride, padding=padding, output_padding=output_padding)
    assert layer._polyphase_shape()
    x = torch.randn(2, cin, 7, 10).contiguous(memory_format=torch.channels_last)
    assert torch.equal(layer(x), nn.ConvTranspose2d.forward(layer, x))  # with autograd (training): the parent's
    with torch.no_grad():
        fast, plain = layer(x), nn.ConvTranspose2d.forward(layer, x)
        assert fast.shape == plain.shape
        torch.testing.assert_close(fast, plain, rtol=1e-5, atol=1e-5)
        assert not torch.equal(fast, plain)  # the phase convolution ran (its float32 sums round differently)
        layer.double()  # the exact decoder's float64: the parent's
        assert torch.equal(layer(x.double()), nn.ConvTranspose2d.forward(layer, x.double()))


def test_fast_gdn_inference_matches_gdn_and_chunks_agree(monkeypatch):
    from raqcodec.models.gdn import GDN
    from raqcodec.models.transforms import FastGDN

    torch.manual_seed(0)
    x = torch.randn(1, 8, 9, 11).contiguous(memory_format=torch.channels_last)  # 99 pixels
    for inverse in (False, True):
        fast, plain = FastGDN(8, inverse=inverse), GDN(8, inverse=inverse)
        with torch.no_grad():
            plain.gamma.uniform_(0.0, 0.5)
        fast.load_state_dict(plain.state_dict())
        with torch.no_grad():
            whole = fast(x)
            torch.testing.assert_close(whole, plain(x))
            monkeypatch.setattr(FastGDN, "PIXEL_CHUNK", 16)  # 7 chunks, the last one short
            chunked = fast(x)
            # Bit-equal on the 2-core AVX2 machine, but not everywhere: the BLAS may pick another kernel for a
            # 16-row product (the H200 machine's 16-core CPU, torch 2.11, rounded differently): allow rounding.
            torch.testing.assert_close(chunked, whole, rtol=1e-6, atol=1e-6)
            monkeypatch.undo()


def test_context_passes_bound_the_context_choice():
    """context_passes caps the passes with the context model's cost: one pass from a start is one choice given
    the start's code lengths, and more passes go on from there."""
    from raqcodec.models.quantizer import context_bits, entropy_constrained_indices

    gen = torch.Generator().manual_seed(0)
    groups, height, width, size = 2, 12, 16, 64
    codebook = torch.randn(groups, size, 4, generator=gen)
    dist, cand = nearest_candidates(torch.randn(groups, height * width, 4, generator=gen), codebook, 16)
    lam = 2.0 * float(dist[..., 0].mean())  # these passes do not settle within 3
    order0, _ = entropy_constrained_indices(dist, cand, size, lam, 4)
    one, _ = entropy_constrained_indices(dist, cand, size, lam, 4, (height, width), order0, context_passes=1)
    bits = context_bits(order0, cand, size, height, width)
    assert torch.equal(one, torch.gather(cand, 2, (dist + lam * bits).argmin(-1, keepdim=True))[..., 0])
    two, _ = entropy_constrained_indices(dist, cand, size, lam, 4, (height, width), order0, context_passes=2)
    again, _ = entropy_constrained_indices(dist, cand, size, lam, 4, (height, width), one, context_passes=1)
    assert torch.equal(two, again) and not torch.equal(two, one) and not torch.equal(one, order0)
