"""The service layer: Dataflow's semantics over the store, free of HTTP."""
