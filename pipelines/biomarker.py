"""Connectome biomarkers: leakage-free, site-aware classification of subjects.

``decoder run configs/abide.yaml --data <ABIDE root>`` reads the ABIDE PCP
time series (or extracts them from fMRIPrep-style images), evaluates a
:class:`~decoder.models.biomarker_models.ConnectomeClassifier` with
leave-site-out (default), stratified (group) k-fold or repeated k-fold
cross-validation, and writes ``metrics.json`` (with ``per_site`` and, where the
data give head motion, a ``confounds`` check of the held-out probabilities),
``predictions.tsv``, the model refitted on every subject (``model.skops``)
and its model card.

Every step that learns across subjects — the tangent reference, ComBat,
scaling, the edge reliabilities, the model and its hyper-parameter search —
is fitted inside each training fold.  The only steps computed once for all
subjects are each subject's own covariances (whole scan and its two
halves), which use that subject's data alone.

Functions for the app: :func:`load_model`, :func:`predict_subject`,
:func:`connectivity_matrix`, :func:`example_subjects`.
"""

from __future__ import annotations

import json
import logging
import time
from pathlib import Path

import numpy as np
import pandas as pd

from decoder._utils import absolute_path, atomic_write_json, sha256_file, user_cache_dir
from decoder.data.datalad import ensure_local
from decoder.data.timeseries_io import (MAX_MISSING_REGIONS, MIN_TIMEPOINTS,  # noqa: F401
                                         check_subject_series)
from decoder.errors import ConfigError, DataError, check_choice
from decoder.evaluation.confounds import confound_check
from decoder.evaluation.compare import auc_interval
from decoder.evaluation.cv import make_cv
from decoder.evaluation.metrics import (chance_level, classification_metrics,
                                      cluster_bootstrap_interval, wilson_interval)
from decoder.models.model_card import read_model_card
from decoder.results import build_provenance, check_writable, file_records, write_run

log = logging.getLogger(__name__)

POSITIVE = "autism"
CLASSES = ["control", "autism"]
SHIPPED_DIR = Path(__file__).resolve().parents[1] / "decoder" / "models" / "_shipped"
SHIPPED_MODEL = SHIPPED_DIR / "abide_model.skops"
EXAMPLES_DIR = Path(__file__).resolve().parents[1] / "decoder" / "data" / "_sample" / "abide_examples"

DEFAULTS = {
    "task": "biomarker",
    "name": "abide",
    "dataset": {
        "kind": "abide",            # abide | fmriprep
        "root": None,               # or --data
        "pipeline": "cpac",
        "strategy": "filt_noglobal",
        "derivative": "rois_ho",
        "sites": None,              # list of SITE_ID to keep
        "max_subjects": None,
        "exclude": None,            # FILE_IDs / participant ids left out (e.g. shipped examples)
        # fmriprep kind: participants.tsv columns and BOLD pattern
        "participants": "participants.tsv",
        "label_column": "diagnosis",
        "positive_label": "autism",
        "negative_label": None,     # the other group's value; null: the one other value
        "site_column": "site",
        "bold_pattern": "*_desc-preproc_bold.nii.gz",
        "atlas": None,
        "atlas_type": None,
        "atlas_labels": None,       # the regions' lookup table, when not beside the atlas
        "confounds_strategy": "simple",
        "cache_dir": None,
    },
    "connectivity": {
        "kinds": ["tangent", "correlation"],
        "reference": "log-euclidean",
        "shrinkage": "ledoit-wolf",
        "reliability": "split-half",  # split-half | none: edges weighted by reliability
    },
    "harmonize": {
        "method": "combat",         # combat | none
        "unseen_site": "self",      # self | pooled
    },
    "confounds": {
        "remove": [],               # e.g. [mean_fd]: regressed out of every edge, in-fold
    },
    "model": "ridge",               # ridge | logistic | svm | mlp
    "model_params": {"*": None},
    "inner_splits": 5,
    "cv": "leave-site-out",
    "n_splits": 10,
    "n_repeats": 10,
    "random_state": 0,
    "n_permutations": 0,
    "save_model": True,
    # folds fitted in parallel processes (joblib; -1: one per core), or on a Dask cluster
    # (scheduler: tcp://host:8786, or $DECODER_SCHEDULER); results are identical.
    "compute": {"n_jobs": 1, "progress": True, "scheduler": None},
}

#: the dataset keys a run records (and a model card states) for each kind of dataset
DATASET_KEYS = {"abide": ("pipeline", "strategy", "derivative"),
                "fmriprep": ("participants", "bold_pattern", "atlas", "atlas_type",
                             "atlas_labels", "confounds_strategy", "label_column",
                             "positive_label", "negative_label")}

#: dataset keys only an images (fmriprep) dataset reads
_FMRIPREP_ONLY = ("participants", "label_column", "positive_label", "negative_label",
                  "site_column", "bold_pattern", "atlas", "atlas_type", "atlas_labels",
                  "confounds_strategy")

_CV_ALIASES = {"stratified-10fold": "stratified-kfold", "kfold": "stratified-kfold",
               "leave-one-site-out": "leave-site-out"}
#: the evaluation schemes for subjects (run-wise schemes belong to category decoding)
CV_SCHEMES = ("leave-site-out", "stratified-kfold", "stratified-group-kfold",
              "repeated-stratified-kfold")


def _count(config, key, minimum):
    value = config[key]
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise ConfigError(f"{key} '{value}' is not supported",
                          f"use a whole number of at least {minimum}")


def check_config(config) -> None:
    """Check a resolved config's choices before any data are read.

    A wrong model, scheme, kind, reference or shrinkage then stops at once with
    its own one-line error, instead of after loading every subject (or behind a
    missing ``--data``).  Choices that depend on the data (confound names, folds
    per class) are checked when the data are there.
    """
    check_choice("cv", _CV_ALIASES.get(config["cv"], config["cv"]), CV_SCHEMES)
    _count(config, "n_splits", 2)
    _count(config, "n_repeats", 1)
    from decoder.config import check_run_numbers
    check_run_numbers(config)
    _count(config, "inner_splits", 2)
    n_jobs = config["compute"]["n_jobs"]
    if isinstance(n_jobs, bool) or not isinstance(n_jobs, int) or n_jobs == 0 or n_jobs < -1:
        raise ConfigError(f"compute.n_jobs '{n_jobs}' is not supported",
                          "use a number of processes (1, 2, …) or -1 for one per core")
    from decoder.compute import check_compute, scheduler_address
    # an address, if any, from the config or $DECODER_SCHEDULER (not contacted)
    check_compute({"scheduler": scheduler_address(config["compute"].get("scheduler"))})
    ds = config["dataset"]
    check_choice("dataset.kind", ds["kind"], ("abide", "fmriprep"))
    if ds["kind"] == "fmriprep":
        _check_fmriprep_choices(ds)
    else:   # a label or layout of images set for ABIDE would be ignored: the run would
        # decode DX_GROUP from the .1D files all the same, with nothing said
        unused = [k for k in _FMRIPREP_ONLY if ds[k] != DEFAULTS["dataset"][k]]
        if unused:
            raise ConfigError(f"dataset.{unused[0]} applies to dataset.kind: fmriprep (BOLD "
                              "images); ABIDE's label is DX_GROUP and its sites SITE_ID",
                              f"remove dataset.{unused[0]}, or set dataset.kind=fmriprep")
    make_classifier(config).check_params()


def _check_fmriprep_choices(ds) -> None:
    """The atlas and the confound strategy of an image dataset, before any image is read
    (a dry run would otherwise pass what the run refuses)."""
    for key in ("participants", "label_column", "positive_label", "site_column"):
        if ds[key] is None or not str(ds[key]).strip():
            raise ConfigError(f"dataset.{key} is empty",
                              f"set it (default: {DEFAULTS['dataset'][key]})")
    if ds["negative_label"] is not None and \
            str(ds["negative_label"]).strip().lower() == str(ds["positive_label"]).strip().lower():
        raise ConfigError(f"dataset.negative_label and dataset.positive_label are both "
                          f"'{ds['positive_label']}'",
                          "name the two groups compared: the positive one and the other")
    if str(ds["label_column"]) == str(ds["site_column"]):
        # sites would be the classes: ComBat would remove the label's effect as a site's
        raise ConfigError(f"dataset.label_column and dataset.site_column are both "
                          f"'{ds['label_column']}'",
                          "name the site column with dataset.site_column (a column of one "
                          "value for a single site)")
    from decoder.data.bids import check_confound_strategy
    check_confound_strategy(ds["confounds_strategy"], "dataset.confounds_strategy")
    atlas = ds["atlas"]
    if not atlas:
        raise ConfigError("dataset.atlas is required for dataset.kind: fmriprep",
                          "set dataset.atlas to a NIfTI/coordinates file or e.g. 'power'")
    from decoder.features.timeseries import NILEARN_ATLASES
    if str(atlas).lower() not in NILEARN_ATLASES:
        path = absolute_path(str(atlas))
        if not (path.is_file() or path.is_symlink()):  # (annexed: got with the data)
            raise DataError(f"atlas file not found: {path}",
                            "check dataset.atlas, or name a nilearn atlas: "
                            + ", ".join(NILEARN_ATLASES))
    if ds.get("atlas_labels"):
        path = absolute_path(str(ds["atlas_labels"]))
        if not (path.is_file() or path.is_symlink()):
            raise DataError(f"dataset.atlas_labels: lookup table not found: {path}",
                            "give the atlas's table of label values and names (e.g. "
                            "Schaefer's *_order.txt), or leave the key out")


# ------------------------------------------------------------------------- data
class _Subjects:
    """Time series + labels + sites + covariates + provenance of the input files."""

    def __init__(self, time_series, diagnosis, sites, covariates, ids, files, regions, root,
                 notes=(), dataset_info=None, confounds=None, sex_coded=True,
                 series_files=None, region_names=None, region_coords=None):
        self.time_series = time_series
        # what an image atlas says of its regions (names, world coordinates), for the
        # report and the app; None where it says nothing (ABIDE names its own atlases)
        self.region_names = None if region_names is None else [str(n) for n in region_names]
        self.region_coords = region_coords
        # each subject's own input file (a .1D, a BOLD image), in the order of ``ids``
        self.series_files = None if series_files is None else list(series_files)
        self.diagnosis = np.asarray(diagnosis, dtype=object)
        self.sites = np.asarray(sites).astype(str)
        self.covariates = covariates.reset_index(drop=True)
        self.ids = np.asarray(ids, dtype=object)
        self.files = list(files)
        self.regions = list(regions)
        self.root = root
        self.notes = list(notes)
        self.dataset_info = dataset_info or {}
        # nuisance variables for the confound check (e.g. mean_fd); never model inputs
        self.confounds = (pd.DataFrame(index=range(len(self.ids))) if confounds is None
                          else confounds.reset_index(drop=True))
        # covariates["sex"] follows ABIDE's coding (1 male, 2 female), so groups can be named
        self.sex_coded = bool(sex_coded) and "sex" in self.covariates


def _data_root(config, data):
    root = data or config["dataset"].get("root")
    if root is None:
        raise ConfigError("no data root for the biomarker pipeline",
                          "pass --data <ABIDE root> (the folder with "
                          "Phenotypic_V1_0b_preprocessed1.csv and Outputs/); "
                          "'decoder fetch abide-pcp' downloads it to data/abide-pcp (187 MB)")
    # absolute, so the input paths built from it are not read as relative to the root
    return absolute_path(root)


def _load_abide(config, root) -> _Subjects:
    from decoder.data.abide import PHENOTYPIC_FILE, load_abide, select_abide
    ds = config["dataset"]
    table = Path(root) / PHENOTYPIC_FILE
    ensure_local(root, [table])  # the table chooses the subjects, whose files alone are got
    sel = select_abide(root, ds["pipeline"], ds["strategy"], ds["derivative"],
                       sites=ds["sites"], max_subjects=ds["max_subjects"], exclude=ds["exclude"])
    dataset_info = ensure_local(root, [table, *sel.files])
    d = load_abide(root, ds["pipeline"], ds["strategy"], ds["derivative"], selection=sel)
    # the phenotypic table is an input too: labels, sites, age and sex come from it
    return _Subjects(d.time_series, d.diagnosis, d.sites, d.covariates, d.file_ids,
                     [*d.files, table], d.regions, root, d.notes,
                     dataset_info, confounds=d.confounds, series_files=d.files)


def fmriprep_inputs(config, root, fetch: bool = True):
    """The subjects and files of a ``dataset.kind: fmriprep`` run, nothing but the
    participants table read: ``(table_path, rows, bolds, read)``.

    ``rows`` are the participants table's rows with an image, ``bolds`` their images and
    ``read`` every file the run reads (table, images, confounds and their sidecars, atlas
    file).  With ``fetch`` false an annexed table whose content is not here is an error.
    """
    ds = config["dataset"]
    if not ds["atlas"]:
        raise ConfigError("dataset.atlas is required for dataset.kind: fmriprep",
                          "set dataset.atlas to a NIfTI/coordinates file or e.g. 'power'")
    table_path = root / ds["participants"]
    if fetch and table_path.is_symlink() and not table_path.exists():  # annexed, not fetched
        ensure_local(root, [table_path])
    if table_path.is_symlink() and not table_path.exists():
        raise DataError(f"the participants table {table_path} is not here yet",
                        "run without --dry-run, which gets it (the subjects come from it)")
    if table_path.is_dir():
        raise DataError(f"dataset.participants {table_path} is a folder",
                        "name the table file itself (e.g. participants.tsv)")
    if not table_path.is_file():
        raise DataError(f"participants table not found: {table_path}",
                        "add a participants.tsv with participant_id, diagnosis and site "
                        "columns, or name yours with --set dataset.participants=PATH")
    label, site = ds["label_column"], ds["site_column"]
    # labels and sites as written ('1', not 1.0); 'n/a' and empty cells are missing; a
    # .csv table is read comma-separated (BIDS writes .tsv)
    sep = "," if table_path.suffix.lower() == ".csv" else "\t"
    table = pd.read_csv(table_path, sep=sep, dtype={"participant_id": str, label: str,
                                                    site: str}, na_values=["n/a"])
    if sep == "\t" and len(table.columns) == 1 and "," in str(table.columns[0]):
        raise DataError(f"{table_path}: the table is comma-separated, read as tab-separated",
                        "save it tab-separated, or name it .csv")
    for col in ("participant_id", label, site):
        if col not in table.columns:
            raise DataError(f"{table_path}: no column '{col}'",
                            "add it or set dataset.label_column / dataset.site_column")
    table = _select_participants(table, table_path, ds)
    bolds, rows = [], []
    for _, row in table.iterrows():
        pid = row["participant_id"]
        found = _matching(_subject_folder(root, pid), ds["bold_pattern"])
        if not found:
            log.warning("%s: no BOLD image matching %s; subject skipped", pid, ds["bold_pattern"])
            continue
        if len(found) > 1:  # two runs, sessions or tasks: which one is meant is not ours to guess
            raise DataError(f"{pid}: {len(found)} images match dataset.bold_pattern "
                            f"{ds['bold_pattern']} ({found[0].name}, {found[1].name}"
                            f"{', …' if len(found) > 2 else ''})",
                            "narrow dataset.bold_pattern to one image per subject (e.g. "
                            "'*_task-rest_run-1_*desc-preproc_bold.nii.gz')")
        bolds.append(found[0])
        rows.append(row)
    if not rows:
        raise DataError(f"no BOLD image matching {ds['bold_pattern']} under {root}",
                        "check dataset.bold_pattern")
    _check_diagnoses(pd.DataFrame(rows), table_path, ds)
    # every file the run reads, fetched at once from a DataLad dataset and recorded: the
    # confounds (and their JSON sidecar, which nilearn's load_confounds_strategy reads)
    # beside each image, and the participants table with the labels
    from decoder.data.bids import confound_files
    read = [table_path, *bolds, *(f for bold in bolds for f in confound_files(bold))]
    atlas_path = absolute_path(str(ds["atlas"]))
    if atlas_path.is_symlink() or atlas_path.exists():  # (a nilearn atlas name is not a file)
        read.append(atlas_path)
        from decoder.features.timeseries import lookup_table_path
        names = lookup_table_path(atlas_path)           # the regions' names, if beside it
        if names is not None and not ds.get("atlas_labels"):
            read.append(names)
    if ds.get("atlas_labels"):
        read.append(absolute_path(str(ds["atlas_labels"])))
    return table_path, rows, bolds, read


def _matching(folder, pattern) -> list[Path]:
    """The files under ``folder`` whose path ends as ``pattern`` does (``rglob``'s match),
    an annexed file whose content is not here yet (a broken link) included: ``rglob`` of a
    pattern without wildcards (``rfMRI_REST1_LR.nii.gz``) leaves such links out."""
    return sorted(p for p in Path(folder).rglob("*") if p.match(pattern)
                  and (p.is_symlink() or p.is_file()))


def _subject_folder(root, pid) -> Path:
    """A participant's folder: ``sub-<id>`` as BIDS names it, else ``<id>`` as the Human
    Connectome Project's layout does (``HCP1200/100206/MNINonLinear/…``)."""
    bids = root / pid
    bare = root / pid[len("sub-"):]
    return bids if bids.is_dir() or not bare.is_dir() else bare


def _select_participants(table, table_path, ds) -> pd.DataFrame:
    """The participants table's rows that ``dataset.sites``, ``dataset.exclude``,
    ``dataset.negative_label`` and ``dataset.max_subjects`` keep (as for ABIDE; the first
    ``max_subjects`` of the two groups compared), with ``participant_id`` as ``sub-<id>``."""
    table = table.copy()
    ids = table["participant_id"].astype(str).str.strip()
    table["participant_id"] = [i if i.startswith("sub-") else f"sub-{i}" for i in ids]
    table = table.drop_duplicates()   # a row repeated word for word is harmless (as ABIDE's)
    twice = table["participant_id"][table["participant_id"].duplicated(keep=False)]
    if len(twice):  # its image would be read twice, and could be trained on and tested
        first = twice.iloc[0]
        raise DataError(f"{table_path}: participant '{first}' has "
                        f"{int((twice == first).sum())} rows ({twice.nunique()} participant(s) "
                        "listed more than once)",
                        "keep one row per participant (a subject in two rows could be in "
                        "both the training and the test folds)")
    site = ds["site_column"]
    blank = table[site].isna() | (table[site].astype(str).str.strip() == "")
    keep = np.ones(len(table), bool)
    if ds["exclude"] is not None:
        excluded = [ds["exclude"]] if isinstance(ds["exclude"], str) else list(ds["exclude"])
        excluded = {e if str(e).startswith("sub-") else f"sub-{e}" for e in map(str, excluded)}
        bad = sorted(excluded - set(table["participant_id"]))
        if bad:  # a typo would leave the subject in, silently
            raise ConfigError(f"dataset.exclude: '{bad[0]}' is not a participant_id of "
                              f"{table_path.name}", "check the spelling (e.g. sub-01)")
        keep &= ~table["participant_id"].isin(excluded).to_numpy()
    if ds["sites"] is not None:
        sites = [ds["sites"]] if isinstance(ds["sites"], str) else list(map(str, ds["sites"]))
        known = set(table.loc[~blank, site].astype(str))
        bad = [x for x in sites if x not in known]
        if bad:
            raise ConfigError(f"dataset.sites: no participant from site '{bad[0]}' in "
                              f"{table_path.name}", f"use some of: {', '.join(sorted(known))}")
        keep &= table[site].astype(str).isin(sites).to_numpy()
    table = _two_groups(table[keep], table_path, ds)
    if ds["max_subjects"] is not None:
        table = table.iloc[: int(ds["max_subjects"])]
    if table.empty:
        raise DataError(f"no participant of {table_path} left after filtering",
                        "relax dataset.sites / dataset.max_subjects / dataset.exclude")
    blank = table[site].isna() | (table[site].astype(str).str.strip() == "")
    if blank.any():
        raise DataError(f"{table_path}: {site} of '{table['participant_id'][blank].iloc[0]}' "
                        f"is empty ({int(blank.sum())} participant(s))",
                        "fill in the site (leave-site-out and ComBat need it), or leave the "
                        "subject out with --set dataset.exclude=...")
    return table


def _two_groups(table, table_path, ds) -> pd.DataFrame:
    """With ``dataset.negative_label``, only the participants of the two groups compared
    (``positive_label`` and ``negative_label``, any letter case); those of other values are
    left out, counted in a warning, and their images never read. A missing value stays, to
    be refused by :func:`_check_diagnoses`."""
    negative = ds.get("negative_label")
    if negative is None:
        return table
    label = ds["label_column"]
    values = table[label].astype("string").str.strip().str.lower()
    wanted = {str(ds["positive_label"]).strip().lower(), str(negative).strip().lower()}
    other = (values.notna() & (values != "") & ~values.isin(wanted)).to_numpy(bool)
    if not (values == str(negative).strip().lower()).any():
        raise DataError(f"{table_path}: no participant has {label} '{negative}' (found: "
                        f"{', '.join(sorted(set(values.dropna())))})",
                        "set dataset.negative_label to the comparison group's value")
    if other.any():
        counts = values[other].value_counts()
        log.warning("%s: %d participant(s) with another %s left out (%s)", table_path.name,
                    int(other.sum()), label, ", ".join(f"{v} {n}" for v, n in counts.items()))
    return table[~other]


def _check_diagnoses(rows, table_path, ds) -> None:
    """Every kept subject's diagnosis is known and the table holds two: the positive label
    (``dataset.positive_label``, any letter case) and one other."""
    label, positive = ds["label_column"], str(ds["positive_label"]).strip().lower()
    values = rows[label].astype("string").str.strip()
    missing = values.isna() | (values == "")
    if missing.any():
        raise DataError(f"{table_path}: {label} of '{rows['participant_id'][missing].iloc[0]}' "
                        f"is missing ({int(missing.sum())} participant(s))",
                        "fill it in, or leave the subject out with --set dataset.exclude=...")
    found = sorted(set(values.str.lower()))
    if positive not in found:
        raise DataError(f"{table_path}: no participant has {label} "
                        f"'{ds['positive_label']}' (found: {', '.join(found)})",
                        "set dataset.positive_label to the patients' value")
    if len(found) > 2:
        raise DataError(f"{table_path}: {label} has {len(found)} values ({', '.join(found)}); "
                        "a biomarker compares two groups",
                        "name the comparison group with dataset.negative_label (the others "
                        "are left out), or recode the column")


def fmriprep_diagnosis(rows, ds) -> np.ndarray:
    """The participants' diagnoses as the pipeline names them (checked by
    :func:`fmriprep_inputs`): ``dataset.positive_label`` in any letter case, or control."""
    values = rows[ds["label_column"]].astype(str).str.strip().str.lower()
    return np.where(values == str(ds["positive_label"]).strip().lower(), POSITIVE, "control")


def _load_fmriprep(config, root) -> _Subjects:
    from decoder.features.timeseries import TimeSeriesExtractor
    ds = config["dataset"]
    table_path, rows, bolds, read = fmriprep_inputs(config, root)
    # (an atlas outside the dataset is recorded, not fetched)
    dataset_info = ensure_local(root, [p for p in read if p.is_relative_to(root)])
    table = pd.DataFrame(rows)
    cache = (Path(ds["cache_dir"]).expanduser() if ds["cache_dir"]
             else user_cache_dir() / "timeseries")  # never inside the dataset
    extractor = TimeSeriesExtractor(ds["atlas"], ds["atlas_type"], ds["confounds_strategy"],
                                    cache_dir=cache, labels_file=ds.get("atlas_labels"))
    cov, sex_coded = _participant_covariates(table, table_path)   # before any image is read
    ts = extractor(bolds)
    from decoder.data.timeseries_io import regions_with_signal
    for series, bold, pid in zip(ts, bolds, table["participant_id"]):
        # refused as a prediction would be, with the image named (empty regions are kept)
        try:
            check_subject_series(series, str(bold), max_missing=1.0)
            if regions_with_signal(series).sum() < 2:
                raise DataError(f"{bold}: fewer than 2 regions with signal (an empty or "
                                "constant image?)", "")
        except DataError as err:
            raise DataError(err.message, f"exclude the subject (--set dataset.exclude={pid}) "
                            "or check the image") from None
    diag = fmriprep_diagnosis(table, ds)
    label_note = _label_not_covariate(cov, ds["label_column"], _sex_column(table))
    notes = _impute_covariates(cov, table["participant_id"].to_numpy(), table_path)
    notes += label_note
    if "mean_fd" in table.columns:
        mean_fd = pd.to_numeric(table["mean_fd"], errors="coerce").to_numpy(float)
    else:  # from fMRIPrep's own confounds file beside each image
        mean_fd = np.array([_fmriprep_mean_fd(root, b) for b in bolds])
    confounds = (pd.DataFrame({"mean_fd": mean_fd}) if np.isfinite(mean_fd).any()
                 else pd.DataFrame(index=range(len(bolds))))
    regions = _region_names(extractor, ts)
    names, coords = _atlas_regions(extractor, regions)
    return _Subjects(ts, diag, table[ds["site_column"]].astype(str), cov,
                     table["participant_id"], read, regions,
                     root, notes=notes, dataset_info=dataset_info, confounds=confounds,
                     sex_coded=sex_coded, series_files=bolds, region_names=names,
                     region_coords=coords)



def _label_not_covariate(cov, label, sex_column=None) -> list[str]:
    """Drop the label from the covariates (in place) when it is one of them (predicting sex
    or age; ``sex_column``: the table's column the sex came from, e.g. ``gender``): ComBat
    adjusts each subject's features with its own covariates, so a held-out subject's label
    would enter its features.  Returns the note saying so."""
    name = "sex" if sex_column is not None and label == sex_column else label
    if name not in cov.columns:
        return []
    del cov[name]
    note = (f"'{label}' is the label, so ComBat does not preserve it as a covariate (a "
            f"held-out subject's {label} would enter its features)")
    log.warning(note)
    return [note]


def _impute_covariates(cov, ids, table_path) -> list[str]:
    """Fill missing ages (median) and sexes (the most common value) in place, as for ABIDE,
    so that ComBat can preserve them; returns the notes saying whom it concerned."""
    notes = []
    for name, how in (("age", "the median age"), ("sex", "the most common sex")):
        if name not in cov or not cov[name].isna().any():
            continue
        missing = cov[name].isna().to_numpy()
        if missing.all():
            raise DataError(f"{table_path}: no participant has a usable {name}",
                            f"fill in the {name} column, or remove it")
        value = cov[name].median() if name == "age" else cov[name].mode().iloc[0]
        notes.append(f"{name} missing or not a number for {int(missing.sum())} participant(s) "
                     f"(e.g. {ids[missing][0]}): replaced by {how}")
        log.warning("%s: %s", table_path.name, notes[-1])
        cov[name] = cov[name].fillna(value)
    return notes


def _region_names(extractor, ts) -> list[str]:
    """The atlas's names of the columns (label values of a labels atlas), else positions."""
    labels = list((extractor._atlas or {}).get("labels") or [])
    n = ts[0].shape[1]
    return [str(x) for x in labels] if len(labels) == n else [str(i) for i in range(n)]


def _atlas_regions(extractor, regions) -> tuple[list | None, list | None]:
    """The names and world coordinates (mm, rounded to 0.1) of an image atlas's regions,
    in the order of ``regions``; each None when the atlas does not give them."""
    from decoder.features.timeseries import atlas_coordinates
    atlas = extractor._atlas or {}
    if [str(x) for x in atlas.get("labels") or []] != list(regions):
        return None, None
    names = atlas.get("names")
    names = [str(x) for x in names] if names is not None and len(names) == len(regions) \
        else None
    coords = atlas_coordinates(atlas)
    coords = None if coords is None else np.round(coords, 1).tolist()
    return names, coords


def _sex_column(table) -> str | None:
    """The participants table's column of sex: ``sex`` as BIDS names it, else ``gender``
    (as in OpenNeuro ds000030)."""
    return next((c for c in ("sex", "gender") if c in table.columns), None)


def _participant_covariates(table, table_path=None) -> tuple[pd.DataFrame, bool]:
    """Age and sex (the ``sex`` column, else ``gender``) from a participants table, as
    numbers for ComBat.

    BIDS tables usually write sex as ``M``/``F`` (or male/female): these become ABIDE's
    codes (1 male, 2 female), which also lets the subgroup scores name them.  A numeric
    column is kept as it is (its coding is the dataset's own).  Returns the covariates
    and whether sex follows the 1 = male, 2 = female coding.
    """
    cov = pd.DataFrame(index=table.index)
    if "age" in table.columns:
        cov["age"] = pd.to_numeric(table["age"], errors="coerce")
    sex_coded = False
    column = _sex_column(table)
    if column is not None:
        raw = table[column]
        numeric = pd.to_numeric(raw, errors="coerce")
        words = raw[numeric.isna() & raw.notna() & (raw.astype(str).str.strip() != "")]
        if numeric.notna().any() and len(words):
            # read as numbers, every word would become missing and then the commonest
            # value: a column of M/F with one '2' lost its sexes
            raise DataError(f"{table_path or 'the participants table'}: column '{column}' "
                            f"mixes numbers and words ('{raw[numeric.notna()].iloc[0]}', "
                            f"'{words.iloc[0]}')",
                            "write sex one way for every participant (M/F, or the dataset's "
                            "numbers)")
        if numeric.notna().any():
            cov["sex"] = numeric
        else:
            cov["sex"] = [SEX_CODES.get(sex_label(v), np.nan) if pd.notna(v) else np.nan
                          for v in raw]
            sex_coded = True
    return cov, sex_coded


def _fmriprep_mean_fd(root, bold) -> float:
    """Mean framewise displacement from the fMRIPrep confounds file of ``bold`` (NaN if none)."""
    from decoder.data.bids import find_confounds
    path = find_confounds(bold)
    if path is None:
        return float("nan")
    ensure_local(root, [path])
    try:
        fd = pd.read_csv(path, sep="\t", na_values=["n/a"],
                         usecols=["framewise_displacement"])["framewise_displacement"]
    except (ValueError, KeyError, OSError):
        log.info("%s: no framewise_displacement column; no motion value", path)
        return float("nan")
    return float(np.nanmean(fd.to_numpy(float))) if fd.notna().any() else float("nan")


def load_subjects(config, data=None) -> _Subjects:
    """Read the subjects declared by ``config['dataset']`` (root from ``data`` or the config)."""
    root = _data_root(config, data)
    kind = config["dataset"]["kind"]
    if kind == "abide":
        return _load_abide(config, root)
    if kind == "fmriprep":
        return _load_fmriprep(config, root)
    raise ConfigError(f"dataset.kind '{kind}' is not supported", "use abide or fmriprep")


# ------------------------------------------------------------------------- model
def make_classifier(config):
    """The :class:`ConnectomeClassifier` a config describes."""
    from decoder.models.biomarker_models import ConnectomeClassifier
    c, h = config["connectivity"], config["harmonize"]
    kinds = c["kinds"]
    kinds = [kinds] if isinstance(kinds, str) else list(kinds)
    params = {k: v for k, v in (config.get("model_params") or {}).items() if k != "*"}
    return ConnectomeClassifier(kinds=tuple(kinds), reference=c["reference"],
                                shrinkage=c["shrinkage"], harmonize=h["method"],
                                unseen_site=h["unseen_site"], reliability=c["reliability"],
                                model=config["model"],
                                model_params=params or None,
                                inner_splits=config["inner_splits"],
                                random_state=config["random_state"],
                                remove_confounds=tuple(_confounds_to_remove(config)))


def _confounds_to_remove(config) -> list:
    names = (config.get("confounds") or {}).get("remove") or []
    return [names] if isinstance(names, str) else list(names)


def model_covariates(config, subjects):
    """Covariates handed to the classifier: age/sex, plus the confounds it removes."""
    names = _confounds_to_remove(config)
    if not names:
        return subjects.covariates
    for name in names:
        check_choice("confounds.remove", name, list(subjects.confounds.columns) or ["(none)"])
    return pd.concat([subjects.covariates, subjects.confounds[names]], axis=1)


def _positive_column(est):
    return list(est.classes_).index(POSITIVE)


def check_two_classes(diagnosis) -> None:
    """A one-line error when every subject has the same diagnosis."""
    diagnosis = np.asarray(diagnosis).astype(str)
    if len(set(diagnosis)) < 2:
        raise DataError(f"all {len(diagnosis)} subjects are {diagnosis[0]}: a classifier needs "
                        "both autism and control subjects",
                        "check the diagnoses and the dataset filters (dataset.sites, "
                        "dataset.exclude)")


def check_folds(config, diagnosis, sites):
    """The config's cross-validation for these subjects, checked: ``(scheme, splitter,
    uses_groups)``; a one-line error when the data cannot fill its folds."""
    scheme = _CV_ALIASES.get(config["cv"], config["cv"])
    splitter, uses_groups = make_cv(scheme, groups=sites, n_splits=config["n_splits"],
                                    n_repeats=config["n_repeats"],
                                    random_state=config["random_state"])
    n_sites = len(np.unique(sites)) if sites is not None else 0
    if uses_groups and scheme != "leave-site-out" and n_sites < config["n_splits"]:
        raise DataError(f"cv '{scheme}' with {config['n_splits']} folds needs at least "
                        f"{config['n_splits']} sites, the data have {n_sites}",
                        f"lower n_splits (--set n_splits={max(n_sites, 2)}) or use "
                        "cv: leave-site-out")
    if not uses_groups:
        counts = pd.Series(np.asarray(diagnosis)).value_counts()
        if counts.min() < config["n_splits"]:
            raise DataError(f"cv '{scheme}' with {config['n_splits']} folds needs at least "
                            f"{config['n_splits']} subjects per class, the smallest class has "
                            f"{counts.min()}", "lower n_splits or add subjects")
    return scheme, splitter, uses_groups


def cross_validate(config, covs, diagnosis, sites, covariates, labels=None, halves=None,
                   patterns=None, estimators=None):
    """Out-of-fold autism probabilities and the fold assignment.

    Parameters
    ----------
    covs : ndarray (n, R, R)
        Per-subject covariances (subject-wise, hence computed once).
    labels : ndarray, optional
        Labels to fit on (a permutation for the null); defaults to ``diagnosis``.
    halves : ndarray (n, 2, R, R), optional
        Split-half covariances (needed with ``connectivity.reliability: split-half``).
    patterns : list, optional
        When given, each fold's ``edge_patterns_`` (fitted on its training
        subjects), signed so that positive means stronger towards autism, is
        appended to it.
    estimators : list, optional
        When given, each fold's fitted classifier is appended to it (a
        leave-site-out permutation test reuses their label-free steps).

    Returns
    -------
    proba : ndarray (n_repeats_total, n)  — one row per repetition
    folds : list of (train, test) index arrays
    """
    from sklearn.base import clone
    y = np.asarray(diagnosis if labels is None else labels)
    scheme, splitter, uses_groups = check_folds(config, y, sites)
    folds = list(splitter.split(covs, y, sites if uses_groups else None))
    n_rep = config["n_repeats"] if scheme == "repeated-stratified-kfold" else 1
    proba = np.full((n_rep, len(y)), np.nan)
    base = make_classifier(config)
    per_rep = len(folds) // n_rep
    for i, (tr, _) in enumerate(folds):
        if len(np.unique(y[tr])) < 2:
            raise DataError(f"a training fold has a single class (fold {i})",
                            "use cv: stratified-group-kfold or add subjects of both classes")
    fitted = _map_folds(config, _fit_fold,
                        [(clone(base), covs, y, sites, covariates, halves, tr, te)
                         for tr, te in folds], desc="folds" if labels is None else None)
    for i, ((_, te), (est, p)) in enumerate(zip(folds, fitted)):
        proba[i // per_rep, te] = p
        if patterns is not None:  # oriented towards autism (classes_[1] may be either)
            sign = 1.0 if est.classes_[1] == POSITIVE else -1.0
            patterns.append({k: sign * v for k, v in est.edge_patterns_.items()})
        if estimators is not None:
            estimators.append(est)
    return proba, folds


def _fit_fold(est, covs, y, sites, covariates, halves, tr, te):
    """Fit one fold's classifier on its training subjects; its held-out probabilities."""
    est.fit(covs[tr], y[tr], sites=sites[tr], covariates=covariates.iloc[tr],
            halves=None if halves is None else halves[tr])
    p = est.predict_proba(covs[te], sites=sites[te], covariates=covariates.iloc[te])
    return est, p[:, _positive_column(est)]


class _FoldCluster:
    """Folds on a Dask cluster: one client per scheduler for the whole run, and each large
    array the folds share (covariances, split halves) sent once to every worker rather
    than with every fold (a stratified permutation test maps the folds once per
    permutation)."""

    def __init__(self, scheduler):
        from decoder.compute import DaskBackend
        self.backend = DaskBackend(scheduler)
        self.client = self.backend.client
        self._shared = []          # (array, future)

    def _share(self, value):
        if not isinstance(value, np.ndarray) or value.nbytes < (1 << 20):
            return value
        for array, future in self._shared:
            if array is value:
                return future
        future = self.client.scatter(value, broadcast=True, hash=False)
        self._shared.append((value, future))
        return future

    def map(self, func, args):
        """``func(*a)`` for each ``a`` on the cluster, yielded in order; the first failure
        is raised here (a fold's DataError keeps its one-line message)."""
        futures = [self.client.submit(func, *[self._share(x) for x in a], pure=False)
                   for a in args]
        try:
            for future in futures:
                yield future.result()
        finally:
            for future in futures:
                future.release()

    def close(self):
        self._shared.clear()
        self.backend.close()


_FOLD_CLUSTERS: dict = {}


def _fold_cluster(scheduler) -> _FoldCluster:
    key = scheduler if isinstance(scheduler, str) else id(scheduler)
    if key not in _FOLD_CLUSTERS:
        _FOLD_CLUSTERS[key] = _FoldCluster(scheduler)
    return _FOLD_CLUSTERS[key]


def _close_fold_clusters() -> None:
    while _FOLD_CLUSTERS:
        _FOLD_CLUSTERS.popitem()[1].close()


def _map_folds(config, func, args, desc=None) -> list:
    """``[func(*a) for a in args]``, in order: in ``compute.n_jobs`` processes (joblib), or
    on the Dask cluster of ``compute.scheduler`` (or ``$DECODER_SCHEDULER``).

    Each fold is fitted with single-threaded BLAS, so processes (or workers) are what use
    the cores; the folds are independent and deterministic, so the results do not depend
    on where they ran.  A progress bar (tqdm, on a terminal) counts the folds done.
    """
    from joblib import Parallel, delayed
    from tqdm.auto import tqdm
    from decoder.compute import local_workers, scheduler_address
    compute = config.get("compute") or {}
    scheduler = scheduler_address(compute.get("scheduler"))
    n_jobs = local_workers(compute.get("n_jobs", 1), len(args))
    bar = tqdm(total=len(args), desc=desc, unit="fold", leave=False,
               disable=None if (desc and compute.get("progress", True)) else True)
    if scheduler:
        results = _fold_cluster(scheduler).map(func, args)
    elif n_jobs == 1:                                           # one process: no pool at all
        results = (func(*a) for a in args)
    else:
        results = Parallel(n_jobs=n_jobs, return_as="generator")(delayed(func)(*a)
                                                                 for a in args)
    out = []
    with bar:
        for res in results:
            out.append(res)
            bar.update()
    return out


def _edges_summary(edges, n_folds, top=10) -> dict:
    """metrics.json → ``edges``: the strongest activation patterns (all in ``edges.tsv``)."""
    rows = edges.head(top)
    return {"kind": str(edges["kind"].iloc[0]) if len(edges) else None, "n_folds": n_folds,
            "file": "edges.tsv",
            "top": [{"regions": [r.region_a, r.region_b],
                     **({"names": [r.name_a, r.name_b]} if "name_a" in edges else {}),
                     "pattern": float(r.pattern),
                     "pattern_sd": float(r.pattern_sd),
                     "sign_consistency": float(r.sign_consistency), "higher_in": r.higher_in}
                    for r in rows.itertuples()]}


def _repeats_summary(diagnosis, proba_reps):
    """metrics.json → ``repeats``: each repetition's own scores (null for a single one).

    The pooled ``accuracy`` of repeated k-fold averages each subject's probabilities over
    the repetitions (a small ensemble); these are the scores of one repetition at a time,
    and their spread is how much the estimate depends on the split.
    """
    if len(proba_reps) < 2:
        return None
    scores = [_metrics_from_proba(diagnosis, p) for p in proba_reps]
    acc = [m["accuracy"] for m in scores]
    auc = [m["roc_auc"] for m in scores]
    return {"n_repeats": len(proba_reps), "accuracy": acc, "roc_auc": auc,
            "accuracy_mean": float(np.mean(acc)), "accuracy_sd": float(np.std(acc, ddof=1)),
            "roc_auc_mean": float(np.mean(auc)), "roc_auc_sd": float(np.std(auc, ddof=1))}


def _metrics_from_proba(diagnosis, proba):
    yp = np.where(proba > 0.5, POSITIVE, "control")
    return classification_metrics(diagnosis, yp, scores=proba, classes=CLASSES)


def _group_metrics(diagnosis, proba, groups, order) -> dict:
    """Accuracy / ROC AUC of the held-out predictions within each group in ``order``
    (groups without a subject are left out; AUC null when a group has one class)."""
    return {str(g): group_scores(diagnosis[groups == g], proba[groups == g])
            for g in order if np.any(groups == g)}


def group_scores(diagnosis, proba) -> dict:
    """Held-out scores of a group of subjects: ``n``, ``n_autism``, ``accuracy`` with its
    Wilson ``accuracy_ci95``, ``balanced_accuracy``, ``roc_auc`` with DeLong's
    ``roc_auc_ci95`` (null with one class)."""
    m = _metrics_from_proba(diagnosis, proba)
    return {"n": int(len(diagnosis)), "n_autism": int(np.sum(diagnosis == POSITIVE)),
            "accuracy": m["accuracy"], "accuracy_ci95": _accuracy_ci(diagnosis, proba),
            "balanced_accuracy": m["balanced_accuracy"], "roc_auc": m["roc_auc"],
            "roc_auc_ci95": auc_interval(diagnosis == POSITIVE, proba)}


def _accuracy_ci(diagnosis, proba) -> list:
    """95 % Wilson interval of the held-out accuracy (subjects are independent)."""
    correct = int(np.sum((proba > 0.5) == (diagnosis == POSITIVE)))
    return list(wilson_interval(correct, len(diagnosis)))


def per_site_metrics(diagnosis, proba, sites) -> dict:
    """Accuracy / ROC AUC per site from pooled held-out predictions (AUC null for one class)."""
    return _group_metrics(diagnosis, proba, np.asarray(sites), sorted(np.unique(sites)))


#: age bands of the subgroup scores: children, adolescents, adults (years at scan)
AGE_BANDS = (("under 12", 0.0, 12.0), ("12–17", 12.0, 18.0), ("18 and over", 18.0, np.inf))
#: ABIDE's SEX coding (phenotypic table), and its inverse
ABIDE_SEX = {1: "male", 2: "female"}
SEX_CODES = {label: code for code, label in ABIDE_SEX.items()}


def subject_groups(covariates, sex_coded=True) -> dict:
    """Each subject's sex and age band as labels (None where unknown), for
    :func:`per_subgroup_metrics`: ``{"sex": array, "age": array}``.  Sex is labelled
    when ``sex_coded`` (its coding is ABIDE's 1 = male, 2 = female)."""
    cov = covariates if covariates is not None else pd.DataFrame()
    out = {}
    if sex_coded and "sex" in cov:
        out["sex"] = np.array([ABIDE_SEX.get(int(v)) if pd.notna(v) else None
                               for v in pd.to_numeric(cov["sex"], errors="coerce")], dtype=object)
    if "age" in cov:
        age = pd.to_numeric(cov["age"], errors="coerce").to_numpy(float)
        out["age"] = np.array([age_band(a) for a in age], dtype=object)
    return out


_SEX_WORDS = {"1": "male", "2": "female", "m": "male", "f": "female", "male": "male",
              "female": "female"}


def sex_label(sex) -> str | None:
    """``"male"``/``"female"`` from ABIDE's code (1, 2) or a word (m/f, male/female);
    None when unknown."""
    if sex is None or (isinstance(sex, float) and np.isnan(sex)):
        return None
    if isinstance(sex, (int, float, np.number)):
        return ABIDE_SEX.get(int(sex)) if float(sex).is_integer() else None
    return _SEX_WORDS.get(str(sex).strip().lower())


def age_band(age) -> str | None:
    """The name of the :data:`AGE_BANDS` band of an age in years (None when unknown)."""
    try:
        age = float(age)
    except (TypeError, ValueError):
        return None
    return next((name for name, lo, hi in AGE_BANDS if lo <= age < hi), None)


def subgroup_accuracy(age, sex, per_subgroup, ages=None) -> dict:
    """The evaluation's held-out scores for subjects of this subject's sex and age band.

    Parameters
    ----------
    ages : (float, float), optional
        The training subjects' youngest and oldest ages: an age outside them gets no age
        band, whose held-out scores describe other ages (a 3-year-old is not one of the
        6-to-12-year-olds behind the "under 12" score).

    Returns
    -------
    dict
        ``{"sex": {"group": "female", "n": ..., "accuracy": ..., "accuracy_ci95": ...,
        ...}, "age": {...}}``; a key is absent when the subject's sex or age is unknown,
        the age is outside ``ages`` or the evaluation had no subject in that group.
    """
    if age is not None and ages and not ages[0] <= float(age) <= ages[1]:
        age = None
    out = {}
    for name, label in (("sex", sex_label(sex)), ("age", age_band(age))):
        scores = ((per_subgroup or {}).get(name) or {}).get(label) if label else None
        if scores:
            out[name] = {"group": label, **scores}
    return out


def per_subgroup_metrics(diagnosis, proba, groups: dict) -> dict:
    """Held-out accuracy / ROC AUC by sex and by age band (``metrics.json`` →
    ``per_subgroup``): does the model work as well for girls and women, or for children,
    as for the adult men who dominate ABIDE?  Computed from the same out-of-fold
    probabilities as the pooled scores; nothing is refitted."""
    orders = {"sex": ("male", "female"), "age": [b[0] for b in AGE_BANDS]}
    return {name: _group_metrics(diagnosis, proba, labels, orders.get(name, ()))
            for name, labels in groups.items()}


def calibration_table(diagnosis, proba, n_bins=5) -> list:
    """Observed autism rate per bin of held-out predicted probability."""
    edges = np.linspace(0, 1, n_bins + 1)
    out = []
    for lo, hi in zip(edges[:-1], edges[1:]):
        m = (proba >= lo) & ((proba < hi) | (hi == 1.0))
        out.append({"low": float(lo), "high": float(hi), "n": int(m.sum()),
                    "observed_rate": float(np.mean(diagnosis[m] == POSITIVE)) if m.any() else None})
    return out


def within_site_permutations(diagnosis, sites, n_permutations, random_state=0) -> list:
    """``n_permutations`` copies of ``diagnosis``, each shuffled within every site."""
    rng = np.random.default_rng(random_state)
    perms = []
    for _ in range(int(n_permutations)):
        perm = np.asarray(diagnosis).copy()
        for s in np.unique(sites):
            m = np.flatnonzero(sites == s)
            perm[m] = rng.permutation(perm[m])
        perms.append(perm)
    return perms


def _permutation_null_fixed_folds(config, covs, diagnosis, sites, covariates, perms,
                                  halves=None, fitted=None):
    """Null accuracies of ``perms`` under leave-site-out, refitting only the models.

    The folds do not depend on the labels, and nothing before the models sees a label
    (connectivity references, ComBat with age and sex, confound removal, scaling,
    reliability), so each fold's label-free steps are fitted once and every permutation
    refits the models and calibration on the cached features — the same null as
    refitting everything (``tests/test_biomarker_pipeline.py`` checks it), about 10×
    faster, and for ridge the Gram eigendecompositions are reused too.  ``fitted``: the
    classifiers of the same folds already fitted on the true labels (by
    :func:`cross_validate`), so that not even those are fitted again.
    """
    from sklearn.base import clone
    splitter, _ = make_cv("leave-site-out", groups=sites)
    folds = list(splitter.split(covs, diagnosis, sites))
    base = make_classifier(config)
    # fold by fold (one fold's features in memory per process), every permutation within it
    nulls = _map_folds(config, _fold_null, [
        (fitted[i] if fitted is not None else clone(base), fitted is None, covs, diagnosis,
         sites, covariates, halves, perms, tr, te, config["model"] == "ridge")
        for i, (tr, te) in enumerate(folds)], desc="permutations (folds)")
    proba = np.full((len(perms), len(diagnosis)), np.nan)
    for (_, te), null in zip(folds, nulls):
        proba[:, te] = null
    return [float(np.mean((p > 0.5) == (perm == POSITIVE))) for p, perm in zip(proba, perms)]


def _fold_null(est, fit, covs, diagnosis, sites, covariates, halves, perms, tr, te, ridge):
    """One leave-site-out fold's held-out probabilities under every permutation
    (``fit``: fit ``est``'s label-free steps first, else they are already fitted)."""
    from decoder.models.biomarker_models import LooRidgeClassifier
    if fit:
        est.fit(covs[tr], diagnosis[tr], sites=sites[tr], covariates=covariates.iloc[tr],
                halves=None if halves is None else halves[tr])
    x_tr = est.features(covs[tr], sites[tr], covariates.iloc[tr])
    x_te = est.features(covs[te], sites[te], covariates.iloc[te])
    eigs = {k: LooRidgeClassifier.gram_eig(x) for k, x in x_tr.items()} if ridge else None
    out = np.empty((len(perms), len(te)))
    for j, perm in enumerate(perms):
        refit = est.with_labels(x_tr, perm[tr], eigs)
        out[j] = refit.proba_from_features(x_te)[:, _positive_column(refit)]
    return out


def permutation_test(config, covs, diagnosis, sites, covariates, observed, n_permutations,
                     halves=None, fitted=None):
    """p-value of the pooled accuracy against labels permuted within site.

    Permuting within sites keeps each site's class balance, so the null
    includes whatever a model could learn from site alone.  ``fitted``: under
    leave-site-out, the fold classifiers of the observed evaluation
    (``cross_validate(..., estimators=...)``), reused rather than refitted.
    """
    perms = within_site_permutations(diagnosis, sites, n_permutations, config["random_state"])
    if _CV_ALIASES.get(config["cv"], config["cv"]) == "leave-site-out":
        null = _permutation_null_fixed_folds(config, covs, diagnosis, sites, covariates,
                                             perms, halves, fitted)
    else:  # the folds of stratified schemes depend on the (permuted) labels: refit all
        null = []
        for perm in perms:
            proba, _ = cross_validate(config, covs, diagnosis, sites, covariates, labels=perm,
                                      halves=halves)
            null.append(np.mean((np.nanmean(proba, axis=0) > 0.5) == (perm == POSITIVE)))
    null = np.asarray(null)
    p = (1 + np.sum(null >= observed)) / (1 + len(null))
    return float(p), null


def _atlas_record(subjects) -> dict:
    """``region_names`` / ``region_coordinates`` of an image atlas, for metrics.json and the
    model (the report and the app name and place the regions by them); empty for ABIDE,
    whose atlases :func:`decoder.data.abide.dataset_regions` knows by name."""
    out = {}
    if subjects.region_names is not None:
        out["region_names"] = subjects.region_names
    if subjects.region_coords is not None:
        out["region_coordinates"] = subjects.region_coords
    return out


# ------------------------------------------------------------------------- run
def run(config, data=None, out=None, config_path=None) -> dict:
    """Evaluate, save the model and write ``metrics.json`` (see module docstring)."""
    try:
        return _run(config, data, out, config_path)
    finally:   # a Dask client opened for the folds is closed with the run
        _close_fold_clusters()


def _run(config, data, out, config_path) -> dict:
    from decoder.features.connectome import split_half_covariances, subject_covariances
    from decoder.data.abide import region_names
    from decoder.models.biomarker_models import edge_pattern_table
    t0 = time.perf_counter()
    check_config(config)
    scheme = _CV_ALIASES.get(config["cv"], config["cv"])
    subjects = load_subjects(config, data)
    diag = subjects.diagnosis.astype(str)
    check_two_classes(diag)
    shrinkage = config["connectivity"]["shrinkage"]
    covs = subject_covariances(subjects.time_series, shrinkage=shrinkage)
    halves = (split_half_covariances(subjects.time_series, shrinkage=shrinkage)
              if config["connectivity"]["reliability"] == "split-half" else None)
    sites = subjects.sites
    small = [s for s, n in pd.Series(sites).value_counts().items() if n < 2]
    if small:
        log.warning("site(s) %s have a single subject: under leave-site-out they form their own "
                    "fold (per-site ROC AUC undefined) and ComBat cannot estimate their "
                    "variance", ", ".join(small))
    covariates = model_covariates(config, subjects)
    fold_patterns = []
    # the permutation test under leave-site-out reuses these folds' label-free steps
    fold_estimators = ([] if config["n_permutations"] and scheme == "leave-site-out"
                       else None)
    proba_reps, folds = cross_validate(config, covs, diag, sites, covariates,
                                       halves=halves, patterns=fold_patterns,
                                       estimators=fold_estimators)
    ds = config["dataset"]
    names = (region_names(subjects.regions, ds["derivative"]) if ds["kind"] == "abide"
             else subjects.region_names)
    edges = edge_pattern_table(fold_patterns, subjects.regions, classes=CLASSES, names=names)
    proba = np.nanmean(proba_reps, axis=0)
    m = _metrics_from_proba(diag, proba)
    groups = subject_groups(subjects.covariates, subjects.sex_coded)
    fold_scores = []
    for tr, te in folds:
        fold_scores.append(float(np.mean((proba[te] > 0.5) == (diag[te] == POSITIVE))))
    # the site each fold held out (figures name the folds by it)
    fold_groups = ([str(np.asarray(sites)[te][0]) for _, te in folds]
                   if scheme == "leave-site-out" else None)
    perm_p, null = None, None
    if config["n_permutations"] and config["n_permutations"] > 0:
        perm_p, null = permutation_test(config, covs, diag, sites, covariates,
                                        m["accuracy"], config["n_permutations"], halves=halves,
                                        fitted=fold_estimators)
    inputs = file_records(subjects.files, root=subjects.root)
    metrics = {
        "task": "biomarker",
        "dataset": {"kind": ds["kind"], "root": str(subjects.root),
                    **{k: ds[k] for k in DATASET_KEYS[ds["kind"]]},
                    "n_subjects": int(len(diag)), "n_autism": int((diag == POSITIVE).sum()),
                    "n_sites": int(len(np.unique(sites))), "notes": subjects.notes,
                    **_atlas_record(subjects)},
        "cv": scheme,
        "n_samples": int(len(diag)),
        "n_classes": 2,
        "classes": CLASSES,
        "accuracy": m["accuracy"],
        "accuracy_ci95": _accuracy_ci(diag, proba),
        "balanced_accuracy": m["balanced_accuracy"],
        "roc_auc": m["roc_auc"],
        "roc_auc_ci95": auc_interval(diag == POSITIVE, proba),
        # the same scores with sites, not subjects, as the units (clustering within sites)
        "site_bootstrap": cluster_bootstrap_interval(diag == POSITIVE, proba, sites,
                                                     random_state=config["random_state"]),
        "chance": chance_level(diag),
        "fold_scores": fold_scores,
        "fold_groups": fold_groups,
        "permutation_p": perm_p,
        "confusion_matrix": m["confusion_matrix"],
        "per_class": m["per_class"],
        "per_site": per_site_metrics(diag, proba, sites),
        "per_subgroup": per_subgroup_metrics(diag, proba, groups),
        "calibration": calibration_table(diag, proba),
        "confounds": confound_check(diag, proba, subjects.confounds, POSITIVE),
        "edges": _edges_summary(edges, len(fold_patterns)),
        "repeats": _repeats_summary(diag, proba_reps),
        "model": {"connectivity": config["connectivity"], "harmonize": config["harmonize"],
                  "estimator": config["model"],
                  "confounds_removed": _confounds_to_remove(config)},
    }
    out = Path(out) if out is not None else Path("results") / config.get("name", "abide")
    out.mkdir(parents=True, exist_ok=True)
    files = None
    if config["save_model"]:  # written with the rest, at the end (write_run)
        est = make_classifier(config).fit(covs, diag, sites=sites, covariates=covariates,
                                          halves=halves)
        metrics["runtime_s"] = time.perf_counter() - t0
        # built once: the card and metrics.json give the same record (time included)
        metrics["provenance"] = build_provenance(config, inputs, subjects.dataset_info,
                                                 config_path)
        files = model_files(est, metrics, config, subjects)
    n_rep = len(proba_reps)
    per_rep = len(folds) // n_rep          # folds are listed repetition by repetition
    fold_of = np.full((n_rep, len(diag)), -1)
    for i, (_, te) in enumerate(folds):
        fold_of[i // per_rep, te] = i % per_rep
    predictions = pd.DataFrame({"subject": subjects.ids, "site": sites, "diagnosis": diag,
                                "p_autism": proba,
                                "predicted": np.where(proba > 0.5, POSITIVE, "control"),
                                "fold": fold_of[0]})
    if "age" in subjects.covariates:  # for subgroup analyses of one's own
        predictions["age"] = pd.to_numeric(subjects.covariates["age"],
                                           errors="coerce").to_numpy(float)
    if "sex" in groups:
        predictions["sex"] = groups["sex"]
    tables = {"predictions": predictions.set_index("subject"), "edges": edges.rename_axis("rank")}
    if n_rep > 1:  # each repetition's folds and probabilities (for decoder compare)
        tables["repeats"] = pd.DataFrame(
            {**{f"fold_r{r}": fold_of[r] for r in range(n_rep)},
             **{f"p_autism_r{r}": proba_reps[r] for r in range(n_rep)}},
            index=pd.Index(subjects.ids, name="subject"))
    metrics["runtime_s"] = time.perf_counter() - t0
    if "provenance" not in metrics:
        metrics["provenance"] = build_provenance(config, inputs, subjects.dataset_info,
                                                 config_path)
    arrays = {"permutation_null": null} if null is not None else None
    write_run(out, metrics, tables=tables, arrays=arrays, files=files)
    return metrics


# ------------------------------------------------------------------------- model files
_ALLOWED_TYPES = {
    "decoder.models.biomarker_models.ConnectomeClassifier",
    "decoder.features.connectome.Connectivity",
    "decoder.features.harmonize.ComBat",
    "decoder.models.torch_connectome.TorchMLPClassifier",
    "decoder.models.biomarker_models.LooRidgeClassifier",
}


def model_files(est, metrics, config, subjects, name="model.skops") -> dict:
    """The saved model (skops, never pickle) and its card (JSON, Markdown): file name →
    bytes, written with the rest of the run (:func:`decoder.results.write_run`)."""
    import skops.io as sio
    from decoder.models.model_card import build_model_card, card_files
    lengths = [len(ts) for ts in subjects.time_series]
    n_timepoints = [min(lengths), max(lengths)]
    age = pd.to_numeric(subjects.covariates.get("age"), errors="coerce") \
        if "age" in subjects.covariates else pd.Series(dtype=float)
    ages = [float(age.min()), float(age.max())] if age.notna().any() else None
    card = build_model_card(metrics, config, len(subjects.diagnosis), subjects.sites,
                            subjects.regions, calibration=metrics.get("calibration"),
                            n_timepoints=n_timepoints, ages=ages)
    bundle = {"estimator": est, "regions": list(subjects.regions), "n_timepoints": n_timepoints,
              "ages": ages,  # the training subjects' age range (decoder predict notes others)
              "positive_class": POSITIVE, "classes": CLASSES,
              # who it was trained on: scores on them would not be external (decoder predict)
              "subjects": [str(i) for i in subjects.ids],
              # and their files' content: a training file renamed is still recognised
              "subject_sha256": None if subjects.series_files is None else
              [sha256_file(Path(f)) for f in subjects.series_files],
              "sites": sorted({str(s) for s in subjects.sites}),
              "dataset": {"kind": config["dataset"]["kind"],
                          **{k: config["dataset"].get(k)
                             for k in DATASET_KEYS[config["dataset"]["kind"]]},
                          # the atlas file's content, checked against a NIfTI's --atlas
                          "atlas_sha256": _atlas_sha256(config["dataset"]),
                          **_atlas_record(subjects)},
              # the code and libraries it was made with (decoder predict notes others)
              "environment": {k: metrics["provenance"].get(k)
                              for k in ("version", "source", "python", "libraries")},
              "cv": {"scheme": metrics.get("cv"), "accuracy": metrics.get("accuracy"),
                     "roc_auc": metrics.get("roc_auc"),
                     "calibration": metrics.get("calibration"),
                     "per_subgroup": metrics.get("per_subgroup")}}
    model = sio.dumps(bundle)
    import hashlib
    card["model_sha256"] = hashlib.sha256(model).hexdigest()   # which model file it describes
    return {name: model, **card_files(card)}


def environment_notes(bundle: dict) -> list[str]:
    """What differs between the libraries a model was saved with and this installation's
    (decoder, numpy, scikit-learn, …): a prediction may then differ slightly from the one
    the model's maker would get.  Empty for a model that does not record them."""
    from decoder.results import current_environment
    saved = (bundle or {}).get("environment") or {}
    if not saved:
        return []
    now = current_environment(tuple(saved.get("libraries") or ()))
    pairs = [("decoder", saved.get("version"), now["version"])] + [
        (name, version, now["libraries"].get(name))
        for name, version in (saved.get("libraries") or {}).items()]
    differ = [f"{name} {old} (now {new})" for name, old, new in pairs
              if old is not None and old != new]
    if not differ:
        return []
    return [f"the model was saved with {', '.join(differ)}: its predictions here may differ "
            "slightly from its maker's"]


def _atlas_sha256(ds) -> str | None:
    atlas = ds.get("atlas")
    if ds.get("kind") != "fmriprep" or not atlas or not Path(str(atlas)).is_file():
        return None
    return sha256_file(Path(str(atlas)))


def load_model(path=None) -> dict:
    """Load a model bundle saved by :func:`save_model` (default: the shipped ABIDE model).

    Only the project's own estimator types (and skops' default-trusted
    scikit-learn/NumPy types) are accepted; anything else in the file is an error.
    """
    from decoder.models._skops import load_trusting, not_allowed, untrusted_types
    path = Path(path) if path is not None else SHIPPED_MODEL
    if path.is_dir():
        models = sorted(path.glob("*.skops"))
        if models:  # a run folder, or one holding models
            raise DataError(f"{path} is a folder, not a model file",
                            f"pass {models[0]}" + (f" (or another of its {len(models)} "
                                                   ".skops files)" if len(models) > 1 else ""))
        task = None
        try:
            task = json.loads((path / "metrics.json").read_text()).get("task")
        except (OSError, ValueError, AttributeError):
            pass
        if task == "category":
            raise DataError(f"{path} is a category decoding run that saved no model",
                            "run it again with --set save_model=true, then pass its "
                            "model.skops")
        raise DataError(f"{path} is a folder without a model file",
                        "pass a model.skops written by 'decoder run configs/abide.yaml'")
    if not path.is_file():
        raise DataError(f"model file not found: {path}",
                        "pass a model.skops written by 'decoder run configs/abide.yaml'")
    untrusted = untrusted_types(path)
    bad = not_allowed(untrusted, _ALLOWED_TYPES)
    from decoder.models.category_model import is_category_model
    if bad and is_category_model(path):
        raise DataError(f"{path} is a category model, not a biomarker model",
                        "decoder predict MODEL RUN_bold.nii.gz applies it to a run; cohorts "
                        "and the app take a biomarker model")
    if bad:
        raise DataError(f"{path}: refuses to load untrusted type {bad[0]}",
                        "only load models written by this package")
    bundle = load_trusting(path, untrusted)
    from decoder.models.biomarker_models import ConnectomeClassifier
    if (not isinstance(bundle, dict)
            or not isinstance(bundle.get("estimator"), ConnectomeClassifier)
            or not hasattr(bundle["estimator"], "models_")):
        raise DataError(f"{path}: not a biomarker model bundle",
                        "pass a model.skops written by 'decoder run configs/abide.yaml'")
    cv = bundle.setdefault("cv", {}) or {}
    if cv.get("per_subgroup") is None:  # saved before the bundle carried it: from its card
        card = read_model_card(path)
        cv["per_subgroup"] = ((card or {}).get("evaluation") or {}).get("per_subgroup")
        bundle["cv"] = cv
    return bundle


def subject_notes(ts, bundle: dict, name="the time series") -> list:
    """What is unusual about one subject's usable series, for a model ``bundle``: regions
    without signal (:func:`check_subject_series`, which refuses unusable series), and a
    scan shorter than the model's shortest training scan."""
    regions = bundle.get("regions")
    notes = check_subject_series(ts, name, None if regions is None else len(regions),
                                 trained_on=model_atlas(bundle))
    shortest = (bundle.get("n_timepoints") or [None])[0]
    if shortest and len(ts) < shortest:  # usable, but noisier than any training scan
        notes.append(f"{len(ts)} time points, fewer than the model's shortest training "
                     f"scan ({shortest}): its connectivity is noisier than any the model learned "
                     "from, so read the probability with more caution")
    return notes


def input_stem(path) -> str:
    """A subject file's name without its extension (``sub.A.1D`` → ``sub.A``)."""
    name = Path(path).name
    for ext in (".nii.gz", ".nii", ".1D", ".1d", ".tsv", ".csv", ".txt"):
        if name.endswith(ext):
            return name[:-len(ext)]
    return name


def _model_extraction(bundle, atlas, path) -> dict:
    """How a new subject's image is reduced to region series: as the model's training
    images were (its ``atlas_type`` and confound strategy, when the model records them;
    no confound regression for a model of ``.1D`` series), with the atlas given checked
    against the model's (same file content)."""
    ds = (bundle or {}).get("dataset") or {}
    if ds.get("kind") != "fmriprep":
        return {"confounds_strategy": None}
    trained = ds.get("atlas_sha256")
    if trained and Path(str(atlas)).is_file():
        if sha256_file(Path(str(atlas))) != trained:
            raise DataError(f"--atlas {atlas} is not the atlas the model was trained with "
                            f"({ds.get('atlas')}; another file content)",
                            "pass the model's own atlas file (the model card names it)")
    return {"confounds_strategy": ds.get("confounds_strategy"),
            "atlas_type": ds.get("atlas_type")}


def model_atlas(bundle: dict) -> str | None:
    """The atlas a model was trained on, in words (``ABIDE rois_ho, 111 regions``)."""
    ds = (bundle or {}).get("dataset") or {}
    regions = (bundle or {}).get("regions")
    size = f"{len(regions)} regions" if regions is not None else None
    if ds.get("kind") == "abide" and ds.get("derivative"):
        return ", ".join(x for x in (f"ABIDE {ds['derivative']}", size) if x)
    return size


def check_atlas_regions(atlas_spec: dict, bundle: dict, name) -> None:
    """A labels atlas given for a model of parcellated series must hold every one of the
    model's regions by label value (ABIDE's ``rois_ho`` has 10, 11, …, 201, 202, …): an
    atlas that merely has as many regions would give other regions under the model's
    names. Models trained on images check the atlas file itself (:func:`_model_extraction`)."""
    if (atlas_spec or {}).get("type") != "labels" or (
            ((bundle or {}).get("dataset") or {}).get("kind") == "fmriprep"):
        return
    regions = [str(r).lstrip("#") for r in (bundle or {}).get("regions") or []]
    have = set(atlas_spec.get("labels") or [])
    missing = [r for r in regions if r not in have]
    extra = sorted(have - set(regions), key=lambda v: (len(v), v))
    fix = f"use the labels atlas the model was trained on ({model_atlas(bundle)})"
    n = len(have)
    if regions and missing:
        raise DataError(f"atlas {name} has {n} region{'s' if n != 1 else ''} and lacks "
                        f"{len(missing)} of the model's {len(regions)} (label "
                        f"{', '.join(missing[:3])}{', …' if len(missing) > 3 else ''})", fix)
    if regions and extra:
        raise DataError(f"atlas {name} has {len(extra)} region{'s' if len(extra) != 1 else ''} "
                        f"the model does not know (label {', '.join(extra[:3])}"
                        f"{', …' if len(extra) > 3 else ''}) besides its {len(regions)}", fix)


def align_regions(ts, names, model_regions, name="the time series", trained_on=None):
    """A series' columns in the model's region order, matched by the names in its header.

    A file without a header (:func:`decoder.data.timeseries_io.named_regions`), one
    whose header numbers the columns in order (``V1, V2, …``, ``r0, r1, …``), or a model
    that does not name its regions, is taken column by column.  A header that
    names the model's regions in another order is reordered; one that names other
    regions is a one-line error: matched by position, its columns would be scored as
    regions they are not.  Where the model's regions are atlas label values (ABIDE's
    ``#10``), a name ending in the value (``roi_10``) names that region.
    """
    import re
    from decoder.data.timeseries_io import named_regions
    names = [str(n) for n in names]
    model = None if model_regions is None else [str(r) for r in model_regions]
    if model is None or not named_regions(names) or not named_regions(model) or names == model:
        return ts
    found = [re.search(r"(\d+)\s*$", n) for n in names]
    numbers = [int(m.group(1)) for m in found] if all(found) else None
    if numbers in (list(range(len(names))), list(range(1, len(names) + 1))):
        return ts  # columns numbered in order ('V1', 'r0', …): positions, not region labels
    if numbers is not None and all(r.isdigit() for r in model):
        # the model's regions are atlas label values: 'roi_10', 'ROI 10' or '#10' name 10
        names, model = [str(n) for n in numbers], [str(int(r)) for r in model]
        if names == model:
            return ts
    if len(set(names)) == len(names) and sorted(names) == sorted(model):
        log.info("%s: columns put in the model's region order by their header", name)
        return ts[:, [names.index(r) for r in model]]
    other = [n for n in names if n not in set(model)]
    shown = ", ".join(other[:3]) + (", …" if len(other) > 3 else "")
    what = f"regions the model does not have ({shown})" if other else \
        "some of the model's regions twice or not at all"
    raise DataError(f"{name}: its header names {what}",
                    "give the series of the model's atlas"
                    + (f" ({trained_on})" if trained_on else "")
                    + " with its region labels, or a file without a header whose columns "
                    "are in the model's region order")


def owner_id(stem, ids):
    """The identifier among ``ids`` that names a file of this stem: the stem itself, or
    the stem's start followed by ``_`` (``Pitt_0050003`` names ``Pitt_0050003_rois_ho``).
    ``ids`` are strings, longest first, so that the longest match wins (callers sort
    them once, not once per file)."""
    stem = str(stem)
    return next((i for i in ids if stem == i or stem.startswith(i + "_")), None)


def training_subject(name, bundle: dict, path=None) -> bool | None:
    """Whether the subject of the file ``name`` was one the model was trained on, by its
    file name or by the content of the file (``path``, default ``name``: an upload is
    saved under another path than the name it came with); None for a model saved without
    its list of training subjects."""
    trained = (bundle or {}).get("subjects")
    if trained is None:
        return None
    trained = sorted(set(map(str, trained)), key=len, reverse=True)
    return (owner_id(input_stem(name), trained) is not None
            or same_content(name if path is None else path, bundle))


def same_content(path, bundle: dict) -> bool:
    """Whether the file ``path`` has the content of one of the model's training files
    (models that record their files' SHA-256): a training subject under another name."""
    hashes = (bundle or {}).get("subject_sha256")
    if not hashes or not Path(str(path)).is_file():
        return False
    return sha256_file(Path(str(path))) in set(hashes)


def read_subject_input(path, atlas=None, model_regions=None, model=None):
    """A subject's time series from a .1D/.tsv/.csv file or a BOLD NIfTI + atlas.

    ``model`` (a bundle from :func:`load_model`), or ``model_regions`` alone, gives the
    regions the series must have: a header that names them in another order is
    reordered, one that names others is refused (:func:`align_regions`).
    """
    from decoder.data.timeseries_io import read_timeseries
    path = Path(path)
    name = path.name.lower()
    trained_on = None
    if model is not None:
        model_regions, trained_on = model.get("regions"), model_atlas(model)
    if name.endswith((".nii", ".nii.gz")):
        if atlas is None:
            raise DataError(f"{path}: a NIfTI input needs --atlas",
                            "pass the labels atlas the model was trained with, e.g. "
                            "--atlas HarvardOxford_labels.nii.gz")
        from decoder.features.timeseries import extract_timeseries, load_atlas
        ts = extract_timeseries(path, atlas, **_model_extraction(model, atlas, path))
        if model is not None:   # (after the image itself and its grid were checked)
            spec = atlas if isinstance(atlas, dict) else load_atlas(atlas)
            check_atlas_regions(spec, model, spec.get("source") or atlas)
    else:
        if atlas is not None:
            log.warning("%s is already a region time series: --atlas is not used", path)
        ts, names = read_timeseries(path)
        if model_regions is not None and ts.shape[1] == len(model_regions):
            ts = align_regions(ts, names, model_regions, str(path), trained_on)
    check_subject_series(ts, str(path), None if model_regions is None else len(model_regions),
                         trained_on=trained_on)
    return ts


def _bin_rate(calibration, p):
    for b in calibration or []:
        if b["low"] <= p < b["high"] or (b["high"] == 1.0 and p == 1.0):
            return b
    return None


def training_sites(est) -> set:
    """The sites a ComBat model was fitted on (empty without ComBat)."""
    return {str(s) for cb in (getattr(est, "combat_", None) or {}).values() for s in cb.sites_}


def check_site_name(site, known) -> None:
    """A one-line error when ``site`` is not among ``known`` but differs from one of them
    only in case or surrounding spaces (``Caltech`` for ``CALTECH``): taken as a new site,
    it would silently get no site adjustment."""
    site = str(site)
    if site in known:
        return
    close = sorted(k for k in known if k.lower() == site.strip().lower())
    if close:
        raise DataError(f"site '{site}' is not one of the model's sites; did you mean "
                        f"'{close[0]}'?", f"write it as the model does: {close[0]} (site "
                        "names are case-sensitive)")


def predict_subject(time_series, model=None, site=None, age=None, sex=None,
                    mean_fd=None, name="the time series", path=None) -> dict:
    """Probability of autism for one subject, with the model's cross-validated reliability.

    Parameters
    ----------
    time_series : ndarray (n_timepoints, n_regions) or path
    model : dict, path or None
        A bundle from :func:`load_model`, a path, or None for the shipped model.
    site, age, sex : optional
        Used by a model with ComBat harmonisation (an unknown site gets no site
        adjustment); age and sex also pick the subgroup scores.  ``sex`` is ABIDE's
        code (1 male, 2 female) or a word (male/female, m/f).
    mean_fd : float, optional
        The scan's mean framewise displacement, used by a model trained with
        ``confounds.remove: [mean_fd]``; without it the training median is used.
    name : str
        How errors about the time series name it (:func:`check_subject_series`); a file
        name also tells whether the subject is one of the model's training subjects.
    path : str or Path, optional
        The file the series was read from, when it is not ``name`` (an upload saved under
        a temporary name): its content is compared with the model's training files.

    Returns
    -------
    dict with ``probability`` (of autism), ``predicted``, ``cv`` (held-out accuracy,
    ROC AUC and scheme of the model's evaluation), ``calibration_bin`` (observed
    autism rate among held-out subjects with a similar predicted probability) and
    ``subgroups`` (:func:`subgroup_accuracy`: the evaluation's scores for this
    subject's sex and age band, where known; no age band for an age outside the
    training subjects' ages).
    """
    if age is not None and not (np.isfinite(float(age)) and 0 < float(age) < 120):
        raise DataError(f"age {age} is not an age in years", "give the subject's age at the "
                        "scan in years (e.g. 12.5), or leave it out")
    if mean_fd is not None and not (np.isfinite(float(mean_fd)) and float(mean_fd) >= 0):
        raise DataError(f"mean framewise displacement {mean_fd} is not a distance",
                        "give the scan's mean FD in mm (e.g. 0.12), or leave it out")
    if isinstance(sex, str):  # a word or a code typed on the command line
        label = sex_label(sex)
        if label is None:
            raise DataError(f"sex '{sex}' is not understood", "give male/female (or 1/2)")
        sex = SEX_CODES[label]
    bundle = model if isinstance(model, dict) else load_model(model)
    est = bundle["estimator"]
    if not isinstance(time_series, np.ndarray):
        time_series = read_subject_input(time_series, model=bundle)
    notes = subject_notes(time_series, bundle, name) + environment_notes(bundle)
    in_training = training_subject(name, bundle, path=path)
    if in_training:
        notes.append("this subject was one of the model's training subjects: its probability "
                     "is not a held-out prediction and is optimistic (the model's held-out "
                     "scores describe new subjects)")
    ages = bundle.get("ages")
    if age is not None and ages and not ages[0] <= float(age) <= ages[1]:
        notes.append(f"age {float(age):g} is outside the ages of the model's training subjects "
                     f"({ages[0]:g}–{ages[1]:g} years): the model has not learned from "
                     "subjects of this age")
    sites = None if site is None else np.asarray([str(site)])
    covariates = None
    if getattr(est, "harmonize", "none") != "combat" and site is not None:
        notes.append(f"this model makes no site adjustment, so the site ({site}) is "
                     "recorded but does not change the prediction")
    if getattr(est, "harmonize", "none") == "combat":
        known = training_sites(est)
        if site is None:
            notes.append("no site given: the scan gets no site adjustment (ComBat), as for "
                         "a site the model never saw")
        if site is not None:
            check_site_name(site, known)
            if str(site) not in known:
                notes.append(f"site '{site}' is not one of the model's {len(known)} training "
                             "sites: no site adjustment")
        if age is None and site is not None and str(site) in known:
            raise DataError(f"this model harmonises site '{site}' with ComBat and needs the "
                            "subject's age", "give the subject's age (and sex, if known; "
                            "male is assumed otherwise), or leave the site out")
        # An unknown or unseen site gets no site adjustment ('pooled'), for which
        # ComBat's covariate terms cancel exactly: any placeholder age/sex works.
        covariates = pd.DataFrame({"age": [float(age) if age is not None else 0.0],
                                   "sex": [float(sex) if sex is not None else 1.0]})
    removed = est.confound_names()
    given = {"mean_fd": float(mean_fd)} if "mean_fd" in removed and mean_fd is not None else {}
    if given:
        covariates = (pd.DataFrame(index=[0]) if covariates is None else covariates).assign(
            **given)
    harmonize_log = logging.getLogger("decoder.features.harmonize")
    level = harmonize_log.level
    harmonize_log.setLevel(logging.ERROR)  # one subject of a new site: said in the notes
    try:
        p = float(est.predict_proba([time_series], sites=sites, covariates=covariates)
                  [0, _positive_column(est)])
    finally:
        harmonize_log.setLevel(level)
    result = {"probability": p, "predicted": POSITIVE if p > 0.5 else "control",
              "positive_class": POSITIVE,
              # what the prediction was given about the subject (None: not given)
              "given": {"site": None if site is None else str(site),
                        "age": None if age is None else float(age),
                        "sex": sex_label(sex),
                        "mean_fd": None if mean_fd is None else float(mean_fd)},
              # True: trained on this subject (by its file name); None: not known
              "in_training": in_training,
              "cv": bundle.get("cv"),
              "calibration_bin": _bin_rate((bundle.get("cv") or {}).get("calibration"), p),
              "subgroups": subgroup_accuracy(age, sex,
                                             (bundle.get("cv") or {}).get("per_subgroup"),
                                             ages=ages)}
    if mean_fd is not None and "mean_fd" not in removed:
        notes.append("this model does not adjust for head motion: the mean FD given is "
                     "not used")
    if removed:  # which confound values the adjustment used (None: the training median)
        result["confounds_removed"] = {c: given.get(c) for c in removed}
    result["warnings"] = notes
    return result


def connectivity_matrix(time_series, model=None, kind="correlation") -> np.ndarray:
    """A subject's connectivity matrix (R × R) as the model sees it.

    ``kind="correlation"`` gives the shrunk correlation matrix; a kind the
    model was fitted with (e.g. ``"tangent"``) gives its in-model matrix.
    """
    from decoder.features.connectome import Connectivity, subject_covariances
    if not isinstance(time_series, np.ndarray):
        time_series = read_subject_input(time_series)
    covs = subject_covariances([time_series])
    if model is not None or kind == "tangent":
        bundle = model if isinstance(model, dict) else load_model(model)
        est = bundle["estimator"]
        if kind in est.connectivity_:
            return est.connectivity_[kind].transform_matrices(covs)[0]
    return Connectivity(kind=kind).fit(covs).transform_matrices(covs)[0]


def example_subjects() -> pd.DataFrame:
    """The shipped example subjects (FILE_ID, site, diagnosis, path of the .1D file)."""
    table = EXAMPLES_DIR / "subjects.tsv"
    if not table.is_file():
        raise DataError(f"example table not found: {table}", "reinstall the package")
    df = pd.read_csv(table, sep="\t")
    df["path"] = [str(EXAMPLES_DIR / f) for f in df["file"]]
    return df


def check_not_overwriting(outputs, sources) -> None:
    """Refuse an output path that is one of the command's own inputs (a series, the model,
    the table, the atlas) or a file of a finished run (a run folder's predictions.tsv,
    its metrics.json or model), which a prediction would otherwise replace."""
    used = {Path(str(x)).resolve(): str(x) for x in sources if x is not None}
    for out in map(Path, outputs):
        target = out.resolve()
        if target in used:
            raise DataError(f"--out {out} is the input {used[target]}: it would be overwritten",
                            "write the prediction to another file")
        record = target.parent / "metrics.json"
        if record.is_file() and target.exists():
            try:
                listed = set(json.loads(record.read_text()).get("files") or [])
            except (ValueError, OSError, AttributeError):
                listed = set()
            if target.name in listed | {"metrics.json", "report.html"}:
                raise DataError(f"--out {out} is a file of the run in {target.parent}: it "
                                "would be overwritten", "write the prediction to another "
                                "folder, or name it with --out")


def predict_cli(args) -> int:
    """``decoder predict MODEL INPUT [--atlas A] [--site S --age A --sex X] [--mean-fd F]
    [--out JSON]``; several inputs or ``--participants``: :func:`pipelines.cohort.cohort_cli`."""
    inputs = [args.input] if isinstance(args.input, str) else list(args.input)
    from decoder.models.category_model import read_category_model
    category = read_category_model(args.model) if args.model else None
    if category is not None:   # a decoder of stimulus categories, read once
        from pipelines.category import predict_cli as category_predict
        return category_predict(args, inputs, bundle=category)
    if getattr(args, "events", None):
        raise DataError("--events is for category models; a biomarker model predicts from "
                        "resting-state series", "leave --events out")
    if getattr(args, "resample", False):
        raise DataError("--resample is for category models; a biomarker model reduces an "
                        "image with its atlas, which nilearn resamples to the image",
                        "leave --resample out")
    if len(inputs) > 1 or getattr(args, "participants", None):
        from pipelines.cohort import cohort_cli
        return cohort_cli(args, inputs)
    args.input = inputs[0]
    out = getattr(args, "out", None) or input_stem(args.input) + "_prediction.json"
    if Path(out).suffix.lower() in (".tsv", ".csv"):   # a table is what a cohort gives
        raise DataError(f"--out {out}: one subject's prediction is written as JSON",
                        f"use --out {Path(out).with_suffix('.json')}, or give several inputs "
                        "(or --participants) for a table of predictions")
    check_writable(out, folder=False)
    check_not_overwriting([out], [args.input, args.model, getattr(args, "atlas", None)])
    bundle = load_model(args.model)
    ts = read_subject_input(args.input, atlas=getattr(args, "atlas", None), model=bundle)
    result = predict_subject(ts, bundle, site=getattr(args, "site", None),
                             age=getattr(args, "age", None), sex=getattr(args, "sex", None),
                             mean_fd=getattr(args, "mean_fd", None), name=str(args.input))
    from decoder import __version__
    # which file, which model, which code: a prediction can be traced back to all three
    result = {"input": str(args.input), "model": str(args.model),
              "input_sha256": sha256_file(Path(args.input)),
              "model_sha256": sha256_file(Path(args.model or SHIPPED_MODEL)),
              "decoder_version": __version__, **result}
    if str(args.input).lower().endswith((".nii", ".nii.gz")):  # how it became region series
        result["extraction"] = {"atlas": str(args.atlas),
                                **_model_extraction(bundle, args.atlas, args.input)}
    for note in result["warnings"]:
        print(f"note: {note}")
    from decoder.models.model_card import label_codes
    codes = label_codes(bundle.get("dataset"))
    if codes:
        result["class_codes"] = codes
    print(f"p({POSITIVE}) = {result['probability']:.3f} → {result['predicted']}"
          + (f" ({codes})" if codes else ""))
    for name, g in result["subgroups"].items():
        ci = g.get("accuracy_ci95")
        who = f"{g['group']} subjects" if name == "sex" else f"subjects aged {g['group']}"
        print(f"held-out accuracy for {who}: {g['accuracy']:.3f} (n={g['n']}"
              + (f", 95% CI {ci[0]:.3f}–{ci[1]:.3f})" if ci else ")"))
    atomic_write_json(out, result)
    print(f"prediction written to {out}")
    return 0
