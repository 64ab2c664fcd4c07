"""Credentials for Beamport's own clients (the CLI, workers): a service-account key file, through google-auth.

The key file is Google's JSON format, as `beamport iam service-accounts keys create` writes it; google-auth
signs a JWT with it and trades it at the key's token_uri (this server) for an access token, refreshed
before it expires, exactly as Google's client libraries do.
"""

from __future__ import annotations

import os
import threading
from pathlib import Path

import httpx
from google.auth import environment_vars

SCOPES = ["https://www.googleapis.com/auth/cloud-platform"]
CREDENTIALS_VARIABLE = environment_vars.CREDENTIALS  # "GOOGLE_APPLICATION_CREDENTIALS"


class KeyFileAuth(httpx.Auth):
    """httpx authentication with a service-account key: a Bearer access token, refreshed when it expires and
    once more if the server answers 401 (a token the server no longer knows, e.g. after its key rotated)."""

    def __init__(self, key_file: str | Path):
        from google.oauth2 import service_account

        self.key_file = str(key_file)
        self.credentials = service_account.Credentials.from_service_account_file(self.key_file, scopes=SCOPES)
        self._lock = threading.Lock()

    def _refresh(self, force: bool = False) -> str:
        import google.auth.transport.requests

        with self._lock:
            if force or not self.credentials.valid:
                self.credentials.refresh(google.auth.transport.requests.Request())
            return self.credentials.token

    def token(self) -> str:
        """A valid access token (refreshed if need be)."""
        return self._refresh()

    def auth_flow(self, request: httpx.Request):
        request.headers["Authorization"] = f"Bearer {self._refresh()}"
        response = yield request
        if response.status_code == 401:
            request.headers["Authorization"] = f"Bearer {self._refresh(force=True)}"
            yield request


def key_file_auth(key_file: str | Path | None = None) -> KeyFileAuth | None:
    """Authentication from the key file given, else GOOGLE_APPLICATION_CREDENTIALS; None when neither names
    one (a server run with --no-auth needs none)."""
    path = key_file or os.environ.get(CREDENTIALS_VARIABLE)
    return KeyFileAuth(path) if path else None
