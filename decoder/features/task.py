"""Task fMRI samples: labelled volumes, block averages, or GLM beta maps.

``load_task_data`` masks and cleans every run once (nilearn masker and
``signal.clean``); the sample builders then turn the cleaned runs into
``(X, y, groups, units)`` for a given labelling delay and temporal window,
so those choices can be made inside training folds without reloading.
"""

from __future__ import annotations

import logging
import warnings
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from ..data.bids import Run, check_same_grid, load_bold, load_confounds, read_events
from ..errors import DataError

log = logging.getLogger(__name__)


@dataclass
class TaskData:
    """Masked, cleaned runs with their events and blocks."""

    runs: list
    X: list                 # per run: float32 (n_volumes, n_voxels)
    events: list            # per run: DataFrame
    blocks: pd.DataFrame    # one row per block: run, block, trial_type, onset, offset
    mask_img: object
    masker: object
    tr: list = field(default_factory=list)

    @property
    def n_voxels(self) -> int:
        return self.X[0].shape[1]


def find_blocks(events: pd.DataFrame, max_gap: float) -> pd.DataFrame:
    """Merge consecutive events of the same type (gap ≤ ``max_gap`` s) into blocks."""
    rows = []
    cur = None
    for ev in events.itertuples(index=False):
        end = ev.onset + ev.duration
        if cur is not None and cur["trial_type"] == ev.trial_type and ev.onset - cur["offset"] <= max_gap:
            cur["offset"] = max(cur["offset"], end)
            cur["n_events"] += 1
        else:
            cur = {"trial_type": ev.trial_type, "onset": ev.onset, "offset": end, "n_events": 1}
            rows.append(cur)
    return pd.DataFrame(rows, columns=["trial_type", "onset", "offset", "n_events"])


def _compute_mask(imgs):
    """An EPI mask from the runs (nilearn); thin slabs skip the 3D morphological opening."""
    from nilearn.masking import compute_multi_epi_mask
    thin = min(imgs[0].shape[:3]) < 5
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            mask = compute_multi_epi_mask(imgs, opening=0 if thin else 2,
                                          connected=not thin)
        except ValueError:
            mask = None
    if mask is None or not np.asarray(mask.dataobj).any():
        raise DataError("could not compute a brain mask from the runs (empty mask)",
                        "give a mask file with dataset.mask")
    return mask, "computed (nilearn compute_multi_epi_mask)"


def check_finite_in_mask(data, mask_img, path) -> None:
    """Raise a :class:`DataError` when a run has NaN or inf voxels inside the mask.

    The check must look at the image data before masking: nilearn's maskers
    replace non-finite values by zeros, so a run full of NaN would otherwise be
    decoded as flat zeros, silently lowering the accuracy.

    Parameters
    ----------
    data : ndarray (x, y, z, t)
        The run's data, as already loaded (no second read of the file).
    mask_img : Nifti1Image
        The brain mask, on the run's grid.
    path : path
        The run's file, named in the error.
    """
    # integer images cannot hold NaN; for float ones the sum is one pass without a
    # temporary array and is finite unless a value is not (or it overflows, which
    # only sends it to the exact test below), so clean runs cost one pass at most
    if data.dtype.kind != "f" or np.isfinite(data.sum()):
        return
    # NaN outside the brain is common (e.g. resampled images) and harmless: only
    # voxels inside the mask count
    inside = data[np.asarray(mask_img.dataobj) > 0]
    bad = ~np.isfinite(inside)
    if bad.any():
        raise DataError(
            f"{path} contains NaN (or inf) values inside the mask "
            f"({int(bad.any(axis=1).sum())} of {len(inside)} voxels, "
            f"{int(bad.any(axis=0).sum())} of {data.shape[3]} volumes)",
            "replace the file by a clean copy of the run, leave the run out, or use a "
            "mask that excludes those voxels")


def _load_run(job):
    """Mask, check and clean one run; read its events. Returns ``(X, events)``."""
    from nilearn import signal

    r, masker, mask_path, p = job
    img = load_bold(r.bold)
    check_same_grid(img, masker.mask_img_, r.bold, mask_path)
    n_vol = img.shape[3]
    check_finite_in_mask(np.asanyarray(img.dataobj), masker.mask_img_, r.bold)
    X = masker.transform(img).astype(np.float64)
    if X.shape[0] > 1 and not np.ptp(X, axis=0).any():  # z-scored, it would decode as zeros
        raise DataError(f"{r.bold}: every voxel in the mask is constant over time",
                        "check the image (an empty placeholder, or a failed preprocessing "
                        "step?) or leave the run out")
    conf = load_confounds(r, p["confounds"], n_vol) if p["confounds"] else None
    conf_arr, sample_mask = (conf if conf is not None else (None, None))
    if sample_mask is not None:
        log.warning("%s: confound strategy censors volumes; censored volumes are kept "
                    "for labelling but their confounds are regressed", r.bold.name)
    X = signal.clean(X, detrend=p["detrend"],
                     standardize="zscore_sample" if p["standardize"] else None,
                     confounds=conf_arr.to_numpy() if conf_arr is not None else None,
                     high_pass=p["high_pass"], t_r=r.tr if p["high_pass"] else None)
    if r.events is None:
        raise DataError(f"no events.tsv for {r.bold}",
                        "add <bold name>_events.tsv with onset, duration, trial_type")
    ev = read_events(r.events, n_volumes=n_vol, tr=r.tr)
    return np.nan_to_num(X).astype(np.float32), ev


def load_task_data(runs: list[Run], mask_img, mask_path=None, detrend=True,
                   standardize=True, high_pass=None, confounds=None,
                   block_max_gap=None, backend=None) -> TaskData:
    """Mask and clean every run; read and validate events; find blocks.

    Parameters
    ----------
    runs : list of Run
    mask_img : Nifti1Image or None
        Brain mask; ``None`` computes one from the runs (nilearn ``compute_multi_epi_mask``).
    detrend, standardize : bool
        Per-run signal cleaning (nilearn ``signal.clean``).
    high_pass : float or None
        High-pass cutoff in Hz.
    confounds : str or None
        fMRIPrep denoising strategy for ``load_confounds_strategy``.
    block_max_gap : float or None
        Largest gap (s) between same-type events of one block; default one TR.
    backend : LocalBackend or DaskBackend, optional
        Where runs are loaded (see :mod:`decoder.compute`); default: here, in turn.
    """
    from nilearn.maskers import NiftiMasker

    if mask_img is None:
        mask_img, mask_path = _compute_mask([load_bold(r.bold) for r in runs])
    masker = NiftiMasker(mask_img=mask_img, standardize=None, detrend=False).fit()
    params = dict(detrend=detrend, standardize=standardize, high_pass=high_pass,
                  confounds=confounds)
    jobs = [(r, masker, mask_path, params) for r in runs]
    if backend is None or getattr(backend, "n_jobs", None) == 1:
        loaded = [_load_run(job) for job in jobs]
    else:  # one run per task on the configured backend (joblib or Dask)
        from ..compute import map_subjects
        clog = logging.getLogger("decoder.compute")
        level = clog.level
        clog.setLevel(logging.ERROR)  # a failed run is reported once, below, as the error
        try:
            res = map_subjects(_load_run, jobs, keys=[r.key for r in runs], backend=backend,
                               desc="runs", progress=False)
        finally:
            clog.setLevel(level)
        if res.failures:
            reason = next(iter(res.failures.values()))
            raise DataError(reason)
        loaded = [res.results[r.key] for r in runs]
    Xs, evs, blocks = [], [], []
    for i, (r, (X, ev)) in enumerate(zip(runs, loaded)):
        Xs.append(X)
        evs.append(ev)
        b = find_blocks(ev, block_max_gap if block_max_gap is not None else r.tr)
        b.insert(0, "run", i)
        blocks.append(b)
    blocks = pd.concat(blocks, ignore_index=True)
    blocks.insert(1, "block", np.arange(len(blocks)))
    return TaskData(runs=runs, X=Xs, events=evs, blocks=blocks, mask_img=mask_img,
                    masker=masker, tr=[r.tr for r in runs])


def select_classes(blocks: pd.DataFrame, classes) -> list:
    """Resolve ``classes`` ('all' or a list) against the trial types present."""
    present = sorted(blocks["trial_type"].unique())
    if classes in (None, "all", ["all"]):
        chosen = present
    else:
        if isinstance(classes, str):  # 'face,house' written in YAML: the same list as --set
            classes = [c.strip() for c in classes.split(",") if c.strip()]
        chosen = [str(c) for c in classes]
        twice = sorted({c for c in chosen if chosen.count(c) > 1})
        if twice:  # else 'face,face' ends as "only one class in the training labels"
            raise DataError(f"class {twice[0]!r} is listed twice in classes",
                            "list each class once, e.g. --set classes=face,house")
        unknown = [c for c in chosen if c not in present]
        if unknown:
            raise DataError(f"unknown class name(s) {', '.join(map(repr, unknown))}",
                            f"choose from the trial types in events.tsv: {', '.join(present)}")
    if len(chosen) < 2:
        raise DataError(f"only one class selected ({', '.join(chosen)})",
                        "decoding needs at least two classes, e.g. --set classes=face,house")
    return chosen


def smooth_runs(X_runs, window: int):
    """Moving average over ``window`` volumes within each run (no mixing across runs)."""
    if window is None or int(window) <= 1:
        return X_runs
    from scipy.ndimage import uniform_filter1d
    return [uniform_filter1d(X, int(window), axis=0, mode="nearest") for X in X_runs]


def volume_samples(data: TaskData, classes, delay: float, X_runs=None):
    """Labelled volumes: volume ``t`` belongs to a block when it was acquired
    between the block's onset + ``delay`` and its offset + ``delay``.

    Returns
    -------
    X : ndarray (n_samples, n_voxels)
    y : ndarray of str
    runs : ndarray of int (run index)
    units : ndarray of int (block id of each volume)
    index : ndarray of int (volume index within its run)
    """
    X_runs = data.X if X_runs is None else X_runs
    keep = set(classes)
    Xo, y, runs, units, vidx = [], [], [], [], []
    for b in data.blocks.itertuples(index=False):
        if b.trial_type not in keep:
            continue
        tr = data.tr[b.run]
        n_vol = X_runs[b.run].shape[0]
        t = np.arange(n_vol) * tr
        sel = np.flatnonzero((t >= b.onset + delay) & (t < b.offset + delay))
        if len(sel) == 0:
            continue
        Xo.append(X_runs[b.run][sel])
        y += [b.trial_type] * len(sel)
        runs += [b.run] * len(sel)
        units += [b.block] * len(sel)
        vidx += list(sel)
    if not Xo:
        raise DataError("no volume falls inside a selected block",
                        "check events onsets, the TR and the delay")
    return (np.vstack(Xo), np.asarray(y), np.asarray(runs), np.asarray(units), np.asarray(vidx))


def block_average_samples(data: TaskData, classes, delay: float, X_runs=None):
    """One sample per block: the mean of its labelled volumes."""
    X, y, runs, units, _ = volume_samples(data, classes, delay, X_runs)
    ids = np.unique(units)
    Xb = np.stack([X[units == u].mean(axis=0) for u in ids])
    first = np.array([np.flatnonzero(units == u)[0] for u in ids])
    return Xb, y[first], runs[first], ids


# Above this variance inflation a regressor's beta is mostly the noise it shares with its
# neighbours (the usual rule of thumb is 5–10; Mumford et al. 2012 for per-trial betas).
MAX_VARIANCE_INFLATION = 10.0


def variance_inflation(design: pd.DataFrame, columns) -> np.ndarray:
    """Variance inflation factor of each of ``columns`` in a first-level design matrix.

    ``1 / (1 - R²)`` of the column regressed on all the others (the constant left out, the
    columns centred): 1 for a regressor independent of the rest, large when the others
    nearly reproduce it, so that its beta is poorly determined.
    """
    X = design.drop(columns=[c for c in design.columns if c == "constant"])
    X = X - X.mean(axis=0)
    corr = np.corrcoef(X.to_numpy(float).T)
    vif = np.diag(np.linalg.pinv(corr))
    where = [list(X.columns).index(c) for c in columns]
    return vif[where]


def beta_samples(data: TaskData, classes, method: str = "lsa", unit: str = "block",
                 hrf_model: str = "glover"):
    """Per-block (or per-trial) beta maps from nilearn's first-level GLM.

    ``lsa`` (least squares all) fits one regressor per block in one model
    per run; ``lss`` (least squares separate) fits, for each block, a model
    with that block and one regressor for all the others.
    """
    from nilearn.glm.first_level import FirstLevelModel

    def glm_fit(img, events):
        with warnings.catch_warnings():
            # nilearn announces that the given mask (ours) is used instead of computing one
            warnings.filterwarnings("ignore", message=r".*Given mask will be used")
            return FirstLevelModel(**glm_kw).fit(img, events=events)

    keep = set(classes)
    Xo, y, runs, units = [], [], [], []
    inflation = []   # (median variance inflation of the run's lsa regressors, run)
    for i, (r, Xr) in enumerate(zip(data.runs, data.X)):
        if unit == "trial":
            ev = data.events[i].copy()
            ev["unit"] = np.arange(len(ev)) + 100000 * i
        else:
            b = data.blocks[data.blocks.run == i]
            ev = pd.DataFrame({"onset": b.onset.to_numpy(), "duration": (b.offset - b.onset).to_numpy(),
                               "trial_type": b.trial_type.to_numpy(), "unit": b.block.to_numpy()})
        ev = ev[ev.trial_type.isin(keep)].reset_index(drop=True)
        img = data.masker.inverse_transform(Xr)
        glm_kw = dict(t_r=r.tr, hrf_model=hrf_model, drift_model="cosine", mask_img=data.mask_img,
                      standardize=False, signal_scaling=False, minimize_memory=True)
        if method == "lsa":
            lsa = ev.assign(trial_type=[f"u{k}" for k in range(len(ev))])[["onset", "duration", "trial_type"]]
            glm = glm_fit(img, lsa)
            vif = variance_inflation(glm.design_matrices_[0], list(lsa.trial_type))
            inflation.append((float(np.median(vif)), i))
            for k, row in ev.iterrows():
                beta = glm.compute_contrast(f"u{k}", output_type="effect_size")
                Xo.append(data.masker.transform(beta).ravel())
                y.append(row.trial_type); runs.append(i); units.append(int(row.unit))
        elif method == "lss":
            for k, row in ev.iterrows():
                lss = ev[["onset", "duration"]].copy()
                lss["trial_type"] = np.where(np.arange(len(ev)) == k, "target", "other")
                glm = glm_fit(img, lss)
                beta = glm.compute_contrast("target", output_type="effect_size")
                Xo.append(data.masker.transform(beta).ravel())
                y.append(row.trial_type); runs.append(i); units.append(int(row.unit))
        else:
            raise DataError(f"unknown beta method '{method}'", "use betas.method: lsa or lss")
    worst = max(inflation, default=(0.0, 0))
    if worst[0] > MAX_VARIANCE_INFLATION:
        log.warning("betas: the %s regressors of one GLM (betas.method: lsa) are nearly "
                    "collinear (median variance inflation %.0f in %s, above %g): their "
                    "betas are mostly noise; use betas.method: lss%s", unit, worst[0],
                    data.runs[worst[1]].key, MAX_VARIANCE_INFLATION,
                    " or betas.unit: block" if unit == "trial" else "")
    X = np.asarray(Xo, dtype=np.float32)
    # z-score betas within each run so run-level scaling does not drive decoding
    runs = np.asarray(runs)
    for i in np.unique(runs):
        m = runs == i
        X[m] = (X[m] - X[m].mean(0)) / (X[m].std(0) + 1e-8)
    return X, np.asarray(y), runs, np.asarray(units)
