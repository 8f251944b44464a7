"""Multi-class ridge solved in the dual (kernel) form, exact and fast.

Why hand-written: scikit-learn's ``RidgeClassifierCV`` selects the penalty by
leave-one-*sample*-out, which on fMRI volumes (autocorrelated within a run)
picks far too little regularisation, and it refits from scratch for every
fold and every label permutation.  Here

* the Gram matrix ``K = X Xᵀ`` is computed once for all samples; every
  outer fold only slices and centres it (cost independent of the number of
  voxels);
* each training fold is eigendecomposed once; every penalty value then
  costs one matrix product, and the penalty is chosen by exact, closed-form
  leave-one-*group*-out (whole runs left out) inside the training fold;
* the hat matrix does not depend on the labels, so a label permutation
  costs matrix products with precomputed operators: 1,000 permutations of a
  full nested cross-validation are batched into a few GEMMs.
"""

from __future__ import annotations

import numpy as np
from sklearn.base import BaseEstimator, ClassifierMixin
from sklearn.utils.multiclass import check_classification_targets
from sklearn.utils.validation import check_is_fitted, validate_data

from ..errors import LabelError

# penalties relative to the mean eigenvalue of the centred Gram matrix
# (trace / n), so one grid suits any number of features and any scaling
DEFAULT_ALPHAS = tuple(np.logspace(-3, 2, 11))


def gram(X, block_size: int = 4096) -> np.ndarray:
    """``X @ X.T`` in float64, computed over blocks of ``X``'s columns.

    float32 inputs (e.g. memory-mapped voxel data) are multiplied in float32
    and accumulated in float64 (:func:`decoder.features._gram.blockwise_gram`):
    half the time and memory of a float64 copy, without loading ``X`` whole.
    """
    from ..features._gram import blockwise_gram
    dtype = np.float32 if np.asarray(X[:1]).dtype == np.float32 else np.float64
    return np.asarray(blockwise_gram(X, block_size, dtype=dtype), dtype=np.float64)


def one_hot(codes, n_classes: int) -> np.ndarray:
    """±1 one-hot targets (``-1`` off class, ``+1`` on class)."""
    Y = -np.ones((len(codes), n_classes))
    Y[np.arange(len(codes)), codes] = 1.0
    return Y


def center_kernels(K_trtr, K_tetr):
    """Centre train/train and test/train kernels on the training mean."""
    col_mean = K_trtr.mean(axis=0)
    all_mean = col_mean.mean()
    Kc = K_trtr - col_mean[None, :] - col_mean[:, None] + all_mean
    Kt = K_tetr - col_mean[None, :] - K_tetr.mean(axis=1, keepdims=True) + all_mean
    return Kc, Kt


def spectral(K_trtr=None, K_tetr=None, F_tr=None, F_te=None):
    """Eigendecomposition of the centred training kernel, and the test kernel in its basis.

    Give either kernels (``K_trtr``, ``K_tetr``) or features (``F_tr``,
    ``F_te``).  With features and fewer features than samples, the
    decomposition goes through the small ``p × p`` covariance instead of the
    ``n × n`` kernel (same result, cheaper).

    Returns
    -------
    s : ndarray (r,)   eigenvalues (≥ 0)
    V : ndarray (n_train, r)   orthonormal eigenvectors
    KtV : ndarray (n_test, r)  centred test/train kernel times ``V``
    """
    if F_tr is not None:
        F_tr = np.asarray(F_tr, dtype=np.float64)
        F_te = np.asarray(F_te, dtype=np.float64)
        n, p = F_tr.shape
        if p < n:
            mu = F_tr.mean(axis=0)
            Fc = F_tr - mu
            w, W = np.linalg.eigh(Fc.T @ Fc)
            keep = w > max(w.max(), 1e-300) * 1e-10
            w, W = w[keep], W[:, keep]
            sq = np.sqrt(w)
            V = (Fc @ W) / sq
            KtV = ((F_te - mu) @ W) * sq
            return w, V, KtV
        K_trtr = F_tr @ F_tr.T
        K_tetr = F_te @ F_tr.T
    Kc, Kt = center_kernels(K_trtr, K_tetr)
    s, V = np.linalg.eigh(Kc)
    s = np.clip(s, 0.0, None)
    return s, V, Kt @ V


def _group_members(inner_groups, n):
    inner_groups = np.arange(n) if inner_groups is None else np.asarray(inner_groups)
    members = [np.flatnonzero(inner_groups == g) for g in np.unique(inner_groups)]
    if len(members) < 2:  # a single group: fall back to leave-one-sample-out
        members = [np.array([i]) for i in range(n)]
    return members


def _loo_direct(s, V, Yc, a, members):
    """Leave-one-group-out predictions for one penalty, without forming the hat matrix.

    Exact closed form: the residual of a left-out group is
    ``(I - H_gg)^-1 (y_g - ŷ_g)`` with ``H = V diag(s/(s+a)) Vᵀ``.
    """
    d = s / (s + a)
    fitted = V @ (d[:, None] * (V.T @ Yc))
    out = np.empty_like(Yc)
    for idx in members:
        Vg = V[idx]
        Hgg = (Vg * d) @ Vg.T
        res = Yc[idx] - fitted[idx]
        out[idx] = Yc[idx] - np.linalg.solve(np.eye(len(idx)) - Hgg, res)
    return out


def _loo_operator(s, V, a, members, dtype):
    """The (label-independent) matrix mapping targets to leave-one-group-out predictions."""
    d = s / (s + a)
    H = (V * d) @ V.T
    G = np.empty_like(H)
    for idx in members:
        M = np.linalg.inv(np.eye(len(idx)) - H[np.ix_(idx, idx)])
        # loo_pred_g = y_g - M (y_g - H_g: y) = (I - M) y_g + M H_g: y
        G[idx] = M @ H[idx]
        G[np.ix_(idx, idx)] += np.eye(len(idx)) - M
    return G.astype(dtype)


def solve_fold(K_trtr, K_tetr, codes_tr, inner_groups, n_classes, alphas=None,
               chunk: int = 256, F_tr=None, F_te=None, inner_units=None):
    """Nested-CV dual ridge on one fold, for one or many label vectors.

    Parameters
    ----------
    K_trtr : ndarray (n_train, n_train) or None
    K_tetr : ndarray (n_test, n_train) or None
    codes_tr : ndarray of int, shape (n_train,) or (n_train, n_label_sets)
        Class codes of the training samples; extra columns are permuted labels.
    inner_groups : ndarray (n_train,)
        Groups (runs) for the inner leave-one-group-out penalty selection.
    n_classes : int
    alphas : sequence of float, optional
        Relative penalties (see :data:`DEFAULT_ALPHAS`).
    F_tr, F_te : ndarray, optional
        Features instead of kernels.
    inner_units : ndarray (n_train,), optional
        When given, the inner accuracy is that of units (e.g. blocks) scored
        by the mean decision value of their samples, matching how the test
        units are scored.

    Returns
    -------
    scores : ndarray (n_test, n_classes, n_label_sets)
        Test decision values.
    best_alpha : ndarray (n_label_sets,)
    inner_score : ndarray (n_label_sets,)
        Inner leave-one-group-out accuracy at the chosen penalty.
    """
    alphas = DEFAULT_ALPHAS if alphas is None else alphas
    codes_tr = np.asarray(codes_tr)
    if codes_tr.ndim == 1:
        codes_tr = codes_tr[:, None]
    n_tr, n_sets = codes_tr.shape
    s, V, KtV = spectral(K_trtr, K_tetr, F_tr, F_te)
    scale = max(float(s.sum()) / n_tr, 1e-12)
    abs_alphas = np.asarray(alphas, dtype=float) * scale
    members = _group_members(inner_groups, n_tr)
    n_te = KtV.shape[0]
    batched = n_sets > 8
    dtype = np.float32 if batched else np.float64
    ops = [_loo_operator(s, V, a, members, dtype) for a in abs_alphas] if batched else None
    VT = V.T.astype(dtype)
    unit_inv = None
    if inner_units is not None:
        _, unit_first, unit_inv = np.unique(inner_units, return_index=True, return_inverse=True)
        n_units = len(unit_first)
        unit_sum = np.zeros((n_units, n_tr), dtype=dtype)
        unit_sum[unit_inv, np.arange(n_tr)] = 1.0
    scores = np.empty((n_te, n_classes, n_sets), dtype=np.float32)
    best_alpha = np.empty(n_sets)
    inner = np.empty(n_sets)
    for start in range(0, n_sets, chunk):
        cols = codes_tr[:, start:start + chunk]
        m = cols.shape[1]
        Y = -np.ones((n_tr, n_classes, m), dtype=dtype)
        np.put_along_axis(Y, cols[:, None, :], 1.0, axis=1)
        ym = Y.mean(axis=0, keepdims=True)
        Yc = (Y - ym).reshape(n_tr, n_classes * m)
        Z = VT @ Yc  # labels in the eigenbasis, shared by every penalty
        best = np.full(m, -np.inf)
        best_scores = np.zeros((n_te, n_classes, m), dtype=np.float32)
        chosen = np.zeros(m)
        for k, a in enumerate(abs_alphas):
            if batched:
                P = ops[k] @ Yc
            else:
                P = _loo_direct(s, V, Yc, a, members)
            P = P.reshape(n_tr, n_classes, m) + ym
            if unit_inv is None:
                acc = (P.argmax(axis=1) == cols).mean(axis=0)
            else:
                agg = (unit_sum @ P.reshape(n_tr, -1)).reshape(n_units, n_classes, m)
                acc = (agg.argmax(axis=1) == cols[unit_first]).mean(axis=0)
            mse = ((P - Y) ** 2).mean(axis=(0, 1))
            crit = acc - 1e-6 * mse  # accuracy first, squared error breaks ties
            better = crit > best
            if better.any():
                S = ((KtV / (s + a)).astype(dtype) @ Z).reshape(n_te, n_classes, m) + ym
                best_scores[:, :, better] = S[:, :, better]
                best[better] = crit[better]
                chosen[better] = a
        scores[:, :, start:start + m] = best_scores
        best_alpha[start:start + m] = chosen
        inner[start:start + m] = best
    return scores, best_alpha, inner


class DualRidgeClassifier(ClassifierMixin, BaseEstimator):
    """One-vs-rest ridge classifier solved in the dual, penalty chosen by group CV.

    Parameters
    ----------
    alphas : sequence of float
        Candidate penalties, relative to the mean eigenvalue of the centred
        Gram matrix (trace / n_samples). The one with the best leave-one-group-out accuracy
        inside the training data is used (closed form, no refitting).
    fit_intercept : bool
        Centre features and targets on the training mean.

    Attributes
    ----------
    classes_ : ndarray
    coef_ : ndarray (n_classes, n_features)
    intercept_ : ndarray (n_classes,)
    alpha_ : float
        The selected penalty.
    cv_score_ : float
        Inner cross-validated accuracy at ``alpha_``.
    """

    def __init__(self, alphas=DEFAULT_ALPHAS, fit_intercept=True):
        self.alphas = alphas
        self.fit_intercept = fit_intercept

    def fit(self, X, y, groups=None):
        """Fit on ``X`` (n_samples, n_features); ``groups`` (e.g. runs) drive penalty selection."""
        X, y = validate_data(self, X, y, dtype=(np.float64, np.float32))
        check_classification_targets(y)
        self.classes_, codes = np.unique(y, return_inverse=True)
        if len(self.classes_) < 2:
            raise LabelError(f"only one class in the training labels ({self.classes_[0]!r})",
                            "include at least two classes")
        alphas = np.atleast_1d(np.asarray(self.alphas, dtype=float))
        if np.any(alphas <= 0):
            raise ValueError("alphas must be positive")
        mu = X.mean(axis=0) if self.fit_intercept else np.zeros(X.shape[1])
        Xc = X - mu
        if groups is None:
            groups = np.arange(len(y))
        n_classes = len(self.classes_)
        n = len(y)
        if X.shape[1] < n:
            s, V, _ = spectral(F_tr=Xc, F_te=Xc[:1])
        else:
            K = gram(Xc)
            s, V, _ = spectral(K, K[:1])
        members = _group_members(groups, n)
        Y = one_hot(codes, n_classes)
        ym = Y.mean(axis=0) if self.fit_intercept else np.zeros(n_classes)
        Yc = Y - ym
        abs_alphas = alphas * max(float(s.sum()) / n, 1e-12)
        accs = [((_loo_direct(s, V, Yc, a, members) + ym).argmax(1) == codes).mean()
                for a in abs_alphas]
        best = int(np.argmax(accs))
        self.alpha_ = float(abs_alphas[best])
        self.cv_score_ = float(accs[best])
        dual = V @ ((V.T @ Yc) / (s + self.alpha_)[:, None])
        self.coef_ = (Xc.T @ dual).T
        self.intercept_ = ym - self.coef_ @ mu
        return self

    def decision_function(self, X):
        check_is_fitted(self, "coef_")
        X = validate_data(self, X, reset=False, dtype=(np.float64, np.float32))
        scores = X @ self.coef_.T + self.intercept_
        if len(self.classes_) == 2:
            return scores[:, 1] - scores[:, 0]
        return scores

    def predict(self, X):
        scores = self.decision_function(X)
        if scores.ndim == 1:
            return self.classes_[(scores > 0).astype(int)]
        return self.classes_[scores.argmax(axis=1)]
