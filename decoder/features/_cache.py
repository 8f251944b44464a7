"""Content-addressed cache of per-subject features.

An entry's key is the SHA-256 of the *content* of its input files plus the
parameters that produced it, so renaming or touching a file does not
invalidate it while changing one byte or one parameter does.  Entries are
``.npz`` files written atomically: a crash leaves the previous state, and a
rerun finds every finished subject and skips it.

Hashing a 100 MB run costs ~0.1 s, so file digests are remembered in
``digests.json`` keyed by ``(path, size, mtime, inode)``; a file whose
``stat`` is unchanged is not read again.
"""

from __future__ import annotations

import io
import json
import logging
import os
import threading
import zipfile
from pathlib import Path

import numpy as np

from .._utils import atomic_write_bytes, atomic_write_json, sha256_file, stable_hash, to_json

__all__ = ["FeatureCache", "array_digest"]

log = logging.getLogger("decoder.cache")


def array_digest(arr) -> str:
    """SHA-256 of an array's dtype, shape and bytes (for in-memory inputs)."""
    import hashlib
    arr = np.ascontiguousarray(arr)
    h = hashlib.sha256(f"{arr.dtype.str}{arr.shape}".encode())
    h.update(arr.tobytes())
    return h.hexdigest()


class FeatureCache:
    """A folder of per-subject feature arrays keyed by content hash.

    Parameters
    ----------
    root : str or Path
        Cache folder (created on first write).
    namespace : str, default="features"
        Part of every key, so different feature kinds never collide.
    """

    def __init__(self, root, namespace: str = "features"):
        self.root = Path(root)
        self.namespace = namespace
        self._digests = None
        self._dirty = False
        self._lock = threading.Lock()

    # -- digests of inputs --------------------------------------------------
    @property
    def _digest_file(self) -> Path:
        return self.root / "digests.json"

    def _load_digests(self) -> dict:
        if self._digests is None:
            try:
                self._digests = json.loads(self._digest_file.read_text())
            except (OSError, ValueError):
                self._digests = {}
        return self._digests

    def file_digest(self, path) -> str:
        """SHA-256 of a file's bytes, reusing the remembered one if ``stat`` is unchanged."""
        path = Path(path).resolve()
        st = path.stat()
        stamp = [st.st_size, st.st_mtime_ns, st.st_ino]
        with self._lock:
            known = self._load_digests().get(str(path))
            if known and known[:3] == stamp:
                return known[3]
        digest = sha256_file(path)
        with self._lock:
            self._load_digests()[str(path)] = stamp + [digest]
            self._dirty = True
        return digest

    def save_digests(self) -> None:
        """Persist remembered file digests (atomically); cheap when nothing changed."""
        with self._lock:
            if self._dirty:
                atomic_write_json(self._digest_file, self._digests, indent=None)
                self._dirty = False

    def input_digest(self, obj) -> str:
        """Digest of one input: a file path, an array, or a JSON-able value."""
        if isinstance(obj, (str, os.PathLike)) and Path(obj).is_file():
            return self.file_digest(obj)
        if hasattr(obj, "to_numpy"):  # pandas objects
            obj = obj.to_numpy()
        if isinstance(obj, np.ndarray):
            return array_digest(obj)
        return stable_hash(obj)

    # -- entries ----------------------------------------------------------
    def key(self, inputs, params) -> str:
        """Key of the result of ``params`` applied to ``inputs`` (content-hashed).

        Parameters
        ----------
        inputs : sequence
            Files (hashed by content), arrays or JSON-able values.
        params : mapping
            Everything else the result depends on (JSON-able).
        """
        return stable_hash({"namespace": self.namespace,
                            "inputs": [self.input_digest(x) for x in inputs],
                            "params": params})

    def path(self, key: str) -> Path:
        """File of an entry."""
        return self.root / key[:2] / f"{key}.npz"

    def __contains__(self, key: str) -> bool:
        return self.path(key).is_file()

    def get(self, key: str):
        """Return ``(arrays, meta)`` for a finished entry, or None.

        A damaged entry (e.g. a disk that filled up) counts as missing and is
        recomputed; it is replaced atomically by the next :meth:`put`.
        """
        path = self.path(key)
        if not path.is_file():
            return None
        try:
            with np.load(path, allow_pickle=False) as npz:
                arrays = {k: npz[k] for k in npz.files if k != "__meta__"}
                meta = json.loads(str(npz["__meta__"])) if "__meta__" in npz.files else {}
        except (OSError, ValueError, KeyError, EOFError, zipfile.BadZipFile) as exc:
            log.warning("ignoring unreadable cache entry %s (%s)", path, exc)
            return None
        return arrays, meta

    def put(self, key: str, arrays: dict, meta=None) -> Path:
        """Write an entry atomically and return its path.

        Parameters
        ----------
        key : str
            From :meth:`key`.
        arrays : dict of str to ndarray
            The results (names must not start with ``__``).
        meta : mapping, optional
            JSON-able description stored with them.
        """
        buf = io.BytesIO()
        np.savez(buf, __meta__=np.array(to_json(meta or {})), **arrays)
        path = self.path(key)
        atomic_write_bytes(path, buf.getvalue())
        return path
