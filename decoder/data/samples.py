"""The real data shipped inside the package, found through importlib.resources."""

from __future__ import annotations

from importlib import resources
from pathlib import Path

SAMPLES = {
    "haxby2001-sub1-slice": "haxby2001_sub1_slice",
}


def sample_path(name: str = "haxby2001-sub1-slice") -> Path:
    """Folder of an embedded sample dataset (a BIDS tree)."""
    from ..errors import DataError
    if name not in SAMPLES:
        raise DataError(f"unknown embedded sample '{name}'", f"use one of: {', '.join(SAMPLES)}")
    root = resources.files("decoder.data") / "_sample" / SAMPLES[name]
    path = Path(str(root))
    if not path.is_dir():
        raise DataError(f"embedded sample missing at {path}", "reinstall the package")
    return path
