"""allocator: glibc's setting takes effect, large images are coded with glibc's default, and the `raq` command
sets it before any work."""
from __future__ import annotations

import platform
import sys

import torch

from raqcodec import allocator, cli
from raqcodec.allocator import image_memory, keep_freed_memory

ON_GLIBC = sys.platform.startswith("linux") and platform.libc_ver()[0] == "glibc"


def test_keep_freed_memory_takes_effect_on_glibc_and_repeats():
    assert keep_freed_memory() is ON_GLIBC
    assert keep_freed_memory() is ON_GLIBC
    block = torch.arange(10_000_000, dtype=torch.float32)  # 40 MB: over glibc's largest mmap threshold
    assert float(block[-1]) == 9_999_999.0


def test_large_images_are_coded_with_the_default_setting_and_it_comes_back(monkeypatch):
    settings = []
    monkeypatch.setattr(allocator, "_set", lambda mmap_max, trim: settings.append((mmap_max, trim)) or True)
    monkeypatch.setattr(allocator, "_kept", True)
    with image_memory(allocator.LARGE_IMAGE_PIXELS):  # not more than the limit: nothing changes
        pass
    assert settings == []
    try:
        with image_memory(allocator.LARGE_IMAGE_PIXELS + 1):
            assert settings == [(allocator._DEFAULT_MMAP_MAX, allocator._DEFAULT_TRIM_THRESHOLD)]
            raise KeyError("a failure inside")
    except KeyError:
        pass
    assert settings[1:] == [(0, allocator.KEPT_BYTES)]
    monkeypatch.setattr(allocator, "_kept", False)  # a process that did not ask: never touched
    with image_memory(10 ** 9):
        pass
    assert len(settings) == 2


def test_raq_command_keeps_freed_memory_before_running(monkeypatch):
    calls = []
    monkeypatch.setattr(cli, "keep_freed_memory", lambda: calls.append("keep"))
    monkeypatch.setattr(cli, "main", lambda: calls.append("main"))
    monkeypatch.setattr(cli.atexit, "_run_exitfuncs", lambda: None)  # pytest's own handlers must not run here
    monkeypatch.setattr(cli.os, "_exit", calls.append)
    cli.run()
    assert calls == ["keep", "main", 0]
