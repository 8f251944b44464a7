"""Inputs from DataLad datasets: get only what a pipeline reads, record where it came from.

A pipeline that reads files under a data root calls this module so that the
same code works on a plain folder, on a fully downloaded dataset and on a
fresh ``datalad clone`` whose annexed content is still remote::

    from decoder.data.datalad import DataladInputs

    with DataladInputs(root) as dl:
        dl.get(paths)                    # no-op unless root is a DataLad dataset
        dataset = dl.provenance(paths)   # -> build_provenance(..., dataset=dataset)

or, in one call, ``dataset = ensure_local(root, paths)``.

* ``get`` fetches exactly the listed files (never a whole dataset) and only
  those whose content is not already present, so it is cheap to call on
  every run.  When content cannot be fetched it raises a one-line
  :class:`~decoder.errors.DataError` naming the file and the URL tried, and
  the dataset is left as it was: ``git status`` is clean and no partial
  download is left behind.
* ``provenance`` returns the dict that goes into ``metrics.json`` under
  ``provenance.dataset``: the DataLad dataset id, the commit checked out,
  and for every input file its git-annex key (content checksum) or, for a
  file stored in git, its blob id.

Paths may be absolute or relative to ``root``.  ``root`` may be the top of a
dataset or a folder inside one.  Files of nested subdatasets are fetched
(``datalad get`` installs the subdataset) but their provenance is recorded
only by the key found in the top-level dataset's tree, i.e. ``None``.

The DataLad Python API is imported lazily: nothing here costs anything,
and DataLad need not be installed, when the data root is a plain folder.
"""

from __future__ import annotations

import contextlib
import logging
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

from .._utils import absolute_path
from ..errors import DataError

__all__ = ["DataladInputs", "ensure_local", "is_datalad_dataset", "dataset_root",
           "annex_key_size", "datalad_run"]

log = logging.getLogger("decoder.data")

_KEY_SIZE = re.compile(r"-s(\d+)(?:-|--)")


# ---------------------------------------------------------------------------
# git helpers (plain git: fast, and works before git-annex is initialised)
# ---------------------------------------------------------------------------

def _git(args, cwd, check=True, input=None) -> str:
    """Run ``git`` in ``cwd`` and return its stdout (text)."""
    try:
        proc = subprocess.run(["git", *args], cwd=str(cwd), capture_output=True,
                              input=input, text=True, check=False)
    except FileNotFoundError:  # pragma: no cover - git missing entirely
        raise DataError("the 'git' program was not found",
                        "install git (and git-annex) to use DataLad datasets") from None
    if check and proc.returncode != 0:
        msg = " ".join(proc.stderr.split())[:300]
        raise DataError(f"git {' '.join(args[:2])} failed in {cwd}: {msg}",
                        "check that the folder is an intact git/DataLad dataset")
    return proc.stdout


def dataset_root(path) -> Path | None:
    """The top folder of the DataLad/git-annex dataset containing ``path``, or ``None``.

    A plain git repository (no ``.datalad/config`` and no ``git-annex``
    branch) is not a DataLad dataset: ``None``.
    """
    p = Path(path)
    if not p.exists():
        return None
    if p.is_file():
        p = p.parent
    try:
        proc = subprocess.run(["git", "rev-parse", "--show-toplevel"], cwd=str(p),
                              capture_output=True, text=True, check=False)
    except FileNotFoundError:
        return None
    if proc.returncode != 0:
        return None
    top = Path(proc.stdout.strip())
    if _dataset_id(top) is not None:
        return top
    for ref in ("refs/heads/git-annex", "refs/remotes/origin/git-annex"):
        if subprocess.run(["git", "rev-parse", "--verify", "-q", ref], cwd=str(top),
                          capture_output=True, check=False).returncode == 0:
            return top
    return None


def is_datalad_dataset(path) -> bool:
    """Whether ``path`` lies in a DataLad (or git-annex) dataset."""
    return dataset_root(path) is not None


def _dataset_id(top: Path) -> str | None:
    cfg = Path(top) / ".datalad" / "config"
    if not cfg.is_file():
        return None
    proc = subprocess.run(["git", "config", "-f", str(cfg), "--get", "datalad.dataset.id"],
                          capture_output=True, text=True, check=False)
    return proc.stdout.strip() or None


def annex_key_size(key: str | None) -> int | None:
    """File size in bytes encoded in a git-annex key (``...-s1234--...``), if any."""
    if not key:
        return None
    m = _KEY_SIZE.search(key)
    return int(m.group(1)) if m else None


def _tree_entries(top: Path, rels: list[str], rev: str = "HEAD") -> dict:
    """``{rel: (mode, blob_sha)}`` for paths in the tree of ``rev``."""
    out = {}
    if not rels:
        return out
    # ls-tree takes paths relative to the current folder; run at the top.
    text = _git(["ls-tree", "-z", "--full-tree", rev, "--", *rels], top, check=False)
    for entry in text.split("\0"):
        if not entry:
            continue
        meta, _, name = entry.partition("\t")
        mode, _type, sha = meta.split()
        out[name] = (mode, sha)
    return out


def _keys_from_blobs(top: Path, entries: dict) -> dict:
    """Annex keys of tree entries: symlink targets or pointer files (unlocked)."""
    keys = {}
    want = [(rel, sha) for rel, (mode, sha) in entries.items() if mode in ("120000", "100644",
                                                                          "100755")]
    if not want:
        return keys
    proc = subprocess.run(["git", "cat-file", "--batch-check"], cwd=str(top),
                          input="\n".join(sha for _, sha in want) + "\n",
                          capture_output=True, text=True, check=False)
    small = []
    for (rel, sha), line in zip(want, proc.stdout.splitlines()):
        parts = line.split()
        if len(parts) == 3 and int(parts[2]) < 1024:
            small.append((rel, sha))
    if not small:
        return keys
    # one `git cat-file --batch` for all small blobs: "<sha> <type> <size>\n<content>\n"
    proc = subprocess.run(["git", "cat-file", "--batch"], cwd=str(top),
                          input=("\n".join(sha for _, sha in small) + "\n").encode(),
                          capture_output=True, check=False)
    out, pos = proc.stdout, 0
    for rel, _sha in small:
        end = out.find(b"\n", pos)
        if end < 0:
            break
        header = out[pos:end].split()
        if len(header) != 3:  # "<sha> missing"
            pos = end + 1
            continue
        size = int(header[2])
        blob = out[end + 1:end + 1 + size].decode("utf-8", errors="replace").strip()
        pos = end + 1 + size + 1
        if "annex/objects/" in blob and "\n" not in blob:
            keys[rel] = blob.rsplit("/", 1)[-1]
    return keys


def _has_content(path: Path) -> bool:
    """Whether a file's content is present locally (not a dangling annex link/pointer)."""
    if path.is_symlink():
        return path.exists()
    if not path.is_file():
        return False
    if path.stat().st_size < 1024:
        with open(path, "rb") as fh:
            head = fh.read(1024)
        if head.startswith(b"/annex/objects/") and b"\n" not in head.rstrip(b"\n"):
            return False
    return True


class _Captured:
    """Text written to file descriptor 2 while :func:`_capture_stderr` was active."""

    def __init__(self):
        self.value = ""

    def text(self) -> str:
        return self.value


@contextlib.contextmanager
def _capture_stderr():
    """Redirect file descriptor 2 (this process and its children) to a temporary file.

    ``datalad run`` lets the recorded command write to the terminal; capturing
    it lets the CLI report the command's own one-line error, once.
    """
    import tempfile
    sys.stderr.flush()
    cap = _Captured()
    with tempfile.TemporaryFile() as tmp:
        saved = os.dup(2)
        os.dup2(tmp.fileno(), 2)
        try:
            yield cap
        finally:
            sys.stderr.flush()
            os.dup2(saved, 2)
            os.close(saved)
            tmp.seek(0)
            cap.value = tmp.read().decode("utf-8", errors="replace")


@contextlib.contextmanager
def _quiet_datalad():
    """Keep DataLad's own log lines off the terminal (errors are re-raised as one line)."""
    logger = logging.getLogger("datalad")
    level = logger.level
    logger.setLevel(logging.CRITICAL)
    try:
        yield
    finally:
        logger.setLevel(level)


def _import_datalad():
    try:
        import datalad.api as dl
    except ImportError:
        raise DataError("the data root is a DataLad dataset but DataLad is not installed",
                        "pip install -e '.[datalad]' (DataLad and git-annex)") from None
    _find_git_annex()
    return dl


def _find_git_annex() -> None:
    """Make the git-annex installed beside this interpreter (PyPI's ``git-annex``, in a
    virtual environment that is not activated) visible to DataLad, or stop in one line
    before anything is created: without it a clone is left half made."""
    here = str(Path(sys.executable).parent)
    if shutil.which("git-annex") is None and shutil.which("git-annex", path=here):
        os.environ["PATH"] = here + os.pathsep + os.environ.get("PATH", "")
    if shutil.which("git-annex") is None:
        raise DataError("git-annex is not installed (DataLad needs it to get files)",
                        "pip install git-annex in this environment, or install it with your "
                        "package manager")


def _short_reason(text: str | None) -> str:
    """The informative part of a git-annex/DataLad error message, on one line."""
    if not text:
        return "not available from any known source"
    lines = [ln.strip() for ln in str(text).splitlines() if ln.strip()]
    last = lines[-1] if lines else str(text)
    if "getAddrInfo" in last or "Name or service not known" in last:
        host = re.search(r'host name: "([^"]+)"', last)
        return f"cannot resolve host {host.group(1) if host else ''} (offline?)".replace(
            "host  ", "host ")
    if "Connection refused" in last:
        return "connection refused"
    return last[:200]


# ---------------------------------------------------------------------------
# the public API
# ---------------------------------------------------------------------------

class DataladInputs:
    """Context manager giving a pipeline the files it needs from a data root.

    Parameters
    ----------
    root : path
        The data root given to the pipeline (``--data``): a plain folder, a
        DataLad dataset, or a folder inside one.
    drop_fetched : bool, default False
        On exit, drop the annexed content that *this object* fetched (files
        already present before are never dropped), restoring the disk usage
        of a fresh clone.
    jobs : int, default 1
        Parallel downloads for ``get``.

    Attributes
    ----------
    root : Path
    top : Path or None
        Top folder of the dataset holding ``root`` (``None`` for a plain folder).
    is_datalad : bool
    fetched : list of Path
        Files whose content was downloaded by this object.

    Examples
    --------
    >>> with DataladInputs("data/ds000105") as dl:            # doctest: +SKIP
    ...     files = dl.get(["sub-1/func/sub-1_task-objectviewing_run-01_bold.nii.gz"])
    ...     dataset = dl.provenance(files)
    """

    def __init__(self, root, drop_fetched: bool = False, jobs: int = 1):
        self.root = absolute_path(root)
        self.drop_fetched = bool(drop_fetched)
        self.jobs = max(1, int(jobs or 1))
        self.top = dataset_root(self.root)
        self.is_datalad = self.top is not None
        self.fetched: list[Path] = []

    # -- context manager ---------------------------------------------------
    def __enter__(self) -> "DataladInputs":
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if self.drop_fetched and self.fetched:
            self.drop(self.fetched)
        return None

    # -- paths -------------------------------------------------------------
    def _abs(self, path) -> Path:
        p = Path(path).expanduser()
        return absolute_path(p if p.is_absolute() else self.root / p)

    def _rel_top(self, path: Path) -> str:
        """Path relative to the dataset top (without resolving annex symlinks)."""
        p = Path(os.path.abspath(path))
        top = Path(os.path.abspath(self.top))
        try:
            return p.relative_to(top).as_posix()
        except ValueError:
            # the root may be given through a symlinked folder
            return Path(os.path.realpath(p.parent), p.name).relative_to(
                os.path.realpath(top)).as_posix()

    def _rel_root(self, path: Path) -> str:
        p = Path(os.path.abspath(path))
        try:
            return p.relative_to(Path(os.path.abspath(self.root))).as_posix()
        except ValueError:
            return str(p)

    # -- fetching ----------------------------------------------------------
    def missing(self, paths) -> list[Path]:
        """The listed files whose content is not present locally."""
        return [p for p in (self._abs(x) for x in paths) if not _has_content(p)]

    def content_summary(self, paths) -> dict:
        """What getting ``paths`` would take, without getting or reading anything.

        Parameters
        ----------
        paths : iterable of path
            Files (absolute, or relative to ``root``).

        Returns
        -------
        dict
            ``n_files``; ``present`` and ``bytes_present``: the files whose content is
            here and their size; ``to_get``: the files (relative to ``root``) that a
            DataLad dataset holds without their content, and ``bytes_to_get``, their
            size from the git-annex keys (``None`` when a key does not record it);
            ``absent``: files that are neither here nor in a dataset.
        """
        files = [self._abs(p) for p in paths]
        present = [p for p in files if _has_content(p)]
        lacking = [p for p in files if not _has_content(p)]
        keys = {}
        if self.is_datalad and lacking:
            rels = [self._rel_top(p) for p in lacking]
            found = self._keys(rels)
            keys = {p: found.get(rel) for p, rel in zip(lacking, rels)}
        to_get = [p for p in lacking if keys.get(p)]
        sizes = [annex_key_size(keys[p]) for p in to_get]
        return {"n_files": len(files), "present": len(present),
                "bytes_present": sum(p.stat().st_size for p in present),
                "to_get": [self._rel_root(p) for p in to_get],
                "bytes_to_get": None if any(s is None for s in sizes) else sum(sizes),
                "absent": [self._rel_root(p) for p in lacking if not keys.get(p)]}

    def get(self, paths, progress=None) -> list[Path]:
        """Make the content of ``paths`` present locally; return their absolute paths.

        Only files whose content is absent are fetched, so calling this again
        is free.  On a plain folder this only checks that the files exist.

        Parameters
        ----------
        paths : iterable of path
            Files (absolute, or relative to ``root``).
        progress : callable, optional
            Called as ``progress(done, total, path)`` after each file fetched.

        Returns
        -------
        list of Path

        Raises
        ------
        DataError
            A file is not in the dataset, or its content could not be
            fetched (message names the file and the URL tried).  Nothing
            half-downloaded is left in the dataset.
        """
        files = [self._abs(p) for p in paths]
        absent = [p for p in files if not p.is_symlink() and not p.exists()]
        if absent:
            rel = self._rel_root(absent[0])
            where = f"dataset {self.top}" if self.is_datalad else f"folder {self.root}"
            more = f" (and {len(absent) - 1} more)" if len(absent) > 1 else ""
            raise DataError(f"input file {rel}{more} not found in {where}",
                            "check --data points at the dataset root and the subject/run "
                            "names in the config")
        if not self.is_datalad:
            return files
        todo = [p for p in files if not _has_content(p)]
        if not todo:
            return files
        dl = _import_datalad()
        errors = []
        done = 0
        # the first file alone: when the source is unreachable, fail after one
        # attempt instead of one timeout per file
        batches = [todo[:1], todo[1:]] if len(todo) > 1 else [todo]
        with _quiet_datalad():
            for batch in batches:
                if errors or not batch:
                    break
                results = dl.get(path=[str(p) for p in batch], dataset=str(self.top),
                                 jobs=self.jobs, on_failure="ignore",
                                 result_renderer="disabled", return_type="generator")
                for res in results:
                    if res.get("action") != "get" or res.get("type") not in (None, "file"):
                        continue
                    status = res.get("status")
                    if status in ("ok", "notneeded"):
                        if status == "ok" and res.get("path"):
                            self.fetched.append(Path(res["path"]))
                        if progress is not None:
                            done += 1
                            progress(done, len(todo), Path(res.get("path") or ""))
                    else:
                        errors.append(res)
        still = [p for p in todo if not _has_content(p)]
        if errors or still:
            order = {os.path.abspath(p): i for i, p in enumerate(todo)}
            errors.sort(key=lambda r: order.get(os.path.abspath(r.get("path") or ""), 1 << 30))
            self._clean_partial(still)
            bad = Path(errors[0]["path"]) if errors and errors[0].get("path") else still[0]
            reason = _short_reason((errors[0].get("error_message") or errors[0].get("message"))
                                   if errors else None)
            url = self._urls_tried(bad)
            n = len(set(map(os.path.abspath, still)) | {os.path.abspath(bad)})
            more = f" ({n - 1} more files not fetched)" if n > 1 else ""
            raise DataError(
                f"cannot fetch {self._rel_root(bad)} from {url}: {reason}{more}",
                "check the network connection or the dataset's sibling, or fetch the files "
                f"first with 'datalad get' in {self.top}")
        return files

    def _urls_tried(self, path: Path) -> str:
        """The URLs git-annex knows for a file, or the URLs of the remotes holding it."""
        import json
        try:
            rel = self._rel_top(path)
            text = _git(["annex", "whereis", "--json", "--", rel], self.top, check=False)
            info = json.loads(text.splitlines()[0]) if text.strip() else {}
        except (ValueError, DataError, IndexError):
            info = {}
        urls = []
        uuids = []
        for loc in info.get("whereis", []) or []:
            urls.extend(loc.get("urls") or [])
            uuids.append(loc.get("uuid"))
        if not urls:
            remotes = _git(["remote"], self.top, check=False).split()
            for name in remotes:
                u = _git(["config", "--get", f"remote.{name}.url"], self.top, check=False).strip()
                ru = _git(["config", "--get", f"remote.{name}.annex-uuid"], self.top,
                          check=False).strip()
                if u and (not uuids or ru in uuids or not ru):
                    urls.append(u)
        if not urls:
            return "no known source (no remote holds this content)"
        return urls[0] if len(urls) == 1 else f"{urls[0]} (and {len(urls) - 1} other sources)"

    def _clean_partial(self, paths) -> None:
        """Remove git-annex's partial downloads of ``paths`` so nothing half-written remains."""
        keys = self._keys([self._rel_top(p) for p in paths])
        git_dir = _git(["rev-parse", "--absolute-git-dir"], self.top, check=False).strip()
        if not git_dir:
            return
        tmp = Path(git_dir) / "annex" / "tmp"
        for key in keys.values():
            if key:
                for stale in (tmp / key,):
                    with contextlib.suppress(OSError):
                        stale.unlink()

    def drop(self, paths) -> None:
        """Drop the local content of ``paths`` (kept safe: only if available elsewhere)."""
        if not self.is_datalad or not paths:
            return
        dl = _import_datalad()
        with _quiet_datalad():
            res = dl.drop(path=[str(p) for p in paths], dataset=str(self.top),
                          on_failure="ignore", result_renderer="disabled", return_type="list")
        dropped = {Path(r["path"]) for r in res if r.get("status") in ("ok", "notneeded")
                   and r.get("path")}
        self.fetched = [p for p in self.fetched if p not in dropped]
        failed = [r for r in res if r.get("status") not in ("ok", "notneeded")]
        if failed:
            log.warning("kept %d fetched files: their content could not be verified "
                        "elsewhere", len(failed))

    # -- provenance ----------------------------------------------------------
    def _keys(self, rels: list[str]) -> dict:
        entries = _tree_entries(self.top, rels)
        keys = _keys_from_blobs(self.top, entries)
        return {rel: keys.get(rel) for rel in rels}

    def provenance(self, paths) -> dict:
        """The dataset block of ``metrics.json`` for input ``paths``.

        Parameters
        ----------
        paths : iterable of path
            Input files (absolute, or relative to ``root``).

        Returns
        -------
        dict
            ``is_datalad`` (bool), ``dataset_id`` (DataLad id or ``None``),
            ``commit`` (the checked-out commit or ``None``), ``path_in_dataset``
            (``root`` relative to the dataset top), and ``files``: a mapping
            from each path relative to ``root`` to ``{"annex_key": ...,
            "git_blob": ...}`` -- the git-annex key for annexed files (it
            contains the checksum), else the git blob id of a file stored in
            git; both ``None`` for a file not committed in the dataset.
            For a plain folder: ``is_datalad`` false, the ids ``None`` and
            ``files`` empty (``provenance.inputs`` carries the sha256).
        """
        if not self.is_datalad:
            return {"is_datalad": False, "dataset_id": None, "commit": None, "files": {}}
        files = [self._abs(p) for p in paths]
        rels = [self._rel_top(p) for p in files]
        entries = _tree_entries(self.top, rels)
        keys = _keys_from_blobs(self.top, entries)
        commit = _git(["rev-parse", "HEAD"], self.top, check=False).strip() or None
        records = {}
        for p, rel in sorted(zip(files, rels), key=lambda t: t[1]):
            key = keys.get(rel)
            blob = entries.get(rel, (None, None))[1] if key is None else None
            records[self._rel_root(p)] = {"annex_key": key, "git_blob": blob}
        try:
            sub = Path(os.path.abspath(self.root)).relative_to(
                Path(os.path.abspath(self.top))).as_posix()
        except ValueError:
            sub = "."
        return {"is_datalad": True, "dataset_id": _dataset_id(self.top), "commit": commit,
                "path_in_dataset": sub or ".", "files": records}


def ensure_local(root, paths, jobs: int = 1) -> dict:
    """Get ``paths`` under ``root`` if it is a DataLad dataset, and return their provenance.

    Equivalent to ``with DataladInputs(root, jobs=jobs) as dl: dl.get(paths);
    return dl.provenance(paths)``; a no-op returning ``{"is_datalad": False,
    ...}`` for a plain folder (missing files still raise :class:`DataError`).
    """
    with DataladInputs(root, jobs=jobs) as dl:
        dl.get(paths)
        return dl.provenance(paths)


# ---------------------------------------------------------------------------
# `decoder run --datalad`: record the run with `datalad run`
# ---------------------------------------------------------------------------

def _inside(path: Path, top: Path) -> str | None:
    try:
        return Path(os.path.abspath(path)).relative_to(Path(os.path.abspath(top))).as_posix()
    except ValueError:
        return None


def datalad_run(config, out, data=None, overrides=(), executable: str | None = None) -> Path:
    """Run ``decoder run`` through ``datalad run`` so that ``datalad rerun`` reproduces it.

    The results folder ``out`` must lie inside a DataLad dataset (create one
    with ``datalad create``).  The recorded command is ``decoder run CONFIG
    [--data DATA] --out OUT [--set ...]`` with paths relative to that
    dataset when they lie inside it (absolute otherwise); ``out`` is declared
    as the run's output, so ``datalad rerun`` unlocks and regenerates it.

    Returns
    -------
    Path
        The ``metrics.json`` written.
    """
    out = Path(out)
    out_parent = out if out.exists() else out.parent
    while not out_parent.exists():
        out_parent = out_parent.parent
    top = dataset_root(out_parent)
    if top is None or _dataset_id(top) is None:
        # 'datalad create' refuses a folder with files in it unless told to keep them
        force = "--force " if out_parent.is_dir() and any(out_parent.iterdir()) else ""
        raise DataError(f"--datalad: the output folder {out} is not inside a DataLad dataset",
                        f"create one first, e.g. 'datalad create {force}{out_parent}', or drop "
                        "--datalad")
    dl = _import_datalad()

    def _arg(p) -> str:
        rel = _inside(Path(p), top)
        return rel if rel is not None else os.path.abspath(p)

    out_rel = _inside(out, top)
    cmd = [executable or _which_decoder(), "run", _arg(config)]
    if data:
        cmd += ["--data", _arg(data)]
    cmd += ["--out", out_rel]
    for item in overrides or ():
        cmd += ["--set", item]
    inputs = [r for r in (_inside(Path(config), top),) if r]
    old = os.getcwd()
    os.chdir(top)  # the command is recorded and replayed from the dataset top
    try:
        with _quiet_datalad(), _capture_stderr() as err:
            res = dl.run(cmd=cmd, dataset=str(top), inputs=inputs, outputs=[out_rel],
                         explicit=True, message=f"decoder run {_arg(config)}",
                         on_failure="ignore", result_renderer="disabled",
                         return_type="list")
    finally:
        os.chdir(old)
    failed = [r for r in res if r.get("status") in ("error", "impossible")]
    if failed:
        # the recorded command printed its own one-line error: pass it on as ours
        inner = [ln for ln in err.text().splitlines() if ln.startswith("decoder: error: ")]
        if inner:
            raise DataError(inner[-1][len("decoder: error: "):])
        r = failed[0]
        msg = r.get("message")
        if isinstance(msg, (tuple, list)):
            try:
                msg = msg[0] % tuple(msg[1:])
            except TypeError:
                msg = " ".join(map(str, msg))
        raise DataError(f"datalad run of '{' '.join(cmd)}' failed: "
                        f"{' '.join(str(msg or r.get('status')).split())[:300]}",
                        "rerun the command without --datalad to see the problem")
    return top / out_rel / "metrics.json"


def _which_decoder() -> str:
    """The ``decoder`` executable to record (the one on PATH, else this interpreter's)."""
    exe = shutil.which("decoder")
    if exe:
        return "decoder"
    candidate = Path(sys.executable).with_name("decoder")
    return str(candidate) if candidate.exists() else "decoder"
