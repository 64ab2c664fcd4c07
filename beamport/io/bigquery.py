"""Beam's BigQuery I/O on a BigQuery emulator (BIGQUERY_EMULATOR_HOST), with no change to the pipeline.

Through a Beam plugin (SetupOptions.beam_plugins), beamport.io.emulators_plugin: staging adds it to a job staged
while the server had Google service endpoints (engine/staging.py), and every SDK worker imports it at start
(sdk_worker_main; the embedded engine in its own process too), before any bundle. With BIGQUERY_EMULATOR_HOST
set, it points the two clients Beam's BigQuery I/O uses at the emulator (use_emulator):
- apitools' BigqueryV2 (tables, datasets, jobs, tabledata: Beam's BigQueryWrapper) has a fixed BASE_URL and no
  way to name another: its BASE_URL becomes the emulator's;
- google-cloud-bigquery's Client (Beam's insertAll) honours BIGQUERY_EMULATOR_HOST itself;
- google-cloud-bigquery-storage's BigQueryReadClient (Beam's DIRECT_READ) takes no endpoint from anywhere: made
  without a transport, it gets an insecure gRPC channel to the emulator's Storage API
  (BIGQUERY_STORAGE_EMULATOR_HOST, host:port), as the Pub/Sub client does for PUBSUB_EMULATOR_HOST.
The first two would want Google default credentials, which a worker offline does not have (and whose tokens an emulator
has no use for): made without credentials, they get anonymous ones, as google-cloud-pubsub and -storage do for
their emulators; Client also gets a project (Beam names each table's project in full).
"""

from __future__ import annotations

import functools
import os

VARIABLE = "BIGQUERY_EMULATOR_HOST"
STORAGE_VARIABLE = "BIGQUERY_STORAGE_EMULATOR_HOST"
PLUGIN = "beamport.io.emulators_plugin"
# google-cloud-bigquery's Client wants a project; Beam's insertAll names the table's own.
DEFAULT_PROJECT = "beamport"


def use_emulator(host: str) -> None:
    """Point Beam's BigQuery clients, in this process, at the emulator at `host` (http://HOST:PORT)."""
    from apache_beam.internal.gcp.auth import _ApitoolsCredentialsAdapter
    from apache_beam.io.gcp.internal.clients.bigquery.bigquery_v2_client import BigqueryV2
    from google.auth.credentials import AnonymousCredentials
    from google.cloud.bigquery import Client

    os.environ[VARIABLE] = host
    BigqueryV2.BASE_URL = f"{host.rstrip('/')}/bigquery/v2/"
    if getattr(BigqueryV2.__init__, "beamport_emulated", False):
        return  # imported again (or called twice): wrapped once is enough

    apitools_init = BigqueryV2.__init__

    @functools.wraps(apitools_init)
    def anonymous_apitools(self, *args, credentials=None, **kwargs):
        credentials = credentials or _ApitoolsCredentialsAdapter(AnonymousCredentials())
        apitools_init(self, *args, credentials=credentials, **kwargs)

    client_init = Client.__init__

    @functools.wraps(client_init)
    def anonymous_client(self, project=None, credentials=None, *args, **kwargs):
        if credentials is None and "_http" not in kwargs:
            credentials = AnonymousCredentials()
            project = project or os.environ.get("GOOGLE_CLOUD_PROJECT") or DEFAULT_PROJECT
        client_init(self, project, credentials, *args, **kwargs)

    anonymous_apitools.beamport_emulated = True  # type: ignore[attr-defined]
    BigqueryV2.__init__ = anonymous_apitools  # type: ignore[method-assign]
    Client.__init__ = anonymous_client  # type: ignore[method-assign]


def use_storage_emulator(host: str) -> None:
    """Point Beam's BigQuery Storage Read client (DIRECT_READ), in this process, at the emulator's Storage API at
    `host` (host:port, gRPC without TLS)."""
    from google.cloud.bigquery_storage_v1 import BigQueryReadClient
    from google.cloud.bigquery_storage_v1.services.big_query_read.transports import BigQueryReadGrpcTransport

    os.environ[STORAGE_VARIABLE] = host
    if getattr(BigQueryReadClient.__init__, "beamport_emulated", False):
        return
    read_init = BigQueryReadClient.__init__

    @functools.wraps(read_init)
    def on_the_emulator(self, *args, **kwargs):
        if not args and kwargs.get("transport") is None and kwargs.get("credentials") is None:
            import grpc

            channel = grpc.insecure_channel(os.environ[STORAGE_VARIABLE])
            kwargs["transport"] = BigQueryReadGrpcTransport(channel=channel)
        read_init(self, *args, **kwargs)

    on_the_emulator.beamport_emulated = True  # type: ignore[attr-defined]
    BigQueryReadClient.__init__ = on_the_emulator  # type: ignore[method-assign]
