"""The web console, end to end in headless Chromium (Debian's, never one a test tool downloads): submit a
pipeline, watch it run, see its graph with counts and its logs, cancel it from the page; launch a template
through its form. The pages must never fire an API call that fails unexpectedly."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

from conftest import Api, Server
from test_running_jobs import PIPELINES, dataflow_flags, read_output, run, wait_state

pytestmark = pytest.mark.slow
CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
ARTIFACTS = Path(os.environ.get("BEAMPORT_TEST_ARTIFACTS", Path(__file__).parent.parent / "test-artifacts"))


@pytest.fixture(scope="module")
def browser():
    if not Path(CHROMIUM).exists():
        message = "Chromium is not installed: scripts/test installs Debian's chromium"
        if os.environ.get("CI"):
            pytest.fail(message)
        pytest.skip(message)
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        chromium = playwright.chromium.launch(executable_path=CHROMIUM, headless=True, args=["--no-sandbox"])
        yield chromium
        chromium.close()


@pytest.fixture
def page(browser):
    context = browser.new_context(viewport={"width": 1400, "height": 1000})
    page = context.new_page()
    page.failures = []  # (status, url) of every API call that failed
    page.on("response", lambda r: r.status >= 400 and page.failures.append((r.status, r.url)))
    page.on("pageerror", lambda e: page.failures.append(("script error", str(e))))
    yield page
    context.close()


@pytest.fixture(scope="module")
def console_server(tmp_path_factory):
    base = tmp_path_factory.mktemp("console")
    srv = Server(base / "data", extra_args=("--allow-path", str(base))).start()
    yield srv, base
    srv.stop()


def test_watch_a_job_run_and_cancel_it_from_the_console(console_server, project, page):
    srv, base = console_server
    api = Api(srv.url, project)
    done = run([str(PIPELINES / "shuffled_slow_pipeline.py"), "120", str(base / "out" / "slow"),
                *dataflow_flags(srv, project, base, "console-slow")])  # fmt: skip
    job_id = done.stdout.split("JOB_ID ", 1)[1].split()[0]

    page.goto(f"{srv.url}/#/jobs")
    page.fill("#project", project)
    page.press("#project", "Enter")
    row = page.locator("#jobs tbody tr", has_text="console-slow")
    row.locator("text=RUNNING").wait_for(timeout=60_000)
    row.locator("a").click()

    page.locator("#job-state", has_text="RUNNING").wait_for()
    # The graph, with element counts from the stage that has ended while the next one runs.
    page.wait_for_function(
        "() => [...document.querySelectorAll('#graph text.count')].some(t => t.textContent.startsWith('10 '))",
        timeout=60_000,
    )
    assert page.locator("#job-state", has_text="RUNNING").count() == 1
    assert page.locator("#graph g.node").count() >= 3  # Create, Reshuffle, Map(nap), WriteToText
    page.locator("#logs", has_text="Workers have started successfully.").wait_for()
    page.locator("#job-workers td", has_text="RUNNING").first.wait_for()
    page.locator("#timeline .bar.EXECUTION_STATE_RUNNING").first.wait_for(timeout=30_000)

    page.once("dialog", lambda dialog: dialog.accept())
    page.click("button:has-text('Cancel')")
    page.locator("#job-state", has_text="CANCELLED").wait_for(timeout=15_000)
    assert api.get(job_id).json()["currentState"] == "JOB_STATE_CANCELLED"
    assert page.failures == []


def test_launch_a_template_through_its_form(console_server, project, page):
    srv, base = console_server
    api = Api(srv.url, project)
    (base / "words.txt").write_text("a rose is a rose\n")
    page.goto(f"{srv.url}/#/templates")
    page.fill("#project", project)
    page.press("#project", "Enter")
    page.select_option("select[aria-label='Built-in template']", "builtin://Word_Count")
    page.locator("#launch-form").wait_for(timeout=60_000)  # the first use writes the built-in template
    # The form checks before it sends: a required field left empty.
    page.fill("#f-jobName", "from-the-form")
    page.click("#launch-form button[type=submit]")
    assert page.locator("#f-inputFile:invalid").count() == 1
    page.fill("#f-inputFile", str(base / "words.txt"))
    page.fill("#f-output", str(base / "form" / "counts"))
    page.click("#launch-form button[type=submit]")
    page.locator("#job-state", has_text="DONE").wait_for(timeout=120_000)
    # The graph of the finished job, with its element counts.
    page.wait_for_function(
        "() => [...document.querySelectorAll('#graph text.count')].some(t => !t.textContent.startsWith('0 '))",
        timeout=30_000,
    )
    page.locator("#logs", has_text="Launched from the template").wait_for()
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / "job-page.png"), full_page=True)
    (job,) = [j for j in api.all_jobs() if j["name"] == "from-the-form"]
    assert wait_state(api, job["id"], {"JOB_STATE_DONE"})["currentState"] == "JOB_STATE_DONE"
    assert read_output(base / "form" / "counts") == ["a: 2", "is: 1", "rose: 2"]
    assert page.failures == []


def test_a_failed_step_is_highlighted(console_server, project, page):
    srv, base = console_server
    api = Api(srv.url, project)
    run([str(PIPELINES / "failing_pipeline.py"), *dataflow_flags(srv, project, base, "console-fails")], check=False)
    (job,) = [j for j in api.all_jobs() if j["name"] == "console-fails"]
    assert job["currentState"] == "JOB_STATE_FAILED"
    page.goto(f"{srv.url}/#/jobs/{project}/us-central1/{job['id']}")
    page.locator("#job-state", has_text="FAILED").wait_for()
    page.locator("#graph g.node.failed[data-name='Map(explode)']").wait_for()
    page.locator("#logs", has_text="boom on element 3").first.wait_for()
    assert page.failures == []
