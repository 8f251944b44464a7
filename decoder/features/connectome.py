"""Functional connectivity features, fitted inside the training folds only.

Two steps, kept apart on purpose:

* :func:`subject_covariances` / :class:`SubjectCovariance` — each subject's
  own covariance (Ledoit–Wolf shrinkage of its standardised time series).
  It looks at one subject at a time and learns nothing across subjects, so
  computing it once for all subjects before cross-validation leaks nothing.
* :class:`Connectivity` — turns covariances into a vector per subject:
  ``correlation``, ``partial correlation``, ``precision`` or ``tangent``.
  ``tangent`` learns a *group reference* (geometric or log-Euclidean mean of
  the training covariances) in :meth:`Connectivity.fit`; the test subjects
  are only projected on it.  This is where published pipelines leak when the
  reference is fitted on all subjects before splitting.

The tangent space is hand-written with batched eigendecompositions
(``numpy.linalg.eigh`` on an ``(n, R, R)`` stack) instead of nilearn's
per-subject ``scipy.linalg`` calls: it gives the same matrices (tested
against :class:`nilearn.connectome.ConnectivityMeasure`) tens of times
faster, which is what makes every variant affordable under leave-site-out
(see ``benchmarks/bench_connectome.py``).
"""

from __future__ import annotations

import functools

import numpy as np
from sklearn.base import BaseEstimator, TransformerMixin
from sklearn.utils.validation import check_is_fitted
from threadpoolctl import threadpool_limits

from ..errors import ConfigError, DataError, check_choice

__all__ = ["KINDS", "subject_covariances", "SubjectCovariance", "Connectivity",
           "sym_matrix_to_vec", "vec_to_sym_matrix", "geometric_mean", "log_euclidean_mean",
           "as_covariance_stack", "split_half_covariances", "check_shrinkage", "REFERENCES"]

KINDS = ("correlation", "partial correlation", "tangent", "precision")
REFERENCES = ("geometric", "log-euclidean", "arithmetic")


# ---------------------------------------------------------------- batched linear algebra
def _single_threaded_blas(func):
    """Run ``func`` with one BLAS thread.

    The batched calls here work on many small (R × R, R ~ 100) matrices: a
    multi-threaded BLAS splits each tiny matrix across threads and, on a
    busy machine, runs 30–50× slower than one thread (measured: 300
    eigendecompositions of 111 × 111, 0.8 s single-threaded vs 24–38 s).
    """
    @functools.wraps(func)
    def wrapper(*args, **kwargs):
        with threadpool_limits(limits=1, user_api="blas"):
            return func(*args, **kwargs)
    return wrapper


def _eig(mats):
    vals, vecs = np.linalg.eigh(mats)
    return vals, vecs


def _recompose(vals, vecs):
    return (vecs * vals[..., None, :]) @ np.swapaxes(vecs, -1, -2)


def _funm(mats, func):
    """Apply ``func`` to the eigenvalues of symmetric matrices (batched)."""
    vals, vecs = _eig(mats)
    return _recompose(func(vals), vecs)


def _floor(vals, eps=1e-10):
    return np.maximum(vals, eps * np.maximum(vals.max(axis=-1, keepdims=True), eps))


def _logm(mats):
    return _funm(mats, lambda v: np.log(_floor(v)))


def _expm(mats):
    return _funm(mats, np.exp)


def _sqrtm_and_invsqrtm(mat):
    vals, vecs = _eig(mat)
    vals = _floor(vals)
    return _recompose(np.sqrt(vals), vecs), _recompose(1.0 / np.sqrt(vals), vecs)


def sym_matrix_to_vec(mats, discard_diagonal=False):
    """Upper triangle of symmetric matrices, off-diagonal scaled by √2 (as nilearn).

    With the √2 scaling the Euclidean norm of the vector equals the Frobenius
    norm of the matrix, the natural metric of the tangent space.
    """
    mats = np.asarray(mats)
    n = mats.shape[-1]
    rows, cols = np.triu_indices(n, k=1 if discard_diagonal else 0)
    vec = mats[..., rows, cols]
    if not discard_diagonal:
        vec = vec * np.where(rows == cols, 1.0, np.sqrt(2.0))
    return vec


def vec_to_sym_matrix(vec, n_regions=None, discard_diagonal=False, diagonal=None):
    """Inverse of :func:`sym_matrix_to_vec` (diagonal filled with ``diagonal``, default 0)."""
    vec = np.asarray(vec, dtype=float)
    k = vec.shape[-1]
    if n_regions is None:
        n_regions = int(round((np.sqrt(8 * k + 1) + (1 if discard_diagonal else -1)) / 2))
    rows, cols = np.triu_indices(n_regions, k=1 if discard_diagonal else 0)
    out = np.zeros(vec.shape[:-1] + (n_regions, n_regions))
    vals = vec if discard_diagonal else vec / np.where(rows == cols, 1.0, np.sqrt(2.0))
    out[..., rows, cols] = vals
    out[..., cols, rows] = vals
    if discard_diagonal and diagonal is not None:
        out[..., np.arange(n_regions), np.arange(n_regions)] = diagonal
    return out


# ---------------------------------------------------------------- per-subject covariance
def _ledoit_wolf(z):
    """``sklearn.covariance.ledoit_wolf(z, assume_centered=True)[0]``, same arithmetic.

    Hand-written because each call is a ~100-region matrix: scikit-learn's
    parameter validation and blocked loop cost several times the arithmetic
    (≈1 ms against ≈0.2 ms), and a fold computes thousands (whole scans and
    halves).  ``tests/test_connectome.py`` checks it against scikit-learn.
    """
    n, p = z.shape
    emp = z.T @ z / n
    if p == 1:
        return emp
    trace = np.einsum("ii->", emp)
    mu = trace / p
    delta_ = np.sum(emp ** 2)
    beta_ = np.sum(np.einsum("ij,ij->i", z, z) ** 2)
    beta = (beta_ / n - delta_) / (p * n)
    delta = (delta_ - 2.0 * mu * trace + p * mu ** 2) / p
    beta = min(beta, delta)
    shrink = 0.0 if beta == 0 else beta / delta
    cov = (1.0 - shrink) * emp
    cov[np.diag_indices(p)] += shrink * mu
    return cov


def _one_covariance(ts, shrinkage):
    ts = np.asarray(ts, dtype=float)
    if ts.ndim != 2:
        raise DataError(f"a time series must be 2-D (time points × regions), got shape {ts.shape}",
                        "pass one table per subject")
    ts = np.where(np.isfinite(ts), ts, np.nan)
    mean = np.nanmean(ts, axis=0)
    std = np.nanstd(ts, axis=0)
    present = np.isfinite(std) & (std > 1e-12 * max(float(np.nanmax(np.abs(ts))), 1e-300))
    if present.sum() < 2:
        raise DataError("a subject's time series has fewer than 2 regions with signal",
                        "exclude this subject (its file is empty or constant)")
    if len(ts) < 3:
        raise DataError(f"a subject's time series has only {len(ts)} time points",
                        "exclude it; connectivity needs at least 3 time points")
    z = np.zeros_like(ts)
    z[:, present] = (ts[:, present] - mean[present]) / std[present]
    z = np.nan_to_num(z)
    if shrinkage == "ledoit-wolf":
        cov = _ledoit_wolf(z)
    elif shrinkage in (None, "none", 0, 0.0):
        cov = z.T @ z / len(z)
    else:
        a = float(shrinkage)
        emp = z.T @ z / len(z)
        cov = (1 - a) * emp + a * np.eye(len(emp)) * np.trace(emp) / len(emp)
    # A region without signal gets the shrinkage target: unit variance and no
    # coupling, so it carries no information instead of a spurious value.
    cov[~present, :] = 0.0
    cov[:, ~present] = 0.0
    cov[~present, ~present] = 1.0
    return cov


def _n_regions(time_series) -> int:
    if not time_series:
        raise DataError("no subject time series given", "pass at least one subject")
    n_regions = {np.shape(ts)[1] if np.ndim(ts) == 2 else -1 for ts in time_series}
    if len(n_regions) != 1:
        raise DataError(f"subjects have different numbers of regions: {sorted(n_regions)}",
                        "extract every subject with the same atlas")
    return n_regions.pop()


def check_shrinkage(shrinkage) -> None:
    """Raise a one-line :class:`~decoder.errors.ConfigError` unless ``shrinkage`` is
    ``"ledoit-wolf"``, ``None``/``"none"`` or a number in [0, 1]."""
    if shrinkage is None or shrinkage in ("ledoit-wolf", "none"):
        return
    try:
        value = None if isinstance(shrinkage, bool) else float(shrinkage)
    except (TypeError, ValueError):
        value = None
    if value is None or not 0.0 <= value <= 1.0:
        raise ConfigError(f"connectivity.shrinkage '{shrinkage}' is not supported",
                          "use ledoit-wolf, none or a number between 0 and 1")


@_single_threaded_blas
def subject_covariances(time_series, shrinkage="ledoit-wolf") -> np.ndarray:
    """Per-subject covariance of z-scored time series (correlation-scaled).

    Parameters
    ----------
    time_series : list of ndarray (n_timepoints_i, n_regions)
        Lengths may differ between subjects.
    shrinkage : "ledoit-wolf", float in [0, 1] or None
        Shrinkage towards the identity; Ledoit–Wolf picks it per subject.

    Returns
    -------
    ndarray of shape (n_subjects, n_regions, n_regions)
        Symmetric positive-definite matrices.  Regions without finite,
        non-constant signal get unit variance and zero covariance.
    """
    check_shrinkage(shrinkage)
    time_series = list(time_series)
    _n_regions(time_series)
    return np.stack([_one_covariance(ts, shrinkage) for ts in time_series])


@_single_threaded_blas
def split_half_covariances(time_series, shrinkage="ledoit-wolf") -> np.ndarray:
    """Covariances of each subject's first and second half of the scan.

    They measure how much a connectivity value changes within one subject
    and one session — its measurement noise — which the biomarker
    classifier uses to weight edges by their reliability.  Like
    :func:`subject_covariances` this looks at one subject at a time, so it
    can be computed once before cross-validation without leakage.

    Parameters
    ----------
    time_series : list of ndarray (n_timepoints_i, n_regions)
    shrinkage : "ledoit-wolf", float in [0, 1] or None

    Returns
    -------
    ndarray of shape (n_subjects, 2, n_regions, n_regions)
        NaN for a subject with fewer than 6 time points (halves too short).
    """
    time_series = list(time_series)
    r = _n_regions(time_series)
    out = np.full((len(time_series), 2, r, r), np.nan)
    for i, ts in enumerate(time_series):
        ts = np.asarray(ts, dtype=float)
        if len(ts) < 6:
            continue
        half = len(ts) // 2
        try:
            out[i] = [_one_covariance(ts[:half], shrinkage), _one_covariance(ts[half:], shrinkage)]
        except DataError:  # a half without signal: this subject gives no noise estimate
            continue
    return out


def as_covariance_stack(X, shrinkage="ledoit-wolf") -> np.ndarray:
    """``X`` as covariances: a 3-D array is taken as-is, a list of time series is estimated."""
    if isinstance(X, np.ndarray) and X.ndim == 3 and X.shape[1] == X.shape[2]:
        return X
    return subject_covariances(X, shrinkage=shrinkage)


class SubjectCovariance(TransformerMixin, BaseEstimator):
    """Stateless transformer: list of time series → stack of covariances.

    Parameters
    ----------
    shrinkage : "ledoit-wolf", float or None
    """

    def __init__(self, shrinkage="ledoit-wolf"):
        self.shrinkage = shrinkage

    def fit(self, X, y=None):
        self.n_features_in_ = np.shape(X[0])[1] if len(X) else 0
        return self

    def transform(self, X):
        return as_covariance_stack(X, self.shrinkage)

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.requires_fit = False
        return tags


# ---------------------------------------------------------------- group references
@_single_threaded_blas
def log_euclidean_mean(covs) -> np.ndarray:
    """exp(mean(log C_i)): one batched eigendecomposition."""
    return _expm(_logm(np.asarray(covs)).mean(axis=0))


@_single_threaded_blas
def geometric_mean(covs, max_iter=30, tol=1e-7) -> np.ndarray:
    """Riemannian (affine-invariant) geometric mean of SPD matrices.

    The gradient descent of nilearn's ``_geometric_mean`` (same adaptive step
    and stopping rule), with every per-subject matrix function done in one
    batched eigendecomposition.
    """
    covs = np.asarray(covs, dtype=float)
    gmean = covs.mean(axis=0)
    step = 1.0
    norm_old = np.inf
    for _ in range(max_iter):
        sqrt_g, inv_sqrt_g = _sqrtm_and_invsqrtm(gmean)
        whitened = inv_sqrt_g @ covs @ inv_sqrt_g
        grad = _logm(whitened).mean(axis=0)
        gmean = sqrt_g @ _expm(step * grad) @ sqrt_g
        gmean = (gmean + gmean.T) / 2
        norm = np.linalg.norm(grad)
        if norm < norm_old:
            step *= 1.2
            norm_old = norm
        elif norm > norm_old:
            step /= 2.0
            norm = norm_old
        if norm < tol:
            break
    return gmean


def _cov_to_corr(covs):
    d = np.sqrt(np.einsum("...ii->...i", covs))
    return covs / d[..., :, None] / d[..., None, :]


def _precision(covs):
    vals, vecs = _eig(covs)
    return _recompose(1.0 / _floor(vals), vecs)


class Connectivity(TransformerMixin, BaseEstimator):
    """Connectivity vectors from covariance matrices, the reference fitted in-fold.

    Parameters
    ----------
    kind : {"correlation", "partial correlation", "tangent", "precision"}
    reference : {"geometric", "log-euclidean", "arithmetic"}
        Group mean used as the tangent point (``kind="tangent"`` only).
    vectorize : bool
        Return the upper triangle (off-diagonal scaled by √2) instead of matrices.
    discard_diagonal : bool
        Drop the diagonal from the vector.
    fisher_z : bool
        Apply ``arctanh`` to correlation / partial correlation values.
    shrinkage : "ledoit-wolf", float or None
        Used only when ``X`` is a list of time series.

    Attributes
    ----------
    reference_ : ndarray (n_regions, n_regions) or None
        The tangent point (mean of the *training* covariances).
    whitening_ : ndarray (n_regions, n_regions) or None
        ``reference_ ** -1/2``.
    n_regions_ : int
    """

    def __init__(self, kind="tangent", reference="geometric", vectorize=True,
                 discard_diagonal=True, fisher_z=False, shrinkage="ledoit-wolf"):
        self.kind = kind
        self.reference = reference
        self.vectorize = vectorize
        self.discard_diagonal = discard_diagonal
        self.fisher_z = fisher_z
        self.shrinkage = shrinkage

    def _check_params(self):
        check_choice("connectivity kind", self.kind, KINDS)
        check_choice("tangent reference", self.reference, REFERENCES)

    @_single_threaded_blas
    def fit(self, X, y=None):
        """Learn the tangent reference from the training covariances only."""
        self._check_params()
        covs = as_covariance_stack(X, self.shrinkage)
        self.n_regions_ = covs.shape[-1]
        self.n_features_in_ = self.n_regions_
        self.reference_ = None
        self.whitening_ = None
        if self.kind == "tangent":
            if self.reference == "geometric":
                ref = geometric_mean(covs)
            elif self.reference == "log-euclidean":
                ref = log_euclidean_mean(covs)
            else:
                ref = covs.mean(axis=0)
            self.reference_ = ref
            self.whitening_ = _sqrtm_and_invsqrtm(ref)[1]
        return self

    @_single_threaded_blas
    def transform_matrices(self, X) -> np.ndarray:
        """Connectivity matrices (n, R, R) for ``X``."""
        check_is_fitted(self, "n_regions_")
        covs = as_covariance_stack(X, self.shrinkage)
        if covs.shape[-1] != self.n_regions_:
            raise DataError(f"input has {covs.shape[-1]} regions, the model was fitted on "
                            f"{self.n_regions_}", "use the atlas the model was trained with")
        if self.kind == "tangent":
            w = self.whitening_
            return _logm(w @ covs @ w)
        if self.kind == "precision":
            return _precision(covs)
        if self.kind == "correlation":
            out = _cov_to_corr(covs)
        else:
            out = -_cov_to_corr(_precision(covs))
            idx = np.arange(out.shape[-1])
            out[..., idx, idx] = 1.0
        if self.fisher_z:
            idx = np.arange(out.shape[-1])
            out = np.arctanh(np.clip(out, -0.999999, 0.999999))
            out[..., idx, idx] = 0.0
        return out

    def transform(self, X):
        mats = self.transform_matrices(X)
        if not self.vectorize:
            return mats
        return sym_matrix_to_vec(mats, discard_diagonal=self.discard_diagonal)
