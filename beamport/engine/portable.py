"""Beam's Job API (beam_job_api.proto), as Beamport's engines that run on a Beam job service use it.

Beam's portable runners (Flink's job server, Prism) take a pipeline through the same calls: Prepare,
artifact staging, Run, then GetState / GetJobMetrics / Cancel. The pipeline's Python environments point
at an SDK worker pool (Beam's EXTERNAL environment), whose workers start through beamport.engine.sdk_boot.
What staging made of the job's packages (the pure-Python wheels to import, the main session) travels as
the environments' artifacts: the job service keeps them, and each SDK worker fetches them at its start.
"""

from __future__ import annotations

import logging
import os
import re

from beamport.engine.base import EngineError, StagedJob

log = logging.getLogger(__name__)


# The name the main session has among an environment's artifacts (and in the SDK worker's staged directory).
MAIN_SESSION = "pickled_main_session"


def external_environments(job: StagedJob, sdk_pool: str):
    """The pipeline with its (rewritten) Python environments pointing at the SDK worker pool, their
    artifacts what the SDK workers need of the job's staged files (`staged_artifacts`)."""
    from apache_beam.portability import common_urns, python_urns
    from apache_beam.portability.api import beam_runner_api_pb2, endpoints_pb2

    pipeline = beam_runner_api_pb2.Pipeline()
    pipeline.CopyFrom(job.pipeline)
    payload = beam_runner_api_pb2.ExternalPayload(endpoint=endpoints_pb2.ApiServiceDescriptor(url=sdk_pool))
    artifacts = staged_artifacts(job)
    for env in pipeline.components.environments.values():
        if env.urn == python_urns.EMBEDDED_PYTHON:
            env.urn = common_urns.environments.EXTERNAL.urn
            env.payload = payload.SerializeToString()
            del env.dependencies[:]
            env.dependencies.extend(artifacts)
    return pipeline


# The parameter of an external environment that tells Beamport's SDK worker pool (engine/worker_pool.py) which
# SDK's worker to start: "java" (a Java SDK harness, engine/java_boot.py) or "go" (the job's Go worker binary,
# engine/go_boot.py); absent, Python.
SDK_PARAM = "beamport_sdk"
JAVA_SDK = "java"
GO_SDK = "go"
GO_WORKER = "worker"  # the name a Go environment's worker binary is staged under (as Beam's Go boot looks for it)


def sdk_external_environments(pipeline, job: StagedJob, sdk_pool: str):
    """The pipeline with its Java and Go environments pointing at the SDK worker pool, which starts their workers
    (SDK_PARAM) over their artifacts: a Java environment's are the job's staged jars, in class path order (each
    named by its place, as two jars may share a file name); a Go environment's is its worker binary. The job
    service hands them to the worker's launcher (sdk_boot)."""
    for env_id, class_path in job.java_environments.items():
        named = [(path, f"{number:04d}-{os.path.basename(path)}") for number, path in enumerate(class_path)]
        _pool_environment(pipeline.components.environments[env_id], sdk_pool, JAVA_SDK, named)
    for env_id, binary in job.go_environments.items():
        _pool_environment(pipeline.components.environments[env_id], sdk_pool, GO_SDK, [(binary, GO_WORKER)])
    return pipeline


def _pool_environment(env, sdk_pool: str, sdk: str, files: list[tuple[str, str]]) -> None:
    from apache_beam.portability import common_urns
    from apache_beam.portability.api import beam_runner_api_pb2, endpoints_pb2

    payload = beam_runner_api_pb2.ExternalPayload(
        endpoint=endpoints_pb2.ApiServiceDescriptor(url=sdk_pool), params={SDK_PARAM: sdk}
    )
    env.urn = common_urns.environments.EXTERNAL.urn
    env.payload = payload.SerializeToString()
    del env.dependencies[:]
    env.dependencies.extend(_file_artifacts(files))


def java_options(job: StagedJob) -> dict:
    """A Java job's options as a job service hands them to the harness: the options Beam Java's runner wrote, under
    the portable names Beam Java reads back (`beam:option:job_name:v1` is Java's jobName), the job's id as its name."""
    options = {_snake_case(name): value for name, value in job.options.items() if value is not None}
    options["job_name"] = job.job_id
    return options


def _snake_case(name: str) -> str:
    """jobName -> job_name: what Beam Java's PipelineOptionsTranslation turns back into the same name."""
    return re.sub(r"(?<!^)([A-Z])", r"_\1", name).lower()


def staged_artifacts(job: StagedJob) -> list:
    """The job's staged wheels (StagedJob.python_path) and main session as file artifacts, each named as it
    is staged: what the embedded engine puts on sys.path and loads, for SDK workers elsewhere (sdk_boot)."""
    files = [(path, os.path.basename(path)) for path in job.python_path]
    if job.main_session:
        files.append((str(job.main_session), MAIN_SESSION))
    return _file_artifacts(files)


def _file_artifacts(files: list[tuple[str, str]]) -> list:
    """Local files as artifacts a job service stages: (path, the name it is staged under) each."""
    from apache_beam.portability import common_urns
    from apache_beam.portability.api import beam_runner_api_pb2

    return [
        beam_runner_api_pb2.ArtifactInformation(
            type_urn=common_urns.artifact_types.FILE.urn,
            type_payload=beam_runner_api_pb2.ArtifactFilePayload(path=path).SerializeToString(),
            role_urn=common_urns.artifact_roles.STAGING_TO.urn,
            role_payload=beam_runner_api_pb2.ArtifactStagingToRolePayload(staged_name=name).SerializeToString(),
        )
        for path, name in files
    ]


def user_metrics(results, one_side: str | None = None) -> dict[str, list]:
    """A job's MetricResults (MonitoringInfos, attempted and committed: what GetJobMetrics answers) as
    DirectRunner's `metrics().query()` gives a job's metrics: its user metrics, through Beam's own
    PortableRunner conversion. one_side ("committed" or "attempted"): the side the engine keeps properly,
    which then stands for both, as in a batch job's final metrics (Prism's attempted figures are only the
    progress of the bundles in flight; Flink's runner keeps attempted figures only)."""
    from apache_beam.metrics import monitoring_infos
    from apache_beam.portability.api import beam_job_api_pb2
    from apache_beam.runners.portability.portable_runner import PortableMetrics

    sides = {
        side: [i for i in getattr(results, side) if monitoring_infos.is_user_monitoring_info(i)]
        for side in ("attempted", "committed")
    }
    if one_side:
        sides = {side: sides[one_side] for side in sides}
    user = beam_job_api_pb2.MetricResults(**sides)
    return PortableMetrics(beam_job_api_pb2.GetJobMetricsResponse(metrics=user)).query()


class JobService:
    """A connection to a Beam job service."""

    def __init__(self, address: str, what: str, connect_timeout: float = 30):
        import grpc
        from apache_beam.portability.api import beam_job_api_pb2_grpc

        self.address, self.what = address, what
        self.channel = grpc.insecure_channel(address)
        try:
            grpc.channel_ready_future(self.channel).result(timeout=connect_timeout)
        except grpc.FutureTimeoutError:
            raise EngineError(f"{what} at {address} cannot be reached.") from None
        self.stub = beam_job_api_pb2_grpc.JobServiceStub(self.channel)

    def submit(self, name: str, pipeline, options: dict) -> str:
        """Prepare, stage and run a pipeline; the invocation's job id."""
        import grpc
        from apache_beam.portability.api import beam_artifact_api_pb2_grpc, beam_job_api_pb2
        from apache_beam.runners.portability import artifact_service
        from apache_beam.runners.portability.portable_runner import JobServiceHandle

        try:
            prepared = self.stub.Prepare(
                beam_job_api_pb2.PrepareJobRequest(
                    job_name=name, pipeline=pipeline, pipeline_options=JobServiceHandle.encode_pipeline_options(options)
                ),
                timeout=60,
            )
            if prepared.artifact_staging_endpoint.url:
                artifact_service.offer_artifacts(
                    beam_artifact_api_pb2_grpc.ArtifactStagingServiceStub(
                        grpc.insecure_channel(prepared.artifact_staging_endpoint.url)
                    ),
                    artifact_service.ArtifactRetrievalService(artifact_service.BeamFilesystemHandler(None).file_reader),
                    prepared.staging_session_token,
                )
            run = self.stub.Run(beam_job_api_pb2.RunJobRequest(preparation_id=prepared.preparation_id), timeout=60)
        except grpc.RpcError as exc:
            raise EngineError(f"{self.what} refused the job: {exc.details() or exc}") from None
        return run.job_id

    def state(self, job_id: str) -> str:
        """The invocation's state, by name (RUNNING, DONE, FAILED, CANCELLED...)."""
        from apache_beam.portability.api import beam_job_api_pb2

        answer = self.stub.GetState(beam_job_api_pb2.GetJobStateRequest(job_id=job_id), timeout=10)
        return beam_job_api_pb2.JobState.Enum.Name(answer.state)

    def metric_results(self, job_id: str):
        """The invocation's metrics so far (Beam's MetricResults: MonitoringInfos, user and system, attempted and
        committed); None when the job service does not answer."""
        import grpc
        from apache_beam.portability.api import beam_job_api_pb2

        try:
            answer = self.stub.GetJobMetrics(beam_job_api_pb2.GetJobMetricsRequest(job_id=job_id), timeout=10)
        except grpc.RpcError as exc:
            log.info("%s gave no metrics for %s: %s", self.what, job_id, exc.details() or exc)
            return None
        return answer.metrics

    def errors(self, job_id: str, limit: int = 5) -> list[str]:
        """The ERROR messages the job service kept for the invocation (why it failed)."""
        import grpc
        from apache_beam.portability.api import beam_job_api_pb2

        found = []
        try:
            for message in self.stub.GetMessageStream(beam_job_api_pb2.JobMessagesRequest(job_id=job_id), timeout=3):
                if message.HasField("message_response"):
                    response = message.message_response
                    if response.importance >= beam_job_api_pb2.JobMessage.MessageImportance.JOB_MESSAGE_ERROR:
                        found.append(response.message_text)
        except grpc.RpcError:
            pass  # the stream ends at its timeout: what came is what there is
        return found[-limit:]

    def cancel(self, job_id: str, name: str | None = None) -> None:
        """Cancel the invocation; with `name`, only if the invocation of that id here bears that name (a job
        service that numbers its invocations, as Prism's "job-001", may not be the one this job was run on:
        another can have taken its port since)."""
        import grpc
        from apache_beam.portability.api import beam_job_api_pb2

        try:
            if name is not None:
                jobs = self.stub.GetJobs(beam_job_api_pb2.GetJobsRequest(), timeout=10).job_info
                if not any(info.job_id == job_id and info.job_name == name for info in jobs):
                    log.warning("%s at %s runs no invocation %s of job %s: nothing cancelled", self.what,
                                self.address, job_id, name)  # fmt: skip
                    return
            self.stub.Cancel(beam_job_api_pb2.CancelJobRequest(job_id=job_id), timeout=10)
        except grpc.RpcError as exc:
            raise EngineError(f"{self.what} could not cancel the job: {exc.details() or exc}") from None
