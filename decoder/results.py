"""A run directory: metrics.json, maps and tables, written atomically.

The run directory is the unit of exchange: the HTML report, the app and a
``datalad rerun`` all read the same files.  Every file is written to a
temporary name and renamed, and ``metrics.json`` is written last, so its
presence means the run is complete and an interrupted run never replaces
an earlier good result.
"""

from __future__ import annotations

import io
import json
import logging
import os
import platform
import sys
import time
from contextlib import contextmanager
from contextvars import ContextVar
from pathlib import Path

import numpy as np

from . import __version__
from ._utils import atomic_write_bytes, atomic_write_json, atomic_write_text, sha256_file
from .config import config_hash
from .errors import DataError

log = logging.getLogger(__name__)

TIMING_FIELDS = ("runtime_s", "created")

# The warnings logged while a run is computed, kept for its metrics.json (``warnings``)
# and report: a warning on the terminal is lost once the window is closed.
_RUN_WARNINGS: ContextVar[list | None] = ContextVar("run_warnings", default=None)


class _WarningSink(logging.Handler):
    def __init__(self, sink: list):
        super().__init__(logging.WARNING)
        self.sink = sink

    def emit(self, record):
        try:
            msg = " ".join(record.getMessage().split())
        except Exception:  # noqa: BLE001 - a badly formatted record must not stop a run
            return
        if msg not in self.sink:
            self.sink.append(msg)


@contextmanager
def recording_warnings():
    """Collect the warnings the package logs (``decoder.*``, ``pipelines.*``) in this
    context; :func:`write_run` records them in ``metrics.json`` → ``warnings``.

    Yields the list, in the order logged, each message once.
    """
    sink: list = []
    handler = _WarningSink(sink)
    loggers = [logging.getLogger(name) for name in ("decoder", "pipelines")]
    for logger in loggers:
        logger.addHandler(handler)
    token = _RUN_WARNINGS.set(sink)
    try:
        yield sink
    finally:
        _RUN_WARNINGS.reset(token)
        for logger in loggers:
            logger.removeHandler(handler)


def file_records(paths, root=None) -> list[dict]:
    """``[{path, sha256, bytes}]`` for input files (paths relative to ``root`` when given)."""
    import os
    records = []
    for p in sorted({Path(p) for p in paths}):
        rel = p
        if root is not None:
            # the file's name in the dataset, not where a link leads: an annexed file of a
            # DataLad dataset is a link into .git/annex/objects
            for a, b in ((os.path.abspath(p), os.path.abspath(root)),
                         (os.path.join(os.path.realpath(os.path.dirname(os.path.abspath(p))),
                                       p.name), os.path.realpath(root))):
                try:
                    rel = Path(a).relative_to(b)
                    break
                except ValueError:
                    continue
        rec = {"path": rel.as_posix(), "sha256": sha256_file(p), "bytes": p.stat().st_size}
        records.append(rec)
    return records


_SOURCE = None


def _command() -> str | None:
    """The command line as a user would type it again: ``decoder run …`` whether it came
    through the ``decoder`` script or ``python -m decoder.cli`` (arguments quoted)."""
    import shlex
    if not sys.argv:
        return None
    program = Path(sys.argv[0]).name
    head = "decoder" if program in ("decoder", "cli.py", "__main__.py") else sys.argv[0]
    return " ".join([head] + [shlex.quote(a) for a in sys.argv[1:]])


def source_identity() -> dict:
    """Which code made a result: ``sha256`` of the package's Python sources
    (``decoder/`` and ``pipelines/``, an uncommitted edit included) and, in a git
    checkout, the ``git_commit``.  The version number alone does not change between
    commits.  Computed once per process."""
    global _SOURCE
    if _SOURCE is None:
        import hashlib
        import subprocess
        top = Path(__file__).resolve().parents[1]
        digest = hashlib.sha256()
        for folder in ("decoder", "pipelines"):
            for path in sorted((top / folder).rglob("*.py")):
                digest.update(path.relative_to(top).as_posix().encode() + b"\0")
                digest.update(path.read_bytes())
        commit = None
        if (top / ".git").exists():
            try:
                commit = subprocess.run(["git", "-C", str(top), "rev-parse", "HEAD"],
                                        capture_output=True, text=True,
                                        timeout=10).stdout.strip() or None
            except (OSError, subprocess.SubprocessError):
                commit = None
        _SOURCE = {"sha256": digest.hexdigest(), "git_commit": commit}
    return dict(_SOURCE)


#: libraries whose versions every run records (torch too when a torch model ran)
RECORDED_LIBRARIES = ("numpy", "scikit-learn", "nilearn", "scipy", "pandas", "nibabel")


def current_environment(libraries=RECORDED_LIBRARIES) -> dict:
    """This installation as provenance records it: ``version`` and ``source`` of decoder,
    ``python``, and the installed version of each of ``libraries`` (None if absent)."""
    from importlib import metadata
    versions = {}
    for name in libraries:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = None
    return {"version": __version__, "source": source_identity(),
            "python": platform.python_version(), "libraries": versions}


def build_provenance(config: dict, inputs: list[dict], dataset: dict | None = None,
                     config_path=None) -> dict:
    """The provenance block of ``metrics.json``.

    This installation (:func:`current_environment`), the command and the folder it
    ran in, the config and its hash, the input files with their checksums and the
    dataset's id and commit.  When a torch model ran in this process, the torch
    version and the device it could use (``accelerator``: the CUDA device's name, or
    ``"cpu"``) are recorded too: torch fits differ slightly between devices.
    """
    libraries = RECORDED_LIBRARIES
    extra = {}
    torch = sys.modules.get("torch")
    if torch is not None:  # a torch model ran: its results depend on version and device
        libraries = libraries + ("torch",)
        extra["accelerator"] = (torch.cuda.get_device_name(0) if torch.cuda.is_available()
                                else "cpu")
    return {
        "package": "decoder",
        **current_environment(libraries),
        **extra,
        "command": _command(),
        "working_directory": os.getcwd(),
        "config": config,
        "config_path": str(config_path) if config_path else None,
        "config_sha256": config_hash(config),
        "inputs": inputs,
        "dataset": dataset or {},
        "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }


def save_nifti(path, img) -> None:
    """Save a nibabel image atomically (gzip when the name ends in .gz)."""
    import nibabel as nib
    path = Path(path)
    bio = io.BytesIO()
    file_map = nib.Nifti1Image.make_file_map({"image": bio, "header": bio})
    img = nib.Nifti1Image(np.asarray(img.dataobj), img.affine, img.header)
    img.to_file_map(file_map)
    data = bio.getvalue()
    if path.suffix == ".gz":
        import gzip
        data = gzip.compress(data, compresslevel=6, mtime=0)
    atomic_write_bytes(path, data)


#: files a run may write, removed when a later run in the same folder does not write them
#: (for folders whose metrics.json predates its ``files`` list)
RUN_FILES = ("arrays.npz", "weights.nii.gz", "model.skops", "model_card.json",
             "model_card.md", "repeats.tsv", "edges.tsv", "predictions.tsv",
             "confusion_matrix.tsv")


def _previous_files(out: Path) -> set:
    """What the run already in ``out`` wrote: its ``files`` list (:data:`RUN_FILES` for a
    run recorded without one); nothing when ``out`` holds no finished run, whose files of
    the same names would be the user's own."""
    if not (out / "metrics.json").is_file():
        return set()
    try:
        listed = json.loads((out / "metrics.json").read_text()).get("files")
    except (OSError, ValueError, AttributeError):
        listed = None
    names = listed if isinstance(listed, list) else RUN_FILES
    return {n for n in names if isinstance(n, str) and n == Path(n).name}


def nearest_write_error(path) -> tuple:
    """Whether files could be written at ``path`` without creating anything yet.

    Returns ``(where, error)``: the nearest folder at or above ``path`` that exists, and
    None when a probe file can be written there — else the ``OSError`` (a
    ``NotADirectoryError`` when the nearest existing thing is a file).  The probe also
    catches read-only file systems and full disks that permission bits do not show.
    """
    import tempfile
    where = Path(path)
    while not where.exists() and where != where.parent:
        where = where.parent
    if not where.is_dir():
        return where, NotADirectoryError(f"{where} is a file")
    try:
        with tempfile.NamedTemporaryFile(dir=where, prefix=".write-check."):
            pass
    except OSError as err:
        return where, err
    return where, None


def check_writable(path, folder: bool = True, option: str = "--out") -> Path:
    """Refuse, before any work, an output that cannot be written: a one-line error naming it.

    ``folder``: ``path`` is an output folder rather than a file; ``option``: the
    command-line option that names it, for the fix.  Nothing is created
    (:func:`nearest_write_error`).
    """
    path = Path(path)
    what = "folder" if folder else "file"
    if folder and path.exists() and not path.is_dir():
        raise DataError(f"output folder {path} exists and is not a folder",
                        f"choose another output folder ({option})")
    if not folder and path.is_dir():
        raise DataError(f"output file {path} is a folder", f"give a file name ({option})")
    where, err = nearest_write_error(path if folder else path.parent)
    if isinstance(err, NotADirectoryError):
        raise DataError(f"cannot write the output {what} {path}: {where} is a file",
                        f"choose another output location ({option})")
    if err is not None:
        raise DataError(f"cannot write the output {what} {path} ({err.strerror or err})",
                        f"choose another output location ({option})")
    return path


def write_run(out_dir, metrics: dict, images: dict | None = None,
              tables: dict | None = None, arrays: dict | None = None,
              report: bool = True, files: dict | None = None) -> Path:
    """Write a complete run directory; ``metrics.json`` goes last.

    Everything is written at the end of a run, first to a staging folder and then moved
    in, so that a run that fails before (or while writing: a full disk) leaves an earlier
    run's results as they were.  ``metrics.json``
    lists the files written (``files``); those of an earlier run in the same folder
    that this run did not write (a model, weight maps, a permutation null) are then
    removed, so that the folder — and its report — describes this run only.

    Parameters
    ----------
    out_dir : path
    metrics : dict
        The ``metrics.json`` content.
    images : dict of name → nibabel image, optional
        Saved as ``<name>.nii.gz``.
    tables : dict of name → pandas.DataFrame, optional
        Saved as ``<name>.tsv``.
    arrays : dict of name → ndarray, optional
        Saved together in ``arrays.npz`` (e.g. the permutation null).
    report : bool
        Also write ``report.html`` when the report module is available.
    files : dict of name → bytes, optional
        Other files of the run (e.g. ``model.skops``, the model card).
    """
    import shutil
    import tempfile
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    earlier = _previous_files(out)
    written = ([f"{n}.nii.gz" for n in images or {}] + [f"{n}.tsv" for n in tables or {}]
               + (["arrays.npz"] if arrays else []) + list(files or {}))
    metrics["files"] = sorted(written)
    recorded = _RUN_WARNINGS.get()
    if recorded is not None:
        metrics["warnings"] = list(recorded)
    # Every file is first written to a staging folder inside ``out``: a write that fails
    # (a full disk) leaves the earlier run whole, not mixed with half of this one.  The
    # files are then moved in by renames, which need no space, metrics.json last.
    stage = Path(tempfile.mkdtemp(prefix=".staging-", dir=out))
    try:
        for name, data in (files or {}).items():
            atomic_write_bytes(stage / name, data)
        for name, img in (images or {}).items():
            save_nifti(stage / f"{name}.nii.gz", img)
        for name, df in (tables or {}).items():
            atomic_write_text(stage / f"{name}.tsv", df.to_csv(sep="\t", index=True))
        if arrays:
            bio = io.BytesIO()
            np.savez_compressed(bio, **{k: np.asarray(v) for k, v in arrays.items()})
            atomic_write_bytes(stage / "arrays.npz", bio.getvalue())
        atomic_write_json(stage / "metrics.json", metrics)
        for name in [*written, "metrics.json"]:
            os.replace(stage / name, out / name)
    finally:
        shutil.rmtree(stage, ignore_errors=True)
    for name in sorted(earlier - set(written)):   # the earlier run's, not this one's
        (out / name).unlink(missing_ok=True)
    if report:
        try:
            from .report import write_report
        except ImportError:
            pass
        else:
            # The results are complete once metrics.json is written; a figure that cannot be
            # drawn must not turn a finished run into a failed one (nor leave a stale report).
            try:
                write_report(out)
            except Exception as err:  # noqa: BLE001 - any rendering failure, reported below
                (out / "report.html").unlink(missing_ok=True)   # the earlier run's
                msg = " ".join(str(err).split()) or type(err).__name__
                log.warning("report.html not written for %s (%s: %s); the results are complete "
                            "— fix: run 'decoder report %s' after the cause is mended",
                            out, type(err).__name__, msg, out)
    return out


def strip_timing(metrics: dict) -> dict:
    """A copy of ``metrics`` without timing fields, for reproducibility checks."""
    def _strip(obj):
        if isinstance(obj, dict):
            return {k: _strip(v) for k, v in obj.items() if k not in TIMING_FIELDS}
        if isinstance(obj, list):
            return [_strip(v) for v in obj]
        return obj
    return _strip(metrics)
