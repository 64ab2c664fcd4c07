"""The gRPC layer: Dataflow's v1beta3 gRPC services onto the service layer, translating only (as http/ does REST)."""
