"""Server settings, from the command line or BEAMPORT_* environment variables."""

from __future__ import annotations

import os
import shutil
from dataclasses import dataclass, field
from pathlib import Path

from beamport.sandbox import Limits, Sandbox

DEFAULT_MAX_REQUEST_BYTES = 32 * 1024 * 1024


@dataclass
class FlinkConfig:
    master: str  # host:port of Flink's REST API
    job_server: str  # host:port of Beam's Flink job server (Beam Job API)
    sdk_pool: str  # host:port of the Python SDK worker pool
    shared_dir: Path  # a directory Beamport's workers and the SDK workers share (drain signals)

    @classmethod
    def from_env(cls, environ=os.environ) -> FlinkConfig | None:
        """From BEAMPORT_FLINK_* (what scripts/flink-cluster writes); None unless all three are set."""
        values = [environ.get(f"BEAMPORT_FLINK_{k}", "") for k in ("MASTER", "JOB_SERVER", "SDK_POOL")]
        if not all(values):
            return None
        shared = Path(environ.get("BEAMPORT_FLINK_SHARED_DIR", "/tmp/beamport-flink"))
        return cls(*values, shared_dir=shared)

    def drain_file(self, job_id: str) -> Path:
        return self.shared_dir / "drain" / job_id


def find_prism(environ=os.environ) -> Path | None:
    """Beam's Prism binary: BEAMPORT_PRISM (`none`: no Prism), else `prism` on the PATH, else where
    `go install` puts it, else where scripts/prism-build puts it (BEAMPORT_PRISM_BIN_DIR, by default
    ~/.cache/beamport/bin)."""
    named = environ.get("BEAMPORT_PRISM")
    if named:
        return Path(named) if named != "none" and Path(named).is_file() else None
    found = shutil.which("prism")
    if found:
        return Path(found)
    home = Path(environ.get("HOME") or Path.home())
    gobin = Path(environ.get("GOBIN") or Path(environ.get("GOPATH") or home / "go") / "bin")
    built = Path(environ.get("BEAMPORT_PRISM_BIN_DIR") or home / ".cache" / "beamport" / "bin")
    return next((d / "prism" for d in (gobin, built) if (d / "prism").is_file()), None)


@dataclass
class Settings:
    host: str = "127.0.0.1"
    port: int = 8080
    data_dir: Path = field(default_factory=lambda: Path(os.environ.get("BEAMPORT_DATA_DIR", "beamport-data")))
    database_url: str | None = field(default_factory=lambda: os.environ.get("BEAMPORT_DATABASE_URL") or None)
    max_request_bytes: int = DEFAULT_MAX_REQUEST_BYTES
    log_level: str = "info"
    # Workers `serve` runs on this host (each runs one job's work at a time); 0: only remote workers.
    local_workers: int = field(default_factory=lambda: os.cpu_count() or 1)
    # How often workers report their health, unless the service asks otherwise (it adapts per worker).
    worker_report_interval_s: float = 5.0
    sdk_workers_per_job: int = 1  # for jobs whose options do not say (num_workers, direct_num_workers)
    # Where files named in requests may be read and written, besides the data dir and the start directory.
    allow_paths: list[Path] = field(default_factory=list)
    # The Flink cluster that runs streaming jobs (and takes their snapshots); None: no streaming engine.
    flink: FlinkConfig | None = field(default_factory=FlinkConfig.from_env)
    # Beam's Prism runner, for streaming jobs on this host when there is no Flink (no snapshots).
    prism: Path | None = field(default_factory=find_prism)
    # Every call authenticated and authorised (docs/security.md); off only on a loopback bind (--no-auth).
    auth: bool = True
    # Host names the server answers to besides IP addresses and loopback names (DNS rebinding guard).
    allowed_hosts: list[str] = field(default_factory=list)
    # Per-project quotas on jobs (0: none): active jobs, and jobs created per minute (docs/api.md).
    max_active_jobs: int = 25
    max_jobs_per_minute: int = 60
    # Seconds a client has to send a request's headers, and then its body (else 408, connection closed).
    request_header_timeout_s: float = 10.0
    request_body_timeout_s: float = 30.0
    # User code under bubblewrap: auto (where installed), required, off; and each job's resource limits.
    sandbox: str = "auto"
    job_limits: Limits = field(default_factory=Limits)

    def engines(self) -> tuple[set[str], str | None]:
        """The engines this server's workers can run jobs on, and the one streaming jobs run on by default."""
        available = {"embedded"} | ({"flink"} if self.flink else set()) | ({"prism"} if self.prism else set())
        streaming = "flink" if self.flink else "prism" if self.prism else None
        return available, streaming

    def engine_report(self) -> list[str]:
        """What each engine is here, or why it is not: for the server's start-up log."""
        flink = (
            f"flink: the cluster at {self.flink.master} (streaming jobs run here, with snapshots and updates)"
            if self.flink
            else "flink: no cluster (start one with scripts/flink-cluster and pass its endpoints:"
            " --flink-master, --flink-job-server, --flink-sdk-pool, or source its endpoints.env)"
        )
        if self.prism:
            prism = f"prism: {self.prism} (" + ("streaming jobs that name it" if self.flink else "streaming jobs") + ")"
        elif os.environ.get("BEAMPORT_PRISM") == "none":
            prism = "prism: off (--prism none)"
        else:
            prism = (
                "prism: not found (looked at BEAMPORT_PRISM, the PATH, Go's bin and ~/.cache/beamport/bin; "
                "scripts/prism-build builds it)"
            )
        lines = ["embedded: Beam's FnApiRunner on this host's workers (batch jobs)", flink, prism]
        if not (self.flink or self.prism):
            lines.append("streaming jobs wait in JOB_STATE_PENDING until the server restarts with Flink or Prism")
        return lines

    def allowed_roots(self) -> list[Path]:
        return [self.data_dir.resolve(), Path.cwd().resolve(), *(p.resolve() for p in self.allow_paths)]

    @property
    def admin_key_path(self) -> Path:
        return self.data_dir.resolve() / "admin-key.json"

    @property
    def local_worker_key_path(self) -> Path:
        return self.data_dir.resolve() / "auth" / "local-workers-key.json"

    def private_paths(self) -> list[Path]:
        """Files under the data dir that no job, template or table may name: keys and the database."""
        data = self.data_dir.resolve()
        return [
            self.admin_key_path,
            self.local_worker_key_path.parent,
            data / "pipelines",
            data / "workers",
            *(data / f"beamport.db{suffix}" for suffix in ("", "-wal", "-shm", "-journal")),
        ]

    def user_code_sandbox(self) -> Sandbox:
        """The sandbox this server's own user-code processes (flex launchers) run in."""
        return Sandbox(
            self.sandbox,
            writable=self.allowed_roots(),
            hidden=self.private_paths(),
            limits=self.job_limits,
            shared=[self.flink.shared_dir] if self.flink else [],
        )

    @property
    def endpoint(self) -> str:
        """How processes on this host reach the server."""
        host = "127.0.0.1" if self.host in ("0.0.0.0", "::", "") else self.host
        return f"http://{host}:{self.port}"
