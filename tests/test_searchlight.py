"""Searchlight: the same spheres and accuracies as nilearn, on the same folds, with
family-wise error control, inside the category pipeline."""

import json
import subprocess
import sys
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
from sklearn.linear_model import RidgeClassifier

from decoder.errors import ConfigError
from decoder.evaluation.nested import SampleSet
from decoder.evaluation.searchlight import (
    SearchlightPart,
    nested_searchlight,
    ridge_searchlight,
    sphere_neighbours,
)
from pipelines import run_config

ROOT = Path(__file__).resolve().parents[1]


def _mask(shape=(7, 6, 3), zooms=(3.0, 3.0, 3.5)):
    data = np.zeros(shape, dtype=np.int8)
    data[1:-1, 1:-1, :] = 1
    data[1, 1, 0] = 0        # an irregular edge: spheres of several sizes
    return nib.Nifti1Image(data, np.diag(list(zooms) + [1.0]))


def _data(n_runs=4, per_class=6, n_classes=3, n_voxels=None, signal=None, seed=0):
    """Samples in runs; ``signal``: the voxel indices whose means depend on the class."""
    rng = np.random.default_rng(seed)
    codes = np.tile(np.repeat(np.arange(n_classes), per_class), n_runs)
    runs = np.repeat(np.arange(n_runs), n_classes * per_class)
    X = rng.standard_normal((len(codes), n_voxels))
    if signal is not None:
        centres = rng.standard_normal((n_classes, len(signal))) * 1.5
        X[:, signal] += centres[codes]
    return X, codes, runs


def _reference(X, codes, runs, neighbours, alpha, units=None):
    """Per sphere and held-out run: scikit-learn's RidgeClassifier on the training runs."""
    acc = np.zeros(neighbours.shape[0])
    total = 0
    for r in np.unique(runs):
        tr, te = runs != r, runs == r
        labels = codes[te]
        for i in range(neighbours.shape[0]):
            cols = neighbours[i].indices
            clf = RidgeClassifier(alpha=alpha).fit(X[tr][:, cols], codes[tr])
            d = clf.decision_function(X[te][:, cols])
            d = np.column_stack([-d, d]) if d.ndim == 1 else d
            if units is not None:
                ids, first, inv = np.unique(units[te], return_index=True, return_inverse=True)
                agg = np.zeros((len(ids), d.shape[1]))
                np.add.at(agg, inv, d)
                d, labels = agg, codes[te][first]
            acc[i] += (clf.classes_[d.argmax(1)] == labels).sum()
        total += len(labels)
    return acc / total


def test_spheres_are_nilearns_spheres(sample_copy):
    from nilearn.image import coord_transform
    from nilearn.maskers.nifti_spheres_masker import apply_mask_and_get_affinity
    from nilearn.masking import load_mask_img

    mask_img = nib.load(next(sample_copy.glob("derivatives/masks/**/*_mask.nii.gz")))
    mask, affine = load_mask_img(mask_img)
    seeds = np.column_stack(coord_transform(*np.nonzero(mask), affine))
    for radius in (0.0, 6.0, 10.0):
        ours = sphere_neighbours(mask_img, radius)
        _, theirs = apply_mask_and_get_affinity(seeds, None, radius, True, mask_img=mask_img)
        assert ours.shape == (mask.sum(), mask.sum())
        assert (ours != theirs.tocsr().astype(bool)).nnz == 0, radius
    sizes = np.diff(sphere_neighbours(mask_img, 6.0).indptr)
    assert sizes.max() == 9 and sizes.min() < 9   # a slice: a disc, cut at the mask's edge


@pytest.mark.parametrize("n_classes", [2, 3])
def test_accuracy_equals_a_ridge_classifier_per_sphere_and_fold(n_classes):
    mask = _mask()
    A = sphere_neighbours(mask, 4.0)
    X, codes, runs = _data(n_classes=n_classes, n_voxels=A.shape[1], signal=[3, 4, 5])
    res = ridge_searchlight([SearchlightPart(X, codes[:, None], runs, tuple(range(4)))],
                            A, n_classes, alpha=2.0)
    assert len(set(np.diff(A.indptr))) > 1          # spheres of several sizes (padding)
    np.testing.assert_allclose(res.accuracy, _reference(X, codes, runs, A, 2.0), atol=1e-12)
    assert res.fold_accuracy.shape == (A.shape[0], 4)
    np.testing.assert_allclose(res.fold_accuracy.mean(1), res.accuracy)   # equal-size runs


def test_blocks_are_scored_by_their_mean_decision():
    A = sphere_neighbours(_mask(), 4.0)
    X, codes, runs = _data(n_voxels=A.shape[1], signal=[3, 4, 5], seed=1)
    units = np.arange(len(codes)) // 3                  # blocks of three samples
    res = ridge_searchlight([SearchlightPart(X, codes[:, None], runs, tuple(range(4)),
                                             units=units)], A, 3, alpha=1.0)
    np.testing.assert_allclose(res.accuracy, _reference(X, codes, runs, A, 1.0, units=units),
                               atol=1e-12)


def test_small_chunks_give_the_same_maps_and_null():
    from decoder.evaluation.nested import permuted_unit_codes
    A = sphere_neighbours(_mask(), 4.0)
    X, codes, runs = _data(n_voxels=A.shape[1], signal=[3, 4, 5])
    units = np.arange(len(codes))
    _, perm = permuted_unit_codes(dict(zip(units, codes)), dict(zip(units, runs)), 9,
                                  np.random.default_rng(0))
    part = [SearchlightPart(X, perm, runs, tuple(range(4)))]
    whole = ridge_searchlight(part, A, 3)
    chunked = ridge_searchlight(part, A, 3, chunk_bytes=1)   # one sphere, one label set
    np.testing.assert_array_equal(whole.accuracy, chunked.accuracy)
    np.testing.assert_array_equal(whole.fold_accuracy, chunked.fold_accuracy)
    np.testing.assert_array_equal(whole.null_max, chunked.null_max)
    np.testing.assert_allclose(whole.null_mean, chunked.null_mean, atol=1e-15)


@pytest.mark.filterwarnings("ignore:Use a custom estimator")
def test_matches_nilearn_searchlight_on_the_real_slice(sample_copy):
    from nilearn.decoding import SearchLight
    from sklearn.model_selection import LeaveOneGroupOut

    from decoder.data.bids import find_mask, find_runs, load_mask
    from decoder.features.task import load_task_data, select_classes, volume_samples

    runs = find_runs(sample_copy, "objectviewing")
    mask_path = find_mask(sample_copy, runs[0].subject, "auto")
    td = load_task_data(runs, load_mask(mask_path), mask_path)
    classes = ["face", "house", "cat"]
    assert set(classes) <= set(select_classes(td.blocks, "all"))
    X, y, run, _, _ = volume_samples(td, classes, 5.0)
    codes = np.array([classes.index(v) for v in y])
    A = sphere_neighbours(td.mask_img, 6.0)
    ours = ridge_searchlight([SearchlightPart(X, codes[:, None], run, tuple(np.unique(run)))],
                             A, 3, alpha=1.0)
    sl = SearchLight(td.mask_img, radius=6.0, estimator=RidgeClassifier(alpha=1.0),
                     cv=LeaveOneGroupOut(), n_jobs=1)
    sl.fit(td.masker.inverse_transform(X), y, groups=run)
    theirs = sl.scores_[np.asarray(td.mask_img.dataobj).astype(bool)]
    np.testing.assert_allclose(ours.fold_accuracy.mean(1), theirs, atol=1e-12)
    assert ours.accuracy.max() > 0.6          # face/house/cat are decodable in this slice


def test_fwe_p_values_find_the_planted_region_and_nothing_else():
    A = sphere_neighbours(_mask(), 4.0)
    signal = [0, 1, 2]
    X, codes, runs = _data(n_runs=6, per_class=4, n_voxels=A.shape[1], signal=signal, seed=3)
    units = np.arange(len(codes))
    rng = np.random.default_rng(0)
    from decoder.evaluation.nested import permuted_unit_codes
    _, perm = permuted_unit_codes(dict(zip(units, codes)), dict(zip(units, runs)), 99, rng)
    res = ridge_searchlight([SearchlightPart(X, perm, runs, tuple(range(6)))], A, 3)
    p = res.p_fwe()
    touches = np.array([bool(set(A[i].indices) & set(signal)) for i in range(A.shape[0])])
    assert p.min() == pytest.approx(0.01)                     # 1 / (99 + 1)
    assert (p[touches] <= 0.05).any()
    assert (p[~touches] > 0.05).all()
    assert abs(res.null_mean.mean() - 1 / 3) < 0.03            # the null sits at chance
    assert res.null_max.shape == (99,) and (res.null_max >= res.null_mean.max() - 1e-12).all()


def test_without_signal_no_sphere_is_significant():
    A = sphere_neighbours(_mask(), 4.0)
    X, codes, runs = _data(n_runs=6, per_class=4, n_voxels=A.shape[1], seed=5)
    units = np.arange(len(codes))
    from decoder.evaluation.nested import permuted_unit_codes
    _, perm = permuted_unit_codes(dict(zip(units, codes)), dict(zip(units, runs)), 99,
                                  np.random.default_rng(1))
    res = ridge_searchlight([SearchlightPart(X, perm, runs, tuple(range(6)))], A, 3)
    assert (res.p_fwe() > 0.05).all()
    assert abs(res.accuracy.mean() - 1 / 3) < 0.05


def test_each_fold_uses_the_samples_chosen_for_it():
    A = sphere_neighbours(_mask(), 4.0)
    X1, codes, runs = _data(n_voxels=A.shape[1], signal=[3, 4], seed=0)
    X2 = X1 + np.random.default_rng(9).standard_normal(X1.shape)    # another candidate
    units = np.arange(len(codes))
    cands = [SampleSet(X=X, unit=units, run=runs, group=runs, name=name)
             for X, name in ((X1, "a"), (X2, "b"))]
    chosen, tested = ["b", "a", "b", "a"], [0, 1, 2, 3]
    res = nested_searchlight(cands, chosen, tested, dict(zip(units, codes)),
                             dict(zip(units, runs)), 3, A)
    single = {name: ridge_searchlight([SearchlightPart(X, codes[:, None], runs,
                                                       tuple(range(4)))], A, 3)
              for X, name in ((X1, "a"), (X2, "b"))}
    assert res.fold_groups == tested
    for k, (name, g) in enumerate(zip(chosen, tested)):
        np.testing.assert_array_equal(res.fold_accuracy[:, k], single[name].fold_accuracy[:, g])


@pytest.mark.parametrize("setting, value", [("radius", -1), ("radius", "wide"),
                                            ("alpha", 0), ("n_permutations", -5),
                                            ("n_permutations", 1.5)])
def test_bad_settings_are_named_before_any_data_are_read(setting, value):
    with pytest.raises(ConfigError, match=f"searchlight.{setting}"):
        run_config({"task": "category", "searchlight": {setting: value}},
                   data="/nonexistent/folder")


def test_category_run_writes_the_maps_and_the_report_shows_them(tmp_path):
    out = tmp_path / "run"
    proc = subprocess.run(
        [sys.executable, "-m", "decoder.cli", "run", "configs/haxby.yaml", "--out", str(out),
         "--set", "classes=face,house,cat,shoe", "--set", "searchlight.radius=6",
         "--set", "searchlight.n_permutations=19"],
        capture_output=True, text=True, check=False, cwd=str(ROOT))
    assert proc.returncode == 0, proc.stderr
    assert "searchlight (6 mm, 530 spheres): peak accuracy" in proc.stdout
    m = json.loads((out / "metrics.json").read_text())
    sl = m["searchlight"]
    acc = np.asarray(nib.load(out / "searchlight_accuracy.nii.gz").dataobj)
    p = nib.load(out / "searchlight_p_fwe.nii.gz").get_fdata()      # as a user reads it
    mask = acc != 0
    assert mask.sum() == sl["n_spheres"] == m["dataset"]["n_voxels"]
    assert acc.max() == pytest.approx(sl["peak_accuracy"], abs=1e-6)
    assert sl["peak_accuracy"] > 0.5 > sl["chance"]
    assert sl["n_significant_fwe"] == int((p[mask] <= 0.05).sum()) > 0
    assert p[mask].min() == pytest.approx(0.05)                 # 1 / (19 + 1)
    assert "searchlight_accuracy.nii.gz" in m["files"]
    html = (out / "report.html").read_text()
    assert 'id="searchlight"' in html and "searchlight accuracy map" in html
    from decoder.report import load_run, searchlight_view
    view = searchlight_view(load_run(out))
    assert view["figure"].axes[0].collections        # the significant spheres outlined
    # a map replaced by one of another shape is named, not a traceback
    nib.save(nib.Nifti1Image(np.ones((3, 3, 3)), np.eye(4)), out / "searchlight_p_fwe.nii.gz")
    proc = subprocess.run([sys.executable, "-m", "decoder.cli", "report", str(out)],
                          capture_output=True, text=True, check=False, cwd=str(ROOT))
    assert proc.returncode == 2
    assert "searchlight_p_fwe.nii.gz: shape (3, 3, 3), not the accuracy map's" in proc.stderr
    # a later run without a searchlight leaves no stale map behind
    run_config({"task": "category", "classes": ["face", "house"], "delay": 0.0, "window": 1},
               out=out)
    assert not (out / "searchlight_accuracy.nii.gz").exists()
    assert json.loads((out / "metrics.json").read_text())["searchlight"] is None
