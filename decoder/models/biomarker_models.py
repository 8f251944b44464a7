"""Connectome classifiers: connectivity → (ComBat) → scaling → linear model, in one estimator.

:class:`ConnectomeClassifier` is a scikit-learn classifier whose ``fit``
learns *everything* that looks across subjects — the tangent reference,
ComBat's site and covariate effects, the feature scaling and the model
with its nested hyper-parameter search — from the training subjects it is
given, so cross-validating it is leakage-free by construction.

The default is an ensemble over connectivity kinds (tangent space at the
in-fold log-Euclidean mean, and correlation), each with a ridge classifier
whose penalty is chosen by efficient leave-one-out inside the training
fold; the ensemble averages their decision values.  Before the ridge, each
standardised edge is multiplied by its split-half reliability, estimated on
the training subjects (:func:`split_half_reliability`).  Probabilities come
from a Platt sigmoid fitted on the training subjects' leave-one-out
decision values (so they are calibrated without touching test data).
"""

from __future__ import annotations

import copy
import logging

import numpy as np
import pandas as pd
from scipy.special import expit
from sklearn.base import BaseEstimator, ClassifierMixin, clone
from sklearn.linear_model import LogisticRegression, LogisticRegressionCV
from sklearn.model_selection import GridSearchCV, StratifiedKFold
from sklearn.preprocessing import StandardScaler
from sklearn.svm import LinearSVC
from sklearn.utils.multiclass import unique_labels
from sklearn.utils.multiclass import check_classification_targets
from sklearn.utils.validation import check_is_fitted, validate_data
from threadpoolctl import threadpool_limits

from ..errors import ConfigError, DataError, LabelError, check_choice
from ..features.connectome import (KINDS, REFERENCES, Connectivity, as_covariance_stack,
                                   check_shrinkage, split_half_covariances)
from ..features.harmonize import UNSEEN_SITE_OPTIONS, ComBat
from ._sklearn_compat import logistic_cv_kwargs

__all__ = ["MODELS", "HARMONIZE", "RELIABILITY", "make_model", "ConnectomeClassifier",
           "LooRidgeClassifier", "edge_pattern_table", "edge_patterns",
           "split_half_reliability"]

log = logging.getLogger(__name__)

MODELS = ("ridge", "logistic", "svm", "mlp")
HARMONIZE = ("none", "combat")
RELIABILITY = ("split-half", "none")
DEFAULT_ALPHAS = tuple(float(a) for a in np.logspace(-1, 5, 13))
DEFAULT_CS = tuple(float(c) for c in np.logspace(-4, 1, 11))


def make_model(name, random_state=0, inner_splits=5, params=None):
    """A linear (or torch MLP) classifier with its nested hyper-parameter search.

    Parameters
    ----------
    name : {"ridge", "logistic", "svm", "mlp"}
        ``ridge``: :class:`LooRidgeClassifier`, penalty by exact leave-one-out; ``logistic``: L2
        :class:`~sklearn.linear_model.LogisticRegressionCV`; ``svm``: linear SVM
        in :class:`~sklearn.model_selection.GridSearchCV` over C; ``mlp``:
        :class:`~decoder.models.torch_connectome.TorchMLPClassifier`.
    random_state : int
    inner_splits : int
        Inner stratified folds for logistic/svm tuning (within the training fold).
    params : dict, optional
        Extra constructor arguments.
    """
    params = dict(params or {})
    inner = StratifiedKFold(inner_splits, shuffle=True, random_state=random_state)
    if name == "ridge":
        return LooRidgeClassifier(**params)
    if name == "logistic":
        cs = params.pop("Cs", DEFAULT_CS)
        return LogisticRegressionCV(Cs=list(cs), cv=inner, scoring="roc_auc", max_iter=2000,
                                    **{**logistic_cv_kwargs(0.0), **params})
    if name == "svm":
        cs = params.pop("Cs", DEFAULT_CS)
        return GridSearchCV(LinearSVC(dual="auto", max_iter=5000, random_state=random_state,
                                      **params),
                            {"C": list(cs)}, cv=inner, scoring="roc_auc")
    if name == "mlp":
        from .torch_connectome import TorchMLPClassifier
        return TorchMLPClassifier(random_state=random_state, **params)
    raise ConfigError(f"model '{name}' is not supported", f"use one of: {', '.join(MODELS)}")


class LooRidgeClassifier(ClassifierMixin, BaseEstimator):
    """Binary ridge classifier, penalty chosen by exact leave-one-out, LOO decisions kept.

    Hand-written (rather than :class:`~sklearn.linear_model.RidgeClassifierCV`)
    because one eigendecomposition of the n × n Gram matrix gives, for every
    alpha, the exact leave-one-out predictions — used both to choose alpha
    (lowest LOO squared error, RidgeClassifierCV's criterion) and, with their
    sign, to calibrate probabilities; RidgeClassifierCV only keeps squared
    errors and would need a second decomposition.  Targets are ±1 as in
    :class:`~sklearn.linear_model.RidgeClassifier`, with an intercept.

    Parameters
    ----------
    alphas : sequence of float

    Attributes
    ----------
    classes_, coef_ (n_features,), intercept_ : float, alpha_ : float
    loo_decision_ : ndarray (n_samples,)
        Leave-one-out decision values of the training samples at ``alpha_``.
    """

    def __init__(self, alphas=DEFAULT_ALPHAS):
        self.alphas = alphas

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.classifier_tags.multi_class = False   # binary only (±1 targets)
        return tags

    def _check_alphas(self):
        try:
            alphas = np.asarray(self.alphas, dtype=float).ravel()
        except (TypeError, ValueError):
            alphas = np.array([np.nan])
        if alphas.size == 0 or not (np.isfinite(alphas) & (alphas > 0)).all():
            raise ConfigError(f"ridge alphas {self.alphas!r} are not positive numbers",
                              "give a list of penalties, e.g. model_params.alphas=[1,10,100]")

    def fit(self, X, y):
        self._check_alphas()
        X, y = validate_data(self, X, y, dtype=np.float64)
        check_classification_targets(y)
        return self._fit_eig(X, y, *self.gram_eig(X))

    @staticmethod
    def gram_eig(X):
        """Eigendecomposition of the centred Gram matrix (label-free; reusable across label
        permutations): ``(mean_x, vals, vecs)``."""
        X = np.asarray(X, dtype=float)
        mean_x = X.mean(axis=0)
        Xc = X - mean_x
        vals, vecs = np.linalg.eigh(Xc @ Xc.T)
        return mean_x, np.clip(vals, 0, None), vecs

    def _fit_eig(self, X, y, mean_x, vals, vecs):
        X = np.asarray(X, dtype=float)
        y = np.asarray(y)
        self.classes_ = unique_labels(y)
        if len(self.classes_) != 2:
            n = len(self.classes_)
            raise LabelError("LooRidgeClassifier needs exactly 2 classes; the labels have one "
                             "class" if n == 1 else
                             f"Only binary classification is supported. LooRidgeClassifier "
                             f"needs exactly 2 classes; the labels have {n}",
                             "check the labels")
        y_pm = np.where(y == self.classes_[1], 1.0, -1.0)
        Xc = X - mean_x
        ym = y_pm.mean()
        qty = vecs.T @ (y_pm - ym)
        best = None
        for alpha in self.alphas:
            shrink = vals / (vals + alpha)
            fitted = vecs @ (shrink * qty) + ym
            leverage = np.einsum("ij,j,ij->i", vecs, shrink, vecs) + 1.0 / len(X)
            loo = y_pm - (y_pm - fitted) / np.clip(1.0 - leverage, 1e-9, None)
            err = np.mean((loo - y_pm) ** 2)
            if best is None or err < best[0]:
                best = (err, float(alpha), loo)
        _, self.alpha_, self.loo_decision_ = best
        dual = vecs @ (qty / (vals + self.alpha_))
        self.coef_ = Xc.T @ dual
        self.intercept_ = float(ym - mean_x @ self.coef_)
        self.n_features_in_ = X.shape[1]
        return self

    def decision_function(self, X):
        check_is_fitted(self, "coef_")
        X = validate_data(self, X, reset=False, dtype=np.float64)
        return X @ self.coef_ + self.intercept_

    def predict(self, X):
        decision = self.decision_function(X)   # checks that the model is fitted
        return self.classes_[(decision > 0).astype(int)]


def split_half_reliability(full, half1, half2) -> np.ndarray:
    """Per-feature reliability of connectivity features from split-half scans.

    A subject's edge value ``x = t + e`` is its true value plus measurement
    noise.  Features from the two halves of the same scan differ by noise
    only, and the full scan averages them, so the noise variance of the full
    feature is about ``var(f1 - f2) / 4`` (first order; exact for features
    linear in the data).  The reliability ``r = 1 - noise / total variance``
    is the fraction of the between-subject variance that is not noise —
    and ``r * x`` is the best linear estimate of the true value ``t`` of a
    centred feature (errors-in-variables shrinkage).  Unreliable edges are
    thus damped before the classifier instead of competing on equal terms.

    Parameters
    ----------
    full, half1, half2 : ndarray (n_subjects, n_features)
        The same features (same fitted transforms) from the whole scan and
        from its two halves.  Rows with NaN halves are ignored.

    Returns
    -------
    ndarray (n_features,) in [0, 1]
    """
    ok = np.isfinite(half1).all(axis=1) & np.isfinite(half2).all(axis=1)
    if ok.sum() < 2:
        raise DataError("split-half reliability needs at least 2 subjects whose scans can be "
                        "split (6 or more time points)",
                        "set connectivity.reliability: none, or use longer scans")
    noise = np.var(half1[ok] - half2[ok], axis=0) / 4.0
    total = np.var(full, axis=0)
    with np.errstate(divide="ignore", invalid="ignore"):
        r = np.where(total > 0, 1.0 - noise / total, 0.0)
    return np.clip(r, 0.0, 1.0)


def edge_patterns(features, decision) -> dict:
    """Each feature's correlation with the classifier's output (Haufe et al. 2014).

    The weights of a multivariate linear model are not an account of which
    connections differ: a weight can be large to cancel noise shared with
    another edge.  The *activation pattern* — the covariance of each feature
    with the model's decision — is (Haufe et al., NeuroImage 2014); on
    standardised features its correlation form is comparable across edges
    and kinds.  Positive: the edge is stronger in subjects the model scores
    towards the positive class.

    Parameters
    ----------
    features : dict kind → ndarray (n_subjects, n_features)
    decision : ndarray (n_subjects,)

    Returns
    -------
    dict kind → ndarray (n_features,) in [-1, 1]
    """
    d = np.asarray(decision, dtype=float)
    d = d - d.mean()
    sd_d = np.sqrt(np.sum(d * d))
    out = {}
    for kind, X in features.items():
        Xc = X - X.mean(axis=0)
        sd_x = np.sqrt(np.sum(Xc * Xc, axis=0))
        with np.errstate(divide="ignore", invalid="ignore"):
            r = (Xc.T @ d) / (sd_x * sd_d)
        out[kind] = np.where(np.isfinite(r), r, 0.0).astype(np.float32)
    return out


def edge_pattern_table(fold_patterns, regions, kind=None,
                       classes=("negative", "positive"), names=None) -> pd.DataFrame:
    """Per-edge activation patterns summarised over cross-validation folds.

    Parameters
    ----------
    fold_patterns : list of dict kind → ndarray (n_edges,)
        ``edge_patterns_`` of the classifier fitted in each training fold.
    regions : sequence of str
        Region labels, in the order of the connectivity matrices.
    kind : str, optional
        Connectivity kind to summarise; default ``correlation`` when fitted
        (its edges read as functional connections), else the first kind.
    classes : (str, str)
        Names of the negative and positive class, for ``higher_in``.
    names : sequence of str, optional
        Anatomical region names (columns ``name_a``, ``name_b``).

    Returns
    -------
    DataFrame
        One row per edge (upper triangle): ``region_a``, ``region_b``,
        ``kind``, ``pattern`` (mean over folds), ``pattern_sd``,
        ``sign_consistency`` (fraction of folds agreeing with the sign of
        the mean), ``higher_in`` (the class in which the edge is stronger),
        sorted by decreasing ``|pattern|``.
    """
    if not fold_patterns:
        raise ValueError("no fold patterns")
    kinds = list(fold_patterns[0])
    kind = kind or ("correlation" if "correlation" in kinds else kinds[0])
    P = np.vstack([np.asarray(fp[kind], dtype=float) for fp in fold_patterns])
    n = len(regions)
    rows, cols = np.triu_indices(n, k=1)
    if P.shape[1] != len(rows):
        raise ValueError(f"{P.shape[1]} edges for {n} regions")
    mean = P.mean(axis=0)
    agree = np.mean(np.sign(P) == np.sign(mean), axis=0)
    codes = np.asarray([str(r) for r in regions])
    table = pd.DataFrame({"region_a": codes[rows], "region_b": codes[cols], "kind": kind,
                          "pattern": mean, "pattern_sd": P.std(axis=0),
                          "sign_consistency": agree,
                          "higher_in": np.where(mean > 0, classes[1], classes[0])})
    if names is not None:
        names = np.asarray([str(x) for x in names])
        table.insert(2, "name_a", names[rows])
        table.insert(3, "name_b", names[cols])
    order = np.argsort(-np.abs(mean), kind="stable")
    return table.iloc[order].reset_index(drop=True)


def _rows(table, mask):
    if table is None:
        return None
    if hasattr(table, "iloc"):
        return table.iloc[np.flatnonzero(mask)]
    return np.asarray(table)[mask]


def _decision(model, X):
    d = model.decision_function(X)
    return d if d.ndim == 1 else d[:, -1]


class ConnectomeClassifier(ClassifierMixin, BaseEstimator):
    """Binary classifier of subjects from their region time series.

    Parameters
    ----------
    kinds : sequence of str
        Connectivity kinds; more than one makes an ensemble averaging the
        per-kind decision values.
    reference : {"log-euclidean", "geometric", "arithmetic"}
        Tangent point (mean of the training covariances).
    shrinkage : "ledoit-wolf", float or None
        Per-subject covariance shrinkage (used when ``X`` is time series).
    harmonize : {"none", "combat"}
        In-fold ComBat on the connectivity vectors (needs ``sites``).
    unseen_site : {"self", "pooled"}
        ComBat's handling of a site absent from training.
    reliability : {"split-half", "none"}
        Multiply each standardised edge by its split-half reliability
        (:func:`split_half_reliability`), estimated on the training subjects.
        Needs the time series, or ``halves`` in :meth:`fit`.
    remove_confounds : sequence of str
        Columns of ``covariates`` (e.g. ``"mean_fd"``, head motion) whose
        linear effect is regressed out of every connectivity feature after
        ComBat, with slopes fitted on the training subjects; ComBat preserves
        only the other columns.  A missing value (or column, at prediction)
        takes the training median, so the subject gets no adjustment beyond
        the average one.
    model : {"ridge", "logistic", "svm", "mlp"}
    model_params : dict or None
    inner_splits : int
    random_state : int

    Attributes
    ----------
    classes_ : ndarray of shape (2,)
    connectivity_ : dict kind → fitted :class:`Connectivity`
    combat_ : dict kind → fitted :class:`ComBat` (empty without harmonisation)
    scalers_ : dict kind → fitted StandardScaler
    reliability_ : dict kind → ndarray (n_features,)
        Edge weights in [0, 1] (empty with ``reliability="none"``).
    deconfound_ : dict kind → (confound means, slopes (n_confounds, n_features))
        Empty without ``remove_confounds``.
    confound_medians_ : ndarray (n_confounds,)
        Training medians, used for missing confound values.
    models_ : dict kind → fitted classifier
    edge_patterns_ : dict kind → ndarray (n_features,)
        Correlation of each connectivity feature with the ensemble's decision
        on the training subjects, before calibration (:func:`edge_patterns`): which
        edges the classifier's learned direction goes with (positive: stronger
        towards ``classes_[1]``). It is not turned by a negative calibration slope,
        a leave-one-out artefact of weak signal that would hide what was learned.
    calibration_ : tuple (a, b)
        Platt sigmoid ``p = 1 / (1 + exp(-(a d + b)))`` on the ensemble decision ``d``.
    n_regions_ : int
    """

    def __init__(self, kinds=("tangent", "correlation"), reference="log-euclidean",
                 shrinkage="ledoit-wolf", harmonize="none", unseen_site="self",
                 reliability="split-half", model="ridge", model_params=None, inner_splits=5,
                 random_state=0, remove_confounds=()):
        self.kinds = kinds
        self.reference = reference
        self.shrinkage = shrinkage
        self.harmonize = harmonize
        self.unseen_site = unseen_site
        self.reliability = reliability
        self.model = model
        self.model_params = model_params
        self.inner_splits = inner_splits
        self.random_state = random_state
        self.remove_confounds = remove_confounds

    def __setstate__(self, state):
        super().__setstate__(state)
        # parameters added after a model was saved take the value that reproduces it
        for name, value in (("reliability", "none"), ("remove_confounds", ())):
            self.__dict__.setdefault(name, value)

    def _check_params(self):
        kinds = [self.kinds] if isinstance(self.kinds, str) else list(self.kinds)
        if not kinds:
            raise ConfigError("connectivity.kinds is empty", f"use some of: {', '.join(KINDS)}")
        for k in kinds:
            check_choice("connectivity kind", k, KINDS, fix_word="some")
        check_choice("harmonize.method", self.harmonize, HARMONIZE)
        check_choice("model", self.model, MODELS)
        check_choice("connectivity.reliability", self.reliability, RELIABILITY)
        check_choice("connectivity.reference", self.reference, REFERENCES)
        check_choice("harmonize.unseen_site", self.unseen_site, UNSEEN_SITE_OPTIONS)
        check_shrinkage(self.shrinkage)
        self._check_model_params()
        return kinds

    def _check_model_params(self):
        """``model_params`` must name the chosen model's own parameters, with values it
        accepts (checked by scikit-learn's parameter validation where it has one)."""
        params = dict(self.model_params or {})
        if not params:
            return
        try:
            model = make_model(self.model, self.random_state, self.inner_splits, params)
        except TypeError:
            allowed = sorted(make_model(self.model).get_params(deep=False))
            unknown = sorted(set(params) - set(allowed) - {"Cs"})
            raise ConfigError(f"model_params.{unknown[0] if unknown else next(iter(params))} "
                              f"is not a parameter of model '{self.model}'",
                              f"use some of: {', '.join(allowed)}") from None
        inner = getattr(model, "estimator", model)   # GridSearchCV wraps the SVM
        if isinstance(inner, LooRidgeClassifier):
            inner._check_alphas()
        elif hasattr(inner, "_parameter_constraints"):
            try:
                inner._validate_params()
            except (ValueError, TypeError) as err:
                raise ConfigError(f"model_params for model '{self.model}': "
                                  f"{' '.join(str(err).split())[:160]}",
                                  "give values of the types the model takes") from None

    def check_params(self) -> None:
        """Raise a one-line :class:`~decoder.errors.ConfigError` for an unsupported
        parameter without fitting anything, so that a config is checked before its data
        are read (``fit`` checks the same)."""
        self._check_params()

    def _features(self, kind, covs, sites, covariates, fit=False):
        X = self._standardised(kind, covs, sites, covariates, fit)
        w = getattr(self, "reliability_", {}).get(kind)  # absent in models saved before it
        return X if w is None else X * w

    def _confounds(self, covariates, n, impute=True):
        """The confound matrix (n, c); with ``impute``, missing values and columns take the
        training median."""
        names = self.confound_names()
        C = np.full((n, len(names)), np.nan)
        if isinstance(covariates, pd.DataFrame):
            for j, name in enumerate(names):
                if name in covariates.columns:
                    C[:, j] = pd.to_numeric(covariates[name], errors="coerce").to_numpy(float)
        if impute:
            missing = ~np.isfinite(C)
            if missing.any():
                log.info("%d subject(s) without %s: the training median is used (no adjustment "
                         "beyond the average one)", int(missing.any(axis=1).sum()),
                         ", ".join(names))
                C = np.where(missing, self.confound_medians_, C)
        return C

    def confound_names(self):
        """The covariate names in ``remove_confounds`` as a list (a single string allowed).

        Needs no fitting; :func:`pipelines.biomarker.predict_subject` asks it which
        values (e.g. ``mean_fd``) a new subject's prediction can use.
        """
        names = self.remove_confounds or ()
        return [names] if isinstance(names, str) else list(names)

    def _kept_covariates(self, covariates):
        names = self.confound_names()
        if names and isinstance(covariates, pd.DataFrame):
            return covariates.drop(columns=[c for c in names if c in covariates.columns])
        return covariates

    def _standardised(self, kind, covs, sites, covariates, fit=False):
        if fit:
            self.connectivity_[kind] = Connectivity(kind=kind, reference=self.reference).fit(covs)
        X = self.connectivity_[kind].transform(covs)
        if self.harmonize == "combat":
            kept = self._kept_covariates(covariates)
            if fit:
                self.combat_[kind] = ComBat(unseen_site=self.unseen_site).fit(
                    X, sites=sites, covariates=kept)
            X = self.combat_[kind].transform(X, sites=sites, covariates=kept)
        if self.confound_names():
            C = self._confounds(covariates, len(X))
            if fit:
                mean_c, mean_x = C.mean(axis=0), X.mean(axis=0)
                slopes = np.linalg.lstsq(C - mean_c, X - mean_x, rcond=None)[0]
                self.deconfound_[kind] = (mean_c, slopes)
            mean_c, slopes = self.deconfound_[kind]
            X = X - (C - mean_c) @ slopes
        if fit:
            self.scalers_[kind] = StandardScaler().fit(X)
        return self.scalers_[kind].transform(X)

    def fit(self, X, y, sites=None, covariates=None, halves=None):
        """Fit on training subjects only.

        Parameters
        ----------
        X : list of ndarray (n_timepoints_i, n_regions) or ndarray (n, R, R)
            Time series, or per-subject covariances from
            :func:`~decoder.features.connectome.subject_covariances`.
        y : array-like of shape (n,)
            Two classes.
        sites : array-like of shape (n,), optional
            Needed with ``harmonize="combat"``.
        covariates : DataFrame or ndarray (n, c), optional
            Covariates whose effect ComBat preserves (e.g. age, sex).
        halves : ndarray (n, 2, R, R), optional
            Split-half covariances from
            :func:`~decoder.features.connectome.split_half_covariances`, for
            ``reliability="split-half"`` when ``X`` holds covariances
            (computed here when ``X`` holds time series).
        """
        kinds = self._check_params()
        if self.reliability == "split-half" and halves is None:
            if isinstance(X, np.ndarray) and X.ndim == 3:
                raise DataError("reliability: split-half needs the subjects' split-half "
                                "covariances", "pass the time series, or halves="
                                "split_half_covariances(time_series), or set "
                                "connectivity.reliability: none")
            with threadpool_limits(limits=1, user_api="blas"):
                halves = split_half_covariances(X, self.shrinkage)
        # One BLAS thread: a fold's work is many small matrix functions and two
        # n × n eigendecompositions; threads contend more than they help (on 2
        # busy cores a fit took 44 s multi-threaded vs 16 s single-threaded).
        # Parallelism, when wanted, belongs at the level of folds.
        with threadpool_limits(limits=1, user_api="blas"):
            return self._fit(kinds, X, y, sites, covariates, halves)

    def _fit(self, kinds, X, y, sites, covariates, halves):
        covs = as_covariance_stack(X, self.shrinkage)
        y = np.asarray(y)
        if len(y) != len(covs):
            raise DataError(f"{len(covs)} subjects but {len(y)} labels",
                            "pass one label per subject")
        self.classes_ = unique_labels(y)
        if len(self.classes_) != 2:
            raise DataError(f"biomarker classification needs exactly 2 classes, got "
                            f"{len(self.classes_)}", "check the diagnosis labels")
        if self.harmonize == "combat" and sites is None:
            raise DataError("harmonize: combat needs the site of every training subject",
                            "pass sites, or set harmonize.method: none")
        if halves is not None and np.shape(halves) != (len(covs), 2) + covs.shape[1:]:
            raise DataError(f"halves has shape {np.shape(halves)}, expected "
                            f"{(len(covs), 2) + covs.shape[1:]}",
                            "pass split_half_covariances of the same subjects")
        self.n_regions_ = covs.shape[-1]
        self.connectivity_, self.combat_, self.scalers_, self.models_ = {}, {}, {}, {}
        self.reliability_, self.deconfound_ = {}, {}
        if self.confound_names():
            self._fit_confound_medians(covariates, len(covs))
        if self.reliability == "split-half":  # subjects whose scans could be split
            ok = np.isfinite(halves).all(axis=(1, 2, 3))
            sites_ok = None if sites is None else np.asarray(sites)[ok]
            covariates_ok = _rows(covariates, ok)
        inputs = {}
        for kind in kinds:
            Xk = self._standardised(kind, covs, sites, covariates, fit=True)
            if self.reliability == "split-half":
                f1, f2 = (np.full_like(Xk, np.nan) for _ in range(2))
                if ok.any():
                    f1[ok] = self._standardised(kind, halves[ok, 0], sites_ok, covariates_ok)
                    f2[ok] = self._standardised(kind, halves[ok, 1], sites_ok, covariates_ok)
                self.reliability_[kind] = split_half_reliability(Xk, f1, f2)
                Xk = Xk * self.reliability_[kind]
            inputs[kind] = Xk
        self.edge_patterns_ = edge_patterns(inputs, self._fit_head(inputs, y))
        return self

    def _fit_head(self, inputs, y, eigs=None):
        """Fit the label-dependent part — the per-kind models and the calibration — on
        training features ``inputs`` (kind → (n, n_features)) from the label-free part.

        Everything before it (connectivity, ComBat with age and sex, confound removal,
        scaling, reliability) never sees a label, which lets a permutation test refit
        only this part (:meth:`with_labels`).  ``eigs``: per kind, the cached
        eigendecomposition of the ridge Gram matrix (:meth:`LooRidgeClassifier.gram_eig`).
        Returns the ensemble's decision on the training subjects.
        """
        loo = []
        for kind, Xk in inputs.items():
            model = make_model(self.model, self.random_state, self.inner_splits,
                               self.model_params)
            if eigs is not None and isinstance(model, LooRidgeClassifier):
                model._fit_eig(Xk, y, *eigs[kind])
            else:
                model.fit(Xk, y)
            self.models_[kind] = model
            if isinstance(model, LooRidgeClassifier):
                loo.append(model.loo_decision_)
        train_decision = self._ensemble_from_features(inputs)
        if len(loo) == len(inputs):
            d = np.mean(loo, axis=0)
        else:  # no free leave-one-out values: the training decisions (optimistic scale)
            d = train_decision
        platt = LogisticRegression(C=1e4).fit(d[:, None], y == self.classes_[1])
        self.calibration_ = (float(platt.coef_[0, 0]), float(platt.intercept_[0]))
        return train_decision

    def features(self, X, sites=None, covariates=None) -> dict:
        """The model's inputs per kind (kind → (n, n_features)), from the fitted label-free
        steps: connectivity, ComBat, confound removal, scaling, reliability weights."""
        check_is_fitted(self, "models_")
        with threadpool_limits(limits=1, user_api="blas"):
            covs = as_covariance_stack(X, self.shrinkage)
            return {k: self._features(k, covs, sites, covariates) for k in self.models_}

    def with_labels(self, inputs, y, eigs=None) -> ConnectomeClassifier:
        """A copy whose label-dependent part is refitted on other labels ``y`` for the same
        training subjects, given their :meth:`features` ``inputs``.

        The label-free steps are shared with ``self`` (they never saw a label), so this
        equals a full :meth:`fit` on ``y`` at the cost of the models alone — what a
        permutation test needs.  ``eigs``: kind → :meth:`LooRidgeClassifier.gram_eig` of
        ``inputs[kind]``, reused across permutations for ridge.
        """
        check_is_fitted(self, "models_")
        new = copy.copy(self)
        new.models_ = {}
        new.__dict__.pop("edge_patterns_", None)   # those of the original labels
        new.classes_ = unique_labels(np.asarray(y))
        with threadpool_limits(limits=1, user_api="blas"):
            new._fit_head(inputs, np.asarray(y), eigs)
        return new

    def proba_from_features(self, inputs) -> np.ndarray:
        """Calibrated probabilities (n, 2) from :meth:`features` of the subjects."""
        return self._calibrated(self._ensemble_from_features(inputs))

    def _ensemble_from_features(self, inputs):
        """Mean of the per-kind decision values on the model inputs (kind → features)."""
        return np.mean([_decision(self.models_[k], inputs[k]) for k in self.models_], axis=0)

    def _calibrated(self, d):
        """Platt-calibrated probabilities (n, 2), columns ordered as ``classes_``."""
        a, b = self.calibration_
        p = expit(a * d + b)
        return np.column_stack([1 - p, p])

    def _fit_confound_medians(self, covariates, n):
        names = self.confound_names()
        missing = [c for c in names if not isinstance(covariates, pd.DataFrame)
                   or c not in covariates.columns]
        if missing:
            raise DataError(f"confound '{missing[0]}' to remove is not among the covariates",
                            "pass it as a covariates column (e.g. mean_fd from the phenotypic "
                            "table), or set confounds.remove: []")
        C = self._confounds(covariates, n, impute=False)
        has_value = np.isfinite(C).any(axis=0)
        if not has_value.all():
            bad = names[int(np.argmin(has_value))]
            raise DataError(f"confound '{bad}' has no value for any training subject",
                            "remove it from confounds.remove")
        self.confound_medians_ = np.nanmedian(C, axis=0)

    def _ensemble_decision(self, covs, sites, covariates):
        return self._ensemble_from_features(
            {k: self._features(k, covs, sites, covariates) for k in self.models_})

    def decision_function(self, X, sites=None, covariates=None):
        """The calibrated log-odds of ``classes_[1]`` (positive → ``classes_[1]``).

        The Platt map of the mean per-kind decision, so that it ranks subjects as
        :meth:`predict_proba` does and its sign is :meth:`predict`'s call: the map's slope
        can be negative (leave-one-out decisions on labels without signal, as under a
        permutation), and the raw mean would then rank them the other way.
        """
        check_is_fitted(self, "calibration_")
        a, b = self.calibration_
        return a * self._decision(X, sites, covariates) + b

    def _decision(self, X, sites=None, covariates=None):
        """Mean of the per-kind decision values, before calibration."""
        check_is_fitted(self, "models_")
        with threadpool_limits(limits=1, user_api="blas"):
            covs = as_covariance_stack(X, self.shrinkage)
        if covs.shape[-1] != self.n_regions_:
            raise DataError(f"input has {covs.shape[-1]} regions, the model expects "
                            f"{self.n_regions_}", "extract the time series with the atlas "
                            "the model was trained on")
        with threadpool_limits(limits=1, user_api="blas"):
            return self._ensemble_decision(covs, sites, covariates)

    def predict_proba(self, X, sites=None, covariates=None):
        """Calibrated probabilities, columns ordered as ``classes_``."""
        return self._calibrated(self._decision(X, sites, covariates))

    def predict(self, X, sites=None, covariates=None):
        """The class whose calibrated probability exceeds 0.5 (consistent with predict_proba)."""
        p = self.predict_proba(X, sites, covariates)[:, 1]
        return self.classes_[(p > 0.5).astype(int)]

    def connectivity_matrices(self, X, kind=None):
        """Connectivity matrices (n, R, R) of ``kind`` (default: the first kind)."""
        check_is_fitted(self, "models_")
        kind = kind or next(iter(self.connectivity_))
        return self.connectivity_[kind].transform_matrices(as_covariance_stack(X, self.shrinkage))


def clone_classifier(est):
    """``sklearn.base.clone`` (re-exported for the pipeline)."""
    return clone(est)
