"""Shared fixtures: the embedded sample, the real shared data, CLI runner."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
# caches that outlive a run go here, not into the home folder of whoever runs the tests
os.environ["DECODER_CACHE_DIR"] = tempfile.mkdtemp(prefix="decoder-test-cache-")


def shared_data() -> Path | None:
    """The real-data folder given by DECODER_SHARED_DATA, or None."""
    p = os.environ.get("DECODER_SHARED_DATA")
    return Path(p) if p and Path(p).is_dir() else None


needs_shared = pytest.mark.skipif(shared_data() is None,
                                  reason="DECODER_SHARED_DATA is not set (real data absent)")


def skip_without_datalad():
    """Skip the calling test module unless DataLad and git-annex (this interpreter's) exist."""
    pytest.importorskip("datalad.api", reason="DataLad is not installed")
    if shutil.which("git-annex", path=os.pathsep.join([str(Path(sys.executable).parent),
                                                         os.environ.get("PATH", "")])) is None:
        pytest.skip("git-annex is not installed", allow_module_level=True)


@pytest.fixture(autouse=True)
def _fresh_once_only_warnings():
    """ComBat says each warning once per process; each test is a process of its own here."""
    from decoder.features import harmonize
    harmonize._WARNED.clear()


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


@pytest.fixture(scope="module")
def git_identity():
    """CI has no global git config: every commit needs an identity from the environment.

    Also puts this interpreter's bin folder (git-annex, datalad) first on PATH.
    """
    with pytest.MonkeyPatch.context() as mp:
        for k, v in {"GIT_AUTHOR_NAME": "Decoder Test", "GIT_AUTHOR_EMAIL": "test@example.org",
                     "GIT_COMMITTER_NAME": "Decoder Test",
                     "GIT_COMMITTER_EMAIL": "test@example.org"}.items():
            mp.setenv(k, v)
        mp.setenv("PATH", str(Path(sys.executable).parent) + os.pathsep + os.environ["PATH"])
        yield


def git(*args, cwd) -> str:
    """Run git in ``cwd`` and return its standard output (raises on failure)."""
    return subprocess.run(["git", *args], cwd=cwd, capture_output=True, text=True,
                          check=True).stdout


def run_cli(*args, cwd=None, timeout=600):
    """Run the ``decoder`` command in a subprocess; returns CompletedProcess."""
    return subprocess.run([sys.executable, "-m", "decoder.cli", *map(str, args)],
                          capture_output=True, text=True, cwd=cwd or ROOT, timeout=timeout,
                          check=False)


@pytest.fixture
def cli():
    return run_cli
