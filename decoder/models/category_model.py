"""A category decoder saved by ``decoder run`` and applied to new runs.

A category run with ``save_model: true`` refits its decoder on every sample, at the
labelling delay and temporal window chosen inside the data (as its weight maps are
refitted), and saves it with what a new run needs to become samples the same way:
the brain mask, the cleaning (detrend, standardise, high-pass, confound strategy)
and the delay and window.  :func:`predict_run` cleans a new run exactly so and
decodes every volume; with the run's events it also scores the volumes (and blocks)
that fall in a block of a class the model knows — a decoder trained on one session
or task tested on another (cross-session, cross-task decoding).

Saved with skops (never pickle); :func:`load_category_model` accepts only the types
such a model holds.
"""

from __future__ import annotations

import logging
import warnings
from pathlib import Path

import numpy as np
import pandas as pd

from ..errors import DataError

log = logging.getLogger(__name__)

KIND = "category"

#: what a category model file may hold besides skops' default-trusted types
_ALLOWED_TYPES = {
    "decoder.models.dual_ridge.DualRidgeClassifier",
    "sklearn.feature_selection._univariate_selection.f_classif",
    "decoder.models.torch_models.TorchClassifier",
}


def category_bundle(est, classes, mask_img, config: dict, delay, window, metrics: dict,
                    trained_on: list) -> dict:
    """The content of a category ``model.skops``.

    Parameters
    ----------
    est : fitted scikit-learn estimator (the run's model pipeline)
    classes : list of str
        The class names, in the order of the estimator's class codes 0..n-1.
    mask_img : Nifti1Image
        The run's brain mask.
    config : dict
        The resolved run config (cleaning, confounds, samples, blocks).
    delay, window : float, int, or None
        The labelling delay (s) and moving-average window (volumes) the model uses (None
        for a model of betas, whose samples come from a first-level GLM of each run).
    metrics : dict
        The run's ``metrics.json`` content (cross-validated scores, provenance).
    trained_on : list of str
        The training runs' keys (``sub-1_run-01``).
    """
    prov = metrics.get("provenance") or {}
    return {
        "kind": KIND,
        "estimator": est,
        "classes": [str(c) for c in classes],
        "mask": np.asarray(mask_img.get_fdata() > 0, dtype=np.uint8),
        "affine": np.asarray(mask_img.affine, dtype=np.float64),
        "samples": config["samples"],
        "blocks": dict(config["blocks"]),
        "delay": None if delay is None else float(delay),     # None: a model of betas
        "window": None if window is None else int(window),
        "betas": dict(config["betas"]) if config["samples"] == "betas" else None,
        "cleaning": dict(config["cleaning"]),
        "confounds": config["dataset"].get("confounds"),
        "trained_on": list(trained_on),
        "environment": {k: prov.get(k) for k in ("version", "source", "python", "libraries")},
        "cv": {"scheme": metrics.get("cv"), "accuracy": metrics.get("accuracy"),
               "chance": metrics.get("chance"), "n_samples": metrics.get("n_samples")},
    }


CATEGORY_INTENDED_USE = (
    "Research on which stimulus categories can be read out from brain activity, and decoding "
    "new runs of the same participant(s), acquired and preprocessed as the training runs were "
    "(another session or task). Not for other people's brains unless they are in the same "
    "space, where its accuracy was not measured, and not a clinical tool.")


def category_card(bundle: dict, metrics: dict, model_bytes: bytes | None = None) -> dict:
    """The model card of a category model (JSON-serialisable): what it decodes, from which
    runs, how it was evaluated, what it is for and what it cannot do.

    Parameters
    ----------
    bundle : dict
        The model (:func:`category_bundle`).
    metrics : dict
        The run's ``metrics.json`` content.
    model_bytes : bytes, optional
        The saved model file's content: the card records its SHA-256, so that a card
        beside another model is not taken for that model's.
    """
    import hashlib
    prov = metrics.get("provenance") or {}
    runs = list(bundle["trained_on"])
    subjects = sorted({r.split("_")[0] for r in runs})     # 'sub-1_ses-2_run-01' → sub-1
    zooms = np.sqrt((np.asarray(bundle["affine"])[:3, :3] ** 2).sum(axis=0))
    ds = metrics.get("dataset") or {}
    cv = metrics.get("cv")
    card = {
        "kind": KIND,
        "model": {
            "task": "classification of stimulus categories from fMRI voxel patterns",
            "classes": list(bundle["classes"]),
            "estimator": metrics.get("model"),
            "samples": bundle["samples"],
            "delay_s": bundle["delay"], "window": bundle["window"],
            "betas": bundle.get("betas"),
            "cleaning": bundle["cleaning"], "confounds": bundle.get("confounds"),
            "format": "skops (load with decoder.models.category_model.load_category_model; "
                      "never pickle)",
        },
        "data": {
            "source": ds.get("name") or ds.get("root"),
            "dataset": prov.get("dataset") or {},   # DataLad id and commit, when one
            "subjects": subjects, "runs": runs, "n_samples": metrics.get("n_samples"),
            "n_voxels": int(np.asarray(bundle["mask"]).sum()),
            "grid": [int(n) for n in np.asarray(bundle["mask"]).shape],
            "voxel_size_mm": [round(float(z), 3) for z in zooms],
        },
        "evaluation": {k: metrics.get(k) for k in (
            "cv", "accuracy", "balanced_accuracy", "roc_auc", "chance", "permutation_p",
            "fold_scores", "fold_groups", "per_class")},
        "intended_use": CATEGORY_INTENDED_USE,
        "limitations": [
            "A new run must be on the model's voxel grid "
            f"({' × '.join(map(str, np.asarray(bundle['mask']).shape))} voxels of "
            f"{' × '.join(f'{z:g}' for z in np.round(zooms, 2))} mm) and cleaned as these "
            "runs were; decoder predict refuses another grid.",
            f"The accuracy was measured by {cv} on {len(runs)} run(s) of "
            f"{len(subjects)} participant(s); a later session can decode worse (drift, "
            "attention, head position).",
            *_sample_limitations(bundle),
        ],
        "citation": _dataset_citation(ds.get("root")),
        "provenance": {k: prov.get(k) for k in ("version", "source", "python", "libraries",
                                                "config_sha256", "created")},
    }
    if model_bytes is not None:
        card["model_sha256"] = hashlib.sha256(model_bytes).hexdigest()
    return card


def _sample_limitations(bundle) -> list:
    """What the card says of how a new run becomes samples (volumes, or betas)."""
    if bundle.get("betas"):
        b = bundle["betas"]
        return [f"The model decodes betas: a new run needs its events (onsets and durations "
                f"of the {b['unit']}s), from which a first-level GLM ({b['method']}, "
                f"{b['hrf_model']} HRF) gives one beta per {b['unit']}, z-scored over the "
                "run's betas as in training; a run with other timing than the training runs "
                "(other block lengths or spacing) gives betas of other precision.",
                "Betas within a run are not independent: judge a new run by its own "
                "accuracy and the spread over runs."]
    return [f"The saved model uses the delay ({bundle['delay']:g} s) and window "
            f"({bundle['window']} volumes) chosen on all its samples; the cross-validated "
            "accuracy chose them inside each training fold.",
            "Volumes within a run are not independent: judge a new run by its own accuracy "
            "and the spread over runs, not by the number of volumes."]


def _dataset_citation(root) -> str:
    """What the dataset's ``dataset_description.json`` asks to cite (``HowToAcknowledge``,
    ``ReferencesAndLinks``) and its licence; a generic request when it says nothing."""
    import json
    generic = "Cite the dataset as its dataset_description.json and licence ask."
    try:
        desc = json.loads((Path(root) / "dataset_description.json").read_text())
    except (OSError, TypeError, ValueError):
        return generic
    if not isinstance(desc, dict):
        return generic
    refs = desc.get("ReferencesAndLinks") or []
    parts = [str(desc["HowToAcknowledge"])] if desc.get("HowToAcknowledge") else []
    parts += [str(r) for r in (refs if isinstance(refs, list) else [refs])]
    if desc.get("License"):
        parts.append(f"Licence: {desc['License']}")
    return "; ".join(parts) if parts else generic


def category_card_markdown(card: dict, level: int = 1) -> str:
    """The card for people (``model_card.md``); ``level``: the heading level of its title
    (its sections one below), e.g. 3 inside a report section."""
    from .model_card import _fmt as fmt          # numbers as the biomarker card writes them
    model, data, ev = card["model"], card["data"], card["evaluation"]
    def word(v):
        return {True: "yes", False: "no", None: "none"}.get(v, v) \
            if isinstance(v, (bool, type(None))) else v
    cleaning = "; ".join(f"{k.replace('_', '-')} {word(v)}" for k, v in model["cleaning"].items())
    lines = ["# Model card — category decoder", "", "## Model", f"- Task: {model['task']}",
             f"- Classes: {', '.join(model['classes'])}",
             f"- Estimator: {model['estimator']}, samples: {model['samples']}",
             (f"- Betas: nilearn first-level GLM, {model['betas']['method']}, one per "
              f"{model['betas']['unit']}, {model['betas']['hrf_model']} HRF"
              if model.get("betas") else
              f"- Labelling delay {model['delay_s']:g} s, moving-average window "
              f"{model['window']} volumes"),
             f"- Cleaning: {cleaning}; confounds: {model['confounds'] or 'none'}",
             f"- File format: {model['format']}", "",
             "## Data", f"- Source: {data['source']}",
             f"- Participants: {', '.join(data['subjects'])}; runs: {', '.join(data['runs'])}",
             f"- Samples: {data['n_samples']}; brain mask: {data['n_voxels']} voxels on a "
             f"{' × '.join(map(str, data['grid']))} grid of "
             f"{' × '.join(f'{z:g}' for z in data['voxel_size_mm'])} mm"]
    if (data.get("dataset") or {}).get("id"):
        lines.append(f"- DataLad dataset {data['dataset']['id']} at commit "
                     f"{data['dataset'].get('commit')}")
    lines += ["", "## Evaluation", f"- Cross-validation: {ev['cv']}",
              f"- Accuracy {fmt(ev['accuracy'])}, balanced accuracy "
              f"{fmt(ev['balanced_accuracy'])}, ROC AUC {fmt(ev['roc_auc'])}, chance "
              f"{fmt(ev['chance'])}, permutation p {fmt(ev['permutation_p'])}"]
    if ev.get("fold_scores"):
        groups = ev.get("fold_groups") or [str(i + 1) for i in range(len(ev["fold_scores"]))]
        lines.append("- Per fold: " + ", ".join(f"{g} {fmt(v)}" for g, v in
                                                zip(groups, ev["fold_scores"])))
    if ev.get("per_class"):
        lines += ["", "| class | precision | recall | F1 |", "|---|---|---|---|"]
        for c, m in ev["per_class"].items():
            lines.append(f"| {c} | {fmt(m.get('precision'))} | {fmt(m.get('recall'))} | "
                         f"{fmt(m.get('f1-score', m.get('f1')))} |")
    lines += ["", "## Intended use", card["intended_use"], "", "## Limitations"]
    lines += [f"- {x}" for x in card["limitations"]]
    lines += ["", "## Citation", card["citation"], ""]
    if level > 1:  # '# ' and '## ' headings, moved down together
        lines = [("#" * (level - 1) + ln) if ln.startswith("#") else ln for ln in lines]
    return "\n".join(lines)


def dump_category_model(bundle: dict) -> bytes:
    """The bundle as skops bytes."""
    import skops.io as sio
    return sio.dumps(bundle)


def is_category_model(path) -> bool:
    """Whether ``path`` is a skops file holding a category model (read, not trusted)."""
    return read_category_model(path) is not None


def read_category_model(path) -> dict | None:
    """The category model in ``path``, or ``None`` when the file is not one (read only if
    every type it holds is a category model's; nothing else is trusted)."""
    from ._skops import load_trusting, not_allowed, untrusted_types
    path = Path(path)
    if not path.is_file():
        return None
    try:
        untrusted = untrusted_types(path)
    except DataError:
        return None
    if not_allowed(untrusted, _ALLOWED_TYPES):
        return None
    try:
        bundle = load_trusting(path, untrusted)
    except Exception as exc:
        if any(t.startswith("decoder.") for t in untrusted):
            # a category model's types, contents that do not load: the file is damaged
            # (passed on, it read as a biomarker model "refusing" a category type)
            raise DataError(f"{path}: a category model whose contents cannot be read "
                            f"({type(exc).__name__}); the file is damaged",
                            "copy it again, or rerun the run with save_model: true") from None
        return None
    return bundle if isinstance(bundle, dict) and bundle.get("kind") == KIND else None


def load_category_model(path) -> dict:
    """Load a category model bundle; only the types such a model holds are accepted."""
    from ._skops import load_trusting, not_allowed, untrusted_types
    path = Path(path)
    if not path.is_file():
        raise DataError(f"model file not found: {path}",
                        "pass the model.skops of a category run made with save_model: true")
    untrusted = untrusted_types(path)
    bad = not_allowed(untrusted, _ALLOWED_TYPES)
    ours = [t for t in bad if t.startswith("decoder.")]
    if ours:  # another of the package's models (a biomarker model)
        raise DataError(f"{path}: not a category model (it holds a "
                        f"{ours[0].rsplit('.', 1)[-1]})",
                        "pass the model.skops of a category run made with save_model: true")
    if bad:
        raise DataError(f"{path}: refuses to load untrusted type {bad[0]}",
                        "only load models written by this package")
    bundle = load_trusting(path, untrusted)
    if not isinstance(bundle, dict) or bundle.get("kind") != KIND:
        raise DataError(f"{path}: not a category model",
                        "pass the model.skops of a category run made with save_model: true")
    return bundle


def _run_tr(bold, img) -> float:
    from ..features.timeseries import repetition_time
    tr = repetition_time(bold, img, warn=False)
    if tr is None:
        raise DataError(f"{bold}: no repetition time in the header or a sidecar JSON",
                        "set RepetitionTime (seconds) in the run's _bold.json")
    return tr


def predict_run(bundle: dict, bold, events=None, name=None, resample: bool = False) -> dict:
    """Decode every volume of a new run with a category model.

    Parameters
    ----------
    bundle : dict
        A loaded category model (:func:`load_category_model`).
    bold : path
        The run's 4D NIfTI, on the grid of the model's mask.
    events : path, optional
        The run's BIDS ``events.tsv``: its volumes (and blocks) in a block of a class
        the model knows are then scored.  A model of betas needs them (its samples are
        the betas of a first-level GLM of the run's events).
    name : str, optional
        How the run is named in the summary (default: the path).
    resample : bool
        A run on another grid than the model's mask (another resolution or field of view
        of the same space, e.g. MNI) is resampled onto it (nilearn, continuous
        interpolation) instead of refused.  Resampling smooths the run a little; the
        model's accuracy was measured on runs of its own grid.

    A model trained with a confound strategy reads the fMRIPrep confounds file beside
    the image, as fMRIPrep writes it.

    Returns
    -------
    dict with ``volumes`` (DataFrame: volume, time_s, predicted, score_<class>, and with
    events trial_type and block), ``blocks`` (DataFrame or None), ``summary`` (dict).
    For a model of betas, ``volumes`` and ``blocks`` are None and ``betas`` holds one row
    per block (or trial): block (trial), trial_type, onset_s, predicted, score_<class>.
    """
    import nibabel as nib
    from nilearn import signal
    from nilearn.maskers import NiftiMasker

    from ..data.bids import Run, check_same_grid, find_confounds, load_bold, load_confounds
    from ..features.task import TaskData, check_finite_in_mask, smooth_runs, volume_samples

    bold = Path(bold)
    name = name or str(bold)
    img = load_bold(bold)
    mask_img = nib.Nifti1Image(np.asarray(bundle["mask"], dtype=np.uint8),
                               np.asarray(bundle["affine"]))
    resampled = None
    try:
        check_same_grid(img, mask_img, bold, "the model's mask")
    except DataError as err:
        if not resample:
            raise DataError(err.message, "pass --resample to resample the run onto the "
                            "model's grid (both in one space, e.g. MNI), or preprocess it "
                            "to that grid") from None
        from nilearn.image import resample_to_img
        zooms = np.sqrt((np.asarray(img.affine)[:3, :3] ** 2).sum(axis=0))
        resampled = {"shape": [int(n) for n in img.shape[:3]],
                     "voxel_size_mm": [round(float(z), 3) for z in zooms]}
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            img = resample_to_img(img, mask_img, interpolation="continuous",
                                  force_resample=True, copy_header=True)
        inside = np.asarray(img.dataobj)[np.asarray(bundle["mask"], bool)]
        if not np.isfinite(inside).all() or not np.ptp(inside, axis=-1).any():
            raise DataError(f"{bold}: resampled onto the model's grid it has no signal inside "
                            "the model's mask (another space, or no overlap?)",
                            "resample only runs in the model's space (e.g. MNI)") from None
        # voxels of the mask the run does not cover decode as zeros: a run covering under
        # half of the mask is refused, one covering most of it is decoded with a note
        live = np.ptp(inside, axis=-1) > 0
        resampled["mask_voxels_with_signal"] = [int(live.sum()), int(live.size)]
        if live.mean() < 0.5:
            raise DataError(f"{bold}: resampled onto the model's grid, only {int(live.sum())} "
                            f"of the model's {live.size} mask voxels have signal (the run "
                            "covers too little of the mask)",
                            "decode runs whose field of view covers the model's mask") from None
    check_finite_in_mask(np.asanyarray(img.dataobj), mask_img, bold)
    tr = _run_tr(bold, img)
    n_vol = img.shape[3]
    masker = NiftiMasker(mask_img=mask_img, standardize=None, detrend=False).fit()
    X = masker.transform(img).astype(np.float64)
    if X.shape[0] > 1 and not np.ptp(X, axis=0).any():
        raise DataError(f"{bold}: every voxel in the mask is constant over time",
                        "check the image (an empty placeholder, or a failed preprocessing "
                        "step?)")
    cl = bundle["cleaning"]
    conf_arr = None
    if bundle.get("confounds"):
        conf_path = find_confounds(bold)
        if conf_path is None:
            raise DataError(f"{bold}: the model removes confounds ('{bundle['confounds']}') "
                            "but no fMRIPrep confounds file is beside the image",
                            "keep the run's _desc-confounds_timeseries.tsv next to it, as "
                            "fMRIPrep writes it")
        run = Run(subject="new", run="1", bold=bold, events=None, tr=tr, confounds=conf_path)
        conf_arr, _ = load_confounds(run, bundle["confounds"], n_vol)
    X = signal.clean(X, detrend=cl["detrend"],
                     standardize="zscore_sample" if cl["standardize"] else None,
                     confounds=conf_arr.to_numpy() if conf_arr is not None else None,
                     high_pass=cl["high_pass"], t_r=tr if cl["high_pass"] else None)
    classes = list(bundle["classes"])
    summary = {"input": name, "n_volumes": int(n_vol), "tr_s": float(tr),
               "classes": classes, "samples": bundle["samples"], "delay_s": bundle["delay"],
               "window": bundle["window"], "confounds": bundle.get("confounds"),
               "predicted_counts": None,   # below, once decoded
               "trained_on": bundle.get("trained_on"), "cv": bundle.get("cv"),
               "warnings": []}
    if resampled is not None:
        summary["resampled_from"] = resampled
        summary["warnings"].append(
            f"{bold.name} was resampled from {' × '.join(map(str, resampled['shape']))} voxels "
            f"of {' × '.join(f'{z:g}' for z in resampled['voxel_size_mm'])} mm onto the "
            "model's grid; the model's accuracy was measured on runs of its own grid")
        n_live, n_mask = resampled["mask_voxels_with_signal"]
        if n_live < n_mask:
            summary["warnings"].append(
                f"{n_mask - n_live} of the model's {n_mask} mask voxels have no signal in "
                f"{bold.name} after resampling (outside its field of view): they decode as "
                "zeros, which lowers the accuracy to expect")
    if bundle.get("betas"):
        return _predict_betas(bundle, bold, events, np.nan_to_num(X).astype(np.float32),
                              mask_img, masker, summary)
    from ..evaluation.nested import _scores   # as the run scored its test folds
    X = smooth_runs([np.nan_to_num(X).astype(np.float32)], bundle["window"])[0]
    scores = _scores(bundle["estimator"], X, len(classes))
    volumes = pd.DataFrame({"volume": np.arange(n_vol), "time_s": np.arange(n_vol) * tr,
                            "predicted": np.asarray(classes)[scores.argmax(1)]})
    for i, c in enumerate(classes):
        volumes[f"score_{c}"] = scores[:, i]
    summary["predicted_counts"] = {c: int((volumes["predicted"] == c).sum()) for c in classes}
    blocks_out = None
    if events is not None:
        ev, blocks, known = _run_events(bundle, events, n_vol, tr, summary)
        data = TaskData(runs=[None], X=[X], events=[ev], blocks=blocks, mask_img=mask_img,
                        masker=masker, tr=[tr])
        try:
            _, y, _, units, vidx = volume_samples(data, known, bundle["delay"])
        except DataError:
            raise DataError(f"{events}: no volume of {bold.name} falls in a block of a class "
                            "the model knows", "check the events' onsets and the TR") from None
        volumes["trial_type"] = pd.Series([None] * n_vol, dtype=object)
        volumes["block"] = pd.Series([pd.NA] * n_vol, dtype="Int64")
        volumes.loc[vidx, "trial_type"] = y
        volumes.loc[vidx, "block"] = units
        code = {c: i for i, c in enumerate(classes)}
        truth = np.array([code[c] for c in y])
        pred = scores[vidx].argmax(1)
        ids = np.unique(units)
        if bundle["samples"] == "blocks" and bundle["blocks"].get("aggregate") == "average":
            # a model of block-mean patterns decodes each block's mean pattern
            bscores = _scores(bundle["estimator"],
                              np.stack([X[vidx][units == u].mean(0) for u in ids]), len(classes))
        else:  # the mean decision of the block's volumes (as the run scored blocks)
            bscores = np.stack([scores[vidx][units == u].mean(0) for u in ids])
        btrue = np.array([truth[units == u][0] for u in ids])
        blocks_out = pd.DataFrame({
            "block": ids, "trial_type": np.asarray(classes)[btrue],
            "onset_s": blocks.set_index("block").loc[ids, "onset"].to_numpy(),
            "n_volumes": [int((units == u).sum()) for u in ids],
            "predicted": np.asarray(classes)[bscores.argmax(1)]})
        for i, c in enumerate(classes):
            blocks_out[f"score_{c}"] = bscores[:, i]
        names = np.asarray(classes)
        summary["events"] = str(events)
        summary.update(_labelled_scores(names[truth], names[pred], scores[vidx], classes,
                                        names[btrue], names[bscores.argmax(1)]))
    return {"volumes": volumes, "blocks": blocks_out, "summary": summary}


def _run_events(bundle, events, n_vol, tr, summary):
    """A new run's events, its blocks (as the training runs' were found) and the classes
    among them that the model knows; the others are noted in ``summary``'s warnings."""
    from ..data.bids import read_events
    from ..features.task import find_blocks
    classes = list(bundle["classes"])
    ev = read_events(events, n_volumes=n_vol, tr=tr)
    gap = bundle["blocks"].get("max_gap")
    blocks = find_blocks(ev, gap if gap is not None else tr)
    blocks.insert(0, "run", 0)
    blocks.insert(1, "block", np.arange(len(blocks)))
    known = [c for c in classes if c in set(blocks["trial_type"])]
    other = sorted(set(blocks["trial_type"]) - set(classes))
    if other:
        summary["warnings"].append(
            f"events of types the model does not know are not scored: {', '.join(other)}")
    if not known:
        raise DataError(f"{events}: no event of a class the model knows "
                        f"({', '.join(classes)})",
                        "pass the events of this run, with trial_type values the model "
                        "was trained on")
    return ev, blocks, known


def _predict_betas(bundle, bold, events, X, mask_img, masker, summary) -> dict:
    """Decode a new run with a model of betas: a first-level GLM of the run's cleaned
    volumes and events gives one beta per block (or trial) of a class the model knows,
    z-scored over the run's betas, exactly as the training runs' were (the GLM uses the
    events' timing; the class of each beta is used only to score it)."""
    from ..data.bids import Run, parse_entities
    from ..evaluation.nested import _scores
    from ..features.task import TaskData, beta_samples
    if events is None:
        raise DataError(f"{bold}: the model decodes betas, which come from a GLM of the "
                        "run's events (their onsets and durations)",
                        "pass --events with the run's events.tsv, or keep it beside the "
                        "image as BIDS names it")
    classes, b = list(bundle["classes"]), bundle["betas"]
    tr = summary["tr_s"]
    ev, blocks, known = _run_events(bundle, events, len(X), tr, summary)
    n = int((blocks if b["unit"] == "block" else ev)["trial_type"].isin(known).sum())
    if n < 2:   # one beta z-scored over itself is all zeros: no pattern left to decode
        raise DataError(f"{events}: one {b['unit']} of a class the model knows; a model of "
                        f"betas z-scores each voxel over the run's betas, as in training, "
                        f"which needs at least two", "pass a run with two or more "
                        f"{b['unit']}s of the model's classes")
    ents = parse_entities(Path(bold).name)
    run = Run(subject=ents.get("sub", "new"), run=ents.get("run", "1"), bold=Path(bold),
              events=Path(events), tr=tr, session=ents.get("ses"))
    data = TaskData(runs=[run], X=[X], events=[ev], blocks=blocks, mask_img=mask_img,
                    masker=masker, tr=[tr])
    Xb, y, _, units = beta_samples(data, known, b["method"], b["unit"], b["hrf_model"])
    scores = _scores(bundle["estimator"], Xb, len(classes))
    names = np.asarray(classes)
    pred = names[scores.argmax(1)]
    onsets = (blocks.set_index("block").loc[units, "onset"] if b["unit"] == "block"
              else ev["onset"].iloc[units]).to_numpy(float)
    table = pd.DataFrame({b["unit"]: units, "trial_type": y, "onset_s": onsets,
                          "predicted": pred})
    for i, c in enumerate(classes):
        table[f"score_{c}"] = scores[:, i]
    summary.update({"events": str(events), "betas": dict(b), "n_betas": int(len(y)),
                    "predicted_counts": {c: int((pred == c).sum()) for c in classes}})
    summary.update(_beta_scores(y, pred, scores, classes))
    return {"volumes": None, "blocks": None, "betas": table, "summary": summary}


def _beta_scores(truth, pred, scores, classes) -> dict:
    """The scores of a run's (or several runs') betas, as :func:`_labelled_scores` gives
    those of volumes; each beta is its own unit."""
    m = _labelled_scores(truth, pred, scores, classes, truth, pred)
    for key in ("n_labelled_volumes", "n_blocks", "block_accuracy"):
        m.pop(key)
    return m


def _labelled_scores(truth, pred, scores, classes, block_truth, block_pred) -> dict:
    """The scores of labelled volumes (class names) and of their blocks, for one run or
    several pooled: accuracy, balanced accuracy, chance, block accuracy, and the volumes'
    confusion matrix (rows: true class, columns: predicted, in the model's class order),
    per-class precision/recall/F1 and macro one-vs-rest ROC AUC over the classes present,
    as a run's ``metrics.json`` gives them."""
    from sklearn.metrics import balanced_accuracy_score

    from ..evaluation.metrics import chance_level, classification_metrics
    truth, pred = np.asarray(truth), np.asarray(pred)
    m = classification_metrics(truth, pred, scores=scores, classes=classes)
    return {"n_labelled_volumes": int(len(truth)),
            "accuracy": float(np.mean(pred == truth)),
            "balanced_accuracy": float(balanced_accuracy_score(truth, pred)),
            "chance": chance_level(truth),
            "n_blocks": int(len(block_truth)),
            "block_accuracy": float(np.mean(np.asarray(block_pred) == np.asarray(block_truth))),
            "roc_auc": m["roc_auc"], "confusion_matrix": m["confusion_matrix"],
            "per_class": m["per_class"]}


def pool_runs(results: list[dict], names: list[str]) -> dict:
    """Several runs decoded by :func:`predict_run`, scored together.

    Parameters
    ----------
    results : list of dict
        :func:`predict_run`'s results, one per run.
    names : list of str
        How each run is named in the tables' ``run`` column (e.g. its file name).

    Returns
    -------
    dict with ``volumes`` and ``blocks`` (the runs' tables one after the other, with a
    ``run`` column first; ``blocks`` None when no run was scored) and ``summary``: the
    pooled ``accuracy``, ``balanced_accuracy``, ``chance``, ``block_accuracy`` over every
    labelled volume (block) of the scored runs, and ``runs``, each run's own summary.
    Volumes of different runs are pooled as they are; each run's own accuracy is in
    ``runs`` (runs, not volumes, are the independent units).
    """
    if results[0].get("betas") is not None:
        return _pool_betas(results, names)
    volumes = _stacked([r["volumes"] for r in results], names)
    scored = [(r, n) for r, n in zip(results, names) if r["blocks"] is not None]
    classes = results[0]["summary"]["classes"]
    summary = _pooled_summary(results, len(scored), volumes["predicted"])
    blocks = None
    if scored:
        labelled = volumes[volumes["trial_type"].notna()]   # (a scored run labels them)
        blocks = _stacked([r["blocks"] for r, _ in scored], [n for _, n in scored])
        summary.update(_labelled_scores(
            labelled["trial_type"].astype(str).to_numpy(),
            labelled["predicted"].astype(str).to_numpy(),
            labelled[[f"score_{c}" for c in classes]].to_numpy(float), classes,
            blocks["trial_type"].astype(str).to_numpy(),
            blocks["predicted"].astype(str).to_numpy()))
    summary["runs"] = [r["summary"] for r in results]
    return {"volumes": volumes, "blocks": blocks, "summary": summary}


def _stacked(tables, names) -> pd.DataFrame:
    """Several runs' tables one after the other, a ``run`` column (their names) first."""
    out = pd.concat([t.assign(run=n) for t, n in zip(tables, names)], ignore_index=True)
    return out[["run", *[c for c in out.columns if c != "run"]]]


def _pooled_summary(results, n_scored, predicted) -> dict:
    """What a pooled summary says whatever the model's samples: the runs, the model's
    settings (from the first run's summary), the counts of ``predicted`` classes and the
    runs' warnings, each once."""
    first = results[0]["summary"]
    classes = first["classes"]
    return {"n_runs": len(results), "n_scored_runs": n_scored,
            "n_volumes": int(sum(r["summary"]["n_volumes"] for r in results)),
            "classes": classes, "samples": first["samples"], "delay_s": first["delay_s"],
            "window": first["window"], "confounds": first["confounds"],
            "predicted_counts": {c: int((predicted == c).sum()) for c in classes},
            "trained_on": first["trained_on"], "cv": first["cv"],
            "warnings": list(dict.fromkeys(w for r in results
                                           for w in r["summary"]["warnings"]))}


def _pool_betas(results: list[dict], names: list[str]) -> dict:
    """:func:`pool_runs` for a model of betas: the runs' betas tables one after the other
    (a ``run`` column first) and their pooled scores; each run's own in ``runs``."""
    betas = _stacked([r["betas"] for r in results], names)
    classes = results[0]["summary"]["classes"]
    summary = _pooled_summary(results, len(results), betas["predicted"])
    summary.update({"betas": results[0]["summary"]["betas"], "n_betas": int(len(betas))})
    summary.update(_beta_scores(betas["trial_type"].astype(str).to_numpy(),
                                betas["predicted"].astype(str).to_numpy(),
                                betas[[f"score_{c}" for c in classes]].to_numpy(float),
                                classes))
    summary["runs"] = [r["summary"] for r in results]
    return {"volumes": None, "blocks": None, "betas": betas, "summary": summary}
