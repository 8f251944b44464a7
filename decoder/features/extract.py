"""Region time series from 4D NIfTI runs and a labels atlas, at disk speed.

:func:`extract_labels` gives the same result as nilearn's
``NiftiLabelsMasker(labels_img=atlas).fit_transform(img, confounds)`` (mean
of each region's voxels, background label ignored, atlas resampled to the
image with nearest-neighbour interpolation when the grids differ, cleaning
by :func:`nilearn.signal.clean` with the masker's defaults) while reading
each gzip stream once with the fastest installed codec and reducing it in
small blocks (see :mod:`decoder.features._extract`).

:class:`LabelsExtractor` wraps it as a scikit-learn transformer, and
:func:`extract_subjects` runs it over many subjects, locally or on a Dask
cluster, with a content-hash cache so a rerun only does unfinished work.
"""

from __future__ import annotations

import os
import warnings
from collections import OrderedDict
from pathlib import Path
from typing import Mapping

import nibabel as nib
import numpy as np
from sklearn.base import BaseEstimator, TransformerMixin
from sklearn.utils.validation import check_is_fitted

from ..errors import ConfigError, DataError, missing_file
from . import _extract
from ._cache import FeatureCache

__all__ = ["extract_labels", "extract_subjects", "LabelsExtractor", "CODEC"]

#: Name of the inflater used for ``.nii.gz`` ("isal", "zlib-ng" or "zlib").
CODEC = _extract.CODEC

# Bump when a change could alter extracted values: it invalidates cached entries.
_EXTRACTOR_VERSION = 1

_CLEAN_DEFAULTS = {"detrend": False, "standardize": None, "standardize_confounds": True,
                   "low_pass": None, "high_pass": None, "t_r": None, "clean_args": None}


# --------------------------------------------------------------------- atlas --
def _describe(obj) -> str:
    if isinstance(obj, (str, os.PathLike)):
        return str(obj)
    name = obj.get_filename() if hasattr(obj, "get_filename") else None
    return str(name) if name else "the in-memory image"


def _load_atlas(atlas):
    """Return ``(3D labels image, description)``; one-line errors for bad input."""
    if atlas is None:
        raise ConfigError("no labels atlas given", "pass atlas=<labels NIfTI file>")
    name = _describe(atlas)
    if isinstance(atlas, (str, os.PathLike)):
        if not Path(atlas).is_file():
            raise missing_file(atlas, "atlas file",
                            "check the path (and 'datalad get' it)")
        try:
            atlas = nib.load(atlas)
        except Exception as exc:  # noqa: BLE001 - any nibabel failure is a bad file
            raise DataError(f"{name}: not a readable NIfTI labels image ({exc})",
                            "pass a 3D integer labels image (.nii or .nii.gz)") from None
    if not isinstance(atlas, nib.spatialimages.SpatialImage):
        raise ConfigError(f"atlas must be a NIfTI file or image, got {type(atlas).__name__}",
                          "pass the path of a labels NIfTI file")
    shape = atlas.shape
    if len(shape) == 4 and shape[3] == 1:
        atlas = nib.Nifti1Image(np.asanyarray(atlas.dataobj)[..., 0], atlas.affine, atlas.header)
    elif len(shape) != 3:
        raise DataError(f"{name}: a labels atlas must be 3D, got shape {shape}",
                        "pass a 3D labels image (probabilistic 4D atlases need a maps masker)")
    return atlas, name


_PLANS: OrderedDict = OrderedDict()   # small per-process memo: atlas x grid -> LabelPlan
_PLAN_MEMO_SIZE = 8


def _grid_key(shape, affine):
    return tuple(int(s) for s in shape[:3]), np.round(np.asarray(affine, float), 6).tobytes()


def _plan_for(atlas, shape, affine, *, background_label, resample_atlas, img_name):
    """Atlas indexed on the image grid (resampled nearest-neighbour if allowed)."""
    memo_key = None
    if isinstance(atlas, (str, os.PathLike)) and Path(atlas).is_file():
        st = Path(atlas).stat()
        memo_key = (str(Path(atlas).resolve()), st.st_size, st.st_mtime_ns,
                    _grid_key(shape, affine), background_label, bool(resample_atlas))
        if memo_key in _PLANS:
            _PLANS.move_to_end(memo_key)
            return _PLANS[memo_key]
    atlas_img, atlas_name = _load_atlas(atlas)
    same_grid = (tuple(atlas_img.shape[:3]) == tuple(shape[:3])
                 and np.allclose(atlas_img.affine, affine))  # nilearn's check_same_fov
    if not same_grid:
        if not resample_atlas:
            raise DataError(
                f"{img_name}: image grid {tuple(shape[:3])} (affine diagonal "
                f"{np.round(np.diag(affine)[:3], 3).tolist()}) differs from the atlas "
                f"{atlas_name} {tuple(atlas_img.shape[:3])} (affine diagonal "
                f"{np.round(np.diag(atlas_img.affine)[:3], 3).tolist()})",
                "use an atlas in the images' space, or allow resample_atlas=True")
        from nilearn.image import resample_img
        before = set(np.unique(np.asanyarray(atlas_img.dataobj)).tolist())
        atlas_img = resample_img(atlas_img, target_affine=affine, target_shape=tuple(shape[:3]),
                                 interpolation="nearest", force_resample=True, copy_header=True)
        lost = before - set(np.unique(np.asanyarray(atlas_img.dataobj)).tolist())
        if lost:
            warnings.warn(f"resampling the atlas {atlas_name} to {img_name} removed labels "
                          f"{sorted(lost)}; their columns are left out", stacklevel=3)
    plan = _extract.build_plan(np.asanyarray(atlas_img.dataobj), affine, background_label)
    if not len(plan.labels):
        raise DataError(f"{atlas_name}: no region left on the grid of {img_name} "
                        f"(every voxel is background {background_label})",
                        "check the atlas covers the images and its background_label")
    if memo_key is not None:
        _PLANS[memo_key] = plan
        while len(_PLANS) > _PLAN_MEMO_SIZE:
            _PLANS.popitem(last=False)
    return plan


# ------------------------------------------------------------------- signals --
def _region_means(img, atlas, *, background_label, resample_atlas, block_bytes):
    """``(means (n_volumes, n_regions), labels)`` of one image."""
    name = _describe(img)
    kw = dict(background_label=background_label, resample_atlas=resample_atlas, img_name=name)
    if isinstance(img, (str, os.PathLike)):
        layout = _extract.read_layout(img)
        if layout is not None:
            plan = _plan_for(atlas, layout.shape, layout.affine, **kw)
            return _extract.reduce_file(img, layout, plan, block_bytes), plan.labels
        try:  # not a single-file NIfTI: let nibabel read it
            img = nib.load(img)
        except Exception as exc:  # noqa: BLE001
            raise DataError(f"{name}: not a readable NIfTI image ({exc})",
                            "pass a 3D/4D .nii or .nii.gz file") from None
    if not isinstance(img, nib.spatialimages.SpatialImage):
        raise ConfigError(f"image must be a NIfTI file or image, got {type(img).__name__}",
                          "pass the path of a 4D NIfTI run")
    filename = img.get_filename()
    if nib.is_proxy(img.dataobj) and filename and Path(filename).is_file():
        layout = _extract.read_layout(filename)  # unmodified file-backed image: fast path
        if (layout is not None and tuple(img.shape[:3]) == layout.shape
                and np.allclose(img.affine, layout.affine)):
            plan = _plan_for(atlas, layout.shape, layout.affine, **kw)
            return _extract.reduce_file(filename, layout, plan, block_bytes), plan.labels
    shape = img.shape
    if len(shape) > 4 and any(s != 1 for s in shape[4:]):
        raise DataError(f"{name}: expected a 3D or 4D image, got shape {shape}",
                        "pass one 4D run at a time")
    data = np.asanyarray(img.dataobj)
    if data.ndim > 4:
        data = data.reshape(shape[:4])
    plan = _plan_for(atlas, shape[:3], img.affine, **kw)
    return _extract.reduce_array(data, plan, block_bytes), plan.labels


def _clean(signals, confounds, sample_mask, params, name):
    """Confound removal, detrending, filtering, standardising: nilearn's ``signal.clean``."""
    from nilearn.signal import clean

    standardize = params.get("standardize")
    if standardize is False:
        standardize = None  # nilearn >= 0.14 spells "no standardisation" None
    try:
        return clean(signals, detrend=params.get("detrend", False), standardize=standardize,
                     standardize_confounds=params.get("standardize_confounds", True),
                     t_r=params.get("t_r"), low_pass=params.get("low_pass"),
                     high_pass=params.get("high_pass"), confounds=confounds,
                     sample_mask=sample_mask, **(params.get("clean_args") or {}))
    except (ValueError, TypeError, FileNotFoundError) as exc:
        raise DataError(f"{name}: cleaning the region signals failed "
                        f"({' '.join(str(exc).split())})",
                        "give confounds with one row per volume, and t_r when filtering") \
            from None


def extract_labels(img, atlas, confounds=None, *, background_label=0, resample_atlas=True,
                   detrend=False, standardize=None, standardize_confounds=True,
                   low_pass=None, high_pass=None, t_r=None, clean_args=None,
                   sample_mask=None, return_labels=False, block_mb=32):
    """Mean signal of every atlas region in every volume of one image.

    Parameters
    ----------
    img : str, Path or nibabel image
        A 3D or 4D NIfTI run (``.nii`` or ``.nii.gz``).
    atlas : str, Path or nibabel image
        3D labels image: one integer region id per voxel.
    confounds : array-like, DataFrame or str, optional
        Confounds regressed out of the region signals (anything
        :func:`nilearn.signal.clean` accepts), one row per volume.
    background_label : number, default=0
        Region id of "no region".
    resample_atlas : bool, default=True
        When the atlas grid differs from the image's, resample the atlas
        (nearest neighbour, like ``NiftiLabelsMasker``); if False, raise a
        :class:`~decoder.errors.DataError` naming the file.
    detrend, standardize, standardize_confounds, low_pass, high_pass, t_r
        Cleaning options, passed to :func:`nilearn.signal.clean` with the
        same defaults as ``NiftiLabelsMasker``.
    clean_args : dict, optional
        Further keyword arguments for :func:`nilearn.signal.clean`.
    sample_mask : array-like, optional
        Volumes to keep (scrubbing), as in nilearn.
    return_labels : bool, default=False
        Also return the region id of each column.
    block_mb : float, default=32
        Decompressed megabytes reduced at a time: the working memory.

    Returns
    -------
    signals : ndarray of shape (n_volumes, n_regions), float64
        Columns follow increasing region id; regions absent from the image
        grid are left out, as in nilearn.
    labels : ndarray of shape (n_regions,)
        Only if ``return_labels``.

    Raises
    ------
    DataError
        Missing, truncated or corrupt files, grids that differ when
        ``resample_atlas=False``, or confounds that do not fit.
    """
    means, labels = _region_means(img, atlas, background_label=background_label,
                                  resample_atlas=resample_atlas,
                                  block_bytes=int(block_mb * (1 << 20)))
    params = dict(detrend=detrend, standardize=standardize,
                  standardize_confounds=standardize_confounds, low_pass=low_pass,
                  high_pass=high_pass, t_r=t_r, clean_args=clean_args)
    signals = _clean(means, confounds, sample_mask, params, _describe(img))
    return (signals, labels) if return_labels else signals


# --------------------------------------------------------------- transformer --
class LabelsExtractor(TransformerMixin, BaseEstimator):
    """Scikit-learn transformer: 4D NIfTI runs -> region time series.

    A fast drop-in for ``nilearn.maskers.NiftiLabelsMasker`` with
    ``strategy='mean'`` (see :func:`extract_labels`).

    Parameters
    ----------
    atlas : str, Path or nibabel image
        3D labels image.
    background_label : number, default=0
    resample_atlas : bool, default=True
    detrend : bool, default=False
    standardize : str or None, default=None
    standardize_confounds : bool, default=True
    low_pass, high_pass, t_r : float or None, default=None
    clean_args : dict or None, default=None
    block_mb : float, default=32
        See :func:`extract_labels`.

    Attributes
    ----------
    region_ids_ : ndarray of shape (n_regions,)
        Region ids of the atlas on its own grid, in column order.
    n_regions_ : int
        ``len(region_ids_)``.
    """

    def __init__(self, atlas=None, background_label=0, resample_atlas=True, detrend=False,
                 standardize=None, standardize_confounds=True, low_pass=None, high_pass=None,
                 t_r=None, clean_args=None, block_mb=32):
        self.atlas = atlas
        self.background_label = background_label
        self.resample_atlas = resample_atlas
        self.detrend = detrend
        self.standardize = standardize
        self.standardize_confounds = standardize_confounds
        self.low_pass = low_pass
        self.high_pass = high_pass
        self.t_r = t_r
        self.clean_args = clean_args
        self.block_mb = block_mb

    def fit(self, X=None, y=None):
        """Load and index the atlas (``X`` and ``y`` are ignored).

        Returns
        -------
        self
        """
        atlas_img, _ = _load_atlas(self.atlas)
        plan = _extract.build_plan(np.asanyarray(atlas_img.dataobj), atlas_img.affine,
                                   self.background_label)
        if not len(plan.labels):
            raise DataError(f"{_describe(self.atlas)}: the atlas has no region "
                            f"(every voxel is background {self.background_label})",
                            "check the atlas file and background_label")
        self.region_ids_ = plan.labels
        self.n_regions_ = len(plan.labels)
        return self

    def _params(self):
        return dict(background_label=self.background_label, resample_atlas=self.resample_atlas,
                    detrend=self.detrend, standardize=self.standardize,
                    standardize_confounds=self.standardize_confounds, low_pass=self.low_pass,
                    high_pass=self.high_pass, t_r=self.t_r, clean_args=self.clean_args,
                    block_mb=self.block_mb)

    def transform(self, X, confounds=None, sample_mask=None):
        """Region time series of one run, or of each run of a list.

        Parameters
        ----------
        X : str, Path, nibabel image, or list of them
        confounds : confounds, or list of them (one per run), optional
        sample_mask : array-like, or list of them, optional

        Returns
        -------
        ndarray of shape (n_volumes, n_regions), or a list of them for a list
        """
        check_is_fitted(self, "region_ids_")
        if not isinstance(X, (list, tuple)):
            return extract_labels(X, self.atlas, confounds, sample_mask=sample_mask,
                                  **self._params())
        confounds = [None] * len(X) if confounds is None else list(confounds)
        sample_mask = [None] * len(X) if sample_mask is None else list(sample_mask)
        if len(confounds) != len(X) or len(sample_mask) != len(X):
            raise DataError(f"{len(X)} runs but {len(confounds)} confounds and "
                            f"{len(sample_mask)} sample masks",
                            "give one confounds table (or None) per run")
        return [extract_labels(x, self.atlas, c, sample_mask=m, **self._params())
                for x, c, m in zip(X, confounds, sample_mask)]

    def fit_transform(self, X, y=None, confounds=None, sample_mask=None):
        """:meth:`fit` then :meth:`transform`."""
        return self.fit(X, y).transform(X, confounds=confounds, sample_mask=sample_mask)

    def get_feature_names_out(self, input_features=None):
        """Column names ``region_<id>``."""
        check_is_fitted(self, "region_ids_")
        return np.asarray([f"region_{v:g}" if isinstance(v, float) else f"region_{v}"
                           for v in self.region_ids_.tolist()], dtype=object)


# ------------------------------------------------------------------ subjects --
def _as_list(value):
    if value is None:
        return None
    if isinstance(value, (list, tuple)):
        return list(value)
    return [value]


def _subject_job(job):
    """Extract every run of one subject (runs on a worker)."""
    runs, confounds, atlas, params = job
    out = []
    for run, conf in zip(runs, confounds):
        signals, labels = extract_labels(run, atlas, conf, return_labels=True, **params)
        out.append((signals, labels))
    return out


def extract_subjects(subjects: Mapping, atlas, *, confounds: Mapping | None = None,
                     cache_dir=None, backend=None, scheduler=None, n_jobs=1, progress=None,
                     **params):
    """Region time series of many subjects, cached, locally or on Dask.

    Parameters
    ----------
    subjects : mapping
        ``subject id -> run`` or ``-> list of runs`` (NIfTI paths).
    atlas : str or Path
        3D labels atlas (a path, so every worker can read it).
    confounds : mapping, optional
        ``subject id -> confounds`` (or a list, one per run).
    cache_dir : str or Path, optional
        Cache folder: a subject whose inputs (by content) and parameters are
        unchanged is read back instead of recomputed.
    backend, scheduler, n_jobs
        Where to run; see :func:`decoder.compute.get_backend`.
    progress : bool or None, default=None
        Progress bar (None: only on a terminal).
    **params
        Options of :func:`extract_labels` (``detrend``, ``t_r``, ...).

    Returns
    -------
    decoder.compute.MapResult
        ``results[subject]`` is an array ``(n_volumes, n_regions)`` for a
        single run, a list of them for a list of runs; ``failures`` names
        each subject that failed and why; ``summary()`` says it in one line.
    """
    from ..compute import map_subjects

    allowed = set(_CLEAN_DEFAULTS) | {"background_label", "resample_atlas", "block_mb"}
    unknown = sorted(set(params) - allowed)
    if unknown:
        raise ConfigError(f"unknown extraction option(s): {', '.join(unknown)}",
                          f"known options: {', '.join(sorted(allowed))}")
    if not isinstance(subjects, Mapping) or not subjects:
        raise ConfigError("extract_subjects needs a mapping of subject id to run file(s)",
                          "pass e.g. {'sub-01': ['run-1.nii.gz', 'run-2.nii.gz']}")
    confounds = dict(confounds or {})
    jobs, single = {}, {}
    for sub, runs in subjects.items():
        single[sub] = not isinstance(runs, (list, tuple))
        runs = _as_list(runs)
        conf = _as_list(confounds.get(sub)) or [None] * len(runs)
        if len(conf) != len(runs):
            raise DataError(f"subject {sub}: {len(runs)} runs but {len(conf)} confounds",
                            "give one confounds table (or None) per run")
        jobs[sub] = ([str(r) if isinstance(r, os.PathLike) else r for r in runs], conf,
                     str(atlas) if isinstance(atlas, os.PathLike) else atlas, params)

    cache, keys, cached = None, {}, {}
    if cache_dir is not None:
        cache = FeatureCache(cache_dir, namespace="labels")
        atlas_digest = cache.input_digest(atlas) if isinstance(atlas, (str, os.PathLike)) \
            else cache.input_digest(np.asanyarray(_load_atlas(atlas)[0].dataobj))
        settings = {"version": _EXTRACTOR_VERSION, "atlas": atlas_digest,
                    **{k: v for k, v in params.items() if k != "block_mb"}}
        for sub, (runs, conf, _, _) in jobs.items():
            try:
                keys[sub] = cache.key(list(runs) + [("confounds", i, cache.input_digest(c))
                                                    for i, c in enumerate(conf) if c is not None],
                                      settings)
            except (OSError, TypeError):
                continue  # unreadable or in-memory input: not cached, the job reports errors
            hit = cache.get(keys[sub])
            if hit is not None:
                arrays, _ = hit
                try:
                    cached[sub] = [(arrays[f"run_{i}"], arrays[f"labels_{i}"])
                                   for i in range(len(runs))]
                except KeyError:
                    pass  # entry from an incompatible layout: recompute
        cache.save_digests()

    def _store(sub, value):
        if cache is not None and sub in keys:
            arrays = {}
            for i, (signals, labels) in enumerate(value):
                arrays[f"run_{i}"], arrays[f"labels_{i}"] = signals, labels
            cache.put(keys[sub], arrays, {"subject": sub, "runs": [str(r) for r in jobs[sub][0]]})

    result = map_subjects(_subject_job, jobs, backend=backend, scheduler=scheduler,
                          n_jobs=n_jobs, progress=progress, desc="subjects",
                          on_result=_store, cached=cached)
    result.results = {sub: (runs[0][0] if single[sub] else [s for s, _ in runs])
                      for sub, runs in result.results.items()}
    return result
