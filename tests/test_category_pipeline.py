"""Category decoding end to end on the real embedded Haxby sample."""

import json

import nibabel as nib
import numpy as np
import pandas as pd
import pytest

from pipelines import run_config

FAST = {"delay": 0.0, "window": 3}  # one candidate: keeps the tests quick


def _run(tmp_path, **overrides):
    raw = {"task": "category", **FAST, **overrides}
    out = tmp_path / "out"
    return run_config(raw, out=out), out


def test_face_vs_house_is_decoded_and_the_run_directory_is_complete(tmp_path):
    m, out = _run(tmp_path, classes=["face", "house"])
    assert m["accuracy"] >= 0.9
    assert m["classes"] == ["face", "house"] and m["n_classes"] == 2
    assert m["chance"] == pytest.approx(0.5, abs=0.05)
    saved = json.loads((out / "metrics.json").read_text())
    for key in ("task", "dataset", "cv", "n_samples", "n_classes", "classes", "accuracy",
                "balanced_accuracy", "roc_auc", "chance", "fold_scores", "permutation_p",
                "runtime_s", "provenance", "confusion_matrix"):
        assert key in saved, key
    assert saved["permutation_p"] is None
    assert len(saved["fold_scores"]) == 12
    prov = saved["provenance"]
    assert prov["config_sha256"] and prov["version"]
    assert all(len(rec["sha256"]) == 64 for rec in prov["inputs"])
    assert any(rec["path"].endswith("_bold.nii.gz") for rec in prov["inputs"])
    w = nib.load(out / "weights.nii.gz")
    assert w.shape[:3] == (40, 20, 1) and w.shape[3] == 2
    assert np.abs(np.asarray(w.dataobj)).sum() > 0
    cm = pd.read_csv(out / "confusion_matrix.tsv", sep="\t", index_col=0)
    assert cm.to_numpy().sum() == saved["n_samples"]


def test_blocks_are_scored_once_each(tmp_path):
    m, _ = _run(tmp_path, classes=["face", "house", "cat"], samples="blocks")
    assert m["n_samples"] == 12 * 3
    assert m["accuracy"] > 0.8


def test_permutation_test_gives_a_small_p_for_real_signal(tmp_path):
    # four blocks per run: 24 orders per run, so permutations within runs are rich
    m, out = _run(tmp_path, classes=["face", "house", "cat", "shoe"], n_permutations=99)
    assert m["permutation_p"] == pytest.approx(0.01)
    null = np.load(out / "arrays.npz")["permutation_null"]
    assert len(null) == 99
    assert abs(null.mean() - 0.25) < 0.06  # the null is centred on chance


def test_permutations_respect_the_block_structure(tmp_path):
    # two blocks per run: only 2**12 relabellings exist, near-identity ones included,
    # so the null has a heavy upper tail and p cannot be tiny with few permutations
    m, out = _run(tmp_path, classes=["face", "house"], n_permutations=99)
    null = np.load(out / "arrays.npz")["permutation_null"]
    assert 0.01 <= m["permutation_p"] <= 0.1
    assert null.min() < 0.5 < m["accuracy"]


def test_shuffled_labels_give_chance_accuracy(sample_copy, tmp_path):
    rng = np.random.default_rng(0)
    for ev_path in sorted((sample_copy / "sub-1" / "func").glob("*_events.tsv")):
        ev = pd.read_csv(ev_path, sep="\t")
        blocks = (ev.trial_type != ev.trial_type.shift()).cumsum()
        types = ev.groupby(blocks).trial_type.first().to_numpy()
        shuffled = dict(zip(np.unique(blocks), rng.permutation(types)))
        ev["trial_type"] = blocks.map(shuffled)
        ev.to_csv(ev_path, sep="\t", index=False)
    raw = {"task": "category", **FAST, "classes": ["face", "house", "cat", "shoe"],
           "samples": "blocks"}
    m = run_config(raw, data=sample_copy, out=tmp_path / "shuffled")
    # 48 blocks, chance 0.25: real labels give > 0.8 on these classes
    assert m["accuracy"] < 0.5


def test_betas_samples_from_the_first_level_glm(tmp_path):
    m, _ = _run(tmp_path, classes=["face", "house"], samples="betas")
    assert m["n_samples"] == 24
    assert m["accuracy"] >= 0.9


def test_lsa_betas_of_closely_spaced_trials_are_said_to_be_mostly_noise(tmp_path, caplog):
    # Haxby's events are 0.5 s stimuli every 2 s (TR 2.5 s): one regressor per trial in a
    # single GLM cannot be told apart from its neighbours, one per 24 s block can
    caplog.set_level("WARNING", logger="decoder.features.task")
    m, _ = _run(tmp_path / "block", classes=["face", "house"], samples="betas")
    assert "nearly collinear" not in caplog.text and m["warnings"] == []
    m, out = _run(tmp_path / "trial", classes=["face", "house"], samples="betas",
                  betas={"method": "lsa", "unit": "trial"})
    warned = [r.getMessage() for r in caplog.records if "nearly collinear" in r.getMessage()]
    assert len(warned) == 1   # once per run of the pipeline, not once per GLM
    assert "betas.method: lss or betas.unit: block" in warned[0] and "sub-1_run-" in warned[0]
    # kept with the results, not only on the terminal
    assert json.loads((out / "metrics.json").read_text())["warnings"] == warned
    report = (out / "report.html").read_text()
    assert "Warnings during the run" in report and "nearly collinear" in report


def test_variance_inflation_is_one_for_independent_regressors_and_large_for_collinear():
    from decoder.features.task import variance_inflation
    rng = np.random.default_rng(0)
    a, b = rng.standard_normal((2, 500))
    design = pd.DataFrame({"a": a, "b": b, "near_a": a + 0.05 * rng.standard_normal(500),
                           "constant": 1.0})
    vif = variance_inflation(design, ["a", "b", "near_a"])
    assert vif[1] == pytest.approx(1.0, abs=0.05)
    assert vif[0] > 100 and vif[2] > 100


@pytest.mark.parametrize("model", ["svc", "lda", "torch-linear"])
def test_other_models_run_through_the_same_pipeline(tmp_path, model):
    m, _ = _run(tmp_path, classes=["face", "house"], model=model, samples="blocks")
    assert m["accuracy"] >= 0.85
    assert m["model"] == model


def test_real_data_copy_gives_the_same_result_as_the_embedded_sample(shared, tmp_path):
    raw = {"task": "category", **FAST, "classes": ["face", "house"]}
    a = run_config(raw, data=shared / "haxby2001_sub1_slice", out=tmp_path / "a")
    b = run_config(raw, out=tmp_path / "b")
    assert a["accuracy"] == b["accuracy"] >= 0.9
    assert [r["sha256"] for r in a["provenance"]["inputs"]] == \
        [r["sha256"] for r in b["provenance"]["inputs"]]


def test_relative_data_path_is_read_from_the_working_directory(sample_copy, tmp_path,
                                                                monkeypatch):
    monkeypatch.chdir(sample_copy.parent)
    raw = {"task": "category", **FAST, "classes": ["face", "house"], "samples": "blocks"}
    m = run_config(raw, data=sample_copy.name, out=tmp_path / "out")
    assert m["n_samples"] == 24 and m["accuracy"] >= 0.9
