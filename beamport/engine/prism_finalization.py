"""A Beam plugin (beam_plugins) that the Prism engine gives its jobs' Python SDK workers: a request to finalize a
bundle that asked for no finalization is answered as done, not as an error.

Prism asks every bundle of a stage with a bundle-finalizing DoFn to finalize (stage.go, `s.finalize`), whether or
not the bundle's response said `requires_finalization`. Beam's Python SDK worker has released the processor of a
bundle that did not ask, and answers "Bundle is not in a finalizable state", which reached the job's messages as
an error though nothing failed (a bundle of Beamport's Pub/Sub reader that Prism split before its DoFn ran, or
that drained). The Fn API has runners finalize only the bundles that asked: for the others there is nothing to do.
A bundle that failed, or that the worker never knew, is still answered with its error.
"""

from apache_beam.portability.api import beam_fn_api_pb2
from apache_beam.runners.worker import sdk_worker

_finalize_bundle = sdk_worker.SdkWorker.finalize_bundle


def finalize_bundle(self, request, instruction_id):
    try:
        known_and_released = self.bundle_processor_cache.lookup(request.instruction_id) is None
    except RuntimeError:  # failed or unknown: Beam's own answer
        known_and_released = False
    if known_and_released:
        return beam_fn_api_pb2.InstructionResponse(
            instruction_id=instruction_id, finalize_bundle=beam_fn_api_pb2.FinalizeBundleResponse()
        )
    return _finalize_bundle(self, request, instruction_id)


if getattr(sdk_worker.SdkWorker.finalize_bundle, "__module__", "") != __name__:
    sdk_worker.SdkWorker.finalize_bundle = finalize_bundle  # type: ignore[method-assign]
