"""The app, warm: page load to the first prediction, in headless Chromium.

Starts ``streamlit run app.py`` on 127.0.0.1, loads the page once to warm
it (imports, model, example subject cached), then opens it ``--repeats``
times in fresh browser contexts and times each from navigation start to
the moment the example subject's predicted probability is on the page.
Prints one JSON line last:
``{"name", "seconds" (median warm), "runs", "cold_seconds", "target_seconds", "model"}``.

    python benchmarks/bench_app.py [--model model.skops] [--repeats 5]

Uses ``--model``, else ``$DECODER_MODEL``, else the shipped model; when no
model is shipped yet, a small model trained on a toy ABIDE layout (as in
the tests).  Needs Debian's ``chromium`` (``apt-get install chromium``).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests"))

PREDICTION_TEXT = "Predicted probability of autism:"
TARGET_S = 3.0


def _model(arg) -> Path:
    if arg:
        return Path(arg)
    if os.environ.get("DECODER_MODEL"):
        return Path(os.environ["DECODER_MODEL"])
    from pipelines.biomarker import SHIPPED_MODEL
    if Path(SHIPPED_MODEL).is_file():
        return Path(SHIPPED_MODEL)
    from test_report import biomarker_run
    print("no shipped model: using a small model trained on a toy ABIDE layout", file=sys.stderr)
    return biomarker_run() / "model.skops"


def _load_once(browser, url) -> float:
    ctx = browser.new_context(viewport={"width": 1280, "height": 1000})
    page = ctx.new_page()
    t0 = time.perf_counter()
    page.goto(url, wait_until="commit")
    page.get_by_text(PREDICTION_TEXT).first.wait_for(timeout=120_000)
    dt = time.perf_counter() - t0
    ctx.close()
    return dt


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model")
    ap.add_argument("--repeats", type=int, default=5)
    args = ap.parse_args(argv)
    from playwright.sync_api import sync_playwright

    from test_browser_app import launch_chromium, start_app, stop_app
    model = _model(args.model)
    proc, url = start_app({"DECODER_MODEL": str(model)})
    try:
        with sync_playwright() as pw:
            browser = launch_chromium(pw)
            cold = _load_once(browser, url)
            runs = [_load_once(browser, url) for _ in range(args.repeats)]
            browser.close()
    finally:
        stop_app(proc)
    for i, r in enumerate(runs):
        print(f"warm load {i + 1}: {r:.2f} s", file=sys.stderr)
    med = statistics.median(runs)
    print(json.dumps({"name": "app_page_load_to_first_prediction", "seconds": round(med, 3),
                      "runs": [round(r, 3) for r in runs], "cold_seconds": round(cold, 3),
                      "target_seconds": TARGET_S, "within_target": med < TARGET_S,
                      "model": str(model)}))


if __name__ == "__main__":
    main()
