"""Leave-site-out connectome classification: ours vs the nilearn + scikit-learn baseline.

Same folds for both (held-out ABIDE sites), both fitted in-fold:

* anchor: ``nilearn.connectome.ConnectivityMeasure(kind="tangent")`` on the
  time series + ``StandardScaler`` + ``LogisticRegression``;
* ours: :class:`decoder.models.biomarker_models.ConnectomeClassifier` with its
  defaults (tangent at the in-fold log-Euclidean mean via batched
  eigendecompositions + correlation, ridge with leave-one-out penalty, ensemble;
  no ComBat, since the anchor gets no site information either).

The anchor needs minutes per fold on 2 cores, so by default both are timed on
the same 3 held-out sites (``--sites``); ``--full`` runs every site.  Per-fold
time covers everything fitted in the fold (connectivity from time series
included for both).  Prints one JSON line per fold and a final summary line:
``{"name", "ours_s", "anchor", "anchor_s", "ratio", "ours_accuracy",
"anchor_accuracy", "folds"}`` (times are mean seconds per fold; ratio =
anchor_s / ours_s; accuracies pooled over the held-out subjects).

    DECODER_SHARED_DATA=../shared/data python benchmarks/bench_connectome.py
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from decoder.data.abide import load_abide  # noqa: E402
from decoder.models.biomarker_models import ConnectomeClassifier  # noqa: E402

DEFAULT_SITES = ["CALTECH", "SDSU", "OHSU"]


def anchor_fold(ts_train, y_train, ts_test):
    from nilearn.connectome import ConnectivityMeasure
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler
    conn = ConnectivityMeasure(kind="tangent", vectorize=True, discard_diagonal=True)
    Xtr = conn.fit_transform(ts_train)
    Xte = conn.transform(ts_test)
    clf = make_pipeline(StandardScaler(), LogisticRegression(C=1.0, max_iter=2000)).fit(Xtr, y_train)
    return clf.predict(Xte)


def ours_fold(ts_train, y_train, ts_test):
    clf = ConnectomeClassifier().fit(ts_train, y_train)
    return clf.predict(ts_test)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", default=None, help="ABIDE root (default: "
                        "$DECODER_SHARED_DATA/abide_pcp)")
    parser.add_argument("--sites", nargs="*", default=DEFAULT_SITES)
    parser.add_argument("--full", action="store_true", help="every site as a fold")
    args = parser.parse_args(argv)
    root = args.data or os.path.join(os.environ.get("DECODER_SHARED_DATA", "../shared/data"),
                                      "abide_pcp")
    data = load_abide(root)
    y = data.diagnosis.astype(str)
    sites = data.sites.astype(str)
    folds = sorted(set(sites)) if args.full else list(args.sites)
    ours_t, anchor_t, ours_ok, anchor_ok, n_test = [], [], 0, 0, 0
    for site in folds:
        test = np.flatnonzero(sites == site)
        train = np.flatnonzero(sites != site)
        ts_tr = [data.time_series[i] for i in train]
        ts_te = [data.time_series[i] for i in test]
        t0 = time.perf_counter()
        pred_o = ours_fold(ts_tr, y[train], ts_te)
        t1 = time.perf_counter()
        pred_a = anchor_fold(ts_tr, y[train], ts_te)
        t2 = time.perf_counter()
        ours_t.append(t1 - t0)
        anchor_t.append(t2 - t1)
        ours_ok += int(np.sum(pred_o == y[test]))
        anchor_ok += int(np.sum(pred_a == y[test]))
        n_test += len(test)
        print(json.dumps({"fold": site, "n_test": len(test), "ours_s": round(t1 - t0, 3),
                          "anchor_s": round(t2 - t1, 3),
                          "ours_accuracy": round(float(np.mean(pred_o == y[test])), 4),
                          "anchor_accuracy": round(float(np.mean(pred_a == y[test])), 4)}),
              flush=True)
    ours_s, anchor_s = float(np.mean(ours_t)), float(np.mean(anchor_t))
    print(json.dumps({
        "name": "connectome_leave_site_out",
        "ours_s": round(ours_s, 3),
        "anchor": "nilearn ConnectivityMeasure(tangent) + StandardScaler + LogisticRegression",
        "anchor_s": round(anchor_s, 3),
        "ratio": round(anchor_s / ours_s, 2),
        "ours_accuracy": round(ours_ok / n_test, 4),
        "anchor_accuracy": round(anchor_ok / n_test, 4),
        "folds": folds,
    }))


if __name__ == "__main__":
    main()
