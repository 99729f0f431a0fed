"""The job view, the DAG list's state filter, search and pagination over 500 DAGs, live
fps/eta and a worker drain, in headless Chromium against real worker processes.

Set MEDIAPIPE_DASHBOARD_SCREENSHOTS to a folder (docs/) to keep the panels' pictures
(dashboard-job.png, dashboard-dags.png, dashboard-workers.png).
"""

from __future__ import annotations

import os
import time
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import redis

from pipeline.broker import Broker
from pipeline.client import Client
from pipeline.model import Backoff, Dag
from pipeline.registry import REGISTRY
from tests.dashboard.conftest import Served

# test_browser skips (and so does this module) when selenium or Chromium is missing.
from tests.dashboard.test_browser import _attr, _click, _text, browser, fleet  # noqa: F401
from tests.helpers import run_dag
from tests.workers.conftest import Workers, wait_for

By = pytest.importorskip("selenium.webdriver.common.by").By
Keys = pytest.importorskip("selenium.webdriver.common.keys").Keys


def _rows(driver: Any, css: str) -> list[str]:
    """The data-dag-id / data-job-id of the rows now shown ([] while redrawn)."""
    try:
        return [
            str(e.get_attribute("data-dag-id") or e.get_attribute("data-job-id"))
            for e in driver.find_elements(By.CSS_SELECTOR, css)
        ]
    except Exception:
        return []


def _keep(driver: Any, css: str, name: str, tmp_path: Path) -> None:
    """Screenshot one panel; kept in $MEDIAPIPE_DASHBOARD_SCREENSHOTS when set."""
    shot = tmp_path / name
    panel = driver.find_element(By.CSS_SELECTOR, css)
    driver.execute_script("arguments[0].scrollIntoView(true);", panel)  # all of it in view
    shot.write_bytes(panel.screenshot_as_png)
    assert shot.stat().st_size > 5_000
    if folder := os.environ.get("MEDIAPIPE_DASHBOARD_SCREENSHOTS"):
        (Path(folder) / name).write_bytes(shot.read_bytes())


def _no_page_errors(driver: Any) -> None:
    problems = [
        e["message"]
        for e in driver.get_log("browser")
        if "Content Security Policy" in e["message"] or "Uncaught" in e["message"]
    ]
    assert problems == []


def test_the_job_view_shows_attempts_errors_timings_progress_and_outputs(
    browser: Any,  # noqa: F811
    fleet: Workers,  # noqa: F811
    serve: Callable[[Client], Served],
    r: redis.Redis,
    namespace: str,
    tmp_path: Path,
) -> None:
    client = Client(r, namespace=namespace, registry=REGISTRY)
    worker = fleet.spawn("--import", "tests.dashboard.dash_stages", "--concurrency", "2")
    worker_id = fleet.worker_id(worker)
    served = serve(client)
    out_dir = tmp_path / "out" / "talk"
    out_dir.mkdir(parents=True)
    browser.get(f"{served.url}/#token={served.token}")
    wait_for(lambda: "live · events" in _text(browser, "#live"), 20, "the event stream")

    dag = Dag(meta={"input": "/srv/in/talk.mov", "out_dir": str(out_dir)})
    dag.add("probe", "t.echo", {"x": 1})
    dag.add("transcode_720p", "dash.transcode", {"seconds": 4.0}, after=["probe"])
    dag.add(
        "poster",
        "dash.flaky_poster",
        {"out_dir": str(out_dir)},
        after=["probe"],
        backoff=Backoff(base=0.2, jitter=0),
    )
    client.submit(dag)
    transcode = dag.job_id("transcode_720p")

    # Live fps and eta of the running transcode, in the active jobs list.
    row = f'#jobs tr[data-job-id="{transcode}"]'
    wait_for(lambda: _text(browser, f"{row} .fps") == "30", 20, "the transcode's fps")
    assert "s" in _text(browser, f"{row} .eta") and _text(browser, f"{row} .speed") == "1.00x"
    assert _text(browser, f"{row} td.mono:nth-child(6)") == worker_id

    # Clicking a stage of the graph opens its job: both attempts, the first one's error
    # and traceback, timings, worker, and the poster as a link and a thumbnail.
    wait_for(lambda: browser.find_elements(By.CSS_SELECTOR, '#graph g[data-job="poster"]'), 20)
    _click(browser, '#graph g[data-job="poster"]')
    panel = "#job-panel"
    wait_for(lambda: not browser.find_element(By.CSS_SELECTOR, panel).get_attribute("hidden"))
    poster = f'#job[data-job-id="{dag.job_id("poster")}"] .job-state'
    wait_for(lambda: _attr(browser, poster, "data-state") == "completed", 20, "the poster")
    attempts = browser.find_elements(By.CSS_SELECTOR, "#job tr.attempt")
    assert [a.get_attribute("data-outcome") for a in attempts] == ["failed", "completed"]
    assert "OSError: the output disk went away" in attempts[0].text
    assert browser.find_elements(By.CSS_SELECTOR, "#job tr.attempt details pre.traceback")
    assert "retry in 0.2s" in _text(browser, "#job tr.note")
    assert _text(browser, "#job .job-worker") == worker_id
    assert _text(browser, "#job .job-attempts") == "2 of 3"
    for cell in ("created", "started", "finished", "duration"):
        assert _text(browser, f"#job .timings dd.{cell}") not in ("", "—"), cell
    assert "/srv/in/talk.mov" in _text(browser, "#job")
    link = _attr(browser, "#job a.output-link", "href")
    assert link.endswith(f"/files/{dag.job_id('poster')}/0")
    wait_for(
        lambda: (
            browser.execute_script(
                "const i = document.querySelector('#job img.thumb'); return i && i.naturalWidth;"
            )
            == 160
        ),
        10,
        "the poster's thumbnail",
    )
    with urllib.request.urlopen(link, timeout=10) as resp:
        assert resp.headers["Content-Type"] == "image/png" and resp.read(4) == b"\x89PNG"
    _keep(browser, panel, "dashboard-job.png", tmp_path)

    # The transcode's own view: its progress while it runs, then its duration.
    _click(browser, '#graph g[data-job="transcode_720p"]')
    state = f'#job[data-job-id="{transcode}"] .job-state'
    wait_for(lambda: _attr(browser, state, "data-state") == "completed", 20, "its view")
    assert _text(browser, "#job .timings dd.duration").endswith(" s")
    _click(browser, "#job-close")
    wait_for(lambda: browser.find_element(By.CSS_SELECTOR, panel).get_attribute("hidden"))
    _no_page_errors(browser)


@pytest.mark.serial  # alone under xdist: it times one API call (< 1 s)
def test_state_filter_search_and_pagination_over_500_dags(
    browser: Any,  # noqa: F811
    serve: Callable[[Client], Served],
    r: redis.Redis,
    namespace: str,
    tmp_path: Path,
) -> None:
    client = Client(r, namespace=namespace, registry=REGISTRY)
    broker = Broker(r, namespace=namespace, registry=REGISTRY, lease=5.0)
    finished = []
    for i, stage_name in enumerate(("t.echo", "t.echo", "t.echo", "t.bad_input")):
        d = Dag(meta={"input": f"/srv/done/photo-{i}.jpg"})
        d.add("only", stage_name, {"path": f"photo-{i}.jpg", "x": i})
        client.submit(d)
        run_dag(client, broker, d.id)
        finished.append(d)
    waiting = []
    for i in range(500):
        d = Dag(meta={"input": f"/srv/in/clip-{i:03d}.mov"})
        d.add("only", "t.echo", {"x": i})
        waiting.append(d)
    client.submit_many(waiting)  # no worker: all 500 stay running
    newest_first = [d.id for d in reversed(waiting)] + [d.id for d in reversed(finished)]
    served = serve(client)
    browser.get(f"{served.url}/#token={served.token}")

    rows = "#dags tr[data-dag-id]"
    wait_for(lambda: _rows(browser, rows) == newest_first[:25], 20, "the first page")
    assert "1\u201325" in _text(browser, "#dag-note")
    assert _attr(browser, "#dag-prev", "disabled") == "true"

    # The state filter: only the finished DAGs of each state.
    _click(browser, '#dag-states button[data-state="completed"]')
    done_ids = sorted(d.id for d in finished[:3])
    wait_for(lambda: sorted(_rows(browser, rows)) == done_ids, 10, "completed DAGs only")
    states = {_attr(browser, f'#dags tr[data-dag-id="{i}"]', "data-state") for i in done_ids}
    assert states == {"completed"}
    assert all(_text(browser, f'#dags tr[data-dag-id="{i}"] .finished') != "—" for i in done_ids)
    assert "3 completed, 1 failed or cancelled in all" in _text(browser, "#dag-note")
    _keep(browser, "#dags-panel", "dashboard-dags.png", tmp_path)
    _click(browser, '#dag-states button[data-state="failed"]')
    wait_for(lambda: _rows(browser, rows) == [finished[3].id], 10, "the failed DAG only")
    _click(browser, '#dag-states button[data-state="running"]')
    wait_for(lambda: _rows(browser, rows) == newest_first[:25], 10, "running DAGs")
    _click(browser, '#dag-states button[data-state=""]')

    # Search by input name.
    search = browser.find_element(By.CSS_SELECTOR, "#dag-search")
    search.send_keys("CLIP-123")
    wait_for(lambda: _rows(browser, rows) == [waiting[123].id], 10, "the search's match")
    search.clear()
    search.send_keys(" ")  # an input event with an empty query
    wait_for(lambda: _rows(browser, rows) == newest_first[:25], 10, "the list again")

    # Pages: the next ones in order, then a jump to the last (504 DAGs: page 21 holds 4).
    _click(browser, "#dag-next")
    wait_for(lambda: _rows(browser, rows) == newest_first[25:50], 10, "page 2")
    _click(browser, "#dag-next")
    wait_for(lambda: _rows(browser, rows) == newest_first[50:75], 10, "page 3")
    _click(browser, "#dag-prev")
    wait_for(lambda: _rows(browser, rows) == newest_first[25:50], 10, "page 2 again")
    page = browser.find_element(By.CSS_SELECTOR, "#dag-page")
    page.click()  # focused, a redraw leaves the field alone while it is typed in
    page.send_keys(Keys.CONTROL, "a")
    page.send_keys("21", Keys.ENTER)
    wait_for(lambda: _rows(browser, rows) == newest_first[500:], 10, "the last page")
    assert _attr(browser, "#dag-next", "disabled") == "true"
    assert "501\u2013504" in _text(browser, "#dag-note")

    t0 = time.monotonic()
    with urllib.request.urlopen(f"{served.url}/api/dags?page=21", timeout=10) as resp:
        assert resp.status == 200
    assert time.monotonic() - t0 < 1.0  # 504 DAG hashes, pipelined
    _no_page_errors(browser)


# Serial (alone under xdist): the page must show "stopping" within the 3 s job; with every
# core busy the worker could finish and leave first.
@pytest.mark.serial
def test_a_worker_drained_from_the_browser_finishes_its_job_and_exits(
    browser: Any,  # noqa: F811
    fleet: Workers,  # noqa: F811
    serve: Callable[[Client], Served],
    r: redis.Redis,
    namespace: str,
    tmp_path: Path,
) -> None:
    client = Client(r, namespace=namespace, registry=REGISTRY)
    worker = fleet.spawn("--concurrency", "1", "--grace", "30")
    worker_id = fleet.worker_id(worker)
    served = serve(client)
    dag = Dag(meta={"input": "/srv/in/long.mov"})
    dag.add("long", "t.sleep", {"seconds": 3.0})
    client.submit(dag)
    wait_for(lambda: (client.job(dag.job_id("long")) or {}).get("state") == "active", 20)

    browser.get(f"{served.url}/#token={served.token}")
    row = f'#workers tr[data-worker-id="{worker_id}"]'
    wait_for(lambda: browser.find_elements(By.CSS_SELECTOR, f"{row} button.drain"), 20)
    browser.execute_script("window.confirm = () => true;")
    _click(browser, f"{row} button.drain")
    wait_for(lambda: "Asked" in _text(browser, "#message"), 10, "the drain to be accepted")
    wait_for(lambda: "stopping" in _text(browser, f"{row} .state"), 10, "the worker to drain")
    assert not browser.find_elements(By.CSS_SELECTOR, f"{row} button.drain")
    _keep(browser, "#workers-panel", "dashboard-workers.png", tmp_path)

    assert worker.wait(20) == 0, fleet.log(worker)
    assert client.dag_state(dag.id) == "completed"  # it finished the job it was running
    job = client.job(dag.job_id("long"))
    assert job is not None and job["attempts"] == 1 and job["worker"] == worker_id
    wait_for(lambda: "no live workers" in _text(browser, "#workers"), 15, "the row to go")
    _no_page_errors(browser)
