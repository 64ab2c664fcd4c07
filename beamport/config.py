"""Settings of a server and of its workers, built once by the CLI and then passed explicitly.

Each value comes from the command line if given there, else from its BEAMPORT_* environment variable (the field's
name in capitals: BEAMPORT_DATA_DIR, BEAMPORT_DATABASE_URL, BEAMPORT_FLINK_MASTER, BEAMPORT_PRISM...), else from
the default here. Nothing reads the environment after that: the server hands its settings to what it builds, and
the workers it starts get theirs as command-line flags (EngineSettings.worker_flags).
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Mapping
from pathlib import Path
from typing import Annotated

from pydantic import BaseModel, ConfigDict, Field, PrivateAttr, field_validator, model_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

from beamport import emulators as emulator_names
from beamport.engine import registry
from beamport.sandbox import MODES, Limits, Sandbox, parse_size

DEFAULT_MAX_REQUEST_BYTES = 32 * 1024 * 1024
PRISM_OFF = "none"  # --prism none / BEAMPORT_PRISM=none: no Prism, even where one is installed
# The Flink engine's endpoints, each with its flag (and, upper-cased with BEAMPORT_FLINK_, its variable).
FLINK_ENDPOINTS = {"master": "--flink-master", "job_server": "--flink-job-server", "sdk_pool": "--flink-sdk-pool"}


class FlinkConfig(BaseModel):
    # scripts/flink-cluster's own BEAMPORT_FLINK_* variables (LOG_LEVEL, CACHE) land here too: not ours.
    model_config = ConfigDict(frozen=True, extra="ignore")

    master: str  # host:port of Flink's REST API
    job_server: str  # host:port of Beam's Flink job server (Beam Job API)
    sdk_pool: str  # host:port of the Python SDK worker pool
    shared_dir: Path = Path("/tmp/beamport-flink")  # shared by Beamport's workers and the SDK workers (drain signals)
    # The cluster's JobManager and TaskManagers run from the job server's Beam jars and have Beamport's
    # NothingToStage (scripts/flink-cluster's do): jobs go without the job server's 150 MB of jars.
    beam_on_cluster: bool = False
    # scripts/flink-cluster's directory: hidden from user code, as its pool runs programs there outside the sandbox
    # (its endpoints.env names it). None: not known (a cluster of the operator's own).
    cluster_dir: Path | None = None

    def drain_file(self, job_id: str) -> Path:
        return self.shared_dir / "drain" / job_id

    def metric_keys_file(self, job_id: str) -> Path:
        """Where the job's SDK workers note the user metrics its steps report (beamport.engine.metric_keys)."""
        return self.shared_dir / "metric-keys" / job_id

    def flags(self) -> list[str]:
        """The same cluster as `beamport worker` flags."""
        return [
            *(arg for key, flag in FLINK_ENDPOINTS.items() for arg in (flag, getattr(self, key))),
            *("--flink-shared-dir", str(self.shared_dir)),
            *(["--flink-beam-on-cluster"] if self.beam_on_cluster else []),
            *(["--flink-cluster-dir", str(self.cluster_dir)] if self.cluster_dir else []),
        ]


def find_prism(environ: Mapping[str, str], bin_dir: Path | None = None) -> Path | None:
    """Beam's Prism binary where nobody named one: where scripts/prism-build puts it (`bin_dir`, by default
    ~/.cache/beamport/bin: first, as the Prism engine runs only its build, which listens on loopback), else
    `prism` on the PATH, else where `go install` puts it."""
    home = Path(environ.get("HOME") or Path.home())
    built = (bin_dir or home / ".cache" / "beamport" / "bin") / "prism"
    if built.is_file():
        return built
    found = shutil.which("prism", path=environ.get("PATH", os.defpath))
    if found:
        return Path(found)
    gobin = Path(environ.get("GOBIN") or Path(environ.get("GOPATH") or home / "go") / "bin")
    return gobin / "prism" if (gobin / "prism").is_file() else None


class EngineSettings(BaseSettings):
    """What running work needs, on every worker: the streaming engines and the sandbox of user code. `beamport
    serve` builds these as part of its Settings, `beamport worker` on another host on their own."""

    model_config = SettingsConfigDict(
        env_prefix="BEAMPORT_",
        # BEAMPORT_FLINK_MASTER is flink.master (one split: BEAMPORT_FLINK_JOB_SERVER is flink.job_server).
        env_nested_delimiter="_",
        env_nested_max_split=1,
        env_ignore_empty=True,
        extra="forbid",
    )

    # The Flink cluster that runs streaming jobs (and takes their snapshots); None: no Flink.
    flink: FlinkConfig | None = None
    # Beam's Prism runner, for streaming jobs when there is no Flink (no snapshots): a path, `none`, or unset to
    # look for it (find_prism). After validation: the binary, or None.
    prism: Path | None = None
    prism_bin_dir: Path | None = None  # where scripts/prism-build puts Prism (default ~/.cache/beamport/bin)
    # User code under bubblewrap: auto (where installed), required, off; and each job's resource limits.
    sandbox: str = "auto"
    job_limits: Limits = Field(default_factory=Limits)

    _prism_off: bool = PrivateAttr(False)

    @field_validator("flink", mode="before")
    @classmethod
    def _all_three_endpoints_or_none(cls, value):
        if not isinstance(value, Mapping):
            return value
        missing = [key for key in FLINK_ENDPOINTS if not value.get(key)]
        if len(missing) == len(FLINK_ENDPOINTS):
            return None  # BEAMPORT_FLINK_SHARED_DIR (or a flink-cluster variable) alone is no cluster
        if missing:
            names = ", ".join(f"{FLINK_ENDPOINTS[key]} (BEAMPORT_FLINK_{key.upper()})" for key in missing)
            raise ValueError(f"the Flink engine needs all three endpoints: missing {names}")
        return value

    @field_validator("sandbox")
    @classmethod
    def _known_sandbox_mode(cls, mode: str) -> str:
        if mode not in MODES:
            raise ValueError(f"--sandbox must be one of {', '.join(MODES)}, not {mode!r}")
        return mode

    @field_validator("job_limits", mode="before")
    @classmethod
    def _memory_as_size(cls, value):
        if isinstance(value, Mapping) and isinstance(value.get("memory_bytes"), str):  # --job-memory 4G
            try:
                return {**value, "memory_bytes": parse_size(value["memory_bytes"])}
            except ValueError:
                raise ValueError(f"--job-memory {value['memory_bytes']!r} is not a size, such as 512M or 4G") from None
        return value

    @model_validator(mode="after")
    def _resolve_prism(self):
        # Looking happens here, once: the server and the workers it starts use the binary found now.
        if self.prism == Path(PRISM_OFF):
            self.prism, self._prism_off = None, True
        elif self.prism is None:
            self.prism = find_prism(os.environ, self.prism_bin_dir)
        elif self.prism.is_file():
            self.prism = self.prism.resolve()  # workers and executors start elsewhere
        else:
            raise ValueError(f"--prism (BEAMPORT_PRISM) names {self.prism}, which is not a file ('none': no Prism)")
        return self

    @property
    def prism_off(self) -> bool:
        """Prism turned off (`none`), rather than not found."""
        return self._prism_off

    def worker_flags(self) -> list[str]:
        """These settings as `beamport worker` flags: how the server's local workers get them."""
        return [
            *("--sandbox", self.sandbox),
            *self.job_limits.flags(),
            *(self.flink.flags() if self.flink else []),
            *("--prism", str(self.prism) if self.prism else PRISM_OFF),
        ]

    def for_executor(self) -> dict:
        """The engines as a worker hands them to its executors, in each work item's assignment (JSON)."""
        return registry.host_configs(self)

    def sandbox_with(self, writable: list[Path], hidden: list[Path]) -> Sandbox:
        """The sandbox of user code, writing to `writable` (and Flink's shared directory), not seeing `hidden` (nor
        the Flink cluster's directory)."""
        cluster = [self.flink.cluster_dir] if self.flink and self.flink.cluster_dir else []
        return Sandbox(
            self.sandbox,
            writable=writable,
            hidden=[*hidden, *cluster],
            limits=self.job_limits,
            shared=[self.flink.shared_dir] if self.flink else [],
        )


class Settings(EngineSettings):
    """`beamport serve`'s settings."""

    host: str = "127.0.0.1"
    port: int = 8080
    # Dataflow's gRPC services (v1beta3) on this port of the same host, beside REST (docs/api.md); 0: none.
    grpc_port: int = Field(default=0, ge=0, le=65535)
    data_dir: Path = Path("beamport-data")
    database_url: str | None = None  # postgresql://...; None: SQLite in the data dir
    max_request_bytes: int = DEFAULT_MAX_REQUEST_BYTES
    log_level: str = "info"
    # Workers `serve` runs on this host (each runs one job's work at a time); 0: only remote workers.
    local_workers: int = Field(default_factory=lambda: os.cpu_count() or 1)
    # How often workers report their health, unless the service asks otherwise (it adapts per worker).
    worker_report_interval_s: float = 5.0
    sdk_workers_per_job: int = 1  # for jobs whose options do not say (num_workers, direct_num_workers)
    # Where files named in requests may be read and written, besides the data dir and the start directory.
    allow_paths: list[Path] = Field(default_factory=list)
    # Every call authenticated and authorised (docs/security.md); off only on a loopback bind (--no-auth).
    auth: bool = True
    # Host names the server answers to besides IP addresses and loopback names (DNS rebinding guard).
    allowed_hosts: list[str] = Field(default_factory=list)
    # Per-project quotas on jobs (0: none): active jobs, and jobs created per minute (docs/api.md).
    max_active_jobs: int = 25
    max_jobs_per_minute: int = 60
    # Seconds a client has to send a request's headers, and then its body (else 408, connection closed).
    request_header_timeout_s: float = 10.0
    request_body_timeout_s: float = 30.0
    # Google service emulators serve runs beside the API (docs/emulators.md): `gcs`, `pubsub`, `metadata`; given as
    # `--emulators gcs,metadata` (BEAMPORT_EMULATORS=gcs,metadata: a list, not JSON).
    emulators: Annotated[list[str], NoDecode] = Field(default_factory=list)
    emulator_bin_dir: Path | None = None  # where emulators are built and cached (default ~/.cache/beamport/bin)
    # The project the metadata server names, on which its token's account may develop jobs.
    metadata_project: str = "beamport"

    @field_validator("emulators", mode="before")
    @classmethod
    def _known_emulators(cls, value):
        return emulator_names.parse_names(value)

    @model_validator(mode="after")
    def _auth_off_only_on_loopback(self):
        from beamport.http.guard import is_loopback

        if not self.auth and not is_loopback(self.host):
            raise ValueError(
                f"--no-auth is refused on --host {self.host}: without authentication anyone who reaches the port "
                "runs code on this machine. Bind to 127.0.0.1, or keep authentication on (docs/security.md)."
            )
        return self

    @model_validator(mode="after")
    def _grpc_port_of_its_own(self):
        if self.grpc_port and self.grpc_port == self.port:
            raise ValueError(f"--grpc-port {self.grpc_port} is --port's too: gRPC needs a port of its own")
        return self

    def engines(self) -> tuple[set[str], str | None]:
        """The engines this server's workers can run jobs on, and the one streaming jobs run on by default."""
        streaming = registry.default_streaming(self)
        return {spec.name for spec in registry.available(self)}, streaming.name if streaming else None

    def engine_report(self) -> list[str]:
        """What each engine is here, or why it is not: for the server's start-up log."""
        flink = (
            f"flink: the cluster at {self.flink.master} (streaming jobs run here, with snapshots and updates)"
            if self.flink
            else "flink: no cluster (start one with scripts/flink-cluster and pass its endpoints:"
            " --flink-master, --flink-job-server, --flink-sdk-pool, or source its endpoints.env)"
        )
        if self.prism:
            streaming = "streaming jobs that name it" if self.flink else "streaming jobs"  # of every SDK
            prism = f"prism: {self.prism} ({streaming}; batch jobs that name it)"
        elif self.prism_off:
            prism = "prism: off (--prism none)"
        else:
            prism = (
                "prism: not found (looked at BEAMPORT_PRISM, ~/.cache/beamport/bin, the PATH and Go's bin; "
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
            data / "emulators",  # the emulators' own state: jobs reach it through the emulators' APIs
            *(data / f"beamport.db{suffix}" for suffix in ("", "-wal", "-shm", "-journal")),
        ]

    def user_code_sandbox(self) -> Sandbox:
        """The sandbox this server's own user-code processes (flex launchers) run in."""
        return self.sandbox_with(self.allowed_roots(), self.private_paths())

    @property
    def endpoint(self) -> str:
        """How processes on this host reach the server."""
        host = "127.0.0.1" if self.host in ("0.0.0.0", "::", "") else self.host
        return f"http://{host}:{self.port}"
