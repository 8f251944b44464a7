"""Cross-validation scheme names → scikit-learn splitters.

Every scheme that takes ``groups`` keeps a whole group (run, subject, site)
on one side of each split, so temporally or site-correlated samples never
straddle train and test.
"""

from __future__ import annotations

import numpy as np
from sklearn.model_selection import (LeaveOneGroupOut, RepeatedStratifiedKFold,
                                     StratifiedGroupKFold, StratifiedKFold)

from ..errors import ConfigError, DataError

CV_SCHEMES = {
    "leave-one-run-out": "one fold per run (task data)",
    "leave-one-subject-out": "one fold per subject",
    "leave-site-out": "one fold per acquisition site",
    "leave-one-group-out": "one fold per group",
    "stratified-group-kfold": "k folds, groups kept whole, classes balanced",
    "stratified-kfold": "k folds, classes balanced (ignores groups)",
    "repeated-stratified-kfold": "k folds repeated n_repeats times",
}

_GROUPED = {"leave-one-run-out", "leave-one-subject-out", "leave-site-out",
            "leave-one-group-out", "stratified-group-kfold"}


def make_cv(scheme: str, groups=None, n_splits: int = 10, n_repeats: int = 10,
            random_state: int | None = 0):
    """Return ``(splitter, uses_groups)`` for a scheme name.

    Parameters
    ----------
    scheme : str
        One of :data:`CV_SCHEMES`.
    groups : array-like or None
        Group label of each sample (run, subject or site), needed by grouped schemes.
    n_splits, n_repeats : int
        For the k-fold schemes.
    random_state : int or None
        Seed for shuffled schemes.
    """
    if scheme not in CV_SCHEMES:
        raise ConfigError(f"unknown cv scheme '{scheme}'",
                          f"use one of: {', '.join(CV_SCHEMES)}")
    if scheme in _GROUPED:
        if groups is None:
            raise DataError(f"cv '{scheme}' needs a group (run/subject/site) per sample",
                            "choose cv: stratified-kfold, or provide groups")
        n_groups = len(np.unique(groups))
        if n_groups < 2:
            raise DataError(f"cv '{scheme}' needs at least 2 groups, found {n_groups}",
                            "add runs/subjects/sites, or use cv: stratified-kfold")
    if scheme == "stratified-group-kfold":
        return StratifiedGroupKFold(n_splits=n_splits, shuffle=True,
                                    random_state=random_state), True
    if scheme == "stratified-kfold":
        return StratifiedKFold(n_splits=n_splits, shuffle=True, random_state=random_state), False
    if scheme == "repeated-stratified-kfold":
        return RepeatedStratifiedKFold(n_splits=n_splits, n_repeats=n_repeats,
                                       random_state=random_state), False
    return LeaveOneGroupOut(), True
