"""The torch-free decoder (numpy_decoder.py): its model reader, layers and codebooks against torch's, and whole
files against the torch decoder."""
from __future__ import annotations

import pickle
import subprocess
import sys
import zipfile

import numpy as np
import pytest
import torch
from conftest import synthetic_image
from PIL import Image

import raqcodec
from raqcodec import bitstream, entropy, numpy_decoder, numpy_layers
from raqcodec.errors import CodecError
from raqcodec.modelfile import fingerprint
from raqcodec.models.gdn import GDN
from raqcodec.models.transforms import PolyphaseConvTranspose2d
from raqcodec.weightfile import read_weight_file


def channels_last(t: torch.Tensor) -> np.ndarray:
    return t[0].permute(1, 2, 0).contiguous().numpy()


def test_weight_file_holds_the_state_dict_and_its_fingerprint(tiny_model):
    payload = read_weight_file(tiny_model.path)
    state = payload["state_dict"]
    assert payload["config"] == tiny_model.cfg.to_dict()
    assert sorted(state) == sorted(tiny_model.state_dict())
    for name, tensor in tiny_model.state_dict().items():
        assert np.array_equal(state[name], tensor.numpy()), name
    assert numpy_decoder.fingerprint(state) == fingerprint(tiny_model)


def test_weight_file_refuses_other_objects_and_other_files(tmp_path):
    evil = tmp_path / "evil.pt"
    with zipfile.ZipFile(evil, "w") as archive:  # a pickle that would call os.system
        archive.writestr("evil/data.pkl", b"cos\nsystem\n(S'echo pwned'\ntR.")
        archive.writestr("evil/byteorder", b"little")
    with pytest.raises(CodecError, match="does not load: os.system"):
        read_weight_file(evil)
    (tmp_path / "text.pt").write_text("not a zip")
    with pytest.raises(CodecError, match="not a raqcodec model file"):
        read_weight_file(tmp_path / "text.pt")
    with pytest.raises(CodecError, match="not found"):
        read_weight_file(tmp_path / "missing.pt")


@pytest.mark.parametrize("offset, shape, strides", [(0, (3,), (2,)), (-1, (2,), (1,)), (3, (2,), (-1,)),
                                                    (0, (2, 2), (1,))])
def test_a_tensor_outside_its_storage_is_refused(offset, shape, strides):
    from raqcodec.weightfile import _rebuild_tensor

    with pytest.raises(CodecError, match="outside its storage"):
        _rebuild_tensor((np.zeros(4, np.float32), "torch.float32"), offset, shape, strides, False, None)
    assert _rebuild_tensor((np.arange(4, dtype=np.float32), "torch.float32"), 1, (3,), (1,), False,
                           None).tolist() == [1, 2, 3]


@pytest.mark.parametrize("workers", [1, 3])  # one after the other; threads over uneven parts of the rows
@pytest.mark.parametrize("cin, cout, height, width", [(16, 16, 7, 9), (32, 3, 5, 12), (24, 40, 6, 4)])
def test_layers_match_torch(cin, cout, height, width, workers, monkeypatch):
    monkeypatch.setattr(numpy_layers, "WORKERS", workers)
    torch.manual_seed(0)
    x = torch.randn(1, cin, height, width)
    padded = numpy_layers.Padded.of(channels_last(x))
    conv, point = torch.nn.Conv2d(cin, cout, 3, padding=1), torch.nn.Conv2d(cin, cout, 1)
    deconv = torch.nn.ConvTranspose2d(cin, cout, 5, stride=2, padding=2, output_padding=1)
    with torch.no_grad():
        expected = [conv(x), point(x), deconv(x)]
    got = [numpy_layers.conv3x3(padded, conv.weight.detach().numpy(), conv.bias.detach().numpy()),
           numpy_layers.pointwise_conv(channels_last(x), point.weight.detach().numpy(), point.bias.detach().numpy()),
           numpy_layers.TransposedConv(deconv.weight.detach().numpy(), deconv.bias.detach().numpy())(padded)]
    for want, have in zip(expected, got):
        assert np.allclose(have.interior, channels_last(want), atol=1e-5)
        border = have.buffer.copy()
        border[1:have.height + 1, 1:have.width + 1] = 0
        assert not border.any()  # the next layer reads these zeros as its padding


def test_deconv_with_igdn_matches_torch():
    torch.manual_seed(1)
    x = torch.randn(1, 16, 6, 7)
    deconv, igdn = PolyphaseConvTranspose2d(16, 16, 5, stride=2, padding=2, output_padding=1), GDN(16, inverse=True)
    with torch.no_grad():
        igdn.gamma.add_(0.05 * torch.rand(16, 16))
        expected = igdn(deconv(x))
        beta, gamma = igdn.beta_reparam(igdn.beta).numpy(), igdn.gamma_reparam(igdn.gamma).numpy()
    layer = numpy_layers.TransposedConv(deconv.weight.detach().numpy(), deconv.bias.detach().numpy(), (beta, gamma))
    got = layer(numpy_layers.Padded.of(channels_last(x)))
    assert np.allclose(got.interior, channels_last(expected), atol=1e-5)
    assert np.allclose(numpy_decoder._gdn_parameters(
        {f"g.{k}": v.detach().numpy() for k, v in igdn.state_dict().items()}, "g.")[1], gamma)


@pytest.mark.parametrize("layers", [1, 2, 3])
@pytest.mark.parametrize("with_state", [False, True])
def test_lstm_matches_torch(layers, with_state):
    torch.manual_seed(3)
    net = torch.nn.LSTM(5, 8, num_layers=layers)
    x = torch.randn(9, 3, 5)
    state = (torch.randn(layers, 3, 8), torch.randn(layers, 3, 8)) if with_state else None
    with torch.no_grad():
        expected, (h, c) = net(x, state)
    weights = [(getattr(net, f"weight_ih_l{n}").detach().numpy(), getattr(net, f"weight_hh_l{n}").detach().numpy(),
                (getattr(net, f"bias_ih_l{n}") + getattr(net, f"bias_hh_l{n}")).detach().numpy())
               for n in range(layers)]
    got, (got_h, got_c) = numpy_layers.lstm(x.numpy(), weights, None if state is None else
                                            (state[0].numpy(), state[1].numpy()))
    for have, want in ((got, expected), (got_h, h), (got_c, c)):
        assert have.shape == want.shape and np.allclose(have, want.numpy(), atol=1e-5)


@pytest.mark.parametrize("stage, size", [(0, 2), (0, 37), (0, 4096), (1, 300)])
def test_codebooks_match_torch(two_stage_model, stage, size):
    decoder = numpy_decoder.NumpyDecoder.load(two_stage_model.path)
    expected = two_stage_model.codebook(size, stage=stage).numpy()
    got = decoder.codebook(size, stage)
    assert got.shape == expected.shape and np.allclose(got, expected, atol=1e-5)


@pytest.mark.parametrize("setting, tile", [(64, None), ((4096, 16), None), ((300, 2), 3)])
def test_files_decode_within_one_level_of_the_torch_decoder(two_stage_model, setting, tile, monkeypatch):
    if tile is not None:  # several tiles with their halo, as tiling.py
        monkeypatch.setattr(numpy_decoder, "TILE", tile)
    data = raqcodec.compress(synthetic_image(75, 90, seed=4), codebook_size=setting, model=two_stage_model)
    decoder = numpy_decoder.NumpyDecoder.load(two_stage_model.path)
    got = np.asarray(decoder.decompress(data), dtype=np.int16)
    expected = np.asarray(raqcodec.decompress(data, model=two_stage_model), dtype=np.int16)
    assert got.shape == expected.shape == (75, 90, 3)
    difference = np.abs(got - expected)
    assert difference.max() <= 1 and (difference > 0).mean() < 1e-3


def test_bad_files_are_refused(tiny_model, two_stage_model):
    data = raqcodec.compress(synthetic_image(40, 48), codebook_size=16, model=tiny_model)
    decoder = numpy_decoder.NumpyDecoder.load(tiny_model.path)
    with pytest.raises(CodecError, match="different model"):
        numpy_decoder.NumpyDecoder.load(two_stage_model.path).decompress(data)
    with pytest.raises(CodecError):
        decoder.decompress(data[:-5])
    with pytest.raises(CodecError):
        decoder.decompress("not bytes")


def test_a_model_file_without_a_weight_is_refused(tiny_model, tmp_path):
    payload = torch.load(tiny_model.path, weights_only=True)
    del payload["state_dict"]["g_s.2.weight"]
    torch.save(payload, tmp_path / "broken.pt")
    with pytest.raises(CodecError, match="not a raqcodec model file.*g_s.2.weight"):
        numpy_decoder.NumpyDecoder.load(tmp_path / "broken.pt")


def test_the_paper_backbone_is_left_to_torch(tmp_path):
    from raqcodec.modelfile import save_model
    from raqcodec.models import RAQVAE, named_config

    path = tmp_path / "paper.pt"
    save_model(RAQVAE(named_config("paper", channels=8, latent_dim=8)), path, {})
    assert numpy_decoder.NumpyDecoder.load(path) is None


def test_decompress_command_runs_without_torch(tiny_model, tmp_path):
    data = raqcodec.compress(synthetic_image(40, 48, seed=5), codebook_size=32, model=tiny_model)
    (tmp_path / "a.raq").write_bytes(data)
    script = ("import sys; from raqcodec.cli import main\n"
              f"try: main(['decompress', 'a.raq', 'a.png', '--model', {tiny_model.path!r}, '--device', 'cpu'])\n"
              "except SystemExit as e: assert e.code in (0, None), e.code\n"
              "print('torch' in sys.modules)")
    result = subprocess.run([sys.executable, "-c", script], cwd=tmp_path, capture_output=True, text=True, check=True)
    assert result.stdout.strip().splitlines()[-1] == "False"
    decoded = np.asarray(raqcodec.decompress(data, model=tiny_model), dtype=np.int16)
    assert np.abs(np.asarray(Image.open(tmp_path / "a.png"), dtype=np.int16) - decoded).max() <= 1


@pytest.mark.parametrize("workers", [1, 2, 3])
@pytest.mark.parametrize("band_rows", [1, 2, 3, 7, 32])
def test_upsampling_in_bands_equals_the_two_layers(band_rows, workers, monkeypatch):
    monkeypatch.setattr(numpy_layers, "WORKERS", workers)
    rng = np.random.default_rng(2)
    x = numpy_layers.Padded.of(rng.standard_normal((7, 5, 12)).astype(np.float32))
    gamma = np.abs(rng.standard_normal((10, 10))).astype(np.float32) * 0.1
    first = numpy_layers.TransposedConv(rng.standard_normal((12, 10, 5, 5)).astype(np.float32) * 0.2,
                                        rng.standard_normal(10).astype(np.float32), (np.ones(10, np.float32), gamma))
    second = numpy_layers.TransposedConv(rng.standard_normal((10, 3, 5, 5)).astype(np.float32) * 0.2,
                                         rng.standard_normal(3).astype(np.float32))
    with monkeypatch.context() as one_worker:
        one_worker.setattr(numpy_layers, "WORKERS", 1)
        whole = second(first(x))
    banded = numpy_layers.upsample_pair(x, first, second, band_rows=band_rows)
    assert banded.buffer.shape == whole.buffer.shape == (28 + 3, 20 + 2, 3)
    assert np.allclose(banded.buffer, whole.buffer, atol=1e-4)


@pytest.mark.parametrize("folder, exact, expected", [(False, False, "numpy"), (True, False, "torch"),
                                                     (False, True, "torch")])
def test_decompress_command_picks_the_decoder(tiny_model, tmp_path, monkeypatch, folder, exact, expected):
    from click.testing import CliRunner

    from raqcodec import cli

    used = []
    load = numpy_decoder.NumpyDecoder.load
    monkeypatch.setattr(numpy_decoder.NumpyDecoder, "load", lambda path: used.append("numpy") or load(path))
    data = raqcodec.compress(synthetic_image(40, 48, seed=6), codebook_size=32, model=tiny_model)
    for name in ("a", "b") if folder else ("a",):
        (tmp_path / f"{name}.raq").write_bytes(data)
    source, output = (tmp_path, tmp_path / "out") if folder else (tmp_path / "a.raq", tmp_path / "a.png")
    result = CliRunner().invoke(cli.main, ["decompress", str(source), str(output), "--model", tiny_model.path,
                                           "--device", "cpu", *(["--exact"] if exact else [])])
    assert result.exit_code == 0, result.output
    assert (used[:1] or ["torch"])[0] == expected


def test_openblas_threads_are_found_and_restored(monkeypatch):
    monkeypatch.setattr(numpy_layers, "WORKERS", 2)
    blas = numpy_layers._openblas_threads()
    if blas is None:
        pytest.skip("no OpenBLAS whose thread count can be set (the layers then run one job after the other)")
    before = blas[1]()
    ran = []
    numpy_layers._parallel([lambda: ran.append(blas[1]()), lambda: ran.append(blas[1]())])
    assert ran == [1, 1] and blas[1]() == before


def test_pixels_do_not_depend_on_the_number_of_cores(two_stage_model, monkeypatch):
    if numpy_layers._openblas_threads() is None:
        pytest.skip("no OpenBLAS whose thread count can be set: products then use its own threads")
    monkeypatch.setattr(numpy_decoder, "TILE", 3)  # several tiles
    data = raqcodec.compress(synthetic_image(75, 90, seed=7), codebook_size=(300, 2), model=two_stage_model)
    header, payload = bitstream.unpack(data)
    indices = entropy.decode_stages(payload, header.latent_shape, list(header.codebook_sizes), header.entropy_model)
    set_blas_threads, blas_threads = numpy_layers._openblas_threads()
    before, outputs = blas_threads(), []
    try:
        for cores in (1, 2, 3):  # as on a machine of that many cores: workers and OpenBLAS's own thread count
            monkeypatch.setattr(numpy_layers, "WORKERS", cores)
            set_blas_threads(cores)
            decoder = numpy_decoder.NumpyDecoder.load(two_stage_model.path)  # its codebooks generated again
            outputs.append(decoder.synthesis(decoder.latent(indices, header.codebook_sizes)))  # before rounding
    finally:
        set_blas_threads(before)
    assert np.array_equal(outputs[0], outputs[1]) and np.array_equal(outputs[0], outputs[2])
