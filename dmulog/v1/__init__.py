"""Generated code of the dmulog.v1 protobuf contract (run ``make proto``)."""
