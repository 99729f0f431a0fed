"""The dashboard in headless Chromium during a real run: a worker process, live progress,
a retry through the UI, and a refused request without the token.

Chromium and its driver come from Debian's packages (``apt-get install chromium
chromium-driver``); nothing is downloaded at test time. Set MEDIAPIPE_DASHBOARD_SCREENSHOT
to a path (docs/dashboard.png) to keep the screenshot the test takes.
"""

from __future__ import annotations

import json
import os
import shutil
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import redis

import tests.dashboard.dash_stages  # noqa: F401  (registers dash.needs_fix)
from pipeline.client import Client
from pipeline.model import Dag
from pipeline.registry import REGISTRY
from tests.dashboard.conftest import Served
from tests.workers.conftest import Workers, wait_for

CHROMIUM = Path("/usr/bin/chromium")
CHROMEDRIVER = Path("/usr/bin/chromedriver")
EVIL_NAME = 'holiday <img src=x onerror="window.pwned=1"> clip.mov'

webdriver = pytest.importorskip(
    "selenium.webdriver", reason="selenium not installed (pip install selenium)"
)
if not (CHROMIUM.exists() and CHROMEDRIVER.exists()):
    pytest.skip(
        "needs Debian's chromium and chromium-driver (apt-get install chromium chromium-driver)",
        allow_module_level=True,
    )

from selenium.common.exceptions import StaleElementReferenceException  # noqa: E402
from selenium.webdriver.common.by import By  # noqa: E402

from tests.helpers import http_status  # noqa: E402


@pytest.fixture
def browser(tmp_path: Path) -> Iterator[Any]:
    options = webdriver.ChromeOptions()
    options.binary_location = str(CHROMIUM)
    for arg in (
        "--headless=new",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-dev-shm-usage",
        "--disable-background-networking",
        "--disable-component-update",
        "--no-first-run",
        "--window-size=1440,1150",
        f"--user-data-dir={tmp_path / 'chromium-profile'}",
    ):
        options.add_argument(arg)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    # An explicit driver path keeps Selenium Manager (which downloads drivers) out of it.
    service = webdriver.ChromeService(executable_path=str(CHROMEDRIVER))
    driver = webdriver.Chrome(options=options, service=service)
    yield driver
    driver.quit()


@pytest.fixture
def fleet(redis_url: str, namespace: str, r: redis.Redis, tmp_path: Path) -> Iterator[Workers]:
    w = Workers(redis_url, namespace, Client(r, namespace=namespace, registry=REGISTRY), tmp_path)
    yield w
    w.kill_all()


def _text(driver: Any, css: str) -> str:
    """The element's text, or '' while it is absent or being redrawn."""
    try:
        return str(driver.find_element(By.CSS_SELECTOR, css).text)
    except Exception:
        return ""


def _attr(driver: Any, css: str, name: str) -> str:
    try:
        return str(driver.find_element(By.CSS_SELECTOR, css).get_attribute(name) or "")
    except Exception:
        return ""


def _click(driver: Any, css: str) -> None:
    """Click, finding the element again if a redraw replaced it in between."""
    for _ in range(20):
        try:
            driver.find_element(By.CSS_SELECTOR, css).click()
            return
        except StaleElementReferenceException:
            time.sleep(0.1)
    raise AssertionError(f"{css} kept going stale")


def test_dashboard_follows_a_run_and_retries_a_dead_job_through_the_ui(
    browser: Any,
    fleet: Workers,
    serve: Callable[[Client], Served],
    r: redis.Redis,
    namespace: str,
    tmp_path: Path,
) -> None:
    client = Client(r, namespace=namespace, registry=REGISTRY)
    fleet.spawn("--import", "tests.dashboard.dash_stages", "--concurrency", "2")
    served = serve(client)
    r.hset(
        client.keys.prefix + "schedules",
        "nightly-ingest",
        json.dumps({"cron": "0 3 * * *", "paths": ["/srv/in/*.mov"], "preset": "video"}),
    )

    # The token reaches the page in the URL fragment; the page keeps it and hides it.
    browser.get(f"{served.url}/#token={served.token}")
    wait_for(lambda: "live" in _text(browser, "#live"), 20, "the first poll")
    assert "#token" not in browser.current_url
    assert "actions enabled" in _text(browser, "#token-state")

    fixed = tmp_path / "fixed"
    bad = Dag(meta={"input": EVIL_NAME})
    bad.add("probe", "dash.needs_fix", {"path": EVIL_NAME, "fixed": str(fixed)})
    bad.add("manifest", "t.echo", after=["probe"])
    client.submit(bad)
    dead_job = bad.job_id("probe")

    sleeper = Dag(meta={"input": "/srv/in/talk.mov"})
    sleeper.add("probe", "t.sleep", {"seconds": 1.0})
    sleeper.add("transcode_720p", "t.sleep", {"seconds": 3.0}, after=["probe"])
    sleeper.add("poster", "t.sleep", {"seconds": 2.0}, after=["probe"])
    sleeper.add("manifest", "t.sleep", {"seconds": 0.5}, after=["transcode_720p", "poster"])
    client.submit(sleeper)

    # The dead job shows up with its error and input, as text: the file name's markup is
    # not turned into an element.
    dlq_row = f'#dlq tr[data-job-id="{dead_job}"]'
    wait_for(lambda: _text(browser, dlq_row), 20, "the dead job in the DLQ panel")
    assert f"{EVIL_NAME}: not a media file" in _text(browser, f"{dlq_row} .error-message")
    assert EVIL_NAME in _text(browser, f"{dlq_row} .params")
    assert browser.find_elements(By.CSS_SELECTOR, "#dlq img") == []
    assert browser.execute_script("return window.pwned === undefined") is True

    # The sleeper DAG is seen running with live progress, then completed.
    dag_row = f'#dags tr[data-dag-id="{sleeper.id}"]'
    wait_for(lambda: _attr(browser, dag_row, "data-state") == "running", 20, "DAG running")
    wait_for(
        lambda: browser.find_elements(By.CSS_SELECTOR, '#graph g.s-active[data-job="poster"]'),
        20,
        "the poster job active in the graph",
    )
    assert len(browser.find_elements(By.CSS_SELECTOR, "#graph g.node")) == 4
    assert len(browser.find_elements(By.CSS_SELECTOR, "#graph path.edge")) == 4
    wait_for(lambda: _text(browser, "#workers tr[data-worker-id]"), 10, "the worker row")
    assert "nightly-ingest" in _text(browser, "#schedules")
    time.sleep(0.6)  # let the transcode's bar move before the picture
    shot = tmp_path / "dashboard.png"
    assert browser.save_screenshot(str(shot)) and shot.stat().st_size > 10_000
    if target := os.environ.get("MEDIAPIPE_DASHBOARD_SCREENSHOT"):
        shutil.copyfile(shot, target)
    wait_for(lambda: _attr(browser, dag_row, "data-state") == "completed", 30, "DAG completed")
    assert "100%" in _text(browser, f"{dag_row} .bar")
    assert client.dag_state(sleeper.id) == "completed"

    # Without the token (from outside, and from the page itself) the retry is refused and
    # nothing changes.
    retry_url = f"{served.url}/api/dlq/retry"
    assert http_status(retry_url, method="POST", body={"job": dead_job}) == 401
    assert http_status(retry_url, method="POST", body={"job": dead_job}, token="wrong") == 403
    status = browser.execute_async_script(
        "const done = arguments[arguments.length - 1];"
        "fetch('/api/dlq/retry', {method: 'POST', headers: {'Content-Type': 'application/json'},"
        " body: JSON.stringify({job: arguments[0]})}).then(r => done(r.status));",
        dead_job,
    )
    assert status == 401
    assert [j["id"] for j in client.dead()] == [dead_job]
    assert client.dag_state(bad.id) == "failed"

    # Fix the cause, then retry through the UI: the job leaves the DLQ and its DAG completes.
    fixed.write_text("fixed")
    _click(browser, f"{dlq_row} button.retry")
    wait_for(lambda: "Retried" in _text(browser, "#message"), 10, "the retry to be accepted")
    wait_for(lambda: not browser.find_elements(By.CSS_SELECTOR, dlq_row), 20, "the DLQ to empty")
    assert "empty" in _text(browser, "#dlq")
    bad_row = f'#dags tr[data-dag-id="{bad.id}"]'
    wait_for(lambda: _attr(browser, bad_row, "data-state") == "completed", 30, "retried DAG done")
    job = client.job(dead_job)
    assert job is not None and job["state"] == "completed" and job["attempts"] == 1

    problems = [
        e["message"]
        for e in browser.get_log("browser")
        if "Content Security Policy" in e["message"] or "Uncaught" in e["message"]
    ]
    assert problems == []
