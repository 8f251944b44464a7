"""Torch models on CUDA vs the same models on CPU (synthetic data at real-data scale).

Two workloads, each fitted with identical settings on both devices:

* ``mlp-abide-size``: :class:`~decoder.models.torch_connectome.TorchMLPClassifier`
  (``model: mlp``) on 784 training subjects × 6,105 edges (111 regions: the
  ABIDE Harvard–Oxford connectome), the size of one leave-site-out or
  10-fold training set; 3 hidden widths.
* ``torch-linear-haxby-size``: :class:`~decoder.models.torch_models.TorchClassifier`
  (``model: torch-linear``) on 660 volumes × 60,000 voxels, 8 classes.

The anchor is the CPU fit (all cores); "ours" is the CUDA fit.  Accuracies on
held-out rows are printed for both so a speed-up cannot hide a different
model.  Without a CUDA device the script times the CPU only and says so.

    python benchmarks/bench_torch.py

Last line: ``{"name", "ours_s", "anchor", "anchor_s", "ratio", "device", "cases"}``
(``ours_s``/``anchor_s`` summed over the cases; ``ratio = anchor_s / ours_s``).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def abide_size(n=871, n_regions=111, seed=0):
    """Connectome-shaped features with a weak distributed group difference."""
    rng = np.random.default_rng(seed)
    p = n_regions * (n_regions - 1) // 2
    y = rng.integers(0, 2, n)
    X = rng.normal(size=(n, p)).astype(np.float32)
    w = rng.normal(size=p).astype(np.float32) * (rng.random(p) < 0.05)
    X += 0.15 * np.outer(2 * y - 1, w).astype(np.float32)
    return X, y


def _time_fit(make, device, X, y, train, test):
    import torch
    est = make(device)
    t0 = time.perf_counter()
    est.fit(X[train], y[train])
    if device == "cuda":
        torch.cuda.synchronize()
    seconds = time.perf_counter() - t0
    return seconds, float(np.mean(est.predict(X[test]) == y[test])), est.device_


def main(argv=None):
    import torch
    from _synthetic import haxby_size
    from decoder.models.torch_connectome import TorchMLPClassifier
    from decoder.models.torch_models import TorchClassifier

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeats", type=int, default=2, help="timed fits per device (best kept)")
    args = ap.parse_args(argv)
    cuda = torch.cuda.is_available()

    Xa, ya = abide_size()
    Xh, yh, run, _ = haxby_size()
    cases = [
        ("mlp-abide-size (hidden=64)", lambda d: TorchMLPClassifier(device=d), Xa, ya,
         np.arange(784), np.arange(784, len(ya))),
        ("mlp-abide-size (hidden=512)", lambda d: TorchMLPClassifier(hidden=512, device=d),
         Xa, ya, np.arange(784), np.arange(784, len(ya))),
        ("mlp-abide-size (hidden=2048)", lambda d: TorchMLPClassifier(hidden=2048, device=d),
         Xa, ya, np.arange(784), np.arange(784, len(ya))),
        ("torch-linear-haxby-size", lambda d: TorchClassifier(device=d, random_state=0),
         Xh, yh, np.flatnonzero(run != 11), np.flatnonzero(run == 11)),
    ]
    rows, ours_total, anchor_total = [], 0.0, 0.0
    for name, make, X, y, train, test in cases:
        row = {"case": name}
        if cuda:  # warm-up: CUDA context and kernels, not part of any timing
            _time_fit(make, "cuda", X[:64], y[:64], np.arange(32), np.arange(32, 64))
        for dev in (["cpu", "cuda"] if cuda else ["cpu"]):
            best = None
            for _ in range(args.repeats):
                s, acc, used = _time_fit(make, dev, X, y, train, test)
                best = s if best is None else min(best, s)
            row[f"{dev}_s"], row[f"{dev}_accuracy"], row[f"{dev}_device"] = (
                round(best, 3), round(acc, 4), used)
        anchor_total += row["cpu_s"]
        ours_total += row.get("cuda_s", np.nan)
        rows.append(row)
        print(json.dumps(row), flush=True)
    print(json.dumps({
        "name": "torch-cuda-vs-cpu",
        "ours_s": round(ours_total, 3) if cuda else None,
        "anchor": f"the same fits on CPU ({torch.get_num_threads()} threads)",
        "anchor_s": round(anchor_total, 3),
        "ratio": round(anchor_total / ours_total, 2) if cuda else None,
        "device": torch.cuda.get_device_name(0) if cuda else "no CUDA device: CPU timed only",
        "torch": torch.__version__,
        "cases": rows}))


if __name__ == "__main__":
    main()
