"""The Google service endpoints a job's SDK workers reach, carried in the job's options.

`beamport serve --emulators` (or the operator) gives the server STORAGE_EMULATOR_HOST, PUBSUB_EMULATOR_HOST and
BIGQUERY_EMULATOR_HOST; the workers and SDK harnesses it starts inherit them, but Flink's SDK worker pool does
not (it runs beside the cluster, with its own environment). So staging records the server's in the option
`beamport_emulator_endpoints`, and engine/sdk_boot.py gives them back to each SDK worker as variables, for
Google's clients and Beam's IOs (GCS, Pub/Sub, BigQuery) in the job's code (engine/go_boot.py to a Go worker, with
the Google API gateway's). Only these names are taken from a job's options: the options are the job's own to
write.
"""

from __future__ import annotations

from collections.abc import Mapping

# BIGQUERY_STORAGE_EMULATOR_HOST: the BigQuery emulator's Storage API (gRPC), for Beam's DIRECT_READ;
# GOOGLE_API_GATEWAY: the Google API gateway (beamport/google_gateway.py), for Go workers' BigQuery I/O.
VARIABLES = (
    "STORAGE_EMULATOR_HOST",
    "PUBSUB_EMULATOR_HOST",
    "BIGQUERY_EMULATOR_HOST",
    "BIGQUERY_STORAGE_EMULATOR_HOST",
    "GOOGLE_API_GATEWAY",
)
OPTION = "beamport_emulator_endpoints"


def of(environ: Mapping[str, str]) -> dict[str, str]:
    """The endpoints an environment names (the server's, as staging sees it)."""
    return {name: environ[name] for name in VARIABLES if environ.get(name)}


def from_option(value) -> dict[str, str]:
    """The endpoints a job's option names: only the VARIABLES, only strings."""
    if not isinstance(value, Mapping):
        return {}
    return {name: value[name] for name in VARIABLES if isinstance(value.get(name), str) and value[name]}


def java_options(found: Mapping[str, str]) -> dict[str, str]:
    """The Beam Java options that point its IOs at these endpoints:
    - gcsEndpoint: the JSON API's URL, whose path is the service path (Beam Java's Transport.newStorageClient);
    - bigQueryEndpoint: the REST API's root URL (BigQueryServicesImpl.newBigQueryClient);
    - pubsubRootUrl: the REST API's root URL (PubsubJsonClient, PubsubIO's client unless the pipeline picks
      another): PUBSUB_EMULATOR_HOST is the emulator's host:port, which serves REST there too."""
    options = {}
    if found.get("STORAGE_EMULATOR_HOST"):
        options["gcsEndpoint"] = _url(found["STORAGE_EMULATOR_HOST"]) + "/storage/v1/"
    if found.get("BIGQUERY_EMULATOR_HOST"):
        options["bigQueryEndpoint"] = _url(found["BIGQUERY_EMULATOR_HOST"])
    if found.get("PUBSUB_EMULATOR_HOST"):
        options["pubsubRootUrl"] = _url(found["PUBSUB_EMULATOR_HOST"])
    return options


def _url(host: str) -> str:
    """http://HOST:PORT for an endpoint given with or without its scheme (Google's clients take both)."""
    host = host.rstrip("/")
    return host if "://" in host else f"http://{host}"
