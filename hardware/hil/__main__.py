"""Command line of the HIL harness: ``python -m hardware.hil --device ADDR`` (see ``hardware.hil``).

Exit status: 0 budget met, 1 budget not met (or calls failed), 2 the run could not be made.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import sys
from pathlib import Path

if not __package__:
    # Run as `python CHECKOUT/hardware/hil ...` from any directory: the board tools
    # (hardware/) are not installed, so the checkout itself goes on the path.
    sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

import kiosk.pipeline  # noqa: E402, F401  (OpenCV's decoder ceilings before cv2 loads)

from hardware.hil import corpus  # noqa: E402
from hardware.hil.local import LocalService, ServiceFailed  # noqa: E402
from hardware.hil.probes import LocalProbe, SshProbe  # noqa: E402
from hardware.hil.report import format_table, summarise  # noqa: E402
from hardware.hil.runner import RunConfig, run  # noqa: E402
from kiosk.client import RemoteError  # noqa: E402
from kiosk.errors import ConfigError  # noqa: E402
from kiosk.runtime.profile import select_profile  # noqa: E402

REPO = Path(__file__).resolve().parent.parent.parent


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m hardware.hil", description=__doc__.splitlines()[0])
    target = parser.add_mutually_exclusive_group(required=True)
    target.add_argument("--device", help="address of the service under test: host:port or unix:PATH")
    target.add_argument("--local", action="store_true", help="start a kiosk serve on this machine and run against it")
    parser.add_argument("--mode", choices=("verify", "session"), default="verify")
    parser.add_argument("--duration", type=float, default=600.0, help="seconds of sustained load (default 600)")
    parser.add_argument("--requests", type=int, help="stop after this many calls or sessions")
    parser.add_argument("--concurrency", type=int, default=1)
    parser.add_argument("--session-frames", type=int, default=60)
    parser.add_argument("--fps", type=float, help="session mode: send frames at this rate (default: as fast as answered)")
    parser.add_argument("--sample-interval", type=float, default=5.0, help="seconds between board readings")
    parser.add_argument("--corpus", type=Path, help="operator's photos: one folder per person (default: generated)")
    parser.add_argument("--faces", type=Path, default=Path(os.environ.get("KIOSK_FACES_DIR", REPO.parent / "shared" / "data" / "faces")))
    parser.add_argument("--profile", help="budget of this hardware profile (default: the one the device reports)")
    parser.add_argument("--local-profile", default="auto", help="--local: the server's hardware profile")
    parser.add_argument("--ssh", help="read temperature, throttling and the service's RSS over ssh from this host")
    parser.add_argument("--unit", default="kiosk", help="--ssh: systemd unit of the service (for its PID)")
    parser.add_argument("--pid", type=int, help="the service's PID when it runs on this machine")
    parser.add_argument("--ca")
    parser.add_argument("--cert")
    parser.add_argument("--key")
    parser.add_argument("--json", type=Path, help="write the full report (with every board reading) here")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        pairs = corpus.from_directory(args.corpus) if args.corpus else corpus.generated(args.faces)
        with contextlib.ExitStack() as stack:
            if args.local:
                service = stack.enter_context(LocalService(profile=args.local_profile))
                address, probe = service.address, LocalProbe(service.pid)
                print(f"local service SERVING after {service.cold_start_s:.2f} s (pid {service.pid})", file=sys.stderr)
            else:
                address = args.device
                probe = SshProbe(args.ssh, args.unit) if args.ssh else LocalProbe(args.pid)
            config = RunConfig(
                address=address, mode=args.mode, duration_s=args.duration, requests=args.requests,
                concurrency=args.concurrency, sample_interval_s=args.sample_interval,
                session_frames=args.session_frames, fps=args.fps, ca=args.ca, cert=args.cert, key=args.key,
            )
            result = run(config, pairs, probe)
        profile = select_profile(args.profile or result.info.hardware_profile)
    except (RemoteError, ServiceFailed, ConfigError, ValueError, OSError) as e:
        print(f"hil: {e}", file=sys.stderr)
        return 2
    summary = summarise(result, profile)
    print(format_table(summary))
    if args.json:
        args.json.write_text(json.dumps(summary, indent=1, default=str))
    return 0 if summary["budget"]["met"] else 1


if __name__ == "__main__":
    sys.exit(main())
