"""Library side of the app: upload checks, one-subject analysis, run directories.

``app.py`` only lays out widgets; everything it shows comes from here, from
:mod:`decoder.report.figures` and from :mod:`pipelines.biomarker`.

Uploads are checked before anything reads them: a size limit, a whitelist
of extensions, a look at the bytes (a NIfTI header or gzip stream, or UTF-8
text without NUL bytes), then parsing by the library readers — text with
pandas, images with nibabel.  Nothing is ever unpickled.  An upload lives
only inside a :class:`tempfile.TemporaryDirectory` that is removed once the
subject is analysed, under a sanitised file name.
"""

from __future__ import annotations

import os
import re
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from ..errors import DataError
from ..evaluation.metrics import wilson_interval

__all__ = [
    "MAX_TIMESERIES_BYTES", "MAX_NIFTI_BYTES", "TIMESERIES_EXTENSIONS", "NIFTI_EXTENSIONS",
    "BUNDLED_ATLASES", "SubjectResult", "model_path", "load_biomarker_model", "model_card",
    "example_subjects", "check_upload", "save_upload", "analyse_subject", "analyse_example",
    "analyse_upload", "wilson_interval", "uncertainty_text", "site_caveat", "subgroup_caveat",
    "SEX_CHOICES", "find_run_dirs", "run_embedded_haxby", "MAX_COHORT_FILES", "CohortResult",
    "analyse_cohort", "example_cohort", "usable_atlases", "model_sites", "GLOSSARY",
    "edges_for_display", "cohort_for_display",
]

MAX_TIMESERIES_BYTES = 10 * 1024 * 1024     # a 1,000 × 400 float table is ~4 MB
MAX_NIFTI_BYTES = 200 * 1024 * 1024          # Streamlit's own default upload limit
TIMESERIES_EXTENSIONS = (".1d", ".tsv", ".csv")
NIFTI_EXTENSIONS = (".nii", ".nii.gz")
BUNDLED_ATLASES = ("power", "dosenbach", "seitzman")   # coordinates shipped with nilearn
#: their numbers of regions (checked against nilearn in the tests): an atlas is offered for a
#: model only when they match, since a series of another size cannot be scored
BUNDLED_ATLAS_SIZES = {"power": 264, "dosenbach": 160, "seitzman": 300}
MODEL_ENV = "DECODER_MODEL"


# ------------------------------------------------------------------ the model
def model_path() -> Path:
    """The biomarker model the app uses: ``$DECODER_MODEL`` or the shipped one."""
    env = os.environ.get(MODEL_ENV)
    if env:
        return Path(env)
    from pipelines.biomarker import SHIPPED_MODEL
    return Path(SHIPPED_MODEL)


def load_biomarker_model(path=None) -> dict:
    """Load a model bundle with skops' type checks (never pickle).

    Raises
    ------
    DataError
        If the file is missing, not a skops file, or holds an untrusted type.
    """
    from pipelines.biomarker import load_model
    path = Path(path) if path is not None else model_path()
    if not path.is_file():
        raise DataError(f"biomarker model not found: {path}",
                        "train one with 'decoder run configs/abide.yaml --data DIR' and set "
                        f"{MODEL_ENV}=DIR/model.skops, or reinstall the package")
    return load_model(path)


def model_card(path=None, bundle: dict | None = None) -> dict | None:
    """The model card next to the model file (``model_card.json``), if any.

    Falls back to the evaluation summary stored in the bundle itself.
    """
    from decoder.models.model_card import read_model_card
    card = read_model_card(Path(path) if path is not None else model_path())
    if card is not None:
        return card
    if bundle is not None and bundle.get("cv"):
        return {"evaluation": dict(bundle["cv"]), "dataset": bundle.get("dataset")}
    return None


def example_subjects() -> pd.DataFrame:
    """The embedded ABIDE example subjects (``file_id``, ``site``, ``diagnosis``, ...)."""
    from pipelines.biomarker import example_subjects as _examples
    return _examples()


# ------------------------------------------------------------------ uploads
def _suffix(name: str) -> str:
    low = name.lower()
    return ".nii.gz" if low.endswith(".nii.gz") else Path(low).suffix


def check_upload(name: str, size: int, kind: str) -> str:
    """Check an upload's name and size before reading it; returns its suffix.

    Parameters
    ----------
    name : str
        The file name as sent by the browser.
    size : int
        Its size in bytes.
    kind : {"timeseries", "nifti"}

    Raises
    ------
    DataError
        For an empty or too large file, or an extension not on the whitelist.
    """
    allowed = {"timeseries": TIMESERIES_EXTENSIONS, "nifti": NIFTI_EXTENSIONS}[kind]
    limit = {"timeseries": MAX_TIMESERIES_BYTES, "nifti": MAX_NIFTI_BYTES}[kind]
    suffix = _suffix(name or "")
    if suffix not in allowed:
        raise DataError(f"'{name}': file type '{suffix or 'none'}' is not accepted here",
                        f"upload a {' / '.join(allowed)} file")
    if size <= 0:
        raise DataError(f"'{name}' is empty", "upload the file again")
    if size > limit:
        raise DataError(f"'{name}' is {size / 2**20:.1f} MB, over the {limit / 2**20:.0f} MB "
                        "limit", "upload a parcellated time series, or crop the image"
                        if kind == "nifti" else "a subject's region time series is far smaller: "
                        "check that this is one subject's parcellated series")
    return suffix


def _sniff(data: bytes, suffix: str, name: str) -> None:
    """Reject content that does not match the extension, before any parser sees it."""
    if suffix in NIFTI_EXTENSIONS:
        if suffix == ".nii.gz":
            if data[:2] != b"\x1f\x8b":
                raise DataError(f"'{name}' is not gzip-compressed NIfTI",
                                "upload a .nii.gz written by a neuroimaging tool")
            return
        if len(data) < 348 or (int.from_bytes(data[:4], "little") not in (348, 540)
                               and int.from_bytes(data[:4], "big") not in (348, 540)):
            raise DataError(f"'{name}' has no NIfTI header", "upload a NIfTI-1/2 image")
        return
    head = data[:65536]
    if b"\x00" in head:
        raise DataError(f"'{name}' is a binary file, not a text table",
                        "upload a tab- or comma-separated text file (.1D/.tsv/.csv)")
    try:
        head.decode("utf-8")
    except UnicodeDecodeError as exc:
        if exc.start < len(head) - 4:   # a multi-byte character cut at the 64 kB boundary is fine
            raise DataError(f"'{name}' is not UTF-8 text", "save the table as UTF-8 text") from None


def _safe_name(name: str, suffix: str) -> str:
    stem = Path(name).name[: -len(suffix)] if name.lower().endswith(suffix) else "upload"
    stem = re.sub(r"[^A-Za-z0-9_.-]", "_", stem).strip("._")[:80] or "upload"
    return stem + suffix


def _kept_name(name: str) -> str:
    """The upload's own base name, when it is one a file can have here (no folder part,
    no NUL, not hidden, not too long for a file system)."""
    base = str(name).replace("\\", "/").rsplit("/", 1)[-1]
    if not base or base.startswith(".") or "\x00" in base or len(base.encode()) > 255:
        raise DataError(f"'{name}': invalid file name", "rename the file")
    return base


def save_upload(data: bytes, name: str, folder, kind: str, keep_name: bool = False) -> Path:
    """Check an upload and write it into ``folder`` (a temporary folder) under a safe name.

    With ``keep_name``, the upload's own base name is kept (subjects are matched to a
    participants table by their file names, spaces and accents included); ``folder``
    should then hold this upload alone.

    Returns
    -------
    Path
        The written file, always directly inside ``folder``.
    """
    suffix = check_upload(name, len(data), kind)
    _sniff(data, suffix, name)
    folder = Path(folder)
    path = folder / (_kept_name(name) if keep_name else _safe_name(name, suffix))
    if path.resolve().parent != folder.resolve():  # belt and braces against path tricks
        raise DataError(f"'{name}': invalid file name", "rename the file")
    path.write_bytes(data)
    return path


# ------------------------------------------------------------------ a cohort
MAX_COHORT_FILES = 1000
TABLE_EXTENSIONS = (".tsv", ".csv")


@dataclass
class CohortResult:
    """What the biomarker page shows for many uploaded subjects.

    Attributes
    ----------
    table : DataFrame
        One row per subject, as ``decoder predict`` writes it: ``input`` (the uploaded
        file's name), ``site``, ``p_autism``, ``predicted``, ``in_training`` and, from
        the participants table, ``age``, ``sex``, ``diagnosis``; ``error``: why a file
        could not be predicted (empty for the others, which go on without it).
    scores : dict or None
        The model's scores on the subjects with a diagnosis
        (:func:`pipelines.cohort.cohort_scores`), training subjects left out.
    tsv : bytes
        ``table`` as tab-separated text, for download.
    """

    table: pd.DataFrame
    scores: dict | None
    tsv: bytes

    @property
    def n_in_training(self) -> int:
        return int((self.table["in_training"] == True).sum())  # noqa: E712 (None: unknown)

    @property
    def failed(self) -> list:
        """The reasons of the files that could not be predicted (one line each)."""
        return [e for e in self.table["error"] if e]


def analyse_cohort(uploads, bundle: dict, table=None, site=None) -> CohortResult:
    """Predict many uploaded time series at once, scored where a table gives diagnoses.

    Parameters
    ----------
    uploads : list of (bytes, str)
        One parcellated time series per subject (content, file name).
    bundle : dict
        The model (:func:`load_biomarker_model`).
    table : (bytes, str), optional
        A participants table (.tsv/.csv; ABIDE's phenotypic CSV works) naming each
        file's subject and, optionally, site, age, sex and diagnosis.
    site : str, optional
        The site of every subject the table gives none (a whole new cohort).

    Everything is checked as a single upload is, and written to and read from a
    temporary folder removed before this function returns.
    """
    from pipelines.cohort import predict_cohort
    uploads = list(uploads or [])
    if not uploads:
        raise DataError("no time-series files", "upload one file per subject")
    if len(uploads) > MAX_COHORT_FILES:
        raise DataError(f"{len(uploads)} files, over the limit of {MAX_COHORT_FILES}",
                        "use 'decoder predict MODEL FILES... --participants TABLE' for more")
    from pipelines.biomarker import input_stem
    stems = {}
    for _, name in uploads:  # one subject, one file: 'x.1D' and 'x.tsv' would be two
        stem = input_stem(_kept_name(name))
        if stem in stems:
            raise DataError(f"'{name}' and '{stems[stem]}' are both subject '{stem}'",
                            "upload each subject's time series once")
        stems[stem] = name
    with tempfile.TemporaryDirectory(prefix="decoder-cohort-") as tmp:
        # each upload in a folder of its own, under its own name: the names are what the
        # table matches, and what the page and the download show
        paths, folders, refused = [], {}, {}
        for k, (data, name) in enumerate(uploads):
            folder = Path(tmp) / f"{k:04d}"
            folder.mkdir()
            folders[str(folder)] = name
            try:   # a file refused as an upload (binary, too large) keeps its row, unread
                paths.append(save_upload(data, name, folder, "timeseries", keep_name=True))
            except DataError as err:
                if len(uploads) == 1:
                    raise
                paths.append(folder / _kept_name(name))
                refused[str(paths[-1])] = err
        if len(refused) == len(uploads):
            err = next(iter(refused.values()))
            raise DataError(f"none of the {len(uploads)} files could be read; the first: "
                            f"{err.message}", err.fix)
        participants = None
        if table is not None:
            data, tname = table
            if _suffix(tname or "") not in TABLE_EXTENSIONS:
                raise DataError(f"'{tname}': a participants table must be .tsv or .csv",
                                "upload the table as tab- or comma-separated text")
            tdir = Path(tmp) / "participants"
            tdir.mkdir()
            participants = save_upload(data, tname, tdir, "timeseries", keep_name=True)
            folders[str(tdir)] = tname
        def named(msg):  # the uploads' names, not the temporary folder
            for folder in sorted(folders, key=len, reverse=True):
                msg = msg.replace(f"{folder}/", "")
            return msg.replace(f"{tmp}/", "").replace(tmp, "")

        try:  # a file that cannot be predicted is listed; the others go on
            rows, scores = predict_cohort(paths, bundle, participants, site=site or None,
                                          skip_bad=True, refused=refused)
        except DataError as err:
            raise DataError(named(err.message), err.fix) from None
    rows["input"] = [Path(p).name for p in rows["input"]]
    rows["error"] = [named(e) for e in rows["error"]]
    return CohortResult(rows, scores, rows.to_csv(sep="\t").encode())


def example_cohort() -> tuple:
    """The embedded example subjects as a cohort upload: ``(uploads, table)`` for
    :func:`analyse_cohort` (their files, and their table with diagnoses)."""
    from pipelines.biomarker import EXAMPLES_DIR
    examples = example_subjects()
    uploads = [(Path(path).read_bytes(), Path(path).name) for path in examples["path"]]
    table = EXAMPLES_DIR / "subjects.tsv"
    return uploads, (table.read_bytes(), table.name)


# ------------------------------------------------------------------ one subject
@dataclass
class SubjectResult:
    """What the biomarker page shows for one subject.

    Attributes
    ----------
    name : str
    probability : float
        Predicted probability of the positive class.
    predicted : str
    interval : tuple of float or None
        95 % Wilson interval of the observed positive rate among held-out
        training subjects whose predicted probability fell in the same bin.
    calibration_bin : dict or None
    cv : dict
        The model's cross-validated evaluation (scheme, accuracy, ROC AUC, calibration).
    matrix : ndarray (R, R)
        The subject's correlation matrix.
    labels : list of str
    coords : ndarray (R, 3) or None
        Region coordinates, when the atlas gives them (glass brain).
    edges : DataFrame
        The strongest edges.
    n_timepoints : int
    site : str or None
    caveat : str
    subgroups : str
        The model's held-out accuracy for subjects of this sex and age band
        (:func:`subgroup_caveat`; empty when unknown).
    notes : list of str
        What was unusual about the input (e.g. regions without signal), from
        :func:`pipelines.biomarker.predict_subject`.
    """

    name: str
    probability: float
    predicted: str
    interval: tuple | None
    calibration_bin: dict | None
    cv: dict
    matrix: np.ndarray
    labels: list
    coords: np.ndarray | None
    edges: pd.DataFrame
    n_timepoints: int
    site: str | None = None
    caveat: str = ""
    positive_class: str = "autism"
    subgroups: str = ""
    notes: list = field(default_factory=list)


def call_text(result: "SubjectResult") -> str:
    """The call with its cut-off, and what a probability near the cut-off means (Markdown
    bold and italics; the page and the downloadable report say the same)."""
    pos = result.positive_class
    near = abs(result.probability - 0.5) < 0.1
    return (f"**Predicted probability of {pos}: {result.probability:.2f}**, classified "
            f"as *{result.predicted}*: the model calls {pos} above 0.5, the cut-off at "
            "which its accuracy is measured"
            + ("; this probability is close to it, so the call says little either way"
               if near else "") + f" ({result.n_timepoints} time points).")


def uncertainty_text(result: "SubjectResult") -> str:
    """One sentence on how far to trust this subject's probability (Markdown bold)."""
    b, pos = result.calibration_bin, result.positive_class
    if not (b and b.get("n")) or b.get("observed_rate") is None:
        return ("Uncertainty: no held-out training subject had a similar predicted "
                "probability; treat this prediction as unreliable.")
    ci = (f" (95% interval {result.interval[0]:.2f}–{result.interval[1]:.2f})"
          if result.interval else "")
    return (f"Uncertainty: among the **{b['n']}** held-out training subjects whose predicted "
            f"probability was between {b['low']:.1f} and {b['high']:.1f}, the observed rate of "
            f"{pos} was **{b['observed_rate']:.2f}**{ci}.")


def site_caveat(site, card: dict | None, new_site: bool = False) -> str:
    """One sentence on how far the model's accuracy carries to this subject's site
    (``new_site``: the user said the site, unnamed, was not one of the training sites)."""
    data = (card or {}).get("data") or {}
    per_site = ((card or {}).get("evaluation") or {}).get("per_site") or {}
    sites = [str(s) for s in data.get("sites") or per_site]
    if (site is None or str(site) == "") and new_site:
        return ("The site was not in training: connectivity differs between scanners, so "
                "the cross-validated accuracy may not hold for this subject.")
    if site is None or str(site) == "":
        return ("Site unknown: the model was evaluated on "
                f"{len(sites) or 'its'} training sites; on a new scanner or preprocessing "
                "pipeline its accuracy may be lower than reported.")
    site = str(site)
    if site in per_site:
        s = per_site[site]
        acc = s.get("accuracy")
        acc_txt = f"{acc:.2f}" if isinstance(acc, (int, float)) else "n/a"
        return (f"Site {site} was part of training: when this site was held out, accuracy "
                f"there was {acc_txt} (n={s.get('n')}). Other sites differ.")
    if site in sites:
        return f"Site {site} was part of training."
    return (f"Site {site} was not in training: connectivity differs between scanners, so "
            "the cross-validated accuracy may not hold for this subject.")


#: the app's sex choices and the codes the models take (ABIDE's coding)
SEX_CHOICES = {"unknown": None, "male": 1, "female": 2}


#: the terms the biomarker page uses, for readers who are not statisticians
GLOSSARY = """\
- **Held-out**: scored by a model that did not see that subject. The model's accuracy was
  measured this way (cross-validation): its training subjects were split into groups (for
  a leave-site-out evaluation, one group per site), and each group was scored by a model
  fitted on the others. "Held-out training subjects" are the training subjects as scored
  by those models.
- **Probability**: the model's estimate that the subject belongs to the autism group,
  calibrated on the held-out training subjects. It is not a diagnosis.
- **Accuracy**: the share of held-out subjects classified correctly, at the 0.5 cut-off.
- **ROC AUC**: the chance that a random autistic subject gets a higher probability than a
  random control (0.5: no better than a coin, 1: perfect ranking).
- **Balanced accuracy**: the mean of the accuracy among autistic subjects and among
  controls, so that the larger group does not dominate.
- **Chance**: the accuracy of always guessing the larger group.
- **95% interval**: the range within which the true rate lies with 95% confidence, given
  how few subjects it rests on (Wilson's interval for an accuracy, DeLong's for a ROC
  AUC; "sites resampled" (BCa bootstrap) treats the sites, not the subjects, as the units).
- **Pattern r**: for a connection, the correlation between its strength and the model's
  output over the training subjects: positive, the stronger the connection, the higher the
  probability of autism. "Same sign in folds" is the share of the cross-validation models
  whose pattern has the same sign.
- **Brier score**: the mean squared distance between the probabilities and the outcomes
  (0: perfect; 0.25: always saying 0.5).
- **Site**: the scanner and centre that acquired the scan. Accuracy varies between sites,
  and may be lower at a site the model never saw.
"""


def cohort_for_display(table: pd.DataFrame) -> pd.DataFrame:
    """The cohort table as the page shows it: the probability, the call and whether the
    subject was a training subject first (what a narrow screen shows without scrolling),
    sex in words (the download keeps the codes the participants table gave) and
    probabilities with two decimals, as on the single-subject page."""
    from pipelines.biomarker import sex_label
    shown = table.copy()
    if "sex" in shown:
        shown["sex"] = [sex_label(v) for v in shown["sex"]]
    for col in shown.columns:
        if col.startswith("p_"):
            shown[col] = pd.to_numeric(shown[col], errors="coerce").round(2)
    first = [c for c in shown.columns if c.startswith("p_")] + [
        c for c in ("predicted", "in_training", "error") if c in shown.columns]
    return shown[first + [c for c in shown.columns if c not in first]]


def edges_for_display(edges: pd.DataFrame) -> pd.DataFrame:
    """The strongest-connection table with readable columns: region names where the atlas
    gives them (else its labels) and the correlation, rounded."""
    e = edges.copy()
    named = {"name_a", "name_b"} <= set(e.columns)
    out = pd.DataFrame({"region": e["name_a"] if named else e["region_a"],
                        "with region": e["name_b"] if named else e["region_b"],
                        "correlation": e["value"].astype(float).round(3)})
    return out


def usable_atlases(bundle: dict) -> list:
    """The bundled atlases whose number of regions is the model's (often none: a model
    trained on ABIDE's parcellations needs that atlas)."""
    n = len(bundle.get("regions") or ())
    return [a for a in BUNDLED_ATLASES if BUNDLED_ATLAS_SIZES[a] == n]


def model_sites(bundle: dict, card: dict | None = None) -> list:
    """The model's training sites (for a site picker), from the bundle or its card."""
    sites = bundle.get("sites") or ((card or {}).get("data") or {}).get("sites") or []
    return sorted(map(str, sites))


def subgroup_caveat(age, sex, card: dict | None, ages=None) -> str:
    """One sentence on the model's held-out accuracy for subjects of this subject's sex
    and age band (``per_subgroup`` of its evaluation), next to the overall accuracy;
    empty when the card has no subgroup scores or neither is known.

    ``sex`` is ABIDE's code (1 male, 2 female) or a word (male/female, m/f); an age
    outside ``ages`` (the training subjects' youngest and oldest) gets no age band.
    """
    from pipelines.biomarker import subgroup_accuracy
    ev = (card or {}).get("evaluation") or {}
    parts = []
    for name, g in subgroup_accuracy(age, sex, ev.get("per_subgroup"), ages=ages).items():
        if isinstance(g.get("accuracy"), (int, float)):
            what = g["group"] if name == "sex" else f"age {g['group']}"
            ci = g.get("accuracy_ci95")
            ci = f", 95% CI {ci[0]:.2f}–{ci[1]:.2f}" if ci else ""
            parts.append(f"{what} {g['accuracy']:.2f} (n={g['n']}{ci})")
    if not parts:
        return ""
    overall = ev.get("accuracy")
    tail = f"; all subjects {overall:.2f}" if isinstance(overall, (int, float)) else ""
    return (f"Held-out accuracy for subjects like this one: {', '.join(parts)}{tail}. "
            "Groups with few subjects give uncertain estimates.")


def _coords_for(atlas, labels) -> np.ndarray | None:
    """Region coordinates from an atlas, ordered as ``labels``; None when unknown."""
    if atlas is None:
        return None
    from decoder.features.timeseries import atlas_coordinates
    coords = atlas_coordinates(atlas)
    if coords is None:
        return None
    if len(coords) != len(labels):
        return None
    order = {str(lab).lstrip("#"): i for i, lab in enumerate(atlas.get("labels") or [])}
    rows = [order.get(str(lab).lstrip("#")) for lab in labels]
    if any(r is None for r in rows):   # regions the atlas does not have: not drawn
        return None
    return coords[rows]


def model_connections(bundle: dict, card: dict | None) -> dict | None:
    """The connections the model goes with, from its card (the evaluation's edge patterns).

    Returns
    -------
    dict or None
        ``table`` (the strongest activation patterns, named when the atlas is
        known), ``glass`` (a Figure of them on a glass brain, or None without
        region coordinates), ``n_folds`` and ``kind``; None when the card has
        no patterns (models saved before they were recorded).
    """
    from .figures import connectome_glass_brain
    conn = (card or {}).get("connections") or {}
    top = conn.get("top") or []
    if not top:
        return None
    table = pd.DataFrame({
        "region a": [(e.get("names") or e["regions"])[0] for e in top],
        "region b": [(e.get("names") or e["regions"])[1] for e in top],
        # written as the model card writes them (+0.27, 100%)
        "pattern r": [f"{float(e['pattern']):+.2f}" for e in top],
        "same sign in folds": [f"{float(e['sign_consistency']):.0%}" for e in top],
        "stronger in": [e["higher_in"] for e in top]})
    from decoder.data.abide import dataset_regions
    glass = None
    regions = [str(r) for r in bundle.get("regions") or []]
    _, coords = dataset_regions(bundle.get("dataset"), regions)
    index = {r.lstrip("#"): i for i, r in enumerate(regions)}
    pairs = [[index.get(str(r).lstrip("#")) for r in e["regions"]] for e in top]
    if coords is not None and all(None not in p for p in pairs):
        m = np.zeros((len(regions), len(regions)))
        for (i, j), e in zip(pairs, top):
            m[i, j] = m[j, i] = float(e["pattern"])
        glass = connectome_glass_brain(m, coords, k=len(top),
                                       title="The model's strongest patterns (red, solid: "
                                             "stronger in autism; blue, dashed: weaker)")
    return {"table": table, "glass": glass, "n_folds": conn.get("n_folds"),
            "kind": conn.get("kind")}


def analyse_subject(time_series, bundle: dict, name: str, card: dict | None = None,
                    site=None, age=None, sex=None, coords=None, n_edges: int = 20,
                    path=None, new_site: bool = False) -> SubjectResult:
    """Predict one subject and gather everything the page shows about it.

    Parameters
    ----------
    time_series : ndarray (n_timepoints, n_regions)
    bundle : dict
        A model bundle from :func:`load_biomarker_model`.
    name : str
        How the subject is named on the page.
    card : dict, optional
        The model card (for the site caveat).
    site, age, sex : optional
        Passed to :func:`pipelines.biomarker.predict_subject`.
    coords : ndarray (R, 3), optional
        Region coordinates for the glass brain.
    path : str or Path, optional
        The file the series came from (an upload's saved copy), whose content tells a
        training subject under another name.
    new_site : bool
        The subject's site is not one of the model's (unnamed): no site adjustment, and
        the caveat says so.
    """
    from pipelines.biomarker import connectivity_matrix, predict_subject

    from .figures import strongest_edges
    ts = np.asarray(time_series, dtype=float)
    regions = bundle.get("regions")
    # length, regions, NaN and empty regions: the checks of every prediction
    pred = predict_subject(ts, bundle, site=site, age=age, sex=sex, name=name, path=path)
    matrix = connectivity_matrix(ts, bundle, kind="correlation")
    labels = [str(r) for r in (regions or range(ts.shape[1]))]
    if coords is None and bundle.get("coords") is not None:
        coords = np.asarray(bundle["coords"], dtype=float)
    from decoder.data.abide import dataset_regions
    names, atlas_coords = dataset_regions(bundle.get("dataset"), regions)
    if coords is None:
        coords = atlas_coords
    b = pred.get("calibration_bin")
    interval = None
    if b and b.get("n") and b.get("observed_rate") is not None:
        interval = wilson_interval(b["observed_rate"] * b["n"], int(b["n"]))
    return SubjectResult(name=name, probability=float(pred["probability"]),
                         predicted=str(pred["predicted"]), interval=interval,
                         calibration_bin=b, cv=pred.get("cv") or {}, matrix=matrix,
                         labels=labels, coords=coords,
                         edges=strongest_edges(matrix, labels, n_edges, names=names),
                         n_timepoints=int(ts.shape[0]), site=None if site is None else str(site),
                         caveat=site_caveat(site, card, new_site=new_site),
                         positive_class=str(pred.get("positive_class", "autism")),
                         subgroups=subgroup_caveat(age, sex, card, ages=bundle.get("ages")),
                         notes=list(pred.get("warnings") or []))


def analyse_example(file_id: str, bundle: dict, card: dict | None = None) -> SubjectResult:
    """Analyse one of the embedded example subjects (by ``file_id``)."""
    from pipelines.biomarker import read_subject_input
    table = example_subjects()
    row = table[table["file_id"].astype(str) == str(file_id)]
    if row.empty:
        raise DataError(f"unknown example subject '{file_id}'",
                        f"choose one of: {', '.join(table['file_id'].astype(str))}")
    row = row.iloc[0]
    ts = read_subject_input(row["path"], model=bundle)
    age = row.get("age")
    sex = row.get("sex")
    return analyse_subject(ts, bundle, str(file_id), card=card, site=row.get("site"),
                           age=None if pd.isna(age) else float(age),
                           sex=None if pd.isna(sex) else float(sex))


def analyse_upload(data: bytes, name: str, bundle: dict, card: dict | None = None,
                   atlas: str | None = None, atlas_data: bytes | None = None,
                   atlas_name: str | None = None, site=None, age=None, sex=None,
                   new_site: bool = False) -> SubjectResult:
    """Analyse an uploaded time series (.1D/.tsv/.csv) or BOLD NIfTI (+ atlas).

    Parameters
    ----------
    data, name : bytes, str
        The uploaded file.
    atlas : str, optional
        For a NIfTI: a bundled coordinates atlas name (:data:`BUNDLED_ATLASES`),
        or None when ``atlas_data`` is an uploaded labels atlas.
    atlas_data, atlas_name : bytes, str, optional
        An uploaded labels atlas NIfTI.
    site : str, optional
        The subject's scanner site, if known.
    new_site : bool
        The site is known not to be one of the model's training sites (unnamed).
    age, sex : optional
        The subject's age in years and sex (1 male, 2 female), if known: used by a
        model with ComBat harmonisation and for the subgroup accuracy.

    Everything is written to, and read from, a temporary folder that is
    removed before this function returns.
    """
    from pipelines.biomarker import read_subject_input
    # an atlas given means the BOLD page: its upload is judged as an image (a '.gz' that is
    # not '.nii.gz' is told to be one, not to be a time series)
    kind = ("nifti" if _suffix(name or "").startswith(".nii")
            or atlas is not None or atlas_data is not None else "timeseries")
    with tempfile.TemporaryDirectory(prefix="decoder-upload-") as tmp:
        path = save_upload(data, name, tmp, kind)
        atlas_spec, coords = None, None
        if kind == "nifti":
            from decoder.features.timeseries import load_atlas
            if atlas_data is not None:
                adir = Path(tmp) / "atlas"
                adir.mkdir()
                apath = save_upload(atlas_data, atlas_name or "atlas.nii.gz", adir, "nifti")
                try:
                    atlas_spec = load_atlas(apath, "labels")
                except DataError as err:
                    raise DataError(str(err.message).replace(str(apath),
                                                             f"'{atlas_name or 'atlas'}'"),
                                    err.fix) from None
            elif atlas in BUNDLED_ATLASES:
                atlas_spec = load_atlas(atlas)
            else:
                raise DataError(f"'{name}': a BOLD image needs an atlas",
                                "upload the labels atlas the model was trained with, or pick "
                                "a bundled atlas")
            _check_bold(path, name)
            if atlas_data is not None:   # named as uploaded, not by its temporary copy
                from pipelines.biomarker import check_atlas_regions
                check_atlas_regions(atlas_spec, bundle, f"'{atlas_name or 'atlas'}'")
            regions = bundle.get("regions")
            if (regions is not None and atlas_spec.get("coords") is not None
                    and len(atlas_spec["coords"]) != len(regions)):
                from pipelines.biomarker import model_atlas
                raise DataError(f"atlas '{atlas}' has {len(atlas_spec['coords'])} regions, the "
                                f"model expects {len(regions)}",
                                f"use the atlas the model was trained on ({model_atlas(bundle)})")
        try:
            ts = read_subject_input(path, atlas=atlas_spec, model=bundle)
        except DataError as err:
            raise DataError(str(err.message).replace(str(path), f"'{name}'"), err.fix) from None
        except ValueError as err:  # nilearn: image and atlas that do not overlap, etc.
            msg = " ".join(str(err).split())[:160]
            raise DataError(f"'{name}': region signals could not be extracted ({msg})",
                            "check that the image and the atlas are in the same space") from None
        if atlas_spec is not None:
            coords = _coords_for(atlas_spec, bundle.get("regions") or range(ts.shape[1]))
        return analyse_subject(ts, bundle, Path(name).name, card=card, site=site, age=age,
                               sex=sex, coords=coords, path=path, new_site=new_site)


def _check_bold(path: Path, name: str) -> None:
    import gzip

    import nibabel as nib
    try:
        if path.name.endswith(".gz"):  # a truncated or corrupt stream fails here, in bounded memory
            with gzip.open(path, "rb") as fh:
                while fh.read(1 << 22):
                    pass
        img = nib.load(str(path))
        shape = img.shape
        if len(shape) == 4:
            np.asarray(img.dataobj[..., -1])  # the last volume is really there
    except Exception as exc:  # nibabel raises many types on a corrupt or truncated file
        raise DataError(f"'{name}' is not a readable NIfTI image ({type(exc).__name__})",
                        "upload a complete .nii or .nii.gz file") from None
    from pipelines.biomarker import MIN_TIMEPOINTS   # the model's own limit
    if len(shape) != 4 or shape[3] < MIN_TIMEPOINTS:
        raise DataError(f"'{name}' has shape {shape}, a 4D BOLD run with at least "
                        f"{MIN_TIMEPOINTS} volumes is needed", "upload the preprocessed BOLD run")


# ------------------------------------------------------------------ run directories
def find_run_dirs(root="results") -> list[Path]:
    """Run directories (folders with ``metrics.json``) under ``root``, newest first."""
    root = Path(root)
    if not root.is_dir():
        return []
    found = [p.parent for p in root.glob("*/metrics.json")] + \
        [p.parent for p in root.glob("*/*/metrics.json")]
    return sorted(set(found), key=lambda p: p.joinpath("metrics.json").stat().st_mtime,
                  reverse=True)


#: below this many subjects with a diagnosis, a cohort's scores are said to be very uncertain
FEW_SCORED = 30


def few_subjects_note(scores: dict) -> str | None:
    """A warning for a cohort scored on few subjects, with its accuracy interval (a
    perfect score on 4 subjects is compatible with a model at chance)."""
    n = (scores or {}).get("n") or 0
    if not n or n >= FEW_SCORED:
        return None
    ci = scores.get("accuracy_ci95")
    where = f" (accuracy 95% CI {ci[0]:.2f}–{ci[1]:.2f})" if ci else ""
    return (f"Only {n} subject{'s' if n != 1 else ''} with a diagnosis: these scores are very "
            f"uncertain{where}; judge the model by its interval, not by the number.")


HAXBY_RUN_PREFIX = "decoder-haxby-"


def new_haxby_run_dir(previous=None) -> Path:
    """A fresh temporary folder for the app's run of the embedded sample, removing the
    session's previous one (only a folder this function made: in the temporary folder,
    with its prefix), so that repeated runs do not pile up."""
    import shutil
    if previous:
        prev = Path(previous)
        if (prev.parent.resolve() == Path(tempfile.gettempdir()).resolve()
                and prev.name.startswith(HAXBY_RUN_PREFIX) and prev.is_dir()):
            shutil.rmtree(prev, ignore_errors=True)
    return Path(tempfile.mkdtemp(prefix=HAXBY_RUN_PREFIX))


def run_embedded_haxby(out_dir, n_permutations: int = 100) -> Path:
    """Run ``configs/haxby.yaml`` on the embedded Haxby sample into ``out_dir``: the run
    ``decoder run configs/haxby.yaml`` makes (delay and window chosen inside each
    training fold), with ``n_permutations``."""
    from decoder.config import apply_overrides, load_yaml
    from pipelines import run_config
    config = Path(__file__).resolve().parents[2] / "configs" / "haxby.yaml"
    raw = load_yaml(config) if config.is_file() else {"task": "category",
                                                      "name": "haxby-slice"}
    raw = apply_overrides(raw, [f"n_permutations={int(n_permutations)}"])
    out = Path(out_dir)
    run_config(raw, out=out, config_path=config if config.is_file() else None)
    return out
