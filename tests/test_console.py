"""The web console, end to end in headless Chromium (Debian's, never one a test tool downloads): submit a
pipeline, watch it run, see its graph with counts and its logs, cancel it from the page; launch a template
through its form; sign in with the one-time link of a server with authentication on, and change state only
with the session's CSRF token. The pages must never fire an API call that fails unexpectedly."""

from __future__ import annotations

import importlib.metadata
import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest
from conftest import CREDENTIALS, Api, Server
from test_running_jobs import PIPELINES, dataflow_flags, read_output, run, wait_state

from beamport.credentials import KeyFileAuth
from beamport.service.iam import ADMIN_EMAIL

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
    done = run(
        [
            str(PIPELINES / "shuffled_slow_pipeline.py"),
            "120",
            str(base / "out" / "slow"),
            *dataflow_flags(srv, project, base, "console-slow"),
        ]
    )
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
    assert "null" not in page.locator("#launch-form").inner_text()  # under a field without help text, say
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


def test_the_workers_page_shows_live_workers_and_gone_ones_on_request_never_as_healthy(console_server, project, page):
    srv, _ = console_server
    api = Api(srv.url, project)
    job = api.create("ghost-job")
    ghost = f"ghost-{project}"
    labels = {"JOB_ID": job["id"], "WORKER_ID": ghost}
    # A healthy report, then a shutdown notice: gone at once, its last report (healthy) kept as history.
    answer = api.client.post(
        f"/v1b3/projects/{project}/locations/us-central1/WorkerMessages",
        json={
            "workerMessages": [
                {"labels": labels, "workerHealthReport": {"vmIsHealthy": True}},
                {"labels": labels, "workerShutdownNotice": {"reason": "UNKNOWN"}},
            ]
        },
    )
    assert answer.status_code == 200, answer.text

    page.goto(f"{srv.url}/#/workers")
    # The server's local workers are live (IDLE or RUNNING): listed by default; the gone one is not.
    page.locator("#workers tbody tr", has_text="local-").first.wait_for()
    assert page.locator("#workers tbody tr", has_text=ghost).count() == 0
    assert page.locator("#workers tbody tr.gone").count() == 0
    page.check("#show-gone-workers")
    row = page.locator("#workers tbody tr", has_text=ghost)
    row.wait_for()
    assert row.get_attribute("class") == "gone"
    cells = row.locator("td").all_inner_texts()
    assert cells[2] == "SHUTDOWN" and cells[3] == "shutdown: shutdown notice (UNKNOWN)", cells
    page.uncheck("#show-gone-workers")
    row.wait_for(state="detached")
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


def test_the_console_opens_on_the_latest_jobs_project_remembers_the_choice_and_links_name_the_project(
    console_server, project, browser, page
):
    """A fresh browser opens on the project of the most recent job (GET /beamport/v1/projects), offers the
    projects that have jobs, remembers the one chosen across reloads, and a job's link opens that job (its
    project and location in the URL) in another browser."""
    srv, _ = console_server
    older = f"{project}-older"
    Api(srv.url, older).create("in-the-older-project", type="JOB_TYPE_STREAMING")  # no streaming engine: PENDING
    newest = Api(srv.url, project, "europe-west1").create("the-newest-job", type="JOB_TYPE_STREAMING")

    page.goto(f"{srv.url}/#/jobs")
    page.locator("#jobs tbody tr", has_text="the-newest-job").wait_for()
    assert page.input_value("#project") == project
    for offered in (project, older):
        assert page.locator(f"#project-choices option[value='{offered}']").count() == 1
    # Chosen, and remembered over a reload (this browser's localStorage).
    page.fill("#project", older)
    page.press("#project", "Enter")
    page.locator("#jobs tbody tr", has_text="in-the-older-project").wait_for()
    page.reload()
    page.locator("#jobs tbody tr", has_text="in-the-older-project").wait_for()
    assert page.input_value("#project") == older
    # The job's link, from the list, opened in another browser (nothing remembered there).
    page.fill("#project", project)
    page.press("#project", "Enter")
    link = page.locator("#jobs a", has_text="the-newest-job").get_attribute("href")
    assert link == f"#/jobs/{project}/europe-west1/{newest['id']}"
    other = browser.new_context(viewport={"width": 1400, "height": 1000})
    try:
        elsewhere = other.new_page()
        failures = []
        elsewhere.on("response", lambda r: r.status >= 400 and failures.append((r.status, r.url)))
        elsewhere.on("pageerror", lambda e: failures.append(("script error", str(e))))
        elsewhere.goto(f"{srv.url}/{link}")
        elsewhere.locator("#job-header", has_text=newest["id"]).wait_for()
        assert elsewhere.locator("#job-header", has_text="europe-west1").count() == 1
        assert elsewhere.input_value("#project") == project
        assert failures == []
    finally:
        other.close()
    assert page.failures == []


@pytest.fixture(scope="module")
def one_worker_server(tmp_path_factory):
    """A server with a single local worker: each job runs on the same worker as the one before."""
    base = tmp_path_factory.mktemp("console-one-worker")
    srv = Server(base / "data", extra_args=("--allow-path", str(base), "--workers", "1")).start()
    yield srv, base
    if srv.process is not None:
        srv.stop()


def page_text(page) -> str:
    """What the job page says, but its log (the pipeline's own messages may say anything)."""
    return page.evaluate("() => [...document.querySelectorAll('main > :not(#logs)')].map(e => e.innerText).join('\\n')")


def shown_vcpu_seconds(page) -> float:
    return float(re.search(r"\(([\d.]+) vCPU-seconds\)", page.locator("#vcpu-time").inner_text()).group(1))


def service_metric(api: Api, job_id: str, name: str) -> float:
    """A resource metric of the job, as getMetrics answers it (committed)."""
    metrics = api.client.get(f"{api.jobs_path}/{job_id}/metrics").json().get("metrics", [])
    (value,) = [
        m["scalar"]
        for m in metrics
        if m["name"]["origin"] == "dataflow/v1b3" and m["name"]["name"] == name and "context" not in m["name"]
    ]
    return value


def test_a_job_page_says_what_the_user_set_and_keeps_what_the_job_used(one_worker_server, project, page):
    srv, base = one_worker_server
    api = Api(srv.url, project)
    output = base / "out" / "numbers"
    done = run(
        [
            str(PIPELINES / "console_pipeline.py"),
            f"--output={output}",
            "--seconds=6",
            *dataflow_flags(srv, project, base, "console-used"),
        ]
    )
    job_id = done.stdout.split("JOB_ID ", 1)[1].split()[0]
    page.goto(f"{srv.url}/#/jobs/{project}/us-central1/{job_id}")

    # A running batch job: Cancel and nothing else, and nothing on the page reads "null" or "undefined".
    page.locator("#job-state", has_text="RUNNING").wait_for(timeout=60_000)
    assert page.locator("#job-actions").inner_text() == "Cancel"
    assert not re.search(r"\b(null|undefined|NaN)\b", page_text(page)), page_text(page)

    page.locator("#job-state", has_text="DONE").wait_for(timeout=120_000)
    assert (
        page.locator("#job-sdk").inner_text()
        == f"Apache Beam SDK for Python {importlib.metadata.version('apache-beam')}"
    )
    # Options: what the user set (Beam's display data), every one of them, and not Beam's defaults.
    options = page.locator("#job-options li").all_inner_texts()
    assert (
        f"output = {output}" in options
        and "job_name = console-used" in options
        and "runner = DataflowRunner" in options
    )
    assert not [o for o in options if o.startswith(("beam_services", "parallelism", "pipelineUrl"))], options
    # Metrics: the user's, by the step names the user gave; none of Beam's own (lineage), no transform ids.
    table = page.locator("#metrics-table")
    table.locator("td", has_text=re.compile(r"^naps$")).wait_for()
    rows = table.evaluate("t => [...t.tBodies[0].rows].map(r => [...r.cells].slice(0, 4).map(c => c.innerText))")
    assert sorted(rows) == [
        ["Nap", "naps", "Sum", "10"],
        ["Nap", "sizes", "Distribution", "count 10, sum 45, min 0, max 9"],
    ]
    assert "ref_AppliedPTransform" not in table.inner_text() and "sinks_v2" not in table.inner_text()
    section = "(e => e.scrollWidth <= e.clientWidth)(document.getElementById('metrics').parentElement)"
    assert page.evaluate(f"() => {section}"), "the metrics table does not fit its column"
    counts = page.locator("#graph text.count").all_text_contents()
    assert "1 element" in counts and not [c for c in counts if c.startswith("1 elements")], counts
    # What the job used: its worker's CPU and memory, from getMetrics.
    page.wait_for_function(
        "() => /\\(([1-9]|0\\.[1-9])/.test((document.getElementById('vcpu-time') || {}).textContent)", timeout=30_000
    )
    assert page.locator("#memory-time").inner_text() != "0.00000 GB-hours"
    assert page.locator("#cost").inner_text().startswith("$")
    worker_id = page.locator("#job-workers tbody td").first.inner_text()
    assert worker_id

    # The only worker runs another job: the first one's page still shows its worker and what it used.
    again = run(
        [
            str(PIPELINES / "console_pipeline.py"),
            f"--output={base / 'out' / 'again'}",
            *dataflow_flags(srv, project, base, "console-next"),
        ]
    )
    next_id = again.stdout.split("JOB_ID ", 1)[1].split()[0]
    assert wait_state(api, next_id, {"JOB_STATE_DONE"}, timeout=120)["currentState"] == "JOB_STATE_DONE"
    assert api.client.get(f"/beamport/v1/workers/{worker_id}").json()["jobId"] == next_id
    used = service_metric(api, job_id, "TotalVcpuTime")
    assert used > 0 and service_metric(api, job_id, "TotalMemoryUsage") > 0

    def shows_what_it_used():
        page.goto(f"{srv.url}/#/jobs/{project}/us-central1/{job_id}")
        page.reload()
        page.locator("#job-state", has_text="DONE").wait_for()
        row = page.locator("#job-workers tbody tr", has_text=worker_id)
        row.locator("td.state.MOVED_ON").wait_for()
        assert "container start" in row.inner_text()  # its lifecycle events for this job
        page.locator("#vcpu-time").wait_for()
        # One decimal, as JavaScript's toFixed rounds: a half goes up (1.25 -> 1.3), where Python's round goes to
        # the even digit (1.2); the value shown is the one used, to within that rounding.
        assert abs(shown_vcpu_seconds(page) - used) <= 0.05 + 1e-9

    shows_what_it_used()
    # And after a restart of the server.
    srv.stop()
    srv.start()
    shows_what_it_used()
    assert page.failures == []


# -- signing in (authentication on) -------------------------------------------------------------------


@pytest.fixture
def auth_server(tmp_path):
    base = tmp_path
    srv = Server(base / "data", extra_args=("--allow-path", str(base)), auth=True).start()
    yield srv, base
    if srv.process is not None:
        srv.stop()


def sign_in_link(srv: Server) -> str:
    """The newest one-time link `beamport serve` logged at start."""
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        links = re.findall(r"Console \(one-time sign-in link\): (\S+)", srv.log_path.read_text())
        if links:
            return links[-1]
        time.sleep(0.1)
    raise AssertionError(f"no sign-in link in the server's log:\n{srv.log_path.read_text()}")


def run_authenticated(srv: Server, args: list[str]) -> subprocess.CompletedProcess:
    """A DataflowRunner submission that authenticates with the server's admin key (as a user would)."""
    flags = [f for f in args if f != "--no_auth"]
    env = {**os.environ, CREDENTIALS: str(srv.admin_key)}
    done = subprocess.run([sys.executable, *flags], capture_output=True, text=True, timeout=300, env=env)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-5000:]
    return done


def is_api(url: str) -> bool:
    path = url.split("://", 1)[1].split("/", 1)[1] if "://" in url else url
    return path.startswith(("v1b3/", "v1/", "beamport/v1/", "token"))


def test_sign_in_with_the_one_time_link_and_cancel_with_the_csrf_token(auth_server, project, page):
    srv, base = auth_server
    api = Api(srv.url, project)
    api.client.auth = KeyFileAuth(srv.admin_key)
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    requests = []
    page.on("request", lambda r: is_api(r.url) and requests.append(r))

    # Without a session: the sign-in view, and no API call but the session's.
    page.goto(f"{srv.url}/#/jobs")
    page.locator("#signin", has_text="Sign in to Beamport").wait_for()
    assert page.locator("#signin", has_text="beamport console link").count() == 1
    assert page.locator("nav").is_hidden()
    page.wait_for_timeout(2500)  # longer than a refresh: nothing else is asked
    assert {r.url.split("?")[0] for r in requests} == {f"{srv.url}/beamport/v1/session"}
    assert {f for f in page.failures} == {(401, f"{srv.url}/beamport/v1/session")}
    page.screenshot(path=str(ARTIFACTS / "console-sign-in.png"), full_page=True)
    page.failures.clear()

    # A running batch job, submitted with the admin key.
    done = run_authenticated(
        srv,
        [
            str(PIPELINES / "shuffled_slow_pipeline.py"),
            "120",
            str(base / "out" / "slow"),
            *dataflow_flags(srv, project, base, "console-signed-in"),
        ],
    )
    job_id = done.stdout.split("JOB_ID ", 1)[1].split()[0]

    # The link signs the browser in (an HttpOnly, SameSite=Strict cookie) and opens the console.
    link = sign_in_link(srv)
    page.goto(link)
    assert page.url == f"{srv.url}/"
    (cookie,) = [c for c in page.context.cookies() if c["name"] == f"beamport_session_{srv.port}"]
    assert cookie["httpOnly"] and cookie["sameSite"] == "Strict"
    page.locator("#principal", has_text=ADMIN_EMAIL).wait_for()
    page.fill("#project", project)
    page.press("#project", "Enter")
    row = page.locator("#jobs tbody tr", has_text="console-signed-in")
    row.locator("text=RUNNING").wait_for(timeout=60_000)
    page.screenshot(path=str(ARTIFACTS / "console-signed-in.png"), full_page=True)
    token = page.evaluate("async () => (await (await fetch('/beamport/v1/session')).json()).csrfToken")
    assert token

    # Cancel from the page: its PUT carries the session's CSRF token.
    row.locator("a").click()
    page.locator("#job-state", has_text="RUNNING").wait_for()
    page.once("dialog", lambda dialog: dialog.accept())
    with page.expect_request(lambda r: r.method == "PUT" and r.url.endswith(f"/jobs/{job_id}")) as sent:
        page.click("button:has-text('Cancel')")
    assert sent.value.headers.get("x-csrf-token") == token
    page.locator("#job-state", has_text="CANCELLED").wait_for(timeout=15_000)
    assert api.get(job_id).json()["currentState"] == "JOB_STATE_CANCELLED"
    assert page.failures == []

    # The same call from the page without the token is refused.
    job_path = f"/v1b3/projects/{project}/locations/us-central1/jobs/{job_id}"
    status, message = page.evaluate(
        """async (path) => {
            const r = await fetch(path, {method: "PUT", headers: {"Content-Type": "application/json"},
                                         body: JSON.stringify({requestedState: "JOB_STATE_CANCELLED"})});
            return [r.status, ((await r.json()).error || {}).message];
        }""",
        job_path,
    )
    assert (status, message) == (403, "A console request that changes state must carry its CSRF token.")
    assert page.failures == [(403, f"{srv.url}{job_path}")]
    page.failures.clear()

    # A link works once.
    second = page.goto(link)
    assert second.status == 401
    assert "used already" in page.content()
    page.failures.clear()

    # The session ends with the server (sessions live in its memory): the open page shows the sign-in view.
    page.goto(f"{srv.url}/#/jobs")
    page.locator("#principal", has_text=ADMIN_EMAIL).wait_for()
    row.locator("text=CANCELLED").wait_for()
    srv.stop()
    srv.start()
    page.locator("#signin", has_text="session has ended").wait_for(timeout=15_000)
    assert page.locator("#principal").count() == 0
    assert page.failures and all(status == 401 for status, _ in page.failures), page.failures
    page.failures.clear()

    # Signed in again in another tab (the restarted server's new link): Continue picks the session up.
    other = page.context.new_page()
    other.goto(sign_in_link(srv))
    other.close()
    page.click("#signin-continue")
    page.locator("#principal", has_text=ADMIN_EMAIL).wait_for()
    page.locator("#jobs tbody tr", has_text="console-signed-in").locator("text=CANCELLED").wait_for()
    assert page.failures == []
