"""Peak memory of a 10,000-sample x 100,000-voxel decoding problem.

Writes a float32 ``(n_samples, n_features)`` array to a file in a temporary
folder (4 GB at the default size; written with plain ``write`` calls so the
generation does not inflate this process's resident memory), opens it as a
read-only ``np.memmap`` and computes the dual-ridge Gram matrix
``K = X Xᵀ`` (10,000 x 10,000, float64) with
:func:`decoder.features._gram.blockwise_gram`, then solves the dual ridge
system ``(K + λI) α = Y`` for a few one-vs-rest targets by Cholesky.

Every line printed is JSON; the last is::

    {"name", "n_samples", "n_features", "seconds", "peak_rss_gb", ...}

where ``peak_rss_gb`` is ``resource.getrusage(RUSAGE_SELF).ru_maxrss`` (the
process's high-water resident set, page-cache pages of the memmap included)
and the budget is 24 GB.  For an outside view run it under
``/usr/bin/time -v`` ("Maximum resident set size").

Usage::

    python benchmarks/bench_memory.py                        # 10,000 x 100,000
    python benchmarks/bench_memory.py --samples 2000 --features 20000
"""

from __future__ import annotations

import argparse
import json
import resource
import shutil
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def emit(obj) -> None:
    print(json.dumps(obj), flush=True)


def peak_rss_gb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024 ** 2  # KiB on Linux


def write_data(path: Path, n_samples: int, n_features: int, seed: int = 0,
               rows_per_chunk: int = 250) -> None:
    """Samples x features float32 on disk: a per-voxel mean plus noise, written by rows."""
    rng = np.random.default_rng(seed)
    voxel_mean = rng.normal(0, 1, size=n_features).astype(np.float32)
    with open(path, "wb") as fh:
        for start in range(0, n_samples, rows_per_chunk):
            rows = min(rows_per_chunk, n_samples - start)
            chunk = rng.standard_normal((rows, n_features), dtype=np.float32)
            chunk += voxel_mean
            fh.write(chunk.tobytes())


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--samples", type=int, default=10_000)
    p.add_argument("--features", type=int, default=100_000)
    p.add_argument("--block-size", type=int, default=4096)
    p.add_argument("--classes", type=int, default=4)
    p.add_argument("--alpha", type=float, default=1e3)
    p.add_argument("--workdir", help="folder for the data file (default: a temp folder)")
    args = p.parse_args(argv)

    from scipy.linalg import cho_factor, cho_solve

    from decoder.features._gram import blockwise_gram

    work = Path(args.workdir) if args.workdir else Path(tempfile.mkdtemp(prefix="bench_memory_"))
    work.mkdir(parents=True, exist_ok=True)
    path = work / "X_float32.dat"
    try:
        t0 = time.perf_counter()
        write_data(path, args.samples, args.features)
        emit({"phase": "generate", "file_gb": round(path.stat().st_size / 1e9, 2),
              "seconds": round(time.perf_counter() - t0, 1),
              "peak_rss_gb": round(peak_rss_gb(), 3)})

        X = np.memmap(path, dtype=np.float32, mode="r", shape=(args.samples, args.features))
        t0 = time.perf_counter()
        K = blockwise_gram(X, args.block_size)
        t_gram = time.perf_counter() - t0
        # spot check: a few exact rows against a float64 product
        rows = np.asarray(X[:8], dtype=np.float64)
        exact = rows @ rows.T
        rel_err = float(np.abs(K[:8, :8] - exact).max() / np.abs(exact).max())
        emit({"phase": "gram", "seconds": round(t_gram, 2), "max_rel_err": rel_err,
              "symmetric": bool(np.array_equal(K[:64, :64], K[:64, :64].T)),
              "peak_rss_gb": round(peak_rss_gb(), 3)})

        # dual ridge fit: (K + alpha I) a = Y, one-vs-rest targets
        labels = np.random.default_rng(1).integers(0, args.classes, size=args.samples)
        Y = np.where(labels[:, None] == np.arange(args.classes)[None, :], 1.0, -1.0)
        t0 = time.perf_counter()
        K[np.diag_indices_from(K)] += args.alpha
        factor = cho_factor(K, overwrite_a=True, check_finite=False)
        dual_coef = cho_solve(factor, Y, check_finite=False)
        t_solve = time.perf_counter() - t0
        emit({"phase": "solve", "seconds": round(t_solve, 2),
              "finite": bool(np.isfinite(dual_coef).all()),
              "peak_rss_gb": round(peak_rss_gb(), 3)})

        emit({"name": "blockwise_gram_dual_ridge", "n_samples": args.samples,
              "n_features": args.features, "seconds": round(t_gram + t_solve, 2),
              "gram_seconds": round(t_gram, 2), "solve_seconds": round(t_solve, 2),
              "peak_rss_gb": round(peak_rss_gb(), 3), "budget_gb": 24,
              "data_gb": round(args.samples * args.features * 4 / 1e9, 2),
              "block_size": args.block_size})
    finally:
        if not args.workdir:
            shutil.rmtree(work, ignore_errors=True)
        else:
            path.unlink(missing_ok=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
