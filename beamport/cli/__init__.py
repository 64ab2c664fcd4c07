"""The `beamport` command: the server, and client commands that talk to it over HTTP."""
