"""The dmulog log service: dirty-log semantics over Redis, served over gRPC."""
