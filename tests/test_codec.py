"""The codec through the Python API: round trips, rate control, bad files."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from conftest import synthetic_image

import raqcodec
from raqcodec import bitstream
from raqcodec.codec import analyse, encode, encode_latent, reconstruct


@pytest.mark.parametrize("height,width", [(1, 1), (17, 31), (64, 64), (512, 768)])
@pytest.mark.parametrize("size", [16, 100, 4096])
def test_round_trip_equals_in_process_reconstruction(tiny_model, height, width, size):
    pixels = synthetic_image(height, width, seed=height + width)
    enc = encode(pixels, codebook_size=size, model=tiny_model)
    decoded = raqcodec.decompress(enc.data, model=tiny_model)
    assert decoded.size == (width, height) and decoded.mode == "RGB"
    expected = reconstruct(tiny_model, enc.indices, size, width, height)
    assert np.array_equal(np.asarray(decoded), expected)
    header = raqcodec.read_header(enc.data)
    assert (header.width, header.height, header.codebook_size) == (width, height, size)


def test_a_given_model_stays_on_its_device_unless_one_is_named(tiny_model, monkeypatch):
    import torch

    from raqcodec.codec import get_model

    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)  # "auto" must not move it even so
    assert get_model(tiny_model, "auto") is tiny_model and tiny_model.base.embed.device.type == "cpu"
    assert get_model(tiny_model, "cpu") is tiny_model


def test_exact_decoding_runs_in_float64_and_stays_within_one_level(tiny_model, monkeypatch):
    import torch

    from raqcodec import codec

    enc = encode(synthetic_image(64, 96, seed=5), codebook_size=256, model=tiny_model)
    fast = np.asarray(raqcodec.decompress(enc.data, model=tiny_model), dtype=np.int16)
    synthesis_dtypes = []
    synthesis = codec.synthesis_tiled
    monkeypatch.setattr(codec, "synthesis_tiled", lambda m, z: synthesis_dtypes.append(z.dtype) or synthesis(m, z))
    exact = np.asarray(raqcodec.decompress(enc.data, model=tiny_model, exact=True), dtype=np.int16)
    assert synthesis_dtypes == [torch.float64] and tiny_model.base.embed.dtype == torch.float32
    assert codec.exact_decoder(tiny_model) is codec.exact_decoder(tiny_model)
    assert not any(name.startswith("_exact") for name in tiny_model.state_dict())
    assert np.abs(fast - exact).max() <= 1


def test_greyscale_source_decodes_to_greyscale(tiny_model):
    grey = synthetic_image(40, 50)[:, :, 0]
    decoded = raqcodec.decompress(raqcodec.compress(grey, codebook_size=64, model=tiny_model), model=tiny_model)
    assert decoded.mode == "L" and decoded.size == (50, 40)


def test_encoding_is_deterministic(tiny_model):
    pixels = synthetic_image(48, 40, seed=3)
    assert raqcodec.compress(pixels, codebook_size=300, model=tiny_model) == \
        raqcodec.compress(pixels, codebook_size=300, model=tiny_model)


def test_rate_control_fits_the_target_at_least_as_well_as_the_nearest_pick(tiny_model):
    from raqcodec.ratecontrol import _nearest_pick, latent_error

    pixels = synthetic_image(128, 160, seed=5)
    latent = analyse(tiny_model, pixels)
    smallest = encode_latent(tiny_model, latent, 16).bpp
    largest = encode_latent(tiny_model, latent, tiny_model.cfg.max_codebook_size).bpp
    for target in np.linspace(smallest * 1.05, largest * 0.95, 4):
        enc = encode(pixels, bpp=float(target), model=tiny_model)
        assert 0.9 * target <= enc.bpp <= target
        nearest = _nearest_pick(tiny_model, latent, float(target))[1]  # one of the options when it fits
        assert nearest is None or latent_error(tiny_model, latent, enc.setting, enc.indices) <= \
            latent_error(tiny_model, latent, nearest.setting, nearest.indices)


@pytest.mark.parametrize("size", [16, 300])
def test_context_polish_keeps_a_fitting_file_of_no_larger_error(tiny_model, size):
    """fit_rate_aware's file of a context-coded setting fits the target and is the one of lowest latent error
    among the order-0 search's file and the context choices it tried whose files fit (at least one tried)."""
    from raqcodec import ratecontrol

    latent = analyse(tiny_model, synthetic_image(96, 120, seed=4))
    quantizer = ratecontrol.RateAwareQuantizer(tiny_model, latent, (size,))
    target = 0.8 * encode_latent(tiny_model, latent, size).bpp
    order0, strength = ratecontrol._fit_order0(quantizer, target, 1.0)
    polished = ratecontrol.fit_rate_aware(quantizer, target, 1.0)
    assert polished.fits(target)
    tried = [m for m, context in quantizer._points if context]
    fitting = [quantizer.error(m, context=True) for m in tried if quantizer.draft(m, context=True).fits(target)]
    assert tried and fitting
    error = ratecontrol.latent_error(tiny_model, latent, (size,), polished.indices)
    assert error == pytest.approx(min([quantizer.error(strength)] + fitting), rel=1e-6)


@pytest.mark.parametrize("start", [1e-4, 0.01, 1.0, 2.0, 300.0])
def test_secant_search_from_any_strength_ends_close_to_its_aim_or_as_fine_as_bisection(tiny_model, start):
    """_refine's strength fits (predicted) and is either predicted within REFINE_TOLERANCE under the target, or a
    strength tried within the whole range's final bisection width below it does not fit (or it is the range's
    bottom), wherever the search starts."""
    from raqcodec import ratecontrol

    latent = analyse(tiny_model, synthetic_image(96, 120, seed=4))
    quantizer = ratecontrol.RateAwareQuantizer(tiny_model, latent, (300,))
    target = 0.8 * encode_latent(tiny_model, latent, 300).bpp
    strength = ratecontrol._refine(quantizer, target, 1.0, start)
    predicted = quantizer.predicted_bpp(strength, 1.0)
    assert predicted <= target
    width = math.log(ratecontrol.STRENGTH_MAX / ratecontrol.STRENGTH_MIN) / 2 ** ratecontrol.SEARCH_STEPS
    over = [m for m, _ in quantizer._points if quantizer.predicted_bpp(m, 1.0) > target]
    below = strength * math.exp(-width) * (1 - 1e-9)  # the final bracket's bottom, up to rounding
    close = predicted >= (1 - ratecontrol.REFINE_TOLERANCE) * target
    assert close or any(below <= m < strength for m in over) or strength == ratecontrol.STRENGTH_MIN


def test_secant_search_returns_none_only_when_the_largest_strength_is_over(tiny_model):
    from raqcodec import ratecontrol

    latent = analyse(tiny_model, synthetic_image(96, 120, seed=4))
    quantizer = ratecontrol.RateAwareQuantizer(tiny_model, latent, (300,))
    floor = quantizer.predicted_bpp(ratecontrol.STRENGTH_MAX, 1.0)
    assert ratecontrol._refine(quantizer, 0.99 * floor, 1.0, 1.0) is None
    assert ratecontrol._refine(quantizer, floor, 1.0, 1.0) is not None


def test_secant_search_needs_fewer_predictions_than_bisection(tiny_model):
    """From a strength near the answer (the last file's m, where rate control starts it), the secant search
    predicts fewer sizes than a bisection of the whole range, at several targets."""
    from raqcodec import ratecontrol

    latent = analyse(tiny_model, synthetic_image(96, 120, seed=4))
    nearest = encode_latent(tiny_model, latent, 300).bpp
    for fraction in (0.8, 0.85, 0.9, 0.95):
        bisected = ratecontrol.RateAwareQuantizer(tiny_model, latent, (300,))
        answer = ratecontrol._bisect(bisected, fraction * nearest, 1.0)
        refined = ratecontrol.RateAwareQuantizer(tiny_model, latent, (300,))
        ratecontrol._refine(refined, fraction * nearest, 1.0, 1.5 * answer)
        assert len(refined._points) < len(bisected._points), fraction


def test_a_target_above_the_weakest_strength_plans_one_file(tiny_model, monkeypatch):
    """When even STRENGTH_MIN's file is far under the target, the fit keeps that file after planning it once: the
    further calibrations and the search over planned files would only plan it again."""
    from raqcodec import ratecontrol

    latent = analyse(tiny_model, synthetic_image(96, 120, seed=4))
    quantizer = ratecontrol.RateAwareQuantizer(tiny_model, latent, (300,))
    planned = []
    draft = quantizer.draft
    monkeypatch.setattr(quantizer, "draft", lambda strength, context=False: planned.append(strength) or
                        draft(strength, context))
    target = 1.5 * encode_latent(tiny_model, latent, 300).bpp
    fitted, strength = ratecontrol._fit_order0(quantizer, target, 1.0)
    assert strength == ratecontrol.STRENGTH_MIN and fitted.fits(target)
    assert planned == [ratecontrol.STRENGTH_MIN]


def test_preview_strengths_fit_their_previews_and_place_the_first_file(tiny_model):
    """_preview_order gives each candidate the strength its preview on the latent's sample predicts to fit, ranks
    them by the previews' latent error there, and the fit of a candidate plans its first file at that strength."""
    from raqcodec import ratecontrol

    latent = analyse(tiny_model, synthetic_image(256, 512, seed=6))
    sample, weight = ratecontrol._sample(latent)
    assert sample is not latent
    specs = [((100,), 0.0), ((200,), 0.0), ((300,), 0.0)]
    target = 0.9 * encode_latent(tiny_model, latent, 300).bpp
    order, firsts = ratecontrol._preview_order(tiny_model, latent, target, specs, 1.0, {})
    previews = [ratecontrol.RateAwareQuantizer(tiny_model, sample, setting, strength, weight=weight,
                                               candidates=ratecontrol.PREVIEW_CANDIDATES)
                for setting, strength in specs]
    fitting = [i for i, (preview, m) in enumerate(zip(previews, firsts)) if preview.predicted_bpp(m, 1.0) <= target]
    assert len(fitting) >= 2 and sorted(order) == fitting
    assert all(firsts[i] == ratecontrol.STRENGTH_MAX for i in range(len(specs)) if i not in fitting)
    errors = [previews[i].error(firsts[i]) for i in order]
    assert errors == sorted(errors)
    quantizer = ratecontrol.RateAwareQuantizer(tiny_model, latent, *specs[order[0]])
    fitted = ratecontrol._fit_order0(quantizer, target, 1.0, firsts[order[0]])
    assert fitted is not None and fitted[0].fits(target)
    assert next(iter(quantizer._points))[0] == firsts[order[0]]


@pytest.mark.parametrize("fraction, expected", [(0.5, None), (1.5, "min")])
def test_a_preview_outside_the_range_of_strengths_costs_at_most_two_predictions(tiny_model, fraction, expected):
    """A setting predicted over the target even at STRENGTH_MAX gets None after one prediction; one predicted to fit
    at STRENGTH_MIN gets STRENGTH_MIN after two."""
    from raqcodec import ratecontrol

    latent = analyse(tiny_model, synthetic_image(96, 120, seed=4))
    quantizer = ratecontrol.RateAwareQuantizer(tiny_model, latent, (300,))
    ends = [quantizer.predicted_bpp(m, 1.0) for m in (ratecontrol.STRENGTH_MAX, ratecontrol.STRENGTH_MIN)]
    target = fraction * (ends[0] if expected is None else ends[1])
    fresh = ratecontrol.RateAwareQuantizer(tiny_model, latent, (300,))
    strength = ratecontrol._preview_strength(fresh, target, 1.0, ratecontrol.REFINE_START)
    assert strength == (None if expected is None else ratecontrol.STRENGTH_MIN)
    assert len(fresh._points) == (1 if expected is None else 2)


def test_a_preview_inside_the_range_searches_from_its_start(tiny_model):
    """Between the ends, the preview's strength is _refine's from the start it is given."""
    from raqcodec import ratecontrol

    latent = analyse(tiny_model, synthetic_image(96, 120, seed=4))
    target = 0.85 * encode_latent(tiny_model, latent, 300).bpp
    previewed = ratecontrol.RateAwareQuantizer(tiny_model, latent, (300,))
    refined = ratecontrol.RateAwareQuantizer(tiny_model, latent, (300,))
    strength = ratecontrol._preview_strength(previewed, target, 1.0, 2.0)
    assert ratecontrol.STRENGTH_MIN < strength < ratecontrol.STRENGTH_MAX
    assert strength == ratecontrol._refine(refined, target, 1.0, 2.0)


@pytest.mark.parametrize("close", [0.0, 1.0])
def test_context_polish_bisects_only_under_close_enough(tiny_model, monkeypatch, close):
    """The context file at the order-0 file's m ends the polish when it is at least CLOSE_ENOUGH x the target
    (one context file planned); otherwise the bisection plans POLISH_STEPS more."""
    from raqcodec import ratecontrol

    latent = analyse(tiny_model, synthetic_image(96, 120, seed=4))
    quantizer = ratecontrol.RateAwareQuantizer(tiny_model, latent, (16,))
    target = 0.8 * encode_latent(tiny_model, latent, 16).bpp
    order0, strength = ratecontrol._fit_order0(quantizer, target, 1.0)
    assert quantizer.draft(strength, context=True).fits(target)  # the polish goes on past its first file
    planned = []
    draft = quantizer.draft
    monkeypatch.setattr(quantizer, "draft", lambda m, context=False: planned.append(context) or draft(m, context))
    monkeypatch.setattr(ratecontrol, "CLOSE_ENOUGH", close)
    ratecontrol._context_polish(quantizer, order0, strength, target)
    assert planned == [True] * (1 if close == 0.0 else 1 + ratecontrol.POLISH_STEPS)


def test_context_choice_starts_from_the_order0_choice_or_the_nearest_context_choice(tiny_model):
    """The context choice at m starts from the order-0 choice at m when there is one, else from the context
    choice at the strength nearest m (log scale), else from nothing (its own order-0 passes)."""
    from raqcodec import ratecontrol

    quantizer = ratecontrol.RateAwareQuantizer(tiny_model, analyse(tiny_model, synthetic_image(96, 120, seed=4)),
                                               (300,))
    assert quantizer._context_start(1.0) is None
    quantizer.error(2.0)  # order-0 at m = 2
    assert torch.equal(quantizer._context_start(2.0), quantizer._point(2.0)[0])
    for strength in (0.1, 8.0):
        quantizer.error(strength, context=True)
    assert torch.equal(quantizer._context_start(0.25), quantizer._point(0.1, context=True)[0])
    assert torch.equal(quantizer._context_start(3.0), quantizer._point(8.0, context=True)[0])  # log: nearer 8
    assert not torch.equal(quantizer._point(0.1, context=True)[0], quantizer._point(8.0, context=True)[0])


@pytest.mark.parametrize("size", [2, 40, 300, 4096])
def test_a_draft_answers_as_its_written_file_would(tiny_model, size):
    """A Draft's estimated size is within its margin of the file it writes, and its comparisons with a target
    at the file's exact size, or one bit under, give the real file's answers (the close call writes the file)."""
    from raqcodec import ratecontrol
    from raqcodec.codec import quantize_latent

    latent = analyse(tiny_model, synthetic_image(96, 120, seed=9))
    grids = quantize_latent(tiny_model, latent, (size,), tiny_model.codebooks((size,)))
    written = encode_latent(tiny_model, latent, size)
    draft = ratecontrol.Draft(tiny_model, latent, (size,), grids)
    assert abs(draft.size_bits - 8 * len(written.data)) < ratecontrol.EXACT_MARGIN_BITS - 16
    pixels = latent.width * latent.height
    exact_bpp = 8 * len(written.data) / pixels
    assert draft.fits(exact_bpp) and not ratecontrol.Draft(tiny_model, latent, (size,), grids).fits(
        exact_bpp - 1 / pixels)
    assert draft.write().data == written.data


def _fits_whole_latent(model, latent, setting, bpp) -> bool:
    """Whether the nearest-codeword indices of the whole latent at this setting are predicted (adaptive_bits)
    to fit bpp: what the ladder search's pick must satisfy."""
    from raqcodec import ratecontrol
    from raqcodec.codec import quantize_latent

    grids = quantize_latent(model, latent, setting, model.codebooks(setting))
    bits = ratecontrol._grid_bits(grids, setting) + 8 * ratecontrol._overhead_bytes(setting)
    return bits <= bpp * latent.width * latent.height


def test_sampled_ladder_search_ends_where_the_whole_latent_search_would(tiny_model, monkeypatch):
    from raqcodec import ratecontrol

    monkeypatch.setattr(ratecontrol, "SAMPLE_MIN_POSITIONS", 16)  # sample this small latent too
    pixels = synthetic_image(128, 160, seed=7)
    latent = analyse(tiny_model, pixels)
    assert ratecontrol._sample(latent)[1] == 4.0
    ladder = ratecontrol.search_ladder(tiny_model)

    def fits(setting, bpp):
        return _fits_whole_latent(tiny_model, latent, setting, bpp)

    smallest = encode_latent(tiny_model, latent, 16).bpp
    largest = encode_latent(tiny_model, latent, tiny_model.cfg.max_codebook_size).bpp
    for target in np.linspace(smallest, largest, 3):
        pick = ratecontrol._nearest_pick(tiny_model, latent, float(target))[0]
        i = ladder.index(pick)
        assert fits(pick, target) and (i + 1 == len(ladder) or not fits(ladder[i + 1], target))
    assert ratecontrol._nearest_pick(tiny_model, latent, 1e-3) == (ladder[0], None)  # nothing fits


def test_ladder_search_below_the_first_probe_quantises_no_larger_setting(tiny_model, monkeypatch):
    """A target that the FIRST_PROBE setting does not fit is searched below it only: no setting above it is
    quantised, on the sample or the whole latent, and the pick is still the highest that fits."""
    from raqcodec import ratecontrol

    monkeypatch.setattr(ratecontrol, "SAMPLE_MIN_POSITIONS", 16)
    monkeypatch.setattr(ratecontrol, "FIRST_PROBE", 64)
    latent = analyse(tiny_model, synthetic_image(128, 160, seed=7))
    ladder = ratecontrol.search_ladder(tiny_model)
    tried = []
    quantize = ratecontrol.quantize_latent

    def recorded(model, lat, setting, tables, cache=None):
        tried.append(setting)
        return quantize(model, lat, setting, tables, cache)

    monkeypatch.setattr(ratecontrol, "quantize_latent", recorded)
    target = encode_latent(tiny_model, latent, 24).bpp
    pick = ratecontrol._nearest_pick(tiny_model, latent, target)[0]
    i = ladder.index(pick)
    assert _fits_whole_latent(tiny_model, latent, pick, target)
    assert not _fits_whole_latent(tiny_model, latent, ladder[i + 1], target)
    assert tried and all(len(setting) == 1 and setting[0] <= 64 for setting in tried), tried


def test_ladder_search_recalibrates_a_sample_that_underestimates(tiny_model, monkeypatch):
    """When the sample's pick does not fit the whole latent, the search below it runs on the sample's sizes scaled
    to the whole latent's: the pick is still the whole-latent search's, reached with few whole-latent
    quantisations although the sample here underestimates every size by half."""
    from raqcodec import ratecontrol

    monkeypatch.setattr(ratecontrol, "SAMPLE_MIN_POSITIONS", 16)
    sample = ratecontrol._sample
    monkeypatch.setattr(ratecontrol, "_sample", lambda latent: (sample(latent)[0], sample(latent)[1] / 2))
    latent = analyse(tiny_model, synthetic_image(128, 160, seed=7))
    ladder = ratecontrol.search_ladder(tiny_model)
    whole = []
    quantize = ratecontrol.quantize_latent

    def counted(model, lat, setting, tables, cache=None):
        whole.extend([setting] if lat is latent else [])
        return quantize(model, lat, setting, tables, cache)

    monkeypatch.setattr(ratecontrol, "quantize_latent", counted)

    def fits(setting, bpp):  # codec.quantize_latent: not counted
        return _fits_whole_latent(tiny_model, latent, setting, bpp)

    smallest = encode_latent(tiny_model, latent, 16).bpp
    largest = encode_latent(tiny_model, latent, tiny_model.cfg.max_codebook_size).bpp
    for target in np.linspace(smallest, largest, 4)[1:3]:
        whole.clear()
        pick = ratecontrol._nearest_pick(tiny_model, latent, float(target))[0]
        i = ladder.index(pick)
        assert fits(pick, target) and not fits(ladder[i + 1], target)
        assert len(whole) <= 4, whole


def test_shared_stage_one_candidates_equal_those_computed_afresh(tiny_model, monkeypatch):
    """Rate control quantises stage 1 at the largest eK once (_seed_first_stage): the nearest codewords it
    gives the ladder search are those computed on their own (or, where two codewords' computed distances are
    equal, one of equal distance: top-k and argmin may break the tie apart), and the sample's candidates cut
    from it are those computed on their own."""
    import torch

    from raqcodec import ratecontrol
    from raqcodec.codec import quantize_latent
    from raqcodec.models.quantizer import _distance_chunks, nearest_candidates, split_groups

    monkeypatch.setattr(ratecontrol, "SAMPLE_MIN_POSITIONS", 16)
    latent = analyse(tiny_model, synthetic_image(128, 160, seed=9))
    largest = tiny_model.cfg.max_codebook_size
    prefixes, cache = {}, {}
    ratecontrol._seed_first_stage(tiny_model, latent, largest, prefixes, cache)
    setting = (largest, 16) if tiny_model.cfg.stages > 1 else (largest,)
    tables = tiny_model.codebooks(setting)
    shared = quantize_latent(tiny_model, latent, setting, tables, prefixes)
    fresh = quantize_latent(tiny_model, latent, setting, tables)
    assert len(shared) == len(fresh) == len(setting)
    groups = tiny_model.cfg.groups
    distances = torch.cat([d for _, d in _distance_chunks(split_groups(latent.z, groups), tables[0])], 1)

    def distance_of(grid: np.ndarray) -> torch.Tensor:  # (G, h, w) stage-1 indices -> their computed distances
        return distances.gather(2, torch.from_numpy(grid.reshape(groups, -1, 1).astype(np.int64)))

    assert torch.equal(distance_of(shared[0]), distance_of(fresh[0]))
    assert np.mean(shared[0] == fresh[0]) > 0.99
    if len(setting) > 1:  # stage 2 quantises the residual stage 1 left, the same wherever stage 1 is
        same = np.all(shared[0] == fresh[0], axis=0)
        assert all(np.array_equal(a[:, same], b[:, same]) for a, b in zip(shared[1:], fresh[1:]))
    sample, _ = ratecontrol._sample(latent)
    dist, cand = ratecontrol._sample_candidates(latent, cache, ratecontrol.SAMPLE_STRIDE)[((largest,), None)]
    fresh_dist, fresh_cand = nearest_candidates(split_groups(sample.z, tiny_model.cfg.groups), tables[0],
                                                ratecontrol.PREVIEW_CANDIDATES)
    assert torch.equal(dist, fresh_dist) and torch.equal(cand, fresh_cand)


def test_the_sample_takes_its_largest_first_stage_from_the_whole_latent(tiny_model, monkeypatch):
    """The ladder search on the sample never quantises stage 1 at the largest eK itself: it cuts the whole
    latent's (_cut_prefix), which holds the sample's own nearest codewords and residual."""
    import torch

    from raqcodec import ratecontrol
    from raqcodec.codec import quantize_latent

    monkeypatch.setattr(ratecontrol, "SAMPLE_MIN_POSITIONS", 16)
    latent = analyse(tiny_model, synthetic_image(128, 160, seed=9))
    sample, _ = ratecontrol._sample(latent)
    largest = tiny_model.cfg.max_codebook_size
    prefixes = {}
    ratecontrol._seed_first_stage(tiny_model, latent, largest, prefixes, {})
    grids, residual = ratecontrol._cut_prefix(prefixes[(largest,)], ratecontrol.SAMPLE_STRIDE)
    fresh = {}
    quantize_latent(tiny_model, sample, (largest,), tiny_model.codebooks((largest,)), fresh)
    fresh_grid, fresh_residual = fresh[(largest,)][0][0], fresh[(largest,)][1]
    same = (grids[0] == fresh_grid).all(dim=1)  # (1, h, w): positions where no tie broke apart
    assert same.float().mean() > 0.99
    assert torch.allclose(residual.permute(0, 2, 3, 1)[same], fresh_residual.permute(0, 2, 3, 1)[same], atol=1e-5)

    stage_one = []
    iter_stages = tiny_model.iter_stages

    def recorded(z, codebooks):
        stage_one.append(z.shape[-2:] == sample.z.shape[-2:] and torch.equal(z, sample.z)
                         and codebooks[0].shape[1] == largest)
        return iter_stages(z, codebooks)

    monkeypatch.setattr(tiny_model, "iter_stages", recorded)
    top = encode_latent(tiny_model, latent, largest).bpp
    ratecontrol._nearest_pick(tiny_model, latent, top)
    assert stage_one and not any(stage_one)


def test_adaptive_bits_equal_the_closed_form_over_every_codeword():
    import torch

    from raqcodec import entropy
    from raqcodec.ratecontrol import adaptive_bits

    size, idx = 64, torch.randint(0, 40, (3, 300), generator=torch.Generator().manual_seed(1))
    counts = torch.zeros(3, size, dtype=torch.float64).scatter_add_(1, idx, torch.ones(3, 300, dtype=torch.float64))
    a = 1.0 / torch.tensor(entropy.INCREMENTS, dtype=torch.float64)[:, None, None]
    nats = torch.lgamma(300 + size * a[..., 0]) - torch.lgamma(size * a[..., 0]) \
        - (torch.lgamma(counts + a) - torch.lgamma(a)).sum(-1)  # (increments, groups)
    expected = float(nats.min(0).values.sum()) / math.log(2) + 3 * math.log2(len(entropy.INCREMENTS))
    assert adaptive_bits(idx, size) == pytest.approx(expected, rel=1e-12)


def test_weighted_adaptive_bits_equal_those_of_the_repeated_indices():
    import torch

    from raqcodec.ratecontrol import adaptive_bits

    idx = torch.randint(0, 37, (3, 50), generator=torch.Generator().manual_seed(0))
    assert adaptive_bits(idx, 37, weight=4.0) == pytest.approx(adaptive_bits(idx.repeat(1, 4), 37), rel=1e-12)


def test_rate_target_below_smallest_names_the_smallest(tiny_model):
    with pytest.raises(raqcodec.CodecError, match="smallest achievable"):
        raqcodec.compress(synthetic_image(64, 64), bpp=1e-4, model=tiny_model)


def test_rate_target_above_largest_uses_largest_with_warning(tiny_model):
    with pytest.warns(UserWarning, match="largest"):
        enc = encode(synthetic_image(64, 64), bpp=50.0, model=tiny_model)
    assert enc.header.codebook_size == tiny_model.cfg.max_codebook_size


def test_bad_arguments(tiny_model):
    img = synthetic_image(16, 16)
    for kwargs in ({}, {"bpp": 0.3, "codebook_size": 64}, {"bpp": -1.0}, {"codebook_size": 1},
                   {"codebook_size": 5000}):
        with pytest.raises(raqcodec.CodecError):
            raqcodec.compress(img, model=tiny_model, **kwargs)


@pytest.fixture(scope="module")
def valid_file(tiny_model) -> bytes:
    return raqcodec.compress(synthetic_image(40, 56, seed=9), codebook_size=200, model=tiny_model)


def _corruptions(data: bytes) -> dict[str, bytes]:
    flipped = bytearray(data)
    flipped[len(data) // 2] ^= 0x10
    future = bytearray(data)
    future[4:6] = (bitstream.FORMAT_VERSION + 1).to_bytes(2, "little")
    return {"empty": b"", "truncated": data[: len(data) - 5], "header only": data[:10],
            "bit flip": bytes(flipped), "future version": bytes(future), "not raq": b"PNG" * 40,
            "trailing": data + b"\0"}


@pytest.mark.parametrize("kind", ["empty", "truncated", "header only", "bit flip", "future version", "not raq", "trailing"])
def test_corrupt_files_raise_codec_error(tiny_model, valid_file, kind):
    with pytest.raises(raqcodec.CodecError):
        raqcodec.decompress(_corruptions(valid_file)[kind], model=tiny_model)


def test_future_version_error_names_the_version(tiny_model, valid_file):
    with pytest.raises(raqcodec.CodecError, match="newer"):
        raqcodec.decompress(_corruptions(valid_file)["future version"], model=tiny_model)


def test_file_from_another_model_is_refused(tiny_model, valid_file):
    from raqcodec.models import RAQVAE

    other = RAQVAE(tiny_model.cfg).eval()  # same architecture, different weights
    with pytest.raises(raqcodec.CodecError, match="different model"):
        raqcodec.decompress(valid_file, model=other)
