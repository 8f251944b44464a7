"""Data subpackage."""
