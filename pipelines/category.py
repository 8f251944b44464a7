"""Category decoding from task fMRI: BIDS runs → samples → nested CV → run directory.

Composes the library end to end; the CLI, the app and the tests all call
:func:`run`.
"""

from __future__ import annotations

import itertools
import logging
import time
from pathlib import Path

import numpy as np
import pandas as pd

from decoder._utils import absolute_path
from decoder.compute import COMPUTE_DEFAULTS, backend_from_config
from decoder.data.bids import find_mask, find_runs, load_mask
from decoder.data.datalad import ensure_local
from decoder.errors import ConfigError, DataError
from decoder.evaluation.metrics import chance_level, classification_metrics
from decoder.evaluation.nested import (SampleSet, nested_dual_ridge, nested_estimator,
                                       permutation_p_value, select_candidate)
from decoder.features.task import (beta_samples, block_average_samples, load_task_data,
                                   select_classes, smooth_runs, volume_samples)
from decoder.models.registry import MODELS, make_model
from decoder.results import build_provenance, file_records, write_run

log = logging.getLogger(__name__)

DEFAULTS = {
    "task": "category",
    "name": "category",
    "dataset": {
        "name": "haxby2001-sub1-slice",
        "root": None,          # null: the embedded sample; --data overrides
        "task": "objectviewing",
        "subjects": None,
        "runs": None,          # run labels to use, e.g. [1, 2, 3] (null: every run)
        "space": None,         # fMRIPrep output space, e.g. MNI152NLin2009cAsym
        "mask": "auto",        # a path (relative to the root), 'auto' or 'compute'
        "confounds": None,     # fMRIPrep strategy: simple, scrubbing, compcor, ica_aroma
        "tr": None,            # overrides RepetitionTime from sidecars
    },
    "classes": "all",
    "samples": "volumes",      # volumes | blocks | betas
    "delay": "auto",           # seconds after onset, or auto (chosen in training folds)
    "delay_candidates": [0.0, 1.25, 2.5, 3.75, 5.0],
    "window": "auto",          # moving average over volumes, or auto
    "window_candidates": [1, 3, 5],
    "blocks": {"aggregate": "scores", "max_gap": None},
    "betas": {"method": "lsa", "unit": "block", "hrf_model": "glover"},
    "cleaning": {"detrend": True, "standardize": True, "high_pass": None},
    "model": "dual-ridge",
    "screening_percentile": None,
    "cv": "leave-one-run-out",
    "n_permutations": 0,
    "random_state": 0,
    "save_weights": True,
    # model.skops: the decoder refitted on every sample, for decoder predict on new runs
    "save_model": False,
    # per-voxel decoding of small spheres on the same folds (off while radius is null)
    "searchlight": {"radius": None, "alpha": 1.0, "n_permutations": 0},
    "compute": dict(COMPUTE_DEFAULTS),
}

CV_CHOICES = ("leave-one-run-out", "leave-one-subject-out")
#: nilearn's first-level HRF models (betas.hrf_model)
HRF_MODELS = ("glover", "spm", "glover + derivative", "spm + derivative",
              "glover + derivative + dispersion", "spm + derivative + dispersion", "fir")


def _whole_number(v) -> bool:
    """True for a whole number of at least 1 (``3`` or ``3.0``), never for a bool."""
    return (isinstance(v, (int, float)) and not isinstance(v, bool) and np.isfinite(v)
            and float(v).is_integer() and v >= 1)


def _positive_number(v) -> bool:
    """True for a finite number above 0, never for a bool."""
    return isinstance(v, (int, float)) and not isinstance(v, bool) and np.isfinite(v) and v > 0


def check_config(config: dict) -> None:
    """Check a resolved config's values before any data are read.

    A wrong value then stops at once with its own one-line error, instead of
    being used in a rounded or meaningless form (a window of 2.5 volumes, a
    negative TR) or failing later with an error about something else.
    Limits that depend on the data (a window no longer than the shortest run,
    classes present in several runs) are checked in :func:`run`.
    """
    if config["samples"] not in ("volumes", "blocks", "betas"):
        raise ConfigError(f"samples must be volumes, blocks or betas, got {config['samples']!r}",
                          "write e.g. --set samples=blocks")
    if config["cv"] not in CV_CHOICES:
        raise ConfigError(f"cv '{config['cv']}' is not available for category decoding",
                          f"use one of: {', '.join(CV_CHOICES)}")
    if config["model"] not in MODELS:
        raise ConfigError(f"unknown model '{config['model']}'", f"use one of: {', '.join(MODELS)}")
    if config["blocks"]["aggregate"] not in ("scores", "average"):
        raise ConfigError("blocks.aggregate must be 'scores' or 'average'",
                          "scores: average the volumes' decision values; average: the patterns")
    from decoder.config import check_run_numbers
    check_run_numbers(config)
    from decoder.data.bids import check_confound_strategy
    check_confound_strategy(config["dataset"]["confounds"], "dataset.confounds", none=("null",))
    from decoder.compute import check_compute
    check_compute(config["compute"])
    b = config["betas"]
    if b["method"] not in ("lsa", "lss"):
        raise ConfigError(f"betas.method must be lsa or lss, got {b['method']!r}",
                          "write e.g. --set betas.method=lss")
    if b["unit"] not in ("block", "trial"):
        raise ConfigError(f"betas.unit must be block or trial, got {b['unit']!r}",
                          "write e.g. --set betas.unit=trial")
    if b["hrf_model"] not in HRF_MODELS:
        raise ConfigError(f"betas.hrf_model {b['hrf_model']!r} is not a nilearn HRF model",
                          f"use one of: {', '.join(HRF_MODELS)}")
    gap = config["blocks"]["max_gap"]
    if gap is not None and not (_positive_number(gap) or gap == 0):
        raise ConfigError(f"blocks.max_gap must be a number of seconds (0 or more), got {gap!r}",
                          "write e.g. --set blocks.max_gap=4, or null for one TR")
    hp = config["cleaning"]["high_pass"]
    if hp is not None and not _positive_number(hp):
        raise ConfigError(f"cleaning.high_pass must be a frequency in Hz above 0, got {hp!r}",
                          "write e.g. --set cleaning.high_pass=0.008, or null for none")
    delay = config["delay"]
    if delay != "auto" and not (isinstance(delay, (int, float)) and not isinstance(delay, bool)
                                and delay >= 0):
        raise ConfigError(f"delay must be 'auto' or a non-negative number, got {delay!r}",
                          "write e.g. --set delay=auto")
    cands = config["delay_candidates"]
    if delay == "auto" and not (isinstance(cands, list) and cands and all(
            isinstance(d, (int, float)) and not isinstance(d, bool) and np.isfinite(d)
            and d >= 0 for d in cands)):
        raise ConfigError(f"delay_candidates must be seconds (0 or more), at least one, got "
                          f"{cands!r}", "write e.g. --set delay_candidates=0,2.5,5")
    # the window is a number of volumes: a fraction would be truncated by the moving
    # average while the config recorded with the results kept the fraction, and 0 would
    # pass as "no smoothing" although 1 is the value that means it
    window = config["window"]
    if window != "auto" and not _whole_number(window):
        raise ConfigError(f"window must be 'auto' or a whole number of volumes (1: no "
                          f"smoothing), got {window!r}", "write e.g. --set window=3")
    cands = config["window_candidates"]
    if window == "auto" and not (isinstance(cands, list) and cands
                                 and all(_whole_number(w) for w in cands)):
        raise ConfigError(f"window_candidates must be whole numbers of volumes (1: no "
                          f"smoothing), got {cands!r}", "write e.g. --set window_candidates=1,3,5")
    tr = config["dataset"]["tr"]
    if tr is not None and not _positive_number(tr):
        raise ConfigError(f"dataset.tr must be a positive number of seconds, got {tr!r}",
                          "write e.g. --set dataset.tr=2.5, or null to read RepetitionTime "
                          "from the JSON sidecars")
    from decoder.evaluation.searchlight import check_settings
    check_settings(**config["searchlight"])
    pct = config["screening_percentile"]
    if pct is not None and not (_positive_number(pct) and pct <= 100):
        raise ConfigError(f"screening_percentile must be a percentage above 0 and at most "
                          f"100, got {pct!r}",
                          "write e.g. --set screening_percentile=20, or null for no screening")


def resolve_root(config: dict, data=None) -> Path:
    """Data root: ``--data``, then ``dataset.root``, then the embedded sample."""
    # absolute, so file paths built from it mean the same to DataLad (which takes paths
    # relative to the root) whatever the working directory
    if data:
        return absolute_path(data)
    if config["dataset"]["root"]:
        return absolute_path(config["dataset"]["root"])
    from decoder.data.samples import sample_path
    return sample_path(config["dataset"]["name"])


def _candidates(config):
    samples = config["samples"]
    if samples == "betas":
        return [None]
    delays = config["delay_candidates"] if config["delay"] == "auto" else [config["delay"]]
    windows = config["window_candidates"] if config["window"] == "auto" else [config["window"]]
    if samples == "blocks" and config["blocks"]["aggregate"] == "average":
        windows = [1]
    try:
        delays = [float(d) for d in delays]
        windows = [int(w) for w in windows]
    except (TypeError, ValueError):
        raise ConfigError("delay_candidates / window_candidates must be lists of numbers",
                          "write e.g. --set delay_candidates=0,2.5,5") from None
    return list(itertools.product(delays, windows))


def build_sample_sets(data, config, classes, group_of_run):
    """One :class:`SampleSet` per candidate (delay, window), plus unit labels."""
    samples = config["samples"]
    code = {c: i for i, c in enumerate(classes)}
    sets, unit_codes, unit_run = [], {}, {}
    smoothed = {}
    for cand in _candidates(config):
        if cand is None:
            b = config["betas"]
            X, y, runs, units = beta_samples(data, classes, b["method"], b["unit"], b["hrf_model"])
            name = f"betas ({b['method']}, per {b['unit']})"
        else:
            delay, window = cand
            if window not in smoothed:
                smoothed[window] = smooth_runs(data.X, window)
            if samples == "blocks" and config["blocks"]["aggregate"] == "average":
                X, y, runs, units = block_average_samples(data, classes, delay, smoothed[window])
            else:
                X, y, runs, units, _ = volume_samples(data, classes, delay, smoothed[window])
            name = f"delay={delay:g}s,window={window}"
        for u, lab, r in zip(units, y, runs):
            unit_codes[int(u)] = code[lab]
            unit_run[int(u)] = int(r)
        sets.append(SampleSet(X=X, unit=units.astype(int), run=runs.astype(int),
                              group=np.asarray([group_of_run[r] for r in runs]), name=name))
    return sets, unit_codes, unit_run


def _check_subjects(root: Path, ds: dict):
    """``dataset.subjects`` as a list of labels, checked against the dataset's subjects.

    Without this, a subject that is not in the dataset is dropped by the run search,
    which then says that no runs were found for the task (or quietly decodes the
    other subjects listed).
    """
    wanted = ds["subjects"]
    if not wanted:
        return None
    if not isinstance(wanted, (list, tuple)):  # --set dataset.subjects=1
        wanted = [wanted]
    wanted = [str(s).removeprefix("sub-") for s in wanted]
    deriv = root / "derivatives" / "fmriprep"
    base = deriv if ds["space"] and deriv.is_dir() else root
    present = sorted(p.name.removeprefix("sub-") for p in base.glob("sub-*") if p.is_dir())
    missing = [s for s in wanted if s not in present]
    if present and missing:  # no subject folder at all: the run search says what is wrong
        shown = ", ".join(present[:20]) + (f", … ({len(present)} in all)" if len(present) > 20
                                           else "")
        raise DataError(f"subject(s) {', '.join(missing)} not in the dataset {base} "
                        f"(subjects present: {shown})",
                        "list subjects present in dataset.subjects (labels without 'sub-'), "
                        "or set it to null for all")
    return wanted


def _check_windows(config: dict, data) -> None:
    """Raise when a moving-average window is longer than the shortest run."""
    windows = sorted({c[1] for c in _candidates(config) if c is not None})
    shortest = min(range(len(data.X)), key=lambda i: data.X[i].shape[0])
    n_vol = data.X[shortest].shape[0]
    too_long = [w for w in windows if w > n_vol]
    if too_long:
        key = "window_candidates" if config["window"] == "auto" else "window"
        raise DataError(f"{key} {', '.join(map(str, too_long))} is longer than the shortest "
                        f"run ({n_vol} volumes: {data.runs[shortest].bold}): the moving "
                        f"average would flatten every run",
                        f"set {key} to at most {n_vol} volumes")


def _check_classes_span_groups(blocks: pd.DataFrame, classes, group_of_run, runs, cv) -> None:
    """Raise when a class occurs in fewer than two cross-validation groups.

    Such a class is absent from the training folds whenever its only run (or
    subject) is held out, and absent from the test folds otherwise: it can never
    be both learned and tested, and its samples drag the scores towards chance
    with no sign of why.
    """
    unit = "subject" if cv == "leave-one-subject-out" else "run"
    rare = {}
    for c in classes:
        run_ids = sorted(set(blocks.loc[blocks.trial_type == c, "run"]))
        if len({group_of_run[i] for i in run_ids}) < 2:
            if unit == "run":
                rare[c] = ", ".join(str(runs[i].events) for i in run_ids)
            else:
                rare[c] = ", ".join(sorted({f"sub-{runs[i].subject}" for i in run_ids}))
    if rare:
        keep = [c for c in classes if c not in rare]
        where = "; ".join(f"'{c}' only in {w}" for c, w in rare.items())
        drop = (f"drop it: --set classes={','.join(keep)}" if len(keep) >= 2
                else "choose classes present in several runs")
        raise DataError(f"class(es) present in only one {unit}, which {cv} can never both "
                        f"train and test on: {where}", f"{drop}, or add events of that class "
                        f"to other {unit}s")


def _searchlight(sl, data_, sets, res, unit_codes, unit_run, n_classes, score_unit,
                 random_state, chance, images) -> dict:
    """Searchlight maps on the evaluation's folds; adds them to ``images``."""
    from decoder.evaluation.searchlight import (nested_searchlight, searchlight_summary,
                                                sphere_neighbours)
    t0 = time.perf_counter()
    mask_img = data_.masker.mask_img_
    if 0 < sl["n_permutations"] < 19:
        log.warning("searchlight: with %d permutations no sphere can reach p ≤ 0.05 "
                    "(the smallest p-value is 1/(n+1)); use at least 19",
                    sl["n_permutations"])
    neighbours = sphere_neighbours(mask_img, sl["radius"])
    found = nested_searchlight(sets, res["chosen"], res["tested_groups"], unit_codes,
                               unit_run, n_classes, neighbours, alpha=sl["alpha"],
                               score_unit=score_unit, n_permutations=sl["n_permutations"],
                               random_state=random_state)
    images["searchlight_accuracy"] = data_.masker.inverse_transform(
        found.accuracy.astype(np.float32))
    p = found.p_fwe()
    if p is not None:
        # float64: k / (n + 1) such as 1/20 must read back ≤ 0.05 exactly as it was counted
        images["searchlight_p_fwe"] = data_.masker.inverse_transform(p.astype(np.float64))
    summary = searchlight_summary(found, mask_img, sl["radius"], sl["alpha"], chance)
    summary["runtime_s"] = round(time.perf_counter() - t0, 3)
    log.info("searchlight (%g mm, %d spheres): peak accuracy %.3f in %.1f s", sl["radius"],
             summary["n_spheres"], summary["peak_accuracy"], summary["runtime_s"])
    return summary


def check_high_pass(config: dict, trs) -> None:
    """A high-pass cut-off at or above the data's Nyquist frequency would leave nothing."""
    hp = config["cleaning"]["high_pass"]
    trs = [t for t in trs if np.isfinite(t)]
    if hp and trs and hp >= 0.5 / max(trs):
        raise DataError(f"cleaning.high_pass {hp:g} Hz is not below the Nyquist frequency of "
                        f"the data ({0.5 / max(trs):g} Hz at TR {max(trs):g} s)",
                        "write e.g. --set cleaning.high_pass=0.008 (Hz, about 1/128 s)")


def _same_run_label(label: str, wanted) -> bool:
    """``run-02`` is run 2 as well as run '02'."""
    if str(label) == str(wanted):
        return True
    try:
        return int(label) == int(wanted)
    except (TypeError, ValueError):
        return False


def _select_runs(runs, wanted):
    """The runs named in ``dataset.runs`` (all when null); a name that matches no run is
    an error listing the runs there are."""
    if wanted is None:
        return runs
    wanted = wanted if isinstance(wanted, list) else [wanted]
    missing = [w for w in wanted if not any(_same_run_label(r.run, w) for r in runs)]
    if missing or not wanted:
        there = sorted({r.run for r in runs})
        raise ConfigError(f"dataset.runs: no run {missing[0] if missing else '(empty list)'} "
                          f"in the dataset (runs: {', '.join(there)})",
                          "name runs by their BIDS run label, e.g. --set dataset.runs=1,2,3, "
                          "or null for every run")
    return [r for r in runs if any(_same_run_label(r.run, w) for w in wanted)]


def find_inputs(config: dict, data=None, fetch: bool = True):
    """The files a run reads: ``(root, runs, mask_path, needed)``, nothing loaded.

    On a DataLad dataset the BOLD sidecars are got first (the TR is read from them).
    With ``fetch`` false nothing is got and, unless ``dataset.tr`` is set, the runs'
    TR is NaN (not read).  ``needed`` lists every file to get and record: sidecars,
    images, events, confounds and the mask.
    """
    ds = config["dataset"]
    root = resolve_root(config, data)
    subjects = _check_subjects(root, ds)
    # on a DataLad dataset, sidecars may be annexed: get them before reading the TR
    sidecars = sorted(set(root.glob(f"*task-{ds['task']}*_bold.json")) |
                      set(root.glob(f"sub-*/**/*task-{ds['task']}*_bold.json")))
    tr = ds["tr"]
    if sidecars and fetch:
        ensure_local(root, sidecars)
    elif not fetch and not tr:
        tr = float("nan")  # not read: the sidecars or images may not be here yet
    runs = _select_runs(find_runs(root, ds["task"], subjects=subjects, space=ds["space"],
                                  tr=tr), ds.get("runs"))
    lacking = [r for r in runs if r.events is None]
    if lacking:  # before anything is got or loaded
        raise DataError(f"no events.tsv for {lacking[0].bold}"
                        + (f" ({len(lacking) - 1} more runs without)" if len(lacking) > 1
                           else ""), "add <bold name>_events.tsv with onset, duration, "
                        "trial_type")
    mask_path = find_mask(root, runs[0].subject, ds["mask"])
    if ds["mask"] not in ("auto", "compute", None) and mask_path and not mask_path.is_file() \
            and not mask_path.is_symlink():
        raise DataError(f"mask file not found: {mask_path}",
                        "set dataset.mask to an existing file, 'auto' or 'compute'")
    needed = sidecars + [r.bold for r in runs] + [r.events for r in runs if r.events] + \
             [r.confounds for r in runs if r.confounds and ds["confounds"]] + \
             ([mask_path] if mask_path else [])
    return root, runs, mask_path, needed


def run(config: dict, data=None, out=None, config_path=None) -> dict:
    """Run category decoding and write the run directory; returns ``metrics.json`` content."""
    t0 = time.perf_counter()
    check_config(config)
    ds = config["dataset"]
    root, runs, mask_path, needed = find_inputs(config, data)
    check_high_pass(config, [r.tr for r in runs])
    dataset_prov = ensure_local(root, needed)
    mask_img = load_mask(mask_path) if mask_path else None
    cl = config["cleaning"]
    with backend_from_config(config) as backend:
        data_ = load_task_data(runs, mask_img, mask_path, detrend=cl["detrend"],
                               standardize=cl["standardize"], high_pass=cl["high_pass"],
                               confounds=ds["confounds"],
                               block_max_gap=config["blocks"]["max_gap"], backend=backend)
    _check_windows(config, data_)
    classes = select_classes(data_.blocks, config["classes"])
    if config["cv"] == "leave-one-subject-out":
        group_of_run = [r.subject for r in runs]
        if len(set(group_of_run)) < 2:
            raise DataError("leave-one-subject-out needs at least 2 subjects, found 1",
                            "use cv: leave-one-run-out, or add subjects")
    else:
        group_of_run = [r.key for r in runs]
    _check_classes_span_groups(data_.blocks, classes, group_of_run, runs, config["cv"])
    sets, unit_codes, unit_run = build_sample_sets(data_, config, classes, group_of_run)
    score_unit = config["samples"] == "blocks" and config["blocks"]["aggregate"] == "scores"
    n_classes = len(classes)
    if config["model"] == "dual-ridge" and not config["screening_percentile"]:
        res = nested_dual_ridge(sets, unit_codes, unit_run, n_classes, score_unit=score_unit,
                                n_permutations=config["n_permutations"],
                                random_state=config["random_state"])
    else:
        def make():
            return make_model(config["model"], config["random_state"],
                              config["screening_percentile"])
        res = nested_estimator(sets, unit_codes, unit_run, n_classes, make,
                               score_unit=score_unit, n_permutations=config["n_permutations"],
                               random_state=config["random_state"])
    y_true = np.asarray(classes)[res["y_true"]]
    y_pred = np.asarray(classes)[res["scores"].argmax(1)]
    m = classification_metrics(y_true, y_pred, res["scores"], classes)
    p_value = (permutation_p_value(res["observed"], res["null"])
               if res["null"] is not None else None)

    images = {}
    est = final = None
    if config["save_weights"] or config["save_model"]:
        # refitted on every sample at the candidate (delay, window) chosen on all of them
        final = select_candidate(sets, unit_codes, n_classes, score_unit=score_unit)
        est = make_model(config["model"], config["random_state"], config["screening_percentile"])
        codes = np.array([unit_codes[u] for u in final.unit])
        from decoder.evaluation.nested import _fit
        _fit(est, final.X, codes, final.run)
    if config["save_weights"]:
        model = est.steps[-1][1]
        if hasattr(model, "coef_"):
            coef = np.atleast_2d(model.coef_)
            if "screening" in est.named_steps:
                full = np.zeros((coef.shape[0], final.X.shape[1]))
                full[:, est.named_steps["screening"].get_support()] = coef
                coef = full
            images["weights"] = data_.masker.inverse_transform(coef.astype(np.float32))
    searchlight = None
    sl = config["searchlight"]
    if sl["radius"] is not None:
        searchlight = _searchlight(sl, data_, sets, res, unit_codes, unit_run, n_classes,
                                   score_unit, config["random_state"], chance_level(y_true),
                                   images)
    runtime = time.perf_counter() - t0
    inputs = file_records([p for p in needed if p and Path(p).is_file()], root=root)
    metrics = {
        "task": "category",
        "name": config["name"],
        "dataset": {"name": ds["name"], "root": str(root), "task": ds["task"],
                    "subjects": sorted({r.subject for r in runs}), "n_runs": len(runs),
                    "n_voxels": int(data_.n_voxels)},
        "cv": config["cv"],
        "samples": config["samples"],
        "model": config["model"],
        "n_samples": int(len(y_true)),
        "n_classes": n_classes,
        "classes": list(classes),
        "accuracy": m["accuracy"],
        "balanced_accuracy": m["balanced_accuracy"],
        "roc_auc": m["roc_auc"],
        "chance": chance_level(y_true),
        "fold_scores": res["fold_scores"],
        "fold_groups": res["fold_groups"],
        "confusion_matrix": m["confusion_matrix"],
        "per_class": m["per_class"],
        "selected": {"per_fold": res["chosen"], "alpha_per_fold": res["alphas"]},
        "n_permutations": config["n_permutations"],
        "permutation_p": p_value,
        "permutation_null_mean": float(np.mean(res["null"])) if res["null"] is not None else None,
        "weights": "weights.nii.gz" if "weights" in images else None,
        "searchlight": searchlight,
        "runtime_s": round(runtime, 3),
        "provenance": build_provenance(config, inputs, dataset_prov, config_path),
    }
    cm = pd.DataFrame(m["confusion_matrix"], index=pd.Index(classes, name="true"),
                      columns=classes)
    preds = pd.DataFrame({"fold": res["fold"], "true": y_true, "predicted": y_pred})
    for i, c in enumerate(classes):
        preds[f"score_{c}"] = res["scores"][:, i]
    arrays = {"permutation_null": res["null"]} if res["null"] is not None else None
    files = None
    if config["save_model"]:
        from decoder.models.category_model import (category_bundle, category_card,
                                                   dump_category_model)
        from decoder.models.model_card import card_files
        chosen = _candidates(config)[next(i for i, s in enumerate(sets) if s is final)]
        delay, window = chosen if chosen is not None else (None, None)   # betas: a GLM
        metrics["saved_model"] = {"file": "model.skops", "card": "model_card.md",
                                  "delay_s": None if delay is None else float(delay),
                                  "window": None if window is None else int(window)}
        bundle = category_bundle(est, classes, data_.mask_img, config, delay, window, metrics,
                                 [r.key for r in runs])
        model_bytes = dump_category_model(bundle)
        files = {"model.skops": model_bytes,
                 **card_files(category_card(bundle, metrics, model_bytes))}
    if out is not None:
        write_run(out, metrics, images=images, tables={"confusion_matrix": cm,
                                                      "predictions": preds}, arrays=arrays,
                  files=files)
    return metrics


def _events_beside(bold: Path) -> Path | None:
    """The BIDS events file beside a run (``x_bold.nii.gz`` → ``x_events.tsv``; an
    fMRIPrep image's ``_space-``/``_desc-`` entities left out, as training finds it)."""
    from decoder.data.bids import events_name
    name = events_name(bold.name)
    if name is None:
        return None
    path = bold.with_name(name)
    return path if path.is_file() else None


def predict_cli(args, inputs, bundle=None) -> int:
    """``decoder predict MODEL RUN [RUN ...] [--events EVENTS] [--out JSON]`` for a category
    model: every volume decoded (a table beside the JSON summary); with each run's events
    (given for one run, or the BIDS ``_events.tsv`` beside each image) the volumes and
    blocks of the classes the model knows are scored, per run and pooled."""
    from decoder import __version__
    from decoder._utils import atomic_write_json, atomic_write_text, sha256_file
    from decoder.models.category_model import load_category_model, pool_runs, predict_run
    from decoder.results import check_writable
    from pipelines.biomarker import check_not_overwriting, environment_notes

    for opt in ("participants", "atlas", "site", "age", "sex", "mean_fd"):
        if getattr(args, opt, None) is not None:
            raise DataError(f"--{opt.replace('_', '-')} is for biomarker models; "
                            f"{args.model} is a category model",
                            "give the runs (and --events for one run) only")
    bolds = [Path(x) for x in inputs]
    for bold in bolds:
        if not str(bold).lower().endswith((".nii", ".nii.gz")):
            raise DataError(f"{bold}: a category model decodes a 4D bold NIfTI",
                            "pass the runs' preprocessed _bold.nii.gz")
    twice = [b for i, b in enumerate(bolds) if b.resolve() in {c.resolve() for c in bolds[:i]}]
    if twice:
        raise DataError(f"{twice[0]} is given twice", "give each run once")
    if len(bolds) > 1 and getattr(args, "events", None):
        raise DataError(f"--events names one run's events, but {len(bolds)} runs are given",
                        "keep each run's BIDS _events.tsv beside its image, or predict the "
                        "runs one at a time")
    events = ([Path(args.events)] if getattr(args, "events", None)
              else [_events_beside(b) for b in bolds])
    out = Path(getattr(args, "out", None) or _runs_stem(bolds) + "_prediction.json")
    if out.suffix.lower() != ".json":
        raise DataError(f"--out {out}: the summary is written as JSON (its table beside "
                        "it as .tsv)", f"use --out {out.with_suffix('.json')}")
    table = out.with_suffix(".tsv")
    block_table = out.with_name(out.stem + "_blocks.tsv")
    check_writable(out, folder=False)
    check_not_overwriting([out, table, block_table],
                          [*bolds, args.model, *(e for e in events if e is not None)])
    if bundle is None:   # (decoder predict has read it already, to tell its kind)
        bundle = load_category_model(args.model)
    common = {"model": str(args.model), "model_sha256": sha256_file(Path(args.model)),
              "decoder_version": __version__, "table": table.name}
    if len(bolds) == 1:
        res = predict_run(bundle, bolds[0], events=events[0], name=str(bolds[0]),
                          resample=getattr(args, "resample", False))
        summary = {"input": str(bolds[0]), "input_sha256": sha256_file(bolds[0]), **common,
                   **res["summary"]}
    else:   # the first run that cannot be decoded stops them all, named (or, --skip-bad,
        # is listed with its reason and the others go on)
        results, done, failed = [], [], []
        first_reason = None   # the first failed run's message, which names it
        for bold, ev in zip(bolds, events):
            try:
                results.append(predict_run(bundle, bold, events=ev, name=str(bold),
                                           resample=getattr(args, "resample", False)))
            except DataError as err:
                if not getattr(args, "skip_bad", False):
                    raise DataError(err.message, (err.fix + "; " if err.fix else "")
                                    + "or pass --skip-bad to decode the other runs") from None
                failed.append({"input": str(bold), "error": str(err)})
                first_reason = first_reason or err.message
                print(f"{bold.name}: not decoded — {err}")
                continue
            results[-1]["summary"]["input_sha256"] = sha256_file(bold)
            done.append(bold)
        if not results:   # the first run's reason and one fix
            raise DataError(f"none of the {len(bolds)} runs could be decoded (the first: "
                            f"{first_reason})",
                            "check the runs against the model (grid, events)")
        res = pool_runs(results, [b.name for b in done])
        summary = {"inputs": [str(b) for b in done], **common, **res["summary"],
                   "n_failed": len(failed), "failed": failed}
        bolds = done
        for bold, run in zip(bolds, summary["runs"]):
            if res.get("betas") is not None:
                print(f"{bold.name}: accuracy {run['accuracy']:.3f} on {run['n_betas']} betas")
                continue
            print(f"{bold.name}: " + (
                f"accuracy {run['accuracy']:.3f} on {run['n_labelled_volumes']} labelled "
                f"volumes; {_blocks_right(run)}"
                if "accuracy" in run else f"{run['n_volumes']} volumes decoded, no events"))
    summary["warnings"] = environment_notes(bundle) + summary["warnings"]
    if res.get("betas") is not None:   # a model of betas: one row per block (trial)
        return _write_betas(res, summary, bolds, out, table, block_table)
    if res["blocks"] is not None:
        summary["block_table"] = block_table.name
    for note in summary["warnings"]:
        print(f"note: {note}")
    counts = ", ".join(f"{c} {n}" for c, n in summary["predicted_counts"].items() if n)
    runs = f" in {len(bolds)} runs" if len(bolds) > 1 else ""
    print(f"{summary['n_volumes']} volumes decoded{runs} (delay {summary['delay_s']:g} s, "
          f"window {summary['window']}): {counts}")
    if "accuracy" in summary:
        pooled = "pooled " if len(bolds) > 1 else ""
        print(f"{pooled}accuracy on {summary['n_labelled_volumes']} labelled volumes: "
              f"{summary['accuracy']:.3f} (chance {summary['chance']:.3f}); "
              f"{_blocks_right(summary)}")
    elif len(bolds) > 1:
        print("no events for these runs: volumes decoded, not scored (keep each run's "
              "_events.tsv beside its image to score it)")
    else:
        print("no events for this run: volumes decoded, not scored (give --events to score)")
    atomic_write_text(table, res["volumes"].to_csv(sep="\t", index=False))
    if res["blocks"] is not None:
        atomic_write_text(block_table, res["blocks"].to_csv(sep="\t", index=False))
    atomic_write_json(out, summary)
    if res["blocks"] is None:
        _drop_stale(block_table)
    print(f"prediction written to {out} (volumes in {table.name}"
          + (f", blocks in {block_table.name})" if res["blocks"] is not None else ")"))
    return 0


def _drop_stale(block_table: Path) -> None:
    """Remove the blocks table an earlier prediction wrote under the same ``--out``, once
    the new summary that replaces it (and has no blocks) is written: left there, it would
    read as this prediction's blocks."""
    if block_table.is_file():
        block_table.unlink()
        log.info("removed %s, the blocks of the prediction this one replaces", block_table)


def _write_betas(res, summary, bolds, out, table, block_table) -> int:
    """Say and write what a model of betas decoded (one row per block or trial)."""
    from decoder._utils import atomic_write_json, atomic_write_text
    for note in summary["warnings"]:
        print(f"note: {note}")
    b = summary["betas"]
    counts = ", ".join(f"{c} {n}" for c, n in summary["predicted_counts"].items() if n)
    runs = f" in {len(bolds)} runs" if len(bolds) > 1 else ""
    print(f"{summary['n_betas']} {b['unit']} betas decoded{runs} (first-level GLM, "
          f"{b['method']}): {counts}")
    pooled = "pooled " if len(bolds) > 1 else ""
    print(f"{pooled}accuracy on {summary['n_betas']} {b['unit']}s: {summary['accuracy']:.3f} "
          f"(chance {summary['chance']:.3f})")
    atomic_write_text(table, res["betas"].to_csv(sep="\t", index=False))
    atomic_write_json(out, summary)
    _drop_stale(block_table)
    print(f"prediction written to {out} ({b['unit']}s in {table.name})")
    return 0


def _blocks_right(summary) -> str:
    n = summary["n_blocks"]
    return (f"blocks: {round(summary['block_accuracy'] * n)} of {n} right "
            f"({summary['block_accuracy']:.3f})")


def _runs_stem(bolds) -> str:
    """The name of a prediction of one run (its file name) or of several: their common
    BIDS name without the run entity (``sub-1_task-x_bold``), else ``runs``."""
    import re

    from pipelines.biomarker import input_stem
    stems = [input_stem(b) for b in bolds]
    if len(stems) == 1:
        return stems[0]
    common = {re.sub(r"_run-[^_]+", "", s) for s in stems}
    return common.pop() if len(common) == 1 else "runs"
