"""Structured service logs: one JSON object per line on stderr, for the systemd journal.

``serve_forever`` calls ``configure()`` once; importing this module changes nothing.
A log call attaches its fields with ``LOG.info("Verify OK", extra=fields(rpc="Verify"))``,
and they become keys of the line beside ``time``, ``level``, ``logger`` and ``message``.

What may be logged is decided where the fields are built (``kiosk.server.observe``):
request id, client identity, RPC, status, decision, reason and stage timings, never an
image, an embedding or a similarity. An exception is logged as its type and stack
frames only: its text could quote request data.
"""

from __future__ import annotations

import json
import logging
import sys
import traceback
from datetime import datetime, timezone
from typing import Any, TextIO

# The LogRecord attribute that carries a call's structured fields.
FIELDS_ATTR = "kiosk_fields"
# Keys every line has; fields cannot override them.
BASE_KEYS = ("time", "level", "logger", "message")


def fields(**values: Any) -> dict[str, dict[str, Any]]:
    """The ``extra`` argument of a logging call that adds ``values`` to the JSON line."""
    return {FIELDS_ATTR: values}


class JsonFormatter(logging.Formatter):
    """A record as one line of compact JSON (UTF-8 text, non-ASCII kept)."""

    def format(self, record: logging.LogRecord) -> str:
        moment = datetime.fromtimestamp(record.created, timezone.utc)
        entry: dict[str, Any] = {
            "time": moment.strftime("%Y-%m-%dT%H:%M:%S.") + f"{moment.microsecond // 1000:03d}Z",
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        for key, value in getattr(record, FIELDS_ATTR, {}).items():
            if key not in BASE_KEYS:
                entry[key] = value
        if record.exc_info and record.exc_info[0] is not None:
            kind, _, tb = record.exc_info
            entry["exception"] = kind.__name__
            entry["stack"] = "".join(traceback.format_list(traceback.extract_tb(tb)))
        # default=str: a stray non-JSON value must not cost the whole line.
        return json.dumps(entry, ensure_ascii=False, default=str)


def configure(stream: TextIO | None = None, level: int = logging.INFO) -> None:
    """JSON lines to ``stream`` (stderr) from every logger, unless logging is already set up.

    A program that embeds the server, or a test runner, has its own handlers; those are
    left alone.
    """
    root = logging.getLogger()
    if root.handlers:
        return
    handler = logging.StreamHandler(stream if stream is not None else sys.stderr)
    handler.setFormatter(JsonFormatter())
    root.addHandler(handler)
    root.setLevel(level)
