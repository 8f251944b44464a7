"""Classification metrics shared by every pipeline."""

from __future__ import annotations

import math
from statistics import NormalDist

import numpy as np
from sklearn.metrics import (accuracy_score, confusion_matrix,
                             precision_recall_fscore_support, roc_auc_score)


_Z95 = NormalDist().inv_cdf(0.975)


def wilson_interval(successes: float, n: int, z: float = _Z95) -> tuple[float, float] | None:
    """Wilson score interval of a proportion (None when ``n`` is 0).

    For the accuracy of independent subjects (not of autocorrelated volumes): it
    keeps its coverage for small groups and accuracies near 0 or 1, where the
    normal approximation does not.  Written out because it is four lines and
    statsmodels (``proportion_confint(method="wilson")``) would be a dependency
    for nothing else.
    """
    if not n:
        return None
    p = successes / n
    denom = 1 + z * z / n
    centre = (p + z * z / (2 * n)) / denom
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / denom
    return max(0.0, centre - half), min(1.0, centre + half)


def chance_level(y) -> float:
    """Accuracy of always predicting the most frequent class."""
    _, counts = np.unique(np.asarray(y), return_counts=True)
    return float(counts.max() / counts.sum())


def _balanced_accuracy(cm) -> float:
    """Mean recall over the classes present in ``y_true`` (scikit-learn's definition).

    From the confusion matrix, so that a subset with one class (a site, a fold)
    gives its recall without scikit-learn's single-label warning.
    """
    support = cm.sum(axis=1)
    present = support > 0
    return float(np.mean(np.diag(cm)[present] / support[present]))


def classification_metrics(y_true, y_pred, scores=None, classes=None) -> dict:
    """Accuracy, balanced accuracy, ROC AUC, confusion matrix and per-class scores.

    Parameters
    ----------
    y_true, y_pred : array-like of shape (n_samples,)
    scores : ndarray of shape (n_samples, n_classes) or (n_samples,), optional
        Probabilities or decision values, columns ordered as ``classes``.
        For two classes a 1-D array is the score of ``classes[1]``.
        Used for the macro one-vs-rest ROC AUC.
    classes : sequence, optional
        Class order; defaults to the sorted union of labels.
    """
    y_true = np.asarray(y_true)
    y_pred = np.asarray(y_pred)
    if classes is None:
        classes = np.unique(np.concatenate([y_true, y_pred]))
    classes = list(classes)
    cm = confusion_matrix(y_true, y_pred, labels=classes)
    out = {
        "accuracy": float(accuracy_score(y_true, y_pred)),
        "balanced_accuracy": _balanced_accuracy(cm),
        "roc_auc": None,
        "confusion_matrix": cm.tolist(),
    }
    if scores is not None and len(np.unique(y_true)) > 1:
        scores = np.asarray(scores, dtype=float)
        try:
            if len(classes) == 2:
                s = scores if scores.ndim == 1 else scores[:, 1] - scores[:, 0]
                out["roc_auc"] = float(roc_auc_score(y_true == classes[1], s))
            else:
                present = [i for i, c in enumerate(classes) if np.any(y_true == c)]
                aucs = [roc_auc_score(y_true == classes[i], scores[:, i]) for i in present]
                out["roc_auc"] = float(np.mean(aucs))
        except ValueError:
            out["roc_auc"] = None
    p, r, f, s = precision_recall_fscore_support(y_true, y_pred, labels=classes,
                                                 zero_division=0)
    out["per_class"] = {str(c): {"precision": float(p[i]), "recall": float(r[i]),
                                 "f1": float(f[i]), "support": int(s[i])}
                        for i, c in enumerate(classes)}
    return out
