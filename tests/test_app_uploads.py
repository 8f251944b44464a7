"""Uploads and one-subject analysis behind the app: limits, whitelist, content checks,
temporary files only, never unpickling."""

from __future__ import annotations

import gzip
import io
import os
import pickle
import tempfile
from pathlib import Path

import nibabel as nib
import numpy as np
import pandas as pd
import pytest

from decoder.errors import DataError
from decoder.report import app_helpers as helpers
from test_report import HO_HEADER, N_REGIONS, biomarker_run

EXAMPLES = Path(__file__).resolve().parents[1] / "decoder" / "data" / "_sample" / "abide_examples"


@pytest.fixture(scope="module")
def model():
    path = biomarker_run() / "model.skops"
    bundle = helpers.load_biomarker_model(path)
    return bundle, helpers.model_card(path, bundle)


@pytest.fixture
def private_tmp(tmp_path, monkeypatch):
    """Route every temporary folder into one place we can inspect afterwards."""
    tmp = tmp_path / "tmp"
    tmp.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(tmp))
    return tmp


class _Boom:
    """Unpickling this object would create a file."""

    def __init__(self, target):
        self.target = target

    def __reduce__(self):
        return (Path.touch, (Path(self.target),))


@pytest.mark.parametrize("name", ["model.pkl", "x.npy", "x.joblib", "notes", "x.exe",
                                  "x.nii.gz.pkl", "x.json"])
def test_extensions_outside_the_whitelist_are_refused(name):
    with pytest.raises(DataError, match="not accepted"):
        helpers.check_upload(name, 10, "timeseries")


@pytest.mark.parametrize("name,kind", [("s.1D", "timeseries"), ("s.TSV", "timeseries"),
                                       ("s.csv", "timeseries"), ("b.nii", "nifti"),
                                       ("b.NII.GZ", "nifti")])
def test_whitelisted_extensions_pass(name, kind):
    assert helpers.check_upload(name, 10, kind) in (".1d", ".tsv", ".csv", ".nii", ".nii.gz")


def test_size_limits_and_empty_files():
    with pytest.raises(DataError, match="over the 10 MB limit"):
        helpers.check_upload("s.csv", helpers.MAX_TIMESERIES_BYTES + 1, "timeseries")
    with pytest.raises(DataError, match="over the 200 MB limit"):
        helpers.check_upload("b.nii.gz", helpers.MAX_NIFTI_BYTES + 1, "nifti")
    with pytest.raises(DataError, match="empty"):
        helpers.check_upload("s.csv", 0, "timeseries")


def test_saved_upload_stays_inside_the_folder_under_a_safe_name(tmp_path):
    path = helpers.save_upload(b"1,2\n3,4\n", "../../etc/pass wd.csv", tmp_path, "timeseries")
    assert path.parent == tmp_path and path.name == "pass_wd.csv"
    assert path.read_bytes() == b"1,2\n3,4\n"


@pytest.mark.parametrize("name,data,match", [
    ("b.nii.gz", b"plain text, not gzip" * 30, "not gzip"),
    ("b.nii", b"\x00" * 400, "no NIfTI header"),
    ("s.csv", b"1,2\n\x00\x00\x00", "binary file"),
    ("s.tsv", b"\xff\xfe\xfa\xfb not utf8 at all" * 10, "not UTF-8"),
])
def test_content_that_does_not_match_the_extension_is_refused(tmp_path, name, data, match):
    kind = "nifti" if ".nii" in name else "timeseries"
    with pytest.raises(DataError, match=match):
        helpers.save_upload(data, name, tmp_path, kind)
    assert list(tmp_path.iterdir()) == []


def test_a_pickle_disguised_as_a_table_is_never_unpickled(tmp_path, private_tmp, model):
    target = tmp_path / "unpickled"
    payload = pickle.dumps(_Boom(target))
    for name in ("subject.tsv", "subject.csv", "subject.1D"):
        with pytest.raises(DataError):
            helpers.analyse_upload(payload, name, *model)
    assert not target.exists()
    assert list(private_tmp.iterdir()) == []


def test_valid_time_series_upload_gives_a_prediction_and_leaves_no_file(private_tmp, model):
    data = (EXAMPLES / "USM_0050433_rois_ho.1D").read_bytes()
    res = helpers.analyse_upload(data, "USM_0050433_rois_ho.1D", *model, site="USM")
    assert 0.0 <= res.probability <= 1.0
    assert res.predicted in ("autism", "control")
    assert res.matrix.shape == (N_REGIONS, N_REGIONS) and len(res.edges) == 20
    assert "USM was not in training" in res.caveat
    assert list(private_tmp.iterdir()) == []


def test_wrong_region_count_and_too_short_series_are_one_line_errors(private_tmp, model):
    with pytest.raises(DataError, match="'s.csv': 3 regions, the model expects 111"):
        helpers.analyse_upload(b"1,2,3\n4,5,6\n7,8,9\n", "s.csv", *model)
    short = "\n".join("\t".join("1.0" for _ in range(N_REGIONS)) for _ in range(4)).encode()
    with pytest.raises(DataError, match="4 time points"):
        helpers.analyse_upload(short, "s.tsv", *model)
    assert list(private_tmp.iterdir()) == []


def test_an_upload_with_censored_frames_is_refused_with_its_name(private_tmp, model):
    rows = (EXAMPLES / "USM_0050433_rois_ho.1D").read_text().splitlines()
    gaps = [r if i % 2 else "\t".join("nan" for _ in r.split("\t"))
            for i, r in enumerate(rows[1:])]
    data = "\n".join([rows[0], *gaps]).encode()
    with pytest.raises(DataError, match="'s.1D': 118 of 236 time points hold NaN or inf"):
        helpers.analyse_upload(data, "s.1D", *model)
    assert list(private_tmp.iterdir()) == []


def test_regions_without_signal_are_noted_on_the_page_and_in_the_report(private_tmp, model):
    from decoder.report import render_subject_report
    rows = [r.split("\t") for r in (EXAMPLES / "USM_0050433_rois_ho.1D").read_text()
            .splitlines()]
    for r in rows[1:]:
        r[5] = "0"                                       # one region without signal
    data = "\n".join("\t".join(r) for r in rows).encode()
    res = helpers.analyse_upload(data, "s.1D", *model)
    note = "1 of 111 regions have no signal: treated as unconnected, as in training"
    assert note in res.notes
    assert note in render_subject_report(res, model[1])
    clean = helpers.analyse_upload((EXAMPLES / "USM_0050433_rois_ho.1D").read_bytes(),
                                   "c.1D", *model)
    # (this toy model harmonises sites: a scan without a site is said to get no adjustment)
    assert not [n for n in clean.notes if "regions have no signal" in n]


def _bold_and_atlas(n_vols=40):
    """A 4D image and a labels atlas with the model's 111 region labels (the Harvard–Oxford
    values of the ABIDE files: 10, 11, …, 201, 202, …)."""
    rng = np.random.default_rng(0)
    shape = (8, 6, 5)
    labels = np.zeros(shape, dtype=np.int16)
    flat = labels.reshape(-1)
    values = np.array([int(c.lstrip("#")) for c in HO_HEADER.split()])
    assert len(values) == N_REGIONS
    flat[: N_REGIONS] = values
    flat[N_REGIONS: 2 * N_REGIONS] = values
    affine = np.diag([4.0, 4.0, 4.0, 1.0])
    affine[:3, 3] = [-16, -12, -8]
    bold = rng.normal(100, 1, size=(*shape, n_vols)).astype(np.float32)
    bimg = nib.Nifti1Image(bold, affine)
    bimg.header.set_zooms((4.0, 4.0, 4.0, 2.0))
    return bimg, nib.Nifti1Image(labels, affine)


def _nifti_bytes(img, compress=True) -> bytes:
    bio = io.BytesIO()
    fm = nib.Nifti1Image.make_file_map({"image": bio, "header": bio})
    img.to_file_map(fm)
    return gzip.compress(bio.getvalue()) if compress else bio.getvalue()


def test_bold_upload_with_an_uploaded_atlas_gives_a_prediction_and_glass_brain_coords(
        private_tmp, model):
    bold, atlas = _bold_and_atlas()
    res = helpers.analyse_upload(_nifti_bytes(bold), "sub-01_bold.nii.gz", *model,
                                 atlas_data=_nifti_bytes(atlas, compress=False),
                                 atlas_name="ho.nii")
    assert 0.0 <= res.probability <= 1.0 and res.n_timepoints == 40
    assert res.coords is not None and res.coords.shape == (N_REGIONS, 3)
    assert list(private_tmp.iterdir()) == []


def test_bad_bold_uploads_are_one_line_errors(private_tmp, model):
    bold, atlas = _bold_and_atlas()
    good = _nifti_bytes(bold)
    atlas_bytes = _nifti_bytes(atlas)
    with pytest.raises(DataError, match="needs an atlas"):
        helpers.analyse_upload(good, "b.nii.gz", *model)
    with pytest.raises(DataError, match="not a readable NIfTI"):
        helpers.analyse_upload(good[: len(good) // 3], "b.nii.gz", *model,
                               atlas_data=atlas_bytes, atlas_name="a.nii.gz")
    three_d = nib.Nifti1Image(np.zeros((4, 4, 4), np.float32), np.eye(4))
    with pytest.raises(DataError, match="4D BOLD run"):
        helpers.analyse_upload(_nifti_bytes(three_d), "b.nii.gz", *model,
                               atlas_data=atlas_bytes, atlas_name="a.nii.gz")
    with pytest.raises(DataError, match="the model expects 111"):
        helpers.analyse_upload(good, "b.nii.gz", *model, atlas="power")
    assert list(private_tmp.iterdir()) == []


def test_examples_predict_with_their_site_caveat(model):
    table = helpers.example_subjects()
    res = helpers.analyse_example(table["file_id"].iloc[0], *model)
    assert 0.0 <= res.probability <= 1.0 and res.site == str(table["site"].iloc[0])
    # Harvard-Oxford region codes: coordinates for the glass brain (all but code 3455)
    assert res.coords.shape == (111, 3) and np.isfinite(res.coords).all(axis=1).sum() == 110
    with pytest.raises(DataError, match="unknown example subject"):
        helpers.analyse_example("nobody", *model)


def test_the_model_card_says_which_connections_the_model_goes_with(model):
    bundle, card = model
    conn = helpers.model_connections(bundle, card)
    top = card["connections"]["top"]
    assert len(conn["table"]) == len(top) == 10
    # written as the card writes them, so that the page and the card read alike
    assert conn["table"]["pattern r"].tolist() == [f"{e['pattern']:+.2f}" for e in top]
    assert conn["table"]["same sign in folds"].tolist() == [f"{e['sign_consistency']:.0%}"
                                                            for e in top]
    from decoder.models.model_card import card_markdown
    shown = card_markdown(card)
    assert all(f"| {r} | {c} |" in shown for r, c in zip(conn["table"]["pattern r"],
                                                          conn["table"]["same sign in folds"]))
    assert conn["table"]["region a"].str.match(r"(Left|Right) ").all()
    assert conn["glass"] is not None                    # Harvard-Oxford codes: coordinates
    # the planted coupling of the toy layout (regions 10 and 11) comes first, towards autism
    assert set(top[0]["regions"]) == {"10", "11"} and top[0]["higher_in"] == "autism"
    # a card without patterns (models saved before they were recorded): nothing to show
    assert helpers.model_connections(bundle, {**card, "connections": None}) is None
    from decoder.models.model_card import card_markdown
    md = card_markdown(card)
    assert "## Connections the model goes with" in md
    assert f"| {top[0]['names'][0]} | {top[0]['names'][1]} | {top[0]['pattern']:+.2f} |" in md
    assert "## Connections" not in card_markdown({**card, "connections": None})


def test_the_shipped_model_shows_examples_on_a_glass_brain_with_region_names():
    bundle = helpers.load_biomarker_model(None)
    table = helpers.example_subjects()
    res = helpers.analyse_example(table["file_id"].iloc[0], bundle, helpers.model_card(None, bundle))
    assert res.coords.shape == (111, 3) and np.isfinite(res.coords).all(axis=1).sum() == 110
    assert res.edges["name_a"].str.match(r"(Left|Right) ").all()
    assert res.edges["name_b"].str.match(r"(Left|Right) ").all()
    # its card says which connections it goes with: the 20 leave-site-out training folds
    conn = helpers.model_connections(bundle, helpers.model_card(None, bundle))
    assert conn["n_folds"] == 20 and len(conn["table"]) == 10 and conn["glass"] is not None
    # the first example is a girl of 8: she is told the accuracy for girls and for children
    card = helpers.model_card(None, bundle)
    row = table.iloc[0]
    assert row["sex"] == 2 and row["age"] < 12
    girls, young = (card["evaluation"]["per_subgroup"]["sex"]["female"],
                    card["evaluation"]["per_subgroup"]["age"]["under 12"])
    assert f"female {girls['accuracy']:.2f} (n={girls['n']}, 95% CI" in res.subgroups
    assert f"age under 12 {young['accuracy']:.2f} (n={young['n']}, 95% CI" in res.subgroups
    assert girls["n"] + card["evaluation"]["per_subgroup"]["sex"]["male"]["n"] == 867


def test_uncertainty_interval_and_site_caveat():
    lo, hi = helpers.wilson_interval(0, 3)
    assert lo == 0.0 and hi == pytest.approx(0.5615, abs=1e-3)
    lo, hi = helpers.wilson_interval(5, 10)
    assert lo == pytest.approx(1 - hi) and lo == pytest.approx(0.2366, abs=1e-3)
    assert helpers.wilson_interval(0, 0) is None
    card = {"data": {"sites": ["NYU", "UM_1"]},
            "evaluation": {"per_site": {"NYU": {"n": 40, "accuracy": 0.7}}}}
    assert "accuracy there was 0.70 (n=40)" in helpers.site_caveat("NYU", card)
    assert "was part of training" in helpers.site_caveat("UM_1", card)
    assert "not in training" in helpers.site_caveat("OTHER", card)
    assert "Site unknown" in helpers.site_caveat(None, card)


def test_missing_model_is_a_one_line_error_with_a_fix(tmp_path, monkeypatch):
    monkeypatch.setenv(helpers.MODEL_ENV, str(tmp_path / "none.skops"))
    with pytest.raises(DataError, match="biomarker model not found") as info:
        helpers.load_biomarker_model()
    assert "fix:" in str(info.value) and "\n" not in str(info.value)


def test_a_pickle_renamed_to_skops_is_refused(tmp_path):
    bad = tmp_path / "model.skops"
    bad.write_bytes(pickle.dumps({"estimator": None}))
    with pytest.raises(DataError, match="not a skops model file"):
        helpers.load_biomarker_model(bad)


def test_find_run_dirs_lists_complete_runs_only(tmp_path):
    from test_report import make_category_run
    make_category_run(tmp_path / "results" / "a", report=False)
    (tmp_path / "results" / "unfinished").mkdir()
    assert helpers.find_run_dirs(tmp_path / "results") == [tmp_path / "results" / "a"]
    assert helpers.find_run_dirs(tmp_path / "none") == []
    assert os.path.isdir(tmp_path / "results" / "unfinished")


def test_subject_report_is_self_contained_with_connectome_and_notice(model, private_tmp):
    import base64
    import re

    from decoder.report import render_subject_report
    bold, atlas = _bold_and_atlas()
    res = helpers.analyse_upload(_nifti_bytes(bold), "sub-01_bold.nii.gz", *model,
                                 atlas_data=_nifti_bytes(atlas), atlas_name="ho.nii.gz")
    html = render_subject_report(res, model[1])
    assert "subjects like this one" not in html          # neither age nor sex was given
    res_aged = helpers.analyse_upload(_nifti_bytes(bold), "sub-01_bold.nii.gz", *model,
                                      atlas_data=_nifti_bytes(atlas), atlas_name="ho.nii.gz",
                                      age=30.0, sex=1)
    assert res_aged.subgroups and res_aged.subgroups in render_subject_report(res_aged, model[1])
    pngs = re.findall(r'src="data:image/png;base64,([^"]+)"', html)
    # probability vs training, connectivity matrix, glass brain
    assert len(pngs) == 3 and all(base64.b64decode(p)[:4] == b"\x89PNG" for p in pngs)
    assert "<script" not in html and not re.search(r'(src|href)="(?!data:)', html)
    for text in ("Research use only", f"{res.probability:.3f}", "Strongest connections",
                 "Model card", "sub-01_bold.nii.gz", "Uncertainty:"):
        assert text in html, text
    assert "**" not in html


def test_the_subgroup_sentence_names_the_subjects_sex_and_age_band():
    card = {"evaluation": {"accuracy": 0.7, "per_subgroup": {
        "sex": {"male": {"n": 700, "accuracy": 0.71}, "female": {"n": 140, "accuracy": 0.62}},
        "age": {"under 12": {"n": 200, "accuracy": 0.66},
                "18 and over": {"n": 400, "accuracy": 0.73}}}}}
    line = helpers.subgroup_caveat(8.7, 2, card)
    assert line.startswith("Held-out accuracy for subjects like this one: female 0.62 (n=140), "
                           "age under 12 0.66 (n=200); all subjects 0.70.")
    assert helpers.subgroup_caveat(30, "M", card).count("(n=") == 2
    # a band with no subject in the evaluation, or nothing known: only what is known, or nothing
    assert helpers.subgroup_caveat(15, None, card) == ""
    assert helpers.subgroup_caveat(None, None, card) == ""
    assert helpers.subgroup_caveat(30, 1, None) == ""
    # an age the training subjects did not have is given no age band's score
    young = helpers.subgroup_caveat(3, 2, card, ages=[6.47, 58.0])
    assert "female 0.62" in young and "under 12" not in young
    assert "under 12 0.66" in helpers.subgroup_caveat(8.7, 2, card, ages=[6.47, 58.0])


# ------------------------------------------------------------------ a cohort
def _example_uploads():
    files = sorted(EXAMPLES.glob("*.1D"))
    return [(f.read_bytes(), f.name) for f in files]


def test_a_cohort_with_its_table_is_predicted_and_scored_leaving_no_file(private_tmp, model):
    table = ((EXAMPLES / "subjects.tsv").read_bytes(), "subjects.tsv")
    res = helpers.analyse_cohort(_example_uploads(), model[0], table=table)
    assert list(res.table.index) == ["NYU_0050952", "NYU_0051036", "UM_1_0050272",
                                     "USM_0050433"]
    # the uploads are named as uploaded, not by the temporary folder they passed through
    assert list(res.table["input"]) == [f"{i}_rois_ho.1D" for i in res.table.index]
    assert set(res.table["diagnosis"]) == {"autism", "control"}
    assert res.scores["n"] == 4 and res.scores["per_site"].keys() == {"NYU", "UM_1", "USM"}
    assert res.n_in_training == 0
    back = pd.read_csv(io.BytesIO(res.tsv), sep="\t", index_col="subject")
    assert np.allclose(back["p_autism"], res.table["p_autism"])
    assert list(private_tmp.iterdir()) == []
    # the same subjects one by one give the same probabilities (no site given: no ComBat)
    one = helpers.analyse_upload(*_example_uploads()[0], *model)
    assert one.probability == pytest.approx(res.table["p_autism"].iloc[0], abs=1e-12) or \
        res.table["site"].iloc[0] == "NYU"


def test_a_cohort_without_a_table_is_predicted_but_not_scored(private_tmp, model):
    res = helpers.analyse_cohort(_example_uploads()[:2], model[0])
    assert len(res.table) == 2 and res.scores is None
    assert list(private_tmp.iterdir()) == []


def test_bad_cohort_uploads_are_one_line_errors_naming_the_upload(private_tmp, model,
                                                                  monkeypatch):
    ups = _example_uploads()
    with pytest.raises(DataError, match="no time-series files"):
        helpers.analyse_cohort([], model[0])
    with pytest.raises(DataError, match="upload each subject.s time series once"):
        helpers.analyse_cohort([ups[0], ups[0]], model[0])
    with pytest.raises(DataError, match="must be .tsv or .csv"):
        helpers.analyse_cohort(ups, model[0], table=(ups[0][0], "table.1D"))
    table = ((EXAMPLES / "subjects.tsv").read_text().splitlines()[:2])  # one subject only
    # the files the table does not name are listed, and the one it names goes on
    res = helpers.analyse_cohort(ups, model[0], table=("\n".join(table).encode(), "p.tsv"))
    assert len(res.failed) == 3
    assert res.table.loc["NYU_0051036_rois_ho", "error"].startswith(
        "NYU_0051036_rois_ho.1D: no row of p.tsv matches this file (add a row")
    named = res.table[res.table["error"] == ""]
    assert list(named.index) == ["NYU_0050952"] and named["diagnosis"].notna().all()
    assert res.table.loc["NYU_0051036_rois_ho"].drop(["input", "error"]).isna().all()
    with pytest.raises(DataError) as err:    # none named: nothing to predict
        helpers.analyse_cohort(ups[1:], model[0], table=("\n".join(table).encode(), "p.tsv"))
    assert "no row of p.tsv matches" in str(err.value)
    monkeypatch.setattr(helpers, "MAX_COHORT_FILES", 3)
    with pytest.raises(DataError, match="over the limit of 3"):
        helpers.analyse_cohort(ups, model[0])
    assert list(private_tmp.iterdir()) == []


def test_cohort_uploads_keep_their_own_names_for_matching_and_display(private_tmp, model):
    ups = _example_uploads()
    names = ["sub 01.1D", "süb-é.1D", "日本.1D", "sub_01.1D"]
    table = "subject\tdiagnosis\nsub 01\tautism\nsüb-é\tcontrol\n日本\tautism\nsub_01\tcontrol\n"
    res = helpers.analyse_cohort([(d, n) for (d, _), n in zip(ups, names)], model[0],
                                 table=(table.encode(), "t.tsv"))
    assert list(res.table.index) == ["sub 01", "süb-é", "日本", "sub_01"]
    assert list(res.table["input"]) == names
    assert res.scores["n"] == 4
    assert list(private_tmp.iterdir()) == []


def test_cohort_errors_name_exactly_the_upload_concerned(private_tmp, model):
    data = (EXAMPLES / "NYU_0050952_rois_ho.1D").read_text().splitlines()
    short = "\n".join(data[:6]).encode()  # 5 time points
    res = helpers.analyse_cohort([("\n".join(data).encode(), "ñn.1D"), (short, "scan.1D")],
                                 model[0])
    assert res.failed == [res.table.loc["scan", "error"]]   # listed; the other goes on
    assert res.failed[0].startswith("scan.1D: ") and str(private_tmp) not in res.failed[0]
    assert np.isnan(res.table.loc["scan", "p_autism"])
    assert 0 <= res.table.loc["ñn", "p_autism"] <= 1 and res.table.loc["ñn", "error"] == ""
    # a file refused as an upload (binary) is listed the same way
    res = helpers.analyse_cohort([("\n".join(data).encode(), "ñn.1D"),
                                  (b"\x00\x01binary", "scan.1D")], model[0])
    assert res.failed[0].startswith("'scan.1D' is a binary file")
    assert list(res.table.index) == ["ñn", "scan"] and res.table.columns[-1] == "error"
    assert np.isnan(res.table.loc["scan", "p_autism"])
    with pytest.raises(DataError) as err:   # nothing left to predict
        helpers.analyse_cohort([(short, "scan.1D"), (short[:40], "other.1D")], model[0])
    assert str(err.value).startswith("none of the 2 files could be predicted; the first: "
                                     "scan.1D: ")
    with pytest.raises(DataError, match="'x.tsv' and 'x.1D' are both subject 'x'"):
        helpers.analyse_cohort([(short, "x.1D"), (short, "x.tsv")], model[0])
    with pytest.raises(DataError, match="invalid file name"):
        helpers.analyse_cohort([(short, ".hidden.1D")], model[0])


def test_bundled_atlas_sizes_are_nilearns_and_only_a_matching_one_is_offered():
    from decoder.features.timeseries import load_atlas
    for name, n in helpers.BUNDLED_ATLAS_SIZES.items():
        assert len(load_atlas(name)["coords"]) == n
    assert helpers.usable_atlases({"regions": list(range(111))}) == []
    assert helpers.usable_atlases({"regions": list(range(264))}) == ["power"]


def test_the_strongest_connections_are_shown_with_region_names_and_correlations():
    edges = pd.DataFrame({"region_a": ["10", "11"], "region_b": ["12", "13"],
                          "name_a": ["Left Frontal Pole", "Right Insula"],
                          "name_b": ["Left Insula", "Left Insula"], "value": [0.88123, -0.5]})
    shown = helpers.edges_for_display(edges)
    assert shown.columns.tolist() == ["region", "with region", "correlation"]
    assert shown.iloc[0].tolist() == ["Left Frontal Pole", "Left Insula", 0.881]
    plain = helpers.edges_for_display(edges.drop(columns=["name_a", "name_b"]))
    assert plain["region"].tolist() == ["10", "11"]


def test_the_site_picker_offers_the_models_training_sites(model):
    bundle, card = model
    assert helpers.model_sites(bundle, card) == sorted(map(str, bundle["sites"]))
    assert helpers.model_sites({}, {"data": {"sites": ["B", "A"]}}) == ["A", "B"]


def test_the_cohort_table_shows_sex_in_words_and_keeps_the_download_as_given():
    table = pd.DataFrame({"input": ["a.1D", "b.1D", "c.1D"], "sex": [1.0, 2.0, np.nan],
                          "p_autism": [0.12345, 0.9, 0.5], "predicted": ["control"] * 3,
                          "in_training": [False] * 3})
    shown = helpers.cohort_for_display(table)
    assert shown["sex"].tolist()[:2] == ["male", "female"] and pd.isna(shown["sex"][2])
    assert shown["p_autism"].tolist() == [0.12, 0.9, 0.5]     # as on the subject page
    # what matters first, for a narrow screen
    assert list(shown.columns)[:3] == ["p_autism", "predicted", "in_training"]
    assert table["sex"].tolist()[:2] == [1.0, 2.0]  # the table itself is left as it was


def test_a_training_subject_uploaded_under_another_name_is_recognised_by_content(private_tmp,
                                                                                model):
    import hashlib
    bundle = dict(model[0])
    example = sorted(EXAMPLES.glob("*.1D"))[0]
    data = example.read_bytes()
    said = "one of the model's training subjects"
    assert not any(said in n for n in helpers.analyse_upload(data, "patient01.1D", bundle).notes)
    # a model that lists this file's content among its training files
    bundle["subject_sha256"] = [*(bundle.get("subject_sha256") or []),
                                hashlib.sha256(data).hexdigest()]
    res = helpers.analyse_upload(data, "patient01.1D", bundle)
    assert any(said in n for n in res.notes)
    assert list(private_tmp.iterdir()) == []     # the saved copy is gone all the same


def test_the_subject_report_states_the_call_as_the_page_does(model, private_tmp):
    import dataclasses

    from decoder.report import render_subject_report
    example = sorted(EXAMPLES.glob("*.1D"))[0]
    res = helpers.analyse_upload(example.read_bytes(), example.name, *model)
    for p, near in ((0.46, True), (0.93, False)):
        shown = dataclasses.replace(res, probability=p)
        html = render_subject_report(shown, model[1])
        said = helpers.call_text(shown).replace("**", "").replace("*", "")
        assert said in html.replace("&#x27;", "'")
        assert "above 0.5, the cut-off" in said and f"{p:.2f}" in said
        assert ("says little either way" in html) is near
    # the connections named as on the page, not by the table's internal columns
    assert "<th>with region</th>" in html and "region_a" not in html


def test_an_atlas_without_the_models_regions_is_named_not_the_image(private_tmp, model):
    bold, atlas = _bold_and_atlas()
    one = nib.Nifti1Image((np.asarray(atlas.dataobj) > 0).astype(np.int16), atlas.affine)
    with pytest.raises(DataError) as err:
        helpers.analyse_upload(_nifti_bytes(bold), "sub-01_bold.nii.gz", *model,
                               atlas_data=_nifti_bytes(one), atlas_name="mask.nii.gz")
    msg = str(err.value)
    assert msg.startswith("atlas 'mask.nii.gz' has 1 region and lacks 111 of the model's 111")
    assert "sub-01_bold" not in msg and "use the labels atlas the model was trained on" in msg
    assert list(private_tmp.iterdir()) == []


def test_a_file_given_as_the_bold_image_is_judged_as_an_image(private_tmp, model):
    _, atlas = _bold_and_atlas()
    import gzip as gz
    with pytest.raises(DataError) as err:
        helpers.analyse_upload(gz.compress(b"1 2 3\n4 5 6\n"), "series.gz", *model,
                               atlas_data=_nifti_bytes(atlas), atlas_name="ho.nii.gz")
    assert "'series.gz': file type '.gz' is not accepted here" in str(err.value)
    assert ".nii" in err.value.fix and ".1d" not in err.value.fix.lower()


def test_a_file_refused_as_an_upload_keeps_what_the_table_says_of_its_subject(private_tmp,
                                                                             model):
    uploads, table = helpers.example_cohort()
    name = uploads[1][1]
    uploads[1] = (b"\x00\x01binary", name)          # one example made unreadable
    res = helpers.analyse_cohort(uploads, model[0], table=table)
    subject = name.replace("_rois_ho.1D", "")
    row = res.table.loc[subject]
    assert row["error"].startswith(f"'{name}' is a binary file") and np.isnan(row["p_autism"])
    full = helpers.analyse_cohort(helpers.example_cohort()[0], model[0], table=table).table
    for col in ("site", "age", "sex", "diagnosis"):     # as for a subject predicted
        assert row[col] == full.loc[subject, col]
    assert list(res.table.index) == list(full.index)    # in upload order, as the others
    assert res.scores["n"] == 3                          # scored without it


def test_a_new_run_of_the_embedded_sample_replaces_the_sessions_previous_folder(private_tmp,
                                                                               tmp_path):
    first = helpers.new_haxby_run_dir()
    (first / "metrics.json").write_text("{}")
    second = helpers.new_haxby_run_dir(first)
    assert not first.exists() and second.is_dir() and second.parent == private_tmp
    # a folder the app did not make is never removed, whatever it is called
    mine = tmp_path / "decoder-haxby-mine"
    mine.mkdir()
    helpers.new_haxby_run_dir(mine)
    assert mine.is_dir()
    helpers.new_haxby_run_dir(tmp_path / "results")   # not there: nothing to remove
