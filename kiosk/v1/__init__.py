"""Generated protobuf and gRPC code for the ``kiosk.v1`` API; regenerate with ``python proto/generate.py``.

Nothing in this package but this file is written by hand.
"""
