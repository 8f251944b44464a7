"""decoder: leakage-free, fast and reproducible brain decoding from fMRI."""

__version__ = "0.1.0"
