"""The HTTP layer: translates the Dataflow REST API to service calls (routes, JSON, errors)."""
