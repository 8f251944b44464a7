"""The decoder app: ``streamlit run app.py --server.address 127.0.0.1`` (or ``make app``).

Two pages, chosen in the sidebar:

* **Biomarker** — one subject (an embedded ABIDE example, an uploaded
  parcellated time series or a BOLD image + atlas) through the shipped
  connectome model: probability with its cross-validated reliability, the
  subject against the training distribution, connectivity matrix, strongest
  connections, site caveat and model card; or many uploaded subjects at once (a
  cohort, with an optional participants table), scored where diagnoses are given.
  Research use only.
* **Decoding** — a run directory written by ``decoder run`` (or a fresh run
  of the embedded Haxby sample): scores, confusion matrix, folds,
  permutation test, weight maps, searchlight maps, provenance and the HTML report.

This file only lays out widgets: every computation and every check lives in
:mod:`decoder.report.app_helpers`, :mod:`decoder.report.figures` and the
pipelines.  Errors appear as one line on the page, never as a traceback.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import streamlit as st

from decoder.errors import DecoderError
from decoder.report import (EDGES_TITLE, RESEARCH_NOTICE, SUBGROUP_NOTE, WEIGHT_MAPS_SHOWN,
                            edge_pattern_views, load_run, provenance_summary, render_report,
                            render_subject_report, searchlight_view, summary, weight_maps_note)
from decoder.report import app_helpers as helpers
from decoder.report import figures

st.set_page_config(page_title="decoder", page_icon=":brain:", layout="wide")


def one_line_error(err: BaseException) -> str:
    """The text shown for an error: the DecoderError line, or type + message."""
    if isinstance(err, DecoderError):
        return str(err)
    msg = " ".join(str(err).split()) or type(err).__name__
    return f"{type(err).__name__}: {msg} — fix: check the input; if it looks right, report this"


def show(fig, caption=None):
    st.image(figures.figure_png(fig), caption=caption)


# ------------------------------------------------------------------ cached library calls
@st.cache_resource(show_spinner="Loading the model…")
def cached_model(path: str, mtime: float):
    bundle = helpers.load_biomarker_model(path)
    return bundle, helpers.model_card(path, bundle)


@st.cache_resource(show_spinner=False)
def cached_model_connections(path: str, mtime: float):
    bundle, card = cached_model(path, mtime)
    conn = helpers.model_connections(bundle, card)
    if conn is not None and conn["glass"] is not None:  # drawn once per model
        conn = {**conn, "glass": figures.figure_png(conn["glass"])}
    return conn


@st.cache_resource(show_spinner=False)
def cached_example(path: str, mtime: float, file_id: str):
    bundle, card = cached_model(path, mtime)
    return helpers.analyse_example(file_id, bundle, card)


def subject_pngs(result) -> dict:
    """The subject's figures as PNG bytes (drawn once per example subject)."""
    pos = result.positive_class
    out = {"probability": figures.figure_png(figures.probability_vs_training(
               result.probability, (result.cv or {}).get("calibration"), positive=pos)),
           "matrix": figures.figure_png(figures.connectivity_matrix(
               result.matrix, result.labels, title="Connectivity (correlation)")),
           "glass": None}
    if result.coords is not None:
        out["glass"] = figures.figure_png(figures.connectome_glass_brain(
            result.matrix, result.coords, k=20))
    return out


@st.cache_resource(show_spinner=False)
def cached_example_pngs(path: str, mtime: float, file_id: str):
    return subject_pngs(cached_example(path, mtime, file_id))


@st.cache_data(show_spinner=False)
def cached_examples():
    return helpers.example_subjects().drop(columns=["path"])


# ------------------------------------------------------------------ biomarker page
def show_subject(result, card, pngs=None):
    pos = result.positive_class
    st.subheader(f"Subject {result.name}")
    c1, c2, c3 = st.columns(3)
    c1.metric(f"Predicted probability of {pos}", f"{result.probability:.2f}")
    c2.metric("Model's held-out accuracy", f"{(result.cv or {}).get('accuracy') or float('nan'):.2f}")
    c3.metric("Model's held-out ROC AUC", f"{(result.cv or {}).get('roc_auc') or float('nan'):.2f}")
    st.markdown(helpers.call_text(result))
    st.markdown(helpers.uncertainty_text(result))
    st.info(result.caveat)
    for note in result.notes:   # e.g. regions without signal in this scan
        st.warning(note)
    if result.subgroups:
        st.caption(result.subgroups)
    pngs = pngs or subject_pngs(result)
    # the figure a reader judges the probability by gets the page's width (at half
    # width its labels were too small to read)
    st.image(pngs["probability"], caption=f"This subject's probability of {pos} against "
             "those of the model's held-out training subjects")
    st.markdown("**Connectivity of this scan**")
    left, right = st.columns(2)
    left.image(pngs["matrix"], caption="The correlation between every pair of regions' "
               "time series")
    right.caption("Each cell is the correlation between two regions' time series over the "
                  "scan: red, they rise and fall together; blue, in opposition; white, "
                  "unrelated. The diagonal (a region with itself) is left white.")
    right.caption("The strongest connections below are this subject's highest correlations. "
                  "They describe the scan, not the reasons for the prediction: the model "
                  "weighs thousands of connections (see what it goes with, below).")
    if pngs["glass"] is not None:
        st.image(pngs["glass"], caption="The 20 strongest connections of this scan on a glass "
                 "brain (line colour: correlation; negative correlations dashed)")
    else:
        st.caption("Region coordinates are not known for this atlas, so the strongest "
                   "connections are listed instead of drawn on a glass brain.")
    st.dataframe(helpers.edges_for_display(result.edges), hide_index=True, height=220)
    st.download_button("Download this subject's report (HTML)",
                       render_subject_report(result, card, pngs),
                       file_name=f"{result.name.split('.')[0]}_report.html", mime="text/html",
                       key="subject_report")
    with st.expander("Model card"):
        if card and "model" in card:
            from decoder.models.model_card import card_markdown
            st.markdown(card_markdown(card, level=4))
        elif card:
            st.json(card)
        else:
            st.write("No model card ships with this model.")


UNKNOWN_SITE, OTHER_SITE = "not given", "another site (not in training)"


def score_table(df):
    """A per-site or per-subgroup table of scores, every score with the same digits."""
    # shown as text with "—" for a score a group does not have, as in the report (the
    # viewer writes "None" for a missing number); scores in [0, 1] with three decimals
    # still sort in order as text
    df = df.copy()
    for c in ("accuracy", "balanced accuracy", "ROC AUC"):
        if c in df.columns:
            df[c] = [f"{v:.3f}" if v == v and v is not None else "—" for v in df[c]]
    st.dataframe(df, hide_index=True)
    st.caption(figures.SCORE_TABLE_NOTE)


def size_limit(kind: str) -> dict:
    """The uploader's own limit, so that its caption states the app's (10 MB for tables,
    200 MB for images) rather than Streamlit's global one; older Streamlit has none."""
    import inspect
    if "max_upload_size" not in inspect.signature(st.file_uploader).parameters:
        return {}
    limit = helpers.MAX_NIFTI_BYTES if kind == "nifti" else helpers.MAX_TIMESERIES_BYTES
    return {"max_upload_size": max(1, limit // 2**20)}


def subject_details(prefix, bundle, card):
    """Optional site, age and sex of an uploaded subject (ComBat models use them; the
    subgroup accuracy needs age and sex)."""
    c1, c2, c3 = st.columns(3)
    sites = helpers.model_sites(bundle, card)
    site = c1.selectbox("Scanner site (optional)", [UNKNOWN_SITE, *sites, OTHER_SITE],
                        key=f"{prefix}_site",
                        help="One of the model's training sites, or another one. A model with "
                             "site harmonisation adjusts a training site's scans.")
    # no bounds here: the prediction checks the age and names what was typed
    age = c2.number_input("Age in years (optional)", value=None, key=f"{prefix}_age")
    sex = c3.selectbox("Sex (optional)", list(helpers.SEX_CHOICES), key=f"{prefix}_sex")
    new_site = site == OTHER_SITE
    site = None if site in (UNKNOWN_SITE, OTHER_SITE) else site  # no site adjustment
    return {"site": site, "new_site": new_site, "age": age, "sex": helpers.SEX_CHOICES[sex]}


def cohort_section(bundle):
    """Many subjects at once (e.g. a whole site), scored where a table gives diagnoses."""
    st.caption("Parcellated time series, one file per subject, and optionally a participants "
               "table (.tsv/.csv; ABIDE's phenotypic CSV works) naming each file's subject "
               "and giving site, age, sex and diagnosis. With diagnoses, the model's accuracy "
               "on them is shown (an external validation when they are new subjects).")
    ups = st.file_uploader("Time series (one per subject)", type=["1D", "tsv", "csv"],
                           **size_limit("timeseries"),
                           accept_multiple_files=True, key="cohort_files")
    table_up = st.file_uploader("Participants table (optional)", type=["tsv", "csv"],
                                **size_limit("timeseries"),
                                key="cohort_table")
    site = st.text_input("Site of subjects the table gives none (optional)", key="cohort_site")
    use_examples = not ups and st.checkbox(
        "Try it on the embedded example subjects (4, with their diagnoses)", key="cohort_ex")
    if not ups and not use_examples:
        return
    if use_examples:
        uploads, table = helpers.example_cohort()
    else:
        uploads = [(u.getvalue(), u.name) for u in ups]
        table = (table_up.getvalue(), table_up.name) if table_up is not None else None
    with st.spinner(f"Predicting {len(uploads)} subjects…"):
        res = helpers.analyse_cohort(uploads, bundle, table=table, site=site)
    st.subheader(f"Cohort: {len(res.table)} subjects")
    n_pos = int((res.table["predicted"] == "autism").sum())
    n_failed = len(res.failed)
    st.write(f"{n_pos} predicted autism, {len(res.table) - n_pos - n_failed} control"
             + (f", {n_failed} not predicted." if n_failed else "."))
    if n_failed:
        st.warning(f"{n_failed} file(s) could not be predicted and are left out of the "
                   "scores (the table's error column says why):\n\n"
                   + "\n".join(f"- {e}" for e in res.failed[:10])
                   + (f"\n- … and {n_failed - 10} more" if n_failed > 10 else ""))
    sc = res.scores
    if sc and sc.get("includes_training_subjects"):
        st.warning(f"The {sc['n']} subjects with a diagnosis were all training subjects of "
                   "the model: the scores below are on data it learned from, not an external "
                   "validation, and are optimistic.")
    elif res.n_in_training:
        st.info(f"{res.n_in_training} of them were training subjects of the model: predicted, "
                "but left out of the scores.")
    if sc:
        c1, c2, c3, c4 = st.columns(4)
        c1.metric("With a diagnosis", sc["n"])
        acc_ci, auc_ci = sc.get("accuracy_ci95"), sc.get("roc_auc_ci95")
        c2.metric("Accuracy", f"{sc['accuracy']:.2f}",
                  help=f"95% CI {acc_ci[0]:.2f}–{acc_ci[1]:.2f} (Wilson)" if acc_ci else None)
        c3.metric("ROC AUC", "—" if sc.get("roc_auc") is None else f"{sc['roc_auc']:.2f}",
                  help=f"95% CI {auc_ci[0]:.2f}–{auc_ci[1]:.2f} (DeLong)" if auc_ci else None)
        c4.metric("Chance", f"{sc['chance']:.2f}")
        few = helpers.few_subjects_note(sc)
        if few:
            st.warning(few)
        intervals = {k: v for k, v in summary(sc).items() if "CI" in k}
        if intervals:
            st.caption("; ".join(f"{k}: {v}" for k, v in intervals.items()))
        cal = sc.get("calibration")
        if cal:
            st.caption(f"Calibration: mean predicted probability {cal['mean_predicted']:.2f}, "
                       f"observed autism rate {cal['observed_rate']:.2f}, Brier score "
                       f"{cal['brier']:.3f} (lower is better; 0.25 for a constant 0.5). "
                       "Probabilities far from the observed rate at a new site mean they "
                       "should not be read at face value there.")
        if sc.get("per_site"):
            score_table(figures.per_site_table(sc["per_site"]))
    st.dataframe(helpers.cohort_for_display(res.table), hide_index=False)
    st.download_button("Download the predictions (TSV)", res.tsv, file_name="predictions.tsv",
                       mime="text/tab-separated-values", key="cohort_download")


def biomarker_page():
    st.title("Connectome biomarker")
    st.warning(RESEARCH_NOTICE)
    with st.expander("Terms used on this page"):
        st.markdown(helpers.GLOSSARY)
    path = helpers.model_path()
    mtime = path.stat().st_mtime if path.is_file() else 0.0
    bundle, card = cached_model(str(path), mtime)
    source = st.radio("Subject", ["Example subject", "Upload a time series",
                                  "Upload a BOLD image", "Upload a cohort"], horizontal=True,
                      key="source")
    result, pngs = None, None
    if source == "Upload a cohort":
        cohort_section(bundle)
    elif source == "Example subject":
        table = cached_examples()
        ids = table["file_id"].astype(str).tolist()
        rows = {str(r.file_id): r for r in table.itertuples()}
        choice = st.selectbox("Example subject (ABIDE, held out of training)", ids, key="example",
                              format_func=lambda i: f"{i} — site {rows[i].site}, "
                                                    f"{rows[i].diagnosis}, age {rows[i].age:g}")
        result = cached_example(str(path), mtime, choice)
        pngs = cached_example_pngs(str(path), mtime, choice)
        st.caption(f"Recorded diagnosis: {rows[choice].diagnosis} (not shown to the model).")
    elif source == "Upload a time series":
        st.caption(f"A parcellated time series: one row per time point, one column per region "
                   f"({len(bundle.get('regions') or [])} regions, in the model's order). "
                   f"{', '.join(helpers.TIMESERIES_EXTENSIONS)}, at most "
                   f"{helpers.MAX_TIMESERIES_BYTES // 2**20} MB.")
        up = st.file_uploader("Time series", type=["1D", "tsv", "csv"], key="ts_upload",
                              **size_limit("timeseries"))
        details = subject_details("ts", bundle, card)
        if up is not None:
            result = helpers.analyse_upload(up.getvalue(), up.name, bundle, card, **details)
    else:
        from pipelines.biomarker import model_atlas
        usable = helpers.usable_atlases(bundle)
        st.caption("A preprocessed 4D BOLD image in the atlas space, at most "
                   f"{helpers.MAX_NIFTI_BYTES // 2**20} MB, and the atlas the model was "
                   f"trained with ({model_atlas(bundle)})"
                   + (": upload it as a labels image (none of the atlases bundled here has "
                      "the model's regions)." if not usable else "."))
        up = st.file_uploader("BOLD image", type=["nii", "gz"], key="bold_upload",
                              **size_limit("nifti"))
        atlas_choice = st.selectbox("Atlas", ["Upload a labels atlas", *usable], key="atlas")
        atlas_up = None
        if atlas_choice == "Upload a labels atlas":
            atlas_up = st.file_uploader("Labels atlas (NIfTI)", type=["nii", "gz"],
                                        **size_limit("nifti"),
                                        key="atlas_upload")
        details = subject_details("bold", bundle, card)
        if up is not None and (atlas_up is not None or atlas_choice != "Upload a labels atlas"):
            with st.spinner("Extracting region time series…"):
                result = helpers.analyse_upload(
                    up.getvalue(), up.name, bundle, card,
                    atlas=None if atlas_up is not None else atlas_choice,
                    atlas_data=atlas_up.getvalue() if atlas_up is not None else None,
                    atlas_name=atlas_up.name if atlas_up is not None else None, **details)
    if result is not None:
        show_subject(result, card, pngs)
    conn = cached_model_connections(str(path), mtime)
    if conn is not None:
        with st.expander("What the model goes with (its strongest connection patterns)"):
            if conn["glass"] is not None:
                st.image(conn["glass"])
            st.dataframe(conn["table"], hide_index=True)
            st.caption(f"Activation patterns ({conn['kind']} edges): the correlation of each "
                       "connection with the model's output on the training subjects, averaged "
                       f"over the {conn['n_folds']} training folds of its evaluation (Haufe et "
                       "al. 2014). They describe the model across many people; they do not "
                       "test each connection and say nothing on their own about one person.")


# ------------------------------------------------------------------ decoding page
def show_run(run):
    m = run.metrics
    cols = st.columns(5)
    for col, (key, label) in zip(cols, (("accuracy", "Accuracy"),
                                        ("balanced_accuracy", "Balanced accuracy"),
                                        ("roc_auc", "ROC AUC"), ("chance", "Chance"),
                                        ("permutation_p", "Permutation p"))):
        v = m.get(key)   # the same words as the biomarker page and the glossary
        col.metric(label, "—" if v is None else f"{v:.3f}")
    with st.expander("Summary", expanded=True):
        facts = summary(m)
        st.table({"": list(facts), "value": [str(v) for v in facts.values()]})
    for warning in m.get("warnings") or []:  # what the run warned about when it ran
        st.warning(f"During the run: {warning}")
    classes = m.get("classes") or []
    # one figure a row, at its own width: in a column of two they were shrunk to about
    # half, until a confusion matrix's counts and the fold names could not be read
    if m.get("confusion_matrix") and classes:
        show(figures.confusion_matrix(m["confusion_matrix"], classes))
    if m.get("per_class"):
        show(figures.per_class_scores(m["per_class"]))
    if m.get("fold_scores"):
        show(figures.fold_scores(m["fold_scores"], m.get("fold_groups"), m.get("chance")))
    if run.permutation_null is not None and m.get("accuracy") is not None:
        show(figures.permutation_histogram(run.permutation_null, m["accuracy"],
                                           m.get("permutation_p")))
    if run.weights is not None:
        st.markdown("**Weight maps**")
        show(figures.weight_map(run.weights, classes, max_classes=WEIGHT_MAPS_SHOWN),
             caption=weight_maps_note(run))
    light = searchlight_view(run)
    if light is not None:
        st.markdown("**Searchlight**")
        st.table({k: [v] for k, v in light["facts"].items()})
        show(light["figure"])
        st.caption(light["note"])
    if m.get("per_site"):
        st.markdown("**Per-site scores**")
        show(figures.per_site_scores(m["per_site"], m.get("chance")))
        score_table(figures.per_site_table(m["per_site"]))
    if m.get("per_subgroup"):
        st.markdown("**Scores by sex and age**")
        score_table(figures.per_subgroup_table(m["per_subgroup"]))
        st.caption(SUBGROUP_NOTE)
    if m.get("confounds"):
        st.markdown("**Confound check (head motion)**")
        st.dataframe(figures.confound_table(m["confounds"]), hide_index=True)
    views = edge_pattern_views(run)
    if views is not None:
        st.markdown(f"**{EDGES_TITLE}**")
        show(views["matrix"])
        if views["glass"] is not None:
            show(views["glass"])
        st.dataframe(views["table"], hide_index=True)
        st.caption(views["note"])
    with st.expander("Provenance"):
        st.table({k: [str(v)] for k, v in provenance_summary(m).items()})
        inputs = (m.get("provenance") or {}).get("inputs") or []
        if inputs:
            st.dataframe(inputs, hide_index=True)
        st.code(json.dumps((m.get("provenance") or {}).get("config"), indent=2), language="json")
    st.download_button("Download report.html", render_report(run), file_name="report.html",
                       mime="text/html")


def decoding_page():
    st.title("Decoding results")
    source = st.radio("Results", ["Open a run directory", "Run the embedded Haxby sample"],
                      horizontal=True, key="results_source")
    run_dir = None
    if source == "Open a run directory":
        found = helpers.find_run_dirs(Path(os.environ.get("DECODER_RESULTS", "results")))
        default = str(found[0]) if found else ""
        run_dir = st.text_input("Run directory (written by 'decoder run')", value=default,
                                key="run_dir")
        if not run_dir:
            st.caption("No run directory yet: run 'decoder run configs/haxby.yaml', or the "
                       "embedded sample from here.")
            return
    else:
        st.caption("Category decoding of 8 object categories, Haxby et al. (2001), subject 1, "
                   "one axial slice, leave-one-run-out: the run 'decoder run "
                   "configs/haxby.yaml' makes (the labelling delay and window are chosen "
                   "inside each training fold), about 15 s on two cores. The permutation "
                   "test (labels permuted by block within runs) gives the p-value; it reuses "
                   "the fitted solutions, so 100 permutations add little.")
        n_perm = st.number_input("Permutations", min_value=0, max_value=1000, value=100,
                                 step=50, key="n_permutations")
        if st.button("Run", type="primary", key="run_haxby"):
            out = helpers.new_haxby_run_dir(st.session_state.pop("haxby_run", None))
            with st.spinner("Decoding the embedded sample…"):
                try:
                    helpers.run_embedded_haxby(out, n_permutations=int(n_perm))
                except Exception:
                    import shutil
                    shutil.rmtree(out, ignore_errors=True)   # nothing half-written is kept
                    raise
            st.session_state["haxby_run"] = str(out)
        run_dir = st.session_state.get("haxby_run")
        if run_dir is None:
            return
    show_run(load_run(run_dir))


# ------------------------------------------------------------------ main
PAGES = {"Biomarker": biomarker_page, "Decoding": decoding_page}

page = st.sidebar.radio("Page", list(PAGES), key="page")
st.sidebar.caption("decoder — leakage-free brain decoding from fMRI. Runs offline.")
try:
    PAGES[page]()
except DecoderError as err:
    st.error(one_line_error(err))
except Exception as err:  # any other failure: one line, never a traceback
    st.error(one_line_error(err))
