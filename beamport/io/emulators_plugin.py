"""A Beam plugin (beam_plugins) that staging adds to a Python job staged while the server has Google service
endpoints (beamport/endpoints.py); every SDK worker imports it at start, before any bundle.

- With BIGQUERY_EMULATOR_HOST set, it points Beam's BigQuery I/O at it (beamport/io/bigquery.py), and with
  BIGQUERY_STORAGE_EMULATOR_HOST its Storage Read client (DIRECT_READ).
- Beam's GCS and BigQuery I/O look for Google default credentials with four retries (`_Credentials`
  in apache_beam/internal/gcp/auth.py: about 25 s) before they connect anonymously, which is what a worker
  reaching emulators does in the end: so the first output of such a job came 25 s late. Here they look once;
  credentials that can be found are found and used as before.
"""

import os

from beamport.endpoints import VARIABLES
from beamport.io.bigquery import STORAGE_VARIABLE, VARIABLE, use_emulator, use_storage_emulator


def _look_for_credentials_once() -> None:
    from apache_beam.internal.gcp import auth

    retrying = auth._Credentials._get_credentials_with_retrys
    once = getattr(retrying, "__wrapped__", None)  # Beam's retry decorator keeps the function it wraps
    if once is not None:
        auth._Credentials._get_credentials_with_retrys = staticmethod(once)  # type: ignore[method-assign]


if any(os.environ.get(name) for name in VARIABLES):
    _look_for_credentials_once()
if os.environ.get(VARIABLE):
    use_emulator(os.environ[VARIABLE])
if os.environ.get(STORAGE_VARIABLE):
    use_storage_emulator(os.environ[STORAGE_VARIABLE])
