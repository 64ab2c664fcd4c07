"""The calls a worker makes, over HTTP, to the public Dataflow API of a Beamport (or Dataflow) service."""

from __future__ import annotations

import time

import httpx

from beamport import wire
from beamport.protocol import WORK_ITEM_TYPE


class WorkerApiError(Exception):
    pass


class WorkerApi:
    def __init__(self, endpoint: str, project: str, location: str, job_id: str, worker_id: str):
        self.http = httpx.Client(base_url=endpoint.rstrip("/"), timeout=60)
        self.job_path = f"/v1b3/projects/{project}/locations/{location}/jobs/{job_id}"
        self.messages_path = f"/v1b3/projects/{project}/locations/{location}/WorkerMessages"
        self.location = location
        self.job_id = job_id
        self.worker_id = worker_id

    def _call(self, method: str, path: str, **kwargs) -> dict:
        for attempt in range(5):
            try:
                response = self.http.request(method, path, **kwargs)
            except httpx.TransportError as exc:
                if attempt == 4:
                    raise WorkerApiError(f"{method} {path}: {exc}") from None
                time.sleep(0.2 * 2**attempt)
                continue
            if response.status_code >= 500 and attempt < 4:
                time.sleep(0.2 * 2**attempt)
                continue
            if response.status_code != 200:
                raise WorkerApiError(f"{method} {path}: HTTP {response.status_code}: {response.text}")
            return response.json()
        raise AssertionError("unreachable")

    def get_job(self) -> dict:
        return self._call("GET", self.job_path, params={"view": "JOB_VIEW_ALL"})

    def lease(self, lease_seconds: int = 60) -> dict | None:
        answer = self._call(
            "POST",
            self.job_path + "/workItems:lease",
            json={
                "workerId": self.worker_id,
                "workItemTypes": [WORK_ITEM_TYPE],
                "requestedLeaseDuration": f"{lease_seconds}s",
                "currentWorkerTime": wire.format_timestamp_us(wire.now_us()),
                "location": self.location,
            },
        )
        items = answer.get("workItems", [])
        return items[0] if items else None

    def report(self, item_id: str, report_index: int, metric_updates: list[dict], completed=False, errors=()) -> dict:
        status = {
            "workItemId": item_id,
            "reportIndex": str(report_index),
            "requestedLeaseDuration": "60s",
            "metricUpdates": metric_updates,
        }
        if completed:
            status["completed"] = True
        if errors:
            status["errors"] = list(errors)
        answer = self._call(
            "POST",
            self.job_path + "/workItems:reportStatus",
            json={
                "workerId": self.worker_id,
                "workItemStatuses": [status],
                "currentWorkerTime": wire.format_timestamp_us(wire.now_us()),
                "location": self.location,
            },
        )
        return answer["workItemServiceStates"][0]

    def send(self, messages: list[dict]) -> None:
        if messages:
            self._call("POST", self.messages_path, json={"workerMessages": messages, "location": self.location})

    def code_message(self, code: str, parameters: dict, work_item_id: str | None = None, time_us: int | None = None) -> dict:
        labels = {"JOB_ID": self.job_id, "WORKER_ID": self.worker_id, "CONTAINER_TYPE": "beamport-worker"}
        if work_item_id:
            labels["WORK_ITEM_ID"] = work_item_id
        return {
            "labels": labels,
            "time": wire.format_timestamp_us(time_us or wire.now_us()),
            "workerMessageCode": {"code": code, "parameters": parameters},
        }
