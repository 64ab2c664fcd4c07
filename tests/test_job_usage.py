"""What a job used, as Dataflow reports it (jobs.getMetrics' TotalVcpuTime in vCPU-seconds and TotalMemoryUsage in
MB-seconds), added up from its workers' CPU samples and health reports, and kept with the job when its worker
moves on and when the server restarts. The worker is played by hand, so every number is known."""

from __future__ import annotations

from conftest import Api

from beamport import wire

START_US = wire.parse_timestamp_us("2026-01-01T00:00:00Z", "t")
MB = 2**20


def at(seconds: float) -> str:
    return wire.format_timestamp_us(START_US + int(seconds * 1e6))


class Worker:
    def __init__(self, api: Api, worker_id: str):
        self.api, self.worker_id = api, worker_id

    def report(self, job_id: str, seconds: float, total_ms: int, rss_mb: int | None = 512, interval: str = "5s"):
        """A batch as Beamport's harness sends it: a health report (its processes' memory) and a CPU sample."""
        labels = {"JOB_ID": job_id, "WORKER_ID": self.worker_id}
        health = {"vmIsHealthy": True, "reportInterval": interval}
        if rss_mb is not None:
            health["pods"] = [
                {"name": "harness", "rssBytes": 100 * MB},
                {"name": "python", "rssBytes": (rss_mb - 100) * MB},
            ]
        sample = {"timestamp": at(seconds), "totalMs": str(total_ms), "rate": 0.5}
        path = f"/v1b3/projects/{self.api.project}/locations/us-central1/WorkerMessages"
        answer = self.api.client.post(
            path,
            json={
                "workerMessages": [
                    {"labels": labels, "time": at(seconds), "workerHealthReport": health},
                    {"labels": labels, "workerMetrics": {"cpuTime": [sample]}},
                ]
            },
        )
        assert answer.status_code == 200, answer.text


def usage(api: Api, job_id: str) -> dict[str, float]:
    """The job's resource metrics (committed), checking that each has its tentative twin of the same value."""
    metrics = api.client.get(f"{api.jobs_path}/{job_id}/metrics").json().get("metrics", [])
    found: dict[str, dict[bool, float]] = {}
    for m in metrics:
        name = m["name"]
        if name["origin"] == "dataflow/v1b3" and name["name"] in ("TotalVcpuTime", "TotalMemoryUsage"):
            assert set(name.get("context", {})) <= {"tentative"} and "step" not in name
            assert m["kind"] == "Sum" and m["cumulative"] is True and m["updateTime"]
            found.setdefault(name["name"], {})[name.get("context", {}).get("tentative") == "true"] = m["scalar"]
    for values in found.values():
        assert values[False] == values[True]
    return {name: values[False] for name, values in found.items()}


def test_a_job_keeps_what_its_workers_used(backend_server, project):
    srv = backend_server
    api = Api(srv.url, project)
    first, second = api.create("first")["id"], api.create("second")["id"]
    worker, other = Worker(api, f"w-{project}"), Worker(api, f"v-{project}")

    worker.report(first, 0, total_ms=1000)  # the first sample of the job: nothing to compare with yet
    assert usage(api, first) == {}
    worker.report(first, 5, total_ms=3500)  # 2.5 CPU-seconds in 5 s, with 512 MB
    assert usage(api, first) == {"TotalVcpuTime": 2.5, "TotalMemoryUsage": 512 * 5}
    worker.report(first, 5, total_ms=3500)  # a retried request: counted once
    other.report(first, 2, total_ms=50_000)  # another worker of the job adds its own
    other.report(first, 6, total_ms=51_000, rss_mb=256)
    assert usage(api, first) == {"TotalVcpuTime": 3.5, "TotalMemoryUsage": 512 * 5 + 256 * 4}

    # The worker moves on to the second job: the first keeps what it used, the second starts from its own sample.
    worker.report(second, 6, total_ms=3600)
    worker.report(second, 10, total_ms=5600, rss_mb=1024)
    assert usage(api, first) == {"TotalVcpuTime": 3.5, "TotalMemoryUsage": 512 * 5 + 256 * 4}
    assert usage(api, second) == {"TotalVcpuTime": 2.0, "TotalMemoryUsage": 1024 * 4}
    # Silent for longer than three report intervals (lost, or idle): that time is not the job's.
    worker.report(second, 40, total_ms=9000)
    assert usage(api, second) == {"TotalVcpuTime": 2.0, "TotalMemoryUsage": 1024 * 4}

    # A restart keeps the totals; each worker's first interval after it is not counted (its last sample is gone).
    srv.stop()
    srv.start()
    assert usage(api, first) == {"TotalVcpuTime": 3.5, "TotalMemoryUsage": 512 * 5 + 256 * 4}
    worker.report(second, 45, total_ms=9500)
    worker.report(second, 50, total_ms=10_000, rss_mb=None)  # no memory reported: the last report's stands
    assert usage(api, second) == {"TotalVcpuTime": 2.5, "TotalMemoryUsage": 1024 * 4 + 512 * 5}
