"""Errors to gRPC status, in this one place, with messages safe to send to a kiosk.

A ``KioskError`` names its status code; its message was written to be shown to a
client, except for server-side failures (INTERNAL), whose details stay in the log.
Anything else is a bug: the client gets INTERNAL "internal error" and the log gets
the exception type and the stack, never the exception's text, which could quote a
request field.
"""

from __future__ import annotations

import logging
import traceback
from collections.abc import Iterator
from contextlib import contextmanager
from typing import NoReturn

import grpc

from kiosk.audit import AuditError
from kiosk.errors import KioskError, ModelFailure, RateLimited

LOG = logging.getLogger("kiosk.server")

INTERNAL_MESSAGE = "internal error"
# Trailing metadata key of a rate-limit refusal: milliseconds until a call would be admitted.
RETRY_AFTER_KEY = "retry-after-ms"


class ServiceUnavailable(KioskError):
    """The service cannot take calls yet (models loading) or any more (shutting down)."""

    status_code = "UNAVAILABLE"


class ClientCancelled(KioskError):
    """The client cancelled the call or went away while the server waited for it."""

    status_code = "CANCELLED"


def status_for(error: KioskError) -> tuple[grpc.StatusCode, str]:
    """The status code and client-facing message for a deliberate error."""
    code = getattr(grpc.StatusCode, error.status_code, grpc.StatusCode.INTERNAL)
    if code is grpc.StatusCode.OK:
        # An Undecidable must have become a RETRY decision; reaching here is a bug.
        return grpc.StatusCode.INTERNAL, INTERNAL_MESSAGE
    if code is not grpc.StatusCode.INTERNAL:
        return code, error.message
    if isinstance(error, AuditError):
        return code, "the decision could not be recorded in the audit log, so none is given"
    if isinstance(error, ModelFailure):
        return code, "model inference failed"
    return code, INTERNAL_MESSAGE


def abort(context: grpc.ServicerContext, method: str, error: KioskError) -> NoReturn:
    code, message = status_for(error)
    if code is grpc.StatusCode.INTERNAL:
        # The client got a generic message; the operator gets the real one.
        LOG.error("%s failed: %s: %s", method, type(error).__name__, error.message)
    if isinstance(error, RateLimited):
        # Machine-readable as well as in the message, so a client can back off exactly.
        context.set_trailing_metadata(((RETRY_AFTER_KEY, str(error.retry_after_ms)),))
    context.abort(code, message)
    raise AssertionError("context.abort returned")  # grpc's abort always raises


@contextmanager
def mapped_errors(context: grpc.ServicerContext, method: str) -> Iterator[None]:
    """Turn whatever the body raises into a status; wraps every servicer method."""
    try:
        yield
    except KioskError as e:
        abort(context, method, e)
    except Exception as e:
        stack = "".join(traceback.format_list(traceback.extract_tb(e.__traceback__)))
        LOG.error("%s failed with unexpected %s at\n%s", method, type(e).__name__, stack)
        context.abort(grpc.StatusCode.INTERNAL, INTERNAL_MESSAGE)
