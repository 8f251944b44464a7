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


def cluster_bootstrap_interval(y_true, score, clusters, threshold: float = 0.5,
                               n_resamples: int = 2000, random_state=0,
                               min_clusters: int = 5) -> dict | None:
    """95 % intervals of the pooled accuracy and ROC AUC that resample whole clusters.

    Subjects scanned at one site share a scanner, a protocol and (under
    leave-site-out) one fitted model, so they are not independent: the Wilson
    and DeLong intervals, which count subjects, are too narrow for a new site.
    Here the sites are the units: each resample draws sites with replacement and
    pools their subjects (Field & Welsh 2007, cluster bootstrap), with scipy's
    bias-corrected and accelerated (BCa) interval, whose jackknife is over sites.

    Parameters
    ----------
    y_true : array-like of bool, shape (n,)
        True for the positive class.
    score : array-like of float, shape (n,)
        Probability of the positive class; ``score > threshold`` is the prediction.
    clusters : array-like, shape (n,)
        The cluster (site) of each subject.
    n_resamples, random_state
        Of :func:`scipy.stats.bootstrap`.
    min_clusters : int
        Fewer clusters than this give None (too few units for a bootstrap).

    Returns
    -------
    dict or None
        ``accuracy_ci95``, ``roc_auc_ci95`` (None when a resample can hold one
        class only), ``n_clusters``, ``n_resamples``, ``method``.
    """
    from scipy.stats import bootstrap, rankdata
    y = np.asarray(y_true).astype(bool)
    score = np.asarray(score, float)
    codes, members = np.unique(np.asarray(clusters), return_inverse=True)
    if len(codes) < min_clusters or not np.isfinite(score).all():
        return None
    index = [np.flatnonzero(members == c) for c in range(len(codes))]
    correct = (score > threshold) == y

    def pooled(units):
        i = np.concatenate([index[u] for u in units.astype(int)])
        yi = y[i]
        n_pos = int(yi.sum())
        n_neg = len(yi) - n_pos
        if not n_pos or not n_neg:
            return np.array([correct[i].mean(), np.nan])
        # Mann-Whitney form of the ROC AUC (ties count half): one ranking per resample,
        # a tenth of roc_auc_score's cost over 2,000 resamples
        ranks = rankdata(score[i])
        auc = (ranks[yi].sum() - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg)
        return np.array([correct[i].mean(), auc])

    with np.errstate(invalid="ignore"):
        res = bootstrap((np.arange(len(codes), dtype=float),), pooled, vectorized=False,
                        n_resamples=n_resamples, method="BCa", random_state=random_state)
    lo, hi = res.confidence_interval

    def interval(k):
        ok = np.isfinite(lo[k]) and np.isfinite(hi[k])
        return [float(lo[k]), float(hi[k])] if ok else None

    return {"accuracy_ci95": interval(0), "roc_auc_ci95": interval(1),
            "n_clusters": int(len(codes)), "n_resamples": int(n_resamples), "method": "BCa"}


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
