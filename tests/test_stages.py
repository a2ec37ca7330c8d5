"""Residual quantisation stages: the version-2 container, multi-stage payloads, the rate ladder, training."""
from __future__ import annotations

import struct
import zlib

import numpy as np
import pytest
import torch
from conftest import synthetic_image
from fuzzing import mutate

import raqcodec
from raqcodec import bitstream as B
from raqcodec import entropy as E
from raqcodec.codec import analyse, as_setting, encode, encode_latent, reconstruct
from raqcodec.errors import CodecError
from raqcodec.models import RAQVAE, named_config
from raqcodec.train import TrainOptions, cosine_lr, train

FP = bytes.fromhex("0123456789abcdef")


def v2_file(residual_sizes=(64,), payload=b"\x01\x02\x03\x04" * 2, stages=None) -> bytes:
    """A version-2 file built by hand from docs/FORMAT.md (independent of bitstream.pack)."""
    fixed = struct.pack("<4sHHHHBBBB8sI", b"RAQC", 2, 100, 70, 4096, 0, 4, 16, 1, FP, len(payload))
    ext = struct.pack("<B", stages or len(residual_sizes) + 1) + struct.pack(f"<{len(residual_sizes)}H", *residual_sizes)
    body = fixed + ext + payload
    return body + struct.pack("<I", zlib.crc32(body) & 0xFFFFFFFF)


def header(**overrides) -> B.Header:
    fields = dict(model_fingerprint=FP, width=100, height=70, color_mode=0, codebook_size=4096, groups=4,
                  downsample=16, entropy_model=E.ADAPTIVE, payload_length=8, residual_sizes=(64,))
    fields.update(overrides)
    return B.Header(**fields)


def test_version_2_layout_matches_spec():
    payload = b"\x01\x02\x03\x04" * 2
    assert B.pack(header(), payload) == v2_file(payload=payload)
    parsed, out = B.unpack(v2_file(residual_sizes=(64, 2)))
    assert parsed.codebook_sizes == (4096, 64, 2) and parsed.stages == 3 and parsed.version == 2
    assert out == payload


def test_one_stage_files_stay_version_1():
    h = header(residual_sizes=())
    data = B.pack(h, b"\x00" * 8)
    assert h.version == 1 and struct.unpack_from("<H", data, 4)[0] == 1 and len(data) == 28 + 8 + 4


@pytest.mark.parametrize("data,fragment", [
    (v2_file(stages=1, residual_sizes=()), "does not fit 1 stage"),  # one stage, model 1: must be v1
    (v2_file(stages=9, residual_sizes=(16,) * 8), "stages=9"),
    (v2_file(residual_sizes=(1,)), "codebook_size=1"),
    (v2_file()[:29], "truncated"),
    (v2_file()[:31], "truncated"),
])
def test_version_2_header_rejections(data, fragment):
    with pytest.raises(CodecError, match=fragment):
        B.unpack(data)


def test_every_bit_flip_of_a_version_2_file_is_detected():
    data = v2_file(residual_sizes=(64, 300))
    for i in range(len(data) * 8):
        flipped = bytearray(data)
        flipped[i // 8] ^= 1 << (i % 8)
        with pytest.raises(CodecError):
            B.unpack(bytes(flipped))


@pytest.mark.parametrize("model_id", [E.UNIFORM, E.ADAPTIVE])
def test_stage_payload_round_trip_and_one_stage_equals_version_1(model_id):
    rng = np.random.default_rng(0)
    grids = [rng.integers(0, k, (3, 5, 7)).astype(np.int32) for k in (4096, 2, 300)]
    payload = E.encode_stages(grids, [4096, 2, 300], model_id)
    for got, want in zip(E.decode_stages(payload, (3, 5, 7), [4096, 2, 300], model_id), grids):
        assert np.array_equal(got, want)
    assert E.encode_stages(grids[:1], [4096], model_id) == E.encode_indices(grids[0], 4096, model_id)
    with pytest.raises(CodecError):  # the stage alphabets are part of what decodes
        E.decode_stages(payload, (3, 5, 7), [4096, 3, 300], model_id)


def test_setting_parsing():
    assert as_setting(512) == (512,) and as_setting("4096+64") == (4096, 64) and as_setting([8, 2]) == (8, 2)
    for bad in ("4096+x", 2.5, True, ()):
        with pytest.raises(CodecError):
            as_setting(bad)


def test_rate_ladder_order(two_stage_model):
    cfg = two_stage_model.cfg
    ladder = cfg.ladder()
    n = cfg.max_codebook_size - cfg.min_codebook_size + 1
    assert len(ladder) == 2 * n and ladder[0] == (cfg.min_codebook_size,)
    assert ladder[n - 1] == (cfg.max_codebook_size,) and ladder[n] == (cfg.max_codebook_size, cfg.min_codebook_size)


@pytest.mark.parametrize("setting", [(4096, 2), (4096, 4096), (16, 300)])
def test_two_stage_round_trip(two_stage_model, setting):
    pixels = synthetic_image(40, 56, seed=2)
    enc = encode(pixels, codebook_size=setting, model=two_stage_model)
    h = raqcodec.read_header(enc.data)
    assert h.codebook_sizes == setting and h.version == 2 and len(enc.indices) == 2
    decoded = np.asarray(raqcodec.decompress(enc.data, model=two_stage_model))
    assert np.array_equal(decoded, reconstruct(two_stage_model, enc.indices, setting, 56, 40))


def test_second_stage_refines_and_costs_bits(two_stage_model):
    latent = analyse(two_stage_model, synthetic_image(64, 80, seed=7))
    top = two_stage_model.cfg.max_codebook_size
    one, two = encode_latent(two_stage_model, latent, (top,)), encode_latent(two_stage_model, latent, (top, top))
    assert two.bpp > one.bpp
    tables = two_stage_model.codebooks((top, top))
    z_q1 = two_stage_model.dequantize_stages([torch.from_numpy(one.indices[0]).long()[None]], tables[:1])
    z_q2 = two_stage_model.dequantize_stages([torch.from_numpy(g).long()[None] for g in two.indices], tables)
    assert ((z_q2 - latent.z) ** 2).mean() < ((z_q1 - latent.z) ** 2).mean()


def test_rate_control_reaches_the_second_stage(two_stage_model):
    pixels = synthetic_image(64, 80, seed=4)
    latent = analyse(two_stage_model, pixels)
    top = two_stage_model.cfg.max_codebook_size
    low, high = encode_latent(two_stage_model, latent, (top,)).bpp, encode_latent(two_stage_model, latent, (top, top)).bpp
    target = (low + high) / 2
    enc = encode(pixels, bpp=target, model=two_stage_model)
    assert enc.setting[0] == top and len(enc.setting) == 2 and low < enc.bpp <= target


def test_one_stage_model_refuses_two_stage_settings(tiny_model):
    with pytest.raises(CodecError, match="stage"):
        raqcodec.compress(synthetic_image(16, 16), codebook_size=(64, 64), model=tiny_model)


def test_two_stage_file_from_a_one_stage_model_is_refused(two_stage_model, tiny_model):
    data = raqcodec.compress(synthetic_image(16, 16), codebook_size=(64, 64), model=two_stage_model)
    with pytest.raises(CodecError):
        raqcodec.decompress(data, model=tiny_model)


def test_training_step_with_a_residual_stage_reaches_its_generator():
    model = RAQVAE(named_config("tiny", stages=2))
    out = model(torch.rand(2, 3, 16, 16), 8, (3,))
    out["loss"].backward()
    assert out["mse_residual"] > 0
    assert model.residual_stages[0].generator.out_proj.weight.grad.abs().sum() > 0
    with pytest.raises(ValueError):
        model(torch.rand(1, 3, 16, 16), 8, (3, 3))  # more residual stages than the model has


def test_init_from_a_one_stage_model_adds_a_stage(tiny_model, image_folder, tmp_path):
    # steps=40: the init file already ran 40 steps, so this builds the grown model without training it
    model = train(TrainOptions(sources=[image_folder], out=str(tmp_path / "grown.pt"), config="tiny",
                               init=tiny_model.path, config_overrides={"stages": 2}, steps=40, batch=2, crop=32))
    grown, init = model.state_dict(), tiny_model.state_dict()
    assert model.cfg.stages == 2
    assert all(torch.equal(grown[name].cpu(), tensor.cpu()) for name, tensor in init.items())
    new_gen = model.residual_stages[0].generator.state_dict()
    assert all(torch.equal(t, init[f"generator.{k}"].cpu()) for k, t in new_gen.items())
    # the new stage's base codebooks were set from residual vectors: far smaller than stage 1's codewords
    assert model.residual_stages[0].base.embed.norm(dim=-1).mean() < model.base.embed.norm(dim=-1).mean()
    data = raqcodec.compress(synthetic_image(16, 16), codebook_size="4096+16", model=model)
    assert raqcodec.read_header(data).stages == 2


def test_cosine_learning_rate():
    assert cosine_lr(1e-4, None, 0.7) == 1e-4
    assert cosine_lr(1e-4, 1e-5, 0.0) == pytest.approx(1e-4) and cosine_lr(1e-4, 1e-5, 1.0) == pytest.approx(1e-5)
    assert cosine_lr(1e-4, 1e-5, 0.5) == pytest.approx(5.5e-5)


def test_fuzzed_two_stage_files_decode_or_fail_cleanly(two_stage_model):
    seeds = [raqcodec.compress(synthetic_image(h, w, seed=w), codebook_size=setting, model=two_stage_model)
             for (h, w), setting in (((1, 1), (2, 2)), ((9, 13), (4096, 16)), ((24, 40), (300, 4096)))]
    rng = np.random.default_rng(0)
    outcomes = {"decoded": 0, "refused": 0}
    for _ in range(300):
        data = seeds[int(rng.integers(0, len(seeds)))]
        for _ in range(int(rng.integers(1, 4))):
            data = mutate(data, rng)
        try:
            image = raqcodec.decompress(data, model=two_stage_model)
        except CodecError:
            outcomes["refused"] += 1
        else:
            h = raqcodec.read_header(data)
            assert image.size == (h.width, h.height)
            outcomes["decoded"] += 1
    assert outcomes["refused"] > 0


def test_prefix_cache_gives_the_same_files(two_stage_model):
    latent = analyse(two_stage_model, synthetic_image(48, 40, seed=8))
    cache: dict = {}
    for setting in ((4096,), (4096, 7), (4096, 300), (16, 5), (16,)):
        cached = encode_latent(two_stage_model, latent, setting, cache=cache)
        assert cached.data == encode_latent(two_stage_model, latent, setting).data
    assert set(cache) == {(4096,), (4096, 7), (4096, 300), (16,), (16, 5)}


def test_rate_aware_encode(two_stage_model):
    from raqcodec.ratecontrol import RateAwareQuantizer

    latent = analyse(two_stage_model, synthetic_image(64, 80, seed=3))
    for setting in ((300,), (4096, 300)):
        plain = encode_latent(two_stage_model, latent, setting)
        quantizer = RateAwareQuantizer(two_stage_model, latent, setting)
        assert quantizer.draft(0.0).write().data == plain.data
        cheap = quantizer.draft(10.0).write()
        assert cheap.bpp < plain.bpp
        decoded = np.asarray(raqcodec.decompress(cheap.data, model=two_stage_model))
        assert np.array_equal(decoded, reconstruct(two_stage_model, cheap.indices, setting, 80, 64))


def test_rate_control_reaches_below_the_smallest_nearest_codeword_file(two_stage_model):
    """Below the smallest nearest-codeword file, rate control still fits, with less latent error than its own
    fallback (the smallest setting at the strongest m). (The tiny model's eK=2 files can have more error than
    an all-zero latent, so that is no bound.)"""
    from raqcodec.ratecontrol import latent_error, smallest_file

    pixels = synthetic_image(96, 128, seed=6)
    latent = analyse(two_stage_model, pixels)
    floor = encode_latent(two_stage_model, latent, (2,)).bpp
    enc = encode(pixels, bpp=0.97 * floor, model=two_stage_model)
    fallback = smallest_file(two_stage_model, latent)
    assert enc.bpp <= 0.97 * floor
    assert latent_error(two_stage_model, latent, enc.setting, enc.indices) < \
        latent_error(two_stage_model, latent, fallback.setting, fallback.indices)


def test_next_stage_candidates_only_from_the_top_of_a_stage(two_stage_model):
    from raqcodec.ratecontrol import candidate_settings

    largest = two_stage_model.cfg.max_codebook_size
    assert candidate_settings(two_stage_model, (64,)) == [(256,), (1024,)]  # stage 1: 4 and 16 x the pick's eK
    assert candidate_settings(two_stage_model, (largest, 16)) == [(largest, 64), (largest, 256), (largest, 1024)]
    assert all(len(s) == 1 for s in candidate_settings(two_stage_model, (1024,)))
    assert (largest, 256) in candidate_settings(two_stage_model, (largest,))


def test_reserve_candidate_is_64_times_a_one_stage_pick(two_stage_model):
    from raqcodec.ratecontrol import reserve_settings

    largest = two_stage_model.cfg.max_codebook_size
    assert reserve_settings(two_stage_model, (16,)) == [(1024,)]
    assert reserve_settings(two_stage_model, (64,)) == [(largest,)]
    assert reserve_settings(two_stage_model, (1024,)) == []  # 16 x 1024 is capped at the largest: a candidate
    assert reserve_settings(two_stage_model, (largest, 16)) == []


def test_a_later_stage_at_the_largest_ek_chooses_among_fewer_candidates(two_stage_model):
    """Rate-aware coding keeps LARGEST_LATER_STAGE_CANDIDATES nearest codewords in a stage after the first at the
    largest eK, and CANDIDATES in stage 1 and in a smaller later stage."""
    from raqcodec import ratecontrol

    largest = two_stage_model.cfg.max_codebook_size
    latent = analyse(two_stage_model, synthetic_image(64, 80, seed=3))
    for setting, count in [((largest, largest), ratecontrol.LARGEST_LATER_STAGE_CANDIDATES),
                           ((largest, 256), ratecontrol.CANDIDATES), ((largest,), ratecontrol.CANDIDATES)]:
        quantizer = ratecontrol.RateAwareQuantizer(two_stage_model, latent, setting, ratecontrol.PREFIX_STRENGTH)
        assert quantizer.last[1].shape[-1] == count, setting
        assert quantizer.draft(1.0).indices[-1].max() < setting[-1]
