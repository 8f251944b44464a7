"""Connectivity features: same numbers as nilearn, reference fitted on training subjects only."""

from __future__ import annotations

import numpy as np
import pytest
from nilearn.connectome import ConnectivityMeasure

from decoder.errors import ConfigError, DataError
from decoder.features.connectome import (Connectivity, SubjectCovariance, geometric_mean,
                                         log_euclidean_mean, subject_covariances,
                                         sym_matrix_to_vec, vec_to_sym_matrix)


def _series(n=12, t=80, r=7, seed=0):
    rng = np.random.default_rng(seed)
    mix = rng.normal(size=(r, r)) * 0.4 + np.eye(r)
    return [rng.normal(size=(t + 3 * i, r)) @ mix for i in range(n)]


def test_covariances_are_spd_and_correlation_scaled():
    covs = subject_covariances(_series())
    assert covs.shape == (12, 7, 7)
    assert np.allclose(covs, np.swapaxes(covs, 1, 2))
    assert np.linalg.eigvalsh(covs).min() > 0
    # Ledoit-Wolf of z-scored series keeps a unit mean diagonal
    assert np.allclose(np.trace(covs, axis1=1, axis2=2) / 7, 1.0)


def test_fewer_time_points_than_regions_still_gives_spd():
    rng = np.random.default_rng(1)
    covs = subject_covariances([rng.normal(size=(20, 40)) for _ in range(3)])
    assert np.linalg.eigvalsh(covs).min() > 0


def test_region_without_signal_falls_back_to_identity_row():
    ts = _series(n=1)[0]
    ts[:, 2] = 0.0
    ts[:5, 4] = np.nan
    cov = subject_covariances([ts])[0]
    assert cov[2, 2] == 1.0 and np.all(cov[2, np.arange(7) != 2] == 0)
    assert np.all(np.isfinite(cov))


def test_subject_with_almost_no_signal_is_a_clear_error():
    ts = np.zeros((50, 5))
    ts[:, 0] = np.arange(50)
    with pytest.raises(DataError, match="fewer than 2 regions"):
        subject_covariances([ts])


@pytest.mark.parametrize("kind", ["correlation", "partial correlation", "tangent", "precision"])
def test_matches_nilearn_connectivity_measure(kind):
    series = _series()
    covs = subject_covariances(series)
    ours = Connectivity(kind=kind, reference="geometric", discard_diagonal=False).fit(covs[:9])
    # nilearn on the same covariances: identity "time series" trick is not possible, so
    # feed nilearn the covariances through a pass-through estimator.
    from sklearn.covariance import EmpiricalCovariance

    class _Given(EmpiricalCovariance):
        def fit(self, X, y=None):
            self.covariance_ = X
            return self

    cm = ConnectivityMeasure(kind=kind, cov_estimator=_Given(), vectorize=False,
                             standardize=False)
    # ConnectivityMeasure calls cov_estimator.fit(subject) → we hand it each covariance
    cm.fit(list(covs[:9]))
    theirs = cm.transform(list(covs[9:]))
    assert np.allclose(ours.transform_matrices(covs[9:]), theirs, atol=1e-5)


def test_log_euclidean_and_geometric_means_coincide_for_commuting_matrices():
    rng = np.random.default_rng(3)
    q, _ = np.linalg.qr(rng.normal(size=(5, 5)))
    covs = np.stack([q @ np.diag(rng.uniform(0.5, 2, 5)) @ q.T for _ in range(6)])
    assert np.allclose(geometric_mean(covs), log_euclidean_mean(covs), atol=1e-6)


def test_tangent_reference_depends_on_training_subjects_only():
    covs = subject_covariances(_series(n=20))
    train, test = np.arange(14), np.arange(14, 20)
    a = Connectivity(kind="tangent").fit(covs[train])
    altered = covs.copy()
    altered[test] = altered[test] * 5.0  # the test subjects change wildly
    b = Connectivity(kind="tangent").fit(altered[train])
    assert np.allclose(a.reference_, b.reference_)
    assert np.allclose(a.reference_, geometric_mean(covs[train]))
    assert not np.allclose(a.reference_, geometric_mean(covs))
    # at the reference the tangent vector of the mean itself is ~0
    assert np.abs(a.transform(a.reference_[None])).max() < 1e-6


def test_vectorisation_round_trip_and_norm():
    mats = subject_covariances(_series(n=3))
    vec = sym_matrix_to_vec(mats)
    assert np.allclose(vec_to_sym_matrix(vec), mats)
    assert np.allclose(np.linalg.norm(vec, axis=1), np.linalg.norm(mats, axis=(1, 2)))
    off = sym_matrix_to_vec(mats, discard_diagonal=True)
    assert off.shape == (3, 21)
    assert np.allclose(vec_to_sym_matrix(off, discard_diagonal=True, diagonal=1.0)[:, 0, 1],
                       mats[:, 0, 1])


def test_time_series_input_and_stateless_covariance_step():
    series = _series()
    step = SubjectCovariance().fit(series)
    assert np.allclose(step.transform(series), subject_covariances(series))
    feats = Connectivity(kind="correlation").fit(series).transform(series)
    assert feats.shape == (12, 21)


def test_bad_kind_and_region_mismatch():
    covs = subject_covariances(_series())
    with pytest.raises(ConfigError, match="did-you|not supported"):
        Connectivity(kind="coherence").fit(covs)
    fitted = Connectivity(kind="correlation").fit(covs)
    with pytest.raises(DataError, match="regions"):
        fitted.transform(covs[:, :5, :5])


@pytest.mark.parametrize("shape", [(200, 30), (20, 40), (50, 1), (3, 111)])
def test_ledoit_wolf_matches_scikit_learn(shape):
    from sklearn.covariance import ledoit_wolf
    from decoder.features.connectome import _ledoit_wolf
    rng = np.random.default_rng(shape[0])
    z = rng.normal(size=shape) @ np.diag(rng.uniform(0.5, 2, shape[1]))
    np.testing.assert_allclose(_ledoit_wolf(z), ledoit_wolf(z, assume_centered=True)[0],
                               rtol=1e-10, atol=1e-12)
