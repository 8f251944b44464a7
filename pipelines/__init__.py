"""End-to-end workflows composed from the ``decoder`` library.

Each pipeline module defines ``DEFAULTS`` (its config schema, with default
values) and ``run(config, data=None, out=None, config_path=None) -> dict``.
"""

from __future__ import annotations

import importlib

from decoder.config import merge_with_defaults
from decoder.errors import ConfigError

PIPELINES = {
    "category": "pipelines.category",
    "biomarker": "pipelines.biomarker",
}


def get_pipeline(task: str):
    """Import the pipeline module for a ``task`` name."""
    if task not in PIPELINES:
        raise ConfigError(f"unknown task '{task}'", f"use one of: {', '.join(PIPELINES)}")
    return importlib.import_module(PIPELINES[task])


def resolve_config(raw: dict) -> dict:
    """Merge a raw config onto its pipeline's defaults, validating every key."""
    task = raw.get("task")
    if task is None:
        raise ConfigError("config has no 'task' key", f"add e.g. 'task: category' "
                          f"(one of: {', '.join(PIPELINES)})")
    module = get_pipeline(task)
    return merge_with_defaults(raw, module.DEFAULTS)


def check_config(raw: dict) -> dict:
    """Resolve a raw config and check its choices before any data are read (the
    pipeline's own ``check_config``, where it has one); returns the resolved config."""
    config = resolve_config(raw)
    check = getattr(get_pipeline(config["task"]), "check_config", None)
    if check is not None:
        check(config)
    return config


def run_config(raw: dict, data=None, out=None, config_path=None) -> dict:
    """Validate a raw config and run its pipeline; returns the metrics dict."""
    from decoder.results import recording_warnings
    config = resolve_config(raw)
    module = get_pipeline(config["task"])
    with recording_warnings():   # kept in metrics.json → warnings and the report
        return module.run(config, data=data, out=out, config_path=config_path)
