"""Keyword arguments that differ between supported scikit-learn versions."""

from __future__ import annotations

import inspect

from sklearn.linear_model import LogisticRegressionCV

__all__ = ["logistic_cv_kwargs"]


def logistic_cv_kwargs(l1_ratio=0.0) -> dict:
    """Arguments that pin :class:`LogisticRegressionCV`'s penalty and attribute layout.

    scikit-learn >= 1.8 warns unless ``l1_ratios`` and ``use_legacy_attributes``
    are given; older releases (``>= 1.4`` is supported) lack the latter and use
    ``penalty`` for the same choice.
    """
    params = inspect.signature(LogisticRegressionCV.__init__).parameters
    if "use_legacy_attributes" in params:
        return {"l1_ratios": (float(l1_ratio),), "use_legacy_attributes": False}
    if l1_ratio == 0.0:
        return {"penalty": "l2"}
    if l1_ratio == 1.0:
        return {"penalty": "l1"}
    return {"penalty": "elasticnet", "l1_ratios": (float(l1_ratio),)}
