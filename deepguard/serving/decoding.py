"""Registering the DeepGuard service so that a malformed request message is the client's error.

Why: with the generated registration, grpcio decodes each request before the servicer runs and answers a message
that does not parse with ``INTERNAL`` ("Exception deserializing request!"), the code this server reserves for its
own bugs. Here the decoder never raises: it hands the servicer an :class:`Undecodable` marker, and the call is
answered ``INVALID_ARGUMENT`` naming the message type (unary calls), or ends with it after the results of the
messages before it (streams, through :class:`~deepguard.errors.MediaError` like any bad frame or chunk).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass

import grpc

from deepguard.errors import MediaError
from deepguard.proto import deepguard_pb2 as pb

SERVICE = pb.DESCRIPTOR.services_by_name["DeepGuard"]


@dataclass(frozen=True)
class Undecodable:
    """Stands in for a request message whose bytes did not parse."""

    message: str


def _decoder(cls) -> Callable[[bytes], object]:
    def decode(data: bytes):
        try:
            return cls.FromString(data)
        except Exception as e:  # noqa: BLE001 - protobuf raises DecodeError and, for some inputs, others
            return Undecodable(f"request is not a valid {cls.DESCRIPTOR.name} message ({type(e).__name__})")

    return decode


def _unary(method):
    def handler(request, context):
        if isinstance(request, Undecodable):
            context.abort(grpc.StatusCode.INVALID_ARGUMENT, request.message)
        return method(request, context)

    return handler


def _checked(requests: Iterator) -> Iterator:
    for i, r in enumerate(requests):
        if isinstance(r, Undecodable):
            raise MediaError(f"message {i}: {r.message}")
        yield r


def _streaming(method):
    def handler(requests, context):
        return method(_checked(requests), context)

    return handler


def add_service(servicer, server: grpc.Server) -> None:
    """``add_DeepGuardServicer_to_server`` with the lenient decoder (every RPC of the proto's service)."""
    handlers = {}
    for m in SERVICE.methods:
        req, resp = getattr(pb, m.input_type.name), getattr(pb, m.output_type.name)
        fn = getattr(servicer, m.name)
        kw = {"request_deserializer": _decoder(req), "response_serializer": resp.SerializeToString}
        if m.client_streaming and m.server_streaming:
            handlers[m.name] = grpc.stream_stream_rpc_method_handler(_streaming(fn), **kw)
        elif not m.client_streaming and not m.server_streaming:
            handlers[m.name] = grpc.unary_unary_rpc_method_handler(_unary(fn), **kw)
        else:  # not in the proto today; a new shape must be wired here on purpose
            raise TypeError(f"{m.name}: unsupported streaming shape")
    server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler(SERVICE.full_name, handlers),))
