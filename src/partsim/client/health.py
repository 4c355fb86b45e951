"""The client side of grpc.health.v1 ``Check``, without grpcio-health-checking.

The thin client install (``pip install partsim``) carries grpcio, grpcio-status and protobuf only, so the two
messages of the standard health protocol (https://github.com/grpc/grpc/blob/master/doc/health-checking.md) are
built here from their descriptor, in a descriptor pool of their own (no clash with grpc_health's copies, which the
services load). ``PartsimClient.wait_ready`` and ``partsim health`` call :func:`check`.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import grpc
from google.protobuf import descriptor_pb2, descriptor_pool, message_factory

METHOD = "/grpc.health.v1.Health/Check"
# HealthCheckResponse.ServingStatus
UNKNOWN, SERVING, NOT_SERVING, SERVICE_UNKNOWN = 0, 1, 2, 3
STATUS_NAMES = {UNKNOWN: "UNKNOWN", SERVING: "SERVING", NOT_SERVING: "NOT_SERVING", SERVICE_UNKNOWN: "SERVICE_UNKNOWN"}


def _messages() -> tuple[Any, Any]:
    F = descriptor_pb2.FieldDescriptorProto
    proto = descriptor_pb2.FileDescriptorProto(
        name="partsim/client/grpc_health_v1.proto", package="grpc.health.v1", syntax="proto3"
    )
    request = proto.message_type.add(name="HealthCheckRequest")
    request.field.add(name="service", number=1, type=F.TYPE_STRING, label=F.LABEL_OPTIONAL)
    response = proto.message_type.add(name="HealthCheckResponse")
    status = response.enum_type.add(name="ServingStatus")
    for number, name in STATUS_NAMES.items():
        status.value.add(name=name, number=number)
    response.field.add(
        name="status",
        number=1,
        type=F.TYPE_ENUM,
        label=F.LABEL_OPTIONAL,
        type_name=".grpc.health.v1.HealthCheckResponse.ServingStatus",
    )
    pool = descriptor_pool.DescriptorPool()
    pool.Add(proto)
    return (
        message_factory.GetMessageClass(pool.FindMessageTypeByName("grpc.health.v1.HealthCheckRequest")),
        message_factory.GetMessageClass(pool.FindMessageTypeByName("grpc.health.v1.HealthCheckResponse")),
    )


HealthCheckRequest, HealthCheckResponse = _messages()


def check(
    channel: grpc.Channel, service: str = "", timeout: float | None = None, metadata: Sequence[tuple[str, str]] = ()
) -> int:
    """One ``Check`` of ``service`` ("" = the whole server): its ServingStatus (:data:`SERVING`, ...).

    Raises:
        grpc.RpcError: the call failed (NOT_FOUND: the server does not know ``service``; UNAVAILABLE, ...).
    """
    call = channel.unary_unary(
        METHOD,
        request_serializer=HealthCheckRequest.SerializeToString,
        response_deserializer=HealthCheckResponse.FromString,
    )
    return int(call(HealthCheckRequest(service=service), timeout=timeout, metadata=tuple(metadata)).status)


def status_name(status: int) -> str:
    return STATUS_NAMES.get(status, str(status))
