"""Reader for the ABIDE Preprocessed Connectomes Project (PCP) layout.

The public layout (``https://s3.amazonaws.com/fcp-indi/data/Projects/ABIDE_Initiative/``)
is::

    <root>/Phenotypic_V1_0b_preprocessed1.csv
    <root>/Outputs/<pipeline>/<strategy>/<derivative>/<FILE_ID>_<derivative>.1D

for pipeline in ``cpac, ccs, dparsf, niak``, strategy in ``filt_global,
filt_noglobal, nofilt_global, nofilt_noglobal`` and ROI derivative in
``rois_aal, rois_cc200, rois_cc400, rois_dosenbach160, rois_ez, rois_ho,
rois_tt``.  The subjects are the files present on disk; their labels come
from ``DX_GROUP`` (1 = autism, 2 = control), their group from ``SITE_ID``
and the covariates from ``AGE_AT_SCAN`` and ``SEX``.

How real-file irregularities are handled (and logged):

* **Regions that are all zero (or NaN) for a subject** — the ROI fell
  outside that subject's field of view.  They are kept (every subject keeps
  the same region set, so features line up); the connectivity step gives a
  missing region zero covariance with the others and unit variance after
  standardisation, i.e. it falls back to the shrinkage target for that
  region (see :mod:`decoder.features.connectome`).  The count per subject is
  in :attr:`AbideDataset.missing_regions`.
* **Different lengths** — each subject's covariance is estimated from its
  own time points with Ledoit–Wolf shrinkage, which stays well conditioned
  even with fewer time points than regions (78 time points, 111 regions);
  no truncation or padding is needed.
* **Different TRs** — connectivity is a zero-lag covariance, which does not
  depend on the sampling rate once the series are band-passed (the
  ``filt_*`` strategies keep 0.01–0.1 Hz at every site).  The remaining TR
  differences are site effects: they are what leave-site-out evaluation
  and the optional in-fold ComBat harmonisation address.
* **A file whose FILE_ID is not in the phenotypic table** — it cannot be
  labelled: a one-line :class:`~decoder.errors.DataError` names it.
* **An all-NaN or truncated file** — a one-line error from
  :func:`decoder.data.timeseries_io.read_timeseries`.
"""

from __future__ import annotations

import functools
import logging
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from ..errors import ConfigError, DataError, missing_file
from .timeseries_io import (check_subject_series, named_regions, read_timeseries,
                            regions_with_signal)

log = logging.getLogger(__name__)

__all__ = ["PIPELINES", "STRATEGIES", "DERIVATIVES", "PHENOTYPIC_FILE", "AbideDataset",
           "abide_folder", "load_phenotypes", "load_abide", "DIAGNOSIS", "region_names",
           "region_coordinates", "dataset_regions"]

PIPELINES = ("cpac", "ccs", "dparsf", "niak")
STRATEGIES = ("filt_global", "filt_noglobal", "nofilt_global", "nofilt_noglobal")
DERIVATIVES = ("rois_aal", "rois_cc200", "rois_cc400", "rois_dosenbach160", "rois_ez",
               "rois_ho", "rois_tt")
PHENOTYPIC_FILE = "Phenotypic_V1_0b_preprocessed1.csv"
#: DX_GROUP code → class name; classes are ordered (control, autism) so the
#: positive class of ROC AUC and of predicted probabilities is autism.
DIAGNOSIS = {1: "autism", 2: "control"}
CLASSES = ["control", "autism"]


#: FSL's Harvard–Oxford cortical atlas labels 1–48, in order.
HO_CORTICAL = (
    "Frontal Pole", "Insular Cortex", "Superior Frontal Gyrus", "Middle Frontal Gyrus",
    "Inferior Frontal Gyrus, pars triangularis", "Inferior Frontal Gyrus, pars opercularis",
    "Precentral Gyrus", "Temporal Pole", "Superior Temporal Gyrus, anterior division",
    "Superior Temporal Gyrus, posterior division", "Middle Temporal Gyrus, anterior division",
    "Middle Temporal Gyrus, posterior division", "Middle Temporal Gyrus, temporooccipital part",
    "Inferior Temporal Gyrus, anterior division", "Inferior Temporal Gyrus, posterior division",
    "Inferior Temporal Gyrus, temporooccipital part", "Postcentral Gyrus",
    "Superior Parietal Lobule", "Supramarginal Gyrus, anterior division",
    "Supramarginal Gyrus, posterior division", "Angular Gyrus",
    "Lateral Occipital Cortex, superior division", "Lateral Occipital Cortex, inferior division",
    "Intracalcarine Cortex", "Frontal Medial Cortex", "Juxtapositional Lobule Cortex (SMA)",
    "Subcallosal Cortex", "Paracingulate Gyrus", "Cingulate Gyrus, anterior division",
    "Cingulate Gyrus, posterior division", "Precuneous Cortex", "Cuneal Cortex",
    "Frontal Orbital Cortex", "Parahippocampal Gyrus, anterior division",
    "Parahippocampal Gyrus, posterior division", "Lingual Gyrus",
    "Temporal Fusiform Cortex, anterior division", "Temporal Fusiform Cortex, posterior division",
    "Temporal Occipital Fusiform Cortex", "Occipital Fusiform Gyrus", "Frontal Operculum Cortex",
    "Central Opercular Cortex", "Parietal Operculum Cortex", "Planum Polare", "Heschl's Gyrus",
    "Planum Temporale", "Supracalcarine Cortex", "Occipital Pole")
#: Subcortical codes of the PCP Harvard–Oxford atlas (FreeSurfer's colour-table numbers).
HO_SUBCORTICAL = {
    "10": "Left Thalamus", "11": "Left Caudate", "12": "Left Putamen", "13": "Left Pallidum",
    "17": "Left Hippocampus", "18": "Left Amygdala", "26": "Left Accumbens",
    "49": "Right Thalamus", "50": "Right Caudate", "51": "Right Putamen",
    "52": "Right Pallidum", "53": "Right Hippocampus", "54": "Right Amygdala",
    "58": "Right Accumbens"}


def region_names(codes, derivative) -> list | None:
    """Anatomical names of ABIDE PCP region codes (``rois_ho``); None for other atlases.

    Cortical codes are ``100 × label + h``.  ``h = 1`` is the right
    hemisphere: the atlas grid stores x from right to left (FSL's MNI152
    orientation), and on the 871 ABIDE subjects, for 42 of the 48 labels,
    the ``…01`` region is — relative to its ``…02`` twin — more coupled to
    the right subcortical regions than to the left ones (coupling within a
    hemisphere is stronger; a test checks it on the real data).  A code
    outside the atlas (the PCP file has one, 3455) keeps its number.
    """
    if derivative != "rois_ho":
        return None
    out = []
    for code in (str(c).lstrip("#") for c in codes):
        name = HO_SUBCORTICAL.get(code)
        if name is None and code.isdigit() and len(code) >= 3:
            label, side = divmod(int(code), 100)
            if 1 <= label <= len(HO_CORTICAL) and side in (1, 2):
                name = f"{'Right' if side == 1 else 'Left'} {HO_CORTICAL[label - 1]}"
        out.append(name or f"region {code}")
    return out


HO_COORDINATES = Path(__file__).resolve().parent / "_atlas" / "ho_coordinates.tsv"


def region_coordinates(codes, derivative) -> np.ndarray | None:
    """MNI coordinates (R, 3) of ABIDE PCP region codes (``rois_ho``); None for other atlases.

    From the lateralised Harvard–Oxford probabilistic atlas (FSL), one
    point of high probability inside each region (nilearn's
    ``find_probabilistic_atlas_cut_coords``; ``_make_ho_coordinates.py``
    regenerates the table).  A code outside the atlas (3455) gets NaN: a
    glass brain leaves it out.  None as well when fewer than 90 % of the codes
    are in the atlas: these are not the regions the table describes, and a
    glass brain of the few that match would misrepresent the strongest edges.
    """
    if derivative != "rois_ho":
        return None
    table = _ho_coordinate_table()
    keys = [str(c).lstrip("#") for c in codes]
    xyz = table.reindex(keys)[["x", "y", "z"]].to_numpy(dtype=float)
    if not len(xyz) or np.isfinite(xyz).all(axis=1).mean() < 0.9:
        return None
    return xyz


@functools.lru_cache(maxsize=1)
def _ho_coordinate_table() -> pd.DataFrame:
    """The 110-row coordinate table, read once per process (the app and the report ask
    for it on every page)."""
    return pd.read_csv(HO_COORDINATES, sep="\t", dtype={"code": str}).set_index("code")


def dataset_regions(dataset, regions) -> tuple[list | None, np.ndarray | None]:
    """Names and coordinates of ``regions`` for a run's or model's ``dataset`` record.

    An ABIDE PCP dataset names its atlas (``derivative``); an image dataset's record
    carries what its atlas said (``region_names``, ``region_coordinates``, written by
    the biomarker pipeline).  ``(None, None)`` for regions neither describes.
    """
    dataset = dataset or {}
    if regions is None or not len(regions):
        return None, None
    if dataset.get("kind") != "abide":
        names, coords = dataset.get("region_names"), dataset.get("region_coordinates")
        names = list(names) if names is not None and len(names) == len(regions) else None
        coords = (np.asarray(coords, dtype=float) if coords is not None
                  and len(coords) == len(regions) else None)
        return names, coords
    derivative = dataset.get("derivative")
    return region_names(regions, derivative), region_coordinates(regions, derivative)


@dataclass
class AbideDataset:
    """ABIDE subjects loaded from one pipeline/strategy/derivative folder.

    Attributes
    ----------
    time_series : list of ndarray (n_timepoints_i, n_regions)
    file_ids, sites, diagnosis : ndarray of str
        ``diagnosis`` is ``"autism"`` or ``"control"``.
    age : ndarray of float
    sex : ndarray of int
        ABIDE coding: 1 = male, 2 = female.
    regions : list of str
        Region labels from the file header.
    files : list of Path
    missing_regions : ndarray of int
        Per subject, how many regions have no finite, non-constant signal.
    root, pipeline, strategy, derivative : str
    mean_fd : ndarray of float or None
        Mean framewise displacement (``func_mean_fd``, mm) per subject, NaN
        where the table has none; a nuisance variable for the confound check.
    """

    time_series: list
    file_ids: np.ndarray
    sites: np.ndarray
    diagnosis: np.ndarray
    age: np.ndarray
    sex: np.ndarray
    regions: list
    files: list
    missing_regions: np.ndarray
    root: str = ""
    pipeline: str = ""
    strategy: str = ""
    derivative: str = ""
    notes: list = field(default_factory=list)
    mean_fd: np.ndarray | None = None

    def __len__(self) -> int:
        return len(self.time_series)

    @property
    def covariates(self) -> pd.DataFrame:
        """Age and sex per subject (the covariates ComBat preserves)."""
        return pd.DataFrame({"age": self.age, "sex": self.sex}, index=self.file_ids)

    @property
    def confounds(self) -> pd.DataFrame:
        """Nuisance variables per subject (``mean_fd``; empty if the table has none)."""
        if self.mean_fd is None:
            return pd.DataFrame(index=self.file_ids)
        return pd.DataFrame({"mean_fd": self.mean_fd}, index=self.file_ids)

    def subset(self, index) -> "AbideDataset":
        """A new dataset with the subjects at positions ``index``."""
        index = np.asarray(index)
        return AbideDataset(
            time_series=[self.time_series[i] for i in index],
            file_ids=self.file_ids[index], sites=self.sites[index],
            diagnosis=self.diagnosis[index], age=self.age[index], sex=self.sex[index],
            regions=list(self.regions), files=[self.files[i] for i in index],
            missing_regions=self.missing_regions[index], root=self.root,
            pipeline=self.pipeline, strategy=self.strategy, derivative=self.derivative,
            notes=list(self.notes),
            mean_fd=None if self.mean_fd is None else self.mean_fd[index])


def _check_choice(value, allowed, key):
    if value not in allowed:
        raise ConfigError(f"{key} '{value}' is not an ABIDE PCP option",
                          f"use one of: {', '.join(allowed)}")


def abide_folder(root, pipeline="cpac", strategy="filt_noglobal", derivative="rois_ho") -> Path:
    """The folder holding ``<FILE_ID>_<derivative>.1D`` files, checked to exist."""
    _check_choice(pipeline, PIPELINES, "dataset.pipeline")
    _check_choice(strategy, STRATEGIES, "dataset.strategy")
    _check_choice(derivative, DERIVATIVES, "dataset.derivative")
    root = Path(root)
    if not root.is_dir():
        raise DataError(f"ABIDE root folder not found: {root}",
                        "pass the folder holding Phenotypic_V1_0b_preprocessed1.csv and Outputs/ "
                        "with --data")
    folder = root / "Outputs" / pipeline / strategy / derivative
    if not folder.is_dir():
        present = sorted(str(p.relative_to(root / "Outputs"))
                         for p in (root / "Outputs").glob("*/*/*") if p.is_dir()) \
            if (root / "Outputs").is_dir() else []
        hint = f"present here: {', '.join(present)}" if present else \
            "download it from the ABIDE PCP bucket (Outputs/<pipeline>/<strategy>/<derivative>/)"
        raise DataError(f"no ABIDE folder {folder}", f"choose dataset.pipeline/strategy/"
                        f"derivative with --set, or fetch the files; {hint}")
    return folder


def load_phenotypes(root) -> pd.DataFrame:
    """The phenotypic table indexed by ``FILE_ID``."""
    path = Path(root) / PHENOTYPIC_FILE
    if not path.is_file():
        raise missing_file(path, "phenotypic table",
                        f"download {PHENOTYPIC_FILE} from the ABIDE PCP bucket into the data root")
    from .._utils import table_file_problem, table_read_problem
    problem = table_file_problem(path)  # e.g. opened in a spreadsheet and saved as .xlsx
    if problem:
        raise DataError(f"{path}: {problem[0]}", f"{problem[1]}, or download "
                        f"{PHENOTYPIC_FILE} again from the ABIDE PCP bucket")
    try:
        table = pd.read_csv(path, low_memory=False)
    except (pd.errors.EmptyDataError, pd.errors.ParserError, UnicodeDecodeError) as exc:
        raise DataError(f"{path}: {table_read_problem(exc)}",
                        f"download {PHENOTYPIC_FILE} again from the ABIDE PCP bucket") from None
    needed = {"FILE_ID", "SITE_ID", "DX_GROUP", "AGE_AT_SCAN", "SEX"}
    missing = needed - set(table.columns)
    if missing:
        raise DataError(f"{path}: missing column(s) {', '.join(sorted(missing))}",
                        "use the official ABIDE PCP phenotypic file")
    table = table[table["FILE_ID"].astype(str) != "no_filename"]
    table = table.drop_duplicates()            # a row repeated word for word is harmless
    key = ["FILE_ID", "SITE_ID", "DX_GROUP", "AGE_AT_SCAN", "SEX"]
    clash = table[key].drop_duplicates()["FILE_ID"]
    clash = clash[clash.duplicated()]
    if len(clash):
        raise DataError(f"{path}: FILE_ID '{clash.iloc[0]}' has rows that disagree on site, "
                        "diagnosis, age or sex", "keep the one correct row for that subject")
    return table.drop_duplicates("FILE_ID").set_index("FILE_ID")


#: SEX written as words or letters instead of ABIDE's codes (1 male, 2 female)
_SEX_WORDS = {"1": 1, "2": 2, "m": 1, "male": 1, "f": 2, "female": 2}


def _sex_codes(rows, path) -> np.ndarray:
    """ABIDE's SEX codes (1 male, 2 female) from codes or words; NaN where missing.

    Anything else is an error naming the subject: read as missing, it would be imputed
    (and ComBat would preserve the wrong thing)."""
    codes = []
    for fid, value in rows["SEX"].items():
        text = "" if pd.isna(value) else str(value).strip().lower()
        if text.endswith(".0"):
            text = text[:-2]
        if text in ("", "-9999", "nan"):
            codes.append(np.nan)
        elif text in _SEX_WORDS:
            codes.append(float(_SEX_WORDS[text]))
        else:
            raise DataError(f"{path}: SEX of '{fid}' is '{value}'",
                            "write 1 (male) or 2 (female) — or M/F — or leave it empty")
    return np.asarray(codes, dtype=float)


def _missing_regions(ts: np.ndarray) -> int:
    return int((~regions_with_signal(ts)).sum())


@dataclass
class AbideSelection:
    """The subjects a run reads, chosen from the phenotypic table and the file names.

    Nothing but the phenotypic table is read, so on a DataLad dataset only the chosen
    subjects' files need to be fetched (:func:`select_abide`)."""

    folder: Path
    files: list
    file_ids: list
    rows: pd.DataFrame


def select_abide(root, pipeline: str = "cpac", strategy: str = "filt_noglobal",
                 derivative: str = "rois_ho", sites=None, max_subjects: int | None = None,
                 file_ids=None, exclude=None) -> AbideSelection:
    """Choose the subjects of an ABIDE PCP folder without reading their time series.

    Parameters are those of :func:`load_abide`.  Every check that needs only the
    phenotypic table and the file names is made here: a file whose FILE_ID is not in
    the table, an unknown site or excluded FILE_ID, a diagnosis that is not 1 or 2,
    an empty site.
    """
    folder = abide_folder(root, pipeline, strategy, derivative)
    pheno = load_phenotypes(root)
    suffix = f"_{derivative}.1D"
    # an annexed file whose content is not fetched yet is a symlink: listed all the same
    files = sorted(p for p in folder.iterdir() if p.name.endswith(suffix))
    if not files:
        raise DataError(f"no *{suffix} files in {folder}",
                        "fetch the ABIDE files into this folder, or pick another derivative")
    ids = [p.name[: -len(suffix)] for p in files]
    unknown = [i for i in ids if i not in pheno.index]
    if unknown:
        raise DataError(f"{folder / (unknown[0] + suffix)}: FILE_ID '{unknown[0]}' is not in "
                        f"{PHENOTYPIC_FILE} ({len(unknown)} such file(s))",
                        "remove the file(s) or use the matching phenotypic table")
    keep = np.ones(len(ids), bool)
    if file_ids is not None:
        wanted = set(map(str, file_ids))
        keep &= np.array([i in wanted for i in ids])
    if exclude is not None:
        excluded = {exclude} if isinstance(exclude, str) else set(map(str, exclude))
        bad = sorted(excluded - set(pheno.index.astype(str)))
        if bad:  # a typo would leave the subject in, silently
            raise ConfigError(f"dataset.exclude: '{bad[0]}' is not a FILE_ID of "
                              f"{PHENOTYPIC_FILE}", "check the spelling (e.g. NYU_0050952)")
        keep &= np.array([i not in excluded for i in ids])
    if sites is not None:
        sites = [sites] if isinstance(sites, str) else list(sites)
        known = set(pheno.loc[ids, "SITE_ID"].astype(str))
        bad = [s for s in sites if s not in known]
        if bad:
            raise ConfigError(f"dataset.sites: no subject from site '{bad[0]}' here",
                              f"use some of: {', '.join(sorted(known))}")
        keep &= pheno.loc[ids, "SITE_ID"].astype(str).isin(sites).to_numpy()
    idx = np.flatnonzero(keep)
    if max_subjects is not None:
        idx = idx[: int(max_subjects)]
    if idx.size == 0:
        raise DataError(f"no ABIDE subject left in {folder} after filtering",
                        "relax dataset.sites / dataset.max_subjects / dataset.exclude")
    files = [files[i] for i in idx]
    ids = [ids[i] for i in idx]
    rows = pheno.loc[ids]
    dx = pd.to_numeric(rows["DX_GROUP"], errors="coerce")
    if not dx.isin(DIAGNOSIS).all():
        bad = rows.index[~dx.isin(DIAGNOSIS)][0]
        raise DataError(f"{PHENOTYPIC_FILE}: DX_GROUP of '{bad}' is not 1 or 2",
                        "fix the phenotypic table (1 = autism, 2 = control)")
    blank = rows.index[rows["SITE_ID"].isna() | (rows["SITE_ID"].astype(str).str.strip()
                                                  == "")]
    if len(blank):
        raise DataError(f"{PHENOTYPIC_FILE}: SITE_ID of '{blank[0]}' is empty",
                        "fill in the site (leave-site-out and ComBat need it), or exclude "
                        "the subject with --set dataset.exclude=...")
    return AbideSelection(folder, files, ids, rows)


def load_abide(root, pipeline: str = "cpac", strategy: str = "filt_noglobal",
               derivative: str = "rois_ho", sites=None, max_subjects: int | None = None,
               file_ids=None, exclude=None,
               selection: AbideSelection | None = None) -> AbideDataset:
    """Load every subject present in an ABIDE PCP folder.

    Parameters
    ----------
    root : path
        Folder holding ``Phenotypic_V1_0b_preprocessed1.csv`` and ``Outputs/``.
    pipeline, strategy, derivative : str
        Which PCP output to read (see module constants).
    sites : list of str, optional
        Keep only these ``SITE_ID`` values.
    max_subjects : int, optional
        Keep the first ``max_subjects`` subjects in file-name order after the
        other filters (for quick runs and tests).
    file_ids : list of str, optional
        Keep only these subjects.
    exclude : str or list of str, optional
        Leave these subjects out (each must be a ``FILE_ID`` of the phenotypic table);
        their files are never read, so a damaged file can be excluded.
    selection : AbideSelection, optional
        The subjects :func:`select_abide` already chose (with these arguments), so that
        a caller that needed them first, to fetch their files, does not choose twice.

    Returns
    -------
    AbideDataset
    """
    sel = selection or select_abide(root, pipeline, strategy, derivative, sites=sites,
                                    max_subjects=max_subjects, file_ids=file_ids,
                                    exclude=exclude)
    files, ids, rows = sel.files, sel.file_ids, sel.rows
    dx = pd.to_numeric(rows["DX_GROUP"], errors="coerce")
    series, regions, missing = [], None, []
    for path, fid in zip(files, ids):
        ts, names = read_timeseries(path)
        # named here: found later, in the connectivity step, the file would be unknown; the
        # rules are those a prediction applies (a series no model should be asked about is
        # none to learn from either)
        try:
            check_subject_series(ts, str(path), max_missing=1.0)  # empty regions: kept
        except DataError as err:
            raise DataError(err.message, "exclude the subject (--set dataset.exclude="
                            f"{fid}) or re-download the file") from None
        if regions is None:
            regions = names
        elif ts.shape[1] != len(regions):
            raise DataError(f"{path}: {ts.shape[1]} regions, but {files[0].name} has "
                            f"{len(regions)}",
                            "all files of one derivative must use the same atlas; "
                            "re-download the odd one")
        elif names != regions and named_regions(names) and named_regions(regions):
            k = next(i for i, (a, b) in enumerate(zip(names, regions)) if a != b)
            raise DataError(f"{path}: column {k + 1} is region #{names[k]}, but in "
                            f"{files[0].name} it is #{regions[k]}",
                            "all files of one derivative must list the regions in one order; "
                            "re-download the odd one")
        series.append(ts)
        missing.append(_missing_regions(ts))
        if ts.shape[1] - missing[-1] < 2:
            raise DataError(f"{path}: fewer than 2 regions with signal (constant or empty)",
                            "exclude the subject (--set dataset.exclude=...) or re-download "
                            "the file")
    missing = np.asarray(missing)
    notes = []
    if missing.any():
        notes.append(f"{int((missing > 0).sum())} of {len(files)} subjects have regions with "
                     f"no signal (up to {int(missing.max())}); their coupling falls back to "
                     "the shrinkage target")
        log.info(notes[-1])
    lengths = np.array([len(t) for t in series])
    notes.append(f"time points per subject: {lengths.min()}–{lengths.max()}")
    age = pd.to_numeric(rows["AGE_AT_SCAN"], errors="coerce").to_numpy(float, copy=True)
    age[age < 0] = np.nan                             # ABIDE's -9999
    if np.isnan(age).any():
        first = rows.index[np.isnan(age)][0]
        notes.append(f"AGE_AT_SCAN missing or not a number for {int(np.isnan(age).sum())} "
                     f"subject(s) (e.g. {first}): replaced by the median age")
        age = np.where(np.isnan(age), np.nanmedian(age), age)
        log.warning(notes[-1])
    sex = _sex_codes(rows, root / PHENOTYPIC_FILE if isinstance(root, Path)
                     else Path(root) / PHENOTYPIC_FILE)
    if np.isnan(sex).any():
        first = rows.index[np.isnan(sex)][0]
        notes.append(f"SEX missing for {int(np.isnan(sex).sum())} subject(s) (e.g. {first}): "
                     "counted as male, ABIDE's majority")
        log.warning(notes[-1])
    sex = np.nan_to_num(sex, nan=1.0).astype(int)
    mean_fd = None
    if "func_mean_fd" in rows.columns:  # ABIDE codes missing values as -9999 or blank
        mean_fd = np.array(pd.to_numeric(rows["func_mean_fd"], errors="coerce"), dtype=float)
        mean_fd[mean_fd < 0] = np.nan
    return AbideDataset(
        time_series=series, file_ids=np.asarray(ids, dtype=object),
        sites=rows["SITE_ID"].astype(str).to_numpy(dtype=object),
        diagnosis=np.asarray([DIAGNOSIS[int(v)] for v in dx], dtype=object),
        age=age, sex=sex, regions=list(regions), files=files, missing_regions=missing,
        root=str(root), pipeline=pipeline, strategy=strategy, derivative=derivative,
        notes=notes, mean_fd=mean_fd)
