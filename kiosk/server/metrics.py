"""Prometheus metrics of one server, served on a separate loopback port when ``[metrics] listen`` is set.

Each server has its own ``CollectorRegistry``: nothing is kept in prometheus_client's
global default registry, so several servers (tests) can run in one process.

No label value is personal. Every one comes from a closed set the service defines
itself (RPC and status code names, decisions, stage names, reason codes, model roles
and versions, the configured device id and profile); reason, stage and check names are
additionally checked against ``CODE`` and counted as "other" if they do not fit, so a
future code path cannot leak free text into a label. Request ids, client identities,
similarities and thresholds met by a person are never labels; per-person scores are
not recorded at all, only the calibrated thresholds in force.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from wsgiref.simple_server import WSGIServer

from prometheus_client import (
    CollectorRegistry,
    Counter,
    GCCollector,
    Gauge,
    Histogram,
    Info,
    PlatformCollector,
    ProcessCollector,
    start_http_server,
)
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

from kiosk.server.info import ServiceInfo, core_dumps_disabled, runtime_versions, service_version, swap_active

# What a reason, stage or check name must look like to become a label value.
CODE = re.compile(r"[a-z][a-z0-9_]{0,47}")
OTHER = "other"
NO_DECISION = "none"
# Whole calls: a Pi 4 verification takes 0.1-0.5 s, a live session up to its 30 s deadline.
CALL_BUCKETS = (0.025, 0.05, 0.1, 0.15, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)
# One pipeline stage, summed over the images of a call: milliseconds to a few hundred.
STAGE_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0)


def code_label(value: str) -> str:
    """``value`` if it is a snake_case code, else "other"."""
    return value if CODE.fullmatch(value) else OTHER


class _HardeningCollector(Collector):
    """Swap and core-dump state, read at every scrape like GetInfo does, not cached."""

    def collect(self) -> Iterator[GaugeMetricFamily]:
        yield GaugeMetricFamily(
            "kiosk_swap_active",
            "1 when a swap device is active: memory holding photos could reach disk",
            value=float(swap_active()),
        )
        yield GaugeMetricFamily(
            "kiosk_core_dumps_disabled",
            "1 when the service cannot write core dumps (RLIMIT_CORE is 0 and the process is not dumpable)",
            value=float(core_dumps_disabled()),
        )


class ServiceMetrics:
    """The counters, histograms and info gauges of one server, and their HTTP endpoint."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        self._build = Info("kiosk_build", "Service and runtime versions", registry=r)
        self._build.info({"version": service_version(), **runtime_versions()})
        self._ready = Gauge("kiosk_ready", "1 while health says SERVING (models loaded and warmed up)", registry=r)
        self._models = Gauge(
            "kiosk_model_info", "Loaded models: 1 per role and version", ["role", "version"], registry=r
        )
        self._deployment = Gauge(
            "kiosk_deployment_info",
            "1, labelled with the device id, hardware profile, board and calibration date in force",
            ["device_id", "hardware_profile", "board_model", "calibration_created"],
            registry=r,
        )
        self._thresholds = Gauge(
            "kiosk_operating_point_threshold",
            "Calibrated similarity threshold per target FMR",
            ["target_fmr"],
            registry=r,
        )
        self._default_fmr = Gauge("kiosk_default_target_fmr", "Target FMR used when a request names none", registry=r)
        self._requests = Counter(
            "kiosk_requests",
            "Finished calls by RPC and decision (none: no decision, e.g. an error)",
            ["rpc", "decision"],
            registry=r,
        )
        self._errors = Counter(
            "kiosk_errors", "Calls that ended with a non-OK gRPC status", ["rpc", "code"], registry=r
        )
        self._retries = Counter("kiosk_retries", "RETRY decisions by reason code", ["reason"], registry=r)
        self._liveness = Counter(
            "kiosk_liveness", "Liveness outcomes of decisions", ["status", "failed_check"], registry=r
        )
        self._duration = Histogram(
            "kiosk_request_duration_seconds", "Wall time of whole calls", ["rpc"], buckets=CALL_BUCKETS, registry=r
        )
        self._stages = Histogram(
            "kiosk_stage_duration_seconds",
            "Time per pipeline stage of each decision (summed over the call's images)",
            ["stage"],
            buckets=STAGE_BUCKETS,
            registry=r,
        )
        r.register(_HardeningCollector())
        # Resident memory, CPU, open files and start time of the process: what MemoryMax
        # and restarts are judged by.
        ProcessCollector(registry=r)
        PlatformCollector(registry=r)
        GCCollector(registry=r)
        self._http: WSGIServer | None = None

    # ------------------------------------------------------------------ state

    def loaded(self, info: ServiceInfo) -> None:
        """The service is SERVING with this configuration (the same data GetInfo reports)."""
        for role, version in info.model_versions.items():
            self._models.labels(role, version).set(1)
        self._deployment.labels(
            info.device_id, info.hardware_profile, info.board_model, info.calibration_created
        ).set(1)
        for point in info.operating_points:
            self._thresholds.labels(f"{point.target_fmr:g}").set(point.threshold)
        self._default_fmr.set(info.default_target_fmr)
        self._ready.set(1)

    def stopping(self) -> None:
        self._ready.set(0)

    # ------------------------------------------------------------------ calls

    def observe_call(
        self,
        rpc: str,
        code: str,
        seconds: float,
        decision: str = "",
        reason: str = "",
        liveness: str = "",
        failed_check: str = "",
        timings_ms: dict[str, float] | None = None,
    ) -> None:
        """One finished call: ``code`` is the status name, ``decision`` "" when none was given."""
        self._requests.labels(rpc, code_label(decision) if decision else NO_DECISION).inc()
        if code != "OK":
            self._errors.labels(rpc, code).inc()
        self._duration.labels(rpc).observe(seconds)
        if decision == "retry":
            self._retries.labels(code_label(reason)).inc()
        if liveness:
            self._liveness.labels(code_label(liveness), code_label(failed_check) if failed_check else "").inc()
        for stage, ms in (timings_ms or {}).items():
            self._stages.labels(code_label(stage)).observe(ms / 1000.0)

    # ------------------------------------------------------------------ endpoint

    def serve(self, host: str, port: int) -> int:
        """Serve ``/metrics`` over HTTP on ``host:port`` in a daemon thread; the bound port."""
        self._http, _ = start_http_server(port, addr=host, registry=self.registry)
        return self._http.server_port

    def close(self) -> None:
        if self._http is not None:
            self._http.shutdown()
            self._http.server_close()
            self._http = None
