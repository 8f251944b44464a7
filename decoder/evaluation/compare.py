"""Paired comparison of two runs on the same samples: is variant B really better than A?

Two configurations evaluated on the same subjects (say, with and without
ComBat) give two predictions per subject.  Their accuracies and AUCs differ
by a little on any data set; whether the difference is more than noise is a
*paired* question — both models are right on most subjects, and only the
subjects on which they disagree carry information.

* Accuracy: a sign-flip (randomisation) test of the paired difference in
  correct predictions, over exchangeable units.  For independent samples
  (the subjects of a biomarker run) every unit differs by 0 or ±1 and the
  test is exactly McNemar's exact (binomial) test on the discordant
  subjects.  For task decoding, volumes of one run are autocorrelated and
  not exchangeable one by one, so the units are the cross-validation folds
  (the runs): each fold's summed difference flips sign as a whole — exact
  enumeration for up to 20 folds.
* ROC AUC (two classes, independent samples): DeLong's test for two
  correlated AUCs (DeLong, DeLong & Clarke-Pearson 1988), in the fast
  midrank form of Sun & Xu (2014).

Both treat the fitted models as fixed: the variability that comes from the
training sets (overlapping across folds) is not in the standard errors, so
the p-values are somewhat optimistic (Dietterich 1998; Nadeau & Bengio
2003).  A difference that is not significant here is not significant.

* When both runs used the same folds (same ``cv``, ``n_splits``,
  ``random_state`` and samples), the corrected resampled t-test of Nadeau &
  Bengio (2003), in the repeated-cross-validation form of Bouckaert & Frank
  (2004), also compares the per-fold scores: the variance of the fold
  differences is inflated by ``n_test / n_train`` for the overlap of the
  training sets, so training-set variability is included.  With few folds
  it has little power; ``cv: repeated-stratified-kfold`` gives it more units.
  Each fold counts once whatever its size, and a fold's AUC ranks only its
  own subjects — under leave-site-out, a within-site AUC, blind to how well
  the sites' scores line up with each other (what harmonisation improves).
"""

from __future__ import annotations

import itertools

import numpy as np
from scipy.stats import binomtest, norm, rankdata
from scipy.stats import t as student_t
from sklearn.metrics import roc_auc_score

from ..errors import ConfigError, DataError

__all__ = ["compare_runs", "corrected_resampled_ttest", "delong_test", "auc_interval",
           "paired_sign_flip_test"]

MAX_EXACT_UNITS = 20   # 2**20 sign patterns: exact enumeration still takes < 1 s


def _delong_covariance(y, scores):
    """AUCs of the rows of ``scores`` and their covariance (DeLong et al. 1988), from the
    placement values computed with midranks (Sun & Xu 2014): O(n log n) per row."""
    m, n = int(y.sum()), int((~y).sum())
    pos, neg = scores[:, y], scores[:, ~y]
    aucs, v_pos, v_neg = [], [], []
    for k in range(len(scores)):
        r_all = rankdata(np.concatenate([pos[k], neg[k]]))   # midranks: ties count 1/2
        r_pos, r_neg = rankdata(pos[k]), rankdata(neg[k])
        aucs.append((r_all[:m].sum() - m * (m + 1) / 2) / (m * n))
        v_pos.append((r_all[:m] - r_pos) / n)          # P(score of a negative < this positive)
        v_neg.append(1.0 - (r_all[m:] - r_neg) / m)    # P(score of a positive > this negative)
    s = (np.atleast_2d(np.cov(np.array(v_pos))) / m
         + np.atleast_2d(np.cov(np.array(v_neg))) / n)
    return aucs, s


def auc_interval(y_true, score) -> list | None:
    """95 % interval of one ROC AUC from DeLong's variance (normal, clipped to [0, 1], as
    R's pROC ``ci.auc(method="delong")``); None with fewer than 2 samples of a class.

    Also None when DeLong's variance is 0 — every positive–negative pair ordered the same
    way (AUC 0 or 1) or every score tied — where pROC gives a zero-width interval: four
    subjects ranked perfectly would otherwise read as an AUC of exactly 1 with certainty.
    """
    y = np.asarray(y_true).astype(bool)
    score = np.asarray(score, float)
    if y.sum() < 2 or (~y).sum() < 2 or not np.isfinite(score).all():
        return None
    aucs, s = _delong_covariance(y, score[None, :])
    if not s[0, 0] > 1e-12:  # (real variances of an AUC are orders of magnitude larger)
        return None
    half = norm.ppf(0.975) * float(np.sqrt(s[0, 0]))
    return [max(0.0, float(aucs[0] - half)), min(1.0, float(aucs[0] + half))]


def delong_test(y_true, score_a, score_b) -> dict:
    """DeLong's test of two ROC AUCs measured on the same samples.

    Hand-written (about twenty lines) because no well-kept Python library
    provides it (R's pROC does); checked in the tests against the
    O(n_pos × n_neg) definition of the placement values.

    Parameters
    ----------
    y_true : array-like of bool or {0, 1}, shape (n,)
        True for the positive class.
    score_a, score_b : array-like of shape (n,)
        Scores of the two models (higher → positive).

    Returns
    -------
    dict
        ``auc_a``, ``auc_b``, ``diff`` (b − a), ``se``, ``ci95`` (of the
        difference), ``z``, ``p`` (two-sided; 1.0 when the two score
        vectors rank the samples identically).
    """
    y = np.asarray(y_true).astype(bool)
    scores = np.vstack([np.asarray(score_a, float), np.asarray(score_b, float)])
    m, n = int(y.sum()), int((~y).sum())
    if m < 2 or n < 2:
        raise DataError(f"DeLong's test needs at least 2 samples of each class, got {m} and {n}",
                        "compare runs with both classes among their common samples")
    if not np.isfinite(scores).all():
        raise DataError("scores contain NaN or infinite values", "compare complete runs")
    aucs, s = _delong_covariance(y, scores)
    var = s[0, 0] + s[1, 1] - 2 * s[0, 1]
    diff = aucs[1] - aucs[0]
    se = float(np.sqrt(max(var, 0.0)))
    if se == 0.0:
        z, p = 0.0, 1.0
    else:
        z = diff / se
        p = float(2 * norm.sf(abs(z)))
    half = norm.ppf(0.975) * se
    return {"auc_a": float(aucs[0]), "auc_b": float(aucs[1]), "diff": float(diff), "se": se,
            "ci95": [float(diff - half), float(diff + half)], "z": float(z), "p": p}


def paired_sign_flip_test(correct_a, correct_b, units=None, n_permutations=10000,
                          random_state=0) -> dict:
    """Two-sided paired test of a difference in accuracy (b − a).

    Parameters
    ----------
    correct_a, correct_b : array-like of bool, shape (n,)
        Whether each model got each sample right.
    units : array-like of shape (n,), optional
        Exchangeable units (e.g. cross-validation folds of autocorrelated
        volumes); each unit's summed difference changes sign as a whole.
        Default: every sample is its own unit.
    n_permutations : int
        Random sign patterns when the units are too many to enumerate.
    random_state : int

    Returns
    -------
    dict
        ``diff`` (accuracy b − a), ``p``, ``method`` (``mcnemar-exact``,
        ``sign-flip-exact`` or ``sign-flip-monte-carlo``), ``n_units``,
        ``b_only`` / ``a_only`` (samples only b / only a got right).
    """
    a = np.asarray(correct_a, bool)
    b = np.asarray(correct_b, bool)
    if a.shape != b.shape or a.ndim != 1 or not len(a):
        raise DataError("the two runs' predictions do not pair up",
                        "compare runs on the same samples")
    d = b.astype(int) - a.astype(int)
    if units is None:
        units = np.arange(len(d))
    _, inverse = np.unique(np.asarray(units), return_inverse=True)
    per_unit = np.bincount(inverse, weights=d).astype(int)
    out = {"diff": float(d.mean()), "n_units": len(per_unit),
           "b_only": int(np.sum(d > 0)), "a_only": int(np.sum(d < 0))}
    nz = per_unit[per_unit != 0]
    if not len(nz):
        return {**out, "p": 1.0, "method": "mcnemar-exact"}
    if np.all(np.abs(nz) == 1):
        # sign flips of ±1 units: the number of +1 is Binomial(k, 1/2) — McNemar's exact test
        p = binomtest(int(np.sum(nz > 0)), len(nz), 0.5).pvalue
        return {**out, "p": float(p), "method": "mcnemar-exact"}
    observed = abs(nz.sum())
    if len(nz) <= MAX_EXACT_UNITS:
        signs = np.array(list(itertools.product((1, -1), repeat=len(nz))), dtype=np.int8)
        null = np.abs(signs @ nz)
        p = np.mean(null >= observed)
        method = "sign-flip-exact"
    else:
        rng = np.random.default_rng(random_state)
        signs = rng.choice(np.array([1, -1], dtype=np.int8), size=(n_permutations, len(nz)))
        null = np.abs(signs @ nz)
        p = (1 + np.sum(null >= observed)) / (1 + n_permutations)
        method = "sign-flip-monte-carlo"
    return {**out, "p": float(p), "method": method}


def corrected_resampled_ttest(differences, test_train_ratio) -> dict:
    """Nadeau & Bengio's corrected resampled t-test of per-fold score differences.

    Across the folds of (repeated) cross-validation the training sets
    overlap, so the fold scores are positively correlated and the naive
    paired t-test, with variance ``s² / J``, is far too liberal.  Nadeau &
    Bengio (2003) correct the variance to ``(1 / J + n_test / n_train) s²``;
    Bouckaert & Frank (2004) showed this form is well calibrated for
    repeated k-fold (``J`` = repeats × folds, ``J − 1`` degrees of freedom).
    Written out (a few lines, as in julearn's ``corrected_ttest`` and R's
    correctR) rather than adding a dependency for it.

    Parameters
    ----------
    differences : array-like of shape (J,)
        Score of B minus score of A in each fold (and repetition).
    test_train_ratio : float
        ``n_test / n_train`` of the folds (their mean when sizes differ).

    Returns
    -------
    dict
        ``diff`` (mean difference), ``se``, ``ci95`` (of the mean difference),
        ``t``, ``df``, ``p`` (two-sided), ``n_units``, ``test_train_ratio``.
    """
    d = np.asarray(differences, dtype=float)
    d = d[np.isfinite(d)]
    if len(d) < 2:
        raise DataError(f"the corrected t-test needs at least 2 folds, got {len(d)}",
                        "use a cross-validation with more folds or repetitions")
    mean = float(d.mean())
    se = float(np.sqrt((1.0 / len(d) + test_train_ratio) * d.var(ddof=1)))
    df = len(d) - 1
    if se == 0.0:    # every fold differs by the same amount
        t, p = (0.0, 1.0) if mean == 0.0 else (float(np.copysign(np.inf, mean)), 0.0)
    else:
        t = mean / se
        p = float(2 * student_t.sf(abs(t), df))
    half = float(student_t.ppf(0.975, df) * se)
    return {"diff": mean, "se": se, "ci95": [mean - half, mean + half], "t": float(t), "df": df,
            "p": p, "n_units": len(d), "test_train_ratio": float(test_train_ratio)}


def _check_complete(table, tfile, required) -> None:
    """Refuse a table of a run that was cut short or edited: a last row without its newline
    (``decoder run`` ends every table with one), a missing column, or a row with no value
    where every row has one.  A half-written row would otherwise be read as a sample with
    another label, or none, and change the comparison without a word."""
    with open(tfile, "rb") as fh:
        fh.seek(-1, 2)
        if fh.read(1) != b"\n":
            raise DataError(f"{tfile} is truncated (its last row does not end with a newline)",
                            "rerun 'decoder run' to rewrite the run directory")
    for col in required:
        if col not in table.columns:
            raise DataError(f"{tfile} has no column '{col}'",
                            "rerun it with this version of 'decoder run'")
    empty = table[list(required)].isna().to_numpy()
    if empty.any():
        row, k = np.argwhere(empty)[0]
        raise DataError(f"{tfile} line {row + 2}: no value for '{required[k]}' (truncated or "
                        "edited file)", "rerun 'decoder run' to rewrite the run directory")


def _load(run_dir):
    """A run's metrics, held-out predictions and, for repeated k-fold, each repetition's
    (one-line errors from :func:`load_run`, and for incomplete tables)."""
    from ..report import load_run
    run = load_run(run_dir)
    if run.predictions is None:
        raise DataError(f"{run.path} has no predictions.tsv",
                        "rerun it with this version of 'decoder run'")
    pred, repeats = run.predictions, None
    biomarker = run.task == "biomarker"
    scores = [c for c in pred.columns if c.startswith(("p_", "score_"))]
    required = (["subject", "diagnosis"] if biomarker else ["true"]) + ["predicted"] + (
        ["fold"] if "fold" in pred or not biomarker else []) + scores
    _check_complete(pred, run.path / "predictions.tsv", required)
    if run.repeats is not None:
        _check_complete(run.repeats, run.path / "repeats.tsv", list(run.repeats.columns))
    if biomarker:
        for name, table in (("predictions", pred), ("repeats", run.repeats)):
            if table is not None and "subject" not in table:
                raise DataError(f"{run.path}/{name}.tsv has no subject column",
                                "rerun it with this version of 'decoder run'")
        pred = pred.set_index("subject")
        if run.metrics.get("cv") == "repeated-stratified-kfold" and run.repeats is not None:
            repeats = run.repeats.set_index("subject")
    return run.metrics, pred, run.path, repeats


def _repetitions(pred, repeats, path, biomarker, label):
    """Per repetition: (fold of each sample, whether the run got it right, its score or None).

    ``None`` when the run records no folds (written before they were kept).
    """
    if "fold" not in pred:
        return None
    truth = pred[label].astype(str).to_numpy()
    col = _score_column(pred, path) if biomarker else None
    if repeats is not None:
        table = repeats.reindex(pred.index)
        n_rep = sum(c.startswith("fold_r") for c in table.columns)
        missing = [c for r in range(n_rep) for c in (f"fold_r{r}", f"{col}_r{r}")
                   if c not in table.columns]
        if missing or not n_rep:
            raise DataError(f"{path}/repeats.tsv: no column "
                            f"{missing[0] if missing else 'fold_r0'}", "rerun 'decoder run'")
        out = []
        for r in range(n_rep):
            p = table[f"{col}_r{r}"].to_numpy(float)
            out.append((table[f"fold_r{r}"].to_numpy(), (p > 0.5) == (truth == col[2:]), p))
        return out
    correct = pred["predicted"].astype(str).to_numpy() == truth
    return [(pred["fold"].to_numpy(), correct, None if col is None else pred[col].to_numpy(float))]


def _corrected_t(reps_a, reps_b, positive, same_samples=True):
    """The corrected resampled t-test over folds shared by both runs, or why it does not apply."""
    if reps_a is None or reps_b is None:
        return {"available": False, "reason": "a run records no folds; rerun it with this "
                                              "version of 'decoder run'"}
    if not same_samples:
        return {"available": False, "reason": "the runs decoded different subjects, so their "
                                              "training sets differ"}
    if len(reps_a) != len(reps_b) or any(
            not np.array_equal(fa, fb) for (fa, _, _), (fb, _, _) in zip(reps_a, reps_b)):
        return {"available": False, "reason": "the runs used different folds; the test needs "
                                              "the same cv, n_splits, random_state and samples"}
    acc, auc, ratios = [], [], []
    n = len(reps_a[0][0])
    for (folds, ca, sa), (_, cb, sb) in zip(reps_a, reps_b):
        for f in np.unique(folds):
            m = folds == f
            acc.append(cb[m].mean() - ca[m].mean())
            ratios.append(m.sum() / (n - m.sum()))
            if sa is not None and 0 < positive[m].sum() < m.sum():
                auc.append(roc_auc_score(positive[m], sb[m]) - roc_auc_score(positive[m], sa[m]))
    if len(acc) < 2:
        return {"available": False, "reason": "fewer than 2 folds"}
    ratio = float(np.mean(ratios))
    return {"available": True, "unit": "fold", "n_repeats": len(reps_a),
            "accuracy": corrected_resampled_ttest(acc, ratio),
            "roc_auc": corrected_resampled_ttest(auc, ratio) if len(auc) >= 2 else None,
            "method": "nadeau-bengio"}


def _score_column(predictions, run):
    cols = [c for c in predictions.columns if c.startswith("p_")]
    if len(cols) != 1:
        raise DataError(f"{run}/predictions.tsv has no single probability column (p_<class>)",
                        "rerun it with this version of 'decoder run'")
    return cols[0]


def _check_options(n_permutations, random_state, out):
    """Refuse bad options before any run is read (a comparison can take a while)."""
    if (isinstance(n_permutations, bool) or not isinstance(n_permutations, (int, np.integer))
            or n_permutations < 1):
        raise ConfigError(f"--n-permutations {n_permutations}: must be a positive number of "
                          "random sign flips", "use e.g. --n-permutations 10000 (the default)")
    if random_state is not None and (isinstance(random_state, bool) or not isinstance(
            random_state, (int, np.integer)) or random_state < 0):
        raise ConfigError(f"--random-state {random_state}: must be a non-negative integer",
                          "use e.g. --random-state 0 (the default)")
    if out is not None:
        from ..results import check_writable
        check_writable(out, folder=False)


def compare_runs(run_a, run_b, n_permutations=10000, random_state=0, out=None) -> dict:
    """Paired comparison of two runs (B against A) on their common samples.

    Biomarker runs pair subjects by ID (subjects in only one run are left
    out and counted) and test accuracy (McNemar) and ROC AUC (DeLong).
    Category runs pair samples by position, need the same samples and labels
    (same data, ``classes``, ``samples`` and ``cv``), and test accuracy with
    the folds as exchangeable units; their AUCs are reported, not tested,
    because volumes within a run are not independent.

    Parameters
    ----------
    run_a, run_b : path
        Run directories written by ``decoder run``.
    n_permutations : int
        For the Monte-Carlo sign-flip test (more than 20 folds); at least 1.
    random_state : int
    out : path, optional
        JSON file to write the comparison to.  Checked before the runs are
        read, so a folder or an unwritable place fails at once.

    Returns
    -------
    dict
        JSON-ready: ``a`` / ``b`` (path, name, cv, config SHA-256, accuracy,
        ROC AUC), ``task``, ``n_paired``, ``accuracy`` (the paired test),
        ``roc_auc`` (DeLong, or null), ``note``.

    Raises
    ------
    ConfigError
        For a bad ``n_permutations`` or ``random_state``.
    DataError
        For an unwritable ``out``, a missing or incomplete run (a truncated
        ``predictions.tsv``), or runs that do not pair up.
    """
    _check_options(n_permutations, random_state, out)
    (ma, pa, path_a, ra), (mb, pb, path_b, rb) = _load(run_a), _load(run_b)
    task = ma.get("task")
    if task != mb.get("task"):
        raise DataError(f"cannot compare a {task} run with a {mb.get('task')} run",
                        "compare two runs of the same task")
    # the settings of the tests, so that a p-value from random flips can be rerun
    res = {"task": task, "n_permutations": n_permutations, "random_state": random_state}
    for key, run, m in (("a", run_a, ma), ("b", run_b, mb)):
        res[key] = {"path": str(run), "name": m.get("name"), "cv": m.get("cv"),
                    "config_sha256": (m.get("provenance") or {}).get("config_sha256"),
                    "accuracy": m.get("accuracy"), "roc_auc": m.get("roc_auc")}
    # what B changes (a comparison of two configs should say which two)
    from ..config import config_differences, differences_text
    configs = {k: (m.get("provenance") or {}).get("config") for k, m in (("A", ma), ("B", mb))}
    # a run without a recorded config (an older version's) differs in nothing that is known
    res["config_missing"] = [k for k, c in configs.items() if not isinstance(c, dict)]
    res["config_differences"] = ([] if res["config_missing"] else
                                 config_differences(configs["A"], configs["B"]))
    biomarker = task == "biomarker"
    label = "diagnosis" if biomarker else "true"
    # the settings that make the samples differ, where the configs say so
    sample_keys = ("classes", "samples", "cv", "dataset.", "blocks.", "betas.", "delay",
                   "n_splits", "random_state")
    why = [d for d in res["config_differences"]
           if any(d["key"] == k or (k.endswith(".") and d["key"].startswith(k))
                  for k in sample_keys)]
    shown = differences_text(why, limit=3, value=lambda v: ",".join(map(str, v))
                             if isinstance(v, (list, tuple)) else str(v))
    other_samples = DataError(f"{run_a} and {run_b} decoded different samples or folds"
                              + (f" ({shown})" if shown else ""),
                              "compare runs with the same data, classes, samples and cv")
    if biomarker:  # pair subjects by ID
        n_a, n_b = len(pa), len(pb)
        common = pa.index.intersection(pb.index)
        if not len(common):
            raise DataError(f"{run_a} and {run_b} have no subject in common",
                            "compare runs on the same data set")
        pa, pb = pa.loc[common], pb.loc[common]
        res["n_only_a"], res["n_only_b"] = n_a - len(common), n_b - len(common)
    elif len(pa) != len(pb) or ma.get("cv") != mb.get("cv"):
        raise other_samples
    truth, truth_b = (p[label].astype(str).to_numpy() for p in (pa, pb))
    if not (truth == truth_b).all():
        if biomarker:
            raise DataError(f"subject {pa.index[np.argmax(truth != truth_b)]} has different "
                            "diagnoses in the two runs", "compare runs on the same phenotypic table")
        raise other_samples
    ca, cb = (p["predicted"].astype(str).to_numpy() == truth for p in (pa, pb))
    res["n_paired"] = len(pa)
    if biomarker:
        col_a, col_b = _score_column(pa, run_a), _score_column(pb, run_b)
        if col_a != col_b:
            raise DataError(f"the runs score different classes ({col_a}, {col_b})",
                            "compare runs with the same labels")
        res["accuracy"] = {**paired_sign_flip_test(ca, cb), "unit": "subject"}
        res["roc_auc"] = {**delong_test(truth == col_a[2:], pa[col_a], pb[col_b]),
                          "method": "delong"}
    else:
        res["accuracy"] = {**paired_sign_flip_test(ca, cb, units=pa["fold"].to_numpy(),
                                                   n_permutations=n_permutations,
                                                   random_state=random_state),
                           "unit": "fold"}
        res["roc_auc"] = None
    reps = [_repetitions(p, r, path, biomarker, label)
            for p, r, path in ((pa, ra, path_a), (pb, rb, path_b))]
    positive = truth == _score_column(pa, run_a)[2:] if biomarker else None
    res["corrected_t"] = _corrected_t(*reps, positive, same_samples=not (
        res.get("n_only_a") or res.get("n_only_b")))
    res["note"] = ("the accuracy and roc_auc p-values treat the fitted models as fixed "
                   "(training-set variability is not included), so they are somewhat "
                   "optimistic; corrected_t, when available, includes it")
    if out is not None:
        from .._utils import atomic_write_json
        atomic_write_json(out, res)
    return res
