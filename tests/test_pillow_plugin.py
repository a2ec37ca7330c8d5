"""The Pillow plugin: Image.open / load / save of .raq files after `import raqcodec`."""
import numpy as np
import pytest
from PIL import Image, UnidentifiedImageError

import raqcodec
from raqcodec import pillow_plugin

from conftest import synthetic_image


@pytest.fixture
def plugin_model(tiny_model):
    pillow_plugin.register(model=tiny_model)
    yield tiny_model
    pillow_plugin.register()


def test_registered_with_extension_and_mime():
    assert Image.registered_extensions()[".raq"] == "RAQ"
    assert Image.MIME["RAQ"] == "image/x-raq"


def test_save_then_open_round_trip(plugin_model, tmp_path):
    pixels = synthetic_image(40, 56, seed=4)
    path = tmp_path / "x.raq"
    Image.fromarray(pixels).save(path, codebook_size=64, model=plugin_model)
    expected = raqcodec.compress(pixels, codebook_size=64, model=plugin_model)
    assert path.read_bytes() == expected
    with Image.open(path) as img:
        assert (img.format, img.size, img.mode) == ("RAQ", (56, 40), "RGB")
        decoded = np.asarray(img)
    assert np.array_equal(decoded, np.asarray(raqcodec.decompress(expected, model=plugin_model)))


def test_open_reads_the_header_only(plugin_model, tmp_path, monkeypatch):
    path = tmp_path / "g.raq"
    Image.fromarray(synthetic_image(24, 32, seed=1)[..., 0]).save(path, bpp=1.0, model=plugin_model)
    calls = []
    monkeypatch.setattr("raqcodec.codec.decompress", lambda *a, **k: calls.append(1))
    with Image.open(path) as img:
        assert (img.size, img.mode) == ((32, 24), "L")
    assert calls == []


def test_errors_are_pillow_exceptions_with_the_codec_message(plugin_model, tmp_path):
    path = tmp_path / "x.raq"
    Image.fromarray(synthetic_image(24, 32)).save(path, codebook_size=16, model=plugin_model)
    data = path.read_bytes()
    (tmp_path / "short.raq").write_bytes(data[:20])
    with pytest.raises(UnidentifiedImageError, match="truncated"):
        Image.open(tmp_path / "short.raq")
    corrupt = bytearray(data)
    corrupt[-1] ^= 0xFF  # checksum
    (tmp_path / "bad.raq").write_bytes(bytes(corrupt))
    with Image.open(tmp_path / "bad.raq") as img, pytest.raises(OSError, match="checksum|CRC|corrupt"):
        img.load()
    with pytest.raises(OSError, match="exactly one"):
        Image.fromarray(synthetic_image(24, 32)).save(tmp_path / "none.raq", model=plugin_model)
    assert not (tmp_path / "none.raq").exists()
