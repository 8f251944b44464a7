"""Cross-validation schemes, metrics and permutation tests."""

from .cv import make_cv, CV_SCHEMES
from .metrics import classification_metrics, chance_level

__all__ = ["make_cv", "CV_SCHEMES", "classification_metrics", "chance_level"]
