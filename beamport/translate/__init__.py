"""Pure translations from Beam's shapes to Dataflow's: a pipeline's job graph, a run's metrics."""
