"""`decoder predict` and the app-facing functions: shipped model, example subjects, images."""

from __future__ import annotations

import json
from pathlib import Path

import nibabel as nib
import numpy as np
import pandas as pd
import pytest

from decoder.cli import main
from decoder.errors import DataError
from decoder.features.timeseries import check_alignment, extract_timeseries, load_atlas
from pipelines import biomarker


def test_shipped_model_and_examples_are_small_and_present():
    assert biomarker.SHIPPED_MODEL.is_file()
    assert biomarker.SHIPPED_MODEL.stat().st_size < 5 * 1024 ** 2
    card = json.loads((biomarker.SHIPPED_DIR / "model_card.json").read_text())
    ev = card["evaluation"]
    assert ev["cv"] == "leave-site-out"
    # its scores come with their intervals (Wilson for accuracy, DeLong for ROC AUC)
    for key in ("accuracy", "roc_auc"):
        lo, hi = ev[f"{key}_ci95"]
        assert lo < ev[key] < hi and hi - lo < 0.1
    ex = biomarker.example_subjects()
    assert len(ex) >= 4 and set(ex["diagnosis"]) == {"autism", "control"}
    # the shipped model never saw the example subjects, and lists those it saw
    assert card["data"]["n_subjects"] == 871 - len(ex)
    trained = biomarker.load_model(None)["subjects"]
    assert len(set(trained)) == card["data"]["n_subjects"]
    assert not set(ex["file_id"]) & set(trained)


def test_predict_cli_on_example_1d_prints_probability_and_writes_json(tmp_path, capsys):
    ex = biomarker.example_subjects().iloc[0]
    out = tmp_path / "p.json"
    assert main(["predict", str(biomarker.SHIPPED_MODEL), ex["path"], "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    result = json.loads(out.read_text())
    assert f"{result['probability']:.3f}" in printed
    assert result["predicted"] in {"autism", "control"}
    assert result["cv"]["scheme"] == "leave-site-out"


def test_one_subjects_prediction_asked_as_a_table_is_refused_before_any_work(tmp_path, capsys):
    ex = biomarker.example_subjects().iloc[0]
    out = tmp_path / "p.tsv"
    assert main(["predict", str(biomarker.SHIPPED_MODEL), ex["path"], "--out", str(out)]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "written as JSON" in err and "p.json" in err
    assert not out.exists()


def test_predict_tells_the_accuracy_for_the_subjects_sex_and_age_band(tmp_path, capsys):
    ex = biomarker.example_subjects().iloc[0]                   # a girl of 8
    card = json.loads((biomarker.SHIPPED_MODEL.parent / "model_card.json").read_text())
    groups = card["evaluation"]["per_subgroup"]
    out = tmp_path / "p.json"
    assert main(["predict", str(biomarker.SHIPPED_MODEL), ex["path"], "--age", str(ex["age"]),
                 "--sex", "female", "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    result = json.loads(out.read_text())
    assert result["subgroups"]["sex"] == {"group": "female", **groups["sex"]["female"]}
    assert result["subgroups"]["age"] == {"group": "under 12", **groups["age"]["under 12"]}
    assert f"female subjects: {groups['sex']['female']['accuracy']:.3f}" in printed
    assert "subjects aged under 12" in printed
    # the code gives the same, and the probability does not depend on it (no ComBat)
    assert main(["predict", str(biomarker.SHIPPED_MODEL), ex["path"], "--age", "8.7",
                 "--sex", "2", "--out", str(out)]) == 0
    again = json.loads(out.read_text())
    assert again["subgroups"] == result["subgroups"]
    # traceable: the input's and the model's content, and the code's version
    from decoder import __version__
    from decoder._utils import sha256_file
    assert again["input_sha256"] == sha256_file(Path(ex["path"]))
    assert again["model_sha256"] == sha256_file(biomarker.SHIPPED_MODEL)
    assert again["decoder_version"] == __version__
    assert again["probability"] == result["probability"]
    # nothing known: no subgroup
    assert main(["predict", str(biomarker.SHIPPED_MODEL), ex["path"], "--out", str(out)]) == 0
    assert json.loads(out.read_text())["subgroups"] == {}


def test_an_unknown_sex_is_a_one_line_error(tmp_path, capsys):
    ex = biomarker.example_subjects().iloc[0]
    rc = main(["predict", str(biomarker.SHIPPED_MODEL), ex["path"], "--sex", "3",
               "--out", str(tmp_path / "p.json")])
    err = capsys.readouterr().err.strip()
    assert rc == 2 and "sex '3'" in err and "male/female" in err and "\n" not in err
    assert not (tmp_path / "p.json").exists()


def test_same_subject_as_tsv_and_csv_gives_same_probability(tmp_path):
    ex = biomarker.example_subjects().iloc[1]
    from decoder.data.timeseries_io import read_timeseries
    ts, names = read_timeseries(ex["path"])
    named = [f"roi_{n}" for n in names]  # a header of bare numbers would read as data
    pd.DataFrame(ts, columns=named).to_csv(tmp_path / "s.tsv", sep="\t", index=False)
    pd.DataFrame(ts).to_csv(tmp_path / "s.csv", index=False, header=False)
    bundle = biomarker.load_model()
    p1 = biomarker.predict_subject(ts, bundle)["probability"]
    p2 = biomarker.predict_subject(tmp_path / "s.tsv", bundle)["probability"]
    p3 = biomarker.predict_subject(tmp_path / "s.csv", bundle)["probability"]
    assert p1 == pytest.approx(p2, abs=1e-6) and p1 == pytest.approx(p3, abs=1e-6)


def test_connectivity_matrix_for_the_app():
    ex = biomarker.example_subjects().iloc[0]
    mat = biomarker.connectivity_matrix(ex["path"])
    assert mat.shape == (111, 111)
    assert np.allclose(np.diag(mat), 1.0) and np.allclose(mat, mat.T)
    tangent = biomarker.connectivity_matrix(ex["path"], kind="tangent")
    assert tangent.shape == (111, 111) and not np.allclose(tangent, mat)


def test_wrong_number_of_regions_is_a_one_line_error(tmp_path, capsys):
    f = tmp_path / "s.tsv"
    pd.DataFrame(np.random.default_rng(0).normal(size=(50, 20))).to_csv(f, sep="\t", index=False)
    rc = main(["predict", str(biomarker.SHIPPED_MODEL), str(f)])
    err = capsys.readouterr().err.strip()
    assert rc != 0 and "20 regions, the model expects 111" in err and "\n" not in err


def test_non_skops_model_file_is_refused(tmp_path, capsys):
    bad = tmp_path / "model.skops"
    bad.write_bytes(b"not a zip")
    ex = biomarker.example_subjects().iloc[0]
    rc = main(["predict", str(bad), ex["path"]])
    assert rc != 0 and "not a skops model file" in capsys.readouterr().err


@pytest.mark.parametrize("kind", ["biomarker", "category"])
def test_a_model_file_holding_an_unknown_type_is_refused_before_loading(tmp_path, capsys,
                                                                        kind):
    # skops would rebuild os.system on loading; neither model loader may trust it
    import os

    import skops.io as sio
    bad = tmp_path / "model.skops"
    bad.write_bytes(sio.dumps({"kind": kind, "estimator": os.system}))
    with pytest.raises(DataError, match=r"refuses to load untrusted type \S*system"):
        biomarker.load_model(bad)
    from decoder.models.category_model import is_category_model, load_category_model
    assert not is_category_model(bad)
    with pytest.raises(DataError, match=r"refuses to load untrusted type \S*system"):
        load_category_model(bad)
    ex = biomarker.example_subjects().iloc[0]
    rc = main(["predict", str(bad), ex["path"], "--out", str(tmp_path / "p.json")])
    err = capsys.readouterr().err.strip()
    assert rc != 0 and "untrusted type" in err and "\n" not in err
    assert not (tmp_path / "p.json").exists()


def _image_and_atlas(tmp_path, shift=0.0):
    rng = np.random.default_rng(0)
    affine = np.diag([3.0, 3.0, 3.0, 1.0])
    labels = np.zeros((8, 8, 8), dtype=np.int16)
    labels[:4, :4] = 1
    labels[4:, :4] = 2
    labels[:, 4:] = 3
    bold = rng.normal(size=(8, 8, 8, 40)).astype(np.float32) + 100
    bold_img = nib.Nifti1Image(bold, affine)
    bold_img.header.set_zooms((3.0, 3.0, 3.0, 2.0))
    atlas_aff = affine.copy()
    atlas_aff[:3, 3] += shift
    nib.save(bold_img, tmp_path / "sub-01_bold.nii.gz")
    nib.save(nib.Nifti1Image(labels, atlas_aff), tmp_path / "atlas.nii.gz")
    return tmp_path / "sub-01_bold.nii.gz", tmp_path / "atlas.nii.gz"


def test_nifti_extraction_with_labels_atlas_is_cached(tmp_path):
    bold, atlas = _image_and_atlas(tmp_path)
    cache = tmp_path / "cache"
    ts = extract_timeseries(bold, atlas, confounds_strategy=None, cache_dir=cache)
    assert ts.shape == (40, 3)
    assert len(list(cache.glob("*.npy"))) == 1
    again = extract_timeseries(bold, atlas, confounds_strategy=None, cache_dir=cache)
    assert np.array_equal(ts, again)


def test_nifti_whose_affine_does_not_match_atlas_is_a_one_line_error(tmp_path, capsys):
    bold, atlas = _image_and_atlas(tmp_path, shift=500.0)
    with pytest.raises(DataError, match="affine does not match the atlas"):
        extract_timeseries(bold, atlas, confounds_strategy=None)
    rc = main(["predict", str(biomarker.SHIPPED_MODEL), str(bold), "--atlas", str(atlas)])
    err = capsys.readouterr().err.strip()
    assert rc != 0 and "affine does not match the atlas" in err and "\n" not in err


def test_small_affine_difference_in_same_space_is_accepted(tmp_path):
    bold, atlas = _image_and_atlas(tmp_path, shift=1.5)
    check_alignment(nib.load(bold), nib.load(atlas))  # no error: nilearn resamples


def test_nifti_without_atlas_is_a_clear_error(tmp_path, capsys):
    bold, _ = _image_and_atlas(tmp_path)
    rc = main(["predict", str(biomarker.SHIPPED_MODEL), str(bold)])
    assert rc != 0 and "--atlas" in capsys.readouterr().err


def test_coordinate_atlases_shipped_with_nilearn_become_spheres():
    power = load_atlas("power")
    assert power["type"] == "spheres" and power["coords"].shape == (264, 3)
    dosenbach = load_atlas("dosenbach")
    assert dosenbach["coords"].shape == (160, 3)


# ------------------------------------------------------------ inputs no model should see
def _example_series():
    from decoder.data.timeseries_io import read_timeseries
    return read_timeseries(biomarker.example_subjects().iloc[0]["path"])[0]


@pytest.mark.parametrize("damage, named", [
    ("regions", "100 of 111 regions have no signal"),
    ("short", "5 time points, at least 20"),
    ("nan rows", "time points hold NaN or inf"),
    ("inf", "time points hold NaN or inf"),
])
def test_a_broken_time_series_is_refused_not_given_a_probability(tmp_path, capsys, damage,
                                                                 named):
    ts = _example_series()
    if damage == "regions":
        ts[:, 11:] = np.nan
    elif damage == "short":
        ts = ts[:5]
    elif damage == "nan rows":
        ts[::2] = np.nan
    else:
        ts[::3, 3] = np.inf
    f = tmp_path / "broken.tsv"
    pd.DataFrame(ts, columns=[f"r{i}" for i in range(ts.shape[1])]).to_csv(f, sep="\t",
                                                                           index=False)
    out = tmp_path / "p.json"
    rc = main(["predict", str(biomarker.SHIPPED_MODEL), str(f), "--out", str(out)])
    err = capsys.readouterr().err.strip()
    assert rc == 2 and named in err and str(f) in err and "\n" not in err
    assert not out.exists()
    with pytest.raises(DataError, match=named):
        biomarker.predict_subject(ts, biomarker.load_model())


def test_a_few_regions_without_signal_are_noted_as_in_training(tmp_path, capsys):
    ts = _example_series()
    ts[:, [4, 7]] = 0.0                        # ABIDE has up to 7 such regions per subject
    f = tmp_path / "two_empty.tsv"
    pd.DataFrame(ts, columns=[f"r{i}" for i in range(ts.shape[1])]).to_csv(f, sep="\t",
                                                                           index=False)
    assert main(["predict", str(biomarker.SHIPPED_MODEL), str(f),
                 "--out", str(tmp_path / "p.json")]) == 0
    note = "2 of 111 regions have no signal: treated as unconnected, as in training"
    assert f"note: {note}" in capsys.readouterr().out
    assert json.loads((tmp_path / "p.json").read_text())["warnings"] == [note]
    assert biomarker.predict_subject(_example_series(), biomarker.load_model())["warnings"] == []


def test_a_scan_shorter_than_any_training_scan_is_noted(tmp_path, capsys):
    model = biomarker.load_model()
    assert model["n_timepoints"] == [78, 316]  # ABIDE's shortest and longest training scans
    f = tmp_path / "short.tsv"
    ts = _example_series()[:60]
    pd.DataFrame(ts, columns=[f"r{i}" for i in range(ts.shape[1])]).to_csv(f, sep="\t",
                                                                           index=False)
    assert main(["predict", str(biomarker.SHIPPED_MODEL), str(f),
                 "--out", str(tmp_path / "p.json")]) == 0
    note = ("60 time points, fewer than the model's shortest training scan (78): its "
            "connectivity is noisier than any the model learned from, so read the "
            "probability with more caution")
    assert f"note: {note}" in capsys.readouterr().out
    assert json.loads((tmp_path / "p.json").read_text())["warnings"] == [note]
    card = json.loads((biomarker.SHIPPED_DIR / "model_card.json").read_text())
    assert card["data"]["n_timepoints"] == [78, 316]


def test_the_default_output_keeps_the_whole_name_of_the_input(tmp_path, monkeypatch):
    ex = biomarker.example_subjects().iloc[0]
    monkeypatch.chdir(tmp_path)
    for name in ("pat.A.1D", "pat.B.1D"):
        (tmp_path / name).write_bytes(Path(ex["path"]).read_bytes())
        assert main(["predict", str(biomarker.SHIPPED_MODEL), name]) == 0
    assert sorted(p.name for p in tmp_path.glob("*.json")) == ["pat.A_prediction.json",
                                                               "pat.B_prediction.json"]


def test_an_output_that_cannot_be_written_is_named_before_predicting(tmp_path, capsys):
    ex = biomarker.example_subjects().iloc[0]
    (tmp_path / "a_file").write_text("x")
    for out, named in ((tmp_path, "is a folder"), (tmp_path / "a_file" / "p.json", "is a file")):
        rc = main(["predict", str(biomarker.SHIPPED_MODEL), ex["path"], "--out", str(out)])
        captured = capsys.readouterr()
        assert rc == 2 and named in captured.err and "\n" not in captured.err.strip()
        assert "p(autism)" not in captured.out            # refused before the prediction


def test_a_model_file_holding_another_estimator_is_refused(tmp_path, capsys):
    import skops.io as sio
    from sklearn.linear_model import LogisticRegression
    bad = tmp_path / "model.skops"
    bad.write_bytes(sio.dumps({"estimator": LogisticRegression()}))
    rc = main(["predict", str(bad), biomarker.example_subjects().iloc[0]["path"]])
    err = capsys.readouterr().err.strip()
    assert rc == 2 and "not a biomarker model bundle" in err and "\n" not in err


def test_a_truncated_image_and_an_empty_atlas_are_one_line_errors(tmp_path, capsys):
    bold, atlas = _image_and_atlas(tmp_path)
    cut = tmp_path / "cut_bold.nii.gz"
    cut.write_bytes(bold.read_bytes()[:len(bold.read_bytes()) // 2])
    rc = main(["predict", str(biomarker.SHIPPED_MODEL), str(cut), "--atlas", str(atlas)])
    err = capsys.readouterr().err.strip()
    assert rc == 2 and str(cut) in err and "truncated or corrupt" in err and "\n" not in err
    empty = tmp_path / "empty_atlas.nii.gz"
    nib.save(nib.Nifti1Image(np.zeros((8, 8, 8), np.int16), np.diag([3.0, 3, 3, 1])), empty)
    with pytest.raises(DataError, match="no labelled region"):
        load_atlas(empty)


@pytest.mark.parametrize("flag, value, named", [("--age", "-5", "age -5.0 is not an age"),
                                                ("--age", "250", "age 250.0 is not an age"),
                                                ("--age", "nan", "age nan is not an age"),
                                                ("--mean-fd", "-3", "mean framewise displacement "
                                                 "-3.0 is not a distance")])
def test_impossible_ages_and_motion_are_refused(tmp_path, capsys, flag, value, named):
    ex = biomarker.example_subjects().iloc[0]
    rc = main(["predict", str(biomarker.SHIPPED_MODEL), ex["path"], flag, value,
               "--out", str(tmp_path / "p.json")])
    err = capsys.readouterr().err.strip()
    assert rc == 2 and named in err and "\n" not in err


def test_motion_given_to_a_model_that_does_not_use_it_is_said_to_be_unused(tmp_path, capsys):
    ex = biomarker.example_subjects().iloc[0]
    assert main(["predict", str(biomarker.SHIPPED_MODEL), ex["path"], "--mean-fd", "0.2",
                 "--out", str(tmp_path / "p.json")]) == 0
    assert "not used" in json.loads((tmp_path / "p.json").read_text())["warnings"][0]


def test_a_run_folder_given_as_the_model_names_the_model_file(tmp_path, capsys):
    (tmp_path / "model.skops").write_bytes(biomarker.SHIPPED_MODEL.read_bytes())
    rc = main(["predict", str(tmp_path), biomarker.example_subjects().iloc[0]["path"]])
    err = capsys.readouterr().err.strip()
    assert rc == 2 and f"pass {tmp_path / 'model.skops'}" in err


def test_the_json_records_what_the_prediction_was_given(tmp_path):
    ex = biomarker.example_subjects().iloc[0]
    out = tmp_path / "p.json"
    assert main(["predict", str(biomarker.SHIPPED_MODEL), ex["path"], "--site", "NYU",
                 "--age", "12", "--sex", "2", "--out", str(out)]) == 0
    assert json.loads(out.read_text())["given"] == {"site": "NYU", "age": 12.0,
                                                    "sex": "female", "mean_fd": None}


def _with_header(path, ts, header):
    path.write_text("\t".join(header) + "\n" + "\n".join(
        "\t".join(f"{v:.6f}" for v in row) for row in ts) + "\n")
    return path


def test_columns_are_matched_to_the_models_regions_by_their_header(tmp_path):
    from decoder.data.timeseries_io import read_timeseries
    bundle = biomarker.load_model()
    ts, names = read_timeseries(biomarker.example_subjects().iloc[0]["path"])
    reference = biomarker.predict_subject(ts, bundle)["probability"]
    order = np.random.default_rng(0).permutation(ts.shape[1])
    for header in ([f"#{names[i]}" for i in order], [f"roi_{names[i]}" for i in order]):
        shuffled = _with_header(tmp_path / "shuffled.1D", ts[:, order], header)
        assert biomarker.predict_subject(shuffled, bundle)["probability"] == \
            pytest.approx(reference, abs=1e-9)
    # columns numbered in order are positions: taken as they stand
    numbered = _with_header(tmp_path / "numbered.tsv", ts, [f"V{i + 1}" for i in range(len(names))])
    assert biomarker.predict_subject(numbered, bundle)["probability"] == \
        pytest.approx(reference, abs=1e-9)
    # a header naming other regions would be scored as regions it is not: refused
    other = _with_header(tmp_path / "other.1D", ts, [f"#{int(n) + 1000}" for n in names])
    with pytest.raises(DataError, match=r"other.1D: its header names regions the model does "
                                        r"not have \(1010, 1011, 1012, …\) — fix: .*ABIDE rois_ho"):
        biomarker.predict_subject(other, bundle)
    twice = _with_header(tmp_path / "twice.1D", ts, [f"#{names[0]}", *map("#{}".format,
                                                                          names[:-1])])
    with pytest.raises(DataError, match="twice or not at all"):
        biomarker.predict_subject(twice, bundle)


def test_a_series_of_another_atlas_names_the_models_atlas(tmp_path):
    ts = _example_series()[:, :100]
    with pytest.raises(DataError, match=r"100 regions, the model expects 111 — fix: extract "
                                        r"the time series with the atlas the model was trained "
                                        r"on \(ABIDE rois_ho, 111 regions\)"):
        biomarker.predict_subject(ts, biomarker.load_model())


def test_the_shipped_model_knows_its_training_ages_and_notes_a_younger_child():
    bundle = biomarker.load_model()
    assert bundle["ages"] == [6.47, 58.0]
    young = biomarker.predict_subject(_example_series(), bundle, age=3, sex="female")
    assert any("age 3 is outside the ages of the model's training subjects (6.47–58 years)"
               in n for n in young["warnings"])
    # the 'under 12' band's held-out scores describe children of 6.47-12, not this child
    assert "age" not in young["subgroups"] and young["subgroups"]["sex"]["group"] == "female"
    child = biomarker.predict_subject(_example_series(), bundle, age=9, sex="female")
    assert child["subgroups"]["age"]["group"] == "under 12"


def test_a_file_that_is_not_a_time_series_table_is_not_called_a_cut_short_download(tmp_path,
                                                                                  capsys):
    notes = tmp_path / "README.md"
    notes.write_text("# Notes\n\nThis folder holds the scans of site A, acquired in 2019.\n"
                     "See the protocol, page two.\n")
    rc = main(["predict", str(biomarker.SHIPPED_MODEL), str(notes)])
    err = capsys.readouterr().err.strip()
    assert rc == 2 and len(err.splitlines()) == 1
    assert "README.md: not a time-series table" in err and "re-download" not in err
    assert ".1D/.tsv/.csv table" in err


def test_a_folder_given_as_the_model_says_what_it_holds(tmp_path, capsys):
    from decoder.cli import main
    series = str(biomarker.EXAMPLES_DIR / "NYU_0050952_rois_ho.1D")
    shipped = Path(biomarker.SHIPPED_MODEL).parent
    category = tmp_path / "haxby"
    category.mkdir()
    (category / "metrics.json").write_text('{"task": "category", "files": []}')
    empty = tmp_path / "empty"
    empty.mkdir()
    for folder, expected in ((shipped, f"pass {biomarker.SHIPPED_MODEL}"),
                             (category, "is a category decoding run that saved no model"),
                             (empty, "is a folder without a model file")):
        assert main(["predict", str(folder), series, "--out", str(tmp_path / "p.json")]) == 2
        err = capsys.readouterr().err.strip()
        assert "\n" not in err and expected in err and "not found" not in err


def test_a_card_beside_another_model_is_not_taken_for_its_card(tmp_path, caplog):
    import hashlib
    from decoder.models.model_card import read_model_card
    model = tmp_path / "model.skops"
    model.write_bytes(b"model bytes")
    card = {"model_sha256": hashlib.sha256(b"model bytes").hexdigest(), "data": {}}
    (tmp_path / "model_card.json").write_text(json.dumps(card))
    assert read_model_card(model) == card
    model.write_bytes(b"another model")
    assert read_model_card(model) is None and "is not the card of" in caplog.text
    (tmp_path / "model_card.json").write_text(json.dumps({"data": {}}))  # an older card
    assert read_model_card(model) == {"data": {}}


def test_an_atlas_without_the_models_region_labels_is_named_for_an_image(tmp_path, capsys):
    # a 3-region atlas would give 3 columns; one of 111 other labels would be taken for the
    # model's regions by position: the atlas is named either way, before any prediction
    bold, atlas = _image_and_atlas(tmp_path)
    out = tmp_path / "p.json"
    rc = main(["predict", str(biomarker.SHIPPED_MODEL), str(bold), "--atlas", str(atlas),
               "--out", str(out)])
    err = capsys.readouterr().err.strip()
    assert rc == 2 and "\n" not in err and not out.exists()
    assert f"atlas {atlas} has 3 regions and lacks 111 of the model's 111 (label 10, 11" in err
    assert "ABIDE rois_ho" in err


def test_a_site_given_to_a_model_without_site_adjustment_is_said_to_change_nothing():
    bundle = biomarker.load_model()
    assert bundle["estimator"].harmonize == "none"      # the shipped model
    ex = biomarker.example_subjects().iloc[0]
    with_site = biomarker.predict_subject(ex["path"], bundle, site="NYU", name=ex["path"])
    without = biomarker.predict_subject(ex["path"], bundle, name=ex["path"])
    assert with_site["probability"] == without["probability"]
    assert ("this model makes no site adjustment, so the site (NYU) is recorded but does "
            "not change the prediction") in with_site["warnings"]
    assert not any("site" in w for w in without["warnings"])


def _atlas_with(tmp_path, values, name):
    """A 4D image and a labels atlas holding ``values`` (two voxels each)."""
    rng = np.random.default_rng(0)
    affine = np.diag([3.0, 3.0, 3.0, 1.0])
    labels = np.zeros((8, 8, 8), dtype=np.int16)
    flat = labels.reshape(-1)
    flat[: len(values)] = values
    flat[len(values): 2 * len(values)] = values
    bold = nib.Nifti1Image(rng.normal(size=(8, 8, 8, 40)).astype(np.float32) + 100, affine)
    bold.header.set_zooms((3.0, 3.0, 3.0, 2.0))
    nib.save(bold, tmp_path / "sub-01_bold.nii.gz")
    nib.save(nib.Nifti1Image(labels, affine), tmp_path / name)
    return tmp_path / "sub-01_bold.nii.gz", tmp_path / name


@pytest.mark.parametrize("kind", ["same count, other labels", "the model's and one more"])
def test_an_atlas_is_checked_by_its_label_values_not_only_their_number(tmp_path, capsys,
                                                                       kind):
    model_labels = [int(r) for r in biomarker.load_model()["regions"]]
    values = (list(range(1, 112)) if kind.startswith("same")       # read by position before
              else model_labels + [999])
    bold, atlas = _atlas_with(tmp_path, values, "atlas.nii.gz")
    out = tmp_path / "p.json"
    rc = main(["predict", str(biomarker.SHIPPED_MODEL), str(bold), "--atlas", str(atlas),
               "--out", str(out)])
    err = capsys.readouterr().err.strip()
    assert rc == 2 and "\n" not in err and not out.exists()
    assert err.startswith(f"decoder: error: atlas {atlas} has ")
    assert ("the model does not know (label 999)" in err) == kind.endswith("one more")
