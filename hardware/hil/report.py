"""Summarise a HIL run: latency percentiles, throughput, memory, thermals, and the profile's budget.

The budget comes from the hardware profile the device reports in GetInfo (or the one
named on the command line): ``verify_p95_ms`` for Verify runs, ``session_fps`` for
session runs. Only successful calls count towards latency; errors are listed by status.
Memory growth: median RSS of the run's last quarter against its second quarter.
"""

from __future__ import annotations

import dataclasses
import statistics
from collections import Counter

from hardware.hil.runner import RunResult
from kiosk.runtime.profile import HardwareProfile

# Share of the run before memory growth is measured (see ``summarise``).
WARMUP_SHARE = 0.25


def percentile(values: list[float], q: float) -> float:
    """The q-th percentile (0..100), linear between closest ranks; NaN for no values."""
    if not values:
        return float("nan")
    ordered = sorted(values)
    k = (len(ordered) - 1) * q / 100.0
    low = int(k)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (k - low)


def summarise(result: RunResult, profile: HardwareProfile) -> dict:
    ok = [c for c in result.calls if not c.outcome.startswith("error:")]
    latencies = [c.latency_ms for c in ok]
    config = result.config
    summary: dict = {
        "device": config.address,
        "mode": config.mode,
        "concurrency": config.concurrency,
        "hardware_profile": result.info.hardware_profile,
        "budget_profile": profile.name,
        "board_model": result.info.board_model,
        "model_versions": result.info.model_versions,
        "runtime_versions": result.info.runtime_versions,
        "wall_s": round(result.wall_s, 2),
        "calls": len(result.calls),
        "outcomes": dict(Counter(c.outcome for c in result.calls)),
        "latency_ms": {
            "p50": round(percentile(latencies, 50), 1),
            "p95": round(percentile(latencies, 95), 1),
            "p99": round(percentile(latencies, 99), 1),
            "max": round(max(latencies), 1) if latencies else float("nan"),
        },
        "throughput_per_s": round(len(ok) / result.wall_s, 2) if result.wall_s else 0.0,
    }
    stages = sorted({stage for c in ok for stage in c.stage_ms})
    if stages:
        summary["server_stage_ms_p50"] = {
            s: round(percentile([c.stage_ms.get(s, 0.0) for c in ok], 50), 1) for s in stages
        }
    if config.mode == "session":
        rates = [(c.frames - 1) / (c.stream_ms / 1000) for c in ok if c.frames > 1 and c.stream_ms > 0]
        summary["session_fps"] = {"p50": round(percentile(rates, 50), 2), "min": round(min(rates), 2) if rates else float("nan")}
    rss = [s.rss_kib for s in result.samples if s.rss_kib is not None]
    rss_warm, rss_end = _rss_levels(result)
    temps = [s.temperature_c for s in result.samples if s.temperature_c is not None]
    throttled_now = sorted({flag for s in result.samples if s.throttling for flag in s.throttling.now})
    throttled_boot = sorted({flag for s in result.samples if s.throttling for flag in s.throttling.since_boot})
    summary["memory"] = (
        {"rss_mb_first": round(rss[0] / 1024, 1), "rss_mb_after_warmup": round(rss_warm / 1024, 1),
         "rss_mb_last": round(rss_end / 1024, 1), "rss_mb_max": round(max(rss) / 1024, 1),
         "growth_pct": round(100.0 * (rss_end - rss_warm) / rss_warm, 2)}
        if rss else {"unavailable": f"no RSS readings via {result.probe} (give --pid, --ssh or run on the device)"}
    )
    summary["thermal"] = (
        {"temp_c_first": temps[0], "temp_c_max": max(temps), "temp_c_last": temps[-1]}
        if temps else {"unavailable": f"no thermal zones readable via {result.probe}"}
    )
    readings = [s for s in result.samples if s.throttling is not None]
    summary["throttling"] = (
        {"during_run": throttled_now, "since_boot": throttled_boot, "readings": len(readings)}
        if readings else {"unavailable": f"vcgencmd get_throttled not available via {result.probe}"}
    )
    summary["samples"] = [dataclasses.asdict(s) for s in result.samples]
    summary["budget"] = _budget(summary, profile)
    return summary


def _rss_levels(result: RunResult) -> tuple[float | None, float | None]:
    """Median RSS over the run's second quarter and over its last quarter.

    The first quarter is warm-up: the first calls allocate buffers that stay (gRPC, OpenCV,
    the runtime, one malloc arena per worker thread). Medians, because RSS moves by several
    MB between single readings as requests come and go; a leak moves the whole quarter.
    """
    wall = result.wall_s or 1.0
    readings = [(s.t / wall, s.rss_kib) for s in result.samples if s.rss_kib is not None]
    if not readings:
        return None, None
    second = [r for f, r in readings if WARMUP_SHARE <= f < 2 * WARMUP_SHARE] or [readings[0][1]]
    last = [r for f, r in readings if f >= 1 - WARMUP_SHARE] or [readings[-1][1]]
    return statistics.median(second), statistics.median(last)


def _budget(summary: dict, profile: HardwareProfile) -> dict:
    budgets = profile.budgets
    if summary["mode"] == "verify":
        measured, limit = summary["latency_ms"]["p95"], budgets.verify_p95_ms
        met = measured <= limit
        what = "verify p95 ms"
    else:
        measured, limit = summary["session_fps"]["p50"], budgets.session_fps
        met = measured >= limit
        what = "session frames/s (median)"
    refused = sum(n for outcome, n in summary["outcomes"].items() if outcome.startswith("error:"))
    return {"measure": what, "measured": measured, "budget": limit, "met": bool(met) and refused == 0,
            "errors": refused}


def format_table(summary: dict) -> str:
    lat = summary["latency_ms"]
    budget = summary["budget"]
    rows = [
        ("device", f"{summary['device']} ({summary['board_model'] or 'no device-tree model'}), "
                   f"profile {summary['hardware_profile']}"),
        ("run", f"{summary['mode']}, {summary['calls']} calls in {summary['wall_s']} s, concurrency {summary['concurrency']}"),
        ("outcomes", ", ".join(f"{k} {v}" for k, v in sorted(summary["outcomes"].items()))),
        ("latency ms", f"p50 {lat['p50']}  p95 {lat['p95']}  p99 {lat['p99']}  max {lat['max']}"),
        ("throughput", f"{summary['throughput_per_s']} calls/s"),
    ]
    if "session_fps" in summary:
        rows.append(("session fps", f"median {summary['session_fps']['p50']}  min {summary['session_fps']['min']}"))
    if "server_stage_ms_p50" in summary:
        rows.append(("server stages p50", ", ".join(f"{k} {v}" for k, v in summary["server_stage_ms_p50"].items())))
    mem, thermal, throttling = summary["memory"], summary["thermal"], summary["throttling"]
    rows.append(("RSS", mem.get("unavailable") or
                 f"{mem['rss_mb_first']} at start, {mem['rss_mb_after_warmup']} in the second quarter, "
                 f"{mem['rss_mb_last']} MB in the last (medians; {mem['growth_pct']:+} %; max {mem['rss_mb_max']})"))
    rows.append(("SoC temperature", thermal.get("unavailable") or
                 f"{thermal['temp_c_first']} -> {thermal['temp_c_last']} C (max {thermal['temp_c_max']})"))
    rows.append(("throttling", throttling.get("unavailable") or
                 f"during run: {', '.join(throttling['during_run']) or 'none'}; "
                 f"since boot: {', '.join(throttling['since_boot']) or 'none'}"))
    rows.append(("budget", f"{budget['measure']}: {budget['measured']} vs {budget['budget']} "
                           f"({summary['budget_profile']}) -> {'MET' if budget['met'] else 'NOT MET'}"
                           + (f", {budget['errors']} failed calls" if budget["errors"] else "")))
    width = max(len(name) for name, _ in rows)
    return "\n".join(f"{name.ljust(width)}  {value}" for name, value in rows)
