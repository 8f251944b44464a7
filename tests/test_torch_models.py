"""The torch classifiers: they learn, they are reproducible, they save safely, CUDA when present."""

from __future__ import annotations

import numpy as np
import pytest

torch = pytest.importorskip("torch", reason="torch is not installed (pip install decoder[torch])")

from decoder.errors import ConfigError  # noqa: E402
from decoder.models.torch_connectome import TorchMLPClassifier  # noqa: E402
from decoder.models.torch_models import TorchClassifier  # noqa: E402

needs_cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device")


def _separable(n=300, p=200, seed=0):
    """Two classes differing along a few of many noisy features (connectome-like shape)."""
    rng = np.random.default_rng(seed)
    y = np.array(["control", "autism"])[rng.integers(0, 2, n)]
    X = rng.normal(size=(n, p))
    X[:, :5] += np.where(y == "autism", 1.0, -1.0)[:, None]
    return X, y


def test_mlp_learns_a_separable_problem_and_keeps_numpy_weights():
    X, y = _separable()
    est = TorchMLPClassifier(device="cpu").fit(X[:200], y[:200])
    assert list(est.classes_) == ["autism", "control"]
    assert est.device_ == "cpu"
    assert np.mean(est.predict(X[200:]) == y[200:]) > 0.9
    assert all(isinstance(w, np.ndarray) for w in est.weights_)
    p = est.predict_proba(X[200:])
    np.testing.assert_allclose(p.sum(axis=1), 1.0)
    # predict_proba's positive column is the sigmoid of decision_function
    d = est.decision_function(X[200:])
    np.testing.assert_allclose(p[:, 1], 1 / (1 + np.exp(-d)), rtol=1e-10)


def test_mlp_numpy_forward_pass_matches_the_trained_network():
    X, y = _separable(n=120, p=30)
    est = TorchMLPClassifier(device="cpu", epochs=5).fit(X, y)
    net = est._net(X.shape[1], 2)
    lin = [m for m in net if isinstance(m, torch.nn.Linear)]
    with torch.no_grad():
        for m, (w, b) in zip(lin, (est.weights_[:2], est.weights_[2:])):
            m.weight.copy_(torch.from_numpy(w))
            m.bias.copy_(torch.from_numpy(b))
    net = net.double().eval()
    with torch.no_grad():
        logits = net(torch.from_numpy(X)).numpy()
    np.testing.assert_allclose(est.decision_function(X), logits[:, 1] - logits[:, 0],
                               rtol=1e-8, atol=1e-10)


def test_mlp_is_reproducible_with_its_random_state():
    X, y = _separable(n=150, p=40)
    a = TorchMLPClassifier(device="cpu", epochs=5, random_state=3).fit(X, y)
    b = TorchMLPClassifier(device="cpu", epochs=5, random_state=3).fit(X, y)
    c = TorchMLPClassifier(device="cpu", epochs=5, random_state=4).fit(X, y)
    for wa, wb in zip(a.weights_, b.weights_):
        np.testing.assert_array_equal(wa, wb)
    assert not np.allclose(a.weights_[0], c.weights_[0])


@pytest.mark.parametrize("param", [{"hidden": 0}, {"epochs": 0}])
def test_mlp_rejects_empty_networks_with_a_config_error(param):
    X, y = _separable(n=40, p=5)
    with pytest.raises(ConfigError, match=r"must be an int in the range \[1, inf\)"):
        TorchMLPClassifier(**param).fit(X, y)


def test_mlp_inside_the_connectome_classifier_saves_and_loads_with_skops(tmp_path):
    sio = pytest.importorskip("skops.io")
    from decoder.models.biomarker_models import ConnectomeClassifier
    from pipelines.biomarker import _ALLOWED_TYPES
    rng = np.random.default_rng(5)
    y = np.array(["control", "autism"] * 20)
    series = []
    for label in y:  # autism subjects: regions 0 and 1 coupled
        ts = rng.normal(size=(60, 6))
        if label == "autism":
            ts[:, 1] += 0.9 * ts[:, 0]
        series.append(ts)
    est = ConnectomeClassifier(model="mlp", model_params={"device": "cpu", "epochs": 30},
                               kinds=("correlation",)).fit(series, y)
    path = tmp_path / "mlp.skops"
    path.write_bytes(sio.dumps(est))
    untrusted = sio.get_untrusted_types(file=str(path))
    assert set(untrusted) <= _ALLOWED_TYPES
    loaded = sio.load(str(path), trusted=untrusted)
    np.testing.assert_allclose(loaded.predict_proba(series), est.predict_proba(series))
    assert np.mean(est.predict(series) == y) > 0.8


@pytest.mark.parametrize("hidden", [(), (16,)], ids=["torch-linear", "torch-mlp"])
def test_torch_classifier_saves_with_skops_through_its_numpy_weights(tmp_path, hidden):
    sio = pytest.importorskip("skops.io")
    from decoder.models.category_model import _ALLOWED_TYPES
    X, y = _separable(n=200, p=30)
    est = TorchClassifier(hidden=hidden, device="cpu", max_epochs=50).fit(X, y)
    assert all(isinstance(w, np.ndarray) for w in est.weights_.values())
    path = tmp_path / "model.skops"
    path.write_bytes(sio.dumps(est))
    assert hasattr(est, "model_"), "saving must not strip the fitted module"
    untrusted = sio.get_untrusted_types(file=str(path))
    # the file holds arrays and the estimator, no torch object
    assert untrusted == ["decoder.models.torch_models.TorchClassifier"]
    assert set(untrusted) <= _ALLOWED_TYPES
    loaded = sio.load(str(path), trusted=untrusted)
    np.testing.assert_array_equal(loaded.predict_proba(X), est.predict_proba(X))
    np.testing.assert_array_equal(loaded.predict(X), est.predict(X))


def test_torch_classifier_linear_model_exposes_coefficients_in_input_units():
    X, y = _separable(n=300, p=20)
    est = TorchClassifier(device="cpu").fit(X, y)
    assert est.coef_.shape == (2, 20)
    assert est.device_ == "cpu"
    # the informative features carry the largest weights
    top = np.argsort(-np.abs(est.coef_[1] - est.coef_[0]))[:5]
    assert set(top) == set(range(5))


def test_provenance_records_the_torch_version_and_device():
    pytest.importorskip("nilearn")
    from decoder.results import build_provenance
    prov = build_provenance({"task": "biomarker", "model": "mlp"}, [])
    assert prov["libraries"]["torch"] == torch.__version__
    expected = torch.cuda.get_device_name(0) if torch.cuda.is_available() else "cpu"
    assert prov["accelerator"] == expected


@needs_cuda
@pytest.mark.parametrize("make", [
    lambda dev: TorchMLPClassifier(device=dev, epochs=20),
    lambda dev: TorchClassifier(hidden=(32,), device=dev),
], ids=["mlp", "torch-classifier"])
def test_cuda_training_matches_cpu_accuracy(make):
    # dropout masks come from each device's own generator, so the fits differ
    # slightly; on an easy problem both must be near-perfect
    X, y = _separable(n=400, p=50, seed=1)
    cpu = make("cpu").fit(X[:300], y[:300])
    gpu = make("auto").fit(X[:300], y[:300])
    assert gpu.device_.startswith("cuda")
    acc_cpu = np.mean(cpu.predict(X[300:]) == y[300:])
    acc_gpu = np.mean(gpu.predict(X[300:]) == y[300:])
    assert acc_gpu > 0.9
    assert abs(acc_gpu - acc_cpu) <= 0.05
    # a model trained on the GPU predicts on a machine without one (NumPy/CPU state)
    assert np.isfinite(gpu.predict_proba(X[300:])).all()
