"""Names both sides of the worker protocol use (docs/worker-protocol.md): the service and the workers."""

# workerMessageCode codes the service acts on; any other code is kept as a DETAILED job message.
CODE_LOG = "BEAMPORT_JOB_LOG"  # parameters: importance (JOB_MESSAGE_*), text
CODE_STAGE = "BEAMPORT_STAGE_STATE"  # parameters: stage, state (JOB_STATE_RUNNING / DONE / FAILED)
CODE_HARNESS_STARTED = "HARNESS_STARTED"
# The engine runs the job now (Flink: on the cluster), so the job is RUNNING; parameters: engine, detail.
CODE_ENGINE_RUNNING = "BEAMPORT_ENGINE_RUNNING"  # parameters: detail (where), workers (SDK workers, if it decides)
CODE_STACKTRACES = "BEAMPORT_STACKTRACES"  # parameters: stacks, a list of Dataflow Stack objects
CODE_WORKERS_CHANGED = "BEAMPORT_WORKERS_CHANGED"  # parameters: stage, workers (now running), target, limit
CODE_STAGING_FAILED = "STAGING_FILES_DOWNLOAD_ERROR"  # parameters: error

# In a reportStatus answer's harnessData: the service wants this worker's thread stacks (debug.getWorkerStacktraces).
HARNESS_SEND_STACKS = "beamport.sendStacktraces"
# ... and the number of SDK workers the job should run on now (autoscaling).
HARNESS_TARGET_WORKERS = "beamport.targetWorkers"
# ... and that the job is draining: stop reading, fire every window, flush, then complete the work.
HARNESS_DRAIN = "beamport.drain"
# A worker reports a stage's backlog as remainingParallelism in units of this much input.
BACKLOG_UNIT_BYTES = 1 << 20
# A reported MetricUpdate whose name's context has this key measures the fused stage it names (a streaming run's
# watermark, lag, element counts): the service serves it in getExecutionDetails, not in the job's getMetrics.
STAGE_METRIC_CONTEXT = "execution_stage"
# The pipeline option naming the file whose presence means "drain": Beamport's streaming engines set it per job, and
# the job's sources (beamport.io.local_log) and its harnesses' launchers (engine/harness_process.py) look for it.
DRAIN_FILE_OPTION = "beamport_drain_file"
# The ids of the transforms staging splices in for Beam's native Pub/Sub transforms (engine/pubsub_staging.py) begin
# so: what they measure is the native transform's (translate/metrics.py), the step the user knows.
PUBSUB_SPLICE_NAMESPACE = "beamport_pubsub"
# A source's gauge beside Beam's backlog gauges (namespace "source"): how long its oldest element the engine has not
# yet committed has waited, in ms (Beamport's Pub/Sub read: the subscription's oldest unacknowledged message). Beam
# names no such gauge; it is the system lag of the stage that reads the source (translate/metrics.py).
SOURCE_LAG_GAUGE = "system_lag_ms"

# workerLifecycleEvent events the workers send (the Dataflow names).
CONTAINER_START = "CONTAINER_START"
STAGING_FILES_DOWNLOAD_START = "STAGING_FILES_DOWNLOAD_START"
STAGING_FILES_DOWNLOAD_FINISH = "STAGING_FILES_DOWNLOAD_FINISH"
SDK_INSTALL_START = "SDK_INSTALL_START"
SDK_INSTALL_FINISH = "SDK_INSTALL_FINISH"

# Labels of every worker message.
LABEL_JOB = "JOB_ID"
LABEL_WORKER = "WORKER_ID"
LABEL_WORK_ITEM = "WORK_ITEM_ID"
CONTAINER_TYPE = "beamport-worker"

WORK_ITEM_TYPE = "beamport.pipeline"  # a work item that is a job's whole pipeline
