"""Nested cross-validation with in-fold model selection and permutation tests.

Sample definitions that depend on analysis choices (the labelling delay
after stimulus onset, the temporal window) are *candidates*; for each
outer fold the candidate is chosen by inner leave-one-group-out accuracy on
the training runs only, with the closed-form dual ridge (cheap enough to
try every candidate).  Test data never inform any choice.

Permutation test: labels are permuted at the level of *units* (blocks or
trials) within each run, which keeps the temporal structure of the data
exchangeable, and the whole nested procedure, penalty selection included,
is rerun for every permutation (batched, see :mod:`decoder.models.dual_ridge`).
The candidate chosen with the true labels is kept for the permutations.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import numpy as np

from ..errors import DataError
from ..models.dual_ridge import gram, solve_fold

log = logging.getLogger(__name__)


@dataclass
class SampleSet:
    """Samples built under one candidate choice.

    Attributes
    ----------
    X : ndarray (n_samples, n_features)
    unit : ndarray of int (n_samples,)
        Unit (block or trial) of each sample; labels are permuted per unit.
    run : ndarray of int (n_samples,)
        Run index of each sample (inner CV groups).
    group : ndarray (n_samples,)
        Outer CV group (run or subject).
    """

    X: np.ndarray
    unit: np.ndarray
    run: np.ndarray
    group: np.ndarray
    name: str = ""
    _K: np.ndarray | None = None

    def fold(self, tr, te):
        """Keyword arguments of :func:`solve_fold` for a train/test split.

        Features are passed directly when there are fewer features than
        samples; otherwise the Gram matrix (computed once) is sliced.
        """
        if self.X.shape[1] < self.X.shape[0]:
            return {"K_trtr": None, "K_tetr": None, "F_tr": self.X[tr], "F_te": self.X[te]}
        K = self.K
        return {"K_trtr": K[np.ix_(tr, tr)], "K_tetr": K[np.ix_(te, tr)]}

    @property
    def K(self):
        if self._K is None:
            self._K = gram(self.X)
        return self._K


def permuted_unit_codes(unit_codes: dict, unit_run: dict, n_permutations: int, rng):
    """``(n_units, 1 + n_permutations)`` codes: column 0 true, others permuted within runs."""
    units = np.array(sorted(unit_codes))
    codes = np.array([unit_codes[u] for u in units])
    runs = np.array([unit_run[u] for u in units])
    out = np.empty((len(units), 1 + n_permutations), dtype=np.int64)
    out[:, 0] = codes
    for p in range(1, n_permutations + 1):
        perm = codes.copy()
        for r in np.unique(runs):
            idx = np.flatnonzero(runs == r)
            perm[idx] = codes[rng.permutation(idx)]
        out[:, p] = perm
    return units, out


def _inner_score(c, tr, codes_tr, n_classes, alphas, score_unit):
    """Inner leave-one-run-out accuracy of candidate ``c`` on its samples ``tr``."""
    te1 = np.flatnonzero(tr)[:1]  # test rows are not used for the inner score
    _, _, inner = solve_fold(codes_tr=codes_tr, inner_groups=c.run[tr], n_classes=n_classes,
                             alphas=alphas, inner_units=c.unit[tr] if score_unit else None,
                             **c.fold(tr, te1))
    return inner[0]


def _choose_candidate(candidates, g, codes_all, upos, n_classes, alphas, score_unit=False):
    """Index of the candidate with the best inner accuracy on the training part of fold ``g``."""
    best = None
    for ci, c in enumerate(candidates):
        tr = c.group != g
        if tr.all() or len(np.unique(c.unit[tr])) < 2:
            continue
        if len(candidates) == 1:
            return ci
        codes_tr = codes_all[[upos[u] for u in c.unit[tr]], 0]
        inner = _inner_score(c, tr, codes_tr, n_classes, alphas, score_unit)
        if best is None or inner > best[0] + 1e-12:
            best = (inner, ci)
    return None if best is None else best[1]


def _aggregate(scores, units):
    """Mean decision values per unit; returns (unit ids, aggregated scores)."""
    ids, inv = np.unique(units, return_inverse=True)
    agg = np.zeros((len(ids),) + scores.shape[1:], dtype=np.float64)
    np.add.at(agg, inv, scores)
    counts = np.bincount(inv, minlength=len(ids)).astype(float)
    return ids, agg / counts.reshape((-1,) + (1,) * (scores.ndim - 1))


def _nested(candidates, unit_codes, unit_run, n_classes, fold_scores_fn, score_unit,
            n_permutations, random_state, alphas):
    """Outer leave-one-group-out loop shared by every fold solver.

    ``fold_scores_fn(c, tr, te, codes_tr)`` returns the test decision values
    ``(n_test, n_classes, 1 + n_permutations)`` and the penalty used (or None)
    for the training labels ``codes_tr`` (column 0 true, others permuted).
    """
    rng = np.random.default_rng(random_state)
    units, codes_all = permuted_unit_codes(unit_codes, unit_run, n_permutations, rng)
    upos = {u: i for i, u in enumerate(units)}
    groups = np.unique(np.concatenate([c.group for c in candidates]))
    if len(groups) < 2:
        raise DataError("cross-validation needs at least 2 runs or subjects, found 1",
                        "add runs, or choose another cv scheme")
    y_true, all_scores, folds, chosen, alphas_used, fold_scores = [], [], [], [], [], []
    tested = []
    correct = np.zeros(1 + n_permutations)
    total = 0
    for g in groups:
        ci = _choose_candidate(candidates, g, codes_all, upos, n_classes, alphas, score_unit)
        if ci is None:
            continue
        c = candidates[ci]
        tr = c.group != g
        te = ~tr
        rows = np.array([upos[u] for u in c.unit])
        scores, alpha = fold_scores_fn(c, tr, te, codes_all[rows[tr]])
        if score_unit:
            ids, scores = _aggregate(scores, c.unit[te])
            labels = codes_all[[upos[u] for u in ids]]
        else:
            labels = codes_all[rows[te]]
        pred = scores.argmax(axis=1)
        correct += (pred == labels).sum(axis=0)
        total += len(labels)
        y_true.append(labels[:, 0])
        all_scores.append(scores[:, :, 0])
        folds.append(np.full(len(labels), g))
        fold_scores.append(float((pred[:, 0] == labels[:, 0]).mean()))
        chosen.append(c.name)
        tested.append(g)
        if alpha is not None:
            alphas_used.append(float(alpha))
        log.info("fold %s: %s, alpha %s, accuracy %.3f", g, c.name,
                 "-" if alpha is None else f"{alpha:.3g}", fold_scores[-1])
    acc = correct / max(total, 1)
    return {
        "y_true": np.concatenate(y_true),
        "scores": np.concatenate(all_scores),
        "fold": np.concatenate(folds),
        "fold_groups": [str(g) for g in groups],
        "fold_scores": fold_scores,
        "chosen": chosen,
        "tested_groups": tested,
        "alphas": alphas_used,
        "null": acc[1:] if n_permutations else None,
        "observed": float(acc[0]),
    }


def nested_dual_ridge(candidates: list[SampleSet], unit_codes: dict, unit_run: dict,
                      n_classes: int, score_unit: bool = False, n_permutations: int = 0,
                      random_state=0, alphas=None):
    """Outer leave-one-group-out with in-fold candidate and penalty selection.

    Parameters
    ----------
    candidates : list of SampleSet
    unit_codes : dict unit → class code
    unit_run : dict unit → run index (permutation blocks)
    n_classes : int
    score_unit : bool
        Score units (blocks) by averaging their samples' decision values.
    n_permutations : int
    random_state : int

    Returns
    -------
    dict with ``y_true``, ``scores`` (test units/samples × classes), ``fold``,
    ``fold_scores``, ``chosen`` (candidate name per fold), ``tested_groups`` (the
    held-out group of each of those folds), ``alphas`` per fold,
    ``null`` (accuracy per permutation, or None).
    """
    from ..models.dual_ridge import DEFAULT_ALPHAS
    alphas = DEFAULT_ALPHAS if alphas is None else alphas

    def fold_scores_fn(c, tr, te, codes_tr):
        # every label set (true and permuted) in one batched solve
        scores, a, _ = solve_fold(codes_tr=codes_tr, inner_groups=c.run[tr],
                                  n_classes=n_classes, alphas=alphas,
                                  inner_units=c.unit[tr] if score_unit else None,
                                  **c.fold(tr, te))
        return scores, a[0]

    return _nested(candidates, unit_codes, unit_run, n_classes, fold_scores_fn, score_unit,
                   n_permutations, random_state, alphas)


def select_candidate(candidates: list[SampleSet], unit_codes: dict, n_classes: int,
                     alphas=None, score_unit=False):
    """Best candidate on *all* data by inner leave-one-run-out (for the final model)."""
    from ..models.dual_ridge import DEFAULT_ALPHAS
    alphas = DEFAULT_ALPHAS if alphas is None else alphas
    if len(candidates) == 1:
        return candidates[0]
    best = None
    for c in candidates:
        codes = np.array([unit_codes[u] for u in c.unit])
        inner = _inner_score(c, np.ones(len(codes), bool), codes, n_classes, alphas, score_unit)
        if best is None or inner > best[0] + 1e-12:
            best = (inner, c)
    return best[1]


def permutation_p_value(observed: float, null) -> float:
    """(1 + #null ≥ observed) / (1 + n_permutations)."""
    null = np.asarray(null)
    return float((1 + np.sum(null >= observed - 1e-12)) / (1 + len(null)))


def nested_estimator(candidates: list[SampleSet], unit_codes: dict, unit_run: dict,
                     n_classes: int, make_estimator, score_unit: bool = False,
                     n_permutations: int = 0, random_state=0, alphas=None):
    """Like :func:`nested_dual_ridge` for any scikit-learn classifier.

    The candidate (delay, window) is still chosen per fold by the closed-form
    dual ridge on the training runs; ``make_estimator()`` is then fitted on
    the training samples.  Permutations refit the estimator each time.
    """
    from ..models.dual_ridge import DEFAULT_ALPHAS
    alphas = DEFAULT_ALPHAS if alphas is None else alphas

    def fold_scores_fn(c, tr, te, codes_tr):
        out = []
        for p in range(codes_tr.shape[1]):
            est = make_estimator()
            _fit(est, c.X[tr], codes_tr[:, p], c.run[tr])
            out.append(_scores(est, c.X[te], n_classes))
        return np.stack(out, axis=2), None

    return _nested(candidates, unit_codes, unit_run, n_classes, fold_scores_fn, score_unit,
                   n_permutations, random_state, alphas)


def _fit(est, X, y, groups):
    from sklearn.pipeline import Pipeline
    final = est.steps[-1][1] if isinstance(est, Pipeline) else est
    import inspect
    if "groups" in inspect.signature(final.fit).parameters:
        if isinstance(est, Pipeline):
            est.fit(X, y, **{f"{est.steps[-1][0]}__groups": groups})
        else:
            est.fit(X, y, groups=groups)
    else:
        est.fit(X, y)


def _scores(est, X, n_classes):
    """Decision values as (n_samples, n_classes), columns = class codes 0..n-1."""
    classes = np.asarray(est.classes_)
    if hasattr(est, "predict_proba"):
        raw = est.predict_proba(X)
    else:
        raw = est.decision_function(X)
        if raw.ndim == 1:
            raw = np.stack([-raw, raw], axis=1)
    # a class absent from the training fold scores below every present one
    absent = 0.0 if hasattr(est, "predict_proba") else np.nanmin(raw) - 1.0
    out = np.full((X.shape[0], n_classes), absent)
    out[:, classes.astype(int)] = raw
    return out
