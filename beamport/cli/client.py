"""A small synchronous client of the Dataflow v1b3 REST API, for the `beamport jobs` commands.

It speaks HTTP and knows the API's paths, paging and error shape; it prints nothing.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from urllib.parse import quote

import httpx
from google.auth.exceptions import GoogleAuthError

from beamport import job_states
from beamport.credentials import CREDENTIALS_VARIABLE, key_file_auth

DEFAULT_ENDPOINT = "http://localhost:8080"
DEFAULT_REGION = "us-central1"
MAX_PAGE_SIZE = 1000


class ClientError(Exception):
    """A call that did not succeed; its str() is the message to show."""


class ApiCallError(ClientError):
    """The server answered with an error ({"error": {"code", "message", "status"}})."""

    def __init__(self, status: str, message: str, code: int):
        super().__init__(f"({status}) {message}")
        self.status = status
        self.message = message
        self.code = code


class ConnectionFailure(ClientError):
    """Nothing (usable) answered at the endpoint."""

    def __init__(self, endpoint: str, reason: str):
        super().__init__(f"Could not reach the Dataflow API endpoint {endpoint}: {reason}")
        self.endpoint = endpoint


def normalize_endpoint(endpoint: str) -> str:
    endpoint = endpoint.strip()
    if "://" not in endpoint:
        endpoint = "http://" + endpoint
    return endpoint.rstrip("/")


_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def format_time_us(us: int) -> str:
    """Microseconds since the epoch as RFC 3339 (UTC), as a google.protobuf.Timestamp parameter."""
    return (_EPOCH + timedelta(microseconds=us)).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def parse_time_us(value: str) -> int:
    """An RFC 3339 timestamp as microseconds since the epoch (digits past microseconds dropped)."""
    return (datetime.fromisoformat(value) - _EPOCH) // timedelta(microseconds=1)


def _pages(fetch, key: str, limit: int | None) -> Iterator[dict]:
    """The items under `key` of the pages `fetch(page_size, page_token)` answers, following nextPageToken until
    `limit` items (None: all)."""
    count, token = 0, None
    while limit is None or count < limit:
        page = fetch(MAX_PAGE_SIZE if limit is None else min(limit - count, MAX_PAGE_SIZE), token)
        for item in page.get(key, []):
            if limit is not None and count >= limit:
                return
            count += 1
            yield item
        token = page.get("nextPageToken")
        if not token:
            return


class DataflowClient:
    def __init__(self, endpoint: str = DEFAULT_ENDPOINT, timeout: float = 30.0, credentials: str | None = None):
        """`credentials`: a service-account key file; by default GOOGLE_APPLICATION_CREDENTIALS's, if set."""
        self.endpoint = normalize_endpoint(endpoint)
        try:
            auth = key_file_auth(credentials)
        except (OSError, ValueError) as exc:
            raise ClientError(
                f"Cannot use the credentials {credentials or os.environ.get(CREDENTIALS_VARIABLE)}: {exc}"
            ) from None
        self._http = httpx.Client(
            base_url=self.endpoint,
            timeout=httpx.Timeout(timeout, connect=min(timeout, 10.0)),
            headers={"Accept": "application/json"},
            auth=auth,
        )

    def close(self) -> None:
        self._http.close()

    def __enter__(self) -> DataflowClient:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    # -- plumbing -----------------------------------------------------------

    @staticmethod
    def _jobs_path(project: str, region: str | None) -> str:
        base = f"/v1b3/projects/{quote(project, safe='')}"
        if region is None:
            return base + "/jobs:aggregated"
        return f"{base}/locations/{quote(region, safe='')}/jobs"

    def _job_path(self, project: str, region: str, job_id: str) -> str:
        return f"{self._jobs_path(project, region)}/{quote(job_id, safe='')}"

    def _request(
        self, method: str, path: str, params: dict | None = None, json: dict | None = None, timeout: float | None = None
    ) -> dict:
        params = {k: v for k, v in (params or {}).items() if v is not None}
        try:
            response = self._http.request(
                method,
                path,
                params=params,
                json=json,
                timeout=httpx.USE_CLIENT_DEFAULT if timeout is None else timeout,
            )
        except httpx.TimeoutException:
            raise ConnectionFailure(self.endpoint, "the request timed out") from None
        except httpx.HTTPError as exc:
            raise ConnectionFailure(self.endpoint, str(exc) or type(exc).__name__) from None
        except GoogleAuthError as exc:  # the key was refused at its token_uri, or that could not be reached
            key = os.environ.get(CREDENTIALS_VARIABLE) or "the key"
            reason = exc.args[0] if exc.args else str(exc)
            if "invalid_grant" in str(reason):  # refused: deleted, expired or not this server's key
                raise ApiCallError("UNAUTHENTICATED", f"The key {key} was refused: {reason}", 401) from None
            raise ClientError(f"Could not get an access token with {key}: {reason}") from None
        try:
            data = response.json()
        except ValueError:
            data = None
        if response.is_success and isinstance(data, dict):
            return data
        error = data.get("error") if isinstance(data, dict) else None
        if isinstance(error, dict) and error.get("message"):
            raise ApiCallError(
                str(error.get("status") or f"HTTP {response.status_code}"), str(error["message"]), response.status_code
            )
        snippet = " ".join(response.text.split())[:200] or response.reason_phrase
        if response.is_success:
            raise ConnectionFailure(self.endpoint, f"the answer to {method} {path} is not a JSON object: {snippet}")
        raise ApiCallError(f"HTTP {response.status_code}", snippet, response.status_code)

    # -- jobs ---------------------------------------------------------------

    def list_jobs_page(
        self,
        project: str,
        region: str | None,
        filter: str | None = None,
        name: str | None = None,
        page_size: int | None = None,
        page_token: str | None = None,
    ) -> dict:
        """One page of jobs.list; region None lists every region (jobs:aggregated)."""
        params = {"filter": filter, "name": name, "pageSize": page_size, "pageToken": page_token}
        return self._request("GET", self._jobs_path(project, region), params)

    def iter_jobs(
        self,
        project: str,
        region: str | None,
        filter: str | None = None,
        name: str | None = None,
        limit: int | None = None,
    ) -> Iterator[dict]:
        """Jobs, newest first, following nextPageToken until `limit` jobs (None: all)."""
        return _pages(
            lambda size, token: self.list_jobs_page(project, region, filter, name, size, token), "jobs", limit
        )

    def get_job(self, project: str, region: str, job_id: str, view: str | None = None) -> dict:
        return self._request("GET", self._job_path(project, region, job_id), {"view": view})

    def create_job(self, project: str, region: str, body: dict) -> dict:
        """jobs.create; Dataflow answers a create of an active job's name with that job (compare clientRequestId)."""
        return self._request("POST", self._jobs_path(project, region), json=body)

    def update_job(self, project: str, region: str, job_id: str, body: dict) -> dict:
        return self._request("PUT", self._job_path(project, region, job_id), json=body)

    def request_state(self, project: str, region: str, job_id: str, state: str) -> dict:
        """Ask for a state change (JOB_STATE_CANCELLED, JOB_STATE_DRAINED); returns the job as changed."""
        return self.update_job(project, region, job_id, {"requestedState": state})

    # -- templates -----------------------------------------------------------

    def _locations_path(self, project: str, region: str) -> str:
        return f"/v1b3/projects/{quote(project, safe='')}/locations/{quote(region, safe='')}"

    def get_template(self, project: str, region: str, gcs_path: str) -> dict:
        return self._request("GET", self._locations_path(project, region) + "/templates:get", {"gcsPath": gcs_path})

    def launch_template(self, project: str, region: str, gcs_path: str, body: dict, validate_only=False) -> dict:
        params = {"gcsPath": gcs_path, "validateOnly": "true" if validate_only else None}
        return self._request("POST", self._locations_path(project, region) + "/templates:launch", params, json=body)

    def launch_flex_template(self, project: str, region: str, body: dict) -> dict:
        # The launch answers once the template's launcher has built and submitted the pipeline (Beam's work):
        # a minute or more on a loaded machine.
        return self._request(
            "POST", self._locations_path(project, region) + "/flexTemplates:launch", json=body, timeout=600.0
        )

    # -- SQL -------------------------------------------------------------------

    def validate_sql(self, project: str, region: str, query: str) -> dict:
        return self._request("GET", self._locations_path(project, region) + "/sql:validate", {"query": query})

    def _tables_path(self, project: str) -> str:
        return f"/beamport/v1/projects/{quote(project, safe='')}/sqlTables"

    def add_sql_table(self, project: str, table: dict) -> dict:
        return self._request("POST", self._tables_path(project), json=table)

    def list_sql_tables(self, project: str) -> list[dict]:
        return self._request("GET", self._tables_path(project)).get("tables", [])

    def get_sql_table(self, project: str, name: str) -> dict:
        return self._request("GET", f"{self._tables_path(project)}/{quote(name, safe='')}")

    def delete_sql_table(self, project: str, name: str) -> dict:
        return self._request("DELETE", f"{self._tables_path(project)}/{quote(name, safe='')}")

    def sql_query(self, project: str, region: str, body: dict) -> dict:
        path = f"/beamport/v1/projects/{quote(project, safe='')}/locations/{quote(region, safe='')}/sql:query"
        return self._request("POST", path, json=body)

    # -- snapshots -------------------------------------------------------------

    def snapshot_job(self, project: str, region: str, job_id: str, body: dict) -> dict:
        """jobs.snapshot: the server waits up to ~30 s for the engine, so this call waits longer."""
        return self._request("POST", self._job_path(project, region, job_id) + ":snapshot", json=body, timeout=90.0)

    def list_snapshots(self, project: str, region: str, job_id: str | None = None) -> list[dict]:
        path = self._locations_path(project, region) + "/snapshots"
        return self._request("GET", path, {"jobId": job_id}).get("snapshots", [])

    def get_snapshot(self, project: str, region: str, snapshot_id: str) -> dict:
        return self._request("GET", f"{self._locations_path(project, region)}/snapshots/{quote(snapshot_id, safe='')}")

    def delete_snapshot(self, project: str, region: str, snapshot_id: str) -> dict:
        path = f"{self._locations_path(project, region)}/snapshots/{quote(snapshot_id, safe='')}"
        return self._request("DELETE", path)

    # -- workers (Beamport's own registry view, not Dataflow's API) ------------------

    def list_workers(
        self,
        job_id: str | None = None,
        include_gone: bool = False,
        project: str | None = None,
        region: str | None = None,
    ) -> list[dict]:
        """Live workers (or all); of a project, a region: theirs, and those that serve no job yet."""
        params = {"jobId": job_id, "all": "true" if include_gone else None, "projectId": project, "location": region}
        return self._request("GET", "/beamport/v1/workers", params).get("workers", [])

    def get_worker(self, worker_id: str) -> dict:
        return self._request("GET", f"/beamport/v1/workers/{quote(worker_id, safe='')}")

    # -- messages -------------------------------------------------------------

    def list_messages_page(
        self,
        project: str,
        region: str,
        job_id: str,
        minimum_importance: str | None = None,
        start_time: str | None = None,
        page_size: int | None = None,
        page_token: str | None = None,
    ) -> dict:
        params = {
            "minimumImportance": minimum_importance,
            "startTime": start_time,
            "pageSize": page_size,
            "pageToken": page_token,
        }
        return self._request("GET", self._job_path(project, region, job_id) + "/messages", params)

    def iter_messages(
        self,
        project: str,
        region: str,
        job_id: str,
        minimum_importance: str | None = None,
        start_time: str | None = None,
    ) -> Iterator[dict]:
        """Every message of the job (from start_time on), oldest first, following nextPageToken."""
        token = None
        while True:
            page = self.list_messages_page(
                project, region, job_id, minimum_importance, start_time, MAX_PAGE_SIZE, token
            )
            yield from page.get("jobMessages", [])
            token = page.get("nextPageToken")
            if not token:
                return

    # -- identity and access (IAM v1, Resource Manager v1 and Beamport's own audit log and console link) ----

    @staticmethod
    def _account_path(email: str) -> str:
        """A service account by its email alone: `-` for the project, as Google's IAM API allows."""
        return f"/v1/projects/-/serviceAccounts/{quote(email, safe='@')}"

    def create_service_account(
        self, project: str, account_id: str, display_name: str | None = None, description: str | None = None
    ) -> dict:
        details = {k: v for k, v in (("displayName", display_name), ("description", description)) if v}
        body = {"accountId": account_id, "serviceAccount": details}
        return self._request("POST", f"/v1/projects/{quote(project, safe='')}/serviceAccounts", json=body)

    def list_service_accounts(self, project: str) -> list[dict]:
        return self._request("GET", f"/v1/projects/{quote(project, safe='')}/serviceAccounts").get("accounts", [])

    def get_service_account(self, email: str) -> dict:
        return self._request("GET", self._account_path(email))

    def delete_service_account(self, email: str) -> dict:
        return self._request("DELETE", self._account_path(email))

    def create_service_account_key(self, email: str) -> dict:
        """A new key; the answer's privateKeyData (base64 of the key file) is the only copy of its private half."""
        return self._request("POST", self._account_path(email) + "/keys", json={})

    def list_service_account_keys(self, email: str) -> list[dict]:
        return self._request("GET", self._account_path(email) + "/keys").get("keys", [])

    def delete_service_account_key(self, email: str, key_id: str) -> dict:
        return self._request("DELETE", f"{self._account_path(email)}/keys/{quote(key_id, safe='')}")

    @staticmethod
    def _policy_path(resource: str) -> str:
        """`projects/P` or `organizations/O` -> /v1/projects/P (the verb is appended)."""
        kind, _, name = resource.partition("/")
        return f"/v1/{kind}/{quote(name, safe='')}"

    def get_iam_policy(self, resource: str) -> dict:
        """The IAM policy of `projects/P` or `organizations/O`, with its etag."""
        return self._request("POST", self._policy_path(resource) + ":getIamPolicy", json={})

    def set_iam_policy(self, resource: str, policy: dict) -> dict:
        """Replace the policy; an etag in it that is no longer current is refused with ABORTED (409)."""
        return self._request("POST", self._policy_path(resource) + ":setIamPolicy", json={"policy": policy})

    def list_audit_logs_page(
        self, project: str | None, page_size: int | None = None, page_token: str | None = None
    ) -> dict:
        """One page of audit log entries, newest first; project None: every project's (and the organization's)."""
        path = "/beamport/v1/auditLogs"
        if project is not None:
            path = f"/beamport/v1/projects/{quote(project, safe='')}/auditLogs"
        return self._request("GET", path, {"pageSize": page_size, "pageToken": page_token})

    def iter_audit_logs(self, project: str | None, limit: int | None = None) -> Iterator[dict]:
        """Audit log entries, newest first, following nextPageToken until `limit` entries (None: all)."""
        return _pages(lambda size, token: self.list_audit_logs_page(project, size, token), "entries", limit)

    def console_sign_in_link(self) -> str:
        """A one-time link that signs the web console in as the caller."""
        return self._request("POST", "/beamport/v1/session:link", json={})["url"]


class MessageFollower:
    """Reads a job's messages as they come, each once, and notices when the job ends.

    A page token only exists while more pages do, so each poll asks for the
    messages from (the newest time seen - `overlap`) on and drops the ids it has
    already handed out: a message stamped a little before one already seen but
    stored after it is still caught, and nothing is handed out twice.
    """

    def __init__(
        self,
        client: DataflowClient,
        project: str,
        region: str,
        job_id: str,
        minimum_importance: str | None = None,
        overlap_seconds: float = 60.0,
    ):
        self.client = client
        self.project, self.region, self.job_id = project, region, job_id
        self.minimum_importance = minimum_importance
        self.state: str | None = None
        self._overlap_us = int(overlap_seconds * 1_000_000)
        self._seen: dict[object, int] = {}  # message key -> its time (epoch microseconds)
        self._newest: int | None = None

    @property
    def finished(self) -> bool:
        return job_states.is_terminal(self.state)

    def _time_of(self, message: dict) -> int:
        try:
            return parse_time_us(message["time"])
        except (KeyError, TypeError, ValueError):
            return self._newest or 0

    def poll(self) -> list[dict]:
        """The messages not returned before. Reads the job's state first, so once `finished` is
        true the messages returned include everything the job logged up to its end."""
        job = self.client.get_job(self.project, self.region, self.job_id, view="JOB_VIEW_SUMMARY")
        self.state = job.get("currentState")
        start = None
        if self._newest is not None:
            start = format_time_us(self._newest - self._overlap_us)
        new = []
        for message in self.client.iter_messages(
            self.project, self.region, self.job_id, self.minimum_importance, start
        ):
            key = message.get("id") or (message.get("time"), message.get("messageText"))
            if key in self._seen:
                continue
            when = self._time_of(message)
            self._seen[key] = when
            self._newest = when if self._newest is None else max(self._newest, when)
            new.append(message)
        if self._newest is not None:
            cutoff = self._newest - self._overlap_us
            self._seen = {k: t for k, t in self._seen.items() if t >= cutoff}
        return new
