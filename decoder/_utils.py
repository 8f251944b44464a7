"""Small private helpers: atomic writes, hashing, JSON encoding."""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
from pathlib import Path

import numpy as np


def sha256_file(path, chunk_size: int = 1 << 20) -> str:
    """Return the hex SHA-256 digest of a file's bytes."""
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(chunk_size), b""):
            h.update(block)
    return h.hexdigest()


def _json_default(obj):
    if isinstance(obj, np.integer):
        return int(obj)
    if isinstance(obj, np.floating):
        return None if not np.isfinite(obj) else float(obj)
    if isinstance(obj, np.ndarray):
        return obj.tolist()
    if isinstance(obj, Path):
        return str(obj)
    if isinstance(obj, (set, tuple)):
        return list(obj)
    raise TypeError(f"not JSON serialisable: {type(obj).__name__}")


def _sanitize(obj):
    """Replace non-finite floats by None so the JSON stays standard."""
    if isinstance(obj, float):
        return obj if np.isfinite(obj) else None
    if isinstance(obj, dict):
        return {str(k): _sanitize(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_sanitize(v) for v in obj]
    if isinstance(obj, np.ndarray):
        return _sanitize(obj.tolist())
    if isinstance(obj, np.floating):
        return _sanitize(float(obj))
    if isinstance(obj, np.integer):
        return int(obj)
    return obj


def to_json(obj, **kwargs) -> str:
    """Serialise ``obj`` to standard JSON (NaN/inf become null)."""
    return json.dumps(_sanitize(obj), default=_json_default, **kwargs)


def user_cache_dir() -> Path:
    """The folder for caches that outlive a run: ``$DECODER_CACHE_DIR``, else
    ``$XDG_CACHE_HOME/decoder``, else ``~/.cache/decoder``.

    Caches never go inside an input dataset: it may be read-only, shared, or a
    DataLad dataset whose status must stay clean.  Their keys hold the content hash
    of what they were computed from, so one folder serves every dataset.
    """
    explicit = os.environ.get("DECODER_CACHE_DIR")
    if explicit:
        return Path(explicit).expanduser()
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base).expanduser() / "decoder"


def atomic_write_bytes(path, data: bytes) -> None:
    """Write ``data`` to ``path`` atomically (temp file in the same folder + rename).

    A crash or an error never leaves a half-written file, and an earlier
    version of ``path`` stays intact until the new one is complete.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.chmod(tmp, 0o666 & ~_umask())  # mkstemp makes 0600; results are for sharing
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        raise


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def atomic_write_text(path, text: str) -> None:
    """Write text atomically, UTF-8 encoded."""
    atomic_write_bytes(path, text.encode("utf-8"))


def atomic_write_json(path, obj, indent: int = 2) -> None:
    """Write ``obj`` as indented standard JSON, atomically."""
    atomic_write_text(path, to_json(obj, indent=indent) + "\n")


def stable_hash(obj) -> str:
    """SHA-256 of the canonical JSON form of ``obj`` (sorted keys)."""
    return hashlib.sha256(to_json(obj, sort_keys=True).encode()).hexdigest()


def absolute_path(path) -> Path:
    """``path`` made absolute with ``..`` and ``.`` removed (symlinks are kept, as
    DataLad and git-annex need the path as it is laid out): ``../data`` and
    ``/x/y/../data`` name one file for DataLad as for the file system."""
    return Path(os.path.abspath(Path(path).expanduser()))


def table_read_problem(exc) -> str:
    """What pandas' failure to read a table means, in words (for a one-line error)."""
    import re

    import pandas as pd
    if isinstance(exc, pd.errors.EmptyDataError):
        return "the file is empty"
    if isinstance(exc, UnicodeDecodeError):
        return "not UTF-8 text (save it as UTF-8 CSV or TSV)"
    m = re.search(r"Expected (\d+) fields in line (\d+), saw (\d+)", str(exc))
    if m:
        return f"line {m.group(2)} has {m.group(3)} fields, the rows before it {m.group(1)}"
    return f"not a readable table ({type(exc).__name__})"


def table_file_problem(path) -> tuple[str, str] | None:
    """Why a file meant as a CSV/TSV table is not one, from its first bytes: ``(what it
    is, what to do)``, or None when it looks like text.  A spreadsheet saved in its own
    format or in UTF-16 (what Excel's "Unicode text" writes) is named as such."""
    try:
        with open(path, "rb") as fh:
            head = fh.read(4096)
    except OSError:
        return None
    save = "save it from the spreadsheet as CSV or tab-separated text, UTF-8"
    if head.startswith(b"PK\x03\x04"):
        return "an Excel workbook (.xlsx), not a text table", save
    if head.startswith(b"\xd0\xcf\x11\xe0"):
        return "an Excel 97–2003 workbook (.xls), not a text table", save
    if head.startswith((b"\xff\xfe", b"\xfe\xff")):
        return "UTF-16 text", save
    try:
        head.decode("utf-8")
    except UnicodeDecodeError as exc:
        if exc.start < len(head) - 4:  # (not a character cut at the end of the sample)
            return f"not UTF-8 text (byte {exc.start})", save
    return None
