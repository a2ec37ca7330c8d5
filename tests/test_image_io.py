"""Tests for raqcodec.image_io: loading every source kind, atomic writes, tensor helpers."""

import os
import struct
import zlib
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from raqcodec import image_io
from raqcodec.errors import CodecError
from raqcodec.image_io import (
    COLOR_GREY,
    COLOR_RGB,
    load_image,
    pad_to_multiple,
    save_image_atomic,
    to_pil,
    to_tensor,
    to_uint8,
    write_bytes_atomic,
)

torch.set_num_threads(1)


def _rgb(h: int = 6, w: int = 5, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (h, w, 3), dtype=np.uint8)


def _png_chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


def _assert_one_line_naming(err: pytest.ExceptionInfo, path: Path) -> None:
    message = str(err.value)
    assert str(path) in message
    assert "\n" not in message


def _leftovers(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir() if p.name.endswith(".tmp"))


# --- loading -------------------------------------------------------------------------------


def test_rgb_png_round_trip(tmp_path):
    pixels = _rgb()
    path = tmp_path / "a.png"
    Image.fromarray(pixels).save(path)
    loaded, mode = load_image(path)
    assert mode == COLOR_RGB
    assert loaded.dtype == np.uint8 and loaded.shape == (6, 5, 3)
    assert loaded.flags.writeable and loaded.flags.c_contiguous
    np.testing.assert_array_equal(loaded, pixels)
    np.testing.assert_array_equal(load_image(str(path))[0], pixels)


def test_rgba_png_warns_and_drops_alpha(tmp_path):
    rgba = np.concatenate([_rgb(), np.full((6, 5, 1), 7, np.uint8)], axis=2)
    path = tmp_path / "a.png"
    Image.fromarray(rgba).save(path)
    with pytest.warns(UserWarning, match="alpha"):
        loaded, mode = load_image(path)
    assert mode == COLOR_RGB
    np.testing.assert_array_equal(loaded, rgba[:, :, :3])


def test_palette_png_becomes_rgb(tmp_path):
    indices = np.arange(12, dtype=np.uint8).reshape(3, 4) % 3
    im = Image.new("P", (4, 3))
    im.putdata(indices.ravel().tolist())
    im.putpalette([255, 0, 0, 0, 255, 0, 0, 0, 255] + [0] * 759)
    path = tmp_path / "p.png"
    im.save(path)
    loaded, mode = load_image(path)
    assert mode == COLOR_RGB
    expected = np.array([[255, 0, 0], [0, 255, 0], [0, 0, 255]], np.uint8)[indices]
    np.testing.assert_array_equal(loaded, expected)


def test_palette_with_transparency_warns(tmp_path):
    im = Image.new("P", (2, 2))
    im.putpalette([0, 0, 0, 255, 0, 0] + [0] * 762)
    im.info["transparency"] = 0
    path = tmp_path / "pt.png"
    im.save(path)
    with pytest.warns(UserWarning, match="alpha"):
        loaded, _ = load_image(path)
    assert loaded.shape == (2, 2, 3)


def test_greyscale_png_replicated(tmp_path):
    grey = np.arange(20, dtype=np.uint8).reshape(4, 5) * 12
    path = tmp_path / "g.png"
    Image.fromarray(grey).save(path)
    loaded, mode = load_image(path)
    assert mode == COLOR_GREY
    for c in range(3):
        np.testing.assert_array_equal(loaded[:, :, c], grey)


def test_one_bit_and_la_are_grey(tmp_path):
    bilevel = Image.new("1", (3, 2))
    bilevel.putpixel((1, 0), 1)
    loaded, mode = load_image(bilevel)
    assert mode == COLOR_GREY and loaded[0, 1, 0] == 255 and loaded[0, 0, 0] == 0
    la = Image.new("LA", (3, 2), (40, 128))
    with pytest.warns(UserWarning, match="alpha"):
        loaded, mode = load_image(la)
    assert mode == COLOR_GREY and np.all(loaded == 40)


def test_16bit_png_rounds_not_clips(tmp_path):
    values = np.array([[0, 257, 257 * 100, 65535, 128, 129, 257 * 100 + 128, 257 * 100 + 129]], np.uint16)
    path = tmp_path / "g16.png"
    Image.fromarray(values).save(path)
    with Image.open(path) as im:
        assert im.mode.startswith("I")
    loaded, mode = load_image(path)
    assert mode == COLOR_GREY
    np.testing.assert_array_equal(loaded[0, :, 0], [0, 1, 100, 255, 0, 1, 100, 101])


def test_16bit_every_multiple_of_257_maps_to_its_quotient():
    k = np.arange(256, dtype=np.uint16)
    loaded, _ = load_image((k * 257).reshape(16, 16))
    np.testing.assert_array_equal(loaded[:, :, 0].ravel(), k)


def test_16bit_modes_i_and_big_endian():
    as_i = Image.fromarray(np.array([[0, 65535, 514]], np.int32))
    assert as_i.mode == "I"
    np.testing.assert_array_equal(load_image(as_i)[0][0, :, 0], [0, 255, 2])
    big_endian = Image.frombytes("I;16B", (2, 1), struct.pack(">HH", 65535, 257 * 9))
    np.testing.assert_array_equal(load_image(big_endian)[0][0, :, 0], [255, 9])
    out_of_range = Image.fromarray(np.array([[70000]], np.int32))
    with pytest.raises(CodecError, match="16-bit"):
        load_image(out_of_range)


def test_cmyk_and_ycbcr_become_rgb():
    for mode in ("CMYK", "YCbCr"):
        loaded, color_mode = load_image(Image.new(mode, (3, 2)))
        assert loaded.shape == (2, 3, 3) and color_mode == COLOR_RGB


def test_unsupported_mode_raises():
    with pytest.raises(CodecError, match="mode 'F'"):
        load_image(Image.new("F", (2, 2)))


def test_exif_orientation_6_transposes(tmp_path):
    pixels = np.zeros((20, 40, 3), np.uint8)
    pixels[:8, :8] = (255, 0, 0)  # red block at the top-left
    exif = Image.Exif()
    exif[0x0112] = 6  # display = rotate 90 degrees clockwise
    path = tmp_path / "rot.jpg"
    Image.fromarray(pixels).save(path, exif=exif, quality=95)
    loaded, mode = load_image(path)
    assert mode == COLOR_RGB
    assert loaded.shape == (40, 20, 3)
    assert loaded[2, 17, 0] > 200 and loaded[2, 2, 0] < 50  # now at the top-right


def test_one_pixel_image(tmp_path):
    path = tmp_path / "one.png"
    Image.new("RGB", (1, 1), (1, 2, 3)).save(path)
    loaded, _ = load_image(path)
    np.testing.assert_array_equal(loaded, [[[1, 2, 3]]])


def test_pil_image_input_is_not_modified():
    im = Image.fromarray(_rgb())
    before = im.tobytes()
    loaded, _ = load_image(im)
    loaded[:] = 0
    assert im.tobytes() == before


def test_bad_paths_raise_one_line_naming_the_path(tmp_path):
    text = tmp_path / "x.png"
    text.write_text("not an image\n")
    empty = tmp_path / "empty.png"
    empty.write_bytes(b"")
    folder = tmp_path / "folder.png"
    folder.mkdir()
    missing = tmp_path / "missing.png"
    for path in (text, empty, folder, missing):
        with pytest.raises(CodecError) as err:
            load_image(path)
        _assert_one_line_naming(err, path)


def test_truncated_png_raises(tmp_path):
    whole = tmp_path / "whole.png"
    Image.fromarray(_rgb(64, 64)).save(whole)
    truncated = tmp_path / "cut.png"
    truncated.write_bytes(whole.read_bytes()[:200])
    with pytest.raises(CodecError, match="corrupt or truncated") as err:
        load_image(truncated)
    _assert_one_line_naming(err, truncated)


def test_huge_image_refused_before_decoding(tmp_path):
    # A header claiming 12000 x 12000 px (> 2**27) with no pixel data: only a lazy size
    # check can report "too many pixels" rather than "truncated".
    header = struct.pack(">IIBBBBB", 12000, 12000, 8, 2, 0, 0, 0)
    path = tmp_path / "huge.png"
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + _png_chunk(b"IHDR", header) + _png_chunk(b"IEND", b""))
    with pytest.raises(CodecError, match="pixels allowed") as err:
        load_image(path)
    _assert_one_line_naming(err, path)


def test_max_pixels_applies_to_arrays_and_images(monkeypatch):
    monkeypatch.setattr(image_io, "MAX_PIXELS", 10)
    with pytest.raises(CodecError, match="pixels allowed"):
        load_image(_rgb(4, 4))
    with pytest.raises(CodecError, match="pixels allowed"):
        load_image(Image.new("RGB", (4, 4)))
    assert load_image(_rgb(2, 5))[0].shape == (2, 5, 3)


def test_arrays():
    pixels = _rgb()
    loaded, mode = load_image(pixels)
    assert mode == COLOR_RGB and not np.shares_memory(loaded, pixels)
    np.testing.assert_array_equal(loaded, pixels)
    loaded, mode = load_image(pixels[:, :, 0])
    assert mode == COLOR_GREY and np.array_equal(loaded[:, :, 2], pixels[:, :, 0])
    with pytest.warns(UserWarning, match="alpha"):
        loaded, mode = load_image(np.dstack([pixels, pixels[:, :, :1]]))
    np.testing.assert_array_equal(loaded, pixels)
    wide = np.array([[[65535, 257, 128]]], np.uint16)
    np.testing.assert_array_equal(load_image(wide)[0], [[[255, 1, 0]]])


@pytest.mark.parametrize(
    "bad", [np.zeros((4, 4, 3), np.float32), np.zeros((4, 4, 2), np.uint8), np.zeros((0, 4, 3), np.uint8)]
)
def test_bad_arrays_raise(bad):
    with pytest.raises(CodecError):
        load_image(bad)


# --- to_pil --------------------------------------------------------------------------------


def test_to_pil_modes():
    pixels = _rgb()
    rgb = to_pil(pixels, COLOR_RGB)
    assert rgb.mode == "RGB" and np.array_equal(np.asarray(rgb), pixels)
    grey = to_pil(np.array([[[0, 0, 1], [0, 1, 1], [255, 255, 255]]], np.uint8), COLOR_GREY)
    assert grey.mode == "L"
    np.testing.assert_array_equal(np.asarray(grey), [[0, 1, 255]])  # rounded channel means
    with pytest.raises(CodecError):
        to_pil(pixels, 2)


# --- atomic writes -------------------------------------------------------------------------


def test_save_image_round_trip_and_permissions(tmp_path):
    pixels = _rgb()
    path = tmp_path / "out.png"
    save_image_atomic(to_pil(pixels, COLOR_RGB), path, force=False)
    np.testing.assert_array_equal(load_image(path)[0], pixels)
    umask = os.umask(0)
    os.umask(umask)
    assert path.stat().st_mode & 0o777 == 0o666 & ~umask
    assert _leftovers(tmp_path) == []


def test_save_format_follows_extension(tmp_path):
    save_image_atomic(Image.new("RGB", (4, 4)), tmp_path / "out.JPG", force=False)
    with Image.open(tmp_path / "out.JPG") as im:
        assert im.format == "JPEG"


@pytest.mark.parametrize("name", ["noext", "out.xyz", "out.raq"])
def test_save_unknown_extension_raises(tmp_path, name):
    with pytest.raises(CodecError, match="extension"):
        save_image_atomic(Image.new("RGB", (2, 2)), tmp_path / name, force=True)
    assert list(tmp_path.iterdir()) == []


def test_existing_file_needs_force(tmp_path):
    path = tmp_path / "out.png"
    path.write_bytes(b"old")
    with pytest.raises(CodecError, match="exists") as err:
        save_image_atomic(Image.new("RGB", (2, 2)), path, force=False)
    _assert_one_line_naming(err, path)
    assert path.read_bytes() == b"old"
    with pytest.raises(CodecError, match="exists"):
        write_bytes_atomic(b"new", path, force=False)
    assert path.read_bytes() == b"old"
    write_bytes_atomic(b"new", path, force=True)
    assert path.read_bytes() == b"new"
    save_image_atomic(Image.new("RGB", (2, 2)), path, force=True)
    assert load_image(path)[0].shape == (2, 2, 3)
    assert _leftovers(tmp_path) == []


def test_write_bytes(tmp_path):
    path = tmp_path / "a.raq"
    write_bytes_atomic(b"\x00\x01raq", path, force=False)
    assert path.read_bytes() == b"\x00\x01raq"


def test_write_into_a_file_or_missing_folder_raises(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_bytes(b"")
    for path in (blocker / "out.raq", tmp_path / "missing" / "out.raq"):
        with pytest.raises(CodecError, match="cannot write") as err:
            write_bytes_atomic(b"data", path, force=True)
        _assert_one_line_naming(err, path)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["file"]


def test_write_onto_a_directory_raises(tmp_path):
    with pytest.raises(CodecError, match="directory"):
        write_bytes_atomic(b"data", tmp_path, force=True)


def test_failed_rename_leaves_nothing(tmp_path, monkeypatch):
    def failing_replace(src, dst):
        raise PermissionError(13, "Permission denied")

    monkeypatch.setattr(image_io.os, "replace", failing_replace)
    with pytest.raises(CodecError, match="Permission denied"):
        save_image_atomic(Image.new("RGB", (8, 8)), tmp_path / "out.png", force=False)
    assert list(tmp_path.iterdir()) == []


def test_interrupted_write_leaves_nothing_and_keeps_old_file(tmp_path):
    path = tmp_path / "out.png"
    path.write_bytes(b"old")

    class Interrupting:
        def save(self, f, format, **options):
            f.write(b"partial")
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        save_image_atomic(Interrupting(), path, force=True)
    assert path.read_bytes() == b"old"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out.png"]


def test_encoder_error_becomes_codec_error(tmp_path):
    with pytest.raises(CodecError, match="cannot write"):
        save_image_atomic(Image.new("LA", (2, 2)), tmp_path / "out.jpg", force=False)
    assert list(tmp_path.iterdir()) == []


# --- tensors -------------------------------------------------------------------------------


def test_tensor_round_trip():
    pixels = _rgb(7, 3)
    x = to_tensor(pixels)
    assert x.shape == (1, 3, 7, 3) and x.dtype == torch.float32 and x.is_contiguous()
    assert 0.0 <= x.min() and x.max() <= 1.0
    assert torch.equal(x[0, :, 1, 2], torch.tensor(pixels[1, 2], dtype=torch.float32) / 255)
    back = to_uint8(x)
    assert back.dtype == np.uint8 and back.flags.c_contiguous
    np.testing.assert_array_equal(back, pixels)


def test_to_uint8_clamps_and_rounds():
    x = torch.tensor([-0.5, 1.5, 0.5 / 255, 1.6 / 255]).view(1, 1, 1, 4).expand(1, 3, 1, 4)
    np.testing.assert_array_equal(to_uint8(x)[0, :, 0], [0, 255, 0, 2])


def test_pad_to_multiple():
    x = torch.arange(35, dtype=torch.float32).view(1, 1, 5, 7)
    padded = pad_to_multiple(x, 4)
    assert padded.shape == (1, 1, 8, 8)
    assert torch.equal(padded[..., :5, :7], x)
    assert torch.equal(padded[0, 0, 7, :7], x[0, 0, 4])  # bottom rows repeat the last row
    assert torch.equal(padded[0, 0, :5, 7], x[0, 0, :, 6])  # right column repeats the last column
    one = pad_to_multiple(torch.full((1, 3, 1, 1), 0.25), 64)
    assert one.shape == (1, 3, 64, 64) and torch.all(one == 0.25)
    square = x[..., :4, :4]
    assert torch.equal(pad_to_multiple(square, 4), square)
