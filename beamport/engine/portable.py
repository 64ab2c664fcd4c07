"""Beam's Job API (beam_job_api.proto), as Beamport's engines that run on a Beam job service use it.

Beam's portable runners (Flink's job server, Prism) take a pipeline through the same calls: Prepare,
artifact staging, Run, then GetState / GetStateStream / Cancel. The pipeline's Python environments point
at an SDK worker pool (Beam's EXTERNAL environment), whose workers start through beamport.engine.sdk_boot.
"""

from __future__ import annotations

from beamport.engine.base import EngineError, StagedJob


def external_environments(job: StagedJob, sdk_pool: str):
    """The pipeline with its (rewritten) Python environments pointing at the SDK worker pool."""
    from apache_beam.portability import common_urns, python_urns
    from apache_beam.portability.api import beam_runner_api_pb2, endpoints_pb2

    pipeline = beam_runner_api_pb2.Pipeline()
    pipeline.CopyFrom(job.pipeline)
    payload = beam_runner_api_pb2.ExternalPayload(endpoint=endpoints_pb2.ApiServiceDescriptor(url=sdk_pool))
    for env in pipeline.components.environments.values():
        if env.urn == python_urns.EMBEDDED_PYTHON:
            env.urn = common_urns.environments.EXTERNAL.urn
            env.payload = payload.SerializeToString()
            del env.dependencies[:]  # Dataflow's staged files: the SDK workers run Beamport's own Python
    return pipeline


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

    def cancel(self, job_id: str) -> None:
        import grpc
        from apache_beam.portability.api import beam_job_api_pb2

        try:
            self.stub.Cancel(beam_job_api_pb2.CancelJobRequest(job_id=job_id), timeout=10)
        except grpc.RpcError as exc:
            raise EngineError(f"{self.what} could not cancel the job: {exc.details() or exc}") from None
