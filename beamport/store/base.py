"""The store interface: what the service layer may ask of durable state.

Jobs are kept as their Google JSON document, split in two texts so that list
calls read only the small part: `summary` (what JOB_VIEW_SUMMARY shows) and
`detail` (the rest: environment, steps, pipeline description...). The other
columns exist for indexing and concurrency control.
"""

from __future__ import annotations

import abc
from dataclasses import dataclass, field
from typing import Iterable, Sequence

# jobs.list filters
FILTER_ALL = "ALL"
FILTER_ACTIVE = "ACTIVE"
FILTER_TERMINATED = "TERMINATED"


@dataclass
class JobRecord:
    id: str
    project_id: str
    location: str
    name: str
    client_request_id: str
    active: bool
    create_us: int
    end_us: int | None
    summary: str
    detail: str
    version: int = 1
    seq: int | None = None  # assigned by the store; orders jobs by creation


@dataclass
class MessageRecord:
    job_id: str
    message_id: str
    time_us: int
    importance_rank: int  # 0 DEBUG < 1 DETAILED < 2 BASIC < 3 WARNING < 4 ERROR (not the enum numbers)
    text: str
    seq: int | None = None


@dataclass
class JobQuery:
    project_id: str
    location: str | None  # None: every location (jobs:aggregated)
    filter: str = FILTER_ALL
    name: str | None = None
    create_from_us: int | None = None  # inclusive
    create_to_us: int | None = None  # exclusive
    end_from_us: int | None = None
    end_to_us: int | None = None
    before_seq: int | None = None  # paging: only jobs created before this one
    limit: int = 50


@dataclass
class MessageQuery:
    job_id: str
    min_importance_rank: int = 0
    start_us: int | None = None  # inclusive
    end_us: int | None = None  # exclusive
    after_seq: int | None = None
    limit: int = 100


@dataclass
class JobChange:
    """Replace a stored job with `record`, provided its version is still `expected_version`."""

    record: JobRecord
    expected_version: int


class StoreError(Exception):
    pass


class VersionConflict(StoreError):
    """A job changed between read and write; the caller re-reads and tries again."""


class ActiveNameTaken(StoreError):
    """Another active job already has this (project, location, name)."""


@dataclass
class Write:
    """One atomic write: new jobs, changed jobs and new messages, all or nothing."""

    new_jobs: Sequence[JobRecord] = ()
    changed_jobs: Sequence[JobChange] = ()
    messages: Iterable[MessageRecord] = field(default_factory=list)


class Store(abc.ABC):
    @abc.abstractmethod
    def write(self, write: Write) -> None:
        """Apply a Write atomically. Raises VersionConflict or ActiveNameTaken and changes nothing."""

    @abc.abstractmethod
    def get_job(self, project_id: str, job_id: str, with_detail: bool = True) -> JobRecord | None: ...

    @abc.abstractmethod
    def find_job_by_request_id(
        self, project_id: str, location: str, name: str, client_request_id: str
    ) -> JobRecord | None: ...

    @abc.abstractmethod
    def find_active_job(self, project_id: str, location: str, name: str) -> JobRecord | None: ...

    @abc.abstractmethod
    def list_jobs(self, query: JobQuery, with_detail: bool = False) -> list[JobRecord]:
        """Jobs matching the query, newest first, at most query.limit."""

    @abc.abstractmethod
    def list_messages(self, query: MessageQuery) -> list[MessageRecord]:
        """Messages matching the query, oldest first, at most query.limit."""

    @abc.abstractmethod
    def close(self) -> None: ...
