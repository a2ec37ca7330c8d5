"""`raq rd` and raqcodec.rd: curves, BD table, JSON document and plot on tiny synthetic images."""
from __future__ import annotations

import json
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
from click.testing import CliRunner, Result
from PIL import Image

from raqcodec.cli import main
from raqcodec.errors import CodecError
from raqcodec.rd import bd_table, load_anchor, make_curve

TINY_MODEL = Path(__file__).parent / "vectors" / "tiny-model.pt"
SIZES = "4,16,64,256,4096"


@pytest.fixture(autouse=True)
def one_thread():
    """One torch thread while these tests run."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture()
def folder(tmp_path) -> Path:
    """Three 64x96 gradient-plus-noise images (the third is left out by --limit 2)."""
    images = tmp_path / "images"
    images.mkdir()
    rng = np.random.default_rng(0)
    yy, xx = np.mgrid[0:64, 0:96]
    for i in range(3):
        base = np.stack([xx * 2.5, yy * 3.5, (xx + yy + 40 * i) % 256], axis=-1)
        pixels = np.clip(base + rng.normal(0, 12, base.shape), 0, 255).astype(np.uint8)
        Image.fromarray(pixels).save(images / f"img{i}.png")
    return images


@pytest.fixture()
def anchor(tmp_path) -> Path:
    """A CompressAI-format anchor without MS-SSIM results."""
    path = tmp_path / "anchor.json"
    path.write_text(json.dumps({"name": "Published", "description": "test anchor",
                                "results": {"bpp": [2.0, 0.25, 0.5, 1.0], "psnr-rgb": [38.0, 26.0, 29.0, 33.0]}}))
    return path


def run(*args) -> Result:
    return CliRunner().invoke(main, [str(a) for a in args])


def test_rd_command_writes_plot_json_and_tables(folder, anchor, tmp_path):
    png, out_json = tmp_path / "rd.png", tmp_path / "rd.json"
    res = run("rd", folder, "--out", png, "--json", out_json, "--model", TINY_MODEL, "--codecs",
              "raq,raq-nearest,jpeg", "--codebook-sizes", SIZES, "--targets", "0.3,0.6,1.0", "--limit", 2,
              "--anchors", anchor, "--device", "cpu")
    assert res.exit_code == 0, res.output
    assert Image.open(png).format == "PNG"
    doc = json.loads(out_json.read_text())
    assert doc["images"] == 2 and doc["dataset"] == str(folder)
    assert set(doc["codecs"]) == {"raqcodec", "raqcodec-nearest", "jpeg", "Published"}
    for name in ("raqcodec", "raqcodec-nearest", "jpeg"):
        results = doc["codecs"][name]["results"]
        assert doc["codecs"][name]["name"] == name
        assert len(results["bpp"]) == len(results["psnr-rgb"]) == len(results["ms-ssim-rgb"])
        assert results["bpp"] == sorted(results["bpp"])
        assert all(0 < s <= 1 for s in results["ms-ssim-rgb"])
    assert len(doc["codecs"]["raqcodec-nearest"]["results"]["bpp"]) == 5
    assert len(doc["codecs"]["raqcodec"]["results"]["bpp"]) == 3  # one point per target, each within it
    assert all(b <= t for b, t in zip(doc["codecs"]["raqcodec"]["results"]["bpp"], [0.3, 0.6, 1.0]))
    assert doc["codecs"]["Published"]["results"]["bpp"] == [0.25, 0.5, 1.0, 2.0]
    assert doc["bd"]["reference"] == "jpeg"
    assert doc["bd"]["rows"]["jpeg"]["bd_rate_percent"] == pytest.approx(0.0, abs=1e-9)
    assert set(doc["bd"]["rows"]) == {"raqcodec", "raqcodec-nearest", "jpeg", "Published"}
    assert "| codec | BD-rate % | BD-PSNR dB |" in res.output and "| Published |" in res.output


def test_missing_folder_is_exit_1(tmp_path):
    res = run("rd", tmp_path / "nowhere", "--codecs", "jpeg")
    assert res.exit_code == 1
    assert "no such folder" in res.output


def test_missing_reference_is_exit_1(folder):
    res = run("rd", folder, "--codecs", "webp", "--limit", 1)
    assert res.exit_code == 1
    assert "reference codec 'jpeg'" in res.output


def test_anchor_with_ms_ssim_db_only(tmp_path):
    path = tmp_path / "a.json"
    path.write_text(json.dumps({"name": "A", "results": {"bpp": [0.5, 0.1], "ms-ssim-db-rgb": [10.0, 20.0]}}))
    curve = load_anchor(path)
    assert curve["results"]["bpp"] == [0.1, 0.5]
    assert curve["results"]["ms-ssim-rgb"] == pytest.approx([0.99, 0.9])
    assert "psnr-rgb" not in curve["results"]


@pytest.mark.parametrize("text", ["[]", "{}", '{"name": "A", "results": {"bpp": [1, 2]}}',
                                  '{"name": "A", "results": {"bpp": [1, 2], "psnr-rgb": [30]}}'])
def test_bad_anchor_is_codec_error(tmp_path, text):
    path = tmp_path / "bad.json"
    path.write_text(text)
    with pytest.raises(CodecError):
        load_anchor(path)


def test_bd_table_is_null_for_short_or_psnr_less_curves():
    ref = make_curve("ref", {"bpp": [0.2, 0.4, 0.8, 1.6], "psnr-rgb": [26.0, 29.0, 32.0, 35.0]})
    better = make_curve("better", {"bpp": [0.2, 0.4, 0.8, 1.6], "psnr-rgb": [27.0, 30.0, 33.0, 36.0]})
    short = make_curve("short", {"bpp": [0.2, 0.4, 0.8], "psnr-rgb": [26.0, 29.0, 32.0]})
    ssim_only = make_curve("ssim", {"bpp": [0.2, 0.4, 0.8, 1.6], "ms-ssim-rgb": [0.9, 0.93, 0.96, 0.98]})
    rows = bd_table({"ref": ref, "better": better, "short": short, "ssim": ssim_only}, "ref")["rows"]
    assert rows["better"]["bd_psnr_db"] == pytest.approx(1.0)
    assert rows["better"]["bd_rate_percent"] < 0
    assert rows["short"] == {"bd_rate_percent": None, "bd_psnr_db": None}
    assert rows["ssim"] == {"bd_rate_percent": None, "bd_psnr_db": None}


def test_models_with_the_same_file_name_are_refused(folder):
    res = run("rd", folder, "--codecs", "raq,jpeg", "--model", TINY_MODEL, "--model", TINY_MODEL)
    assert res.exit_code == 1
    assert "different file names" in res.output


def test_plugin_codecs_are_measured_when_installed_and_skipped_with_a_note_otherwise(folder, tmp_path, monkeypatch):
    from raqcodec import rd

    ready = {codec: rd.plugin_codec_ready(codec) for codec in rd.PLUGIN_CODECS}
    monkeypatch.setitem(rd.PILLOW_CODECS, "jxl", ("JXL", (30, 70)))
    monkeypatch.setitem(rd.PILLOW_CODECS, "heic", ("HEIF", (30, 70)))
    out_json = tmp_path / "rd.json"
    res = run("rd", folder, "--json", out_json, "--codecs", "jpeg,jxl,heic", "--limit", 1)
    assert res.exit_code == 0, res.output
    doc = json.loads(out_json.read_text())
    for codec, installed in ready.items():
        assert (codec in doc["codecs"]) == installed and (codec in doc["skipped"]) != installed
    monkeypatch.setattr(rd, "plugin_codec_ready", lambda codec: False)
    with warnings.catch_warnings():
        warnings.simplefilter("always")  # the same note may have been shown above
        res = run("rd", folder, "--json", out_json, "--codecs", "jpeg,jxl,heic", "--limit", 1)
    assert res.exit_code == 0, res.output
    assert "warning: jxl skipped" in res.output and "warning: heic skipped" in res.output
    doc = json.loads(out_json.read_text())
    assert set(doc["codecs"]) == {"jpeg"} and set(doc["skipped"]) == {"jxl", "heic"}
