"""Shared fixtures: the embedded sample, the real shared data, CLI runner."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def shared_data() -> Path | None:
    """The real-data folder given by DECODER_SHARED_DATA, or None."""
    p = os.environ.get("DECODER_SHARED_DATA")
    return Path(p) if p and Path(p).is_dir() else None


@pytest.fixture
def shared():
    p = shared_data()
    if p is None:
        pytest.skip("real data absent: set DECODER_SHARED_DATA to the shared data folder")
    return p


@pytest.fixture
def sample_copy(tmp_path):
    """A writable copy of the embedded Haxby BIDS sample."""
    from decoder.data.samples import sample_path
    dst = tmp_path / "haxby"
    shutil.copytree(sample_path(), dst)
    return dst


def run_cli(*args, cwd=None, timeout=600):
    """Run the ``decoder`` command in a subprocess; returns CompletedProcess."""
    return subprocess.run([sys.executable, "-m", "decoder.cli", *map(str, args)],
                          capture_output=True, text=True, cwd=cwd or ROOT, timeout=timeout)


@pytest.fixture
def cli():
    return run_cli
