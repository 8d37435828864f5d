"""Drive a kiosk service over gRPC for a sustained run and record every call and board reading.

Two workloads:

* ``verify``: closed loop, ``concurrency`` callers each sending Verify (ID photo + one
  live frame) as soon as the previous answer came back; latency is the client's wall
  clock per call, decode to decision plus the network.
* ``session``: VerifySession streams of ``session_frames`` camera frames each, stamped
  ``frame_interval_ms`` apart and sent as fast as the service answers (or at ``fps``);
  frames per second are frame results received per second of the stream, the ID
  photo's analysis excluded (it happens once per session).

A sampler thread reads the board (``probes``) every ``sample_interval_s`` seconds, so
temperature and throttling are seen over the run, not just at its end.

The service's rate limit (``[service] rate_limit_per_s``, 5/s by default) refuses a
closed-loop caller on a fast board with RESOURCE_EXHAUSTED: those calls are counted by
status code, and the report says so. Run the device under test with
``rate_limit_per_s = 0`` for a throughput measurement.
"""

from __future__ import annotations

import itertools
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field

from hardware.hil.corpus import Pair
from hardware.hil.probes import LocalProbe, Sample
from kiosk.client import KioskClient, RemoteError
from kiosk.domain import Frame
from kiosk.server.calls import Consent, DecisionEvent, FrameEvent
from kiosk.server.info import ServiceInfo


@dataclass(frozen=True)
class RunConfig:
    address: str
    mode: str = "verify"  # verify | session
    duration_s: float | None = 60.0
    requests: int | None = None  # stop after this many calls (sessions), whichever comes first
    concurrency: int = 1
    sample_interval_s: float = 5.0
    session_frames: int = 60
    frame_interval_ms: int = 33
    fps: float | None = None
    timeout_s: float = 30.0
    ca: str | None = None
    cert: str | None = None
    key: str | None = None


@dataclass(frozen=True)
class Call:
    """One Verify call, or one session (``frames`` > 0)."""

    start_s: float  # since the run started
    latency_ms: float
    outcome: str  # decision ("match", "no_match", a retry reason) or "error:CODE"
    frames: int = 0
    stream_ms: float = 0.0  # session: first frame sent to last frame result
    stage_ms: dict[str, float] = field(default_factory=dict)


@dataclass
class RunResult:
    config: RunConfig
    info: ServiceInfo
    wall_s: float
    calls: list[Call]
    samples: list[Sample]
    probe: str


class _Sampler(threading.Thread):
    def __init__(self, probe: LocalProbe, interval_s: float, started: float):
        super().__init__(name="hil-sampler", daemon=True)
        self.probe, self.interval_s, self.started = probe, interval_s, started
        self.samples: list[Sample] = []
        self.stop = threading.Event()

    def run(self) -> None:
        while True:
            self.samples.append(self.probe.sample(time.monotonic() - self.started))
            if self.stop.wait(self.interval_s):
                self.samples.append(self.probe.sample(time.monotonic() - self.started))
                return


def _outcome(verification) -> str:
    return verification.reason or verification.decision.value


def _frames(pair: Pair, count: int, interval_ms: int) -> Iterator[Frame]:
    for k in range(count):
        yield Frame(pair.live_frame, timestamp_ms=1_000 + k * interval_ms)


def _verify(client: KioskClient, consent: Consent, pair: Pair, started: float) -> Call:
    t0 = time.monotonic()
    try:
        verification = client.verify(pair.id_photo, [pair.live_frame], consent=consent)
    except RemoteError as e:
        return Call(t0 - started, (time.monotonic() - t0) * 1000, f"error:{e.status_code}")
    return Call(t0 - started, (time.monotonic() - t0) * 1000, _outcome(verification), stage_ms=dict(verification.timings_ms))


def _session(client: KioskClient, consent: Consent, pair: Pair, config: RunConfig, started: float) -> Call:
    t0 = time.monotonic()
    first = last = None
    frames, outcome = 0, "no_decision"
    try:
        for event in client.session(
            pair.id_photo, _frames(pair, config.session_frames, config.frame_interval_ms), config.fps, consent=consent
        ):
            if isinstance(event, FrameEvent):
                now = time.monotonic()
                # The first frame's answer includes the wait for the ID photo's analysis.
                first = first or now
                last = now
                frames += 1
            elif isinstance(event, DecisionEvent):
                outcome = _outcome(event.verification)
    except RemoteError as e:
        # All frames answered and then the stream closed before a decision is the expected end
        # of a fixed-length session (no challenge was performed); anything else is an error.
        if frames < config.session_frames or e.status_code != "INVALID_ARGUMENT":
            outcome = f"error:{e.status_code}"
    stream_ms = (last - first) * 1000 if first is not None and last is not None else 0.0
    return Call(t0 - started, (time.monotonic() - t0) * 1000, outcome, frames, stream_ms)


def run(config: RunConfig, pairs: list[Pair], probe: LocalProbe) -> RunResult:
    """Run the workload against ``config.address`` until the duration or request count is reached."""
    if config.mode not in ("verify", "session"):
        raise ValueError(f"mode must be verify or session, not {config.mode!r}")
    with KioskClient(config.address, ca=config.ca, cert=config.cert, key=config.key, timeout=config.timeout_s) as client:
        info = client.info()
        consent = Consent(True, info.accepted_consent_versions[0])
        work = itertools.cycle(pairs)
        lock = threading.Lock()
        calls: list[Call] = []
        started = time.monotonic()
        deadline = started + config.duration_s if config.duration_s else float("inf")
        sampler = _Sampler(probe, config.sample_interval_s, started)
        sampler.start()
        # Calls handed out but not yet recorded, so that ``requests`` is never overshot.
        in_flight = [0]

        def worker() -> None:
            while time.monotonic() < deadline:
                with lock:
                    if config.requests is not None and len(calls) + in_flight[0] >= config.requests:
                        return
                    in_flight[0] += 1
                    pair = next(work)
                try:
                    if config.mode == "verify":
                        call = _verify(client, consent, pair, started)
                    else:
                        call = _session(client, consent, pair, config, started)
                finally:
                    with lock:
                        in_flight[0] -= 1
                with lock:
                    calls.append(call)

        threads = [threading.Thread(target=worker, name=f"hil-{i}") for i in range(config.concurrency)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        sampler.stop.set()
        sampler.join()
        wall = time.monotonic() - started
    return RunResult(config, info, wall, sorted(calls, key=lambda c: c.start_s), sampler.samples, probe.where)
