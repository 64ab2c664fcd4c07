"""An Airflow plugin that points apache-airflow-providers-google's Dataflow hooks at Beamport.

The provider has no endpoint setting for Dataflow (docs/airflow.md has the upstream change this stands in for).
Installed with `pip install beamport[airflow]`, this plugin is registered through the `airflow.plugins` entry
point; Airflow loads plugins in every process that runs a task (the task runner integrates them before a task
runs; the triggerer before it starts its trigger runner; `airflow dags test` runs both in its own process), and
its `on_load` patches two methods of the provider's hooks. A connection whose extra carries no `api_endpoint`
keeps the provider's behaviour exactly (Google's Dataflow). With it:

- `DataflowHook` (the discovery client every synchronous operator and sensor uses) gets
  `client_options.api_endpoint` = the extra `api_endpoint`, Beamport's REST root (`http://127.0.0.1:8080`);
- `AsyncDataflowHook` (deferrable operators and sensors: GAPIC clients that speak gRPC only) builds its clients on
  a plaintext gRPC channel to the extra `grpc_endpoint` (`127.0.0.1:8081`, `beamport serve --grpc-port 8081`),
  with the connection's credentials sent as a bearer token on each call.

This module needs nothing from Beamport's server (it imports only Airflow, the provider and Google's clients).
"""

from __future__ import annotations

import asyncio
from typing import Any

import grpc
from airflow.plugins_manager import AirflowPlugin

REST_ENDPOINT = "api_endpoint"
GRPC_ENDPOINT = "grpc_endpoint"


class BearerToken(grpc.aio.UnaryUnaryClientInterceptor):
    """Sends google-auth credentials as `authorization: Bearer ...` on a plaintext channel, where gRPC's own call
    credentials are refused (they need a secure channel). Anonymous credentials send nothing, as on REST."""

    def __init__(self, credentials: Any):
        self.credentials = credentials

    async def intercept_unary_unary(self, continuation, client_call_details, request):
        from google.auth.transport.requests import Request

        headers: dict[str, str] = {}
        # before_request refreshes an expired token first, a blocking HTTP call: off the event loop.
        await asyncio.to_thread(self.credentials.before_request, Request(), "POST", "", headers)
        if "authorization" in headers:
            metadata = [*(client_call_details.metadata or ()), ("authorization", headers["authorization"])]
            client_call_details = client_call_details._replace(metadata=metadata)
        return await continuation(client_call_details, request)


def rest_client_options(hook: Any, api_endpoint_override: str | None = None) -> Any:
    """DataflowHook.get_client_options: the provider's own, given the connection's `api_endpoint`."""
    from airflow.providers.google.common.hooks.base_google import GoogleBaseHook

    endpoint = api_endpoint_override or hook._get_field(REST_ENDPOINT)
    return GoogleBaseHook.get_client_options(hook, api_endpoint_override=endpoint)


def patch_hooks() -> None:
    """Patch the provider's Dataflow hooks (once; the module may be loaded by more than one plugin manager)."""
    from airflow.exceptions import AirflowException
    from airflow.providers.google.cloud.hooks.dataflow import AsyncDataflowHook, DataflowHook

    if getattr(AsyncDataflowHook.initialize_client, "beamport", False):
        return
    provider_initialize_client = AsyncDataflowHook.initialize_client

    async def initialize_client(self: Any, client_class: Any) -> Any:
        sync_hook = await self.get_sync_hook()
        grpc_endpoint = sync_hook._get_field(GRPC_ENDPOINT)
        if not grpc_endpoint:
            if sync_hook._get_field(REST_ENDPOINT):
                raise AirflowException(
                    f"Connection {sync_hook.gcp_conn_id!r} has an {REST_ENDPOINT!r} but no {GRPC_ENDPOINT!r}: "
                    "deferrable Dataflow operators and sensors speak gRPC; start Beamport with "
                    f"`beamport serve --grpc-port N` and set the extra {GRPC_ENDPOINT!r} to HOST:N"
                )
            return await provider_initialize_client(self, client_class)
        channel = grpc.aio.insecure_channel(grpc_endpoint, interceptors=[BearerToken(sync_hook.get_credentials())])
        return client_class(transport=client_class.get_transport_class("grpc_asyncio")(channel=channel))

    initialize_client.beamport = True  # type: ignore[attr-defined]
    AsyncDataflowHook.initialize_client = initialize_client
    DataflowHook.get_client_options = rest_client_options


class BeamportPlugin(AirflowPlugin):
    """Registered as the `airflow.plugins` entry point `beamport` (pyproject.toml)."""

    name = "beamport"

    @classmethod
    def on_load(cls, *args: Any, **kwargs: Any) -> None:
        patch_hooks()
