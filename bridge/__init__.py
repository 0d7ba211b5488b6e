"""The dmulog bridge: the kernel's netlink requests in, gRPC calls to logsvc out."""
