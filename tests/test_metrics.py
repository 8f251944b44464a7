"""Shared classification metrics agree with scikit-learn's definitions."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
from sklearn.metrics import balanced_accuracy_score

from decoder.evaluation.metrics import classification_metrics


@pytest.mark.parametrize("seed", range(5))
def test_balanced_accuracy_matches_scikit_learn(seed):
    rng = np.random.default_rng(seed)
    classes = ["a", "b", "c"]
    y_true = rng.choice(classes, size=40)
    y_pred = np.where(rng.random(40) < 0.6, y_true, rng.choice(classes, size=40))
    m = classification_metrics(y_true, y_pred, classes=classes)
    assert m["balanced_accuracy"] == pytest.approx(balanced_accuracy_score(y_true, y_pred))


def test_a_single_class_subset_gives_its_recall_without_warnings():
    y_true = np.array(["autism"] * 4)
    y_pred = np.array(["autism", "autism", "autism", "control"])
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        m = classification_metrics(y_true, y_pred, classes=["control", "autism"])
    assert m["balanced_accuracy"] == pytest.approx(0.75)
    assert m["roc_auc"] is None
    assert m["confusion_matrix"] == [[0, 0], [1, 3]]


# ------------------------------------------------------------ intervals over sites
def _sites_with_accuracies(site_accuracies, per_site, seed=0):
    """Subjects of sites whose predictions are right with each site's own probability."""
    rng = np.random.default_rng(seed)
    sites = np.repeat(np.arange(len(site_accuracies)), per_site)
    y = rng.random(len(sites)) < 0.5
    right = rng.random(len(sites)) < np.repeat(site_accuracies, per_site)
    margin = rng.uniform(0.05, 0.45, len(sites))
    score = np.where(right == y, 0.5 + margin, 0.5 - margin)  # > 0.5 ↔ predicted positive
    return y, score, sites


def test_one_subject_per_site_gives_the_subject_level_interval():
    from decoder.evaluation.metrics import cluster_bootstrap_interval, wilson_interval
    y, score, _ = _sites_with_accuracies([0.7], 400)
    boot = cluster_bootstrap_interval(y, score, np.arange(len(y)))
    wilson = wilson_interval(int(np.sum((score > 0.5) == y)), len(y))
    assert boot["n_clusters"] == 400
    assert np.diff(boot["accuracy_ci95"])[0] == pytest.approx(np.diff(wilson)[0], rel=0.15)
    assert boot["accuracy_ci95"][0] < np.mean((score > 0.5) == y) < boot["accuracy_ci95"][1]


def test_sites_that_differ_widen_the_interval_beyond_the_subject_count():
    from decoder.evaluation.metrics import cluster_bootstrap_interval, wilson_interval
    y, score, sites = _sites_with_accuracies([0.95, 0.45] * 6, 40)
    boot = cluster_bootstrap_interval(y, score, sites)
    wilson = wilson_interval(int(np.sum((score > 0.5) == y)), len(y))
    assert np.diff(boot["accuracy_ci95"])[0] > 1.5 * np.diff(wilson)[0]
    assert boot["n_clusters"] == 12 and boot["method"] == "BCa"


def test_the_auc_of_each_resample_is_scikit_learns():
    from scipy.stats import bootstrap
    from sklearn.metrics import roc_auc_score
    from decoder.evaluation.metrics import cluster_bootstrap_interval
    y, score, sites = _sites_with_accuracies([0.8, 0.6, 0.7, 0.75, 0.65, 0.7], 15, seed=3)
    score = np.round(score, 1)  # ties count half in both
    members = [np.flatnonzero(sites == s) for s in range(6)]

    def pooled(units):
        i = np.concatenate([members[int(u)] for u in units])
        return np.array([np.mean((score[i] > 0.5) == y[i]), roc_auc_score(y[i], score[i])])

    ref = bootstrap((np.arange(6.0),), pooled, vectorized=False, n_resamples=300,
                    method="BCa", random_state=1).confidence_interval
    ours = cluster_bootstrap_interval(y, score, sites, n_resamples=300, random_state=1)
    assert ours["accuracy_ci95"] == pytest.approx([ref.low[0], ref.high[0]])
    assert ours["roc_auc_ci95"] == pytest.approx([ref.low[1], ref.high[1]])


def test_too_few_sites_give_no_interval_and_a_seed_gives_the_same_one():
    from decoder.evaluation.metrics import cluster_bootstrap_interval
    y, score, sites = _sites_with_accuracies([0.8, 0.6, 0.7, 0.75], 20)
    assert cluster_bootstrap_interval(y, score, sites) is None
    y, score, sites = _sites_with_accuracies([0.8, 0.6, 0.7, 0.75, 0.7], 20)
    a = cluster_bootstrap_interval(y, score, sites, random_state=4)
    assert a == cluster_bootstrap_interval(y, score, sites, random_state=4)
    assert a != cluster_bootstrap_interval(y, score, sites, random_state=5)
