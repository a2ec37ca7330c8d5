"""The `raq` command line: outputs, messages and exit codes."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner
from conftest import synthetic_image
from PIL import Image

from raqcodec.cli import main


@pytest.fixture()
def photo(tmp_path) -> Path:
    path = tmp_path / "photo.png"
    Image.fromarray(synthetic_image(60, 70, seed=2)).save(path)
    return path


def run(*args: str):
    return CliRunner().invoke(main, [str(a) for a in args])


def test_compress_info_decompress(tiny_model, photo, tmp_path):
    raq, png = tmp_path / "photo.raq", tmp_path / "out.png"
    res = run("compress", photo, raq, "--codebook-size", 128, "--model", tiny_model.path)
    assert res.exit_code == 0, res.output
    assert "eK=128" in res.output and "bpp=" in res.output
    res = run("info", raq)
    assert res.exit_code == 0 and "codebook_size: 128" in res.output and "width: 70" in res.output
    res = run("decompress", raq, png, "--model", tiny_model.path)
    assert res.exit_code == 0, res.output
    assert Image.open(png).size == (70, 60)
    res = run("decompress", raq, tmp_path / "exact.png", "--model", tiny_model.path, "--exact")
    assert res.exit_code == 0, res.output
    fast, exact = (np.asarray(Image.open(path), dtype=np.int16) for path in (png, tmp_path / "exact.png"))
    assert np.abs(fast - exact).max() <= 1


def test_bpp_target(tiny_model, photo, tmp_path):
    res = run("compress", photo, tmp_path / "a.raq", "--bpp", 1.0, "--model", tiny_model.path)
    assert res.exit_code == 0, res.output


def test_folder_input(tiny_model, photo, tmp_path):
    res = run("compress", photo.parent, tmp_path / "coded", "--codebook-size", 32, "--model", tiny_model.path)
    assert res.exit_code == 0, res.output
    assert (tmp_path / "coded" / "photo.raq").exists()


def _fails_cleanly(res, output: Path | None = None) -> None:
    assert res.exit_code == 1
    lines = [line for line in res.output.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error:"), res.output
    assert "Traceback" not in res.output
    if output is not None:
        assert not output.exists()


def test_bad_inputs_give_one_line_and_exit_1(tiny_model, photo, tmp_path):
    out = tmp_path / "x.raq"
    _fails_cleanly(run("compress", tmp_path / "missing.png", out, "--codebook-size", 16, "--model", tiny_model.path), out)
    text = tmp_path / "text.png"
    text.write_text("not an image")
    _fails_cleanly(run("compress", text, out, "--codebook-size", 16, "--model", tiny_model.path), out)
    _fails_cleanly(run("compress", photo, tmp_path / "no" / "such" / "dir" / "x.raq", "--codebook-size", 16,
                       "--model", tiny_model.path))
    bad = tmp_path / "bad.raq"
    bad.write_bytes(b"RAQC" + b"\0" * 10)
    png = tmp_path / "bad.png"
    _fails_cleanly(run("decompress", bad, png, "--model", tiny_model.path), png)
    _fails_cleanly(run("info", bad))
    _fails_cleanly(run("compress", photo, out, "--model", tiny_model.path))  # neither --bpp nor --codebook-size


def test_existing_output_needs_force(tiny_model, photo, tmp_path):
    out = tmp_path / "x.raq"
    out.write_bytes(b"keep")
    _fails_cleanly(run("compress", photo, out, "--codebook-size", 16, "--model", tiny_model.path))
    assert out.read_bytes() == b"keep"
    res = run("compress", photo, out, "--codebook-size", 16, "--model", tiny_model.path, "--force")
    assert res.exit_code == 0 and out.read_bytes() != b"keep"


def test_empty_file_directory_and_unwritable_output(tiny_model, photo, tmp_path):
    empty = tmp_path / "empty.png"
    empty.write_bytes(b"")
    out = tmp_path / "e.raq"
    _fails_cleanly(run("compress", empty, out, "--codebook-size", 16, "--model", tiny_model.path), out)
    empty_raq = tmp_path / "empty.raq"
    empty_raq.write_bytes(b"")
    _fails_cleanly(run("decompress", empty_raq, tmp_path / "e.png", "--model", tiny_model.path), tmp_path / "e.png")
    folder = tmp_path / "folder"
    folder.mkdir()
    _fails_cleanly(run("info", folder))
    _fails_cleanly(run("decompress", folder, tmp_path / "outdir", "--model", tiny_model.path))  # no .raq inside
    blocker = tmp_path / "blocker"
    blocker.write_text("a file where a folder should be")
    _fails_cleanly(run("compress", photo, blocker / "x.raq", "--codebook-size", 16, "--model", tiny_model.path))
    assert sorted(p.name for p in tmp_path.iterdir() if p.name.startswith(".")) == []  # no temp files left


def test_eval_writes_the_json_schema(tiny_model, photo, tmp_path):
    out = tmp_path / "eval.json"
    res = run("eval", photo.parent, "--model", tiny_model.path, "--codebook-sizes", "16,64", "--json", out)
    assert res.exit_code == 0, res.output
    assert "| 16 |" in res.output and "| 64 |" in res.output
    import json

    doc = json.loads(out.read_text())
    assert set(doc) >= {"model", "dataset", "results"}
    rows = doc["results"]
    assert [r["codebook_size"] for r in rows] == [16, 64]
    for r in rows:
        assert {"bpp", "psnr", "ms_ssim", "perplexity", "usage"} <= set(r)
        assert 0 < r["bpp"] and r["usage"] <= r["codebook_size"]


def test_two_stage_setting_info_and_eval(two_stage_model, photo, tmp_path):
    raq, png = tmp_path / "photo.raq", tmp_path / "out.png"
    res = run("compress", photo, raq, "--codebook-size", "4096+8", "--model", two_stage_model.path)
    assert res.exit_code == 0, res.output
    assert "eK=4096+8" in res.output
    res = run("info", raq)
    assert res.exit_code == 0 and "version: 2" in res.output and "stages: 2" in res.output
    assert "residual_sizes: (8,)" in res.output
    res = run("decompress", raq, png, "--model", two_stage_model.path)
    assert res.exit_code == 0, res.output
    out = tmp_path / "eval.json"
    res = run("eval", photo.parent, "--model", two_stage_model.path, "--codebook-sizes", "16,4096+8", "--json", out)
    assert res.exit_code == 0, res.output
    import json

    rows = json.loads(out.read_text())["results"]
    assert [(r["codebook_size"], r["setting"]) for r in rows] == [(16, "16"), (4096, "4096+8")]
    assert rows[1]["bpp"] > rows[0]["bpp"]


def test_bad_setting_is_one_line(tiny_model, photo, tmp_path):
    res = run("compress", photo, tmp_path / "a.raq", "--codebook-size", "64+x", "--model", tiny_model.path)
    assert res.exit_code == 1 and res.output.count("\n") == 1 and "eK+eK" in res.output
    res = run("compress", photo, tmp_path / "a.raq", "--codebook-size", "64+64", "--model", tiny_model.path)
    assert res.exit_code == 1 and "stage" in res.output and not (tmp_path / "a.raq").exists()


def test_pipe_round_trip_in_a_subprocess(tiny_model, photo, tmp_path):
    import subprocess
    import sys

    import raqcodec

    raq = [sys.executable, "-m", "raqcodec.cli"]
    model = ["--model", tiny_model.path, "--device", "cpu"]  # where tiny_model is, for equal bytes and pixels
    coded = subprocess.run([*raq, "compress", "-", "-", "--codebook-size", "64", *model],
                           input=photo.read_bytes(), capture_output=True, check=True)
    assert coded.stdout == raqcodec.compress(photo, codebook_size=64, model=tiny_model)
    assert b"eK=64" in coded.stderr
    decoded = subprocess.run([*raq, "decompress", "-", "-", *model], input=coded.stdout, capture_output=True,
                             check=True)
    (tmp_path / "out.png").write_bytes(decoded.stdout)
    with Image.open(tmp_path / "out.png") as img:  # the numpy decoder: within one level of the torch decoder
        assert img.format == "PNG"
        piped = np.asarray(img, dtype=np.int16)
        assert np.abs(piped - np.asarray(raqcodec.decompress(coded.stdout, model=tiny_model))).max() <= 1
    bad = subprocess.run([*raq, "decompress", "-", "-", *model], input=b"not a raq file", capture_output=True)
    assert bad.returncode == 1 and bad.stdout == b"" and bad.stderr.decode().count("\n") == 1


def test_psnr_target_with_the_shipped_model(tmp_path):
    """The smallest file reaching the PSNR target, within 1 dB of it (the tiny test models are too erratic in
    PSNR against rate for that promise; the shipped one is not)."""
    import numpy as np

    import raqcodec
    from raqcodec.codec import analyse
    from raqcodec.metrics import psnr
    from raqcodec.ratecontrol import smallest_file

    photo = tmp_path / "photo.png"
    Image.fromarray(synthetic_image(96, 128, seed=2)).save(photo)
    pixels = np.asarray(Image.open(photo))

    def decoded_db(data: bytes) -> float:
        return psnr(pixels, np.asarray(raqcodec.decompress(data)))

    low = decoded_db(smallest_file(raqcodec.load_model(), analyse(raqcodec.load_model(), photo)).data)
    high = decoded_db(raqcodec.compress(photo, codebook_size="4096+4096"))
    for target in (round(low + 0.5 * (high - low), 2), round(low + 0.8 * (high - low), 2)):
        res = run("compress", photo, tmp_path / f"{target}.raq", "--psnr", target)
        assert res.exit_code == 0, res.output
        assert target <= decoded_db((tmp_path / f"{target}.raq").read_bytes()) <= target + 1
    res = run("compress", photo, tmp_path / "r.raq", "--psnr", round(high + 1, 2))
    assert res.exit_code == 1 and "out of reach" in res.output and not (tmp_path / "r.raq").exists()


def test_compare_picture(tiny_model, photo, tmp_path):
    out = tmp_path / "compare.png"
    res = run("compare", photo, "--bpp", 1.0, "--out", out, "--codecs", "jpeg,webp", "--model", tiny_model.path)
    assert res.exit_code == 0, res.output
    lines = [line for line in res.output.splitlines() if "bpp=" in line]
    assert [line.split(":")[0] for line in lines] == ["raqcodec", "jpeg", "webp"]
    assert float(lines[0].split("bpp=")[1].split()[0]) <= 1.0
    with Image.open(out) as img:
        assert img.format == "PNG" and img.width > 3 * img.height / 2
    res = run("compare", photo, "--bpp", 1.0, "--out", out, "--model", tiny_model.path)
    assert res.exit_code == 1 and "already exists" in res.output


def test_compare_matches_the_largest_quality_under_the_size():
    from raqcodec.compare import matched_pillow
    from raqcodec.rd import pillow_encode

    pixels = synthetic_image(96, 128, seed=3)
    sizes = {q: len(pillow_encode(pixels, "JPEG", q)) for q in (20, 60)}
    budget = (sizes[20] + sizes[60]) // 2
    data = matched_pillow(pixels, "JPEG", budget)
    assert len(data) <= budget
    quality = next(q for q in range(1, 96) if pillow_encode(pixels, "JPEG", q) == data)
    assert quality == 95 or len(pillow_encode(pixels, "JPEG", quality + 1)) > budget
    assert matched_pillow(pixels, "JPEG", 10) == pillow_encode(pixels, "JPEG", 1)  # nothing fits: the lowest


def test_a_reader_that_leaves_stops_the_command_quietly(tiny_model, photo, tmp_path, monkeypatch):
    """`raq info x.raq | head -1`: once the pipe's reader has gone, no error message, exit 1."""
    import click

    coded = tmp_path / "photo.raq"
    assert run("compress", photo, coded, "--codebook-size", "64", "--model", tiny_model.path).exit_code == 0
    echo = click.echo

    def closed_stdout(*args, **kwargs):
        if not kwargs.get("err"):
            raise BrokenPipeError(32, "Broken pipe")
        echo(*args, **kwargs)

    monkeypatch.setattr(click, "echo", closed_stdout)
    result = CliRunner().invoke(main, ["info", str(coded)])
    assert result.exit_code == 1 and result.stderr == "" and result.stdout == ""
