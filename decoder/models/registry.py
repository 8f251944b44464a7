"""Model names → scikit-learn estimators (fresh, unfitted, seeded).

Every model is a scikit-learn classifier, optionally preceded by ANOVA
feature screening, so it composes in a ``Pipeline`` and is refitted inside
every training fold.
"""

from __future__ import annotations

from sklearn.discriminant_analysis import LinearDiscriminantAnalysis
from sklearn.feature_selection import SelectPercentile, f_classif
from sklearn.linear_model import LogisticRegressionCV, RidgeClassifierCV
from sklearn.pipeline import Pipeline
from sklearn.svm import LinearSVC

from ..errors import ConfigError
from ._sklearn_compat import logistic_cv_kwargs
from .dual_ridge import DualRidgeClassifier

MODELS = {
    "dual-ridge": "ridge solved in the dual, penalty by inner leave-one-run-out (default, fast)",
    "ridge": "scikit-learn RidgeClassifierCV",
    "svc": "linear SVM (LinearSVC, C=1)",
    "logistic-l2": "L2 logistic regression, C by inner CV",
    "logistic-l1": "L1 logistic regression, C by inner CV",
    "lda": "shrinkage LDA (Ledoit-Wolf)",
    "torch-linear": "torch softmax regression (CUDA when present)",
    "torch-mlp": "torch one-hidden-layer MLP (CUDA when present)",
}


def make_model(name: str, random_state=0, screening_percentile=None):
    """Build an unfitted estimator by name, with optional in-fold ANOVA screening."""
    if name not in MODELS:
        raise ConfigError(f"unknown model '{name}'", f"use one of: {', '.join(MODELS)}")
    if name == "dual-ridge":
        est = DualRidgeClassifier()
    elif name == "ridge":
        import numpy as np
        est = RidgeClassifierCV(alphas=np.logspace(-2, 5, 15))
    elif name == "svc":
        est = LinearSVC(C=1.0, max_iter=10000, random_state=random_state)
    elif name in ("logistic-l2", "logistic-l1"):
        pen = name.split("-")[1]
        est = LogisticRegressionCV(Cs=8, **logistic_cv_kwargs(0.0 if pen == "l2" else 1.0),
                                   solver="saga" if pen == "l1" else "lbfgs",
                                   max_iter=2000, cv=3, scoring="accuracy",
                                   random_state=random_state)
    elif name == "lda":
        est = LinearDiscriminantAnalysis(solver="lsqr", shrinkage="auto")
    else:
        from .torch_models import TorchClassifier
        est = TorchClassifier(hidden=() if name == "torch-linear" else (256,),
                              random_state=random_state)
    if screening_percentile is not None and float(screening_percentile) < 100:
        return Pipeline([("screening", SelectPercentile(f_classif,
                                                        percentile=float(screening_percentile))),
                         ("model", est)])
    return Pipeline([("model", est)])
