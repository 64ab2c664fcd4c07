"""The calls a worker makes, over HTTP, to the public Dataflow API of a Beamport (or Dataflow) service."""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

import httpx
from tenacity import (
    RetryCallState,
    Retrying,
    retry_if_exception_type,
    retry_if_result,
    stop_after_delay,
    wait_exponential,
)

from beamport import wire
from beamport.credentials import KeyFileAuth
from beamport.protocol import CONTAINER_TYPE, LABEL_JOB, LABEL_WORK_ITEM, LABEL_WORKER, WORK_ITEM_TYPE

ANY = "-"  # AIP-159 wildcard: lease the work of any job (of any project, in any location)
NO_AUTH = httpx.Auth()  # httpx's base flow sends a request as it is: a call of the worker's client without its key


class WorkerApiError(Exception):
    def __init__(self, message: str, status: int | None = None):
        super().__init__(message)
        self.status = status


@dataclass(frozen=True)
class Work:
    """A leased work item, and the job it belongs to."""

    project: str
    location: str
    job_id: str
    item_id: str
    report_index: int
    attempt: int
    config: str = "{}"  # the work item's configuration (JSON)

    @classmethod
    def from_item(cls, item: dict, location: str) -> Work:
        config = json.loads(item.get("configuration") or "{}")
        return cls(
            project=item["projectId"],
            location=config.get("location", location),
            job_id=item["jobId"],
            item_id=item["id"],
            report_index=int(item.get("initialReportIndex", "1")),
            attempt=int(config.get("attempt", 1)),
            config=item.get("configuration") or "{}",
        )


class WorkerApi:
    def __init__(
        self,
        endpoint: str,
        worker_id: str,
        labels: dict[str, str] | None = None,
        credentials: str | None = None,
        token: str | None = None,
    ):
        """`credentials`: the worker's key (roles/dataflow.worker); `token`: an access token good for one job (an
        executor's); neither against a server run with --no-auth."""
        self.key_auth = KeyFileAuth(credentials) if credentials else None
        headers = {"Authorization": f"Bearer {token}"} if token else None
        self.http = httpx.Client(base_url=endpoint.rstrip("/"), timeout=60, auth=self.key_auth, headers=headers)
        self.worker_id = worker_id
        self.extra_labels = labels or {}

    def _call(self, method: str, path: str, retry_for_s: float = 6.0, **kwargs) -> dict:
        """One API call; an unreachable service or a 5xx answer is tried again until `retry_for_s` passed."""
        retrying = Retrying(
            stop=stop_after_delay(retry_for_s),
            wait=wait_exponential(multiplier=0.4, max=2.0),  # 0.4, 0.8, 1.6, 2, 2... s
            retry=retry_if_exception_type(httpx.TransportError) | retry_if_result(lambda r: r.status_code >= 500),
            retry_error_callback=_last_outcome,  # the last answer (or error) as it is
        )
        try:
            response = retrying(self.http.request, method, path, **kwargs)
        except httpx.TransportError as exc:
            raise WorkerApiError(f"{method} {path}: {exc}") from None
        if response.status_code != 200:
            raise WorkerApiError(f"{method} {path}: HTTP {response.status_code}: {response.text}", response.status_code)
        return response.json()

    @staticmethod
    def _job_path(work: Work) -> str:
        return f"/v1b3/projects/{work.project}/locations/{work.location}/jobs/{work.job_id}"

    def lease(self, project: str = ANY, location: str = ANY, job_id: str = ANY, lease_seconds: int = 60) -> Work | None:
        answer = self._call(
            "POST",
            f"/v1b3/projects/{project}/locations/{location}/jobs/{job_id}/workItems:lease",
            json={
                "workerId": self.worker_id,
                "workItemTypes": [WORK_ITEM_TYPE],
                "requestedLeaseDuration": f"{lease_seconds}s",
                "currentWorkerTime": wire.format_timestamp_us(wire.now_us()),
                "location": location,
            },
        )
        items = answer.get("workItems", [])
        return Work.from_item(items[0], location) if items else None

    def job_token(self, work: Work) -> str | None:
        """An access token good for this work's job only (RFC 8693 exchange of the worker's own), for the
        executor: the user code it runs must not act as the worker. None without credentials."""
        if self.key_auth is None:
            return None
        form = {
            "grant_type": "urn:ietf:params:oauth:grant-type:token-exchange",
            "subject_token": self.key_auth.token(),
            "subject_token_type": "urn:ietf:params:oauth:token-type:access_token",
            "resource": f"projects/{work.project}/locations/{work.location}/jobs/{work.job_id}",
        }
        # The worker's client without its key's auth (the form carries the token): a client of its own per call
        # would cost tens of milliseconds of CPU for its TLS context.
        response = self.http.post("/token", data=form, auth=NO_AUTH)
        if response.status_code != 200:
            raise WorkerApiError(
                f"POST /token (exchange): HTTP {response.status_code}: {response.text}", response.status_code
            )
        return response.json()["access_token"]

    def revoke(self, token: str) -> None:
        """Revoke a token (the executor's, once its work ended); failures only logged by the caller."""
        self.http.post("/revoke", data={"token": token}, auth=NO_AUTH, timeout=30)

    def get_job(self, work: Work) -> dict:
        return self._call("GET", self._job_path(work), params={"view": "JOB_VIEW_ALL"})

    def get_pipeline(self, work: Work) -> bytes | None:
        """The pipeline the job was created with, as the service kept it (None: it kept none)."""
        path = f"/beamport/v1/projects/{work.project}/locations/{work.location}/jobs/{work.job_id}/pipeline"
        try:
            response = self.http.get(path)
        except httpx.TransportError as exc:
            raise WorkerApiError(f"GET {path}: {exc}") from None
        return response.content if response.status_code == 200 else None

    def report(
        self,
        work: Work,
        report_index: int,
        metric_updates: list[dict],
        completed=False,
        errors=(),
        remaining=None,
        fraction=None,
    ) -> dict:
        status: dict[str, Any] = {
            "workItemId": work.item_id,
            "reportIndex": str(report_index),
            "requestedLeaseDuration": "60s",
            "metricUpdates": metric_updates,
        }
        progress = {}
        if fraction is not None:  # how much of the work is done
            progress["fractionConsumed"] = fraction
        if remaining is not None:  # the backlog of the stage starting, in units of parallel work
            progress["remainingParallelism"] = {"value": remaining}
        if progress:
            status["reportedProgress"] = progress
        if completed:
            status["completed"] = True
        if errors:
            status["errors"] = list(errors)
        # Reports ride out a service restart: the lease (60 s) outlives the wait.
        answer = self._call(
            "POST",
            self._job_path(work) + "/workItems:reportStatus",
            retry_for_s=45.0,
            json={
                "workerId": self.worker_id,
                "workItemStatuses": [status],
                "currentWorkerTime": wire.format_timestamp_us(wire.now_us()),
                "location": work.location,
            },
        )
        return answer["workItemServiceStates"][0]

    def send(self, work: Work, messages: list[dict]) -> list[dict]:
        """Send worker messages; the service's responses, one per message."""
        if not messages:
            return []
        answer = self._call(
            "POST",
            f"/v1b3/projects/{work.project}/locations/{work.location}/WorkerMessages",
            json={"workerMessages": messages, "location": work.location},
        )
        return answer.get("workerMessageResponses", [])

    def message(self, work: Work, kind: str, body: dict, time_us: int | None = None, with_item: bool = True) -> dict:
        """A WorkerMessage of one kind (workerHealthReport, workerMessageCode...), with this worker's labels."""
        labels = {
            LABEL_JOB: work.job_id,
            LABEL_WORKER: self.worker_id,
            "CONTAINER_TYPE": CONTAINER_TYPE,
            **self.extra_labels,
        }
        if with_item:
            labels[LABEL_WORK_ITEM] = work.item_id
        return {"labels": labels, "time": wire.format_timestamp_us(time_us or wire.now_us()), kind: body}

    def code_message(self, work: Work, code: str, parameters: dict, time_us: int | None = None) -> dict:
        return self.message(work, "workerMessageCode", {"code": code, "parameters": parameters}, time_us)


def _last_outcome(state: RetryCallState):
    """The last attempt's answer, or its error raised again."""
    # Optional in tenacity's types: it is None only before the first attempt ends.
    assert state.outcome is not None
    return state.outcome.result()
