"""Our estimators keep scikit-learn's estimator contract.

Classifiers on ordinary (n_samples, n_features) arrays pass every check of
:func:`sklearn.utils.estimator_checks.parametrize_with_checks`: they clone,
validate their input in ``fit``, refuse unfitted use with ``NotFittedError``,
refuse a different number of features at prediction, and give decisions that
agree with their predictions and probabilities.

The connectome estimators take a subject's time series or covariance (not one
row per sample) and sites, so the generic checks cannot feed them; they are held
to the parts of the contract that do not depend on the input's form.
"""

import numpy as np
import pytest
from sklearn.base import clone
from sklearn.exceptions import NotFittedError
from sklearn.utils import estimator_checks as checks
from sklearn.utils.estimator_checks import parametrize_with_checks

from decoder.errors import DataError, LabelError
from decoder.features.connectome import Connectivity, SubjectCovariance
from decoder.features.extract import LabelsExtractor
from decoder.features.harmonize import ComBat
from decoder.models.biomarker_models import ConnectomeClassifier, LooRidgeClassifier
from decoder.models.dual_ridge import DualRidgeClassifier


def _classifiers():
    found = [DualRidgeClassifier(), LooRidgeClassifier()]
    try:
        import torch  # noqa: F401
    except ImportError:  # torch is an optional extra
        return found
    from decoder.models.torch_connectome import TorchMLPClassifier
    from decoder.models.torch_models import TorchClassifier
    # fewer epochs (a larger step for the softmax model) than the defaults, so that the
    # checks' many small fits take seconds; the contract does not depend on them
    return found + [TorchClassifier(max_epochs=60, lr=1e-2), TorchMLPClassifier(epochs=10)]


@parametrize_with_checks(_classifiers())
def test_classifier_passes_scikit_learn_checks(estimator, check):
    check(estimator)


DOMAIN_ESTIMATORS = [Connectivity, SubjectCovariance, ComBat, ConnectomeClassifier,
                     LabelsExtractor]


@pytest.mark.parametrize("cls", DOMAIN_ESTIMATORS, ids=lambda c: c.__name__)
@pytest.mark.parametrize("check", [checks.check_no_attributes_set_in_init,
                                   checks.check_parameters_default_constructible,
                                   checks.check_get_params_invariance,
                                   checks.check_set_params],
                         ids=lambda c: c.__name__)
def test_connectome_estimator_keeps_the_parameter_contract(cls, check):
    check(cls.__name__, cls())


@pytest.mark.parametrize("cls", DOMAIN_ESTIMATORS, ids=lambda c: c.__name__)
def test_connectome_estimator_clones_with_its_parameters(cls):
    est = cls()
    params = est.get_params(deep=False)
    copy = clone(est)
    assert copy is not est
    assert copy.get_params(deep=False).keys() == params.keys()


@pytest.mark.parametrize("cls, method", [(Connectivity, "transform"), (ComBat, "transform"),
                                         (LabelsExtractor, "transform"),
                                         (ConnectomeClassifier, "predict"),
                                         (ConnectomeClassifier, "predict_proba"),
                                         (ConnectomeClassifier, "decision_function")],
                         ids=lambda v: v if isinstance(v, str) else v.__name__)
def test_connectome_estimator_refuses_use_before_fit(cls, method):
    with pytest.raises(NotFittedError):
        getattr(cls(), method)(np.ones((3, 4, 4)))


def test_one_class_labels_are_a_one_line_error_and_a_value_error():
    X = np.random.default_rng(0).normal(size=(6, 3))
    for est in (DualRidgeClassifier(), LooRidgeClassifier()):
        with pytest.raises(LabelError, match="one class") as err:
            est.fit(X, np.ones(6))
        assert isinstance(err.value, DataError) and isinstance(err.value, ValueError)
        assert "fix:" in str(err.value) and "\n" not in str(err.value)


def test_binary_torch_decision_agrees_with_prediction_and_probability():
    pytest.importorskip("torch")
    from decoder.models.torch_models import TorchClassifier
    rng = np.random.default_rng(0)
    X = rng.normal(size=(60, 5))
    y = np.where(X[:, 0] + 0.3 * rng.normal(size=60) > 0, "b", "a")
    est = TorchClassifier(max_epochs=60, lr=1e-2).fit(X, y)
    d = est.decision_function(X)
    assert d.shape == (60,)
    np.testing.assert_array_equal(est.predict(X), np.where(d > 0, "b", "a"))
    p = est.predict_proba(X)[:, 1]
    assert np.all(np.diff(p[np.argsort(d)]) >= 0)   # the same order
    with pytest.raises(ValueError, match="features"):
        est.predict(X[:, :4])


def test_classifiers_compose_in_a_pipeline_from_the_models_package():
    from sklearn.model_selection import cross_val_score
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    import decoder.models as models
    rng = np.random.default_rng(0)
    X = rng.normal(size=(80, 10))
    y = (X[:, 0] + 0.5 * rng.normal(size=80) > 0).astype(int)
    for name in ("DualRidgeClassifier", "LooRidgeClassifier"):
        pipe = make_pipeline(StandardScaler(), getattr(models, name)())
        assert cross_val_score(pipe, X, y, cv=5).mean() > 0.7
    with pytest.raises(AttributeError):
        models.NoSuchClassifier  # noqa: B018
