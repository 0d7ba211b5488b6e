"""Requests that protobuf refuses to parse, made into answers.

gRPC parses a request before any servicer code runs, and protobuf refuses a
message whose string fields are not UTF-8: left alone, the client would get
UNKNOWN for a unary call, and a whole Exchange stream would end, its other
requests with it. The interceptor parses with ``tolerant`` instead, which
hands the servicer an ``Undecodable`` in place of the request, naming what
is wrong with it, so that the request is answered INVALID_ARGUMENT like any
other bad argument and changes nothing.

To name the field, the message is parsed again with a *lenient* copy of its
type: built once per .proto file from the same descriptor with every string
field turned into bytes (the wire format of both is the same), it reads what
the strict type refused, and the field that is not UTF-8 can be found.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Final

from google.protobuf import descriptor_pb2, descriptor_pool, message_factory
from google.protobuf.descriptor import Descriptor, FieldDescriptor, FileDescriptor
from google.protobuf.message import DecodeError, Message

from logsvc.errors import InvalidArgument

__all__ = ["Undecodable", "explain", "lenient", "method_input", "tolerant"]

_STRING: Final = descriptor_pb2.FieldDescriptorProto.TYPE_STRING
_BYTES: Final = descriptor_pb2.FieldDescriptorProto.TYPE_BYTES


@dataclass(frozen=True, slots=True)
class Undecodable:
    """What a servicer gets in place of a request that does not parse: its bytes and what is wrong."""

    data: bytes
    problem: str

    async def refuse(self) -> Any:
        """Fail as handling the request would (awaited where the servicer's answer would be)."""
        raise InvalidArgument(self.problem)


def _as_bytes(messages: Any) -> None:
    for message in messages:
        # A map entry keyed by bytes is not allowed; as a plain nested message
        # the entries read the same from the wire.
        message.options.ClearField("map_entry")
        for field in message.field:
            if field.type == _STRING:
                field.type = _BYTES
        _as_bytes(message.nested_type)


def _add_lenient(pool: descriptor_pool.DescriptorPool, file: FileDescriptor) -> None:
    try:
        pool.FindFileByName(file.name)
        return
    except KeyError:
        pass
    for dependency in file.dependencies:
        _add_lenient(pool, dependency)
    proto = descriptor_pb2.FileDescriptorProto()
    file.CopyToProto(proto)
    _as_bytes(proto.message_type)
    pool.Add(proto)


_POOL: Final = descriptor_pool.DescriptorPool()


@functools.cache
def _lenient_class(descriptor: Descriptor) -> type[Message]:
    _add_lenient(_POOL, descriptor.file)
    return message_factory.GetMessageClass(_POOL.FindMessageTypeByName(descriptor.full_name))


def lenient(descriptor: Descriptor, data: bytes) -> Message | None:
    """``data`` parsed as the lenient copy of ``descriptor`` (strings as bytes), or None if even that fails."""
    try:
        return _lenient_class(descriptor).FromString(data)
    except DecodeError:
        return None


def _items(message: Any, field: FieldDescriptor, path: str) -> list[tuple[str, Any]]:
    value = getattr(message, field.name)
    if field.message_type is not None and field.message_type.GetOptions().map_entry:
        # Plain messages in the lenient copy; an index would mean nothing to the client.
        return [(path, entry) for entry in value]
    if field.is_repeated:
        return [(f"{path}[{i}]", item) for i, item in enumerate(value)]
    if field.message_type is not None and not message.HasField(field.name):
        return []
    return [(path, value)]


def _not_utf8(message: Any, descriptor: Descriptor, prefix: str = "") -> str | None:
    """The path of the first string field of ``message`` (a lenient copy of ``descriptor``) that is not UTF-8."""
    for field in descriptor.fields:
        for path, value in _items(message, field, prefix + field.name):
            if field.message_type is not None:
                found = _not_utf8(value, field.message_type, f"{path}.")
                if found:
                    return found
            elif field.type == FieldDescriptor.TYPE_STRING:
                try:
                    value.decode("utf-8")
                except UnicodeDecodeError:
                    return path
    return None


def explain(descriptor: Descriptor, data: bytes) -> str:
    """What is wrong with ``data``, which does not parse as ``descriptor``: the field that is not UTF-8, if any."""
    message = lenient(descriptor, data)
    path = None if message is None else _not_utf8(message, descriptor)
    if path is None:
        return f"request is not a valid {descriptor.name} message"
    return f"{path} is not valid UTF-8"


def tolerant(deserializer: Callable[[bytes], Any], descriptor: Descriptor) -> Callable[[bytes], Any]:
    """``deserializer`` that returns an Undecodable instead of raising on a message it cannot parse."""

    def deserialize(data: bytes) -> Any:
        try:
            return deserializer(data)
        except DecodeError:
            return Undecodable(data, explain(descriptor, data))

    return deserialize


def method_input(full_method: str) -> Descriptor | None:
    """The request type of a gRPC method path (``/package.Service/Method``), if protobuf knows it."""
    service, _, method = full_method.lstrip("/").rpartition("/")
    try:
        return descriptor_pool.Default().FindServiceByName(service).methods_by_name[method].input_type
    except KeyError:
        return None
