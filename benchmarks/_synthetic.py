"""Synthetic Haxby-size data for scale benchmarks (never for accuracy claims).

12 runs, 8 categories in blocks, AR(1) temporal noise, run offsets, and a
weak distributed category pattern: about what a whole-brain 3 mm Haxby
subject looks like to a decoder.
"""

from __future__ import annotations

import numpy as np


def haxby_size(n_voxels=60_000, n_volumes=726, n_runs=12, n_classes=8, snr=0.04,
               block_len=7, seed=0):
    """Return ``X`` (float32, n_volumes × n_voxels), ``y`` (int), ``run``, ``block``."""
    rng = np.random.default_rng(seed)
    per_run = np.full(n_runs, n_volumes // n_runs)
    per_run[: n_volumes - per_run.sum()] += 1
    patterns = rng.normal(size=(n_classes, n_voxels)).astype(np.float32)
    # spatially sparse informative voxels, as in ventral temporal cortex
    informative = rng.random(n_voxels) < 0.1
    patterns[:, ~informative] = 0
    X = np.empty((n_volumes, n_voxels), dtype=np.float32)
    y = np.empty(n_volumes, dtype=np.int64)
    run = np.empty(n_volumes, dtype=np.int64)
    block = np.empty(n_volumes, dtype=np.int64)
    start, b = 0, 0
    for r, n in enumerate(per_run):
        order = rng.permutation(n_classes)
        labels = np.repeat(order, int(np.ceil(n / n_classes)))[:n]
        bounds = np.r_[0, np.flatnonzero(np.diff(labels)) + 1]
        blk = np.zeros(n, dtype=np.int64)
        for k, s0 in enumerate(bounds):
            blk[s0:] = b + k
        b += len(bounds)
        noise = rng.normal(size=(n, n_voxels)).astype(np.float32)
        for t in range(1, n):  # AR(1), rho = 0.5
            noise[t] = 0.5 * noise[t - 1] + 0.866 * noise[t]
        offset = rng.normal(scale=0.5, size=n_voxels).astype(np.float32)
        X[start:start + n] = noise + offset + snr * patterns[labels] * 3
        y[start:start + n] = labels
        run[start:start + n] = r
        block[start:start + n] = blk
        start += n
    # per-run standardisation, as the pipeline's cleaning does
    for r in range(n_runs):
        m = run == r
        X[m] -= X[m].mean(0)
        X[m] /= X[m].std(0) + 1e-6
    return X, y, run, block
