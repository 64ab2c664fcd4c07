"""Methods routed but not yet backed by a real implementation: each answers UNIMPLEMENTED saying what is missing."""

from __future__ import annotations

from starlette.requests import Request

from beamport.errors import unimplemented
from beamport.http.protocol import api

NO_DEBUG = "Beamport's workers take no debug configuration and send no debug captures"


def not_yet(method: str, reason: str):
    @api
    async def endpoint(request: Request) -> dict:
        raise unimplemented(f"{method} is not implemented: {reason}.")

    endpoint.__name__ = method.replace(".", "_")
    return endpoint
