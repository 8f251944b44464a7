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
