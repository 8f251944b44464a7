"""A small torch MLP on connectivity vectors, with a scikit-learn API.

Used as ``model: mlp`` in the biomarker pipeline.  It runs on CUDA when a
GPU is present (``device="auto"``) and on CPU otherwise; weights are kept
as NumPy arrays after fitting so the estimator saves with skops.
"""

from __future__ import annotations

from numbers import Integral, Real

import numpy as np
from scipy.special import expit, softmax
from sklearn.base import BaseEstimator, ClassifierMixin
from sklearn.utils._param_validation import Interval
from sklearn.utils.multiclass import unique_labels
from sklearn.utils.validation import check_is_fitted, validate_data

from ..errors import ConfigError
from .torch_models import _device

__all__ = ["TorchMLPClassifier"]


class TorchMLPClassifier(ClassifierMixin, BaseEstimator):
    """One-hidden-layer MLP with dropout and weight decay (binary or multiclass).

    Parameters
    ----------
    hidden : int
        Hidden units.
    dropout : float
        Dropout on the input and hidden layers (connectomes have ~6000
        features for a few hundred subjects: strong regularisation is needed).
    weight_decay : float
        AdamW weight decay.
    lr : float
    epochs : int
    batch_size : int
    device : str
        ``"auto"`` (CUDA when available), ``"cpu"`` or ``"cuda"``.
    random_state : int or None

    Attributes
    ----------
    classes_ : ndarray
    weights_ : list of ndarray
        ``[W1, b1, W2, b2]`` as NumPy arrays (for skops-safe saving).
    device_ : str
        The device used for training.
    """

    # scikit-learn's own parameter validation: a wrong model_params value is named in one
    # line before any data are read (ConnectomeClassifier.check_params) and again in fit
    _parameter_constraints = {
        "hidden": [Interval(Integral, 1, None, closed="left")],
        "dropout": [Interval(Real, 0, 1, closed="left")],
        "weight_decay": [Interval(Real, 0, None, closed="left")],
        "lr": [Interval(Real, 0, None, closed="neither")],
        "epochs": [Interval(Integral, 1, None, closed="left")],
        "batch_size": [Interval(Integral, 1, None, closed="left")],
        "device": [str],
        "random_state": ["random_state"],
    }

    def __init__(self, hidden=64, dropout=0.5, weight_decay=1e-2, lr=1e-3, epochs=40,
                 batch_size=64, device="auto", random_state=0):
        self.hidden = hidden
        self.dropout = dropout
        self.weight_decay = weight_decay
        self.lr = lr
        self.epochs = epochs
        self.batch_size = batch_size
        self.device = device
        self.random_state = random_state

    def _net(self, n_in, n_out):
        import torch.nn as nn
        return nn.Sequential(nn.Dropout(self.dropout), nn.Linear(n_in, self.hidden), nn.ReLU(),
                             nn.Dropout(self.dropout), nn.Linear(self.hidden, n_out))

    def fit(self, X, y):
        import torch
        try:
            self._validate_params()
        except (ValueError, TypeError) as err:
            raise ConfigError(f"mlp: {' '.join(str(err).split())[:160]}",
                              "set model_params (hidden, epochs, lr, …) to values the MLP "
                              "takes") from None
        X, y = validate_data(self, X, y, dtype=np.float32)
        self.classes_ = unique_labels(y)
        yi = np.searchsorted(self.classes_, y)
        dev = _device(self.device)
        self.device_ = str(dev)
        gen = torch.Generator().manual_seed(int(self.random_state or 0))
        torch.manual_seed(int(self.random_state or 0))
        net = self._net(X.shape[1], len(self.classes_)).to(dev)
        opt = torch.optim.AdamW(net.parameters(), lr=self.lr, weight_decay=self.weight_decay)
        Xt = torch.from_numpy(X).to(dev)
        yt = torch.from_numpy(yi.astype(np.int64)).to(dev)
        loss_fn = torch.nn.CrossEntropyLoss()
        net.train()
        for _ in range(self.epochs):
            order = torch.randperm(len(Xt), generator=gen).to(dev)
            for start in range(0, len(Xt), self.batch_size):
                idx = order[start:start + self.batch_size]
                opt.zero_grad()
                loss = loss_fn(net(Xt[idx]), yt[idx])
                loss.backward()
                opt.step()
        lin = [m for m in net if isinstance(m, torch.nn.Linear)]
        self.weights_ = [p.detach().cpu().numpy().astype(np.float64)
                         for m in lin for p in (m.weight, m.bias)]
        return self

    def decision_function(self, X):
        check_is_fitted(self, "weights_")
        X = validate_data(self, X, reset=False, dtype=np.float64)
        w1, b1, w2, b2 = self.weights_
        logits = np.maximum(X @ w1.T + b1, 0) @ w2.T + b2
        if len(self.classes_) == 2:
            return logits[:, 1] - logits[:, 0]
        return logits

    def predict_proba(self, X):
        d = self.decision_function(X)
        if d.ndim == 1:
            p = expit(d)
            return np.column_stack([1 - p, p])
        return softmax(d, axis=1)

    def predict(self, X):
        proba = self.predict_proba(X)   # checks that the model is fitted
        return self.classes_[np.argmax(proba, axis=1)]
