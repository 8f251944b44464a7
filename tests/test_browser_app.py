"""The app in a real browser: ``streamlit run app.py`` on 127.0.0.1, headless Chromium.

Picks an example subject and waits for its prediction, uploads a valid and
an invalid time series, and saves screenshots under ``test-artifacts/``.
Skips (with the reason) when Debian's ``chromium`` or Playwright is absent;
``.ci/run`` installs Chromium.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

from test_report import biomarker_run

ROOT = Path(__file__).resolve().parents[1]
CHROMIUM = "/usr/bin/chromium"
ARTIFACTS = ROOT / "test-artifacts"
EXAMPLES = ROOT / "decoder" / "data" / "_sample" / "abide_examples"
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--no-first-run"]

pytestmark = [pytest.mark.browser]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_app(env_extra: dict, timeout: float = 90.0):
    """Start ``streamlit run app.py`` on 127.0.0.1; returns (process, url)."""
    port = _free_port()
    env = {**os.environ, **env_extra, "PYTHONUNBUFFERED": "1"}
    cmd = [sys.executable, "-m", "streamlit", "run", str(ROOT / "app.py"),
           "--server.address", "127.0.0.1", "--server.port", str(port),
           "--server.headless", "true", "--browser.gatherUsageStats", "false"]
    proc = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            out = proc.stdout.read().decode(errors="replace")
            raise RuntimeError(f"streamlit exited with {proc.returncode}: {out[-2000:]}")
        try:
            with urllib.request.urlopen(url + "/_stcore/health", timeout=2) as r:
                if r.read().strip() == b"ok":
                    return proc, url
        except OSError:
            time.sleep(0.3)
    proc.terminate()
    raise RuntimeError(f"streamlit did not answer on {url} within {timeout:.0f} s")


def stop_app(proc):
    proc.terminate()
    try:
        proc.wait(timeout=10)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


def launch_chromium(playwright):
    return playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)


@pytest.fixture(scope="module")
def browser_page():
    if not Path(CHROMIUM).is_file():
        pytest.skip(f"Debian chromium not installed at {CHROMIUM} "
                    "(apt-get install chromium; .ci/run installs it)")
    sync_api = pytest.importorskip("playwright.sync_api", reason="playwright not installed")
    proc, url = start_app({"DECODER_MODEL": str(biomarker_run() / "model.skops")})
    pw = sync_api.sync_playwright().start()
    try:
        browser = launch_chromium(pw)
        page = browser.new_page(viewport={"width": 1280, "height": 2200})
        page.set_default_timeout(60_000)
        yield page, url
        browser.close()
    finally:
        pw.stop()
        stop_app(proc)


def settle(page, last_text=None):
    """Wait until the current rerun has drawn everything up to ``last_text`` and no
    element from the previous run is left (Streamlit marks those stale)."""
    if last_text is not None:
        page.get_by_text(last_text, exact=True).first.wait_for()
    page.wait_for_function(
        "() => document.querySelectorAll('[data-stale=\"true\"]').length === 0")


def _shot(page, name, last_text=None):
    settle(page, last_text)
    ARTIFACTS.mkdir(exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / name), full_page=True)


def test_example_subject_then_valid_and_invalid_uploads_in_chromium(browser_page, tmp_path):
    page, url = browser_page
    page.goto(url)
    # the page opens on the first example subject and shows its prediction
    page.get_by_text("Predicted probability of autism:").first.wait_for()
    page.get_by_text("Research use only").first.wait_for()
    # pick another example subject
    page.get_by_test_id("stSelectbox").first.click()
    page.get_by_role("option", name="USM_0050433", exact=False).click()
    page.get_by_text("Subject USM_0050433", exact=True).wait_for()
    page.get_by_text("Predicted probability of autism:").first.wait_for()
    assert page.get_by_test_id("stException").count() == 0
    _shot(page, "app_example_subject.png", "Model card")

    # a valid upload: a parcellated time series
    page.get_by_text("Upload a time series", exact=True).click()
    uploader = page.locator('[data-testid="stFileUploader"] input[type="file"]').first
    uploader.set_input_files(str(EXAMPLES / "UM_1_0050272_rois_ho.1D"))
    page.get_by_text("Subject UM_1_0050272_rois_ho.1D", exact=True).wait_for()
    page.get_by_text("Predicted probability of autism:").first.wait_for()
    _shot(page, "app_valid_upload.png", "Model card")

    # an invalid upload: a table with the wrong number of regions
    bad = tmp_path / "wrong_regions.csv"
    bad.write_text("1,2,3\n4,5,6\n7,8,9\n")
    uploader.set_input_files(str(bad))
    error = page.get_by_test_id("stAlertContentError")
    error.first.wait_for()
    text = error.first.inner_text()
    assert "3 regions, the model expects 111" in text and "fix:" in text
    assert "Traceback" not in page.content()
    # the previous prediction disappears once the rerun finishes (retried until then)
    from playwright.sync_api import expect
    expect(page.get_by_text("Predicted probability of autism:")).to_have_count(0, timeout=20000)
    _shot(page, "app_invalid_upload.png")
