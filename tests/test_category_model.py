"""A category decoder saved with ``save_model: true`` decodes new runs (real Haxby sample).

Trained on runs 1–9 of the embedded slice and applied to runs 10–12, which it never
saw, through the library and through ``decoder predict``.
"""

import json
from pathlib import Path
import shutil

import nibabel as nib
import numpy as np
import pandas as pd
import pytest

from decoder.cli import main
from decoder.errors import ConfigError, DataError
from decoder.models.category_model import is_category_model, load_category_model, predict_run
from pipelines import run_config

HELD_OUT = ("10", "11", "12")
CLASSES = ["face", "house", "cat", "shoe"]


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """A model trained on runs 1-9 (the held-out runs moved out of the dataset)."""
    from decoder.data.samples import sample_path
    base = tmp_path_factory.mktemp("category_model")
    data = base / "haxby"
    shutil.copytree(sample_path(), data)
    held = base / "held_out"
    held.mkdir()
    for run in HELD_OUT:
        for f in (data / "sub-1" / "func").glob(f"*run-{run}_*"):
            shutil.move(str(f), held / f.name)
    out = base / "run"
    metrics = run_config({"task": "category", "classes": CLASSES, "window": "auto",
                          "delay": "auto", "save_model": True, "dataset": {"root": str(data)}},
                         out=out)
    return {"data": data, "held": held, "out": out, "metrics": metrics}


def _bold(held, run):
    return held / f"sub-1_task-objectviewing_run-{run}_bold.nii.gz"


def test_the_run_saves_its_decoder_with_what_a_new_run_needs(trained):
    m = trained["metrics"]
    assert "model.skops" in json.loads((trained["out"] / "metrics.json").read_text())["files"]
    saved = m["saved_model"]
    assert saved["file"] == "model.skops"
    assert saved["delay_s"] in (0, 1.25, 2.5, 3.75, 5) and saved["window"] in (1, 3, 5)
    bundle = load_category_model(trained["out"] / "model.skops")
    assert bundle["classes"] == m["classes"] and sorted(m["classes"]) == sorted(CLASSES)
    assert (bundle["delay"], bundle["window"]) == (saved["delay_s"], saved["window"])
    assert bundle["mask"].shape == (40, 20, 1) and bundle["mask"].sum() > 0
    assert len(bundle["trained_on"]) == 9
    assert bundle["cv"]["accuracy"] == m["accuracy"]


def test_held_out_runs_are_decoded_well_above_chance(trained):
    bundle = load_category_model(trained["out"] / "model.skops")
    accs, block_accs = [], []
    for run in HELD_OUT:
        bold = _bold(trained["held"], run)
        res = predict_run(bundle, bold, events=bold.with_name(
            bold.name.replace("_bold.nii.gz", "_events.tsv")))
        s = res["summary"]
        assert s["n_volumes"] == 121 and len(res["volumes"]) == 121
        assert s["chance"] == pytest.approx(0.25, abs=0.01)
        accs.append(s["accuracy"])
        block_accs.append(s["block_accuracy"])
        # four blocks of the four classes; the other classes' blocks are not scored
        assert s["n_blocks"] == 4 and len(res["blocks"]) == 4
        assert any("not scored" in w for w in s["warnings"])
    assert np.mean(accs) > 0.6            # chance 0.25
    assert np.mean(block_accs) >= 0.75


def test_a_new_run_becomes_samples_exactly_as_the_training_runs_did(trained):
    """The run's volumes through the training path (load_task_data, smoothing, labelling)
    and through predict_run get the same decisions."""
    from decoder.data.bids import find_runs
    from decoder.evaluation.nested import _scores
    from decoder.features.task import load_task_data, smooth_runs, volume_samples
    bundle = load_category_model(trained["out"] / "model.skops")
    runs = [r for r in find_runs(trained["data"], "objectviewing") if r.run == "01"]
    mask = nib.Nifti1Image(bundle["mask"], bundle["affine"])
    data = load_task_data(runs, mask, detrend=True, standardize=True)
    X = smooth_runs(data.X, bundle["window"])
    Xs, y, _, _, vidx = volume_samples(data, bundle["classes"], bundle["delay"], X)
    expected = _scores(bundle["estimator"], Xs, len(bundle["classes"]))
    res = predict_run(bundle, runs[0].bold, events=runs[0].events)
    got = res["volumes"].loc[vidx, [f"score_{c}" for c in bundle["classes"]]].to_numpy()
    np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-6)
    assert list(res["volumes"].loc[vidx, "trial_type"]) == list(y)


def test_decoder_predict_writes_the_summary_and_tables(trained, tmp_path, capsys):
    bold = _bold(trained["held"], "10")
    out = tmp_path / "run10.json"
    rc = main(["predict", str(trained["out"] / "model.skops"), str(bold), "--out", str(out)])
    assert rc == 0
    printed = capsys.readouterr().out
    assert "accuracy on" in printed and "labelled volumes" in printed
    summary = json.loads(out.read_text())
    for key in ("input", "model", "input_sha256", "model_sha256", "decoder_version",
                "n_volumes", "classes", "delay_s", "window", "accuracy", "block_accuracy",
                "n_labelled_volumes", "chance", "table", "block_table", "trained_on"):
        assert key in summary, key
    volumes = pd.read_csv(tmp_path / "run10.tsv", sep="\t")
    assert len(volumes) == 121 and set(volumes["predicted"]) <= set(CLASSES)
    blocks = pd.read_csv(tmp_path / "run10_blocks.tsv", sep="\t")
    assert set(blocks["trial_type"]) == set(CLASSES)


def test_without_events_every_volume_is_decoded_and_nothing_scored(trained, tmp_path, capsys):
    bold = tmp_path / "run11_bold.nii.gz"
    shutil.copy(_bold(trained["held"], "11"), bold)
    out = tmp_path / "p.json"
    assert main(["predict", str(trained["out"] / "model.skops"), str(bold),
                 "--out", str(out)]) == 0
    summary = json.loads(out.read_text())
    assert "accuracy" not in summary and sum(summary["predicted_counts"].values()) == 121
    assert "not scored" in capsys.readouterr().out
    assert not (tmp_path / "p_blocks.tsv").exists()


def test_a_run_on_another_grid_is_a_one_line_error(trained, tmp_path):
    img = nib.load(_bold(trained["held"], "12"))
    other = tmp_path / "other_bold.nii.gz"
    nib.save(nib.Nifti1Image(np.asarray(img.dataobj)[:30], img.affine, img.header), other)
    with pytest.raises(DataError, match="not on the same grid"):
        predict_run(load_category_model(trained["out"] / "model.skops"), other)
    assert main(["predict", str(trained["out"] / "model.skops"), str(other),
                 "--out", str(tmp_path / "x.json")]) != 0
    assert not (tmp_path / "x.json").exists()


def test_events_without_a_known_class_are_refused(trained, tmp_path):
    ev = tmp_path / "ev.tsv"
    pd.DataFrame({"onset": [0.0], "duration": [20.0], "trial_type": ["rest"]}).to_csv(
        ev, sep="\t", index=False)
    with pytest.raises(DataError, match="no event of a class the model knows"):
        predict_run(load_category_model(trained["out"] / "model.skops"),
                    _bold(trained["held"], "12"), events=ev)


def test_biomarker_options_and_a_run_given_twice_are_refused_for_a_category_model(trained,
                                                                                  tmp_path):
    model = str(trained["out"] / "model.skops")
    bold = str(_bold(trained["held"], "12"))
    for extra in (["--site", "NYU"], ["--atlas", bold], [bold]):
        assert main(["predict", model, bold, *extra, "--out", str(tmp_path / "y.json")]) == 2
    assert not (tmp_path / "y.json").exists()


def test_several_runs_are_decoded_in_one_call_scored_each_and_pooled(trained, tmp_path,
                                                                     monkeypatch, capsys):
    model = str(trained["out"] / "model.skops")
    bolds = [str(_bold(trained["held"], r)) for r in HELD_OUT]
    monkeypatch.chdir(tmp_path)
    assert main(["predict", model, *bolds]) == 0
    printed = capsys.readouterr().out
    # one name for the three runs: their common BIDS name without the run
    out = tmp_path / "sub-1_task-objectviewing_bold_prediction.json"
    summary = json.loads(out.read_text())
    assert summary["inputs"] == bolds and summary["n_runs"] == summary["n_scored_runs"] == 3
    bundle = load_category_model(model)
    alone = [predict_run(bundle, b, events=_bold(trained["held"], r).with_name(
        f"sub-1_task-objectviewing_run-{r}_events.tsv"))["summary"]
        for b, r in zip(bolds, HELD_OUT)]
    for run, one in zip(summary["runs"], alone):     # each run as if predicted alone
        assert run["accuracy"] == one["accuracy"]
        assert run["block_accuracy"] == one["block_accuracy"]
        assert len(run["input_sha256"]) == 64
    n = [one["n_labelled_volumes"] for one in alone]
    assert summary["n_labelled_volumes"] == sum(n)
    assert summary["accuracy"] == pytest.approx(
        sum(one["accuracy"] * k for one, k in zip(alone, n)) / sum(n))
    assert summary["n_blocks"] == sum(one["n_blocks"] for one in alone)
    volumes = pd.read_csv(out.with_suffix(".tsv"), sep="\t")
    assert volumes.columns[0] == "run" and len(volumes) == 3 * 121
    assert volumes["run"].unique().tolist() == [_bold(trained["held"], r).name for r in HELD_OUT]
    blocks = pd.read_csv(tmp_path / "sub-1_task-objectviewing_bold_prediction_blocks.tsv",
                         sep="\t")
    assert len(blocks) == summary["n_blocks"] and blocks.columns[0] == "run"
    assert "pooled accuracy on" in printed
    assert printed.count("accuracy ") >= 4            # a line per run, and the pooled one


def test_decoder_predict_reads_a_category_model_once(trained, tmp_path, monkeypatch):
    import decoder.models._skops as skops_files
    real, loads = skops_files.load_trusting, []

    def counted(path, untrusted):
        loads.append(path)
        return real(path, untrusted)

    monkeypatch.setattr(skops_files, "load_trusting", counted)
    model = str(trained["out"] / "model.skops")
    bold = str(_bold(trained["held"], "12"))
    assert main(["predict", model, bold, "--out", str(tmp_path / "p.json")]) == 0
    assert len(loads) == 1 and json.loads((tmp_path / "p.json").read_text())["accuracy"] > 0


def test_events_for_several_runs_are_refused_before_any_is_decoded(trained, tmp_path, capsys):
    model = str(trained["out"] / "model.skops")
    bolds = [str(_bold(trained["held"], r)) for r in ("10", "11")]
    ev = str(_bold(trained["held"], "10")).replace("_bold.nii.gz", "_events.tsv")
    out = tmp_path / "z.json"
    assert main(["predict", model, *bolds, "--events", ev, "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert "--events names one run's events, but 2 runs are given" in err
    assert not out.exists()


def test_a_biomarker_model_is_not_a_category_model_and_refuses_events(tmp_path):
    from pipelines.biomarker import SHIPPED_MODEL
    assert not is_category_model(SHIPPED_MODEL)
    with pytest.raises(DataError, match="not a category model"):
        load_category_model(SHIPPED_MODEL)
    ev = tmp_path / "ev.tsv"
    ev.write_text("onset\tduration\ttrial_type\n0\t1\tface\n")
    from decoder.data.samples import sample_path
    series = next((sample_path().parent / "abide_examples").glob("*.1D"))
    assert main(["predict", str(SHIPPED_MODEL), str(series), "--events", str(ev),
                 "--out", str(tmp_path / "z.json")]) == 2


@pytest.mark.parametrize("overrides, match", [
    ({"save_model": 3}, "true or false"),
])
def test_models_that_cannot_be_saved_stop_before_any_data_are_read(overrides, match):
    from decoder.config import merge_with_defaults
    from pipelines.category import DEFAULTS, check_config
    with pytest.raises(ConfigError, match=match):
        check_config(merge_with_defaults({"save_model": True, **overrides}, DEFAULTS))


def test_dataset_runs_selects_the_runs_a_model_is_trained_on(tmp_path):
    m = run_config({"task": "category", "classes": ["face", "house"], "delay": 0.0,
                    "window": 3, "dataset": {"runs": [1, "02", 3]}}, out=tmp_path / "o")
    assert m["dataset"]["n_runs"] == 3 and len(m["fold_scores"]) == 3
    with pytest.raises(ConfigError, match=r"no run 13 in the dataset \(runs: 01, 02"):
        run_config({"task": "category", "dataset": {"runs": [1, 13]}}, out=tmp_path / "p")
    assert not (tmp_path / "p" / "metrics.json").exists()


@pytest.mark.parametrize("overrides", [
    {"samples": "blocks", "blocks": {"aggregate": "average"}},
    {"model": "svc", "screening_percentile": 20},
    {"model": "torch-linear"},
])
def test_other_saved_models_decode_a_held_out_run(trained, tmp_path, overrides):
    out = tmp_path / "run"
    run_config({"task": "category", "classes": CLASSES, "delay": 0.0, "window": 3,
                "save_model": True, "dataset": {"root": str(trained["data"])}, **overrides},
               out=out)
    bold = _bold(trained["held"], "10")
    res = predict_run(load_category_model(out / "model.skops"), bold,
                      events=bold.with_name(bold.name.replace("_bold.nii.gz", "_events.tsv")))
    assert res["summary"]["block_accuracy"] >= 0.75     # chance 0.25


def test_a_category_model_given_where_a_biomarker_model_is_needed_says_so(trained):
    from pipelines.biomarker import load_model
    with pytest.raises(DataError, match="is a category model, not a biomarker model"):
        load_model(trained["out"] / "model.skops")


def test_a_reader_that_closes_the_output_early_does_not_stop_the_results(trained, tmp_path,
                                                                         monkeypatch):
    """``decoder predict … | head -1``: the pipe breaks at the first lines printed, and the
    prediction is still written."""
    import io
    import sys

    class ClosedPipe(io.StringIO):
        def write(self, text):
            raise BrokenPipeError(32, "Broken pipe")

    monkeypatch.setattr(sys, "stdout", ClosedPipe())
    out = tmp_path / "piped.json"
    assert main(["predict", str(trained["out"] / "model.skops"),
                 str(_bold(trained["held"], "10")), "--out", str(out)]) == 0
    assert json.loads(out.read_text())["n_volumes"] == 121
    assert (tmp_path / "piped.tsv").exists()


def test_the_saved_model_has_a_card_saying_what_it_decodes_and_cannot(trained):
    from decoder.models.model_card import read_model_card
    out = trained["out"]
    card = read_model_card(out / "model.skops")        # checked against the model's SHA-256
    assert card is not None and card["kind"] == "category"
    assert card["model"]["classes"] == CLASSES
    assert card["data"]["runs"] == bundle_runs(trained)          # runs 1-9, not the held-out
    assert len(card["data"]["runs"]) == 9 and card["data"]["subjects"] == ["sub-1"]
    assert card["evaluation"]["accuracy"] == trained["metrics"]["accuracy"]
    assert card["model"]["delay_s"] == trained["metrics"]["saved_model"]["delay_s"]
    bundle = load_category_model(out / "model.skops")
    assert card["data"]["n_voxels"] == int(bundle["mask"].sum())
    md = (out / "model_card.md").read_text()
    assert md.startswith("# Model card — category decoder")
    assert "## Intended use" in md and "not a clinical tool" in md
    assert f"on a {' × '.join(map(str, bundle['mask'].shape))} grid" in md
    assert trained["metrics"]["saved_model"]["card"] == "model_card.md"


def bundle_runs(trained):
    return list(load_category_model(trained["out"] / "model.skops")["trained_on"])


def test_the_card_cites_what_the_dataset_asks(trained):
    card = json.loads((trained["out"] / "model_card.json").read_text())
    assert "Haxby et al. (2001)" in card["citation"] and "Licence: CC-BY-SA-3.0" in card["citation"]


def test_the_card_counts_participants_not_sessions(trained):
    from decoder.models.category_model import category_card
    bundle = load_category_model(trained["out"] / "model.skops")
    bundle["trained_on"] = ["sub-1_ses-1_run-01", "sub-1_ses-2_run-01", "sub-2_ses-1_run-01"]
    card = category_card(bundle, trained["metrics"])
    assert card["data"]["subjects"] == ["sub-1", "sub-2"]
    assert "on 3 run(s) of 2 participant(s)" in " ".join(card["limitations"])


def test_runs_with_and_without_events_are_decoded_and_only_those_with_events_scored(
        trained, tmp_path, capsys):
    quiet = tmp_path / "sub-1_task-objectviewing_run-11_bold.nii.gz"   # no events beside it
    shutil.copy(_bold(trained["held"], "11"), quiet)
    out = tmp_path / "mixed.json"
    assert main(["predict", str(trained["out"] / "model.skops"), str(_bold(trained["held"], "10")),
                 str(quiet), "--out", str(out)]) == 0
    summary = json.loads(out.read_text())
    assert summary["n_runs"] == 2 and summary["n_scored_runs"] == 1
    assert "accuracy" not in summary["runs"][1] and summary["n_volumes"] == 242
    assert summary["accuracy"] == summary["runs"][0]["accuracy"]
    blocks = pd.read_csv(tmp_path / "mixed_blocks.tsv", sep="\t")
    assert set(blocks["run"]) == {_bold(trained["held"], "10").name}
    assert f"{quiet.name}: 121 volumes decoded, no events" in capsys.readouterr().out


def test_the_run_report_shows_the_category_models_card(trained):
    html = (trained["out"] / "report.html").read_text()
    assert 'id="model-card"' in html and "Model card — category decoder" in html


def test_a_bad_run_among_several_stops_them_or_with_skip_bad_is_listed(trained, tmp_path,
                                                                       capsys):
    img = nib.load(_bold(trained["held"], "12"))
    other = tmp_path / "other_bold.nii.gz"                  # another grid
    nib.save(nib.Nifti1Image(np.asarray(img.dataobj)[:30], img.affine, img.header), other)
    model, good = str(trained["out"] / "model.skops"), str(_bold(trained["held"], "10"))
    out = tmp_path / "s.json"
    assert main(["predict", model, good, str(other), "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert "other_bold.nii.gz" in err and "--skip-bad" in err and not out.exists()
    assert main(["predict", model, good, str(other), "--out", str(out), "--skip-bad"]) == 0
    summary = json.loads(out.read_text())
    assert summary["inputs"] == [good] and summary["n_runs"] == 1
    assert summary["n_failed"] == 1 and summary["failed"][0]["input"] == str(other)
    assert "not on the same grid" in summary["failed"][0]["error"]
    assert "other_bold.nii.gz: not decoded — " in capsys.readouterr().out
    capsys.readouterr()
    assert main(["predict", model, str(other), str(other.with_name("x_bold.nii.gz")),
                 "--out", str(tmp_path / "t.json"), "--skip-bad"]) == 2
    err = capsys.readouterr().err.strip()    # one reason, one fix (not the run's twice)
    assert "none of the 2 runs could be decoded (the first: " in err
    assert err.count("fix:") == 1 and err.count("other_bold.nii.gz") == 1


def test_new_runs_get_a_confusion_matrix_and_per_class_scores_each_and_pooled(trained, tmp_path):
    model = str(trained["out"] / "model.skops")
    out = tmp_path / "cm.json"
    assert main(["predict", model, *[str(_bold(trained["held"], r)) for r in HELD_OUT],
                 "--out", str(out)]) == 0
    summary = json.loads(out.read_text())
    for s in (summary, *summary["runs"]):
        cm = np.asarray(s["confusion_matrix"])
        assert cm.shape == (len(CLASSES), len(CLASSES)) and cm.sum() == s["n_labelled_volumes"]
        assert np.trace(cm) / cm.sum() == pytest.approx(s["accuracy"])
        assert {c: v["support"] for c, v in s["per_class"].items()} == dict(
            zip(s["classes"], cm.sum(axis=1).tolist()))
        assert 0.5 < s["roc_auc"] <= 1.0
    pooled = sum(np.asarray(r["confusion_matrix"]) for r in summary["runs"])
    assert pooled.tolist() == summary["confusion_matrix"]


def test_a_run_on_another_grid_of_the_same_space_is_resampled_when_asked(trained, tmp_path,
                                                                        capsys):
    """The run at twice the resolution (same space): refused, naming --resample; with it,
    decoded on the model's grid about as well as the run itself."""
    from nilearn.image import resample_img
    bold = _bold(trained["held"], "10")
    img = nib.load(bold)
    fine_affine = img.affine.copy()
    fine_affine[:3, :3] /= 2
    fine = tmp_path / "sub-1_task-objectviewing_run-10_bold.nii.gz"
    resample_img(img, target_affine=fine_affine, target_shape=(80, 40, 1),
                 interpolation="continuous", force_resample=True, copy_header=True).to_filename(fine)
    shutil.copy(str(bold).replace("_bold.nii.gz", "_events.tsv"), tmp_path)
    model = str(trained["out"] / "model.skops")
    out = tmp_path / "fine.json"
    assert main(["predict", model, str(fine), "--out", str(out)]) == 2
    assert "pass --resample" in capsys.readouterr().err and not out.exists()
    assert main(["predict", model, str(fine), "--out", str(out), "--resample"]) == 0
    summary = json.loads(out.read_text())
    native = predict_run(load_category_model(model), bold, events=str(bold).replace(
        "_bold.nii.gz", "_events.tsv"))["summary"]
    assert summary["resampled_from"]["shape"] == [80, 40, 1]
    # the fine grid holds the run's own voxels: resampled back, it decodes exactly as the run
    # (README: 0.847 both)
    assert summary["accuracy"] == pytest.approx(native["accuracy"]) and summary["accuracy"] > 0.5
    assert any("was resampled" in w for w in summary["warnings"])
    # a biomarker model has no use for it
    from pipelines.biomarker import SHIPPED_MODEL
    assert main(["predict", str(SHIPPED_MODEL), str(fine), "--resample",
                 "--out", str(tmp_path / "b.json")]) == 2
    assert "--resample is for category models" in capsys.readouterr().err


@pytest.fixture(scope="module")
def betas_model(trained, tmp_path_factory):
    """A model of per-block betas (one GLM per run) trained on runs 1-9."""
    out = tmp_path_factory.mktemp("betas_model") / "run"
    metrics = run_config({"task": "category", "classes": CLASSES, "samples": "betas",
                          "save_model": True, "dataset": {"root": str(trained["data"])}},
                         out=out)
    return {"out": out, "metrics": metrics}


def test_a_model_of_betas_is_saved_and_its_card_says_a_new_run_needs_events(betas_model):
    saved = betas_model["metrics"]["saved_model"]
    assert saved["delay_s"] is None and saved["window"] is None
    bundle = load_category_model(betas_model["out"] / "model.skops")
    assert bundle["betas"] == {"method": "lsa", "unit": "block", "hrf_model": "glover"}
    card = (betas_model["out"] / "model_card.md").read_text()
    assert "Betas: nilearn first-level GLM, lsa, one per block" in card
    assert "a new run needs its events" in card and "Labelling delay" not in card


def test_a_new_run_gives_the_betas_the_training_runs_did(trained, betas_model):
    """A training run through the training path (load_task_data, beta_samples) and
    through predict_run gets the same betas, hence the same decisions."""
    from decoder.data.bids import find_runs
    from decoder.evaluation.nested import _scores
    from decoder.features.task import beta_samples, load_task_data
    bundle = load_category_model(betas_model["out"] / "model.skops")
    runs = [r for r in find_runs(trained["data"], "objectviewing") if r.run == "01"]
    mask = nib.Nifti1Image(bundle["mask"], bundle["affine"])
    data = load_task_data(runs, mask, detrend=True, standardize=True)
    Xb, y, _, units = beta_samples(data, bundle["classes"])
    expected = _scores(bundle["estimator"], Xb, len(bundle["classes"]))
    res = predict_run(bundle, runs[0].bold, events=runs[0].events)
    assert res["volumes"] is None and list(res["betas"]["block"]) == list(units)
    assert list(res["betas"]["trial_type"]) == list(y)
    got = res["betas"][[f"score_{c}" for c in bundle["classes"]]].to_numpy()
    np.testing.assert_allclose(got, expected, rtol=1e-4, atol=1e-5)


def test_a_model_of_betas_decodes_held_out_runs_and_needs_their_events(trained, betas_model,
                                                                        tmp_path, capsys):
    model = betas_model["out"] / "model.skops"
    bolds = [str(_bold(trained["held"], r)) for r in HELD_OUT]   # events beside each
    out = tmp_path / "p.json"
    assert main(["predict", str(model), *bolds, "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    summary = json.loads(out.read_text())
    table = pd.read_csv(tmp_path / "p.tsv", sep="\t")
    # 4 known classes, one block each per run
    assert summary["n_betas"] == len(table) == 12 and len(summary["runs"]) == 3
    assert list(table["run"].unique()) == [_bold(trained["held"], r).name for r in HELD_OUT]
    assert summary["accuracy"] == pytest.approx(np.mean(table["predicted"] == table["trial_type"]))
    assert summary["accuracy"] >= 0.5          # chance 0.25
    assert "block betas decoded in 3 runs" in printed and "pooled accuracy on 12 blocks" in printed
    alone = tmp_path / "alone"
    alone.mkdir()
    shutil.copy(bolds[0], alone)
    with pytest.raises(DataError, match="the model decodes betas.*events"):
        predict_run(load_category_model(model), alone / Path(bolds[0]).name)


def test_a_run_with_a_single_block_for_a_model_of_betas_is_refused(trained, betas_model,
                                                                     tmp_path):
    """Betas are z-scored over the run's betas: one beta would be all zeros."""
    bold = _bold(trained["held"], "10")
    ev = pd.read_csv(bold.with_name(bold.name.replace("_bold.nii.gz", "_events.tsv")),
                     sep="\t")
    one = tmp_path / "one_events.tsv"
    ev[ev["trial_type"].isin(["face", "bottle"])].to_csv(one, sep="\t", index=False)
    with pytest.raises(DataError, match="one block of a class the model knows.*at least two"):
        predict_run(load_category_model(betas_model["out"] / "model.skops"), bold, events=one)


def test_predict_finds_the_events_beside_an_fmriprep_named_run(trained, tmp_path):
    """fMRIPrep names the image ``…_space-X_desc-preproc_bold.nii.gz`` while the events
    file keeps the raw name: predict scores the run as training found its events."""
    bold = _bold(trained["held"], "10")
    prep = tmp_path / ("sub-1_task-objectviewing_run-10_space-MNI152NLin2009cAsym_"
                       "desc-preproc_bold.nii.gz")
    shutil.copy(bold, prep)
    shutil.copy(str(bold).replace("_bold.nii.gz", "_events.tsv"), tmp_path)
    out = tmp_path / "prep.json"
    assert main(["predict", str(trained["out"] / "model.skops"), str(prep),
                 "--out", str(out)]) == 0
    summary = json.loads(out.read_text())
    native = predict_run(load_category_model(trained["out"] / "model.skops"), bold,
                         events=str(bold).replace("_bold.nii.gz", "_events.tsv"))["summary"]
    assert summary["accuracy"] == pytest.approx(native["accuracy"])
    assert summary["n_blocks"] == 4


def test_a_damaged_category_model_is_said_to_be_damaged(trained, tmp_path, capsys):
    """A model file whose weights were overwritten (the zip still opens, its types are a
    category model's): before, it was passed on and read as a biomarker model refusing
    'untrusted type DualRidgeClassifier'."""
    import zipfile
    src = trained["out"] / "model.skops"
    damaged = tmp_path / "model.skops"
    with zipfile.ZipFile(src) as zin, zipfile.ZipFile(damaged, "w") as zout:
        largest = max((i for i in zin.infolist() if i.filename.endswith(".npy")),
                      key=lambda i: i.file_size).filename
        for item in zin.infolist():
            data = zin.read(item.filename)
            zout.writestr(item, b"\x00garbage" * 8 if item.filename == largest else data)
    assert main(["predict", str(damaged), str(_bold(trained["held"], "10")),
                 "--out", str(tmp_path / "p.json")]) == 2
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and "a category model whose contents cannot be read" in err
    assert "untrusted type" not in err and not (tmp_path / "p.json").exists()


def test_a_prediction_without_blocks_leaves_no_earlier_blocks_table_under_its_name(
        trained, tmp_path):
    """The same --out used again for a run without events: the summary and volumes are
    replaced, and the earlier run's blocks table must not stay to be read as this one's."""
    model = str(trained["out"] / "model.skops")
    out = tmp_path / "p.json"
    assert main(["predict", model, str(_bold(trained["held"], "10")), "--out", str(out)]) == 0
    blocks = tmp_path / "p_blocks.tsv"
    assert blocks.is_file() and json.loads(out.read_text())["block_table"] == blocks.name
    bare = tmp_path / "bare" / "sub-1_task-objectviewing_run-10_bold.nii.gz"
    bare.parent.mkdir()
    shutil.copy(_bold(trained["held"], "10"), bare)            # no events beside it
    assert main(["predict", model, str(bare), "--out", str(out)]) == 0
    summary = json.loads(out.read_text())
    assert "accuracy" not in summary and "block_table" not in summary
    assert not blocks.exists() and (tmp_path / "p.tsv").is_file()


def test_a_resampled_run_covering_little_of_the_mask_is_refused_and_a_partial_one_noted(
        trained, tmp_path, capsys):
    """Mask voxels outside the run's field of view decode as zeros: under half of the mask
    covered is an error; most of it, a note with the count."""
    img = nib.load(_bold(trained["held"], "10"))
    data = np.asarray(img.dataobj)
    model = str(trained["out"] / "model.skops")
    mask = load_category_model(model)["mask"].astype(bool)
    for keep, name in ((8, "little"), (36, "most")):
        cut = tmp_path / name / "sub-1_task-objectviewing_run-10_bold.nii.gz"
        cut.parent.mkdir()
        nib.save(nib.Nifti1Image(data[:keep], img.affine, img.header), cut)   # same origin
        shutil.copy(str(_bold(trained["held"], "10")).replace("_bold.nii.gz", "_events.tsv"),
                    cut.parent)
        out = tmp_path / f"{name}.json"
        code = main(["predict", model, str(cut), "--out", str(out), "--resample"])
        covered = int(mask[:keep].sum())
        if name == "little":
            assert covered < mask.sum() / 2 and code == 2 and not out.exists()
            err = capsys.readouterr().err.strip()
            assert "\n" not in err and f"only {covered} of the model's {int(mask.sum())}" in err
        else:
            assert covered > mask.sum() / 2 and code == 0
            summary = json.loads(out.read_text())
            assert summary["resampled_from"]["mask_voxels_with_signal"] == [covered,
                                                                           int(mask.sum())]
            assert any(f"{int(mask.sum()) - covered} of the model's" in w
                       for w in summary["warnings"])
