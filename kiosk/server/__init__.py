"""The gRPC service: ``app`` builds and runs the server, ``servicer`` handles the calls.

``convert`` is the only module that touches both protobuf messages and domain types;
``status`` is the only place where errors become gRPC status codes.
"""
