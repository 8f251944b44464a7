"""Region time series from preprocessed BOLD images (fMRIPrep-style derivatives).

Extraction goes through nilearn maskers — :class:`~nilearn.maskers.NiftiLabelsMasker`
(a labels atlas), :class:`~nilearn.maskers.NiftiMapsMasker` (probabilistic maps)
or :class:`~nilearn.maskers.NiftiSpheresMasker` (coordinates, e.g. Power 2011,
Dosenbach 2010, Seitzman 2018 shipped with nilearn) — with confounds chosen by
:func:`nilearn.interfaces.fmriprep.load_confounds_strategy`.  Each subject's
time series is cached on disk under a key made of the image's SHA-256 and
the extraction settings, so a rerun or another model variant never re-reads
the images.

An image whose affine does not match the atlas is resampled by nilearn when
both are in the same space; when their fields of view do not overlap (an
image in native space, an atlas in MNI space), extraction stops with a
one-line :class:`~decoder.errors.DataError`.
"""

from __future__ import annotations

import json
import logging
import warnings
import zlib
from pathlib import Path

import numpy as np

from .._utils import atomic_write_bytes, sha256_file, stable_hash
from ..errors import DataError, check_choice, missing_file

log = logging.getLogger(__name__)
_UNWRITABLE: set = set()

__all__ = ["ATLAS_TYPES", "NILEARN_ATLASES", "load_atlas", "atlas_coordinates",
           "lookup_table_path", "read_lookup_table", "check_alignment",
           "extract_timeseries", "TimeSeriesExtractor"]

ATLAS_TYPES = ("labels", "maps", "spheres")
#: Atlases shipped with (or fetched by) nilearn, by name → (type, loader).
NILEARN_ATLASES = {
    "power": "spheres", "dosenbach": "spheres", "seitzman": "spheres",
    "harvard_oxford": "labels", "aal": "labels", "schaefer": "labels", "msdl": "maps",
    "difumo": "maps",
}


def load_atlas(atlas, atlas_type=None, labels_file=None):
    """Resolve an atlas given as a file or a nilearn atlas name.

    Parameters
    ----------
    atlas : str or Path
        A NIfTI file (labels or 4-D maps), a ``.tsv``/``.csv`` of ``x, y, z``
        coordinates (spheres), or a name in :data:`NILEARN_ATLASES`
        (``power``, ``dosenbach`` and ``seitzman`` are bundled with nilearn
        and need no download).
    atlas_type : {"labels", "maps", "spheres"}, optional
        Inferred when omitted.
    labels_file : str or Path, optional
        The regions' lookup table (label value and name, see :func:`read_lookup_table`)
        of a NIfTI atlas; by default the one beside the atlas (:func:`lookup_table_path`).

    Returns
    -------
    dict with keys ``type``, ``img`` (NIfTI or None), ``coords`` (ndarray or None),
    ``labels`` (list of str: label values, map positions or sphere positions),
    ``names`` (list of str, one per label: the regions' names where the atlas gives
    them, see :func:`read_lookup_table`) and ``source`` (str).
    """
    if atlas_type is not None:
        check_choice("atlas type", atlas_type, ATLAS_TYPES)
    name = str(atlas)
    path = Path(name)
    if path.is_file():
        if path.suffix.lower() in {".tsv", ".csv", ".txt"}:
            import pandas as pd
            table = pd.read_csv(path, sep=None, engine="python")
            named = {str(c).strip().lower(): c for c in table.columns}
            cols = [named[c] for c in ("x", "y", "z") if c in named]
            xyz = table[cols] if len(cols) == 3 else table.iloc[:, :3]
            coords = xyz.apply(pd.to_numeric, errors="coerce").to_numpy(float)
            if coords.shape[1] != 3 or not np.isfinite(coords).all():
                raise DataError(f"{path}: not a table of x, y, z coordinates in mm",
                                "give columns named x, y and z (other columns are ignored)")
            named_cols = {str(c).strip().lower(): c for c in table.columns}
            text = [named_cols[n] for n in _NAME_COLUMNS if n in named_cols]
            # a name column holds text: 'label,x,y,z,name' is named by 'name', not 'label'
            text = sorted(text, key=lambda c: bool(
                pd.to_numeric(table[c], errors="coerce").notna().all()))
            given = table[text[0]].astype(str).str.strip().tolist() if text else None
            if labels_file is not None:
                log.warning("dataset.atlas_labels is for a NIfTI atlas; the coordinates table "
                            "%s names its spheres in a name column", path.name)
            return {"type": "spheres", "img": None, "coords": coords,
                    "labels": [str(i) for i in range(len(coords))],
                    "names": _sphere_names(coords, given), "source": str(path)}
        import nibabel as nib
        try:
            img = nib.load(str(path))
        except Exception as exc:  # nibabel raises several types for bad files
            raise DataError(f"{path}: not a readable NIfTI atlas ({exc})",
                            "pass a labels/maps NIfTI or a coordinates table") from None
        kind = atlas_type or ("maps" if len(img.shape) == 4 else "labels")
        if (kind == "maps") != (len(img.shape) == 4):
            raise DataError(f"{path}: a {len(img.shape)}-D image is not a {kind} atlas",
                            "set dataset.atlas_type to "
                            + ("maps" if len(img.shape) == 4 else "labels")
                            + " (or leave it out: it is read from the file)")
        if kind == "labels":
            labels = _label_values(img, path)
            if not labels:
                raise DataError(f"{path}: the atlas has no labelled region (every voxel is 0)",
                                "pass a labels atlas whose regions are numbered 1, 2, …")
        else:
            labels = [str(i) for i in range(img.shape[3])]
        names = _names_from_lookup(path, kind, labels, labels_file)
        return {"type": kind, "img": img, "coords": None, "labels": labels, "names": names,
                "source": str(path)}
    key = name.lower()
    if key not in NILEARN_ATLASES:
        raise DataError(f"atlas '{name}' is neither a file nor a known nilearn atlas",
                        f"pass a NIfTI/coordinates file or one of: {', '.join(NILEARN_ATLASES)}")
    if labels_file is not None:
        log.warning("dataset.atlas_labels is for an atlas file; nilearn's '%s' brings its own "
                    "names", name)
    from nilearn import datasets
    given = None
    if key == "power":
        a = datasets.fetch_coords_power_2011()
        coords = np.vstack([a.rois["x"], a.rois["y"], a.rois["z"]]).T
    elif key == "dosenbach":
        a = datasets.fetch_coords_dosenbach_2010()
        coords = np.vstack([a.rois["x"], a.rois["y"], a.rois["z"]]).T
        given = [str(x) for x in a.labels]            # 'inf cerebellum 155'
    elif key == "seitzman":
        a = datasets.fetch_coords_seitzman_2018()
        coords = np.vstack([a.rois["x"], a.rois["y"], a.rois["z"]]).T
        given = [f"{n} {r}" for n, r in zip(a.networks, a.regions)]   # 'Auditory cortexL'
    else:  # these need a one-time download by nilearn
        fetch = {"harvard_oxford": lambda: datasets.fetch_atlas_harvard_oxford("cort-maxprob-thr25-2mm"),
                 "aal": datasets.fetch_atlas_aal, "schaefer": datasets.fetch_atlas_schaefer_2018,
                 "msdl": datasets.fetch_atlas_msdl, "difumo": datasets.fetch_atlas_difumo}[key]
        try:
            a = fetch()
        except Exception as exc:
            raise DataError(f"nilearn could not fetch atlas '{name}' ({type(exc).__name__})",
                            "connect to the internet once, or pass the atlas file") from None
        kind = NILEARN_ATLASES[key]
        img = a.maps if not isinstance(a.maps, str) else __import__("nibabel").load(a.maps)
        if kind == "labels":   # label values, as for an atlas file; names from nilearn's table
            labels = _label_values(img, f"nilearn:{key}")
        else:
            labels = [str(i) for i in range(img.shape[3])]
        return {"type": kind, "img": img, "coords": None, "labels": labels,
                "names": _names_from_fetched(a, kind, labels), "source": f"nilearn:{key}"}
    coords = np.asarray(coords, float)
    return {"type": "spheres", "img": None, "coords": coords,
            "labels": [str(i) for i in range(len(coords))],
            "names": _sphere_names(coords, given), "source": f"nilearn:{key}"}


def _label_values(img, source) -> list[str]:
    """The non-zero label values of a labels atlas, as text ('10', '11', …).

    Values within 1e-3 of a whole number are that number (a scaled integer image reads
    as 1.0000000149). Others (10.4) mean the image is not a labels atlas as saved: most
    often one resampled with continuous interpolation (its borders blend two labels), a
    probabilistic map, or labels scaled into another data type. Read as whole numbers
    such values would silently merge or invent regions, so they are refused.
    """
    values = np.unique(np.asarray(img.dataobj))
    if not np.issubdtype(values.dtype, np.integer):
        if not np.isfinite(values).all():
            raise DataError(f"{source}: the labels atlas holds NaN or infinite values",
                            "give every voxel a whole-number label (0 for background)")
        whole = np.rint(values)
        odd = values[np.abs(values - whole) > 1e-3]
        if odd.size:
            raise DataError(
                f"{source}: the labels atlas holds {odd.size} value(s) that are not whole "
                f"numbers (e.g. {float(odd[0]):.7g}): a continuously resampled, "
                "probabilistic or rescaled image",
                "save whole-number labels in an integer data type, resampled with "
                "nearest-neighbour interpolation (a probabilistic atlas is a 4-D maps image)")
        values = np.unique(whole)
    return [str(int(v)) for v in values if v != 0]


# ---------------------------------------------------------------- region names
#: Column names that hold a region's name / label value in a lookup table (any case).
_NAME_COLUMNS = ("name", "label_name", "region", "region_name", "roi_name", "label", "labels")
_INDEX_COLUMNS = ("index", "value", "label_value", "label_id", "id", "roi", "intensity")
_BACKGROUND = {"background", "unknown", "0", ""}


def _without_background(names: list, n_regions: int) -> list:
    """A list of names in the regions' order, without a leading background entry when it
    has one name more than there are regions."""
    if len(names) == n_regions + 1 and str(names[0]).strip().lower() in _BACKGROUND:
        return names[1:]
    return names


def _sphere_names(coords, given=None) -> list[str]:
    """Names of sphere regions: the atlas's own where it has them (made unique by the
    sphere's position when it repeats them), else the MNI coordinate — which says more
    about a sphere than its row number."""
    where = [f"({x:.0f}, {y:.0f}, {z:.0f})" for x, y, z in np.asarray(coords, float)]
    if given is None or len(given) != len(where):
        return where
    given = [g if g and g.lower() != "nan" else w for g, w in zip(given, where)]
    repeated = {g for g in given if given.count(g) > 1}
    return [f"{g} {w}" if g in repeated else g for g, w in zip(given, where)]


def lookup_table_path(atlas_path) -> Path | None:
    """The region lookup table beside a NIfTI atlas: BIDS's ``<stem>.tsv`` (``index`` and
    ``name`` columns), or a ``.csv`` / ``.txt`` / ``.lut`` of the same stem (FreeSurfer's
    ``value name R G B A`` and FSLeyes' ``value R G B name`` lines); TemplateFlow's tables,
    which leave out the resolution (``tpl-X_res-02_atlas-Y_dseg.nii.gz`` beside
    ``tpl-X_atlas-Y_dseg.tsv``), are found too.  None when there is none, or the atlas is
    not a NIfTI file."""
    import re
    path = Path(atlas_path)
    name = path.name
    lower = name.lower()
    if lower.endswith(".nii.gz"):
        stem = name[:-len(".nii.gz")]
    elif lower.endswith(".nii"):
        stem = name[:-len(".nii")]
    else:                                  # a coordinates table names its own spheres
        return None
    stems = [stem] + ([re.sub(r"_res-[^_]+", "", stem)] if "_res-" in stem else [])
    for s in stems:
        for suffix in (".tsv", ".csv", ".txt", ".lut"):
            candidate = path.with_name(s + suffix)
            if candidate.is_file() or candidate.is_symlink():  # (annexed: got with the atlas)
                return candidate
    return None


def read_lookup_table(path) -> dict[str, str]:
    """A region lookup table as ``{label value: name}`` (value as written, ``"17"``).

    With a header, the value comes from an ``index``/``value``/``label_value``/``id``
    column and the name from a ``name``/``label``/``region`` column (any case); rows may
    have more or fewer fields than the header (colour columns, trailing tabs).  Without
    one, each line is ``value name [R G B [A]]`` (FreeSurfer) or ``value R G B name``
    (FSLeyes, colours between 0 and 1); ``#`` starts a comment.  A list of names alone (one
    per line, or a name column without values) gives ``{"#1": first, "#2": second, …}``:
    names in the order of the regions.  A table that names no region gives ``{}``.
    """
    import csv
    import re
    path = Path(path)
    try:
        raw = path.read_bytes()
    except OSError:
        return {}
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:                   # an older table in Latin-1
        text = raw.decode("latin-1")
    if any(ord(c) < 32 and c not in "\t\r\n" for c in text):   # a binary file
        return {}
    lines = [ln for ln in text.splitlines() if ln.strip() and not ln.lstrip().startswith("#")]
    if not lines:
        return {}

    def in_order(names):
        names = [str(n).strip() for n in names]
        return {f"#{i + 1}": n for i, n in enumerate(names) if n and n.lower() != "nan"}

    def number(value):
        try:
            v = float(str(value).strip())
        except ValueError:
            return None
        return str(int(v)) if v.is_integer() else str(v)

    headers = set(_INDEX_COLUMNS + _NAME_COLUMNS)
    sep = next((c for c in ("\t", ",", ";") if c in lines[0]), None)
    if sep is None:                              # whitespace-separated lines
        if all(tok.lower() in headers for tok in lines[0].split()):
            lines = lines[1:]                    # a header such as 'index name'
        colour = r"(?:[01]|0?\.\d+|1\.0+)"
        fsleyes = re.compile(rf"^\s*(-?\d+(?:\.0+)?)\s+{colour}\s+{colour}\s+{colour}\s+(.+?)\s*$")
        freesurfer = re.compile(r"^\s*(-?\d+(?:\.0+)?)\s+(.+?)(?:(?:\s+-?\d+){3,4})?\s*$")
        for pattern in (fsleyes, freesurfer):
            rows = [pattern.match(ln) for ln in lines]
            if lines and all(rows):
                return {number(m.group(1)): m.group(2).strip() for m in rows}
        rows = [freesurfer.match(ln) for ln in lines]
        return in_order(lines) if lines and not any(rows) else {}
    rows = [[field.strip() for field in row] for row in csv.reader(lines, delimiter=sep)]
    width = max(len(r) for r in rows)
    rows = [r + [""] * (width - len(r)) for r in rows]
    header = [f.lower() for f in rows[0]]
    index_col = next((header.index(c) for c in _INDEX_COLUMNS if c in header), None)
    name_col = next((header.index(c) for c in _NAME_COLUMNS if c in header), None)
    if name_col is not None:                      # a header row
        body = rows[1:]
        if index_col is None:                     # e.g. 'label,region': the numeric column
            index_col = next((j for j in range(width) if j != name_col and body and
                              all(number(r[j]) is not None for r in body)), None)
        if index_col is None:                     # names alone, in the regions' order
            return in_order(r[name_col] for r in body)
    elif width > 1:                               # value, name, … without a header
        body, index_col, name_col = rows, 0, 1
    else:                                         # one name per line
        return in_order(r[0] for r in rows) if not any(number(r[0]) for r in rows) else {}
    out = {}
    for row in body:
        key, name = number(row[index_col]), row[name_col]
        if key is not None and name:
            out[key] = name
    return out


def _names_from_lookup(path, kind, labels, table_path=None) -> list[str]:
    """Names of a labels or maps atlas file's regions from its lookup table (given, or the
    one beside it); the label values (map positions) where there is none, or it names
    none of them."""
    if table_path is not None:
        table_path = Path(table_path)
        if not table_path.is_file():
            raise missing_file(table_path, "the atlas's lookup table",
                               "give the table of label values and names, or leave "
                               "dataset.atlas_labels out")
    else:
        table_path = lookup_table_path(path)
    if table_path is None:
        return list(labels)
    table = read_lookup_table(table_path)
    if table and all(k.startswith("#") for k in table):     # names alone, in order
        names = _without_background(list(table.values()), len(labels))
        if len(names) == len(labels):
            return names
        log.warning("%s lists %d names for the %d regions of %s: regions are named by their "
                    "label values", table_path.name, len(names), len(labels), Path(path).name)
        return list(labels)
    if kind == "maps":
        # one row per map, in order; written 0-based or 1-based
        base = 0 if "0" in table else 1
        names = [table.get(str(int(lab) + base)) for lab in labels]
    else:
        names = [table.get(lab) for lab in labels]
    found = sum(n is not None for n in names)
    if not found:
        log.warning("%s names none of the %d regions of %s: regions are named by their label "
                    "values", table_path.name, len(labels), Path(path).name)
        return list(labels)
    if found < len(labels):
        missing = [lab for lab, n in zip(labels, names) if n is None]
        log.warning("%s does not name %d of the %d regions of %s (labels %s): those are "
                    "named by their label values", table_path.name, len(missing),
                    len(labels), Path(path).name, ", ".join(missing[:8])
                    + (", …" if len(missing) > 8 else ""))
    return [n if n is not None else lab for n, lab in zip(names, labels)]


def _names_from_fetched(atlas, kind, labels) -> list[str]:
    """Names of a nilearn-fetched atlas's regions, from its look-up table (``lut``, index →
    name) or its ``labels`` list (which may start with the background)."""
    lut = getattr(atlas, "lut", None)
    if kind == "labels" and lut is not None and {"index", "name"} <= set(lut.columns):
        table = {str(int(i)): str(n) for i, n in zip(lut["index"], lut["name"])}
        if any(lab in table for lab in labels):
            return [table.get(lab, lab) for lab in labels]
    given = getattr(atlas, "labels", None)
    if given is not None and hasattr(given, "columns"):       # DiFuMo: a table of names
        col = next((c for c in given.columns if "name" in str(c).lower()), None)
        given = None if col is None else given[col]
    given = _without_background([str(x) for x in (given if given is not None else [])],
                                len(labels))
    return given if len(given) == len(labels) else list(labels)


def atlas_coordinates(atlas) -> np.ndarray | None:
    """World coordinates (mm) of an atlas's regions, in the order of ``atlas["labels"]``:
    the spheres' centres, the centre of each label's largest part (:func:`_label_centres`,
    placed as :func:`nilearn.plotting.find_parcellation_cut_coords` places them) or each
    map's peak region (:func:`nilearn.plotting.find_probabilistic_atlas_cut_coords`); None
    when they cannot be placed.  In MNI space for an MNI atlas, as glass brains expect."""
    labels = [str(lab) for lab in atlas.get("labels") or []]
    if atlas.get("coords") is not None:
        coords = np.asarray(atlas["coords"], dtype=float)
        return coords if len(coords) == len(labels) else None
    img = atlas.get("img")
    if img is None:
        return None
    if atlas.get("type") == "maps":
        from nilearn import plotting
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                coords = np.asarray(plotting.find_probabilistic_atlas_cut_coords(img), float)
        except Exception:  # maps nilearn cannot place: no coordinates
            return None
        return coords if len(coords) == len(labels) else None
    return _label_centres(img, labels)


def _label_centres(img, labels) -> np.ndarray | None:
    """The centre of each label's largest connected part, in world coordinates; a label
    with voxels on both sides of x = 0 is placed in its left part (as nilearn's
    ``find_parcellation_cut_coords`` does, so that a bilateral region is not drawn on the
    midline).  Written here because that function removes the *first* label found when
    the atlas has no background voxel (``np.delete`` by position, nilearn 0.14) and
    scans the whole image once per label; this one visits each label's bounding box."""
    from scipy import ndimage
    data = np.asarray(img.dataobj)
    if data.ndim != 3:
        return None
    affine = img.affine
    lab = data.astype(np.int64)                 # label values as load_atlas reads them
    values = [int(float(v)) for v in labels]
    boxes = ndimage.find_objects(np.where(lab > 0, lab, 0))
    whole = tuple(slice(0, n) for n in lab.shape)
    out = []
    for v in values:
        box = boxes[v - 1] if 0 < v <= len(boxes) else whole   # (a negative label: search)
        if box is None:
            return None
        mask = lab[box] == v
        if not mask.any():
            return None
        # the hemispheres by each voxel's world x, whatever the axes' order or obliquity
        i, j, k = np.ogrid[box[0], box[1], box[2]]
        left = (affine[0, 0] * i + affine[0, 1] * j + affine[0, 2] * k + affine[0, 3]) < 0
        if (mask & left).any() and (mask & ~left).any():
            mask = mask & left
        parts, n = ndimage.label(mask)
        if n > 1:
            sizes = np.bincount(parts.ravel())
            sizes[0] = 0
            mask = parts == sizes.argmax()
        centre = np.array(ndimage.center_of_mass(mask)) + [s.start for s in box]
        out.append(affine[:3, :3] @ centre + affine[:3, 3])
    return np.asarray(out, dtype=float)


def _world_box(img):
    shape = np.asarray(img.shape[:3])
    corners = np.array([[i, j, k] for i in (0, shape[0] - 1) for j in (0, shape[1] - 1)
                        for k in (0, shape[2] - 1)], float)
    world = corners @ img.affine[:3, :3].T + img.affine[:3, 3]
    return world.min(axis=0), world.max(axis=0)


def check_alignment(bold_img, atlas_img, bold_name="bold image", min_overlap=0.5):
    """Raise when the image and the atlas are not in the same space.

    Differing affines within one space (e.g. 3 mm BOLD, 2 mm atlas) are fine:
    nilearn resamples the atlas.  A world-space bounding-box overlap below
    ``min_overlap`` (of the smaller box) means different spaces.
    """
    if atlas_img is None:
        return
    if np.allclose(bold_img.affine, atlas_img.affine, atol=1e-3) and \
            tuple(bold_img.shape[:3]) == tuple(atlas_img.shape[:3]):
        return
    lo1, hi1 = _world_box(bold_img)
    lo2, hi2 = _world_box(atlas_img)
    inter = np.clip(np.minimum(hi1, hi2) - np.maximum(lo1, lo2), 0, None).prod()
    smaller = min(np.prod(hi1 - lo1), np.prod(hi2 - lo2))
    frac = inter / smaller if smaller > 0 else 0.0
    if frac < min_overlap:
        raise DataError(f"{bold_name}: its affine does not match the atlas (only {frac:.0%} of "
                        "their fields of view overlap — different spaces?)",
                        "use BOLD images and an atlas in the same space (e.g. fMRIPrep "
                        "space-MNI152NLin2009cAsym outputs with an MNI atlas)")
    log.info("%s: affine differs from the atlas; nilearn resamples the atlas to it", bold_name)


def _masker(atlas, t_r, radius, smoothing_fwhm, high_pass, low_pass, memory):
    from nilearn.maskers import NiftiLabelsMasker, NiftiMapsMasker, NiftiSpheresMasker
    common = dict(standardize="zscore_sample", detrend=True, t_r=t_r, low_pass=low_pass,
                  high_pass=high_pass, smoothing_fwhm=smoothing_fwhm, memory=memory,
                  verbose=0)
    if atlas["type"] == "labels":
        return NiftiLabelsMasker(labels_img=atlas["img"], **common)
    if atlas["type"] == "maps":
        return NiftiMapsMasker(maps_img=atlas["img"], **common)
    return NiftiSpheresMasker(seeds=atlas["coords"], radius=radius, allow_overlap=True, **common)


def extract_timeseries(bold, atlas, confounds_strategy="simple", t_r=None, radius=5.0,
                       smoothing_fwhm=None, high_pass=0.01, low_pass=0.1, cache_dir=None,
                       atlas_type=None):
    """One subject's region time series from a preprocessed BOLD image.

    Parameters
    ----------
    bold : path
        A preprocessed 4-D BOLD NIfTI (fMRIPrep ``*_desc-preproc_bold.nii.gz``
        or any image in the atlas space).
    atlas : str, Path or dict
        See :func:`load_atlas`.
    confounds_strategy : str or None
        A :func:`nilearn.interfaces.fmriprep.load_confounds_strategy` denoising
        strategy (``simple``, ``scrubbing``, ``compcor``, ``ica_aroma``), or
        ``None`` / ``"none"`` for no confound regression (an image without
        fMRIPrep confound files).
    t_r : float, optional
        Repetition time; read from the image header when omitted.
    radius : float
        Sphere radius in mm (coordinates atlases).
    cache_dir : path, optional
        Per-subject cache folder (``<key>.npy`` + ``<key>.json``).

    Returns
    -------
    ndarray (n_timepoints, n_regions)
    """
    import nibabel as nib
    bold = Path(bold)
    if not bold.is_file():
        raise missing_file(bold, "BOLD image", "check the path")
    atlas = atlas if isinstance(atlas, dict) else load_atlas(atlas, atlas_type)
    # ("columns": every region of the atlas, one outside the image as a column of zeros;
    # series cached before were missing those columns)
    settings = {"atlas": atlas["source"], "type": atlas["type"], "confounds": confounds_strategy,
                "t_r": t_r, "radius": radius, "fwhm": smoothing_fwhm, "hp": high_pass,
                "lp": low_pass, "columns": "all-regions"}
    key = None
    if cache_dir is not None:
        # the key holds the content of every file the series depends on: the image, an
        # atlas file (edited in place, it keeps its name) and the confounds table
        content = {"bold": sha256_file(bold)}
        if t_r is None and _sidecar(bold).is_file():  # its RepetitionTime may be the TR
            content["sidecar_sha256"] = sha256_file(_sidecar(bold))
        if Path(atlas["source"]).is_file():
            content["atlas_sha256"] = sha256_file(atlas["source"])
        if confounds_strategy not in (None, "none"):
            from ..data.bids import confound_files
            content["confounds_sha256"] = [sha256_file(f) for f in confound_files(bold)
                                           if f.is_file()]
        key = stable_hash({**content, **settings})[:24]
        cached = Path(cache_dir) / f"{key}.npy"
        if cached.is_file():
            try:
                return np.load(cached)
            except (OSError, ValueError, EOFError) as exc:  # a damaged cache file: redone
                log.warning("%s: damaged cached series (%s), extracted again", cached,
                            type(exc).__name__)
    try:
        img = nib.load(str(bold))
    except Exception as exc:
        raise DataError(f"{bold}: not a readable NIfTI image ({exc})",
                        "pass a preprocessed 4-D BOLD NIfTI") from None
    if len(img.shape) != 4:
        raise DataError(f"{bold}: a 4-D BOLD series is needed, got shape {img.shape}",
                        "pass the preprocessed bold run, not a single volume")
    check_alignment(img, atlas["img"], bold_name=str(bold))
    if t_r is None:
        t_r = repetition_time(bold, img)
    confounds, sample_mask = None, None
    if confounds_strategy not in (None, "none"):
        from nilearn.interfaces.fmriprep import load_confounds_strategy
        try:
            confounds, sample_mask = load_confounds_strategy(str(bold),
                                                             denoise_strategy=confounds_strategy)
        except (ValueError, FileNotFoundError, KeyError) as exc:  # KeyError: a missing column
            raise DataError(f"{bold}: no usable fMRIPrep confounds for strategy "
                            f"'{confounds_strategy}' ({' '.join(str(exc).split())[:120]})",
                            "put the *_desc-confounds_timeseries.tsv next to the image, or set "
                            "confounds_strategy: none") from None
    masker = _masker(atlas, t_r, radius, smoothing_fwhm, high_pass if t_r else None,
                     low_pass if t_r else None, memory=None)
    try:
        with warnings.catch_warnings():
            # labels outside the image: said below, with the file's name
            warnings.filterwarnings("ignore", message=r".*labels were removed")
            ts = masker.fit_transform(img, confounds=confounds, sample_mask=sample_mask)
    except (EOFError, OSError, zlib.error) as exc:  # the header read, the data did not
        raise DataError(f"{bold}: the image data cannot be read ({type(exc).__name__}: "
                        f"{' '.join(str(exc).split())[:80]}); the file is truncated or corrupt",
                        "download or copy the image again") from None
    except ValueError as exc:
        text = " ".join(str(exc).split())
        if "padlen" in text:
            raise DataError(f"{bold}: {img.shape[3]} volumes are too few to band-pass "
                            f"filter ({high_pass}–{low_pass} Hz)",
                            "use a longer scan (a connectome needs minutes of data)") from None
        if "spheres are empty" in text:
            raise DataError(f"{bold}: spheres of the atlas {atlas['source']} lie outside the "
                            "image", "use an atlas in the image's space and field of view") \
                from None
        if "incorrect length" in text:
            raise DataError(f"{bold}: its confounds table has another number of rows than "
                            f"the image has volumes ({img.shape[3]})",
                            "use the confounds file fMRIPrep wrote for this image") from None
        raise
    ts = np.asarray(ts, dtype=float)
    if atlas["type"] == "labels":
        ts = _all_regions(ts, masker, atlas, bold)
    if key is not None:
        import io
        bio = io.BytesIO()
        np.save(bio, ts)
        try:
            atomic_write_bytes(Path(cache_dir) / f"{key}.npy", bio.getvalue())
            atomic_write_bytes(Path(cache_dir) / f"{key}.json",
                               json.dumps({"bold": str(bold), **settings}).encode())
        except OSError as exc:  # a cache only saves time: the run goes on without it
            if str(cache_dir) not in _UNWRITABLE:  # said once per folder, not per subject
                _UNWRITABLE.add(str(cache_dir))
                log.warning("time series not cached in %s (%s: %s) — fix: set dataset.cache_dir "
                            "or DECODER_CACHE_DIR to a writable folder", cache_dir,
                            type(exc).__name__, exc.strerror or exc)
    return ts


def repetition_time(bold, img, warn: bool = True) -> float | None:
    """The repetition time in seconds: the image header's (milliseconds converted), else
    ``RepetitionTime`` of the BIDS sidecar JSON beside the image; None, with a warning
    (unless ``warn`` is false), when neither gives one (the series is then not band-pass
    filtered)."""
    zooms = img.header.get_zooms()
    t_r = float(zooms[3]) if len(zooms) > 3 else 0.0
    if t_r > 0 and img.header.get_xyzt_units()[1] == "msec":
        t_r /= 1000.0
    if t_r > 0:
        return t_r
    sidecar = _sidecar(bold)
    if sidecar.is_file():
        try:
            value = float(json.loads(sidecar.read_text()).get("RepetitionTime") or 0)
        except (ValueError, TypeError, AttributeError):
            value = 0.0
        if value > 0:
            return value
    if not warn:
        return None
    log.warning("%s: no repetition time in the header or a sidecar JSON: the series is not "
                "band-pass filtered — fix: set RepetitionTime in %s", bold, sidecar.name)
    return None


def _sidecar(bold) -> Path:
    """The BIDS sidecar JSON of an image (``x_bold.nii.gz`` → ``x_bold.json``)."""
    name = Path(bold).name
    stem = name[:-len(".nii.gz")] if name.endswith(".nii.gz") else Path(name).stem
    return Path(bold).with_name(stem + ".json")


def _all_regions(ts, masker, atlas, bold):
    """One column per region of the atlas, in its order: nilearn leaves out a region that
    falls outside the image, which would shift every later column onto another region's
    place; such a region gets a column of zeros (a region without signal), named here."""
    labels = [int(v) for v in np.unique(np.asarray(atlas["img"].dataobj)) if v != 0]
    present = [int(v) for v in getattr(masker, "region_ids_", {}).values()
               if not isinstance(v, str) and int(v) != 0]
    if len(present) != ts.shape[1] or present == labels:
        return ts
    full = np.zeros((ts.shape[0], len(labels)))
    where = {v: i for i, v in enumerate(labels)}
    full[:, [where[v] for v in present]] = ts
    missing = [v for v in labels if v not in set(present)]
    log.warning("%s: %d atlas region(s) outside the image (labels %s): kept as regions "
                "without signal", bold, len(missing),
                ", ".join(map(str, missing[:8])) + (", …" if len(missing) > 8 else ""))
    return full


class TimeSeriesExtractor:
    """Extract and cache time series for many subjects with one atlas and strategy.

    Parameters
    ----------
    atlas : str or Path
    atlas_type : str, optional
    confounds_strategy : str or None
    cache_dir : path, optional
    **kwargs
        Passed to :func:`extract_timeseries`.
    """

    def __init__(self, atlas, atlas_type=None, confounds_strategy="simple", cache_dir=None,
                 labels_file=None, **kwargs):
        self.atlas = atlas
        self.atlas_type = atlas_type
        self.labels_file = labels_file
        self.confounds_strategy = confounds_strategy
        self.cache_dir = cache_dir
        self.kwargs = kwargs
        self._atlas = None

    def __call__(self, bold_files):
        if self._atlas is None:
            self._atlas = load_atlas(self.atlas, self.atlas_type, self.labels_file)
        return [extract_timeseries(b, self._atlas, self.confounds_strategy,
                                   cache_dir=self.cache_dir, **self.kwargs) for b in bold_files]
