"""The server's parts, one job per module (``deepguard.server`` wires them together and is the entry point).

config (limits, addresses, auth rules) - batcher (dynamic cross-request batching) - engine (frames -> results
over the shared batchers) - wire (protobuf <-> runtime types, raw-pixel decoding) - service (the gRPC servicer)
- auth (bearer-token interceptor) - metrics (Prometheus) - logs (JSON logs).
"""
