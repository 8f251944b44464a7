"""Models: scikit-learn estimators for category decoding and connectome biomarkers.

The classifiers are importable from here; each is loaded on first use, so that
importing one (or the command line) does not load torch or the others.
"""

_WHERE = {
    "DualRidgeClassifier": "dual_ridge",
    "LooRidgeClassifier": "biomarker_models",
    "ConnectomeClassifier": "biomarker_models",
    "TorchClassifier": "torch_models",
    "TorchMLPClassifier": "torch_connectome",
}

__all__ = sorted(_WHERE)


def __getattr__(name):
    if name in _WHERE:
        import importlib
        return getattr(importlib.import_module(f".{_WHERE[name]}", __name__), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
