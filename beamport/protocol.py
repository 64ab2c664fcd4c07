"""Names both sides of the worker protocol use (docs/worker-protocol.md): the service and the workers."""

# workerMessageCode codes the service acts on; any other code is kept as a DETAILED job message.
CODE_LOG = "BEAMPORT_JOB_LOG"  # parameters: importance (JOB_MESSAGE_*), text
CODE_STAGE = "BEAMPORT_STAGE_STATE"  # parameters: stage, state (JOB_STATE_RUNNING / DONE / FAILED)
CODE_HARNESS_STARTED = "HARNESS_STARTED"

WORK_ITEM_TYPE = "beamport.pipeline"  # a work item that is a job's whole pipeline
