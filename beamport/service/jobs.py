"""Dataflow's job semantics: create, get, list, update (state changes), messages and metrics.

Every change is one atomic store write guarded by the job's version, so two
concurrent requests can never both act on the same old state; the loser reads
the job again and re-applies its request to what it finds.

An update that carries a running job's state over (replaceJobId, on an engine that keeps state) is a
long-running operation: the create stores the new job (PENDING, waiting to take over: its record's
replacing_job_id) and answers it; in the background the old job's engine run stops with its state saved (a
snapshot: nothing is read or written after it), then one write hands over (the old job UPDATED,
replacedByJobId; the new job's work, from the snapshot). A savepoint that fails leaves the old job running,
and fails the new one, saying why in both jobs' messages; a new job cancelled meanwhile leaves the old job's
work to go on from the snapshot. A server that stops meanwhile starts the swap again at its next start
(resume_updates).
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Sequence

import orjson
from google.protobuf.timestamp_pb2 import Timestamp

from beamport import job_states, wire
from beamport.engine import registry
from beamport.engine.staged_files import check_pipeline_hash
from beamport.errors import ApiError, failed_precondition, invalid_argument
from beamport.files import LOCATION_OPTIONS, FilePolicy
from beamport.job_states import Actor
from beamport.service import autoscaling, engines, model, retries
from beamport.service.documents import (
    active_jobs,
    close_work_items,
    commit,
    document,
    job_message,
    job_not_found,
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
from beamport.service.sdk_version import fill_sdk_version, sdk_language
from beamport.sidecar import BeamSidecar
from beamport.store.base import Store, Write
from beamport.store.errors import ActiveNameTaken, VersionConflict
from beamport.store.jobs import FILTER_ACTIVE, FILTER_ALL, FILTER_TERMINATED, JobChange, JobQuery, JobRecord
from beamport.store.messages import MessageQuery, MessageRecord
from beamport.store.work_items import WORK_CANCELLED, WORK_LEASED, WorkItemChange, WorkItemRecord

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
# The active jobs of one name read to find an update underway: the one that holds the name, and at most one job
# waiting to take over from each (of which only the holder's matters).
_SAME_NAME_PAGE = 100


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
        if with_detail:
            return render_job(load_job(self.store, project_id, location, job_id, with_detail), view)
        found = self.store.jobs.get_summary(project_id, job_id)  # the common call: its own quick read
        if found is None or (location is not None and found[0] != location):
            raise job_not_found(job_id, location)
        return model.render_view(orjson.loads(found[1]), None, view)

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

    def list_projects(self, project_ids: set[str] | None) -> dict:
        """Beamport's own: the projects that have jobs (of `project_ids`, those the caller may list jobs in;
        None: every project), the one with the newest job first, for the console's choice of project."""
        return {
            "projects": [
                {"projectId": p.project_id, "latestJobCreateTime": wire.format_timestamp_us(p.latest_create_us)}
                for p in self.store.jobs.list_projects(project_ids)
            ]
        }

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
                or summary.replacing_job_id  # an update underway: its work comes with the swap (resume_updates)
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
        stored = False
        try:
            self._check_files(doc)  # keeps the pipeline (pipelines/<id>.pb): removed below unless the job is stored
            carries = False
            if replace_job_id:
                update_notes, carries = self._update_plan(project_id, location, replace_job_id, doc)
                notes = [*notes, *update_notes]
            record = record_from_document(doc)
            work: list[WorkItemRecord]
            messages: list
            if carries:
                work, messages = [], []  # its work comes with the swap, from the old job's saved state
            elif engines.engine_of(doc, self.streaming_engine) is None:
                work, messages = [], [job_message(job_id, now, "JOB_MESSAGE_WARNING", NO_STREAMING_ENGINE)]
            else:
                work, messages = [WorkItemRecord(job_id=job_id)], []  # the whole pipeline, for a worker to lease
            messages += [job_message(job_id, now, importance, text) for importance, text in notes]

            def attempt() -> dict:
                nonlocal stored
                try:
                    if carries:
                        self._store_update(project_id, location, replace_job_id, record, messages, now)
                    elif replace_job_id:
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
                stored = True
                if work:
                    self.work.notify()
                return render_job(record, view)

            answer = retry_on_conflict(attempt, f"creating job {doc['name']}", conflicts=(ActiveNameTaken,))
        finally:
            if not stored and self.pipelines_dir is not None:
                (self.pipelines_dir / f"{job_id}.pb").unlink(missing_ok=True)
        if carries:
            self._start_swap(project_id, location, replace_job_id, job_id)
        return answer

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

    def _update_plan(
        self, project_id: str, location: str, old_id: str, doc: dict
    ) -> tuple[list[tuple[str, str]], bool]:
        """An update: (notes for the new job, whether it takes over the old job's state). The state is carried
        over for a running streaming job on an engine that saves it, once the new pipeline is checked to be able
        to take it on; then it is saved in the background (_swap). Anything refused leaves the old job as it was."""
        old = load_job(self.store, project_id, location, old_id)
        old_doc = document(old)
        self._check_replaceable(old, old_doc, doc.get("name", ""))
        engine = engines.engine_of(old_doc, self.streaming_engine)
        if old_doc.get("type") != model.STREAMING:
            return [], False
        if not engines.keeps_state(engine) or self.saved_state is None:
            if old_doc.get("currentState") != model.RUNNING:
                return [], False
            note = (
                f"Job {old_id} runs on the {engine} engine, which keeps no state to carry over: this job starts "
                f"without it (updates keep state on the {registry.titles(registry.keeping_state())} engine)."
            )
            return [("JOB_MESSAGE_WARNING", note)], False
        if old_doc.get("currentState") != model.RUNNING:
            note = f"Job {old_id} was not running ({old_doc.get('currentState')}): this job starts without its state."
            return [("JOB_MESSAGE_WARNING", note)], False
        assert engine is not None  # keeps_state(None) is False: answered above
        spec = registry.get(engine)
        if engines.spec_of(doc, self.streaming_engine) is not spec:
            raise failed_precondition(
                f"Job {old_id} runs on {spec.title} and keeps state; its replacement must run on {spec.title} too "
                "to take it on."
            )
        self._check_no_update_underway(old)
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
        note = (
            f"This job replaces job {old_id} and takes over its state: the state is being saved (a snapshot) while "
            f"job {old_id} runs on; this job starts from it once it is saved."
        )
        return [("JOB_MESSAGE_BASIC", note)], True

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
        written = [*(options.get(key) for key in LOCATION_OPTIONS), environment.get("tempStoragePrefix")]
        read = [p.get("location") for pool in environment.get("workerPools", []) for p in pool.get("packages", [])]
        for location in filter(None, written):
            self.files.check_output(location, folder=True)
        for location in filter(None, read):
            self.files.check(location)
        if options.get("pipelineUrl") and not ("steps" in doc and "pipelineDescription" in doc):
            url = options["pipelineUrl"]
            data = self.files.read_bytes(url)
            check_pipeline_hash(data, options)
            graph = self.beam.call("describe_pipeline", data, url, environment.get("sdkPipelineOptions"))
            if self.pipelines_dir is not None and doc.get("id"):
                self.pipelines_dir.mkdir(parents=True, exist_ok=True)
                (self.pipelines_dir / f"{doc['id']}.pb").write_bytes(data)
            # Beam Java's runner v1 sends its legacy steps, and no description: the steps stay the client's, the
            # description is the staged pipeline's, as a runner v2 job's is (its transforms, stages, display data,
            # and the names of the transform ids its metrics are reported under).
            doc.update({key: value for key, value in graph.items() if key not in doc})

    def _replace(
        self, project_id: str, location: str, old_id: str, record: JobRecord, work: list, messages: list, now: int
    ) -> None:
        old = load_job(self.store, project_id, location, old_id)
        old_doc = document(old)
        self._check_replaceable(old, old_doc, record.name)
        self._check_no_update_underway(old)
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

    # -- updates that carry state over (long-running) --------------------------

    def _check_no_update_underway(self, old: JobRecord) -> None:
        query = JobQuery(old.project_id, old.location, FILTER_ACTIVE, name=old.name, limit=_SAME_NAME_PAGE)
        underway = next((job.id for job in self.store.jobs.list(query) if job.replacing_job_id == old.id), None)
        if underway:
            raise failed_precondition(
                f"Job {old.id} is already being updated: job {underway} takes over its state once it is saved. "
                f"Wait for that update to end (or cancel job {underway}), then update again."
            )

    def _store_update(
        self, project_id: str, location: str, old_id: str, record: JobRecord, messages: list, now: int
    ) -> None:
        """Store the new job of an update that carries state, waiting to take over; the old job runs on."""
        old = load_job(self.store, project_id, location, old_id)
        old_doc = document(old)
        self._check_replaceable(old, old_doc, record.name)
        if old_doc.get("currentState") != model.RUNNING:
            raise failed_precondition(
                f"Job {old_id} is in {old_doc.get('currentState')} now, no longer running: update it again."
            )
        self._check_no_update_underway(old)
        record.replacing_job_id = old_id
        # The old job written back unchanged, under the version read: a concurrent update of it conflicts, and
        # finds this one underway when it tries again.
        commit(
            self.store,
            Write(
                new_jobs=[record],
                changed_jobs=[JobChange(old, old.version)],
                messages=[
                    *messages,
                    job_message(
                        old_id,
                        now,
                        "JOB_MESSAGE_BASIC",
                        f"Job {record.id} is to replace this job: this job's state is being saved for it (a "
                        "snapshot); this job runs until then.",
                    ),
                ],
            ),
        )

    def resume_updates(self) -> int:
        """Start again the swaps of updates a stopped server left underway (each new job stored, its old job's state
        not yet handed over): at start-up. Returns how many."""
        resumed = 0
        for summary in active_jobs(self.store):
            if not summary.replacing_job_id:
                continue
            self.add_messages(
                summary.id,
                [
                    (
                        "JOB_MESSAGE_BASIC",
                        f"The server restarted while the state of job {summary.replacing_job_id} was being saved for "
                        "this job: it is saved again.",
                    )
                ],
            )
            self._start_swap(summary.project_id, summary.location, summary.replacing_job_id, summary.id)
            resumed += 1
        if resumed:
            log.info("%d update(s) underway when the server stopped resumed", resumed)
        return resumed

    def _start_swap(self, project_id: str, location: str, old_id: str, new_id: str) -> None:
        threading.Thread(
            target=self._swap, args=(project_id, location, old_id, new_id), name=f"update-{new_id}", daemon=True
        ).start()

    def _swap(self, project_id: str, location: str, old_id: str, new_id: str) -> None:
        """In a thread of its own: save the old job's state, its run stopping with it (nothing read or written
        after the savepoint), then hand over to the new job; then make sure the old job's run is gone. Should the
        new job not take over, the old job's work goes on from the savepoint (_go_on_from_snapshot)."""
        try:
            if self.saved_state is None:
                failure = "this server has no streaming engine that saves state"
                self._end_update(old_id, new_id, None, failure)
                return
            try:
                snapshot_id = self.saved_state.save_for_update(project_id, location, old_id, new_id)
            except ApiError as exc:
                self._end_update(old_id, new_id, None, exc.message)
                return
            if self._end_update(old_id, new_id, snapshot_id):
                self.saved_state.stop_run(old_id)
                self.work.notify()
        except Exception as exc:  # noqa: BLE001 (a thread's end: the new job fails, the old job runs on)
            log.exception("the update of job %s by job %s failed", old_id, new_id)
            try:
                self._end_update(old_id, new_id, None, f"internal error: {type(exc).__name__}: {exc}")
            except Exception:  # noqa: BLE001 (the store failing again: the server's next start resumes it)
                log.exception("the update of job %s by job %s could not be failed", old_id, new_id)

    def _end_update(self, old_id: str, new_id: str, snapshot_id: str | None, failure: str = "") -> bool:
        """One write that ends an update underway. The new job takes over from the old one, from the snapshot; or,
        on `failure` (or when the old job stopped running meanwhile), the new job fails and the old one is left as
        it is. Either way both jobs' messages say so. Returns whether the new job took over."""

        def attempt() -> bool:
            now = self.clock()
            new, old = self.store.jobs.get(None, new_id), self.store.jobs.get(None, old_id)
            if new is None or new.replacing_job_id != old_id:
                return False  # ended by another server (resume_updates on two servers at once)
            new_doc = document(new)
            kept = f" (its state was saved in snapshot {snapshot_id})" if snapshot_id else ""
            if not new.active:  # cancelled or drained by a client meanwhile
                new.replacing_job_id = ""
                write = Write(changed_jobs=[JobChange(new, new.version)])
                if old is not None and old.active:
                    text = (
                        f"The update by job {new_id} was abandoned: that job is {new_doc.get('currentState')}. "
                        f"This job runs on{kept}."
                    )
                    write.messages = [job_message(old_id, now, "JOB_MESSAGE_WARNING", text)]
                    if snapshot_id:
                        self._go_on_from_snapshot(old, snapshot_id, new_id, now, write)
                commit(self.store, write)
                return False
            old_doc = document(old) if old is not None else {}
            old_state = old_doc.get("currentState", "deleted")
            reason = failure.rstrip(".") or (
                "" if old_state == model.RUNNING else f"job {old_id} is {old_state}, no longer running"
            )
            expected_new = new.version
            new.replacing_job_id = ""
            if reason:
                move_to_state(new_doc, model.FAILED, now, Actor.SERVICE)
                record_from_document(new_doc, new)
                after = f"Job {old_id} runs on, unchanged." if old_state == model.RUNNING else ""
                messages = [
                    job_message(
                        new_id,
                        now,
                        "JOB_MESSAGE_ERROR",
                        f"The update of job {old_id} failed: {reason}. {after}".strip(),
                    )
                ]
                write = Write(changed_jobs=[JobChange(new, expected_new)])
                if old is not None and old.active and snapshot_id:  # (e.g. draining now: its drain goes on)
                    self._go_on_from_snapshot(old, snapshot_id, new_id, now, write)
                if old is not None:
                    after = "This job runs on, unchanged." if old_state == model.RUNNING else ""
                    messages.append(
                        job_message(
                            old_id,
                            now,
                            "JOB_MESSAGE_WARNING",
                            f"The update by job {new_id} failed: {reason}. {after}".strip(),
                        )
                    )
                write.messages = [*messages, *write.messages]
                commit(self.store, write)
                return False
            assert old is not None  # no reason to fail: the old job is running
            expected_old = old.version
            move_to_state(old_doc, model.UPDATED, now, Actor.SERVICE)
            old_doc["replacedByJobId"] = new_id
            record_from_document(old_doc, old)
            new_doc["createdFromSnapshotId"] = snapshot_id
            record_from_document(new_doc, new)
            commit(
                self.store,
                Write(
                    # The old job first: it gives up the name the new one then holds.
                    changed_jobs=[JobChange(old, expected_old), JobChange(new, expected_new)],
                    new_work_items=[WorkItemRecord(job_id=new_id)],
                    changed_work_items=close_work_items(self.store, old_id, WORK_CANCELLED, now),
                    messages=[
                        job_message(
                            new_id,
                            now,
                            "JOB_MESSAGE_BASIC",
                            f"This job takes over the state of job {old_id}, saved in snapshot {snapshot_id}.",
                        ),
                        job_message(new_id, now, "JOB_MESSAGE_BASIC", f"This job replaces job {old_id}."),
                        job_message(
                            old_id, now, "JOB_MESSAGE_BASIC", f"Job was updated: it is replaced by job {new_id}."
                        ),
                    ],
                ),
            )
            return True

        return retry_on_conflict(attempt, f"updating job {old_id} with job {new_id}")

    def _go_on_from_snapshot(self, old: JobRecord, snapshot_id: str, new_id: str, now: int, write: Write) -> None:
        """The old job's run stopped with the update's snapshot, and the new job did not take over: the old job's
        work moves to another attempt at once (not counted as a failure), which goes on from that snapshot's
        savepoint (the engine finds it: HANDED_OVER), with nothing read twice or lost."""
        old_doc = document(old)
        reason = (
            f"its run stopped with snapshot {snapshot_id} for the update by job {new_id}, which did not take over; "
            "the job goes on from that snapshot"
        )
        changes = []
        for item in self.store.work_items.list(old.id):
            if item.state == WORK_LEASED:
                expected = item.version
                retries.fail_attempt(old_doc, item, reason, now, write, Actor.SERVICE, counts=False)
                changes.append(WorkItemChange(item, expected))
        write.changed_work_items = [*write.changed_work_items, *changes]
        if changes:
            self.work.notify()

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

        ended: list[dict] = []  # the document of a job that ended here, with no worker holding its work

        def attempt() -> dict:
            record = load_job(self.store, project_id, location, job_id)
            doc = document(record)
            state = doc.get("currentState", "")
            if job_states.is_terminal(state):
                raise failed_precondition(f"Job {job_id} is in terminal state {state} and can no longer be changed.")
            now = self.clock()
            started = False  # a worker took its work once: an engine may run it still (a cluster's job)
            if requested:
                # Work between attempts (no worker holds it) has nothing to stop: the cancel ends at once.
                items = self.store.work_items.list(job_id)
                held = any(item.state == WORK_LEASED for item in items)
                started = any(item.start_us is not None for item in items)
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
            ended[:] = [doc] if started and not record.active else []
            return render_job(record, model.VIEW_SUMMARY)

        answer = retry_on_conflict(attempt, f"updating job {job_id}")
        if ended:  # a cluster's run outlives a worker that crashed: nobody else would stop it
            engines.stop_run_left_behind(self.saved_state, ended[0], self.streaming_engine)
        return answer

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
        if action is job_states.DRAIN and work_held:  # (work no worker holds has nothing to drain: it ends now)
            self._check_drains(doc)
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

    def _check_drains(self, doc: dict) -> None:
        """A drain only where the job's engine drains its SDK's pipelines, and, for a Java or Go pipeline, only when
        its sources are Beamport's (the Pub/Sub reads staging replaces) or splittable DoFns (whose remainder
        Beamport's launchers truncate: engine/harness_process.py): any other source of the SDK's own (a Java
        primitive Read no harness runs as a splittable DoFn) would never see the drain signal, and leave the job
        DRAINING, reading on, until it is cancelled."""
        spec = engines.spec_of(doc, self.streaming_engine)
        if spec is None:
            return
        sdk = sdk_language(doc) or registry.PYTHON
        title = registry.SDK_TITLES[sdk]
        cancel = "cancel it instead (requestedState JOB_STATE_CANCELLED)"
        if sdk not in spec.drains:
            raise failed_precondition(
                f"Job {doc['id']} is a Beam {title} pipeline on the {spec.title} engine, which cannot drain it (its "
                f"sources would read on): {cancel}. Beamport drains pipelines of "
                f"{', '.join(sorted(registry.SDK_TITLES[s] for s in spec.drains)) or 'no SDK'} on {spec.title}."
            )
        if sdk == registry.PYTHON:
            return  # (a Python pipeline's own sources, such as PeriodicImpulse, read on too: docs/engines.md)
        try:
            pipeline = self._pipeline_of(doc)  # (Beam Java's runner v1 sends steps: its pipeline was not kept)
        except ApiError:
            return  # no staged pipeline to tell its sources by
        where = f"job {doc['id']}'s pipeline"
        sources = self.beam.call("sdk_unbounded_sources", pipeline, where, True)
        if sources:
            raise failed_precondition(
                f"Job {doc['id']} reads from {', '.join(sources)}: Beam {title} code, which never sees Beamport's "
                f"drain signal (only Beamport's sources do, Pub/Sub reads among them), so it would read on: {cancel}."
            )

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
