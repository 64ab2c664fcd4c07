"""A Beam plugin (beam_plugins): imported by an SDK worker at start, it points Beam's BigQuery I/O at
BIGQUERY_EMULATOR_HOST when that is set, and changes nothing otherwise (beamport/io/bigquery.py)."""

import os

from beamport.io.bigquery import VARIABLE, use_emulator

if os.environ.get(VARIABLE):
    use_emulator(os.environ[VARIABLE])
