"""The worker harness (a process that leases a job's work through the API and runs it on an engine),
and the local pool of such processes that `beamport serve` keeps."""
