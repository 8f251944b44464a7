"""ComBat site harmonisation as a transformer fitted on training folds only.

ComBat (Johnson et al. 2007; Fortin et al. 2018) removes additive and
multiplicative site effects from each feature while preserving the effects
of biological covariates (here age and sex), with empirical-Bayes shrinkage
of the per-site estimates across features.

Why a hand-written implementation rather than neuroHarmonize: under
leave-site-out the held-out site is, by construction, absent from the
training fit, and ``neuroHarmonize.harmonizationApply`` returns NaN for
such subjects; its model is also a dict holding arbitrary objects that
cannot go into a skops file.  The arithmetic below is neuroCombat's
(``tests/test_harmonize.py`` checks it against neuroHarmonize on sites seen
in training, when that package is installed), vectorised over sites.

Unseen sites (``unseen_site``):

``"self"`` (default)
    A site absent from the training fit gets its own location/scale
    estimated from its *own* subjects' features (never their labels), with
    the covariate effects and pooled variance learned on the training fold
    held fixed — exactly what ComBat would estimate for it as one more batch.
    Needs at least ``min_site_size`` subjects of that site in the same
    ``transform`` call; otherwise the site falls back to ``"pooled"`` and a
    warning is logged.
``"pooled"``
    No site adjustment for an unseen site: it is treated as the pooled
    training population (its features pass through unchanged).  This is
    the only option for one new subject from an unknown scanner.

Training sites with fewer than ``min_site_size`` subjects cannot have a
variance estimated: they are left out of the fit (logged) and treated as
unseen.
"""

from __future__ import annotations

import logging

import numpy as np
import pandas as pd
from sklearn.base import BaseEstimator, TransformerMixin
from sklearn.utils.validation import check_is_fitted

from ..errors import DataError, check_choice

log = logging.getLogger(__name__)

__all__ = ["ComBat", "UNSEEN_SITE_OPTIONS"]

UNSEEN_SITE_OPTIONS = ("self", "pooled")


_WARNED: set = set()


def _warn_once(msg, *args) -> None:
    """Log a warning once per process: one fit per fold and per connectivity kind would
    otherwise repeat the same sentence dozens of times."""
    text = msg % args
    if text not in _WARNED:
        _WARNED.add(text)
        log.warning(text)


def _covariate_matrix(covariates, n, columns=None):
    if covariates is None:
        return np.zeros((n, 0)), []
    if isinstance(covariates, pd.DataFrame):
        cols = list(covariates.columns) if columns is None else list(columns)
        missing = [c for c in cols if c not in covariates.columns]
        if missing:
            raise DataError(f"ComBat covariate(s) {missing} missing from the input",
                            "pass the same covariates (e.g. age, sex) as at fit time")
        mat = covariates[cols].to_numpy(dtype=float)
    else:
        mat = np.asarray(covariates, dtype=float)
        if mat.ndim == 1:
            mat = mat[:, None]
        cols = [str(i) for i in range(mat.shape[1])] if columns is None else list(columns)
    if mat.shape[0] != n:
        raise DataError(f"ComBat got {mat.shape[0]} covariate rows for {n} subjects",
                        "pass one covariate row per subject")
    if not np.isfinite(mat).all():
        raise DataError("ComBat covariates contain NaN", "impute or drop missing age/sex first")
    return mat, cols


def _eb_batch(s_batch, max_iter=1000, tol=1e-4):
    """Empirical-Bayes location/scale of one batch (neuroCombat's parametric iteration)."""
    n = s_batch.shape[0]
    gamma_hat = s_batch.mean(axis=0)
    delta_hat = s_batch.var(axis=0, ddof=1)
    delta_hat = np.where(delta_hat > 0, delta_hat, np.finfo(float).tiny)
    gamma_bar = gamma_hat.mean()
    t2 = gamma_hat.var(ddof=1)
    m, s2 = delta_hat.mean(), delta_hat.var(ddof=1)
    a_prior = (2 * s2 + m ** 2) / s2
    b_prior = (m * s2 + m ** 3) / s2
    g_old, d_old = gamma_hat, delta_hat
    for _ in range(max_iter):
        g_new = (n * t2 * gamma_hat + d_old * gamma_bar) / (n * t2 + d_old)
        sum2 = ((s_batch - g_new) ** 2).sum(axis=0)
        d_new = (0.5 * sum2 + b_prior) / (n / 2.0 + a_prior - 1.0)
        change = max(np.max(np.abs(g_new - g_old) / np.abs(g_old).clip(1e-12)),
                     np.max(np.abs(d_new - d_old) / d_old))
        g_old, d_old = g_new, d_new
        if change < tol:
            break
    return g_old, d_old


class ComBat(TransformerMixin, BaseEstimator):
    """ComBat harmonisation preserving covariate effects, leakage-free under CV.

    Parameters
    ----------
    unseen_site : {"self", "pooled"}
        How a site absent from the training fit is handled (module docstring).
    min_site_size : int
        Fewest subjects a site needs to get its own parameters.
    empirical_bayes : bool
        Shrink the per-site estimates across features (ComBat's EB step).

    Attributes
    ----------
    sites_ : ndarray of str
        Sites with fitted parameters.
    gamma_, delta_ : ndarray (n_sites, n_features)
        Per-site additive and multiplicative effects (standardised scale).
    beta_covariates_ : ndarray (n_covariates, n_features)
        Preserved covariate effects.
    stand_mean_, var_pooled_ : ndarray (n_features,)
    covariate_names_ : list of str

    Notes
    -----
    ``fit`` and ``transform`` take ``sites`` and ``covariates`` keyword
    arguments (one entry per row of ``X``).
    """

    def __init__(self, unseen_site="self", min_site_size=2, empirical_bayes=True):
        self.unseen_site = unseen_site
        self.min_site_size = min_site_size
        self.empirical_bayes = empirical_bayes

    def fit(self, X, y=None, sites=None, covariates=None):
        """Estimate site and covariate effects on training rows only."""
        check_choice("harmonize.unseen_site", self.unseen_site, UNSEEN_SITE_OPTIONS)
        X = np.asarray(X, dtype=float)
        if sites is None:
            raise DataError("ComBat needs the site of every subject",
                            "pass sites=..., or set harmonize.method: none")
        sites = np.asarray(sites).astype(str)
        if len(sites) != len(X):
            raise DataError(f"ComBat got {len(sites)} sites for {len(X)} subjects",
                            "pass one site per subject")
        cov, names = _covariate_matrix(covariates, len(X))
        labels, counts = np.unique(sites, return_counts=True)
        small = labels[counts < max(int(self.min_site_size), 2)]
        if small.size:
            _warn_once("ComBat: site(s) %s have fewer than %d training subjects; left out of "
                       "the fit and treated as unseen", ", ".join(small), self.min_site_size)
        keep = ~np.isin(sites, small)
        labels = labels[~np.isin(labels, small)]
        if labels.size < 1:
            raise DataError("ComBat: no training site has enough subjects",
                            f"each site needs at least {self.min_site_size} subjects, "
                            "or set harmonize.method: none")
        Xk, sk, ck = X[keep], sites[keep], cov[keep]
        n = len(Xk)
        batch = (sk[:, None] == labels[None, :]).astype(float)
        design = np.hstack([batch, ck])
        beta = np.linalg.lstsq(design, Xk, rcond=None)[0]
        n_per = batch.sum(axis=0)
        stand_mean = (n_per / n) @ beta[: len(labels)]
        resid = Xk - design @ beta
        var_pooled = (resid ** 2).mean(axis=0)
        var_pooled = np.where(var_pooled > 0, var_pooled, np.finfo(float).tiny)
        beta_cov = beta[len(labels):]
        s_data = (Xk - stand_mean - ck @ beta_cov) / np.sqrt(var_pooled)
        gammas, deltas = [], []
        for j, lab in enumerate(labels):
            sb = s_data[sk == lab]
            if self.empirical_bayes:
                g, d = _eb_batch(sb)
            else:
                g, d = sb.mean(axis=0), sb.var(axis=0, ddof=1)
            gammas.append(g)
            deltas.append(d)
        self.sites_ = labels
        self.gamma_ = np.asarray(gammas)
        self.delta_ = np.asarray(deltas)
        self.beta_covariates_ = beta_cov
        self.covariate_names_ = names
        self.stand_mean_ = stand_mean
        self.var_pooled_ = var_pooled
        self.n_features_in_ = X.shape[1]
        return self

    def transform(self, X, sites=None, covariates=None):
        """Harmonise rows of ``X`` (training or new sites) with the fitted effects."""
        check_is_fitted(self, "gamma_")
        X = np.asarray(X, dtype=float)
        if X.shape[1] != self.n_features_in_:
            raise DataError(f"ComBat fitted on {self.n_features_in_} features, got {X.shape[1]}",
                            "use the same connectivity settings as at fit time")
        if sites is None:
            sites = np.full(len(X), "__unknown__")
        sites = np.asarray(sites).astype(str)
        if covariates is None and not self._adjusted(sites).any():
            # no row gets a site adjustment ('pooled'): the covariate terms cancel exactly,
            # so rows without covariates (e.g. scored by scikit-learn, which passes none)
            # are returned as they are
            for site in np.unique(sites):
                self._warn_too_small(site, int((sites == site).sum()))
            return X.copy()
        cols = self.covariate_names_ if isinstance(covariates, pd.DataFrame) else None
        cov, _ = _covariate_matrix(covariates, len(X), cols)
        if cov.shape[1] != self.beta_covariates_.shape[0]:
            raise DataError(f"ComBat fitted with {self.beta_covariates_.shape[0]} covariates, "
                            f"got {cov.shape[1]}", "pass the same covariates as at fit time")
        mod_mean = cov @ self.beta_covariates_
        sd = np.sqrt(self.var_pooled_)
        s_data = (X - self.stand_mean_ - mod_mean) / sd
        out = s_data.copy()
        index = {s: i for i, s in enumerate(self.sites_)}
        for site in np.unique(sites):
            rows = sites == site
            if site in index:
                g, d = self.gamma_[index[site]], self.delta_[index[site]]
            elif self._adjusts(site, int(rows.sum())):
                # (subjects without a site may come from many scanners: never one batch)
                # the unseen site's own features, no labels: one more ComBat batch
                g, d = _eb_batch(s_data[rows]) if self.empirical_bayes else \
                    (s_data[rows].mean(axis=0), s_data[rows].var(axis=0, ddof=1))
            else:
                self._warn_too_small(site, int(rows.sum()))
                continue
            out[rows] = (s_data[rows] - g) / np.sqrt(d)
        return out * sd + self.stand_mean_ + mod_mean

    def _adjusts(self, site, n) -> bool:
        """Whether :meth:`transform` adjusts a site's ``n`` rows: a training site's, or an
        unseen site's with ``unseen_site='self'`` and enough subjects (never rows without
        a site)."""
        return site in set(map(str, self.sites_)) or (
            self.unseen_site == "self" and site != "__unknown__"
            and n >= max(int(self.min_site_size), 2))

    def _warn_too_small(self, site, n) -> None:
        """Say (once) that an unseen site too small for its own batch is not adjusted
        (called for the sites :meth:`_adjusts` leaves alone)."""
        if self.unseen_site == "self" and site != "__unknown__":
            _warn_once("ComBat: unseen site '%s' has %d subject(s) (< %d): "
                       "no site adjustment (pooled)", site, n, self.min_site_size)

    def _adjusted(self, sites) -> np.ndarray:
        """Which rows :meth:`transform` adjusts (:meth:`_adjusts`, site by site)."""
        names, inverse, counts = np.unique(sites, return_inverse=True, return_counts=True)
        own = [self._adjusts(s, c) for s, c in zip(names, counts)]
        return np.asarray(own, dtype=bool)[inverse]

    def fit_transform(self, X, y=None, sites=None, covariates=None):
        return self.fit(X, y, sites=sites, covariates=covariates).transform(
            X, sites=sites, covariates=covariates)
