"""The connectome classifier's edge reliability: what it estimates and when it is applied."""

from __future__ import annotations

import numpy as np
import pytest

from decoder.errors import ConfigError, DataError
from decoder.features.connectome import split_half_covariances, subject_covariances
from decoder.models.biomarker_models import (ConnectomeClassifier, edge_pattern_table,
                                            edge_patterns, split_half_reliability)


def test_reliability_is_one_for_stable_features_and_zero_for_pure_noise():
    rng = np.random.default_rng(0)
    n = 4000
    true = rng.normal(size=(n, 1))
    noise_sd = np.array([0.0, 1.0])  # feature 0 noise-free, feature 1 as noisy as its signal
    h1 = true + rng.normal(size=(n, 2)) * noise_sd
    h2 = true + rng.normal(size=(n, 2)) * noise_sd
    full = (h1 + h2) / 2
    pure_noise = rng.normal(size=(n, 2))
    h1 = np.column_stack([h1, pure_noise[:, 0]])
    h2 = np.column_stack([h2, pure_noise[:, 1]])
    full = np.column_stack([full, (pure_noise[:, 0] + pure_noise[:, 1]) / 2])
    r = split_half_reliability(full, h1, h2)
    assert r[0] == pytest.approx(1.0)
    # signal variance 1, noise of the full-scan mean 1/2: reliability 1 / 1.5
    assert r[1] == pytest.approx(1 / 1.5, abs=0.03)
    assert r[2] == pytest.approx(0.0, abs=0.05)
    assert ((r >= 0) & (r <= 1)).all()


def test_rows_without_halves_are_ignored_and_too_few_rows_is_an_error():
    rng = np.random.default_rng(1)
    full, h1, h2 = (rng.normal(size=(10, 3)) for _ in range(3))
    h1[:8] = np.nan
    split_half_reliability(full, h1, h2)  # two usable rows are enough
    h1[8] = np.nan
    with pytest.raises(DataError, match="reliability: none"):
        split_half_reliability(full, h1, h2)


def test_split_half_covariances_are_the_covariances_of_each_half():
    rng = np.random.default_rng(2)
    series = [rng.normal(size=(41, 5)), rng.normal(size=(5, 5)), rng.normal(size=(60, 5))]
    halves = split_half_covariances(series)
    assert halves.shape == (3, 2, 5, 5)
    first = subject_covariances([series[0][:20], series[0][20:]])
    np.testing.assert_allclose(halves[0], first)
    assert np.isnan(halves[1]).all()  # 5 time points cannot be split
    assert np.isfinite(halves[2]).all()


def _coupled_series(rng, n_subjects=40, n_time=240):
    """Edge (0, 1) keeps each subject's coupling across halves; edge (2, 3) does not."""
    series, labels = [], []
    for s in range(n_subjects):
        stable = rng.uniform(-0.8, 0.8)
        ts = rng.normal(size=(n_time, 4))
        ts[:, 1] = stable * ts[:, 0] + np.sqrt(1 - stable ** 2) * ts[:, 1]
        for half in (slice(0, n_time // 2), slice(n_time // 2, n_time)):
            flip = rng.uniform(-0.8, 0.8)
            ts[half, 3] = flip * ts[half, 2] + np.sqrt(1 - flip ** 2) * ts[half, 3]
        series.append(ts)
        labels.append("autism" if stable > 0 else "control")
    return series, np.array(labels)


def test_classifier_damps_the_edge_that_changes_within_a_scan():
    series, y = _coupled_series(np.random.default_rng(3))
    clf = ConnectomeClassifier(kinds=("correlation",)).fit(series, y)
    w = clf.reliability_["correlation"]
    # upper triangle without diagonal: (0,1) (0,2) (0,3) (1,2) (1,3) (2,3)
    assert w[0] > 0.8
    assert w[5] < 0.5
    assert clf.predict(series[:5]).shape == (5,)


def test_covariances_without_halves_need_them_or_reliability_none():
    series, y = _coupled_series(np.random.default_rng(4), n_subjects=20)
    covs = subject_covariances(series)
    with pytest.raises(DataError, match="split-half"):
        ConnectomeClassifier().fit(covs, y)
    halves = split_half_covariances(series)
    with_halves = ConnectomeClassifier().fit(covs, y, halves=halves)
    from_series = ConnectomeClassifier().fit(series, y)
    for kind, w in from_series.reliability_.items():
        np.testing.assert_allclose(with_halves.reliability_[kind], w)
    plain = ConnectomeClassifier(reliability="none").fit(covs, y)
    assert plain.reliability_ == {}
    with pytest.raises(DataError, match="halves has shape"):
        ConnectomeClassifier().fit(covs, y, halves=halves[:5])
    with pytest.raises(ConfigError, match="reliability"):
        ConnectomeClassifier(reliability="bootstrap").fit(series, y)


def test_edge_patterns_are_feature_decision_correlations():
    rng = np.random.default_rng(5)
    X = rng.normal(size=(50, 4))
    X[:, 3] = 1.0                                   # constant feature: no pattern
    d = X[:, 0] - 0.5 * X[:, 1] + 0.1 * rng.normal(size=50)
    p = edge_patterns({"k": X}, d)["k"]
    for j in range(3):
        assert p[j] == pytest.approx(np.corrcoef(X[:, j], d)[0, 1], abs=1e-6)
    assert p[3] == 0.0 and p[0] > 0.8 and p[1] < -0.3


def test_classifier_pattern_points_at_the_coupling_that_differs():
    series, y = _coupled_series(np.random.default_rng(6), n_subjects=60)
    clf = ConnectomeClassifier().fit(series, y)
    assert set(clf.edge_patterns_) == {"tangent", "correlation"}
    p = clf.edge_patterns_["correlation"]
    # edge (0, 1) is higher in autism; positive patterns point towards classes_[1]
    toward = 1.0 if clf.classes_[1] == "autism" else -1.0
    assert np.argmax(np.abs(p)) == 0 and toward * p[0] > 0.8


def test_edge_pattern_table_summarises_folds():
    folds = [{"correlation": np.array([0.5, -0.1, 0.02]), "tangent": np.zeros(3)},
             {"correlation": np.array([0.7, -0.3, -0.04]), "tangent": np.zeros(3)}]
    t = edge_pattern_table(folds, ["A", "B", "C"], classes=("control", "autism"))
    assert list(t["region_a"] + t["region_b"]) == ["AB", "AC", "BC"]   # by |mean|
    assert t["pattern"].tolist() == pytest.approx([0.6, -0.2, -0.01])
    assert t["sign_consistency"].tolist() == [1.0, 1.0, 0.5]
    assert t["higher_in"].tolist() == ["autism", "control", "control"]
    assert (edge_pattern_table(folds, ["A", "B", "C"], kind="tangent")["kind"] == "tangent").all()
    named = edge_pattern_table(folds, ["A", "B", "C"], names=["alpha", "beta", "gamma"])
    assert list(named["name_a"] + named["name_b"]) == ["alphabeta", "alphagamma", "betagamma"]
    assert list(named["region_a"]) == ["A", "A", "B"]
    with pytest.raises(ValueError, match="3 edges for 4 regions"):
        edge_pattern_table(folds, ["A", "B", "C", "D"])


def test_a_combat_classifier_composes_with_scikit_learns_cross_validate():
    """With metadata routing the training sites and covariates reach ``fit``; scikit-learn's
    scorers pass nothing to ``predict_proba``, so held-out subjects get no site adjustment,
    as a site the model never saw — and the scores are those of fitting by hand."""
    import pandas as pd
    import sklearn
    from sklearn.base import clone
    from sklearn.metrics import roc_auc_score
    from sklearn.model_selection import GroupKFold, cross_validate
    rng = np.random.default_rng(0)
    n = 60
    series = np.empty(n, dtype=object)
    series[:] = [rng.standard_normal((80, 6)) for _ in range(n)]
    y = np.array(["autism", "control"] * (n // 2))
    sites = np.repeat(["A", "B", "C"], n // 3)
    cov = pd.DataFrame({"age": rng.uniform(8, 30, n), "sex": rng.integers(1, 3, n) * 1.0})
    with sklearn.config_context(enable_metadata_routing=True):
        est = ConnectomeClassifier(reliability="none", harmonize="combat").set_fit_request(
            sites=True, covariates=True)
        got = cross_validate(est, series, y, cv=GroupKFold(3), scoring="roc_auc",
                             params={"sites": sites, "covariates": cov, "groups": sites},
                             return_estimator=True)
    for (tr, te), fitted, score in zip(GroupKFold(3).split(series, y, sites),
                                       got["estimator"], got["test_score"]):
        by_hand = clone(est).fit(series[tr], y[tr], sites=sites[tr], covariates=cov.iloc[tr])
        d = by_hand.decision_function(series[te])      # what the roc_auc scorer uses
        assert score == pytest.approx(roc_auc_score(y[te] == by_hand.classes_[1], d))
        # decisions are the probabilities' log-odds: same ranking, and their sign is the call
        np.testing.assert_allclose(1 / (1 + np.exp(-d)), by_hand.predict_proba(series[te])[:, 1])
        assert ((d > 0) == (by_hand.predict(series[te]) == by_hand.classes_[1])).all()
