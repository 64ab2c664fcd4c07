"""The work-item protocol as a worker speaks it over HTTP: lease, reportStatus, WorkerMessages.

These tests play the worker by hand against a server with no local workers, so every step is visible.
"""

from __future__ import annotations

import time

from conftest import Api

from beamport import wire
from beamport.worker.api import Work, WorkerApi
from beamport.worker.harness import report_failure

NOW = "2026-01-01T00:00:00Z"


class Worker:
    def __init__(self, api: Api, job_id: str, worker_id: str = "w-1"):
        self.api, self.job_id, self.worker_id = api, job_id, worker_id
        self.path = f"{api.jobs_path}/{job_id}"

    def lease(self, **extra):
        body = {"workerId": self.worker_id, "requestedLeaseDuration": "30s", "currentWorkerTime": NOW, **extra}
        return self.api.client.post(self.path + "/workItems:lease", json=body)

    def report(self, item_id, index, **status):
        body = {
            "workerId": self.worker_id,
            "workItemStatuses": [{"workItemId": item_id, "reportIndex": str(index), **status}],
        }
        return self.api.client.post(self.path + "/workItems:reportStatus", json=body)

    def send(self, *messages):
        path = f"/v1b3/projects/{self.api.project}/locations/us-central1/WorkerMessages"
        return self.api.client.post(path, json={"workerMessages": list(messages)})

    def code(self, code, **parameters):
        return {
            "labels": {"JOB_ID": self.job_id, "WORKER_ID": self.worker_id},
            "time": NOW,
            "workerMessageCode": {"code": code, "parameters": parameters},
        }


def texts(api, job_id, **params):
    return [m["messageText"] for m in api.messages(job_id, **params).json().get("jobMessages", [])]


COUNTER = {
    "name": {"origin": "user", "name": "words", "context": {"step": "s1", "namespace": "ns"}},
    "kind": "Sum",
    "scalar": 7,
    "cumulative": True,
}


def test_a_worker_runs_a_job_to_done(api):
    job = api.create("batch")
    worker = Worker(api, job["id"])
    leased = worker.lease()
    assert leased.status_code == 200, leased.text
    (item,) = leased.json()["workItems"]
    assert item["jobId"] == job["id"] and item["projectId"] == api.project
    assert item["initialReportIndex"] == "1" and item["reportStatusInterval"] == "1s" and "leaseExpireTime" in item
    # Leased is not running: the job is RUNNING once the worker's engine says it runs the job.
    assert api.get(job["id"]).json()["currentState"] == "JOB_STATE_PENDING"
    assert "Workers have started successfully." in texts(api, job["id"])

    # The work is held: nobody else gets it.
    assert Worker(api, job["id"], "w-2").lease().json() == {}

    assert worker.send(worker.code("BEAMPORT_ENGINE_RUNNING", detail="a test engine")).status_code == 200
    assert api.get(job["id"]).json()["currentState"] == "JOB_STATE_RUNNING"
    assert "The job is running on a test engine." in texts(api, job["id"], minimumImportance="JOB_MESSAGE_DETAILED")

    assert worker.send(
        worker.code("HARNESS_STARTED"),
        worker.code("BEAMPORT_JOB_LOG", importance="JOB_MESSAGE_WARNING", text="careful"),
        worker.code("BEAMPORT_STAGE_STATE", stage="F1", state="JOB_STATE_RUNNING"),
        worker.code("SOMETHING_NEW", detail=1),
    ).json() == {"workerMessageResponses": [{}, {}, {}, {}]}
    assert "careful" in texts(api, job["id"], minimumImportance="JOB_MESSAGE_WARNING")
    assert any("SOMETHING_NEW" in t for t in texts(api, job["id"], minimumImportance="JOB_MESSAGE_DETAILED"))
    assert api.get(job["id"]).json()["stageStates"][0]["executionStageState"] == "JOB_STATE_RUNNING"

    first = worker.report(item["id"], 1, metricUpdates=[COUNTER], reportedProgress={"fractionConsumed": 0.25})
    assert first.status_code == 200, first.text
    state = first.json()["workItemServiceStates"][0]
    assert state["nextReportIndex"] == "2" and "leaseExpireTime" in state
    listed = api.client.get("/beamport/v1/workers", params={"jobId": job["id"], "all": "true"}).json()["workers"]
    assert [w.get("workItemProgress") for w in listed if w["workerId"] == "w-1"] == [0.25]
    metrics = api.client.get(f"{api.jobs_path}/{job['id']}/metrics").json()["metrics"]
    assert [m["scalar"] for m in metrics] == [7] and metrics[0]["updateTime"]

    worker.send(worker.code("BEAMPORT_STAGE_STATE", stage="F1", state="JOB_STATE_DONE"))
    done = worker.report(item["id"], 2, metricUpdates=[{**COUNTER, "scalar": 9}], completed=True)
    assert done.status_code == 200, done.text
    final = api.get(job["id"]).json()
    assert final["currentState"] == "JOB_STATE_DONE"
    assert "Worker pool stopped." in texts(api, job["id"])
    metrics = api.client.get(f"{api.jobs_path}/{job['id']}/metrics").json()["metrics"]
    assert [m["scalar"] for m in metrics] == [9]  # cumulative: the newest value replaces the old one

    details = api.client.get(f"{api.jobs_path}/{job['id']}/executionDetails").json()
    assert details["stages"][0]["stageId"] == "F1" and details["stages"][0]["state"] == "EXECUTION_STATE_SUCCEEDED"
    stage = api.client.get(f"{api.jobs_path}/{job['id']}/stages/F1/executionDetails").json()
    assert stage["workers"][0]["workerName"] == "w-1"

    # A finished job's work answers any late report with completeWorkStatus.
    late = worker.report(item["id"], 3).json()["workItemServiceStates"][0]
    assert late["completeWorkStatus"]["code"] == 1


def test_a_log_message_keeps_the_time_it_was_logged_but_never_a_future_one(api):
    """A worker's logs reach the service in batches: each job message is stamped with the time its worker logged
    it (not the batch's arrival), though never later than the service's clock nor earlier than the job's latest
    message (pollers ask for messages from the last time they saw)."""
    job = api.create("batch")
    worker = Worker(api, job["id"])
    worker.lease()
    latest = max(wire.parse_timestamp_us(m["time"], "time") for m in api.messages(job["id"]).json()["jobMessages"])
    time.sleep(0.5)
    logged = latest + 200_000  # after the job's latest message, before this batch is sent

    def log(text, at):
        return {**worker.code("BEAMPORT_JOB_LOG", importance="JOB_MESSAGE_BASIC", text=text), "time": at}

    sent = worker.send(
        log("logged earlier", wire.format_timestamp_us(logged)), log("from the future", "2099-01-01T00:00:00Z")
    )
    assert sent.status_code == 200, sent.text
    received = wire.now_us()
    times = {
        m["messageText"]: wire.parse_timestamp_us(m["time"], "time")
        for m in api.messages(job["id"]).json()["jobMessages"]
    }
    assert times["logged earlier"] == logged
    assert logged < times["from the future"] <= received


def test_the_protocol_takes_proto_field_names_and_the_engine_gives_the_initial_workers(api):
    # Proto field names (snake_case) in every body of the protocol, as in the rest of the API (docs/api.md).
    job = api.create("snake-worker")
    path = f"{api.jobs_path}/{job['id']}"
    lease = {"worker_id": "w-snake", "requested_lease_duration": "30s", "current_worker_time": NOW}
    leased = api.client.post(path + "/workItems:lease", json=lease)
    assert leased.status_code == 200, leased.text
    (item,) = leased.json()["workItems"]
    running = {
        "labels": {"JOB_ID": job["id"], "WORKER_ID": "w-snake"},
        "time": NOW,
        "worker_message_code": {"code": "BEAMPORT_ENGINE_RUNNING", "parameters": {"detail": "a test", "workers": 3}},
    }
    sent = api.client.post(
        f"/v1b3/projects/{api.project}/locations/us-central1/WorkerMessages", json={"worker_messages": [running]}
    )
    assert sent.json() == {"workerMessageResponses": [{}]}
    assert api.get(job["id"]).json()["currentState"] == "JOB_STATE_RUNNING"
    # A job that names no worker count: its initial autoscaling event is the count its engine started on.
    events = api.messages(job["id"]).json()["autoscalingEvents"]
    assert [(e["eventType"], e["currentNumWorkers"], e["targetNumWorkers"]) for e in events] == [
        ("TARGET_NUM_WORKERS_CHANGED", "0", "3")
    ]
    status = {"work_item_id": item["id"], "report_index": "1", "completed": True}
    done = api.client.post(
        path + "/workItems:reportStatus", json={"worker_id": "w-snake", "work_item_statuses": [status]}
    )
    assert done.status_code == 200, done.text
    assert api.get(job["id"]).json()["currentState"] == "JOB_STATE_DONE"


def test_a_failed_attempt_is_retried_and_the_fourth_failure_fails_the_job(api):
    job = api.create("failing")
    for attempt in range(1, 5):
        worker = Worker(api, job["id"], f"w-{attempt}")
        leased = worker.lease().json()
        assert leased, f"attempt {attempt} found no work to lease"
        item = leased["workItems"][0]
        assert item["configuration"].count(f'"attempt": {attempt}') == 1
        error = f"Traceback (most recent call last):\n  ...\nValueError: boom {attempt}"
        answer = worker.report(
            item["id"], int(item["initialReportIndex"]), completed=True, errors=[{"code": 2, "message": error}]
        )
        assert answer.status_code == 200, answer.text
        state = api.get(job["id"]).json()["currentState"]
        assert state == ("JOB_STATE_FAILED" if attempt == 4 else "JOB_STATE_PENDING"), attempt  # it never ran
    errors = "\n".join(texts(api, job["id"], minimumImportance="JOB_MESSAGE_ERROR"))
    assert "failed 4 times" in errors
    for attempt in range(1, 5):  # the final message names each failure, with its worker
        assert f"attempt {attempt} on worker w-{attempt}: Traceback" in errors and f"boom {attempt}" in errors
    warnings = texts(api, job["id"], minimumImportance="JOB_MESSAGE_WARNING")
    assert sum("will be leased again" in t for t in warnings) == 3
    assert any("Worker w-2 took over work item" in t for t in texts(api, job["id"]))
    # A worker whose attempt ended is told to stop if it reports again.
    late = Worker(api, job["id"], "w-1").report(item["id"], 9).json()["workItemServiceStates"][0]
    assert late["completeWorkStatus"]["code"] in (1, 10)


def test_the_failure_of_an_executor_that_died_while_reporting_is_reported(api):
    """An executor can die after its report reached the service but before it told its worker so: the worker's
    failure report then comes one index on. Without it the work stayed leased, and a Prism job RUNNING, until its
    lease ran out."""
    job = api.create("dies-reporting")
    worker = Worker(api, job["id"])
    item = worker.lease().json()["workItems"][0]
    work = Work.from_item(item, "us-central1")
    assert worker.report(item["id"], work.report_index).status_code == 200  # the executor's last report

    as_worker = WorkerApi(str(api.client.base_url), worker.worker_id)
    # The executor never said it was sending: its index stands, and the service refuses it (nothing changes).
    assert not report_failure(as_worker, work, {"next_report_index": work.report_index}, "gone")
    assert api.get(job["id"]).json()["currentState"] == "JOB_STATE_PENDING"
    assert Worker(api, job["id"], "w-2").lease().json() == {}, "the work is still leased"
    # It said it was sending that report: the failure comes after it.
    progress = {"next_report_index": work.report_index, "reporting": work.report_index}
    assert report_failure(as_worker, work, progress, "The worker's executor process died.")
    warnings = texts(api, job["id"], minimumImportance="JOB_MESSAGE_WARNING")
    assert any("will be leased again" in t and "executor process died" in t for t in warnings), warnings
    assert Worker(api, job["id"], "w-2").lease().json()["workItems"], "the next attempt's work"


def test_cancel_reaches_the_worker(api):
    job = api.create("cancel-me")
    worker = Worker(api, job["id"])
    item = worker.lease().json()["workItems"][0]
    assert (
        api.update(job["id"], {"requestedState": "JOB_STATE_CANCELLED"}).json()["currentState"]
        == "JOB_STATE_CANCELLING"
    )
    answer = worker.report(item["id"], 1).json()["workItemServiceStates"][0]
    assert answer["completeWorkStatus"]["code"] == 1
    assert api.get(job["id"]).json()["currentState"] == "JOB_STATE_CANCELLED"


def test_protocol_errors_change_nothing(api):
    job = api.create("strict")
    worker = Worker(api, job["id"])
    item = worker.lease().json()["workItems"][0]
    before = (api.get(job["id"], view="JOB_VIEW_ALL").json(), texts(api, job["id"]))

    def refused(response, code, status):
        assert response.status_code == code, response.text
        assert response.json()["error"]["status"] == status

    refused(worker.report(item["id"], 5), 400, "FAILED_PRECONDITION")  # wrong report index
    refused(Worker(api, job["id"], "intruder").report(item["id"], 1), 400, "FAILED_PRECONDITION")
    refused(worker.report("999999", 1), 404, "NOT_FOUND")
    refused(worker.report("not-a-number", 1), 404, "NOT_FOUND")
    refused(worker.report(item["id"], 1, counterUpdates=[{"cumulative": True}]), 501, "UNIMPLEMENTED")
    refused(worker.report(item["id"], "x"), 400, "INVALID_ARGUMENT")
    refused(worker.lease(requestedLeaseDuration="soon"), 400, "INVALID_ARGUMENT")
    refused(api.client.post(worker.path + "/workItems:lease", json={}), 400, "INVALID_ARGUMENT")
    refused(Worker(api, "2020-01-01_00_00_00-1").lease(), 404, "NOT_FOUND")

    refused(worker.send({**worker.code("X"), "labels": {}}), 400, "INVALID_ARGUMENT")
    refused(worker.send({**worker.code("X"), "labels": {"JOB_ID": "2020-01-01_00_00_00-1"}}), 404, "NOT_FOUND")
    refused(
        worker.send({"labels": {"JOB_ID": job["id"]}, "workerHealthReport": {"vmIsHealthy": True}}),
        400,
        "INVALID_ARGUMENT",
    )
    refused(worker.send({**worker.code("X"), "perWorkerMetrics": {}}), 400, "INVALID_ARGUMENT")
    refused(worker.send({"labels": worker.code("X")["labels"], "streamingScalingReport": {}}), 501, "UNIMPLEMENTED")
    refused(
        worker.send({"labels": {"JOB_ID": job["id"]}, "workerHealthReport": {"vmIsHealthy": "yes"}}),
        400,
        "INVALID_ARGUMENT",
    )
    refused(worker.send(worker.code("BEAMPORT_JOB_LOG", importance="LOUD", text="x")), 400, "INVALID_ARGUMENT")
    refused(
        worker.send(worker.code("BEAMPORT_STAGE_STATE", stage="F", state="JOB_STATE_PAUSED")), 400, "INVALID_ARGUMENT"
    )
    # A batch mixing good and bad messages is refused whole.
    refused(
        worker.send(
            worker.code("BEAMPORT_JOB_LOG", importance="JOB_MESSAGE_BASIC", text="fine"),
            {**worker.code("X"), "labels": {}},
        ),
        400,
        "INVALID_ARGUMENT",
    )
    refused(worker.send(*[worker.code("X")] * 1001), 400, "INVALID_ARGUMENT")

    assert (api.get(job["id"], view="JOB_VIEW_ALL").json(), texts(api, job["id"])) == before
    # ... and the real next report still works.
    assert worker.report(item["id"], 1).status_code == 200


def test_streaming_jobs_have_no_work_to_lease_yet(api):
    job = api.create("stream", type="JOB_TYPE_STREAMING")
    assert Worker(api, job["id"]).lease().json() == {}
    assert any("no streaming engine" in t for t in texts(api, job["id"]))


def test_a_cancelled_pending_job_has_no_work(api):
    job = api.create("never-run")
    api.update(job["id"], {"requestedState": "JOB_STATE_CANCELLED"})
    assert Worker(api, job["id"]).lease().json() == {}


def test_get_metrics_start_time_returns_only_what_changed(api):
    job = api.create("metrics-since")
    worker = Worker(api, job["id"])
    item = worker.lease().json()["workItems"][0]
    other = {**COUNTER, "name": {**COUNTER["name"], "name": "other"}}
    assert worker.report(item["id"], 1, metricUpdates=[COUNTER, other]).status_code == 200
    path = f"{api.jobs_path}/{job['id']}/metrics"
    first = api.client.get(path).json()
    # The next report repeats `other` unchanged (reports are cumulative) and changes the counter.
    assert worker.report(item["id"], 2, metricUpdates=[{**COUNTER, "scalar": 8}, other]).status_code == 200
    later = api.client.get(path, params={"startTime": first["metricTime"]}).json()
    assert [(m["name"]["name"], m["scalar"]) for m in later["metrics"]] == [("words", 8)]
    assert len(api.client.get(path).json()["metrics"]) == 2


def test_a_stages_metrics_are_in_its_execution_details_not_in_get_metrics(api):
    """A streaming run's stage figures (docs/engines.md, "Streaming signals"): reported as metricUpdates whose
    context names the stage, served in getExecutionDetails' StageSummary.metrics and left out of getMetrics."""
    job = api.create("stage-metrics")
    worker = Worker(api, job["id"])
    item = worker.lease().json()["workItems"][0]
    worker.send(worker.code("BEAMPORT_STAGE_STATE", stage="[3]{Read, Write}", state="JOB_STATE_RUNNING"))
    age = {
        "name": {
            "origin": "dataflow/v1b3",
            "name": "DataWatermarkAge",
            "context": {"execution_stage": "[3]{Read, Write}"},
        },
        "kind": "Max",
        "scalar": 1.5,
        "cumulative": False,
    }
    assert worker.report(item["id"], 1, metricUpdates=[COUNTER, age]).status_code == 200
    metrics = api.client.get(f"{api.jobs_path}/{job['id']}/metrics").json()["metrics"]
    assert [m["name"]["name"] for m in metrics] == ["words"]
    (stage,) = api.client.get(f"{api.jobs_path}/{job['id']}/executionDetails").json()["stages"]
    assert stage["stageId"] == "[3]{Read, Write}"
    assert [(m["name"]["name"], m["scalar"]) for m in stage["metrics"]] == [("DataWatermarkAge", 1.5)]
    assert stage["metrics"][0]["updateTime"]


def health(worker: Worker, **report) -> dict:
    return {
        "labels": {"JOB_ID": worker.job_id, "WORKER_ID": worker.worker_id},
        "time": NOW,
        "workerHealthReport": {"vmIsHealthy": True, "reportInterval": "5s", **report},
    }


def registry(api: Api, job_id: str) -> dict[str, dict]:
    workers = api.client.get("/beamport/v1/workers", params={"jobId": job_id, "all": "true"}).json()["workers"]
    return {w["workerId"]: w for w in workers}


def test_a_broken_worker_loses_its_work_and_gets_no_more(api):
    job = api.create("broken")
    bad = Worker(api, job["id"], f"bad-{api.project}")
    item = bad.lease().json()["workItems"][0]
    answer = bad.send(health(bad, vmIsHealthy=False, vmIsBroken=True, msg="disk on fire"))
    assert answer.status_code == 200, answer.text
    assert "workerHealthReportResponse" in answer.json()["workerMessageResponses"][0]
    assert registry(api, job["id"])[bad.worker_id]["state"] == "BROKEN"
    assert any(
        "reported it is broken (disk on fire)" in t
        for t in texts(api, job["id"], minimumImportance="JOB_MESSAGE_WARNING")
    )

    # Its lease is revoked: its next report is told to stop, and it gets no more work, of any job.
    stop = bad.report(item["id"], 1).json()["workItemServiceStates"][0]
    assert stop["completeWorkStatus"]["code"] == 10 and "disk on fire" in stop["completeWorkStatus"]["message"]
    assert bad.lease().json() == {}
    other = api.create("other")
    assert Worker(api, other["id"], bad.worker_id).lease().json() == {}
    # A healthy report later does not bring it back.
    bad.send(health(bad))
    assert registry(api, job["id"])[bad.worker_id]["state"] == "BROKEN"

    # The work goes to another worker, as its next attempt; the execution details show both.
    good = Worker(api, job["id"], "good")
    (moved,) = good.lease().json()["workItems"]
    assert moved["id"] == item["id"] and '"attempt": 2' in moved["configuration"]
    good.send(good.code("BEAMPORT_STAGE_STATE", stage="F1", state="JOB_STATE_RUNNING"))
    stage = api.client.get(f"{api.jobs_path}/{job['id']}/stages/F1/executionDetails").json()
    assert [
        (w["workerName"], w["workItems"][0]["attemptId"], w["workItems"][0]["state"]) for w in stage["workers"]
    ] == [
        (bad.worker_id, "1", "EXECUTION_STATE_FAILED"),
        ("good", "2", "EXECUTION_STATE_RUNNING"),
    ]


def test_the_service_sets_each_workers_report_interval(api):
    job = api.create("intervals")
    worker = Worker(api, job["id"], f"calm-{api.project}")

    def interval(**report):
        response = worker.send(health(worker, **report))
        assert response.status_code == 200, response.text
        return response.json()["workerMessageResponses"][0]["workerHealthReportResponse"]["reportInterval"]

    assert interval() == "5s"  # the server's --worker-report-interval
    assert interval(vmIsHealthy=False, msg="swapping") == "1s"  # worried: report more often
    assert registry(api, job["id"])[worker.worker_id]["state"] == "UNHEALTHY"
    assert interval() == "5s"
    assert any("is healthy again" in t for t in texts(api, job["id"]))

    # Under load (more live workers than 200 reports a second allows at 5 s), everyone reports less often.
    crowd = [health(Worker(api, job["id"], f"crowd-{api.project}-{i}")) for i in range(1000)]
    assert worker.send(*crowd).status_code == 200
    time.sleep(1.1)  # the service counts live workers at most once a second
    more = [health(Worker(api, job["id"], f"more-{api.project}-{i}")) for i in range(500)]
    answers = worker.send(*more).json()["workerMessageResponses"]
    intervals = {a["workerHealthReportResponse"]["reportInterval"] for a in answers}
    assert len(intervals) == 1 and 7.5 <= float(intervals.pop()[:-1]) < 9  # 1,500+ live workers / 200 per s
    # The crowd leaves (shutdown notices), so that the server's other tests see the usual interval.
    for message in crowd + more:
        message.pop("workerHealthReport")
        message["workerShutdownNotice"] = {"reason": "UNKNOWN"}
    assert worker.send(*crowd).status_code == 200 and worker.send(*more).status_code == 200
    time.sleep(1.1)


def test_worker_messages_answer_one_entry_per_message_in_order(api):
    job = api.create("answers")
    worker = Worker(api, job["id"], f"w-{api.project}")
    labels = {"JOB_ID": job["id"], "WORKER_ID": worker.worker_id}
    answer = worker.send(
        health(worker),
        {"labels": labels, "workerMetrics": {"cpuTime": [{"totalMs": "1500", "rate": 0.25, "timestamp": NOW}]}},
        {
            "labels": labels,
            "time": NOW,
            "workerLifecycleEvent": {"event": "CONTAINER_START", "containerStartTime": NOW, "metadata": {"a": "1"}},
        },
        worker.code("HARNESS_STARTED"),
        {"labels": labels, "workerShutdownNotice": {"reason": "UNKNOWN"}},
    )
    assert answer.status_code == 200, answer.text
    assert answer.json() == {
        "workerMessageResponses": [
            {"workerHealthReportResponse": {"reportInterval": "5s"}},
            {"workerMetricsResponse": {}},
            {},
            {},
            {"workerShutdownNoticeResponse": {}},
        ]
    }
    detail = api.client.get(f"/beamport/v1/workers/{worker.worker_id}").json()
    assert detail["state"] == "SHUTDOWN" and detail["cpu"]["totalMs"] == "1500" and detail["cpu"]["rate"] == 0.25
    assert detail["containerStartTime"] == NOW
    assert [e["event"] for e in detail["lifecycleEvents"]] == ["CONTAINER_START", "SHUTDOWN_NOTICE"]
    # A worker that shut down and leases again is a new process under the same name: it gets work.
    assert worker.lease().json()["workItems"]
    assert registry(api, job["id"])[worker.worker_id]["state"] == "RUNNING"


def test_malformed_worker_messages_change_nothing(api):
    job = api.create("malformed")
    worker = Worker(api, job["id"], f"m-{api.project}")
    assert worker.send(health(worker)).status_code == 200
    before = (registry(api, job["id"]), texts(api, job["id"], minimumImportance="JOB_MESSAGE_DEBUG"))
    labels = {"JOB_ID": job["id"], "WORKER_ID": worker.worker_id}

    def refused(code, status, *messages, body=None):
        path = f"/v1b3/projects/{api.project}/locations/us-central1/WorkerMessages"
        response = api.client.post(path, json=body if body is not None else {"workerMessages": list(messages)})
        assert response.status_code == code, response.text
        error = response.json()["error"]
        assert error["status"] == status and error["message"]
        return error["message"]

    assert "must be a JSON object" in refused(400, "INVALID_ARGUMENT", body=[])
    refused(400, "INVALID_ARGUMENT", body={"workerMessages": "lots"})
    refused(400, "INVALID_ARGUMENT", {**health(worker), "workerHealthReport": {"vmIsHealthy": "yes"}})
    refused(400, "INVALID_ARGUMENT", {**health(worker), "workerHealthReport": {"reportInterval": "soon"}})
    refused(400, "INVALID_ARGUMENT", {"labels": labels, "workerMetrics": {"cpuTime": [{"totalMs": "many"}]}})
    refused(400, "INVALID_ARGUMENT", {"labels": labels, "workerMetrics": {"cpuTime": {"totalMs": "1"}}})
    assert "JOB_ID" in refused(400, "INVALID_ARGUMENT", {"labels": {"WORKER_ID": "x"}, "workerHealthReport": {}})
    assert "WORKER_ID" in refused(400, "INVALID_ARGUMENT", {"labels": {"JOB_ID": job["id"]}, "workerHealthReport": {}})
    refused(404, "NOT_FOUND", {"labels": {**labels, "JOB_ID": "2020-01-01_00_00_00-1"}, "workerHealthReport": {}})
    assert "carries nothing" in refused(400, "INVALID_ARGUMENT", {"labels": labels, "somethingElse": {"x": 1}})
    refused(400, "INVALID_ARGUMENT", {**health(worker), "workerShutdownNotice": {"reason": "UNKNOWN"}})
    refused(400, "INVALID_ARGUMENT", {"labels": labels, "workerShutdownNotice": {"reason": "BORED"}})
    refused(400, "INVALID_ARGUMENT", {"labels": labels, "workerLifecycleEvent": {"metadata": {"a": "b"}}})
    refused(400, "INVALID_ARGUMENT", {"labels": labels, "workerLifecycleEvent": {"event": "X", "metadata": {"a": 1}}})
    assert "1000" in refused(400, "INVALID_ARGUMENT", *[health(worker)] * 1001)
    # One bad message refuses the whole batch, the good ones in it included.
    refused(
        404,
        "NOT_FOUND",
        health(worker, vmIsBroken=True),
        {"labels": {**labels, "JOB_ID": "nope-1"}, "workerHealthReport": {}},
    )
    assert (registry(api, job["id"]), texts(api, job["id"], minimumImportance="JOB_MESSAGE_DEBUG")) == before
    # Unknown fields next to a known kind are ignored, as everywhere in the API (newer workers keep working).
    assert worker.send({**health(worker), "futureField": 1}).status_code == 200
