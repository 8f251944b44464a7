"""``report.html``: a self-contained summary of a run directory.

``decoder run`` writes ``OUT/report.html`` after ``metrics.json``, and
``decoder report RUN_DIR`` rewrites it.  The report shows the same figures
as the app (:mod:`decoder.report.figures`): the scores, confusion matrix,
per-class and per-fold scores, permutation histogram, weight map (category
decoding) or per-site table, held-out probabilities and model card
(biomarker), and the provenance of the result.  Images are inlined as
base64 PNG, so the file opens offline and can be mailed or attached to a
paper.
"""

from __future__ import annotations

import json
from pathlib import Path

from .._utils import atomic_write_text
from ._run import RunData, load_run, run_folder

__all__ = ["write_report", "render_report", "render_subject_report", "load_run", "run_folder",
           "RunData", "summary",
           "provenance_summary", "edge_pattern_views", "searchlight_view", "weight_maps_note",
           "WEIGHT_MAPS_SHOWN", "RESEARCH_NOTICE",
           "SUBGROUP_NOTE"]

RESEARCH_NOTICE = ("Research use only. Not a medical device: a prediction for one person is "
                   "uncertain, depends on the scanner site and preprocessing, and must not "
                   "inform clinical decisions.")

SUBGROUP_NOTE = ("Held-out scores of the same predictions within each sex and age band "
                 "(under 12, 12–17, 18 and over). A group with few subjects, or few of one "
                 "diagnosis, gives an uncertain estimate; a lower score there means the model "
                 "should be trusted less for such a person.")

#: weight maps drawn in the report (all of them are in weights.nii.gz)
WEIGHT_MAPS_SHOWN = 8

_SUMMARY_KEYS = ("task", "cv", "samples", "model", "n_samples", "n_classes", "accuracy",
                 "balanced_accuracy", "roc_auc", "chance", "permutation_p", "n_permutations",
                 "runtime_s")


def summary(metrics: dict) -> dict:
    """The headline values of ``metrics.json`` (absent keys left out)."""
    out = {}
    ds = metrics.get("dataset")
    if isinstance(ds, dict):
        out["dataset"] = ds.get("name") or ds.get("kind") or ds.get("root")
    intervals = {"accuracy": ("accuracy 95% CI", "Wilson"),  # independent subjects only
                 "roc_auc": ("ROC AUC 95% CI", "DeLong")}
    # what a score means where the name alone could mislead
    labels = {"chance": "chance (majority class)"}
    if (metrics.get("n_classes") or 0) > 2:
        labels["roc_auc"] = "roc_auc (mean one-vs-rest)"
    for key in _SUMMARY_KEYS:
        if key in metrics and metrics[key] is not None:
            v = metrics[key]
            out[labels.get(key, key)] = (v.get("estimator", json.dumps(v)) if isinstance(v, dict)
                        else round(v, 3) if isinstance(v, float) else v)
            ci = metrics.get(f"{key}_ci95") if key in intervals else None
            if ci:  # right below the score it belongs to
                name, how = intervals[key]
                out[name] = f"{ci[0]:.3f}–{ci[1]:.3f} ({how})"
                boot = (metrics.get("site_bootstrap") or {}).get(f"{key}_ci95")
                if boot:  # sites as the units (subjects of a site are not independent)
                    out[f"{name}, sites resampled"] = (
                        f"{boot[0]:.3f}–{boot[1]:.3f} (BCa bootstrap over "
                        f"{metrics['site_bootstrap']['n_clusters']} sites)")
    reps = metrics.get("repeats")
    if isinstance(reps, dict) and reps.get("n_repeats"):  # pooled scores average repetitions
        for key in ("accuracy", "roc_auc"):
            out[f"{key} per repetition"] = (f"{reps[key + '_mean']:.3f} ± {reps[key + '_sd']:.3f} "
                                            f"(mean ± sd of {reps['n_repeats']})")
    return out


def provenance_summary(metrics: dict) -> dict:
    """Version, source, creation time, command, config hash, libraries and dataset
    identity."""
    prov = metrics.get("provenance") or {}
    out = {k: prov.get(k) for k in ("package", "version", "python", "created", "command",
                                    "config_path", "config_sha256") if prov.get(k) is not None}
    source = prov.get("source") or {}
    if source.get("git_commit"):
        out["source commit"] = source["git_commit"]
    if source.get("sha256"):
        out["source sha256"] = source["sha256"]
    for lib, ver in (prov.get("libraries") or {}).items():
        out[lib] = ver
    ds = metrics.get("dataset") if isinstance(metrics.get("dataset"), dict) else {}
    for key in ("name", "root", "n_runs", "n_voxels", "n_sites"):
        if isinstance(ds.get(key), (str, int, float)):
            out[f"data.{key}"] = ds[key]
    dl = prov.get("dataset") or {}
    for key, val in dl.items():
        if isinstance(val, (str, int, float)):
            out[f"dataset.{key}"] = val
    if dl and not dl.get("is_datalad"):   # say so, rather than leave the reader guessing
        for key in ("dataset_id", "commit"):
            out.setdefault(f"dataset.{key}", "none (not a DataLad dataset)")
    return out


def _inputs_table(metrics):
    import pandas as pd
    inputs = (metrics.get("provenance") or {}).get("inputs") or []
    return pd.DataFrame([{"path": r.get("path"), "sha256": r.get("sha256"),
                          "bytes": r.get("bytes")} for r in inputs],
                        columns=["path", "sha256", "bytes"])


def _fig(fig_fn, alt, *args, **kwargs) -> str:
    from . import _html
    from .figures import figure_png
    fig = fig_fn(*args, **kwargs)
    return _html.img(figure_png(fig), alt)


EDGES_TITLE = "Connections that go with the classifier's output"


def edge_pattern_views(run: RunData) -> dict | None:
    """The edge activation patterns of a biomarker run, as the report and the app show them.

    Returns
    -------
    dict or None
        ``matrix`` (Figure: region × region patterns, atlas order), ``glass``
        (Figure of the 20 strongest on a glass brain, or None when the atlas
        has no known coordinates), ``table`` (the strongest, named when
        possible) and ``note`` (how to read them); None without ``edges.tsv``.
    """
    from . import figures
    if run.edges is None or not len(run.edges):
        return None
    m = run.metrics
    matrix, regions = figures.edge_pattern_matrix(run.edges)
    glass = None
    from decoder.data.abide import dataset_regions
    _, coords = dataset_regions(m.get("dataset"), regions)
    if coords is not None:
        glass = figures.connectome_glass_brain(
            matrix, coords, k=20, title="20 strongest patterns (red, solid: stronger towards "
                                        f"{(m.get('classes') or ['', 'autism'])[-1]}; blue, "
                                        "dashed: weaker)")
    n_folds = (m.get("edges") or {}).get("n_folds")
    note = ("Pattern r: correlation of the edge with the classifier's decision on the "
            f"training subjects, averaged over the {n_folds or ''} training folds (Haufe et "
            "al. 2014; unlike the weights, it says which connections differ). Positive: "
            "stronger in subjects scored towards the class shown. Same sign in folds: how "
            "stable the direction is. All edges are in edges.tsv. A description of the "
            "model, not a test of each edge.")
    return {"matrix": figures.connectivity_matrix(
                matrix, regions, title=f"Activation pattern ({run.edges['kind'].iloc[0]} edges)"),
            "glass": glass, "table": figures.edge_pattern_table(run.edges), "note": note}


def _category_sections(run: RunData) -> list[str]:
    import pandas as pd

    from . import _html, figures
    m = run.metrics
    out = []
    classes = m.get("classes") or []
    if m.get("confusion_matrix") and classes:
        rows = "; ".join(f"true {c}: " + ", ".join(f"{int(k)} as {p}" for k, p in
                                                  zip(row, classes) if k)
                         for c, row in zip(classes, m["confusion_matrix"]))
        out.append(_html.section("Confusion matrix", _fig(
            figures.confusion_matrix, f"Confusion matrix (counts). {rows}",
            m["confusion_matrix"], classes), anchor="confusion"))
    if m.get("per_class"):
        df = pd.DataFrame(m["per_class"]).T.rename_axis("class").reset_index()
        if "support" in df:
            df["support"] = df["support"].astype(int)
        out.append(_html.section("Per-class scores", _fig(
            figures.per_class_scores, "Precision, recall and F1 per class (values in the "
            "table below)", m["per_class"]),
            _html.table(df), anchor="per-class"))
    if m.get("fold_scores"):
        groups = m.get("fold_groups") or [str(i + 1) for i in range(len(m["fold_scores"]))]
        values = ", ".join(f"{g} {v:.3f}" if isinstance(v, (int, float)) else f"{g} —"
                           for g, v in zip(groups, m["fold_scores"]))
        out.append(_html.section("Cross-validation folds", _fig(
            figures.fold_scores, f"Held-out accuracy per fold: {values}", m["fold_scores"],
            m.get("fold_groups"), m.get("chance")), anchor="folds"))
    return out


def _permutation_section(run: RunData) -> list[str]:
    from . import _html, figures
    null = run.permutation_null
    if null is None or run.metrics.get("accuracy") is None:
        return []
    return [_html.section("Permutation test", _fig(
        figures.permutation_histogram, "permutation histogram", null,
        run.metrics["accuracy"], run.metrics.get("permutation_p")), anchor="permutation")]


def weight_maps_note(run: RunData) -> str:
    """How to read a category run's weight maps (the report's notice, the app's caption),
    saying when only the first :data:`WEIGHT_MAPS_SHOWN` are drawn."""
    shape = run.weights.shape
    n_maps = shape[3] if len(shape) == 4 else 1
    shown = ("" if n_maps <= WEIGHT_MAPS_SHOWN else
             f" The first {WEIGHT_MAPS_SHOWN} of {n_maps} maps are drawn; all are in "
             "weights.nii.gz.")
    return ("Weights of a linear decoder show which voxels the model uses, not which voxels "
            "encode a category (Haufe et al. 2014)." + shown)


def _weights_section(run: RunData) -> list[str]:
    from . import _html, figures
    if run.weights is None:
        return []
    return [_html.section("Weight maps", _fig(
        figures.weight_map, "Decoder weight maps (red positive, blue negative)", run.weights,
        run.metrics.get("classes"), max_classes=WEIGHT_MAPS_SHOWN),
        _html.notice(weight_maps_note(run)), anchor="weights")]


SEARCHLIGHT_NOTE = (
    "Each voxel shows the held-out accuracy of a decoder trained on the sphere around it, "
    "on the same folds (and samples chosen inside the training runs) as the whole-mask "
    "decoder. Without permutations the map is descriptive: neighbouring spheres share "
    "voxels, so uncorrected per-voxel tests would overstate what it shows.")


def searchlight_view(run: RunData) -> dict | None:
    """The searchlight of a category run, as the report and the app show it: ``facts``
    (label → text), ``figure`` (the accuracy map, significant spheres outlined) and
    ``note``; None for a run without one."""
    from . import figures
    info = run.metrics.get("searchlight")
    acc = run.searchlight.get("searchlight_accuracy")
    if not info or acc is None:
        return None
    size = info["voxels_per_sphere"]
    facts = {"radius": f"{info['radius_mm']:g} mm ({size['min']}–{size['max']} voxels per "
                       f"sphere, {info['n_spheres']} spheres)",
             "estimator": f"{info['estimator']}, alpha {info['alpha']:g}",
             "peak accuracy": f"{info['peak_accuracy']:.3f} at "
                              f"({', '.join(f'{v:g}' for v in info['peak_xyz_mm'])}) mm "
                              f"(chance {info['chance']:.3f})"}
    if info.get("n_permutations"):
        facts["family-wise error"] = (
            f"{info['n_significant_fwe']} of {info['n_spheres']} spheres with p_FWE ≤ "
            f"{info['fwe_level']:g} ({info['n_permutations']} permutations of the blocks' "
            f"labels within runs; 95th percentile of the best sphere's null accuracy "
            f"{info['null_max_95']:.3f})")
    fig = figures.searchlight_map(acc, run.searchlight.get("searchlight_p_fwe"),
                                  info.get("chance"), info.get("fwe_level") or 0.05)
    return {"facts": facts, "figure": fig, "note": SEARCHLIGHT_NOTE}


def _searchlight_section(run: RunData) -> list[str]:
    from . import _html, figures
    view = searchlight_view(run)
    if view is None:
        return []
    return [_html.section("Searchlight", _html.key_values(view["facts"]),
                          _html.img(figures.figure_png(view["figure"]),
                                    "searchlight accuracy map"),
                          _html.notice(view["note"]), anchor="searchlight")]


def _biomarker_sections(run: RunData) -> list[str]:
    from . import _html, figures
    m = run.metrics
    out = [_html.notice(RESEARCH_NOTICE)]
    if m.get("per_site"):
        out.append(_html.section(
            "Per-site scores",
            _fig(figures.per_site_scores, "per-site scores", m["per_site"], m.get("chance")),
            _html.table(figures.per_site_table(m["per_site"])),
            f'<p class="muted">{_html.esc(figures.SCORE_TABLE_NOTE)}</p>',
            _html.notice("Accuracy varies between scanner sites; a site absent from training "
                         "may score lower than the pooled estimate."), anchor="per-site"))
    if m.get("per_subgroup"):
        out.append(_html.section(
            "Scores by sex and age",
            _html.table(figures.per_subgroup_table(m["per_subgroup"])),
            f'<p class="muted">{_html.esc(figures.SCORE_TABLE_NOTE)}</p>',
            _html.notice(SUBGROUP_NOTE), anchor="per-subgroup"))
    if m.get("confounds"):
        out.append(_html.section(
            "Confound check (head motion)",
            _html.table(figures.confound_table(m["confounds"])),
            _html.notice("AUC alone: how well the variable by itself separates the groups. "
                         "rho: rank correlation of the held-out probability with it within "
                         "each group (near 0 if the model tracks only the diagnosis). "
                         "Accuracy by thirds of the variable. A check, not a correction."),
            anchor="confounds"))
    views = edge_pattern_views(run)
    if views is not None:
        out.append(_html.section(
            EDGES_TITLE,
            _html.img(figures.figure_png(views["matrix"]), "edge patterns"),
            "" if views["glass"] is None else _html.img(
                figures.figure_png(views["glass"]), "edge patterns on a glass brain"),
            _html.table(views["table"]), _html.notice(views["note"]), anchor="edges"))
    pred = run.predictions
    if pred is not None and "p_autism" in pred:
        out.append(_html.section("Held-out probabilities", _fig(
            figures.probability_vs_training, "held-out probabilities", None,
            m.get("calibration"), pred["p_autism"].to_numpy(),
            pred["diagnosis"].to_numpy() if "diagnosis" in pred else None),
            anchor="probabilities"))
    if m.get("calibration"):
        import pandas as pd
        out.append(_html.section("Calibration (held-out)", _html.table(
            pd.DataFrame(m["calibration"])), anchor="calibration"))
    out += _category_sections(run)
    out += _card_section(run)
    return out


def _card_section(run: RunData) -> list[str]:
    """The saved model's card (biomarker runs, and category runs with ``save_model``)."""
    from decoder.models.model_card import card_markdown

    from . import _html
    if not run.model_card:
        return []
    try:
        md = card_markdown(run.model_card)
    except (KeyError, TypeError):
        md = "```\n" + json.dumps(run.model_card, indent=2) + "\n```"
    return [_html.section("Model card", _html.markdown(md), anchor="model-card")]


def _run_argument(path) -> str:
    """The run folder as ``decoder reproduce`` takes it: relative to the current folder
    when it lies below it (the folder the run was started from), absolute otherwise."""
    import shlex
    path = Path(path).resolve()
    try:
        text = str(path.relative_to(Path.cwd().resolve()))
    except ValueError:
        text = str(path)
    return shlex.quote(text)


def render_report(run: RunData) -> str:
    """The report of a loaded run as one HTML string."""
    from . import _html
    m = run.metrics
    task = run.task
    title = {"category": "Category decoding report",
             "biomarker": "Connectome biomarker report"}.get(task, f"Report ({task})")
    prov = m.get("provenance") or {}
    body = [_html.section("Summary", _html.key_values(summary(m)), anchor="summary")]
    if m.get("warnings"):   # what the terminal said while the run was computed
        body.append(_html.section("Warnings during the run",
                                  *(_html.notice(w) for w in m["warnings"]),
                                  anchor="warnings"))
    if task == "biomarker":
        body += _biomarker_sections(run)
    else:
        body += _category_sections(run)
        body += _weights_section(run)
        body += _searchlight_section(run)
        body += _card_section(run)
    body += _permutation_section(run)
    if m.get("selected"):
        body.append(_html.section("Selected hyper-parameters",
                                  _html.pre(json.dumps(m["selected"], indent=1)),
                                  anchor="selected"))
    body.append(_html.section(
        "Provenance", _html.key_values(provenance_summary(m)),
        "<p>To rerun this result and compare every number: "
        f"<code>decoder reproduce {_html.esc(_run_argument(run.path))}</code></p>",
        "<h3>Inputs</h3>", _html.table(_inputs_table(m)),
        "<h3>Configuration</h3>", _html.pre(json.dumps(prov.get("config"), indent=2)),
        anchor="provenance"))
    name = m.get("name") if isinstance(m.get("name"), str) else None
    named = f"{name} · " if name and name != run.path.name else ""
    subtitle = (f"{named}{run.path.name} · decoder {prov.get('version', '?')} · "
                f"{prov.get('created', '')}")
    return _html.page(title, subtitle, "".join(body))


def _plain(markdown_text: str) -> str:
    """A sentence written for the page (Markdown bold/italics) as plain text."""
    return markdown_text.replace("**", "").replace("*", "")


def render_subject_report(result, card: dict | None = None, pngs: dict | None = None) -> str:
    """A self-contained HTML report of one subject's biomarker prediction.

    Parameters
    ----------
    result : decoder.report.app_helpers.SubjectResult
    card : dict, optional
        The model card.
    pngs : dict, optional
        Already drawn figures (``probability``, ``matrix``, ``glass``) as PNG bytes.
    """
    from decoder.models.model_card import card_markdown

    from . import _html, figures
    from .app_helpers import call_text, edges_for_display, uncertainty_text
    pos = result.positive_class
    if pngs is None:
        pngs = {"probability": figures.figure_png(figures.probability_vs_training(
                    result.probability, (result.cv or {}).get("calibration"), positive=pos)),
                "matrix": figures.figure_png(figures.connectivity_matrix(
                    result.matrix, result.labels, title="Connectivity (correlation)")),
                "glass": None if result.coords is None else figures.figure_png(
                    figures.connectome_glass_brain(result.matrix, result.coords))}
    cv = result.cv or {}
    body = [_html.notice(RESEARCH_NOTICE), _html.section("Prediction", _html.key_values({
        f"predicted probability of {pos}": f"{result.probability:.2f}",   # as on the page
        "classified as": result.predicted,
        "time points": result.n_timepoints,
        "site": result.site,
        "model: cross-validation": cv.get("scheme"),
        "model: held-out accuracy": cv.get("accuracy"),
        "model: held-out ROC AUC": cv.get("roc_auc")}),
        f"<p>{_html.esc(_plain(call_text(result)))}</p>",
        f"<p>{_html.esc(_plain(uncertainty_text(result)))}</p>",
        _html.notice(result.caveat),
        *(_html.notice(note) for note in getattr(result, "notes", [])),
        f"<p>{_html.esc(result.subgroups)}</p>" if result.subgroups else "",
        anchor="prediction")]
    body.append(_html.section("Against the training distribution",
                              _html.img(pngs["probability"], "probability against training"),
                              anchor="distribution"))
    conn = [_html.img(pngs["matrix"], "connectivity matrix")]
    if pngs.get("glass") is not None:
        conn.append(_html.img(pngs["glass"], "strongest connections on a glass brain"))
    conn += ["<h3>Strongest connections</h3>", _html.table(edges_for_display(result.edges))]
    body.append(_html.section("Connectome", *conn, anchor="connectome"))
    if card and "model" in card:
        body.append(_html.section("Model card", _html.markdown(card_markdown(card)),
                                  anchor="model-card"))
    return _html.page(f"Connectome biomarker: subject {result.name}",
                      "decoder — research use only", "".join(body))


def write_report(run_dir) -> Path:
    """Write ``RUN_DIR/report.html`` (atomically) and return its path.

    Parameters
    ----------
    run_dir : str or Path
        A run directory written by ``decoder run``.

    Returns
    -------
    Path
        The written ``report.html``.

    Raises
    ------
    DataError
        If the run directory or its ``metrics.json`` is missing or unreadable.
    """
    run = load_run(run_dir)
    path = run.path / "report.html"
    atomic_write_text(path, render_report(run))
    return path
