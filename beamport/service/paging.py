"""Opaque page tokens: a position in a sequence, tagged with what it pages over."""

from __future__ import annotations

import base64
import re

from beamport.errors import invalid_argument

# A position is a sequence number of the store: a signed 64-bit integer column (SQLite's INTEGER, PostgreSQL's
# BIGINT). A token naming one beyond that is not one this server made.
MAX_POSITION = 2**63 - 1
_POSITION = re.compile(r"[0-9]{1,19}\Z")


def encode_token(kind: str, position: int) -> str:
    return base64.urlsafe_b64encode(f"{kind}:{position}".encode()).decode().rstrip("=")


def decode_token(kind: str, token: str | None) -> int | None:
    if not token:
        return None
    try:
        padded = token + "=" * (-len(token) % 4)
        tag, _, position = base64.urlsafe_b64decode(padded.encode()).decode().partition(":")
        if tag == kind and _POSITION.match(position) and int(position) <= MAX_POSITION:
            return int(position)
    except (ValueError, UnicodeError):
        pass
    shown = token if len(token) <= 100 else token[:100] + "..."
    raise invalid_argument(f"Invalid page token: {shown!r}")


def page_size(requested: int, default: int, maximum: int) -> int:
    if requested < 0:
        raise invalid_argument(f"pageSize must not be negative, got {requested}")
    return min(requested or default, maximum)


def page_response(records: list, limit: int, kind: str, items_key: str, render) -> dict:
    """A list response from up to limit+1 records: the first `limit` rendered, a token if there were more."""
    response: dict = {}
    if records:
        response[items_key] = [render(record) for record in records[:limit]]
    if len(records) > limit:
        response["nextPageToken"] = encode_token(kind, records[limit - 1].seq)
    return response
