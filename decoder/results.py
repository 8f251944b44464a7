"""A run directory: metrics.json, maps and tables, written atomically.

The run directory is the unit of exchange: the HTML report, the app and a
``datalad rerun`` all read the same files.  Every file is written to a
temporary name and renamed, and ``metrics.json`` is written last, so its
presence means the run is complete and an interrupted run never replaces
an earlier good result.
"""

from __future__ import annotations

import io
import logging
import platform
import sys
import time
from pathlib import Path

import numpy as np

from . import __version__
from ._utils import atomic_write_bytes, atomic_write_json, atomic_write_text, sha256_file
from .config import config_hash

log = logging.getLogger(__name__)

TIMING_FIELDS = ("runtime_s", "created")


def file_records(paths, root=None) -> list[dict]:
    """``[{path, sha256, bytes}]`` for input files (paths relative to ``root`` when given)."""
    records = []
    for p in sorted({Path(p) for p in paths}):
        rel = p
        if root is not None:
            try:
                rel = p.resolve().relative_to(Path(root).resolve())
            except ValueError:
                rel = p
        rec = {"path": str(rel), "sha256": sha256_file(p), "bytes": p.stat().st_size}
        records.append(rec)
    return records


def build_provenance(config: dict, inputs: list[dict], dataset: dict | None = None,
                     config_path=None) -> dict:
    """The provenance block of ``metrics.json``.

    Library versions, the command, the config and its hash, the input files
    with their checksums and the dataset's id and commit.  When a torch model
    ran in this process, the torch version and the device it could use
    (``accelerator``: the CUDA device's name, or ``"cpu"``) are recorded too:
    torch fits differ slightly between devices.
    """
    import nilearn
    import sklearn
    libraries = {"numpy": np.__version__, "scikit-learn": sklearn.__version__,
                 "nilearn": nilearn.__version__}
    extra = {}
    torch = sys.modules.get("torch")
    if torch is not None:  # a torch model ran: its results depend on version and device
        libraries["torch"] = torch.__version__
        extra["accelerator"] = (torch.cuda.get_device_name(0) if torch.cuda.is_available()
                                else "cpu")
    return {
        "package": "decoder",
        "version": __version__,
        "python": platform.python_version(),
        "libraries": libraries,
        **extra,
        "command": " ".join(sys.argv) if sys.argv else None,
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


def write_run(out_dir, metrics: dict, images: dict | None = None,
              tables: dict | None = None, arrays: dict | None = None,
              report: bool = True) -> Path:
    """Write a complete run directory; ``metrics.json`` goes last.

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
    """
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    for name, img in (images or {}).items():
        save_nifti(out / f"{name}.nii.gz", img)
    for name, df in (tables or {}).items():
        atomic_write_text(out / f"{name}.tsv", df.to_csv(sep="\t", index=True))
    if arrays:
        bio = io.BytesIO()
        np.savez_compressed(bio, **{k: np.asarray(v) for k, v in arrays.items()})
        atomic_write_bytes(out / "arrays.npz", bio.getvalue())
    atomic_write_json(out / "metrics.json", metrics)
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
