"""gRPC API (package ``deepguard.v1``): ``deepguard.proto`` and the code generated from it.

Regenerate with ``python -m deepguard.proto.build`` (needs the ``dev`` extra); a test fails when the committed
files differ from a fresh generation.
"""
