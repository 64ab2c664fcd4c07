"""The Google service emulators `beamport serve --emulators` runs beside the API (docs/emulators.md).

An emulator is a real, well-kept program built once from its registry (cached by version under
~/.cache/beamport/bin), started by serve on a loopback port with its state under DATA_DIR/emulators/NAME,
started again if it dies, and stopped with serve (it also dies with serve's supervising thread: setpriv's
parent-death signal, so a killed server leaves no emulator behind). serve exports each emulator's variable
(STORAGE_EMULATOR_HOST...) to itself, its workers and the jobs' SDK harnesses (the sandbox keeps it), and writes
them to DATA_DIR/emulators.env for clients (`beamport emulators env`). A variable already set when serve starts
is the operator's own endpoint: it wins, and that emulator is not started.

GCS is fake-gcs-server, with one patch (below): it serves Beam's GcsIO for Python (JSON API, the batches of
copies and deletes of WriteToText's rename) and the resumable uploads of Go's storage client (Go's Dataflow
runner stages its worker binary so). Pub/Sub is Google's own fake, pstest (cloud.google.com/go/pubsub/v2/pstest),
as a server: a small main in beamport/emulator_sources/pubsub (go.mod and go.sum pin its dependencies), built
the same way, that serves gRPC and Pub/Sub's REST API (Beam Java's client) on one port. It keeps topics,
subscriptions and messages in memory: they are gone when it restarts.

BigQuery is bqemulator (PyPI; BigQuery's REST API over DuckDB), a Python program: installed once into a virtualenv
of its own (it needs duckdb 1.x, Beamport pins 2.x) from beamport/emulator_sources/bigquery/requirements.txt,
every package pinned, cached by the pins' hash under the same directory, with one patch (below: its DuckDB
touches no file outside its data); its tables in a DuckDB file under DATA_DIR/emulators/bigquery.
"""

from __future__ import annotations

import dataclasses
import fcntl
import functools
import hashlib
import json
import logging
import os
import shutil
import signal
import socket
import stat
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterable, Mapping, MutableMapping
from dataclasses import dataclass
from pathlib import Path

import httpx

import beamport
from beamport import google_gateway
from beamport.polling import wait_until
from beamport.processes import free_loopback_port, listens_on

log = logging.getLogger("beamport.emulators")

ENV_FILE = "emulators.env"
# Beamport's own GCE metadata server (beamport/http/metadata.py), named among the emulators since clients find it
# the same way: by variables in emulators.env.
METADATA = "metadata"
# Emulators planned: refused, saying so, until they exist.
PLANNED: tuple[str, ...] = ()
START_TIMEOUT_S = 30.0
STOP_TIMEOUT_S = 10.0
# An emulator that dies this soon after it started is broken, not unlucky: serve stops restarting it.
RESTARTS = 5
PORT_TRIES = 3  # ports an emulator is tried on before it is said not to start


@dataclass(frozen=True)
class Patch:
    """One exact replacement in a Go module's source before it is built (the build fails if `old` is not there:
    a new version is checked again, not patched blindly)."""

    file: str
    old: str
    new: str


@dataclass(frozen=True, kw_only=True)
class Emulator:
    """What serve needs of any emulator: how it is named, found by clients, started and seen to answer."""

    name: str  # as --emulators names it
    variable: str  # the variable Google's clients find it by
    version: str  # pinned: what Beamport was tested with
    health_path: str = ""
    # The variable naming a second, gRPC port of the same program (host:port), when it serves one that clients
    # reach by another endpoint than `variable`'s: `grpc_port` in command.
    grpc_variable: str = ""
    patches: tuple[Patch, ...] = ()
    # Names the patches (or Beamport's source) in the cached install's name: a new one, a new install.
    patch_level: str = ""

    @property
    def binary(self) -> str:
        """The cached install's name (a file or a directory under the bin dir): a new version, a new install."""
        raise NotImplementedError

    def command(self, binary: Path, port: int, state_dir: Path, grpc_port: int | None = None) -> list[str]:
        raise NotImplementedError

    def environment(self, binary: Path, state_dir: Path) -> dict[str, str] | None:
        """The emulator's environment (None: serve's own)."""
        return None

    def value(self, port: int) -> str:
        """The variable's value for an emulator on this port."""
        return f"http://127.0.0.1:{port}"

    def healthy(self, port: int) -> bool:
        """Whether the emulator on this port answers. Asked every 50 ms while it starts: a refused connection is
        found by a bare connect, and the one HTTP client answers the rest (an httpx.get makes a client, whose TLS
        context costs tens of milliseconds of CPU each time)."""
        if not _listening(port):
            return False
        try:
            return _health_client().get(self.value(port) + self.health_path).status_code == 200
        except httpx.TransportError:
            return False


def _listening(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=2):
            return True
    except OSError:
        return False


@functools.cache
def _health_client() -> httpx.Client:
    return httpx.Client(timeout=2)


@dataclass(frozen=True)
class Addition:
    """Files of Beamport's added to a package of a module that `source` builds with: Go lets no other package
    reach a package's unexported state. The module (at the version go.mod requires) is copied beside the source
    with the files in its `package` directory, and go.mod's `replace` builds with that copy."""

    module: str  # cloud.google.com/go/pubsub/v2
    package: str  # its directory in the module: pstest
    files: Path  # the directory under `source` whose .go files are added


@dataclass(frozen=True, kw_only=True)
class GoEmulator(Emulator):
    """An emulator built from its Go module (the module proxy's MODULE@VERSION, patched where `patches` say), or
    from a main package of Beamport's own (`source`, with its go.mod and go.sum) that uses that module (with
    `additions` to the modules it uses)."""

    module: str
    source: Path | None = None
    additions: tuple[Addition, ...] = ()

    @property
    def binary(self) -> str:
        return "-".join(filter(None, (self.module.rsplit("/", 1)[-1], self.version, self.patch_level)))


@dataclass(frozen=True, kw_only=True)
class PythonEmulator(Emulator):
    """An emulator that is a Python program: installed into a virtualenv of its own (its dependencies may clash
    with Beamport's) from a requirements file pinning every package, once per set of pins and Python version;
    `patches` name files under the venv's site-packages."""

    requirements: Path
    executable: str  # the program in the venv's bin/

    @property
    def binary(self) -> str:
        pins = f"{sys.version_info.major}.{sys.version_info.minor}\n{self.requirements.read_text()}"
        pinned = hashlib.sha256(pins.encode()).hexdigest()[:12]
        return "-".join(filter(None, (self.executable, self.version, self.patch_level, pinned)))

    def prepare(self, venv: Path) -> None:
        """What the installed venv needs before its first start (run once, at install)."""


class FakeGcsServer(GoEmulator):
    def command(self, binary: Path, port: int, state_dir: Path, grpc_port: int | None = None) -> list[str]:
        url = self.value(port)
        return [
            str(binary),
            *("-scheme", "http", "-host", "127.0.0.1", "-port", str(port)),
            # The URLs it answers with (resumable uploads' Location, media links) name this address.
            *("-public-host", f"127.0.0.1:{port}", "-external-url", url),
            *("-backend", "filesystem", "-filesystem-root", str(state_dir)),
            *("-log-level", "warn"),
        ]


# google-cloud-storage (Python; Beam's GcsIO and WriteToText's rename: batches of copies and deletes) sends batch
# parts without a Content-ID, which GCS accepts and fake-gcs-server skipped, answering an empty batch that the
# client refuses ("not multi-part"). Each part is answered, in order, under an id of its own.
_ANSWER_PARTS_WITHOUT_CONTENT_ID = Patch(
    "fakestorage/server.go",
    old="""		if contentID == "" {
			// missing content ID, skip
			continue
		}""",
    new="""		if contentID == "" {
			// Beamport: google-cloud-storage sends none; GCS answers such parts, in order.
			contentID = fmt.Sprintf("<part-%p>", part)
		}""",
)
# An object whose file is in the bucket's directory but has no metadata (written there by another program: the
# bigquery emulator's extract jobs, into the gcs emulator's root) failed every listing of its bucket. It is an
# object like any other, its attributes what the file says (size, times; no content type of its own, no hashes).
_OBJECTS_WITHOUT_METADATA = Patch(
    "internal/backend/fs.go",
    old="""	encoded, err := s.mh.read(path)
	if err != nil {
		return ObjectAttrs{}, err
	}

	var attrs ObjectAttrs
	if err = json.Unmarshal(encoded, &attrs); err != nil {""",
    new="""	encoded, err := s.mh.read(path)
	if err != nil {
		// Beamport: a file written by another program has no metadata; it is an object all the same.
		info, statErr := os.Stat(path)
		if statErr != nil || info.IsDir() {
			return ObjectAttrs{}, err
		}
		when := info.ModTime().Format(timestampFormat)
		attrs := `{"Created":%q,"Updated":%q,"ContentType":"application/octet-stream"}`
		encoded = []byte(fmt.Sprintf(attrs, when, when))
	}

	var attrs ObjectAttrs
	if err = json.Unmarshal(encoded, &attrs); err != nil {""",
)
GCS = FakeGcsServer(
    name="gcs",
    variable="STORAGE_EMULATOR_HOST",
    module="github.com/fsouza/fake-gcs-server",
    version="v1.56.1",
    health_path="/_internal/healthcheck",
    patches=(_ANSWER_PARTS_WITHOUT_CONTENT_ID, _OBJECTS_WITHOUT_METADATA),
    patch_level="beamport3",  # beamport2, 3: objects without metadata
)


class PubSubFake(GoEmulator):
    """pstest as a server (beamport/emulator_sources/pubsub/main.go): gRPC, and Pub/Sub's REST API on the same port
    (for Beam Java's PubsubIO, whose client speaks REST; rest.go), as Google's own emulator serves both; its state
    in memory."""

    def command(self, binary: Path, port: int, state_dir: Path, grpc_port: int | None = None) -> list[str]:
        return [str(binary), "-host", "127.0.0.1", "-port", str(port)]

    def value(self, port: int) -> str:
        return f"127.0.0.1:{port}"  # PUBSUB_EMULATOR_HOST is host:port (no scheme; REST clients add http://)

    def healthy(self, port: int) -> bool:
        return _listening(port)  # pstest registers no health service; it serves as soon as it listens


_PUBSUB_SOURCE = Path(__file__).parent / "emulator_sources" / "pubsub"
PUBSUB = PubSubFake(
    name="pubsub",
    variable="PUBSUB_EMULATOR_HOST",
    module="cloud.google.com/go/pubsub/v2/pstest",
    version="v2.9.0",
    source=_PUBSUB_SOURCE,
    # A subscription's backlog (GServer.Backlog), served as `GET .../subscriptions/S:backlog` (rest.go).
    additions=(Addition("cloud.google.com/go/pubsub/v2", "pstest", _PUBSUB_SOURCE / "pstest"),),
    # beamport2: REST beside gRPC; beamport3: cmux routes the two; beamport4: subscriptions' backlogs; beamport5: and
    # their oldest unacknowledged message's age
    patch_level="beamport5",
)


# bqemulator hands a query's SQL, translated, to DuckDB, whose functions read and write any file the process may
# (`SELECT * FROM read_text('/DATA_DIR/admin-key.json')`, `COPY ... TO '/any/path'`), and resolves load and extract
# URIs that are plain paths or file:// as they are: whoever reaches its port (any process on this host) could
# read Beamport's keys and write as its user. Once it has loaded its extensions, its database is confined to the
# directories in BEAMPORT_BQEMU_ALLOWED_DIRS (its own data, the gcs emulator's objects), and the configuration is
# locked so no query can undo that.
_CONFINE_DUCKDB = Patch(
    "bqemulator/storage/engine.py",
    old="""        self._register_builtin_udfs()
        self._started = True
""",
    new="""        self._register_builtin_udfs()
        # Beamport: no file outside these directories, for good (beamport/emulators.py, _CONFINE_DUCKDB).
        import os

        allowed = [d for d in os.environ.get("BEAMPORT_BQEMU_ALLOWED_DIRS", "").split(os.pathsep) if d]
        listed = ", ".join("'" + d.rstrip("/").replace("'", "''") + "/'" for d in allowed)
        self._connection.execute(f"SET allowed_directories = [{listed}]")
        self._connection.execute("SET enable_external_access = false")
        self._connection.execute("SET lock_configuration = true")
        self._started = True
""",
)


# bqemulator shares one DuckDB connection between the event loop's thread (insertAll, an async route) and the
# threads that run its sync routes (tabledata.list among them), and a DuckDB connection is not thread-safe: an
# insertAll and a tabledata.list at once (a streaming pipeline's inserts while a client reads the table) deadlocked
# the emulator, every thread waiting, and every client after them (seen in CI; reproduced by three threads
# inserting while three list). These patches give the engine a lock that every statement on its connection holds,
# an insert's register-insert-unregister too, so one thread at a time uses it.
_ENGINE = "bqemulator/storage/engine.py"
_TABLEDATA = "bqemulator/api/routes/tabledata.py"
_ONE_THREAD_AT_A_TIME = (
    Patch(
        _ENGINE,
        old="""        self._write_lock = asyncio.Lock()
""",
        new="""        self._write_lock = asyncio.Lock()
        # Beamport: held by every use of the connection (beamport/emulators.py, _ONE_THREAD_AT_A_TIME).
        import threading

        self._beamport_lock = threading.RLock()
""",
    ),
    Patch(
        _ENGINE,
        old="""        conn = self.connection
        return conn.execute(sql, parameters) if parameters is not None else conn.execute(sql)
""",
        new="""        with self._beamport_lock:  # Beamport: one thread at a time
            conn = self.connection
            return conn.execute(sql, parameters) if parameters is not None else conn.execute(sql)
""",
    ),
    Patch(
        _ENGINE,
        old="""    def fetch_arrow(self, sql: str, parameters: list[Any] | None = None) -> pa.Table:
""",
        new="""    def fetch_arrow(self, sql: str, parameters: list[Any] | None = None) -> pa.Table:
        \"\"\"Beamport: the statement and its fetch under the engine's lock, one thread at a time.\"\"\"
        with self._beamport_lock:
            return self._beamport_fetch_arrow(sql, parameters)

    def _beamport_fetch_arrow(self, sql: str, parameters: list[Any] | None = None) -> pa.Table:
""",
    ),
    Patch(
        _TABLEDATA,
        old="""    async with ctx.engine.write_lock():
        ctx.engine.connection.register(reg_name, arrow_table)
        try:
            ctx.engine.execute(
                f"INSERT INTO {target_ref} SELECT {select_projection} FROM {reg_name}",
            )
        finally:
            ctx.engine.connection.unregister(reg_name)
""",
        new="""    async with ctx.engine.write_lock():
        with ctx.engine._beamport_lock:  # Beamport: one thread at a time (_ONE_THREAD_AT_A_TIME)
            ctx.engine.connection.register(reg_name, arrow_table)
            try:
                ctx.engine.execute(
                    f"INSERT INTO {target_ref} SELECT {select_projection} FROM {reg_name}",
                )
            finally:
                ctx.engine.connection.unregister(reg_name)
""",
    ),
)


# BigQuery drops a streamed row whose insertId it has seen in the table lately (best effort, a minute or more), so a
# client's retry of a partly applied insertAll (Beam's, a restarted Flink task's) adds no row twice; bqemulator
# keeps every row. These patches make it remember the ids of the rows it inserted, per table, for
# INSERT_ID_MEMORY_S (in memory: a restarted emulator forgets them, as BigQuery's memory is best effort), and drop
# rows whose id it remembers or that repeat an earlier row's id in the same request. Ids are remembered only once
# their rows are in; error indexes stay the request's (Beam retries the rows they name).
INSERT_ID_MEMORY_S = 600
_DEDUP_INSERT_IDS = (
    Patch(
        _TABLEDATA,
        old="""router = APIRouter(prefix="/bigquery/v2", tags=["tabledata"])
""",
        new=f"""router = APIRouter(prefix="/bigquery/v2", tags=["tabledata"])

# Beamport: (project, dataset, table) -> insertId -> when its row went in (beamport/emulators.py, _DEDUP_INSERT_IDS).
_beamport_insert_ids: dict[tuple[str, str, str], dict[str, float]] = {{}}
_BEAMPORT_INSERT_ID_MEMORY_S = {INSERT_ID_MEMORY_S}


def _beamport_new_positions(table: tuple[str, str, str], rows: list[dict[str, Any]]) -> list[int]:
    \"\"\"The positions of the rows whose insertId (if any) neither went in lately nor came earlier in `rows`.\"\"\"
    import time

    seen = _beamport_insert_ids.setdefault(table, {{}})
    horizon = time.monotonic() - _BEAMPORT_INSERT_ID_MEMORY_S
    for insert_id in [i for i, at in seen.items() if at < horizon]:
        del seen[insert_id]
    positions, ids = [], set()
    for position, row in enumerate(rows):
        insert_id = row.get("insertId") if isinstance(row, dict) else None
        if insert_id and (insert_id in seen or insert_id in ids):
            continue
        if insert_id:
            ids.add(insert_id)
        positions.append(position)
    return positions


def _beamport_remember(table: tuple[str, str, str], rows: list[dict[str, Any]]) -> None:
    import time

    now = time.monotonic()
    seen = _beamport_insert_ids.setdefault(table, {{}})
    for row in rows:
        if row.get("insertId"):
            seen[row["insertId"]] = now
""",
    ),
    Patch(
        _TABLEDATA,
        old="""    body = await request.json()
    rows = body.get("rows", [])
    skip_invalid_rows = bool(body.get("skipInvalidRows", False))
""",
        new="""    body = await request.json()
    rows = body.get("rows", [])
    skip_invalid_rows = bool(body.get("skipInvalidRows", False))
    # Beamport: rows whose insertId went in lately are dropped (beamport/emulators.py, _DEDUP_INSERT_IDS).
    table_key = (project_id, dataset_id, table_id)
    positions = _beamport_new_positions(table_key, rows)
    rows = [rows[position] for position in positions]
""",
    ),
    Patch(
        _TABLEDATA,
        old="""        rows, insert_errors = _partition_rows_for_insert(rows, arrow_schema)
""",
        new="""        rows, insert_errors = _partition_rows_for_insert(rows, arrow_schema)
        for error in insert_errors:  # Beamport: the index in the request, not among its new rows
            error["index"] = positions[error["index"]]
""",
    ),
    Patch(
        _TABLEDATA,
        old="""        ctx.snapshots.record_change(project_id, dataset_id, table_id)
""",
        new="""        ctx.snapshots.record_change(project_id, dataset_id, table_id)
        _beamport_remember(table_key, rows)  # Beamport: once they are in
""",
    ),
)


# BigQuery's extract jobs write a destination URI with a `*` as numbered files (Beam's ReadFromBigQuery exports to
# gs://TEMP/ID/bigquery-table-dump-*.avro and then reads what matches); bqemulator wrote to the `*` literally, into
# a directory it did not make (the object's path under the gcs emulator's root), and failed. The one file it
# writes is shard 0, as BigQuery numbers them, and its directory is made.
_EXTRACT_TO_WILDCARD_URIS = Patch(
    "bqemulator/jobs/executor.py",
    old="""    _validate_local_path(dest_path)
    select_sql = f"SELECT * FROM {src_ref}"
""",
    new="""    _validate_local_path(dest_path)
    # Beamport: a wildcard's one file is shard 0; its directory is made (beamport/emulators.py).
    if dest_uris and dest_uris[0].startswith("gs://"):
        import os

        dest_path = dest_path.replace("*", "000000000000", 1)
        os.makedirs(os.path.dirname(dest_path), exist_ok=True)
    select_sql = f"SELECT * FROM {src_ref}"
""",
)


class BigQueryEmulator(PythonEmulator):
    """bqemulator: BigQuery's REST API (and the Storage API's gRPC) over a DuckDB file in its state directory.

    It loads DuckDB's spatial extension (GEOGRAPHY) and avro extension (Avro loads and extracts: Beam's
    ReadFromBigQuery exports Avro) at start, and would download them from extensions.duckdb.org; the pinned
    duckdb-extension-spatial and -avro wheels carry them, installed at `prepare` into the extension directory of
    a home of the venv's own (DuckDB looks under $HOME/.duckdb), which the emulator runs with: it starts
    offline. Load jobs read gs:// URIs, and extract jobs write them, as the gcs emulator's files."""

    def home(self, binary: Path) -> Path:
        return binary.parent.parent / "home"  # binary: VENV/bin/bqemulator

    def prepare(self, venv: Path) -> None:
        install_extensions = (
            "import pathlib, duckdb, duckdb_extension_spatial as s, duckdb_extension_avro as a\n"
            "for module, name in ((s, 'spatial'), (a, 'avro')):\n"
            "    [path] = pathlib.Path(module.__file__).parent.glob(f'extensions/*/{name}.duckdb_extension')\n"
            "    duckdb.connect().execute(f\"INSTALL '{path}'\")\n"
        )
        home = self.home(venv / "bin" / self.executable)
        home.mkdir(exist_ok=True)
        _run([str(venv / "bin" / "python"), "-c", install_extensions], {**os.environ, "HOME": str(home)}, venv)

    def environment(self, binary: Path, state_dir: Path) -> dict[str, str] | None:
        return {
            **os.environ,
            "HOME": str(self.home(binary)),
            # Load jobs' gs:// URIs are files under this root (gs://BUCKET/OBJECT: ROOT/BUCKET/OBJECT), which is
            # how the gcs emulator (fake-gcs-server's filesystem backend) keeps its objects.
            "BQEMU_GCS_LOCAL_ROOT": str(state_dir.parent / GCS.name),
            "BEAMPORT_BQEMU_ALLOWED_DIRS": os.pathsep.join((str(state_dir), str(state_dir.parent / GCS.name))),
            # The avro extension loaded at start (`prepare` installed it: INSTALL finds it there, offline), before
            # DuckDB is confined (_CONFINE_DUCKDB), after which nothing could be loaded.
            "BQEMU_ENABLE_FORMAT_EXTENSIONS": "true",
        }

    def command(self, binary: Path, port: int, state_dir: Path, grpc_port: int | None = None) -> list[str]:
        return [
            str(binary),
            "start",
            *("--rest-host", "127.0.0.1", "--rest-port", str(port)),
            # The Storage API's gRPC (BIGQUERY_STORAGE_EMULATOR_HOST: beamport/io/bigquery.py points Beam's
            # BigQueryReadClient there).
            *("--grpc-host", "127.0.0.1", "--grpc-port", str(grpc_port or 0)),
            *("--persistent", "--data-dir", str(state_dir)),
            *("--log-level", "warning"),
        ]


BIGQUERY = BigQueryEmulator(
    name="bigquery",
    variable="BIGQUERY_EMULATOR_HOST",
    grpc_variable="BIGQUERY_STORAGE_EMULATOR_HOST",
    version="1.4.0",
    health_path="/healthz",
    requirements=Path(__file__).parent / "emulator_sources" / "bigquery" / "requirements.txt",
    executable="bqemulator",
    patches=(_CONFINE_DUCKDB, *_DEDUP_INSERT_IDS, *_ONE_THREAD_AT_A_TIME, _EXTRACT_TO_WILDCARD_URIS),
    # beamport2: insert ids remembered; beamport3: one thread at a time on DuckDB; beamport4: wildcard extracts
    patch_level="beamport4",
)


@dataclass(frozen=True, kw_only=True)
class GoogleGateway(Emulator):
    """Beamport's Google API gateway (beamport/google_gateway.py) in front of the BigQuery endpoint `upstream`:
    Python, in serve's own environment (nothing to install). Started with the bigquery emulator, for the clients
    that reach only Google's own hosts (Beam Go's BigQuery I/O)."""

    upstream: str = ""

    @property
    def binary(self) -> str:
        return "beamport.google_gateway"

    def command(self, binary: Path, port: int, state_dir: Path, grpc_port: int | None = None) -> list[str]:
        return [
            str(binary),
            "-m",
            self.binary,
            "--port",
            str(port),
            "--state-dir",
            str(state_dir),
            "--bigquery",
            self.upstream,
        ]


GATEWAY = GoogleGateway(
    name="gateway", variable=google_gateway.VARIABLE, version=beamport.__version__, health_path="/healthz"
)
EMULATORS: dict[str, Emulator] = {GCS.name: GCS, PUBSUB.name: PUBSUB, BIGQUERY.name: BIGQUERY}
NAMES = (*EMULATORS, METADATA)


def parse_names(value: str | Iterable[str] | None) -> list[str]:
    """--emulators gcs,metadata (or a list of such): known names, in order, once each."""
    if value is None or value == "":
        return []
    items = value.split(",") if isinstance(value, str) else [n for v in value for n in str(v).split(",")]
    names: list[str] = []
    for name in (item.strip().lower() for item in items):
        if not name or name in names:
            continue
        if name in PLANNED:
            raise ValueError(f"--emulators {name}: not available yet (available: {', '.join(NAMES)})")
        if name not in NAMES:
            raise ValueError(f"--emulators {name}: no such emulator (available: {', '.join(NAMES)})")
        names.append(name)
    return names


def default_bin_dir(environ: Mapping[str, str] = os.environ) -> Path:
    return Path(environ.get("HOME") or Path.home()) / ".cache" / "beamport" / "bin"


def install(emulator: Emulator, bin_dir: Path) -> Path:
    """The emulator's program, built or installed now if this version is not cached yet (minutes, once)."""
    if isinstance(emulator, GoogleGateway):
        return Path(sys.executable)  # Beamport's own
    if isinstance(emulator, PythonEmulator):
        return _install_venv(emulator, bin_dir)
    assert isinstance(emulator, GoEmulator)
    return _build_go(emulator, bin_dir)


def _install_venv(emulator: PythonEmulator, bin_dir: Path) -> Path:
    """VENV/bin/PROGRAM, the venv made now if it is not complete yet. Made where it stays (a venv's scripts name
    its path), under a lock (two servers installing at once), marked complete last."""
    venv = bin_dir / emulator.binary
    program = venv / "bin" / emulator.executable
    complete = venv / "complete"
    if complete.is_file():
        return program
    bin_dir.mkdir(parents=True, exist_ok=True)
    with open(bin_dir / f".{emulator.binary}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if complete.is_file():
            return program
        log.info(
            "Installing the %s emulator %s %s (once; cached at %s)...",
            emulator.name,
            emulator.executable,
            emulator.version,
            venv,
        )
        started = time.monotonic()
        shutil.rmtree(venv, ignore_errors=True)  # a half-made one
        _run([sys.executable, "-m", "venv", str(venv)], dict(os.environ), bin_dir)
        pip = [str(venv / "bin" / "python"), "-m", "pip", "install", "--quiet", "--disable-pip-version-check"]
        # Every package is pinned in the file: --no-deps installs exactly those, nothing resolved anew.
        _run([*pip, "--no-deps", "-r", str(emulator.requirements)], dict(os.environ), bin_dir)
        [site_packages] = venv.glob("lib/python*/site-packages")
        _apply(emulator.patches, site_packages, f"{emulator.executable} {emulator.version}")
        emulator.prepare(venv)
        complete.touch()
    log.info("Installed %s in %.0f s", venv, time.monotonic() - started)
    return program


def _run(command: list[str], env: dict[str, str], cwd: Path) -> str:
    done = subprocess.run(command, env=env, cwd=cwd, capture_output=True, text=True)
    if done.returncode != 0:
        raise EmulatorError(f"{' '.join(command)} failed:\n{done.stderr[-3000:]}")
    return done.stdout


def _build_go(emulator: GoEmulator, bin_dir: Path) -> Path:
    """The emulator's binary, built now if this version is not cached yet (minutes, once)."""
    target = bin_dir / emulator.binary
    if target.is_file():
        return target
    go = shutil.which("go")
    if go is None:
        raise EmulatorError(
            f"the {emulator.name} emulator ({emulator.module} {emulator.version}) is built with Go, which is not "
            f"installed; install Go, or put the binary at {target}"
        )
    bin_dir.mkdir(parents=True, exist_ok=True)
    log.info(
        "Building the %s emulator %s@%s (once; cached at %s)...",
        emulator.name,
        emulator.module,
        emulator.version,
        target,
    )
    started = time.monotonic()
    env = {**os.environ, "GOFLAGS": "-mod=mod"}
    # The module's source from the proxy (into Go's module cache), or Beamport's own main (its dependencies from
    # the proxy, as its go.sum pins them), copied, patched and built there, then renamed into place: two servers
    # building at once each get a whole binary.
    with tempfile.TemporaryDirectory(dir=bin_dir, prefix=f".{emulator.binary}-") as build_dir:
        source = Path(build_dir) / "src"
        if emulator.source is not None:
            shutil.copytree(emulator.source, source)
        else:
            downloaded = _go(
                go, ["mod", "download", "-json", f"{emulator.module}@{emulator.version}"], env, Path(build_dir)
            )
            shutil.copytree(json.loads(downloaded)["Dir"], source)
        _writable(source)
        _apply(emulator.patches, source, f"{emulator.module}@{emulator.version}")
        for addition in emulator.additions:
            _add(go, env, source, addition)
        built = Path(build_dir) / emulator.binary
        _go(go, ["build", "-o", str(built), "."], env, source)
        os.replace(built, target)
    log.info("Built %s in %.0f s", target, time.monotonic() - started)
    return target


def _writable(tree: Path) -> None:
    for path in [tree, *tree.rglob("*")]:  # the module cache's copies are read-only
        path.chmod(path.stat().st_mode | stat.S_IWUSR)


def _add(go: str, env: dict[str, str], source: Path, addition: Addition) -> None:
    """The module `source` requires, copied beside it with the addition's files, and used in its place."""
    required = json.loads(_go(go, ["mod", "download", "-json", addition.module], env, source))
    copy = source.parent / "modules" / addition.module.replace("/", "_")
    shutil.copytree(required["Dir"], copy)
    _writable(copy)
    for file in sorted(addition.files.glob("*.go")):
        shutil.copyfile(file, copy / addition.package / file.name)
    _go(go, ["mod", "edit", f"-replace={addition.module}={copy}"], env, source)


def _apply(patches: Iterable[Patch], root: Path, what: str) -> None:
    for patch in patches:
        code = (root / patch.file).read_text()
        if patch.old not in code:
            raise EmulatorError(f"{what}: {patch.file} is not as the patch expects")
        (root / patch.file).write_text(code.replace(patch.old, patch.new))


def _go(go: str, args: list[str], env: dict[str, str], cwd: Path) -> str:
    return _run([go, *args], env, cwd)


class EmulatorError(Exception):
    """An emulator could not be built or started (the message says why)."""


class EmulatorProcess:
    """One emulator, supervised: started again on the same port if it dies, until stop()."""

    def __init__(self, emulator: Emulator, binary: Path, state_dir: Path, log_path: Path):
        self.emulator, self.binary, self.state_dir, self.log_path = emulator, binary, state_dir, log_path
        self.port = free_loopback_port()
        self.grpc_port = free_loopback_port() if emulator.grpc_variable else None
        self._stopping = threading.Event()
        self._started = threading.Event()
        self._process: subprocess.Popen | None = None
        self._error: str | None = None
        self._thread = threading.Thread(target=self._supervise, name=f"emulator-{emulator.name}", daemon=True)

    @property
    def value(self) -> str:
        return self.emulator.value(self.port)

    def start(self) -> None:
        self.state_dir.mkdir(parents=True, exist_ok=True)
        self._thread.start()
        self._started.wait(START_TIMEOUT_S + 5)
        if self._error or not self._started.is_set():
            self.stop()
            raise EmulatorError(self._error or f"the {self.emulator.name} emulator did not start")

    def _spawn(self) -> subprocess.Popen:
        # Started from the supervising thread, which lives as long as the emulator: the parent-death signal
        # (per thread) then kills the emulator only when serve itself is gone.
        command = [
            "setpriv",
            "--pdeathsig",
            "KILL",
            *self.emulator.command(self.binary, self.port, self.state_dir, self.grpc_port),
        ]
        if shutil.which("setpriv") is None:  # util-linux: on every Linux this runs on; without, no such guard
            command = command[3:]
        with open(self.log_path, "ab") as out:
            return subprocess.Popen(
                command,
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
                env=self.emulator.environment(self.binary, self.state_dir),
            )

    def _up_or_over(self, process: subprocess.Popen) -> Callable[[], bool]:
        """Whether the process answers, exited, or is being stopped: the end of a wait for it to start. What
        answers must be this process: the port, free when chosen, may have gone to another server's emulator."""
        return lambda: (
            process.poll() is not None
            or self._stopping.is_set()
            or (
                self.emulator.healthy(self.port)
                and listens_on(process.pid, self.port)
                and (self.grpc_port is None or listens_on(process.pid, self.grpc_port))
            )
        )

    def _supervise(self) -> None:
        restarts = port_tries = 0
        while not self._stopping.is_set():
            started = time.monotonic()
            self._process = process = self._spawn()
            ready = wait_until(self._up_or_over(process), bool, START_TIMEOUT_S, 0.05)
            if ready and process.poll() is None:
                self._started.set()
            elif not self._started.is_set() and port_tries < PORT_TRIES and not self._stopping.is_set():
                # Most likely its port was taken between its choice and the emulator's bind: another one.
                log.warning("The %s emulator did not start on port %s; trying another", self.emulator.name, self.port)
                process.kill()
                process.wait()
                port_tries += 1
                self.port = free_loopback_port()
                self.grpc_port = free_loopback_port() if self.grpc_port is not None else None
                continue
            elif not self._started.is_set():
                self._error = (
                    f"the {self.emulator.name} emulator did not start on port {self.port} "
                    f"(exit code {process.poll()}); see {self.log_path}"
                )
                self._started.set()
                return
            code = process.wait()
            if self._stopping.is_set():
                return
            restarts = restarts + 1 if time.monotonic() - started < 60 else 1
            if restarts > RESTARTS:
                log.error(
                    "The %s emulator keeps exiting (code %s): not started again; see %s",
                    self.emulator.name,
                    code,
                    self.log_path,
                )
                return
            log.warning("The %s emulator exited (code %s); starting it again", self.emulator.name, code)
            self._stopping.wait(min(2**restarts * 0.1, 5))

    def stop(self) -> None:
        self._stopping.set()
        process = self._process
        if process is not None and process.poll() is None:
            try:
                os.killpg(process.pid, signal.SIGTERM)
                process.wait(STOP_TIMEOUT_S)
            except subprocess.TimeoutExpired:
                os.killpg(process.pid, signal.SIGKILL)
                process.wait()
            except ProcessLookupError:  # it exited meanwhile
                pass
        if self._thread.is_alive():
            self._thread.join(STOP_TIMEOUT_S)


class Emulators:
    """The emulators a server runs (settings.emulators), and the variables that name every endpoint."""

    def __init__(
        self,
        names: list[str],
        data_dir: Path,
        bin_dir: Path | None = None,
        environ: MutableMapping[str, str] = os.environ,
    ):
        self.names = [n for n in names if n in EMULATORS]
        self.data_dir = data_dir.resolve()
        self.bin_dir = bin_dir or default_bin_dir(environ)
        self.environ = environ
        self.running: dict[str, EmulatorProcess] = {}
        self.variables: dict[str, str] = {}

    @property
    def state_root(self) -> Path:
        return self.data_dir / "emulators"

    def start(self) -> None:
        """Start each emulator whose variable the operator has not set already; export every variable. With a
        BigQuery endpoint, the Google API gateway in front of it too (for Beam Go's BigQuery I/O)."""
        try:
            for name in self.names:
                self._start(EMULATORS[name])
            bigquery = self.variables.get(BIGQUERY.variable)
            if BIGQUERY.name in self.names and bigquery:
                self._start(dataclasses.replace(GATEWAY, upstream=bigquery))
        except BaseException:
            self.stop()
            raise

    def _start(self, emulator: Emulator) -> None:
        name = emulator.name
        own = self.environ.get(emulator.variable)
        if own:
            log.info("%s: the operator's %s=%s (not starting %s)", name, emulator.variable, own, emulator.binary)
            self.variables[emulator.variable] = own
            if emulator.grpc_variable and self.environ.get(emulator.grpc_variable):
                self.variables[emulator.grpc_variable] = self.environ[emulator.grpc_variable]
            return
        binary = install(emulator, self.bin_dir)
        self.state_root.mkdir(parents=True, exist_ok=True)
        process = EmulatorProcess(emulator, binary, self.state_root / name, self.state_root / f"{name}.log")
        started = time.monotonic()
        process.start()
        self.running[name] = process
        log.info(
            "%s: %s at %s (data in %s; started in %.1f s)",
            name,
            emulator.binary,
            process.value,
            process.state_dir,
            time.monotonic() - started,
        )
        exported = {emulator.variable: process.value}
        if process.grpc_port is not None:
            exported[emulator.grpc_variable] = f"127.0.0.1:{process.grpc_port}"
        self.variables.update(exported)
        # Inherited by what serve starts: its workers, their executors and the SDK harnesses.
        self.environ.update(exported)

    def write_env(self, extra: Mapping[str, str] = {}) -> Path | None:
        """DATA_DIR/emulators.env: `export NAME=VALUE` lines for clients (sourced, or `beamport emulators env`)."""
        variables = {**self.variables, **extra}
        if not variables:
            return None
        path = self.data_dir / ENV_FILE
        path.write_text("".join(f"export {name}={value}\n" for name, value in variables.items()))
        return path

    def stop(self) -> None:
        for process in self.running.values():
            process.stop()
        self.running.clear()
        (self.data_dir / ENV_FILE).unlink(missing_ok=True)
