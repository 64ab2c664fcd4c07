"""Dataflow's job semantics: create, get, list, update (state changes), messages and metrics.

Every change is one atomic store write guarded by the job's version, so two
concurrent requests can never both act on the same old state; the loser reads
the job again and re-applies its request to what it finds.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence

from google.protobuf.timestamp_pb2 import Timestamp

from beamport import job_states, wire
from beamport.engine import registry
from beamport.engine.staged_files import check_pipeline_hash
from beamport.errors import ApiError, failed_precondition, invalid_argument
from beamport.files import FilePolicy
from beamport.job_states import Actor
from beamport.service import autoscaling, engines, model
from beamport.service.documents import (
    active_jobs,
    close_work_items,
    commit,
    document,
    job_message,
    load_job,
    move_to_state,
    record_from_document,
    render_job,
    render_message,
    retry_on_conflict,
)
from beamport.service.model import JobPb
from beamport.service.notify import WorkNotifier
from beamport.service.paging import decode_token, page_response, page_size
from beamport.service.quotas import JobQuotas, check_job, check_job_name, check_labels
from beamport.service.sdk_version import fill_sdk_version
from beamport.sidecar import BeamSidecar
from beamport.store.base import Store, Write
from beamport.store.errors import ActiveNameTaken, VersionConflict
from beamport.store.jobs import FILTER_ACTIVE, FILTER_ALL, FILTER_TERMINATED, JobChange, JobQuery, JobRecord
from beamport.store.messages import MessageQuery, MessageRecord
from beamport.store.work_items import WORK_CANCELLED, WORK_LEASED, WorkItemRecord

log = logging.getLogger(__name__)

_FILTERS = {"UNKNOWN": FILTER_ALL, "ALL": FILTER_ALL, "ACTIVE": FILTER_ACTIVE, "TERMINATED": FILTER_TERMINATED}
# Fields a client may name in jobs.update's updateMask (both spellings are accepted, as Google's ESF does).
_UPDATABLE = {
    "labels": ("labels",),
    "runtime_updatable_params.max_num_workers": ("runtimeUpdatableParams", "maxNumWorkers"),
    "runtime_updatable_params.min_num_workers": ("runtimeUpdatableParams", "minNumWorkers"),
    "runtime_updatable_params.worker_utilization_hint": ("runtimeUpdatableParams", "workerUtilizationHint"),
}
_UPDATABLE.update(
    {
        "runtimeUpdatableParams.maxNumWorkers": _UPDATABLE["runtime_updatable_params.max_num_workers"],
        "runtimeUpdatableParams.minNumWorkers": _UPDATABLE["runtime_updatable_params.min_num_workers"],
        "runtimeUpdatableParams.workerUtilizationHint": _UPDATABLE["runtime_updatable_params.worker_utilization_hint"],
    }
)
NO_STREAMING_ENGINE = (
    "This Beamport server has no streaming engine (neither a Flink cluster nor Beam's Prism runner: "
    "scripts/prism-build builds Prism, scripts/flink-cluster starts Flink; see docs/engines.md), so nothing runs "
    "this streaming job yet: it waits in JOB_STATE_PENDING until the server is restarted with one (then it runs), "
    "or until it is cancelled or drained."
)


class JobService:
    def __init__(
        self,
        store: Store,
        files: FilePolicy | None = None,
        clock=wire.now_us,
        work: WorkNotifier | None = None,
        streaming_engine: str | None = None,
        saved_state: engines.SavedState | None = None,
        pipelines_dir=None,
        engines_available: set[str] | frozenset = frozenset({registry.BATCH_DEFAULT.name}),
        quotas: JobQuotas | None = None,
        beam: BeamSidecar | None = None,
    ):
        self.store = store
        # What needs Beam (a pipeline's graph, update compatibility): this process never imports Beam.
        self.beam = beam or BeamSidecar()
        self.quotas = quotas  # per-project quotas on creates (None: none)
        self.files = files  # None: files named in requests are neither checked nor read (tests of the API only)
        self.clock = clock
        self.work = work or WorkNotifier()  # told when a created job has work to lease
        self.streaming_engine = streaming_engine  # an engine's name, or None: see beamport.service.engines
        self.engines_available = set(engines_available) | ({streaming_engine} if streaming_engine else set())
        # Where jobs on engines that keep state (beamport.engine.registry) start from, and updates carry their
        # state over through (the snapshot service); None: nowhere.
        self.saved_state = saved_state
        # A copy of each submitted pipeline, by job id: DataflowRunner stages every submission's pipeline.pb at
        # the same path of a local staging location, so a later submission overwrites an earlier one's.
        self.pipelines_dir = pipelines_dir

    @property
    def reads_never_wait(self) -> bool:
        """Whether reads may run on an event loop (see Store.reads_never_wait)."""
        return self.store.reads_never_wait

    def close(self) -> None:
        self.store.close()

    # -- reading ------------------------------------------------------------

    def get_job(self, project_id: str, location: str | None, job_id: str, view: int = 0) -> dict:
        with_detail = view in (model.VIEW_ALL, model.VIEW_DESCRIPTION)
        return render_job(load_job(self.store, project_id, location, job_id, with_detail), view)

    def list_jobs(
        self,
        project_id: str,
        location: str | None,
        filter: int = 0,
        view: int = 0,
        name: str | None = None,
        page_size_: int = 0,
        page_token: str | None = None,
        create_from_us: int | None = None,
        create_to_us: int | None = None,
        end_from_us: int | None = None,
        end_to_us: int | None = None,
    ) -> dict:
        limit = page_size(page_size_, default=50, maximum=1000)
        query = JobQuery(
            project_id=project_id,
            location=location,
            filter=_FILTERS[model.ListJobsFilter.values_by_number[filter].name],
            name=name or None,
            create_from_us=create_from_us,
            create_to_us=create_to_us,
            end_from_us=end_from_us,
            end_to_us=end_to_us,
            before_seq=decode_token("jobs", page_token),
            limit=limit + 1,
        )
        with_detail = view in (model.VIEW_ALL, model.VIEW_DESCRIPTION)
        records = self.store.jobs.list(query, with_detail=with_detail)
        return page_response(records, limit, "jobs", "jobs", lambda record: render_job(record, view))

    def list_messages(
        self,
        project_id: str,
        location: str | None,
        job_id: str,
        minimum_importance: int = 0,
        start_us: int | None = None,
        end_us: int | None = None,
        page_size_: int = 0,
        page_token: str | None = None,
    ) -> dict:
        load_job(self.store, project_id, location, job_id, with_detail=False)
        limit = page_size(page_size_, default=100, maximum=1000)
        rank = 0
        if minimum_importance:
            name = model.JobMessageImportance.values_by_number[minimum_importance].name
            rank = model.IMPORTANCE_RANK.get(name, 0)
        records = self.store.messages.list(
            MessageQuery(
                job_id=job_id,
                min_importance_rank=rank,
                start_us=start_us,
                end_us=end_us,
                after_seq=decode_token("messages", page_token),
                limit=limit + 1,
            )
        )
        response = page_response(records, limit, "messages", "jobMessages", render_message)
        if not page_token:  # the job's worker count changes, in the same time window, once per listing
            events = self.store.messages.list_autoscaling_events(job_id, start_us, end_us)
            if events:
                response["autoscalingEvents"] = [autoscaling.render_event(e) for e in events]
        return response

    # -- creating -----------------------------------------------------------

    def create_job(
        self,
        project_id: str,
        location: str,
        body: dict,
        replace_job_id: str | None = None,
        view: int = 0,
        notes: Sequence[tuple[str, str]] = (),
    ) -> dict:
        """Create a job (or replace an active one); `notes` are (importance, text) messages for it."""
        job = wire.parse_message(body, JobPb, "job")
        check_job_name(job.name)
        replace_job_id = job.replace_job_id or replace_job_id or ""

        if job.client_request_id:
            # A retried create: answer the job the first attempt made.
            existing = self.store.jobs.find_by_request_id(project_id, location, job.name, job.client_request_id)
            if existing is not None:
                return render_job(existing, view)

        now = self.clock()
        job_id = model.new_job_id(now)
        for server_field in (
            "id",
            "project_id",
            "location",
            "create_time",
            "current_state",
            "current_state_time",
            "requested_state",
            "replaced_by_job_id",
            "stage_states",
            "start_time",
            "execution_info",
        ):
            job.ClearField(server_field)
        job.id = job_id
        job.project_id = project_id
        job.location = location
        job.replace_job_id = replace_job_id
        stamp = Timestamp(seconds=now // 1_000_000, nanos=(now % 1_000_000) * 1000)
        job.create_time.CopyFrom(stamp)
        job.start_time.CopyFrom(stamp)
        job.current_state_time.CopyFrom(stamp)
        job.current_state = model.JobState.values_by_name[model.PENDING].number
        if not job.type_:
            job.type_ = model.JobType.values_by_name[model.BATCH].number  # Dataflow's default
        doc = wire.to_dict(job)
        fill_sdk_version(doc)  # from the user agent, as Dataflow does
        check_job(doc)  # Dataflow's limits, field by field (service/quotas.py)
        engines.check_engine(doc, self.engines_available)
        if self.quotas is None:
            return self._create(project_id, location, doc, replace_job_id, view, notes, now)
        try:
            self.quotas.reserve(project_id, job_id, now, replacing=bool(replace_job_id))
        except ApiError:
            # Past a quota, a create of a name that has an active job still answers that job, as Dataflow does.
            existing = None if replace_job_id else self.store.jobs.find_active(project_id, location, job.name)
            if existing is not None:
                return render_job(existing, view)
            raise
        try:
            return self._create(project_id, location, doc, replace_job_id, view, notes, now)
        finally:
            self.quotas.release(project_id, job_id)

    def start_waiting_jobs(self) -> int:
        """Give work to the streaming jobs that were created while the server had no streaming engine, now that
        it has one (at start-up). Returns how many now wait for a worker."""
        if self.streaming_engine is None:
            return 0
        started = 0
        for summary in active_jobs(self.store):
            doc = document(summary)
            if (
                doc.get("type") != model.STREAMING
                or doc.get("currentState") not in job_states.NOT_STARTED_STATES
                or engines.engine_of(doc, None) is not None  # it named its engine: it had work from the start
                or self.store.work_items.list(summary.id)
            ):
                continue
            job = load_job(self.store, summary.project_id, None, summary.id)
            now, expected = self.clock(), job.version
            # Written back unchanged, under the version read: a second server starting at once conflicts.
            record_from_document(document(job), job)
            text = f"This server now has a streaming engine ({self.streaming_engine}): the job runs on it."
            try:
                commit(
                    self.store,
                    Write(
                        changed_jobs=[JobChange(job, expected)],
                        new_work_items=[WorkItemRecord(job_id=job.id)],
                        messages=[job_message(job.id, now, "JOB_MESSAGE_BASIC", text)],
                    ),
                )
            except VersionConflict:
                continue
            started += 1
        if started:
            log.info(
                "%d streaming job(s) created without a streaming engine now run on %s", started, self.streaming_engine
            )
            self.work.notify()
        return started

    def _create(
        self, project_id: str, location: str, doc: dict, replace_job_id: str, view: int, notes, now: int
    ) -> dict:
        job_id = doc["id"]
        self._check_snapshot(project_id, location, doc)
        self._check_files(doc)
        if replace_job_id:
            notes = [*notes, *self._carry_state(project_id, location, replace_job_id, doc)]
        record = record_from_document(doc)
        if engines.engine_of(doc, self.streaming_engine) is None:
            work, messages = [], [job_message(job_id, now, "JOB_MESSAGE_WARNING", NO_STREAMING_ENGINE)]
        else:
            work, messages = [WorkItemRecord(job_id=job_id)], []  # the whole pipeline, for a worker to lease
        messages += [job_message(job_id, now, importance, text) for importance, text in notes]

        def attempt() -> dict:
            try:
                if replace_job_id:
                    self._replace(project_id, location, replace_job_id, record, work, messages, now)
                else:
                    commit(self.store, Write(new_jobs=[record], new_work_items=work, messages=messages))
            except ActiveNameTaken:
                # Dataflow answers a second create of an active name with the
                # existing job, unchanged; clients compare clientRequestId.
                existing = self.store.jobs.find_active(project_id, location, doc["name"])
                if existing is not None and not replace_job_id:
                    return render_job(existing, view)
                raise  # that job ended meanwhile: try again
            if work:
                self.work.notify()
            return render_job(record, view)

        return retry_on_conflict(attempt, f"creating job {doc['name']}", conflicts=(ActiveNameTaken,))

    def kept_pipeline(self, project_id: str, location: str, job_id: str) -> bytes:
        """The pipeline a job was created with, as the service kept it (what its workers run)."""
        load_job(self.store, project_id, location, job_id, with_detail=False)
        kept = self.pipelines_dir / f"{job_id}.pb" if self.pipelines_dir is not None else None
        if kept is None or not kept.exists():
            raise ApiError("NOT_FOUND", f"Job {job_id} has no kept pipeline (it was created without one).")
        return kept.read_bytes()

    def active_job_id(self, project_id: str, location: str, name: str) -> str | None:
        """The id of the active job with this name, if there is one."""
        job = self.store.jobs.find_active(project_id, location, name)
        return job.id if job else None

    def newest_job_named(self, project_id: str, location: str, name: str, created_since_us: int) -> dict | None:
        """The newest job with this name created since the given time (summary view), if any."""
        found = self.store.jobs.list(JobQuery(project_id=project_id, location=location, name=name, limit=1))
        if found and found[0].create_us >= created_since_us:
            return render_job(found[0], model.VIEW_SUMMARY)
        return None

    def add_messages(self, job_id: str, notes: Sequence[tuple[str, str]]) -> None:
        """Add (importance, text) messages to a job (what launched it, warnings about how)."""
        if notes:
            now = self.clock()
            commit(
                self.store, Write(messages=[job_message(job_id, now, importance, text) for importance, text in notes])
            )

    def _carry_state(self, project_id: str, location: str, old_id: str, doc: dict) -> list[tuple[str, str]]:
        """An update of a streaming job on an engine that saves state: check that the new pipeline can take
        the old one's state, then snapshot the old job and stop it; the new job starts from the snapshot.
        Anything refused leaves the old job as it was."""
        old = load_job(self.store, project_id, location, old_id)
        old_doc = document(old)
        self._check_replaceable(old, old_doc, doc.get("name", ""))
        engine = engines.engine_of(old_doc, self.streaming_engine)
        if old_doc.get("type") != model.STREAMING:
            return []
        if not engines.keeps_state(engine) or self.saved_state is None:
            if old_doc.get("currentState") != model.RUNNING:
                return []
            return [
                (
                    "JOB_MESSAGE_WARNING",
                    f"Job {old_id} runs on the {engine} engine, which keeps no state to carry over: this job "
                    f"starts without it (updates keep state on the {registry.titles(registry.keeping_state())} "
                    "engine).",
                )
            ]
        if old_doc.get("currentState") != model.RUNNING:
            return [
                (
                    "JOB_MESSAGE_WARNING",
                    f"Job {old_id} was not running ({old_doc.get('currentState')}): this job starts without its state.",
                )
            ]
        assert engine is not None  # keeps_state(None) is False: answered above
        spec = registry.get(engine)
        if engines.spec_of(doc, self.streaming_engine) is not spec:
            raise failed_precondition(
                f"Job {old_id} runs on {spec.title} and keeps state; its replacement must run on {spec.title} too "
                "to take it on."
            )
        problems = self.beam.call(
            "update_incompatibilities",
            self._pipeline_of(old_doc),
            self._pipeline_of(doc),
            doc.get("transformNameMapping") or {},
        )
        if problems:
            raise failed_precondition(
                f"The new job is not compatible with job {old_id}: "
                + "; ".join(problems)
                + f". Job {old_id} has not been changed."
            )
        snapshot_id = self.saved_state.carry_state(project_id, location, old_id, doc["name"])
        doc["createdFromSnapshotId"] = snapshot_id
        return [
            ("JOB_MESSAGE_BASIC", f"This job takes over the state of job {old_id}, saved in snapshot {snapshot_id}.")
        ]

    def _pipeline_of(self, doc: dict) -> bytes:
        """The Beam pipeline a job runs (its staged pipelineUrl), serialized."""
        kept = self.pipelines_dir / f"{doc.get('id')}.pb" if self.pipelines_dir is not None else None
        if kept is not None and kept.exists():
            return kept.read_bytes()
        url = doc.get("environment", {}).get("sdkPipelineOptions", {}).get("options", {}).get("pipelineUrl")
        if not url or self.files is None:
            raise failed_precondition(
                f"Job {doc.get('id') or doc.get('name')} names no staged pipeline (pipelineUrl): the compatibility "
                "of an update cannot be checked."
            )
        return self.files.read_bytes(url)

    @staticmethod
    def _check_replaceable(old: JobRecord, old_doc: dict, new_name: str) -> None:
        if not old.active:
            raise failed_precondition(
                f"Job {old.id} is in state {old_doc.get('currentState')}: only an active job can be replaced."
            )
        if old.name != new_name:
            raise invalid_argument(
                f"The replacement job must have the same name as job {old.id} ('{old.name}'), not '{new_name}'."
            )

    def _check_snapshot(self, project_id: str, location: str, doc: dict) -> None:
        """A job created from a snapshot needs a snapshot ready to start from, and an engine that can."""
        snapshot_id = doc.get("createdFromSnapshotId")
        if not snapshot_id:
            return
        engine = engines.engine_of(doc, self.streaming_engine)
        if not engines.keeps_state(engine) or self.saved_state is None:
            raise failed_precondition(
                f"The job is to start from snapshot {snapshot_id}, but it would run on "
                f"{engine or 'no engine'}, which cannot restore state: streaming jobs start from snapshots on "
                f"the {registry.titles(registry.keeping_state())} engine (see docs/engines.md)."
            )
        self.saved_state.restore_location(project_id, location, snapshot_id)

    def _check_files(self, doc: dict) -> None:
        """Refuse files outside the operator's roots now, not when the job runs; describe the pipeline."""
        if self.files is None:
            return
        environment = doc.get("environment", {})
        options = environment.get("sdkPipelineOptions", {}).get("options", {})
        if not isinstance(options, dict):
            raise invalid_argument("environment.sdkPipelineOptions.options must be an object.")
        # Directories written into (paths, not patterns), and files read.
        written = [options.get("temp_location"), options.get("staging_location"), environment.get("tempStoragePrefix")]
        read = [p.get("location") for pool in environment.get("workerPools", []) for p in pool.get("packages", [])]
        for location in filter(None, written):
            self.files.check_output(location, folder=True)
        for location in filter(None, read):
            self.files.check(location)
        if options.get("pipelineUrl") and "steps" not in doc:
            url = options["pipelineUrl"]
            data = self.files.read_bytes(url)
            check_pipeline_hash(data, options)
            graph = self.beam.call("describe_pipeline", data, url, environment.get("sdkPipelineOptions"))
            if self.pipelines_dir is not None and doc.get("id"):
                self.pipelines_dir.mkdir(parents=True, exist_ok=True)
                (self.pipelines_dir / f"{doc['id']}.pb").write_bytes(data)
            doc.update(graph)

    def _replace(
        self, project_id: str, location: str, old_id: str, record: JobRecord, work: list, messages: list, now: int
    ) -> None:
        old = load_job(self.store, project_id, location, old_id)
        old_doc = document(old)
        self._check_replaceable(old, old_doc, record.name)
        expected = old.version
        move_to_state(old_doc, model.UPDATED, now, Actor.CLIENT)
        old_doc["replacedByJobId"] = record.id
        record_from_document(old_doc, old)
        commit(
            self.store,
            Write(
                new_jobs=[record],
                new_work_items=work,
                changed_jobs=[JobChange(old, expected)],
                changed_work_items=close_work_items(self.store, old_id, WORK_CANCELLED, now),
                messages=[
                    *messages,
                    job_message(record.id, now, "JOB_MESSAGE_BASIC", f"This job replaces job {old_id}."),
                    job_message(
                        old_id, now, "JOB_MESSAGE_BASIC", f"Job was updated: it is replaced by job {record.id}."
                    ),
                ],
            ),
        )

    # -- changing -----------------------------------------------------------

    def update_job(
        self, project_id: str, location: str | None, job_id: str, body: dict, update_mask: str | None = None
    ) -> dict:
        job = wire.parse_message(body, JobPb, "job")
        requested = model.JobState.values_by_number[job.requested_state].name if job.requested_state else ""
        mask = [path.strip() for path in (update_mask or "").split(",") if path.strip()]
        if requested and mask:
            raise invalid_argument("A job update may set requestedState or updateMask, not both.")
        if not requested and not mask:
            raise invalid_argument("Nothing to update: set requestedState, or list the fields to change in updateMask.")
        for path in mask:
            if path not in _UPDATABLE:
                raise invalid_argument(
                    f"updateMask names '{path}', which cannot be updated; updatable fields: "
                    "labels, runtime_updatable_params.{max_num_workers,min_num_workers,worker_utilization_hint}."
                )
        changes = wire.to_dict(job)
        if "labels" in mask:
            check_labels(changes.get("labels"))

        def attempt() -> dict:
            record = load_job(self.store, project_id, location, job_id)
            doc = document(record)
            state = doc.get("currentState", "")
            if job_states.is_terminal(state):
                raise failed_precondition(f"Job {job_id} is in terminal state {state} and can no longer be changed.")
            now = self.clock()
            if requested:
                # Work between attempts (no worker holds it) has nothing to stop: the cancel ends at once.
                held = any(item.state == WORK_LEASED for item in self.store.work_items.list(job_id))
                messages = self._request_state(doc, requested, now, held)
            else:
                messages = self._apply_mask(doc, mask, changes)
            expected = record.version
            record_from_document(doc, record)
            # A job that ended here never started: its work will never be leased.
            work = [] if record.active else close_work_items(self.store, job_id, WORK_CANCELLED, now)
            commit(
                self.store,
                Write(changed_jobs=[JobChange(record, expected)], changed_work_items=work, messages=messages),
            )
            return render_job(record, model.VIEW_SUMMARY)

        return retry_on_conflict(attempt, f"updating job {job_id}")

    def _request_state(self, doc: dict, requested: str, now: int, work_held: bool = True) -> list[MessageRecord]:
        """Apply a client's requestedState to the job document, as the state machine allows (job_states);
        return the messages it causes."""
        job_id, state = doc["id"], doc.get("currentState", "")
        action = job_states.action_for(requested)
        if action is None and requested == model.DONE:
            raise failed_precondition(
                f"Job {job_id} is in {state}: a job reaches JOB_STATE_DONE only by finishing its work. "
                "Request JOB_STATE_CANCELLED or JOB_STATE_DRAINED to stop it."
            )
        if action is None:
            raise invalid_argument(
                f"requestedState {requested} cannot be requested by a client: use JOB_STATE_CANCELLED, "
                "JOB_STATE_DRAINED (or JOB_STATE_DRAINING) or JOB_STATE_DONE."
            )
        if action.streaming_only and doc.get("type") != model.STREAMING:
            raise failed_precondition(
                f"Job {job_id} is a batch job, and batch jobs cannot be {action.done}; "
                "cancel it instead (requestedState JOB_STATE_CANCELLED)."
            )
        if state == action.underway:  # asked again: nothing more to do
            doc["requestedState"] = action.requested_state
            return []
        # Nothing runs (yet, or between attempts) and nothing needs stopping or flushing: it ends at once.
        # Otherwise a worker holds the work (its engine may be starting): it stops it, or drains it.
        at_once = not work_held and job_states.allows(state, action.at_once, Actor.CLIENT)
        target = action.at_once if at_once else action.underway
        if not job_states.allows(state, target, Actor.CLIENT):
            raise failed_precondition(f"Job {job_id} is in {state} and cannot be {action.done}.")
        doc["requestedState"] = action.requested_state
        move_to_state(doc, target, now, Actor.CLIENT)
        what = action.name.capitalize()
        return [job_message(job_id, now, "JOB_MESSAGE_BASIC", f"{what} request is committed for job {job_id}.")]

    def _apply_mask(self, doc: dict, mask: list[str], changes: dict) -> list[MessageRecord]:
        for path in mask:
            keys = _UPDATABLE[path]
            if keys == ("labels",):
                if changes.get("labels"):
                    doc["labels"] = changes["labels"]
                else:
                    doc.pop("labels", None)
                continue
            if doc.get("type") != model.STREAMING:
                raise failed_precondition(
                    f"Job {doc['id']} is a batch job: runtime updatable parameters apply to streaming jobs only."
                )
            group, key = keys
            target = doc.setdefault(group, {})
            value = changes.get(group, {}).get(key)
            if value is None:
                target.pop(key, None)
            else:
                target[key] = value
            if not target:
                doc.pop(group)
        params = doc.get("runtimeUpdatableParams", {})
        low, high = params.get("minNumWorkers"), params.get("maxNumWorkers")
        if low is not None and high is not None and int(low) > int(high):
            raise invalid_argument(f"minNumWorkers ({low}) must not exceed maxNumWorkers ({high}).")
        return []
