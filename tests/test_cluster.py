"""`raq compress DIR OUT --dask local:2`: the same files as `raq compress DIR OUT`, and a resumable job."""
from __future__ import annotations

import pytest
from click.testing import CliRunner
from conftest import synthetic_image
from PIL import Image

from raqcodec.cli import main

pytest.importorskip("distributed")


def run(*args):
    return CliRunner().invoke(main, [str(a) for a in args])


def test_dask_cluster_writes_the_local_files_and_resumes(tiny_model, tmp_path):
    source = tmp_path / "images"
    source.mkdir()
    for i in range(8):
        Image.fromarray(synthetic_image(40 + 4 * i, 56, seed=i)).save(source / f"img{i}.png")
    local, remote = tmp_path / "local", tmp_path / "dask"
    res = run("compress", source, local, "--bpp", 1.0, "--model", tiny_model.path)
    assert res.exit_code == 0, res.output
    res = run("compress", source, remote, "--bpp", 1.0, "--model", tiny_model.path, "--dask", "local:2")
    assert res.exit_code == 0, res.output
    names = sorted(p.name for p in local.iterdir())
    assert len(names) == 8 and names == sorted(p.name for p in remote.iterdir())
    assert all((local / n).read_bytes() == (remote / n).read_bytes() for n in names)

    for name in names[:3]:  # an interrupted job: three outputs missing
        (remote / name).unlink()
    res = run("compress", source, remote, "--bpp", 1.0, "--model", tiny_model.path, "--dask", "local:2")
    assert res.exit_code == 0, res.output
    assert "3 to compress, 5 already done" in res.output
    assert all((local / n).read_bytes() == (remote / n).read_bytes() for n in names)
    assert not list(remote.glob(".*.tmp"))


def test_bad_dask_address_is_a_one_line_error(tiny_model, tmp_path):
    source = tmp_path / "images"
    source.mkdir()
    Image.fromarray(synthetic_image(40, 56)).save(source / "a.png")
    res = run("compress", source, tmp_path / "out", "--bpp", 1.0, "--model", tiny_model.path, "--dask", "local:x")
    assert res.exit_code == 1 and "local:N" in res.output
