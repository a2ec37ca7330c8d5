"""allocator.keep_freed_memory: glibc's setting takes effect, and the `raq` command sets it before any work."""
from __future__ import annotations

import platform
import sys

import torch

from raqcodec import cli
from raqcodec.allocator import keep_freed_memory


def test_keep_freed_memory_takes_effect_on_glibc_and_repeats():
    expected = sys.platform.startswith("linux") and platform.libc_ver()[0] == "glibc"
    assert keep_freed_memory() is expected
    assert keep_freed_memory() is expected
    block = torch.arange(10_000_000, dtype=torch.float32)  # 40 MB: over glibc's largest mmap threshold
    assert float(block[-1]) == 9_999_999.0


def test_raq_command_keeps_freed_memory_before_running(monkeypatch):
    calls = []
    monkeypatch.setattr(cli, "keep_freed_memory", lambda: calls.append("keep"))
    monkeypatch.setattr(cli, "main", lambda: calls.append("main"))
    monkeypatch.setattr(cli.atexit, "_run_exitfuncs", lambda: None)  # pytest's own handlers must not run here
    monkeypatch.setattr(cli.os, "_exit", calls.append)
    cli.run()
    assert calls == ["keep", "main", 0]
