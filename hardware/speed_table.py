"""The per-board speed tables of models/README.md, generated from benchmark JSON files.

    python -m pytest tests/bench -n 0 --benchmark-enable --benchmark-json=bench-x86.json
    python -m hardware.speed_table bench-x86.json [bench-rpi4b.json ...] [--readme models/README.md]

Each file is pytest-benchmark's JSON; the board is the hardware profile recorded in
every benchmark's ``extra_info`` (tests/bench stamps it). Boards with no file get "not
measured here": their figures come from running the same benchmarks on the board, or
the HIL harness (``python -m hardware.hil``) against its service.

With ``--readme`` the tables replace what stands between the markers
``<!-- speed-table:start -->`` and ``<!-- speed-table:end -->`` in that file; otherwise
they are printed.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from collections import defaultdict
from pathlib import Path

from kiosk.runtime.profile import available_profiles

START, END = "<!-- speed-table:start -->", "<!-- speed-table:end -->"
NOT_MEASURED = "not measured here — run the HIL harness (`python -m hardware.hil`)"
MODEL_ROLES = ("mtcnn_pnet", "mtcnn_rnet", "mtcnn_onet", "embedder", "liveness", "eye_state", "face_mesh")
MODEL_WORK = {
    "mtcnn_pnet": "p-net, whole pyramid of a 640x480 frame",
    "mtcnn_rnet": "r-net, every p-net candidate",
    "mtcnn_onet": "o-net, every r-net survivor",
    "embedder": "fr_feature, one aligned face",
    "liveness": "fr_liveness, one crop",
    "eye_state": "fr_eye, two eye patches",
    "face_mesh": "face mesh, one crop",
}


# Boards not measured yet: their float32 matmul peak estimated from public figures, for
# the ESTIMATE rows (each model at the share of peak it reaches on the measured board).
# Pi 4 (Cortex-A72, 4 x 1.5 GHz): High Performance Linpack measured about 8 GFLOP/s in
# float64 on 4 cores (W. Feiereisen, "Benchmarking the Raspberry Pi 4 with Raspberry Pi
# OS64", 2022); float32 NEON has twice the lanes -> ~16 GFLOP/s, times 3/4 for the
# profile's 3 threads. Pi 5 (Cortex-A76, 4 x 2.4 GHz): the same FMA width per cycle,
# scaled by clock only (an underestimate if its wider core sustains more).
ESTIMATED_PEAK_GFLOPS = {"rpi4b": 16.0 * 3 / 4, "rpi5": 16.0 * 2.4 / 1.5 * 3 / 4}


def _board(bench: dict) -> str:
    info = bench.get("extra_info", {})
    return info.get("profile") or info.get("hardware_profile") or "unknown"


def load(paths: list[Path]) -> dict[str, list[dict]]:
    """Benchmarks by board (hardware profile name)."""
    boards: dict[str, list[dict]] = defaultdict(list)
    for path in paths:
        for bench in json.loads(path.read_text())["benchmarks"]:
            boards[_board(bench)].append(bench)
    return boards


def _find(benches: list[dict], name_pattern: str) -> dict | None:
    for bench in benches:
        if re.fullmatch(name_pattern, bench["name"]):
            return bench
    return None


def _ms(seconds: float) -> str:
    return f"{seconds * 1000:.1f}"


def _machine(benches: list[dict]) -> str:
    for bench in benches:
        machine = bench.get("extra_info", {}).get("machine")
        if machine:
            return f"{machine['board']}, {machine['cpus']} CPUs, onnxruntime {machine['onnxruntime']}"
    return ""


def _unmeasured_row(name: str, columns: int) -> str:
    return f"| {name} | {NOT_MEASURED} |" + " |" * (columns - 1)


def model_table(boards: dict[str, list[dict]], names: list[str]) -> str:
    """Boards as rows, models as columns: median ms per call (GFLOP/s, share of the matmul peak)."""
    gflop = {}
    for benches in boards.values():
        for role in MODEL_ROLES:
            bench = _find(benches, rf"test_bench_model\[{role}\]")
            if bench is not None:
                gflop[role] = bench["extra_info"]["gflop"]
    head = "| board | " + " | ".join(f"{MODEL_WORK[r]} ({gflop.get(r, 0):.3f} GFLOP)" for r in MODEL_ROLES) + " | float32 matmul peak |"
    lines = [head, "|---|" + "---:|" * (len(MODEL_ROLES) + 1)]
    measured = next((boards[n] for n in names if n in boards), None)
    for name in names:
        if name not in boards:
            if name in ESTIMATED_PEAK_GFLOPS and measured is not None:
                lines.append(_estimated_row(name, measured, ESTIMATED_PEAK_GFLOPS[name]))
            else:
                lines.append(_unmeasured_row(name, len(MODEL_ROLES) + 1))
            continue
        cells, peak = [], None
        for role in MODEL_ROLES:
            bench = _find(boards[name], rf"test_bench_model\[{role}\]")
            if bench is None:
                cells.append("")
                continue
            info, stats = bench["extra_info"], bench["stats"]
            # Best as well as median: on a shared machine the best run is the one least disturbed.
            cell = f"{_ms(stats['median'])} ms, best {_ms(stats['min'])}"
            if "peak_gflops_per_s" in info:
                peak = info["peak_gflops_per_s"]
                best_rate = info["gflop"] / stats["min"]
                cell += f" ({best_rate:.1f} GFLOP/s, {100 * best_rate / peak:.0f} % of peak)"
            cells.append(cell)
        lines.append(f"| {name} | " + " | ".join(cells) + f" | {f'{peak:.1f} GFLOP/s' if peak else ''} |")
    return "\n".join(lines)


def _estimated_row(name: str, measured: list[dict], peak: float) -> str:
    """ESTIMATE: each model's GFLOP at the share of peak it reached (best run) on the measured board."""
    cells, total = [], 0.0
    for role in MODEL_ROLES:
        bench = _find(measured, rf"test_bench_model\[{role}\]")
        info = bench["extra_info"] if bench else {}
        if not bench or "peak_gflops_per_s" not in info:
            cells.append("")
            continue
        share = info["gflop"] / bench["stats"]["min"] / info["peak_gflops_per_s"]
        seconds = info["gflop"] / (share * peak)
        total += seconds
        cells.append(f"~{_ms(seconds)} ms")
    return (
        f"| {name} (ESTIMATE from FLOPs, not measured) | " + " | ".join(cells)
        + f" | ~{peak:.0f} GFLOP/s (public figures; these models: ~{_ms(total)} ms) |"
    )


def service_table(boards: dict[str, list[dict]], names: list[str]) -> str:
    """Boards as rows; whole-pipeline and service figures as columns, with the board's budget."""
    profiles = available_profiles()

    def latency(bench: dict) -> str:
        info, stats = bench["extra_info"], bench["stats"]
        p95 = info.get("p95_ms")
        return f"{_ms(stats['median'])}" + (f" / {p95:.1f}" if p95 is not None else "") + f" (best {_ms(stats['min'])})"

    columns = [
        ("Verify, 640x480 ID photo + frame, 1 thread: median / p95 ms", r"test_bench_verify\[1threads\]", latency),
        ("2 threads", r"test_bench_verify\[2threads\]", latency),
        ("4 threads", r"test_bench_verify\[4threads\]", latency),
        ("Verify, 250 px ID photo + 250 px photo, in process: median / p95 ms", r"test_verify_in_process", latency),
        ("same over gRPC (localhost)", r"test_verify_grpc_localhost", latency),
        ("detect live frame, ms", r"test_bench_detect_live_frame\[2threads\]", latency),
        ("detect ID photo, ms", r"test_bench_detect_id_photo", latency),
        ("session frames/s in process", r"test_bench_session_frame",
         lambda b: f"{b['extra_info'].get('frames_per_s', 0):.1f}"),
        ("session frames/s over gRPC", r"test_session_stream_grpc", lambda b: f"{b['extra_info']['frames_per_s']:.1f}"),
        ("cold start to SERVING", r"test_cold_start", lambda b: f"{b['extra_info']['cold_start_median_s']:.1f} s"),
        ("RSS after warm-up -> after N Verify", r"test_memory_soak",
         lambda b: (f"{b['extra_info']['rss_mb_after_warmup']:.0f} -> {b['extra_info']['rss_mb_end']:.0f} MB "
                    f"({b['extra_info']['growth_pct']:+.2f} %, N = {b['extra_info']['requests']})")),
    ]
    head = "| board | " + " | ".join(label for label, _, _ in columns) + " | budget: Verify p95 / session frames/s |"
    lines = [head, "|---|" + "---:|" * (len(columns) + 1)]
    for name in names:
        budget = profiles[name].budgets if name in profiles else None
        budget_cell = f"{budget.verify_p95_ms:.0f} ms / {budget.session_fps:.0f}" if budget else ""
        if name not in boards:
            lines.append(f"| {name} | {NOT_MEASURED} |" + " |" * (len(columns) - 1) + f" {budget_cell} |")
            continue
        cells = []
        for _, pattern, render in columns:
            bench = _find(boards[name], pattern)
            cells.append(render(bench) if bench else "")
        lines.append(f"| {name} | " + " | ".join(cells) + f" | {budget_cell} |")
    return "\n".join(lines)


def tables(boards: dict[str, list[dict]]) -> str:
    names = sorted(set(available_profiles()) | set(boards), key=lambda n: (n not in boards, n))
    machines = "; ".join(f"{n}: {_machine(boards[n])}" for n in names if n in boards)
    return (
        f"Measured on {machines}. Generated by `python -m hardware.speed_table` from "
        "`python -m pytest tests/bench -n 0 --benchmark-enable --benchmark-json=...`. Per model: median and "
        "best time of the work one Verify of a 640x480 webcam frame gives it (GFLOP counted from the ONNX "
        "graph by hardware/flops.py), and at the best time its GFLOP/s and their share of the float32 "
        "matmul peak. Rows marked ESTIMATE are not measurements: the board's float32 peak from public "
        "figures (hardware/speed_table.py, ESTIMATED_PEAK_GFLOPS) times each model's measured share of peak; "
        "they hold until the HIL harness runs on the board.\n\n"
        + model_table(boards, names)
        + "\n\n"
        + service_table(boards, names)
        + "\n"
    )


def replace_between_markers(text: str, content: str) -> str:
    if START not in text or END not in text:
        raise ValueError(f"markers {START} / {END} not found")
    before, rest = text.split(START, 1)
    _, after = rest.split(END, 1)
    return f"{before}{START}\n{content}{END}{after}"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("json", nargs="+", type=Path, help="pytest-benchmark JSON files")
    parser.add_argument("--readme", type=Path, help="replace the tables between the markers in this file")
    args = parser.parse_args(argv)
    content = tables(load(args.json))
    if args.readme:
        args.readme.write_text(replace_between_markers(args.readme.read_text(), content))
    else:
        print(content)
    return 0


if __name__ == "__main__":
    sys.exit(main())
