"""Does a classifier's output follow a nuisance variable (head motion) beyond the diagnosis?

In ABIDE, autistic participants move more in the scanner, and motion leaves
its own imprint on connectivity.  A connectome classifier can therefore
score above chance partly by detecting motion.  :func:`confound_check`
reports, for each nuisance variable given (e.g. mean framewise
displacement), three things a reviewer asks for:

* ``auc_alone`` — how well the variable by itself separates the classes
  (ROC AUC for the positive class; 0.5 = not at all);
* ``spearman_within_class`` — within each diagnostic group, the rank
  correlation between the held-out probability and the variable: if the
  model tracked only the diagnosis these would be near 0;
* ``accuracy_by_tertile`` — held-out accuracy among the subjects in the
  lowest, middle and highest third of the variable.

It is a check, not a correction: nothing here changes the model.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
from scipy.stats import spearmanr
from sklearn.metrics import roc_auc_score

__all__ = ["confound_check"]


def _rounded(x, digits=4):
    return None if x is None or not np.isfinite(x) else round(float(x), digits)


def confound_check(y, proba, confounds, positive, min_per_class=3) -> dict:
    """Association of held-out probabilities with each nuisance variable.

    Parameters
    ----------
    y : array-like of shape (n,)
        True labels.
    proba : array-like of shape (n,)
        Held-out probability of ``positive``.
    confounds : DataFrame (n rows)
        One column per nuisance variable; NaN marks a subject without a value.
    positive : str
        The positive class.
    min_per_class : int
        Fewer valid subjects in a class than this (or a constant variable or
        probability within it) gives ``None`` for its correlation.

    Returns
    -------
    dict
        ``{column: {"n", "auc_alone", "spearman_within_class": {class: {"rho", "p"}},
        "accuracy_by_tertile": {"low", "middle", "high"}}}``; columns without
        any value are left out.
    """
    y = np.asarray(y).astype(str)
    proba = np.asarray(proba, dtype=float)
    if len(confounds) != len(y) or len(proba) != len(y):
        raise ValueError(f"{len(y)} labels, {len(proba)} probabilities and "
                         f"{len(confounds)} confound rows")
    out = {}
    for col in confounds.columns:
        v = pd.to_numeric(confounds[col], errors="coerce").to_numpy(float)
        ok = np.isfinite(v) & np.isfinite(proba)
        if not ok.any():
            continue
        yo, po, vo = y[ok], proba[ok], v[ok]
        pos = yo == positive
        auc = roc_auc_score(pos, vo) if 0 < pos.sum() < len(pos) else None
        within = {}
        for cls in np.unique(yo):
            m = yo == cls
            if m.sum() < min_per_class or np.ptp(vo[m]) == 0 or np.ptp(po[m]) == 0:
                within[cls] = None
                continue
            rho, p = spearmanr(po[m], vo[m])
            within[cls] = {"rho": _rounded(rho), "p": _rounded(p, 6)}
        correct = (po > 0.5) == pos
        edges = np.quantile(vo, [1 / 3, 2 / 3])
        bins = np.digitize(vo, edges, right=True)  # 0 low, 1 middle, 2 high
        tertiles = {name: (_rounded(np.mean(correct[bins == k])) if (bins == k).any() else None)
                    for k, name in enumerate(("low", "middle", "high"))}
        out[str(col)] = {"n": int(ok.sum()), "auc_alone": _rounded(auc),
                         "spearman_within_class": within, "accuracy_by_tertile": tertiles}
    return out
