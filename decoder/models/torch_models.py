"""Torch classifiers with the scikit-learn API; CUDA when present.

A softmax regression (``hidden=()``) or an MLP, trained full-batch with
AdamW and early stopping on a held-out slice of the training data.  A fitted
model keeps its weights as NumPy arrays too (``weights_``), and saves and loads
through them (the torch module is rebuilt on load), so it saves with skops, which
cannot hold a torch module.
"""

from __future__ import annotations

import numpy as np
from scipy.special import softmax
from sklearn.base import BaseEstimator, ClassifierMixin
from sklearn.utils.multiclass import check_classification_targets
from sklearn.utils.validation import check_is_fitted, validate_data

from ..errors import LabelError


def _device(name):
    import torch
    if name in (None, "auto"):
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


class TorchClassifier(ClassifierMixin, BaseEstimator):
    """Softmax regression or MLP in torch, scikit-learn compatible.

    Parameters
    ----------
    hidden : tuple of int
        Hidden layer sizes; ``()`` gives a linear (softmax) model.
    weight_decay : float
        AdamW weight decay (L2 penalty).
    dropout : float
        Dropout on the input and hidden layers.
    lr : float
    max_epochs : int
    patience : int
        Early stopping on a 10 % validation slice of the training data.
    device : str
        ``'auto'`` (CUDA when available), ``'cpu'`` or ``'cuda'``.
    random_state : int

    Attributes
    ----------
    classes_ : ndarray
    weights_ : dict of str to ndarray
        The network's parameters (torch ``state_dict``) as float32 NumPy arrays.
    model_ : torch.nn.Module
        The network on the CPU, for inference (rebuilt from ``weights_`` on load).
    device_ : str
        The device used for training.
    """

    def __init__(self, hidden=(), weight_decay=1e-2, dropout=0.2, lr=1e-3, max_epochs=300,
                 patience=20, batch_size=256, device="auto", random_state=0):
        self.hidden = hidden
        self.weight_decay = weight_decay
        self.dropout = dropout
        self.lr = lr
        self.max_epochs = max_epochs
        self.patience = patience
        self.batch_size = batch_size
        self.device = device
        self.random_state = random_state

    def _build(self, n_in, n_out):
        import torch.nn as nn
        layers = [nn.Dropout(self.dropout)] if self.dropout else []
        prev = n_in
        for h in self.hidden:
            layers += [nn.Linear(prev, h), nn.GELU()]
            if self.dropout:
                layers.append(nn.Dropout(self.dropout))
            prev = h
        layers.append(nn.Linear(prev, n_out))
        return nn.Sequential(*layers)

    def fit(self, X, y):
        import torch
        X, y = validate_data(self, X, y, dtype=np.float32)
        check_classification_targets(y)
        self.classes_, codes = np.unique(y, return_inverse=True)
        if len(self.classes_) < 2:
            raise LabelError(f"only one class in the training labels ({self.classes_[0]!r})",
                             "include at least two classes")
        torch.manual_seed(self.random_state)
        rng = np.random.default_rng(self.random_state)
        dev = _device(self.device)
        self.device_ = str(dev)
        self.mean_ = X.mean(0)
        self.scale_ = X.std(0) + 1e-6
        Xs = (X - self.mean_) / self.scale_
        idx = rng.permutation(len(y))
        n_val = max(1, len(y) // 10) if len(y) >= 20 else 0
        val, trn = idx[:n_val], idx[n_val:]
        Xt = torch.as_tensor(Xs, device=dev)
        yt = torch.as_tensor(codes, device=dev)
        model = self._build(X.shape[1], len(self.classes_)).to(dev)
        opt = torch.optim.AdamW(model.parameters(), lr=self.lr, weight_decay=self.weight_decay)
        loss_fn = torch.nn.CrossEntropyLoss()
        best, best_state, wait = np.inf, None, 0
        for epoch in range(self.max_epochs):
            model.train()
            perm = trn[rng.permutation(len(trn))]
            for s in range(0, len(perm), self.batch_size):
                b = torch.as_tensor(perm[s:s + self.batch_size], device=dev)
                opt.zero_grad()
                loss = loss_fn(model(Xt[b]), yt[b])
                loss.backward()
                opt.step()
            if n_val:
                model.eval()
                with torch.no_grad():
                    vl = float(loss_fn(model(Xt[val]), yt[val]))
                if vl < best - 1e-4:
                    best, wait = vl, 0
                    best_state = {k: v.detach().clone() for k, v in model.state_dict().items()}
                else:
                    wait += 1
                    if wait >= self.patience:
                        break
        if best_state is not None:
            model.load_state_dict(best_state)
        self.model_ = model.cpu().eval()
        self.weights_ = {k: v.detach().numpy().copy() for k, v in self.model_.state_dict().items()}
        self.n_epochs_ = epoch + 1
        if not self.hidden:
            w = self.model_[-1].weight.detach().numpy()
            self.coef_ = w / self.scale_
        return self

    def __getstate__(self):
        # the module is left out: its weights are in weights_ (skops cannot hold a module)
        state = dict(super().__getstate__())   # a copy: on Python ≥ 3.11 it is __dict__
        state.pop("model_", None)
        return state

    def __setstate__(self, state):
        super().__setstate__(state)
        if "weights_" in state:
            import torch
            model = self._build(int(self.n_features_in_), len(self.classes_))
            model.load_state_dict({k: torch.from_numpy(np.array(v, dtype=np.float32))
                                   for k, v in self.weights_.items()})
            self.model_ = model.eval()

    def _logits(self, X):
        import torch
        check_is_fitted(self, "model_")
        X = validate_data(self, X, reset=False, dtype=np.float32)
        with torch.no_grad():
            return self.model_(torch.as_tensor((X - self.mean_) / self.scale_)).numpy()

    def decision_function(self, X):
        """Class scores (n_samples, n_classes); for two classes, as scikit-learn's
        classifiers give them, one score per sample, positive for ``classes_[1]``."""
        logits = self._logits(X)
        if len(self.classes_) == 2:
            return logits[:, 1] - logits[:, 0]
        return logits

    def predict_proba(self, X):
        return softmax(self._logits(X), axis=1)

    def predict(self, X):
        logits = self._logits(X)   # checks that the model is fitted
        return self.classes_[logits.argmax(1)]
