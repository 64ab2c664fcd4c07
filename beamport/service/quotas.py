"""Dataflow's limits on a job, field by field, and per-project quotas on jobs (docs/api.md, "Limits and quotas").

Limits are rules about one request: a field over its limit is INVALID_ARGUMENT naming the field, and nothing is
stored. Where Dataflow documents a limit Beamport applies Dataflow's figure; where it does not, Beamport chose one
(the figures below say which). Quotas count what a project has: active jobs and jobs created in the last minute;
past one, a create is RESOURCE_EXHAUSTED (HTTP 429), worded as Dataflow words its quota errors.
"""

from __future__ import annotations

import threading
import unicodedata

import orjson

from beamport.errors import ApiError, invalid_argument
from beamport.service import model
from beamport.store.base import Store
from beamport.store.jobs import FILTER_ACTIVE, JobQuery

MB = 1024 * 1024

# -- limits: Dataflow's (documented) ---------------------------------------------------------------------------
# "The Dataflow service is currently limited to processing JSON job requests that are 20 MB in size or smaller"
# and "your job's graph size must not exceed 10 MB" (Dataflow's request quotas page).
MAX_JOB_REQUEST_BYTES = 20 * MB
MAX_JOB_GRAPH_BYTES = 10 * MB
# Job.labels: at most 64 entries; keys [\p{Ll}\p{Lo}][\p{Ll}\p{Lo}\p{N}_-]{0,62}, values [\p{Ll}\p{Lo}\p{N}_-]{0,63},
# each at most 128 bytes (the Job message's documentation).
MAX_LABELS = 64
MAX_LABEL_CHARS = 63
MAX_LABEL_BYTES = 128
# Job.name: [a-z]([-a-z0-9]{0,1022}[a-z0-9])? (model.JOB_NAME_RE, model.JOB_NAME_MAX).

# -- limits: Beamport's (Dataflow documents none) -----------------------------------------------------------------
MAX_CLIENT_REQUEST_ID_CHARS = 256  # what the store keeps (Beam's are ~30 characters)
MAX_ID_CHARS = 128  # replaceJobId, createdFromSnapshotId: as ids in paths
MAX_JOB_METADATA_BYTES = 16 * 1024  # jobMetadata: shown in every list, as labels are
# All the fields every list shows (the summary: labels, jobMetadata, serviceResources...), together.
MAX_SUMMARY_BYTES = 64 * 1024
MAX_TRANSFORM_NAME_MAPPING = 10_000  # entries of transformNameMapping (an update's renamed transforms)
MAX_TRANSFORM_NAME_CHARS = 4096  # each name in it
# Template launches (templates.launch / create, flexTemplates.launch): parameters become pipeline options.
MAX_TEMPLATE_PARAMETERS = 1000
MAX_PARAMETER_NAME_CHARS = 256
MAX_PARAMETERS_BYTES = 1 * MB  # all names and values together

# -- quotas (defaults: Dataflow's) ---------------------------------------------------------------------------
# "You may run up to 25 concurrent Dataflow jobs per Google Cloud project" (Dataflow's request quotas page).
DEFAULT_MAX_ACTIVE_JOBS = 25
# Dataflow counts job creation requests per minute per user; Beamport counts jobs created per minute per project.
DEFAULT_MAX_JOBS_PER_MINUTE = 60
MINUTE_US = 60_000_000


# -- limits ------------------------------------------------------------------------------------------------------


def _size(value) -> int:
    return len(orjson.dumps(value))


def _label_part_ok(text: str, key: bool) -> bool:
    for i, char in enumerate(text):
        category = unicodedata.category(char)
        if category in ("Ll", "Lo"):
            continue
        if i == 0 and key:
            return False  # a key starts with a lowercase (or caseless) letter
        if category[0] != "N" and char not in "_-":
            return False
    return True


def check_labels(labels, field: str = "labels") -> None:
    """Dataflow's label rules (Job.labels); `field` names where the labels came from, for the message."""
    if not labels:
        return
    if not isinstance(labels, dict):
        raise invalid_argument(f"Invalid value at '{field}': labels must be a map of strings to strings.")
    if len(labels) > MAX_LABELS:
        raise invalid_argument(
            f"Invalid value at '{field}': {len(labels)} labels; a job may have at most {MAX_LABELS}."
        )
    for key, value in labels.items():
        shown = key if len(key) <= 70 else key[:64] + "..."
        if not isinstance(value, str):
            raise invalid_argument(f"Invalid value at '{field}[{shown}]': a label value must be a string.")
        if (
            not key
            or len(key) > MAX_LABEL_CHARS
            or len(key.encode()) > MAX_LABEL_BYTES
            or not _label_part_ok(key, True)
        ):
            raise invalid_argument(
                f"Invalid value at '{field}': the label key '{shown}' is invalid: a key is 1 to {MAX_LABEL_CHARS} "
                f"characters (at most {MAX_LABEL_BYTES} bytes) of lowercase letters, digits, '_' and '-', starting "
                "with a lowercase letter."
            )
        if len(value) > MAX_LABEL_CHARS or len(value.encode()) > MAX_LABEL_BYTES or not _label_part_ok(value, False):
            length = f"{len(value)} characters" if len(value) > MAX_LABEL_CHARS else "not allowed characters"
            raise invalid_argument(
                f"Invalid value at '{field}[{shown}]': the label value has {length}: a value is at most "
                f"{MAX_LABEL_CHARS} characters (at most {MAX_LABEL_BYTES} bytes) of lowercase letters, digits, "
                "'_' and '-'."
            )


def check_job_name(name: str, field: str = "name") -> None:
    if not name:
        raise invalid_argument(f"The job name is required: set '{field}'.")
    if len(name) > model.JOB_NAME_MAX or not model.JOB_NAME_RE.match(name):
        shown = name if len(name) <= 100 else name[:100] + f"... ({len(name)} characters)"
        raise invalid_argument(
            f"Invalid job name '{shown}': a job name must consist of only the characters [-a-z0-9], starting "
            f"with a letter and ending with a letter or number, at most {model.JOB_NAME_MAX} characters."
        )


def check_job(doc: dict) -> None:
    """A job document (Google JSON, as a create or a template launch makes it) against the limits, field by
    field. The name is checked by check_job_name."""
    check_labels(doc.get("labels"))
    request_id = doc.get("clientRequestId") or ""
    if len(request_id) > MAX_CLIENT_REQUEST_ID_CHARS:
        raise invalid_argument(
            f"Invalid value at 'clientRequestId': {len(request_id)} characters; at most {MAX_CLIENT_REQUEST_ID_CHARS}."
        )
    for field in ("replaceJobId", "createdFromSnapshotId"):
        value = doc.get(field) or ""
        if len(value) > MAX_ID_CHARS:
            raise invalid_argument(
                f"Invalid value at '{field}': {len(value)} characters; an id has at most {MAX_ID_CHARS}."
            )
    if "jobMetadata" in doc and _size(doc["jobMetadata"]) > MAX_JOB_METADATA_BYTES:
        raise invalid_argument(
            f"Invalid value at 'jobMetadata': {_size(doc['jobMetadata'])} bytes; at most {MAX_JOB_METADATA_BYTES}."
        )
    mapping = doc.get("transformNameMapping") or {}
    if len(mapping) > MAX_TRANSFORM_NAME_MAPPING or any(
        len(k) > MAX_TRANSFORM_NAME_CHARS or len(v) > MAX_TRANSFORM_NAME_CHARS for k, v in mapping.items()
    ):
        raise invalid_argument(
            f"Invalid value at 'transformNameMapping': at most {MAX_TRANSFORM_NAME_MAPPING} entries of names of at "
            f"most {MAX_TRANSFORM_NAME_CHARS} characters."
        )
    summary, _detail = model.split_document(doc)
    if _size(summary) > MAX_SUMMARY_BYTES:
        largest = max(summary, key=lambda key: _size(summary[key]))
        raise invalid_argument(
            f"Invalid value at '{largest}': the fields a list shows of each job are {_size(summary)} bytes of JSON "
            f"together, over the limit of {MAX_SUMMARY_BYTES}; '{largest}' is {_size(summary[largest])}."
        )
    if "steps" in doc:
        graph = _size(doc["steps"])
        if graph > MAX_JOB_GRAPH_BYTES:
            raise invalid_argument(
                f"Invalid value at 'steps': the job graph is {graph} bytes, over Dataflow's limit of "
                f"{MAX_JOB_GRAPH_BYTES} bytes. The job graph is too large. Please try again with a smaller job "
                "graph, or split your job into two or more smaller jobs."
            )
    total = _size(doc)
    if total > MAX_JOB_REQUEST_BYTES:
        raise invalid_argument(
            f"Invalid value at 'job': the job is {total} bytes of JSON, over Dataflow's limit of "
            f"{MAX_JOB_REQUEST_BYTES} bytes. The size of serialized JSON representation of the pipeline exceeds "
            "the allowable limit."
        )


def check_template_launch(
    job_name: str | None, parameters: dict | None, labels: dict | None = None, prefix: str = ""
) -> None:
    """A template launch's job name, parameters and additional labels, through the same rules as a job's
    (`prefix`: where they are in the request, e.g. "launchParameter.")."""
    if job_name:
        check_job_name(job_name, prefix + "jobName")
    check_labels(labels, prefix + "environment.additionalUserLabels")
    parameters = parameters or {}
    if len(parameters) > MAX_TEMPLATE_PARAMETERS:
        raise invalid_argument(
            f"Invalid value at '{prefix}parameters': {len(parameters)} parameters; at most {MAX_TEMPLATE_PARAMETERS}."
        )
    total = 0
    for name, value in parameters.items():
        if len(name) > MAX_PARAMETER_NAME_CHARS:
            raise invalid_argument(
                f"Invalid value at '{prefix}parameters': the parameter name '{name[:64]}...' has {len(name)} "
                f"characters; at most {MAX_PARAMETER_NAME_CHARS}."
            )
        total += len(name.encode()) + (len(value.encode()) if isinstance(value, str) else _size(value))
    if total > MAX_PARAMETERS_BYTES:
        raise invalid_argument(
            f"Invalid value at '{prefix}parameters': {total} bytes of parameters; at most {MAX_PARAMETERS_BYTES}."
        )


# -- quotas ------------------------------------------------------------------------------------------------------


def quota_exceeded(metric: str, limit: str, project_id: str, detail: str) -> ApiError:
    """Google's wording of a rate quota error."""
    return ApiError(
        "RESOURCE_EXHAUSTED",
        f"Quota exceeded for quota metric '{metric}' and limit '{limit}' of service 'dataflow.googleapis.com' "
        f"for consumer 'project:{project_id}'. {detail}",
    )


class JobQuotas:
    """Per-project quotas on creating jobs: active jobs, and jobs created in the last minute (0: no quota).

    Both counts come from the store (so they hold across restarts and every server process of a database),
    plus the creates this process has admitted and not yet written (by job id, so that one written meanwhile
    counts once): a check and its admission happen under one lock, so concurrent creates in this process
    cannot together pass a quota. (Creates racing in two server processes can pass it by one each.)
    """

    def __init__(
        self,
        store: Store,
        max_active_jobs: int = DEFAULT_MAX_ACTIVE_JOBS,
        max_jobs_per_minute: int = DEFAULT_MAX_JOBS_PER_MINUTE,
    ):
        self.store = store
        self.max_active_jobs = max(0, max_active_jobs)
        self.max_jobs_per_minute = max(0, max_jobs_per_minute)
        self._lock = threading.Lock()
        self._admitted: dict[str, set[str]] = {}  # project -> ids of the jobs admitted and not yet written

    def reserve(self, project_id: str, job_id: str, now_us: int, replacing: bool = False) -> None:
        """Admit the create of job `job_id` in the project, or RESOURCE_EXHAUSTED past a quota; release() once it
        is written (or failed). A replacement (an update) leaves the count of active jobs as it was: only the
        rate applies."""
        if not self.max_active_jobs and not self.max_jobs_per_minute:
            return
        with self._lock:
            admitted = self._admitted.setdefault(project_id, set())
            if self.max_active_jobs and not replacing:
                # Admitted jobs already written are among the active ones: each is counted once.
                active = {
                    job.id
                    for job in self.store.jobs.list(
                        JobQuery(
                            project_id=project_id,
                            location=None,
                            filter=FILTER_ACTIVE,
                            limit=self.max_active_jobs + len(admitted),
                        )
                    )
                }
                running = len(active | admitted)
                if running >= self.max_active_jobs:
                    self._forget(project_id)
                    raise ApiError(
                        "RESOURCE_EXHAUSTED",
                        "The workflow could not be created. Causes: Dataflow quota error for jobs-per-project quota. "
                        f"Project {project_id} is running {running} jobs, and its quota is "
                        f"{self.max_active_jobs} (beamport serve --max-active-jobs). Please wait for a workflow to "
                        "finish, or ask the operator of this server to raise the quota.",
                    )
            if self.max_jobs_per_minute:
                # The project's newest jobs: if the Nth newest is less than a minute old, N were created in the
                # last minute (jobs are numbered in creation order). One indexed read of N rows.
                newest = self.store.jobs.list(
                    JobQuery(project_id=project_id, location=None, limit=self.max_jobs_per_minute + len(admitted))
                )
                recent = {job.id for job in newest if job.create_us > now_us - MINUTE_US} | admitted
                if len(recent) >= self.max_jobs_per_minute:
                    self._forget(project_id)
                    raise quota_exceeded(
                        "Job creation requests",
                        "Job creation requests per minute per project",
                        project_id,
                        f"{len(recent)} jobs were created in the last minute; the quota is "
                        f"{self.max_jobs_per_minute} (beamport serve --max-jobs-per-minute). Try again later.",
                    )
            admitted.add(job_id)

    def release(self, project_id: str, job_id: str) -> None:
        """A create reserve() admitted has been written, or has failed."""
        with self._lock:
            self._admitted.get(project_id, set()).discard(job_id)
            self._forget(project_id)

    def _forget(self, project_id: str) -> None:
        if not self._admitted.get(project_id, True):
            del self._admitted[project_id]
