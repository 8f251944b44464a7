"""The default ABIDE biomarker inputs, for the benchmarks that run it on the real data."""

from __future__ import annotations

import os
from pathlib import Path
from types import SimpleNamespace

ROOT = Path(__file__).resolve().parents[1]


def default_inputs(data=None) -> SimpleNamespace:
    """``configs/abide.yaml`` resolved, and the subjects of ``data`` (default:
    ``$DECODER_SHARED_DATA/abide_pcp``) ready for ``pipelines.biomarker.cross_validate``:
    ``cfg, covs, halves, diag, sites, cov``."""
    from decoder.config import load_yaml
    from decoder.features.connectome import split_half_covariances, subject_covariances
    from pipelines import biomarker, resolve_config

    root = data or os.path.join(os.environ.get("DECODER_SHARED_DATA", "../shared/data"),
                                "abide_pcp")
    cfg = resolve_config(load_yaml(ROOT / "configs" / "abide.yaml"))
    subjects = biomarker.load_subjects(cfg, root)
    return SimpleNamespace(cfg=cfg, covs=subject_covariances(subjects.time_series),
                           halves=split_half_covariances(subjects.time_series),
                           diag=subjects.diagnosis.astype(str), sites=subjects.sites,
                           cov=biomarker.model_covariates(cfg, subjects))
