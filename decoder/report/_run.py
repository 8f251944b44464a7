"""Read a run directory written by ``decoder run`` into one object."""

from __future__ import annotations

import json
import zipfile
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from ..errors import DataError

__all__ = ["RunData", "load_run", "run_folder"]


@dataclass
class RunData:
    """Everything the report and the app show about one run.

    Attributes
    ----------
    path : Path
    metrics : dict
        ``metrics.json``.
    arrays : dict of str → ndarray
        ``arrays.npz`` (e.g. ``permutation_null``), read without pickle.
    weights : nibabel image or None
        ``weights.nii.gz`` (category decoding).
    predictions : DataFrame or None
        ``predictions.tsv``.
    model_card : dict or None
        ``model_card.json`` (biomarker runs that saved a model).
    edges : DataFrame or None
        ``edges.tsv`` (biomarker runs): per-edge activation patterns.
    repeats : DataFrame or None
        ``repeats.tsv`` (biomarker runs with repeated k-fold): each repetition's folds
        and probabilities.
    searchlight : dict of str → nibabel image
        ``searchlight_accuracy`` and, with permutations, ``searchlight_p_fwe``
        (category runs with a searchlight).
    """

    path: Path
    metrics: dict
    arrays: dict = field(default_factory=dict)
    weights: object = None
    predictions: pd.DataFrame | None = None
    model_card: dict | None = None
    edges: pd.DataFrame | None = None
    repeats: pd.DataFrame | None = None
    searchlight: dict = field(default_factory=dict)

    @property
    def task(self) -> str:
        return str(self.metrics.get("task", "unknown"))

    @property
    def permutation_null(self):
        null = self.arrays.get("permutation_null")
        return None if null is None or np.size(null) == 0 else np.asarray(null, dtype=float)


def _read_image(path: Path, what: str):
    """A NIfTI of the run folder, read into memory (None when absent)."""
    if not path.is_file():
        return None
    import nibabel as nib
    try:
        img = nib.load(str(path))
        return nib.Nifti1Image(np.asarray(img.dataobj), img.affine)
    except Exception as exc:  # nibabel raises many types for a corrupt file
        raise DataError(f"{path}: unreadable NIfTI ({type(exc).__name__})",
                        f"rerun 'decoder run' to rewrite {what}") from None


def _number(v) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)


#: the keys reports and comparisons read, with the shape each must have (None allowed)
_SHAPES = {
    "accuracy": (_number, "a number"), "balanced_accuracy": (_number, "a number"),
    "roc_auc": (_number, "a number"), "chance": (_number, "a number"),
    "permutation_p": (_number, "a number"),
    "fold_scores": (lambda v: isinstance(v, list) and all(x is None or _number(x) for x in v),
                    "a list of numbers"),
    "confusion_matrix": (lambda v: isinstance(v, list) and all(
        isinstance(r, list) and all(_number(x) for x in r) for r in v), "a table of counts"),
    "classes": (lambda v: isinstance(v, list), "a list"),
    "provenance": (lambda v: isinstance(v, dict) and all(
        isinstance(v.get(k), t) or v.get(k) is None
        for k, t in (("config", dict), ("inputs", list), ("dataset", dict))),
                   "an object (config, inputs, dataset)"),
    "per_site": (lambda v: isinstance(v, dict), "an object"),
    "per_subgroup": (lambda v: isinstance(v, dict), "an object"),
    "searchlight": (lambda v: isinstance(v, dict), "an object"),
}


def _check_metrics(metrics: dict, mfile: Path) -> None:
    """A ``metrics.json`` edited or damaged by hand is named with its key, not met later as
    a Python error in a figure or a test."""
    for key, (ok, what) in _SHAPES.items():
        value = metrics.get(key)
        if value is not None and not ok(value):
            raise DataError(f"{mfile}: '{key}' is not {what} ({type(value).__name__})",
                            "rerun 'decoder run' to rewrite the run directory")


def run_folder(path) -> Path:
    """The run directory a path names: the folder itself, or the folder of the
    ``metrics.json`` given in its place."""
    path = Path(path).expanduser()
    return path.parent if path.name == "metrics.json" and path.is_file() else path


def load_run(run_dir) -> RunData:
    """Load a run directory; a missing or broken ``metrics.json`` is a one-line error.

    Parameters
    ----------
    run_dir : str or Path
        A folder written by ``decoder run`` (``metrics.json`` is written last,
        so its presence means the run completed), or its ``metrics.json``.

    Raises
    ------
    DataError
        If the folder or ``metrics.json`` is missing or unreadable, or an
        optional file is corrupt.
    """
    path = run_folder(run_dir)
    if not path.is_dir():
        raise DataError(f"{path} is a file, not a run directory" if path.exists()
                        else f"run directory not found: {path}",
                        "pass a folder written by 'decoder run CONFIG --out DIR'")
    mfile = path / "metrics.json"
    if not mfile.is_file():
        raise DataError(f"{path}: no metrics.json (not a run directory, or the run did not "
                        "finish)", "pass a folder written by 'decoder run', or rerun it")
    try:
        metrics = json.loads(mfile.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise DataError(f"{mfile}: unreadable JSON ({type(exc).__name__})",
                        "rerun 'decoder run' to rewrite the run directory") from None
    if not isinstance(metrics, dict):
        raise DataError(f"{mfile}: not a metrics object", "rerun 'decoder run'")
    _check_metrics(metrics, mfile)
    run = RunData(path=path, metrics=metrics)
    npz = path / "arrays.npz"
    if npz.is_file():
        try:
            with np.load(npz, allow_pickle=False) as z:
                run.arrays = {k: z[k] for k in z.files}
        except (OSError, ValueError, zipfile.BadZipFile) as exc:
            raise DataError(f"{npz}: unreadable ({type(exc).__name__})",
                            "rerun 'decoder run' or delete arrays.npz") from None
    run.weights = _read_image(path / "weights.nii.gz", "the weights")
    for name in ("searchlight_accuracy", "searchlight_p_fwe"):
        img = _read_image(path / f"{name}.nii.gz", "the searchlight maps")
        if img is not None:
            run.searchlight[name] = img
    maps = list(run.searchlight.values())
    if len(maps) == 2 and maps[0].shape != maps[1].shape:
        raise DataError(f"{path / 'searchlight_p_fwe.nii.gz'}: shape {maps[1].shape}, not the "
                        f"accuracy map's {maps[0].shape}",
                        "rerun 'decoder run' to rewrite the searchlight maps")
    for name in ("predictions", "edges", "repeats"):
        tfile = path / f"{name}.tsv"
        if tfile.is_file():
            try:
                setattr(run, name, pd.read_csv(tfile, sep="\t"))
            except Exception as exc:  # pandas parser errors
                raise DataError(f"{tfile}: unreadable table ({type(exc).__name__})",
                                "rerun 'decoder run'") from None
    cfile = path / "model_card.json"
    if cfile.is_file():
        try:
            run.model_card = json.loads(cfile.read_text())
        except (OSError, UnicodeDecodeError, json.JSONDecodeError):
            run.model_card = None
    return run
