"""Model cards: what a saved biomarker model was trained on, how it was evaluated, what it is for.

A card is written next to every saved model as ``model_card.json`` (read by
the app and by ``decoder predict``) and ``model_card.md`` (for people).
"""

from __future__ import annotations

import logging
from pathlib import Path

from .._utils import sha256_file, to_json

__all__ = ["build_model_card", "card_files", "read_model_card", "card_markdown"]

log = logging.getLogger(__name__)

INTENDED_USE = (
    "Research on group differences in resting-state functional connectivity, and teaching. "
    "NOT a diagnostic device: predictions for an individual are uncertain (see the "
    "cross-validated accuracy and calibration), depend on the scanner site and preprocessing, "
    "and must not inform clinical decisions.")

CITATION = (
    "Di Martino et al. (2014) The autism brain imaging data exchange, Mol Psychiatry 19:659; "
    "Craddock et al. (2013) The Neuro Bureau Preprocessing Initiative (Preprocessed Connectomes "
    "Project), Front Neuroinform; data used under the ABIDE/INDI terms "
    "(non-commercial research, with citation).")


# Below these, head motion is not said to separate the groups or to follow the output
MOTION_AUC_MARGIN = 0.05     # |ROC AUC of mean FD alone − 0.5|
MOTION_RHO = 0.1             # |Spearman rho| of the held-out probability with mean FD


def label_codes(ds) -> str | None:
    """What the class codes stand for when the label is not autism: an images dataset whose
    ``label_column`` / ``positive_label`` name another label gives ``autism = sex F;
    control = the other sex value``; None for autism (ABIDE, or ``positive_label:
    autism``)."""
    ds = ds or {}
    positive = ds.get("positive_label")
    if ds.get("kind") != "fmriprep" or positive is None or \
            str(positive).strip().lower() == "autism":
        return None
    column, negative = ds.get("label_column"), ds.get("negative_label")
    return (f"autism = {column} {positive}; control = "
            + (f"{column} {negative}" if negative is not None else f"the other {column} value"))


def _motion_limitation(confounds: dict) -> list[str]:
    fd = confounds.get("mean_fd")
    if not fd or fd.get("auc_alone") is None:
        return []
    rho = {c: (r or {}).get("rho") for c, r in (fd.get("spearman_within_class") or {}).items()}
    within = ", ".join(f"{c} {_fmt(v)}" for c, v in sorted(rho.items()) if v is not None)
    separates = abs(fd["auc_alone"] - 0.5) >= MOTION_AUC_MARGIN
    follows = any(v is not None and abs(v) >= MOTION_RHO for v in rho.values())
    if not (separates or follows):
        return []
    return [("Head motion differs between the groups" if separates else
             "Head motion hardly differs between the groups")
            + f" (mean framewise displacement alone: ROC AUC {_fmt(fd['auc_alone'])}); "
            + ("held-out probabilities correlate with it within each group"
               if follows else "held-out probabilities hardly follow it within each group")
            + f" (Spearman rho: {within or 'n/a'})"
            + (", so part of the signal may be motion rather than brain connectivity."
               if follows else ".")]


def _subgroup_limitation(per_subgroup: dict) -> list[str]:
    parts = []
    for name in ("sex", "age"):
        groups = (per_subgroup or {}).get(name) or {}
        if len(groups) > 1:
            parts.append(", ".join(f"{label} {_fmt(g.get('accuracy'))} (n={g.get('n')})"
                                   for label, g in groups.items()))
    if not parts:
        return []
    return ["Held-out accuracy by group (the training data hold the groups unequally) — "
            + "; ".join(parts) + ". Small groups give uncertain estimates."]


def _population_limitation(ages, by_sex) -> str:
    """Whom the training subjects were: their sexes and ages, where known."""
    parts = []
    if by_sex:
        parts.append(" and ".join(f"{g.get('n')} {name}" for name, g in by_sex.items()))
    if ages:
        parts.append(f"aged {ages[0]:g}–{ages[1]:g} years")
    if not parts:
        return ("The training subjects' sexes and ages limit whom the model describes; "
                "they are not recorded here.")
    return ("Training subjects: " + ", ".join(parts) + ". Subjects outside these ages, and "
            "groups with few training subjects, are less well described.")


def build_model_card(metrics: dict, config: dict, n_subjects: int, sites, regions,
                     calibration=None, n_timepoints=None, ages=None) -> dict:
    """The card as a dict (JSON-serialisable); ``ages``: the training subjects' youngest
    and oldest age in years."""
    ds = config.get("dataset", {})
    abide = ds.get("kind") == "abide"
    prov = metrics.get("provenance") or {}
    codes = label_codes(ds)
    return {
        "model": {
            "task": "binary classification of subjects (autism vs control) from "
                    "resting-state connectivity" + (f"; the classes are codes: {codes}"
                                                   if codes else ""),
            "classes": metrics.get("classes"),
            "positive_class": "autism",
            "connectivity": config.get("connectivity"),
            "harmonize": config.get("harmonize"),
            "confounds_removed": (metrics.get("model") or {}).get("confounds_removed") or [],
            "estimator": config.get("model"),
            "format": "skops (load with pipelines.biomarker.load_model; never pickle)",
        },
        "data": {
            "source": "ABIDE Preprocessed Connectomes Project" if abide
            else "fMRIPrep derivatives (BOLD images + atlas)",
            "kind": ds.get("kind"),
            # what a new subject's input must match: ABIDE's pipeline, strategy and
            # derivative, or the atlas and confound strategy the images were reduced with
            **({k: ds.get(k) for k in ("pipeline", "strategy", "derivative")} if abide else
               {k: ds.get(k) for k in ("atlas", "atlas_type", "confounds_strategy",
                                       "bold_pattern")}),
            "n_subjects": int(n_subjects),
            "n_autism": (metrics.get("dataset") or {}).get("n_autism"),
            "excluded": ds.get("exclude") or [],
            "dataset": prov.get("dataset") or {},   # DataLad id and commit, when one
            "n_regions": len(regions), "sites": sorted(set(map(str, sites))),
            # the training scans' lengths: a shorter scan gives a noisier connectome
            "n_timepoints": None if n_timepoints is None else [int(n) for n in n_timepoints],
            "ages": None if ages is None else [float(a) for a in ages],
        },
        "evaluation": {
            "cv": metrics.get("cv"),
            "accuracy": metrics.get("accuracy"),
            "accuracy_ci95": metrics.get("accuracy_ci95"),
            "balanced_accuracy": metrics.get("balanced_accuracy"),
            "roc_auc": metrics.get("roc_auc"),
            "roc_auc_ci95": metrics.get("roc_auc_ci95"),
            "site_bootstrap": metrics.get("site_bootstrap"),
            "chance": metrics.get("chance"),
            "permutation_p": metrics.get("permutation_p"),
            "per_site": metrics.get("per_site"),
            "per_subgroup": metrics.get("per_subgroup"),
            "calibration": calibration,
            "confounds": metrics.get("confounds") or {},
        },
        "connections": metrics.get("edges"),
        "intended_use": INTENDED_USE,
        "limitations": [
            ("Trained on ABIDE I sites" if abide else "Trained on the sites listed here")
            + "; a new scanner or preprocessing pipeline changes connectivity, so accuracy "
            "on new sites may be lower than reported.",
            ("Input must be the same atlas/derivative (same regions, same order) as training."
             if abide else "Input must be reduced with the same atlas and confound strategy "
             "(same regions, same order) as training."),
            _population_limitation(ages, (metrics.get("per_subgroup") or {}).get("sex")),
        ] + _subgroup_limitation(metrics.get("per_subgroup"))
          + _motion_limitation(metrics.get("confounds") or {}),
        "citation": CITATION if abide else "Cite the dataset as its dataset_description.json "
                                           "and licence ask.",
        # the run that made the model: its code, libraries, config and time (as metrics.json)
        "provenance": {k: prov.get(k) for k in ("version", "source", "python", "libraries",
                                                "config_sha256", "created")},
    }


def _fmt(v):
    return f"{v:.3f}" if isinstance(v, float) else ("—" if v is None else str(v))


def _words(v) -> str:
    """A card value in words: lists joined, settings as ``key value`` pairs (not Python)."""
    if isinstance(v, dict):
        return "; ".join(f"{str(k).replace('_', ' ')} {_words(x)}" for k, x in v.items()
                         if x not in (None, [], {}))
    if isinstance(v, (list, tuple)):
        return " + ".join(map(str, v)) if v else "none"
    return _fmt(v)


def _ci_range(ci) -> str:
    return f"{ci[0]:.3f}–{ci[1]:.3f}" if ci else "—"


def _ci_fmt(ci) -> str:
    return f" (95% CI {_ci_range(ci)})" if ci else ""


def card_markdown(card: dict, level: int = 1) -> str:
    """A human-readable Markdown rendering of the card; ``level``: the heading level of
    its title (its sections one below), e.g. 4 inside a page that has its own title."""
    if card.get("kind") == "category":            # a category decoder's card
        from .category_model import category_card_markdown
        return category_card_markdown(card, level)
    ev, data, model = card["evaluation"], card["data"], card["model"]
    lines = ["# Model card — connectome biomarker", "",
             "## Model", f"- Task: {model['task']}",
             f"- Classes: {', '.join(map(str, model['classes'] or [])) or '—'} (positive: {model['positive_class']})",
             f"- Connectivity: {_words(model['connectivity'])}",
             f"- Site harmonisation: {_words(model['harmonize'])}",
             f"- Estimator: {model['estimator']}", f"- File format: {model['format']}", "",
             "## Data", f"- Source: {data['source']}",
             (f"- Pipeline / strategy / derivative: {data['pipeline']} / {data['strategy']} / "
              f"{data['derivative']}" if "pipeline" in data or "atlas" not in data else
              f"- Atlas: {data['atlas']}, confound strategy: {data['confounds_strategy']}, "
              f"images: {data['bold_pattern']}"),
             f"- Subjects: {data['n_subjects']}, regions: {data['n_regions']}, "
             f"sites: {len(data['sites'])}"
             + (f", time points per scan: {data['n_timepoints'][0]}–{data['n_timepoints'][1]}"
                if data.get("n_timepoints") else "")
             + (f", ages {data['ages'][0]:g}–{data['ages'][1]:g} years"
                if data.get("ages") else ""), "",
             "## Evaluation", f"- Cross-validation: {ev['cv']}",
             f"- Accuracy {_fmt(ev['accuracy'])}{_ci_fmt(ev.get('accuracy_ci95'))}, "
             f"balanced accuracy "
             f"{_fmt(ev['balanced_accuracy'])}, ROC AUC {_fmt(ev['roc_auc'])}"
             f"{_ci_fmt(ev.get('roc_auc_ci95'))}, chance "
             f"{_fmt(ev['chance'])}, permutation p {_fmt(ev['permutation_p'])}"]
    boot = ev.get("site_bootstrap")
    if boot:  # the same scores with sites as the units
        lines.append(f"- With sites resampled ({boot['n_clusters']} sites, BCa bootstrap): "
                     f"accuracy 95% CI {_ci_range(boot.get('accuracy_ci95'))}, ROC AUC 95% CI "
                     f"{_ci_range(boot.get('roc_auc_ci95'))}")
    lines.append("")
    if ev.get("per_site"):
        lines += ["| site | n | accuracy | ROC AUC |", "|---|---|---|---|"]
        for site, m in sorted(ev["per_site"].items()):
            lines.append(f"| {site} | {m.get('n')} | {_fmt(m.get('accuracy'))} | "
                         f"{_fmt(m.get('roc_auc'))} |")
        lines.append("")
    for name, title in (("sex", "sex"), ("age", "age band (years)")):
        groups = (ev.get("per_subgroup") or {}).get(name) or {}
        if groups:
            lines += [f"| {title} | n | autism | accuracy | 95% CI | ROC AUC |",
                      "|---|---|---|---|---|---|"]
            for label, m in groups.items():
                lines.append(f"| {label} | {m.get('n')} | {m.get('n_autism')} | "
                             f"{_fmt(m.get('accuracy'))} | {_ci_range(m.get('accuracy_ci95'))} | "
                             f"{_fmt(m.get('roc_auc'))} |")
            lines.append("")
    if ev.get("calibration"):
        lines += ["Calibration (held-out predictions):", "",
                  "| predicted probability | n | observed autism rate |", "|---|---|---|"]
        for b in ev["calibration"]:
            lines.append(f"| {b['low']:.1f}–{b['high']:.1f} | {b['n']} | "
                         f"{_fmt(b['observed_rate'])} |")
        lines.append("")
    conn = card.get("connections") or {}
    if conn.get("top"):
        lines += ["## Connections the model goes with",
                  f"Activation patterns ({conn.get('kind')} edges): correlation of each "
                  "connection with the model's output on the training subjects, averaged over "
                  f"the {conn.get('n_folds')} training folds of the evaluation (Haufe et al. "
                  "2014). They describe the model; they do not test each connection.", "",
                  "| region a | region b | pattern r | same sign in folds | stronger in |",
                  "|---|---|---|---|---|"]
        for e in conn["top"]:
            a, b = e.get("names") or e.get("regions")
            lines.append(f"| {a} | {b} | {e['pattern']:+.2f} | {e['sign_consistency']:.0%} | "
                         f"{e['higher_in']} |")
        lines.append("")
    lines += ["## Intended use", card["intended_use"], "", "## Limitations"]
    lines += [f"- {x}" for x in card["limitations"]]
    lines += ["", "## Citation", card["citation"], ""]
    if level > 1:  # '# ' and '## ' headings, moved down together
        lines = [("#" * (level - 1) + ln) if ln.startswith("#") else ln for ln in lines]
    return "\n".join(lines)


def card_files(card: dict) -> dict:
    """``model_card.json`` and ``model_card.md`` of ``card``: file name → bytes (written
    with the rest of a run by :func:`decoder.results.write_run`)."""
    return {"model_card.json": (to_json(card, indent=2) + "\n").encode("utf-8"),
            "model_card.md": card_markdown(card).encode("utf-8")}


def read_model_card(model_path) -> dict | None:
    """The card written beside a saved model (``model_card.json``, or ``<stem>_card.json``
    as older releases named it); None when there is none or it cannot be read."""
    import json
    path = Path(model_path)
    for candidate in (path.parent / "model_card.json",
                      path.with_name(path.name.split(".")[0] + "_card.json")):
        if candidate.is_file():
            try:
                card = json.loads(candidate.read_text())
            except (OSError, ValueError):
                return None
            # a card records its model's SHA-256 (cards of older releases do not): one
            # beside another model is not that model's card
            recorded = card.get("model_sha256") if isinstance(card, dict) else None
            if recorded and path.is_file() and sha256_file(path) != recorded:
                log.warning("%s is not the card of %s (it describes another model file): "
                            "not shown", candidate, path)
                return None
            return card
    return None
