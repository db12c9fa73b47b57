"""Bearer-token authentication for every gRPC method except health checking.

Why an interceptor: the check then sits in front of every method, including ones added later, and the
servicer code never sees an unauthenticated call. Health stays open because load balancers and Kubernetes
probes do not carry application tokens and reveal nothing. The comparison is constant-time.
"""

from __future__ import annotations

import hmac

import grpc

EXEMPT_PREFIXES = ("/grpc.health.v1.Health/",)
_DENIED = "missing or invalid bearer token: send metadata 'authorization: Bearer <token>'"


def token_ok(header: str | None, token: str) -> bool:
    """``header`` is the raw authorization value (``Bearer <token>``)."""
    if not header:
        return False
    scheme, _, value = header.strip().partition(" ")
    return scheme.lower() == "bearer" and hmac.compare_digest(value.strip().encode(), token.encode())


def _deny_unary(request, context):
    context.abort(grpc.StatusCode.UNAUTHENTICATED, _DENIED)


def _deny_stream(request_or_iterator, context):
    context.abort(grpc.StatusCode.UNAUTHENTICATED, _DENIED)
    yield  # pragma: no cover - abort raises


class TokenAuthInterceptor(grpc.ServerInterceptor):
    def __init__(self, token: str, exempt: tuple[str, ...] = EXEMPT_PREFIXES) -> None:
        self._token = token
        self._exempt = exempt

    def intercept_service(self, continuation, handler_call_details):
        if handler_call_details.method.startswith(self._exempt):
            return continuation(handler_call_details)
        header = next(
            (v for k, v in handler_call_details.invocation_metadata or () if k.lower() == "authorization"),
            None,
        )
        handler = continuation(handler_call_details)
        if handler is None or token_ok(header, self._token):
            return handler
        # Same shape as the real handler, so the client gets a clean UNAUTHENTICATED status.
        kwargs = {
            "request_deserializer": handler.request_deserializer,
            "response_serializer": handler.response_serializer,
        }
        if handler.request_streaming and handler.response_streaming:
            return grpc.stream_stream_rpc_method_handler(_deny_stream, **kwargs)
        if handler.request_streaming:
            return grpc.stream_unary_rpc_method_handler(_deny_unary, **kwargs)
        if handler.response_streaming:
            return grpc.unary_stream_rpc_method_handler(_deny_stream, **kwargs)
        return grpc.unary_unary_rpc_method_handler(_deny_unary, **kwargs)
