"""BIDS task inputs: runs, events, TR, masks and fMRIPrep confounds.

Every reader validates what it reads and raises a one-line
:class:`~decoder.errors.DataError` naming the file and the fix.
"""

from __future__ import annotations

import json
import logging
import re
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from ..errors import ConfigError, DataError, missing_file

log = logging.getLogger(__name__)

_ENTITY = re.compile(r"(?P<key>[a-zA-Z]+)-(?P<value>[a-zA-Z0-9]+)")


def parse_entities(name: str) -> dict:
    """BIDS entities of a file name, e.g. ``{'sub': '1', 'task': 'x', 'run': '01'}``."""
    stem = name.split(".")[0]
    return {m["key"]: m["value"] for m in _ENTITY.finditer(stem)}


@dataclass
class Run:
    """One functional run: bold image, events, TR and optional confounds."""

    subject: str
    run: str
    bold: Path
    events: Path | None
    tr: float
    session: str | None = None
    confounds: Path | None = None
    entities: dict = field(default_factory=dict)

    @property
    def key(self) -> str:
        ses = f"_ses-{self.session}" if self.session else ""
        return f"sub-{self.subject}{ses}_run-{self.run}"


def _sidecar_chain(bold: Path, root: Path) -> list[Path]:
    """JSON sidecars that apply to ``bold``, most general first (BIDS inheritance)."""
    ents = parse_entities(bold.name)
    task = ents.get("task")
    candidates = []
    if task:
        candidates.append(root / f"task-{task}_bold.json")
        sub = ents.get("sub")
        if sub:
            candidates.append(root / f"sub-{sub}" / f"sub-{sub}_task-{task}_bold.json")
    candidates.append(bold.with_name(bold.name.replace(".nii.gz", ".json").replace(".nii", ".json")))
    return [c for c in candidates if c.is_file()]


def read_tr(bold: Path, root: Path) -> float:
    """RepetitionTime from the JSON sidecars, falling back to the NIfTI header."""
    tr = None
    for js in _sidecar_chain(bold, root):
        try:
            meta = json.loads(js.read_text())
        except (json.JSONDecodeError, OSError):
            raise DataError(f"{js}: not valid JSON", "fix or remove the sidecar file") from None
        if "RepetitionTime" in meta:
            tr = meta["RepetitionTime"]
    if tr is None:
        import nibabel as nib
        try:
            zooms = nib.load(str(bold)).header.get_zooms()
        except Exception:
            zooms = ()
        if len(zooms) < 4 or not zooms[3] or zooms[3] <= 0:
            raise DataError(f"no RepetitionTime for {bold}",
                            "add a JSON sidecar with RepetitionTime (seconds) or set dataset.tr")
        tr = float(zooms[3])
        log.warning("TR of %s taken from the NIfTI header: %.3f s", bold.name, tr)
    try:
        tr = float(tr)
    except (TypeError, ValueError):
        raise DataError(f"RepetitionTime of {bold} is not a number: {tr!r}",
                        "fix the JSON sidecar") from None
    if not np.isfinite(tr) or tr <= 0:
        raise DataError(f"RepetitionTime of {bold} must be positive, got {tr}",
                        "fix the JSON sidecar")
    return tr


def find_runs(root, task: str, subjects=None, space: str | None = None,
              tr: float | None = None) -> list[Run]:
    """Find the BOLD runs of ``task`` in a BIDS folder (raw, or fMRIPrep with ``space``).

    Parameters
    ----------
    root : path
        BIDS dataset root.
    task : str
        Task label (``task-<label>``).
    subjects : list of str, optional
        Subject labels to keep (without ``sub-``).
    space : str, optional
        With fMRIPrep derivatives: the output space (e.g. ``MNI152NLin2009cAsym``);
        bold files are then ``*_space-<space>_desc-preproc_bold.nii.gz`` under
        ``derivatives/fmriprep`` (or ``root`` itself when it is the derivative).
    tr : float, optional
        Overrides the RepetitionTime found in sidecars.
    """
    root = Path(root)
    if not root.is_dir():
        raise DataError(f"data folder not found: {root}", "pass an existing BIDS folder with --data")
    if space:
        deriv = root / "derivatives" / "fmriprep"
        base = deriv if deriv.is_dir() else root
        pattern = f"sub-*/**/func/*task-{task}*_space-{space}_desc-preproc_bold.nii*"
    else:
        base = root
        pattern = f"sub-*/**/func/*task-{task}*_bold.nii*"
    bolds = sorted(set(base.glob(pattern)) | set(base.glob(pattern.replace("/**/", "/"))))
    if subjects:
        keep = {str(s).removeprefix("sub-") for s in subjects}
        bolds = [b for b in bolds if parse_entities(b.name).get("sub") in keep]
    if not bolds:
        raise DataError(f"no bold runs for task '{task}' under {base}",
                        "check --data and dataset.task (BIDS names: "
                        "sub-<label>/func/sub-<label>_task-<task>[_run-<n>]_bold.nii.gz)")
    runs = []
    for bold in bolds:
        ents = parse_entities(bold.name)
        events = _find_events(bold, root, ents)
        confounds = find_confounds(bold) if space else None
        runs.append(Run(subject=ents.get("sub", "?"), session=ents.get("ses"),
                        run=ents.get("run", str(len(runs) + 1)), bold=bold, events=events,
                        tr=float(tr) if tr else read_tr(bold, root),
                        confounds=confounds, entities=ents))
    return runs


def find_confounds(bold) -> Path | None:
    """fMRIPrep's ``*_desc-confounds_timeseries.tsv`` beside a preprocessed ``bold``, or None.

    An annexed file that is not fetched yet (a broken symlink) counts as present.
    """
    bold = Path(bold)
    stem = bold.name.split("_space-")[0].split("_desc-")[0]
    path = bold.parent / f"{stem}_desc-confounds_timeseries.tsv"
    return path if path.is_symlink() or path.exists() else None


def confound_files(bold) -> list[Path]:
    """The files the confounds of ``bold`` come from: fMRIPrep's confounds table and its
    JSON sidecar (which nilearn's ``load_confounds_strategy`` reads), where present (an
    annexed file not fetched yet counts as present)."""
    path = find_confounds(bold)
    if path is None:
        return []
    sidecar = path.with_suffix(".json")
    return [path] + ([sidecar] if sidecar.is_symlink() or sidecar.exists() else [])


def events_name(bold_name: str) -> str | None:
    """The BIDS events file name of a run's BOLD image: ``x_bold.nii.gz`` →
    ``x_events.tsv``, without the derivative entities (``_space-``, ``_desc-``) that
    fMRIPrep adds to the image's name and the raw dataset's events file lacks."""
    if not re.search(r"_bold\.nii(\.gz)?$", bold_name):
        return None
    name = re.sub(r"_space-[^_]+", "", bold_name)
    name = re.sub(r"_desc-[^_]+", "", name)
    return re.sub(r"_bold\.nii(\.gz)?$", "_events.tsv", name)


def _find_events(bold: Path, root: Path, ents: dict) -> Path | None:
    name = events_name(bold.name)
    cands = [bold.parent / name]
    rel_parts = [p for p in bold.parent.parts if p.startswith(("sub-", "ses-"))] + ["func"]
    cands.append(root.joinpath(*rel_parts) / name)
    if ents.get("task"):
        cands.append(root / f"task-{ents['task']}_events.tsv")
    for c in cands:
        if c.is_file() or c.is_symlink():  # (an annexed file not fetched yet is named later)
            return c
    return None


def read_events(path, n_volumes: int | None = None, tr: float | None = None) -> pd.DataFrame:
    """Read and validate a BIDS ``events.tsv`` (onset, duration, trial_type).

    Raises a :class:`DataError` when columns are missing, values are not
    numbers, or an event starts after the end of the run.
    """
    path = Path(path)
    if not path.is_file():
        raise missing_file(path, "events file",
                        "add the run's _events.tsv (onset, duration, trial_type)")
    try:
        ev = pd.read_csv(path, sep="\t", na_values=["n/a", "NA", ""])
    except Exception as exc:
        raise DataError(f"{path}: cannot read as a tab-separated table ({exc})",
                        "save it as TSV with a header line") from None
    missing = [c for c in ("onset", "duration", "trial_type") if c not in ev.columns]
    if missing:
        raise DataError(f"{path}: missing column(s) {', '.join(missing)}",
                        "events.tsv needs onset, duration and trial_type columns")
    for col in ("onset", "duration"):
        vals = pd.to_numeric(ev[col], errors="coerce")
        if vals.isna().any():
            row = int(np.flatnonzero(vals.isna().to_numpy())[0]) + 2
            raise DataError(f"{path}: non-numeric {col} on line {row}",
                            f"write {col} in seconds")
        ev[col] = vals.astype(float)
    ev = ev.dropna(subset=["trial_type"]).copy()
    ev["trial_type"] = ev["trial_type"].astype(str)
    if ev.empty:  # the run would be dropped without a word
        raise DataError(f"{path}: no events (only a header, or no trial_type)",
                        "add the run's events (onset, duration, trial_type), or move the run "
                        "out of the dataset")
    if (ev["onset"] < 0).any():
        raise DataError(f"{path}: negative onset", "onsets are seconds from the first volume")
    if (ev["duration"] < 0).any():
        row = int(np.flatnonzero((ev["duration"] < 0).to_numpy())[0]) + 2
        raise DataError(f"{path}: negative duration on line {row}",
                        "write durations in seconds (0 for an instantaneous event)")
    if n_volumes is not None and tr is not None:
        end = n_volumes * tr
        late = ev[ev["onset"] >= end]
        if len(late):
            raise DataError(
                f"{path}: event at {late['onset'].iloc[0]:.1f} s is beyond the end of the run "
                f"({n_volumes} volumes x TR {tr:g} s = {end:.1f} s)",
                "check that the events belong to this run and that the TR is right")
    return ev.sort_values("onset").reset_index(drop=True)


def load_bold(path, min_volumes: int = 2):
    """Load a 4D NIfTI and read its data, with one-line errors for bad files."""
    import nibabel as nib
    path = Path(path)
    if not path.is_file():
        raise missing_file(path, "bold file", "check --data and the file name")
    try:
        img = nib.load(str(path))
        data = np.asanyarray(img.dataobj)
    except Exception as exc:
        reason = " ".join(str(exc).split())[:120]
        raise DataError(f"cannot read NIfTI {path}: corrupt or truncated ({reason})",
                        "re-download the file (e.g. 'datalad get' it again)") from None
    if data.ndim != 4:
        raise DataError(f"{path} is {data.ndim}D, shape {data.shape}: a 4D bold run is needed",
                        "pass the 4D functional run, not a single volume or a mask")
    if data.shape[3] < min_volumes:
        raise DataError(f"{path} has {data.shape[3]} volume(s)", "pass a full 4D run")
    if not np.all(np.isfinite(img.affine)):
        raise DataError(f"{path}: the affine contains NaN or inf", "fix the NIfTI header")
    return nib.Nifti1Image(data, img.affine, img.header)


def load_mask(path):
    """Load a 3D binary mask with one-line errors."""
    import nibabel as nib
    path = Path(path)
    if not path.is_file():
        raise missing_file(path, "mask file",
                        "set dataset.mask to an existing file, or 'compute' to estimate one")
    try:
        img = nib.load(str(path))
        data = np.asanyarray(img.dataobj)
    except Exception as exc:
        raise DataError(f"cannot read NIfTI mask {path} ({' '.join(str(exc).split())[:100]})",
                        "re-create or re-download the mask") from None
    if data.ndim == 4 and data.shape[3] == 1:
        data = data[..., 0]
    if data.ndim != 3:
        raise DataError(f"mask {path} is {data.ndim}D: a 3D mask is needed", "pass a 3D mask")
    mask = np.asarray(data) > 0
    if not mask.any():
        raise DataError(f"mask {path} is empty", "pass a mask with at least one voxel")
    return nib.Nifti1Image(mask.astype(np.uint8), img.affine)


def check_same_grid(img, ref, img_path, ref_path, atol: float = 1e-3) -> None:
    """Raise when two images do not share shape and affine."""
    if img.shape[:3] != ref.shape[:3] or not np.allclose(img.affine, ref.affine, atol=atol):
        raise DataError(
            f"{img_path} and {ref_path} are not on the same grid "
            f"(shape {img.shape[:3]} vs {ref.shape[:3]}, affines "
            f"{'equal' if np.allclose(img.affine, ref.affine, atol=atol) else 'differ'})",
            "resample the mask to the bold grid (nilearn.image.resample_to_img) "
            "or use the mask made for these runs")


def find_mask(root: Path, subject: str, spec) -> Path | None:
    """Resolve ``dataset.mask``: a path (relative to root), 'auto' or 'compute'."""
    if spec in (None, "compute"):
        return None
    if spec != "auto":
        p = Path(spec)
        return p if p.is_absolute() else Path(root) / p
    pats = [f"derivatives/masks/sub-{subject}/*mask.nii*",
            f"derivatives/fmriprep/sub-{subject}/**/func/*brain_mask.nii*",
            f"sub-{subject}/**/func/*brain_mask.nii*"]
    for pat in pats:
        hits = sorted(Path(root).glob(pat))
        if hits:
            return hits[0]
    return None


def confound_strategies() -> tuple:
    """The denoising strategies of nilearn's ``load_confounds_strategy``."""
    try:
        from nilearn.interfaces.fmriprep.load_confounds_strategy import preset_strategies
        return tuple(preset_strategies)
    except ImportError:  # the names nilearn has documented since 0.9
        return ("simple", "scrubbing", "compcor", "ica_aroma")


def check_confound_strategy(strategy, key: str, none=("none",)) -> None:
    """A one-line error, before any data are read, for a strategy nilearn lacks."""
    if strategy is None or strategy in none:
        return
    names = confound_strategies()
    if strategy not in names:
        raise ConfigError(f"{key} '{strategy}' is not a nilearn denoising strategy",
                          f"use one of: {', '.join(names)}, {none[0]}")


def load_confounds(run: Run, strategy: str | None, n_volumes: int | None = None):
    """fMRIPrep confounds for a run through nilearn's ``load_confounds_strategy``.

    With ``n_volumes``, a confounds table of another length (a cut-short or another
    run's file) is a one-line error naming it, not nilearn's error in the cleaning.
    """
    if not strategy:
        return None
    if run.confounds is None:
        raise DataError(f"no fMRIPrep confounds file next to {run.bold}",
                        "set dataset.confounds: null, or point --data at fMRIPrep derivatives")
    check_confound_strategy(strategy, "the confound strategy", none=("null",))
    from nilearn.interfaces.fmriprep import load_confounds_strategy
    try:
        conf, sample_mask = load_confounds_strategy(str(run.bold), denoise_strategy=strategy)
    except Exception as exc:
        text = " ".join(str(exc).split())
        raise DataError(f"{run.confounds}: cannot give the confounds of strategy "
                        f"'{strategy}' ({text[:300]}{'…' if len(text) > 300 else ''})",
                        "use the confounds file fMRIPrep wrote for this run, or another "
                        "strategy (or null)") from None
    if n_volumes is not None and conf is not None and len(conf) != n_volumes:
        raise DataError(f"{run.confounds}: {len(conf)} rows of confounds for a run of "
                        f"{n_volumes} volumes ({run.bold.name})",
                        "use the confounds file fMRIPrep wrote for this run")
    return conf, sample_mask
