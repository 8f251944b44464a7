"""The dual ridge decoder: exact, and its shortcuts equal brute force."""

import numpy as np
import pytest
from sklearn.linear_model import Ridge

from decoder.models.dual_ridge import (DualRidgeClassifier, _group_members, _loo_direct,
                                       _loo_operator, one_hot, solve_fold, spectral)


def _data(n=60, p=200, k=3, seed=0):
    rng = np.random.default_rng(seed)
    y = rng.integers(0, k, n)
    means = rng.normal(size=(k, p))
    X = means[y] * 0.5 + rng.normal(size=(n, p))
    groups = np.repeat(np.arange(6), n // 6)
    return X, y, groups


def test_coefficients_equal_primal_ridge_at_the_selected_penalty():
    X, y, g = _data()
    clf = DualRidgeClassifier().fit(X, y, groups=g)
    ref = Ridge(alpha=clf.alpha_).fit(X, one_hot(y, 3))
    np.testing.assert_allclose(clf.coef_, ref.coef_, rtol=1e-6, atol=1e-8)
    np.testing.assert_allclose(clf.intercept_, ref.intercept_, rtol=1e-6, atol=1e-8)


@pytest.mark.parametrize("p", [30, 200])  # fewer and more features than samples
def test_closed_form_leave_one_group_out_equals_refitting(p):
    X, y, g = _data(p=p)
    Y = one_hot(y, 3)
    Yc = Y - Y.mean(0)
    Xc = X - X.mean(0)
    s, V, _ = spectral(F_tr=Xc, F_te=Xc[:1])
    a = 5.0
    members = _group_members(g, len(y))
    fast = _loo_direct(s, V, Yc, a, members)
    op = _loo_operator(s, V, a, members, np.float64) @ Yc
    for grp in np.unique(g):
        tr, te = g != grp, g == grp
        # intercept-free ridge on the globally centred data: what the closed form computes
        ref = Ridge(alpha=a, fit_intercept=False).fit(Xc[tr], Yc[tr]).predict(Xc[te])
        np.testing.assert_allclose(fast[te], ref, rtol=1e-6, atol=1e-8)
        np.testing.assert_allclose(op[te], ref, rtol=1e-6, atol=1e-8)


def test_batched_permutations_equal_one_at_a_time():
    X, y, g = _data(n=72, p=150)
    tr, te = g != 0, g == 0
    rng = np.random.default_rng(1)
    codes = np.stack([y[tr]] + [rng.permutation(y[tr]) for _ in range(12)], axis=1)
    batch, a_batch, _ = solve_fold(None, None, codes, g[tr], 3, F_tr=X[tr], F_te=X[te])
    for j in range(codes.shape[1]):
        one, a_one, _ = solve_fold(None, None, codes[:, j], g[tr], 3, F_tr=X[tr], F_te=X[te])
        assert a_one[0] == pytest.approx(a_batch[j])
        np.testing.assert_allclose(one[:, :, 0], batch[:, :, j], rtol=1e-3, atol=1e-4)


def test_kernel_and_feature_paths_agree():
    X, y, g = _data(n=60, p=40)
    tr, te = g != 2, g == 2
    K = X @ X.T
    a, _, _ = solve_fold(K[np.ix_(tr, tr)], K[np.ix_(te, tr)], y[tr], g[tr], 3)
    b, _, _ = solve_fold(None, None, y[tr], g[tr], 3, F_tr=X[tr], F_te=X[te])
    np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)


def test_estimator_contract():
    from sklearn.base import clone
    from sklearn.exceptions import NotFittedError
    X, y, g = _data()
    clf = DualRidgeClassifier(alphas=(0.1, 1.0))
    assert clone(clf).get_params()["alphas"] == (0.1, 1.0)
    with pytest.raises(NotFittedError):
        clf.predict(X)
    clf.fit(X, y)
    assert set(clf.predict(X)) <= set(y)
    assert clf.score(X, y) > 0.9  # separable in-sample
    binary = DualRidgeClassifier().fit(X, y == 1)
    assert binary.decision_function(X).ndim == 1


def test_one_class_is_a_clear_error():
    from decoder.errors import DataError
    X, _, _ = _data()
    with pytest.raises(DataError, match="only one class"):
        DualRidgeClassifier().fit(X, np.zeros(len(X)))
