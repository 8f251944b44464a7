"""ComBat: neuroCombat arithmetic, covariates preserved, unseen sites handled without labels."""

from __future__ import annotations

import logging

import numpy as np
import pandas as pd
import pytest

from decoder.errors import ConfigError, DataError
from decoder.features.harmonize import ComBat


def _data(n_per=30, p=25, seed=0, sites=("a", "b", "c")):
    rng = np.random.default_rng(seed)
    site = np.repeat(sites, n_per)
    n = len(site)
    age = rng.uniform(8, 40, n)
    sex = rng.integers(1, 3, n).astype(float)
    loc = {s: rng.normal(scale=3.0, size=p) for s in sites}
    scale = {s: rng.uniform(0.5, 2.5, size=p) for s in sites}
    age_effect = rng.normal(scale=0.2, size=p)
    X = np.stack([loc[s] + scale[s] * rng.normal(size=p) for s in site]) + age[:, None] * age_effect
    cov = pd.DataFrame({"age": age, "sex": sex})
    return X, site, cov, age_effect


# neuroHarmonize builds np.matrix internally; its warning is not ours
@pytest.mark.filterwarnings("ignore::PendingDeprecationWarning")
def test_matches_neuroharmonize_on_training_sites():
    nh = pytest.importorskip("neuroHarmonize")
    X, site, cov, _ = _data()
    covars = pd.concat([pd.DataFrame({"SITE": site}), cov], axis=1)
    _, theirs = nh.harmonizationLearn(X, covars)
    ours = ComBat().fit_transform(X, sites=site, covariates=cov)
    assert np.allclose(ours, theirs, atol=1e-5)


def test_removes_site_means_but_keeps_age_effect():
    X, site, cov, age_effect = _data(n_per=60)
    H = ComBat().fit_transform(X, sites=site, covariates=cov)
    site_means = np.stack([H[site == s].mean(0) - 0.0 for s in np.unique(site)])
    raw_means = np.stack([X[site == s].mean(0) for s in np.unique(site)])
    assert site_means.std(axis=0).mean() < 0.25 * raw_means.std(axis=0).mean()
    design = np.column_stack([np.ones(len(H)), cov["age"]])
    slope = np.linalg.lstsq(design, H, rcond=None)[0][1]
    assert np.corrcoef(slope, age_effect)[0, 1] > 0.9


def test_unseen_site_self_uses_its_own_features_and_no_labels():
    X, site, cov, _ = _data()
    train, test = site != "c", site == "c"
    cb = ComBat(unseen_site="self").fit(X[train], sites=site[train], covariates=cov[train])
    H = cb.transform(X[test], sites=site[test], covariates=cov[test])
    # the held-out site's offset is removed: its mean lands on the training grand mean
    train_mean = cb.transform(X[train], sites=site[train], covariates=cov[train]).mean(0)
    assert np.abs(H.mean(0) - train_mean).mean() < 0.3 * np.abs(X[test].mean(0) - train_mean).mean()
    # and the transform signature has no labels at all
    assert "y" not in ComBat.transform.__code__.co_varnames


def test_subjects_without_a_site_are_never_harmonised_as_one_new_site():
    X, site, cov, _ = _data()
    train = site != "c"
    cb = ComBat(unseen_site="self").fit(X[train], sites=site[train], covariates=cov[train])
    # new subjects of unknown scanners: no site adjustment, as each alone would get
    pooled = ComBat(unseen_site="pooled").fit(X[train], sites=site[train], covariates=cov[train])
    assert np.allclose(cb.transform(X[~train], covariates=cov[~train]),
                       pooled.transform(X[~train], covariates=cov[~train]))
    assert np.allclose(cb.transform(X[~train], covariates=cov[~train]), X[~train])


def test_unseen_site_pooled_leaves_features_unchanged(caplog):
    X, site, cov, _ = _data()
    train = site != "c"
    cb = ComBat(unseen_site="pooled").fit(X[train], sites=site[train], covariates=cov[train])
    H = cb.transform(X[~train], sites=site[~train], covariates=cov[~train])
    assert np.allclose(H, X[~train])


def test_single_subject_sites_are_logged_and_treated_as_unseen(caplog):
    X, site, cov, _ = _data()
    site = site.astype(object)
    site[0] = "lonely"
    with caplog.at_level(logging.WARNING, logger="decoder.features.harmonize"):
        cb = ComBat().fit(X, sites=site, covariates=cov)
    assert "lonely" in caplog.text and "lonely" not in cb.sites_
    with caplog.at_level(logging.WARNING, logger="decoder.features.harmonize"):
        out = cb.transform(X[:1], sites=site[:1], covariates=cov[:1])
    assert np.allclose(out, X[:1])  # one subject of an unseen site: pooled, logged
    assert "no site adjustment" in caplog.text


def test_fit_sees_only_the_rows_it_is_given():
    X, site, cov, _ = _data()
    train = np.arange(len(X)) % 3 != 0
    a = ComBat().fit(X[train], sites=site[train], covariates=cov[train])
    X2 = X.copy()
    X2[~train] += 100.0  # test rows change: the fitted parameters must not
    b = ComBat().fit(X2[train], sites=site[train], covariates=cov[train])
    assert np.allclose(a.gamma_, b.gamma_) and np.allclose(a.stand_mean_, b.stand_mean_)


def test_bad_inputs():
    X, site, cov, _ = _data()
    with pytest.raises(DataError, match="site of every subject"):
        ComBat().fit(X)
    with pytest.raises(ConfigError, match="unseen_site"):
        ComBat(unseen_site="guess").fit(X, sites=site, covariates=cov)
    bad = cov.copy()
    bad.loc[3, "age"] = np.nan
    with pytest.raises(DataError, match="NaN"):
        ComBat().fit(X, sites=site, covariates=bad)


def test_a_warning_repeated_by_every_fold_is_said_once(caplog):
    X, site, cov, _ = _data()
    site = site.astype(object)
    site[0] = "lonely"
    with caplog.at_level(logging.WARNING, logger="decoder.features.harmonize"):
        for _ in range(5):   # five folds with the same single-subject site
            ComBat().fit(X, sites=site, covariates=cov)
    assert caplog.text.count("lonely") == 1


def test_rows_it_does_not_adjust_need_no_covariates_and_small_new_sites_are_still_said(
        caplog):
    from decoder.features import harmonize
    X, site, cov, _ = _data()
    train = site != "c"
    cb = ComBat(unseen_site="self").fit(X[train], sites=site[train], covariates=cov[train])
    # no site (as scikit-learn's scorers call it): returned exactly, covariates not needed
    assert np.array_equal(cb.transform(X[~train]), X[~train])
    harmonize._WARNED.clear()
    with caplog.at_level(logging.WARNING, logger="decoder.features.harmonize"):
        out = cb.transform(X[:1], sites=np.array(["tiny"]))
    assert np.array_equal(out, X[:1]) and "unseen site 'tiny' has 1 subject(s)" in caplog.text
    with pytest.raises(DataError, match="fitted with 2 covariates, got 0"):
        cb.transform(X[train][:5], sites=site[train][:5])   # a training site is adjusted
