"""Server reflection: a client with no .proto file learns logsvc's services and their methods from logsvc.

Asked through grpcio-reflection's own client (the descriptor database grpcurl-like
tools build on), from a thread: it is synchronous, and the server runs on this
test's event loop.
"""

from __future__ import annotations

import asyncio

import grpc
from google.protobuf.descriptor_pool import DescriptorPool
from grpc_reflection.v1alpha.proto_reflection_descriptor_database import ProtoReflectionDescriptorDatabase

from dmulog.v1 import dmulog_pb2 as pb


def reflect(target: str) -> tuple[list[str], list[str], list[str]]:
    """(services listed, DirtyLog's methods, Health's methods) as reflection describes them."""
    with grpc.insecure_channel(target) as channel:
        database = ProtoReflectionDescriptorDatabase(channel)
        pool = DescriptorPool(database)
        services = sorted(database.get_services())
        dirty_log = [m.name for m in pool.FindServiceByName("dmulog.v1.DirtyLog").methods]
        health = [m.name for m in pool.FindServiceByName("grpc.health.v1.Health").methods]
    return services, dirty_log, health


async def test_reflection_lists_and_describes_the_services(logsvc: str) -> None:
    """DirtyLog, Health and reflection itself are listed; DirtyLog's description has every method of the proto."""
    services, dirty_log, health = await asyncio.to_thread(reflect, logsvc)
    assert ["dmulog.v1.DirtyLog", "grpc.health.v1.Health", "grpc.reflection.v1alpha.ServerReflection"] == services
    assert [m.name for m in pb.DESCRIPTOR.services_by_name["DirtyLog"].methods] == dirty_log
    assert {"Check", "Watch"} <= set(health)
