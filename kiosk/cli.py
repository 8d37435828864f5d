"""Command line: `kiosk serve | verify | session | health | calibrate | evaluate | liveness-report | audit`.

Exit status of `verify` and `session`: 0 match, 1 no match, 2 no decision possible or error.
Exit status of `health`: 0 serving, 1 not serving, 2 error (e.g. nothing listening).
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime
import json
import os
import sys
import time
from pathlib import Path

from kiosk.errors import KioskError
from kiosk.pipeline.types import Decision, Verification
from kiosk.settings import Settings, load_settings

EXIT_MATCH, EXIT_NO_MATCH, EXIT_UNDECIDED = 0, 1, 2
EXIT_SERVING, EXIT_NOT_SERVING = 0, 1
# Between health checks while `kiosk health --wait` waits for the models to load.
HEALTH_POLL_S = 0.5


def verification_dict(verification: Verification) -> dict:
    """The JSON form printed by `kiosk verify --json` and `kiosk session --json`."""
    return {
        "decision": verification.decision.value if verification.decision is not Decision.RETRY else verification.reason,
        "reason": verification.reason,
        "message": verification.message,
        "similarity": verification.similarity,
        "threshold": verification.operating_point.threshold,
        "target_fmr": verification.operating_point.target_fmr,
        "model_versions": verification.model_versions,
        "timings_ms": verification.timings_ms,
        "findings": [
            {
                "role": f.role.value,
                "index": f.index,
                "face_found": f.face_found,
                "box": dataclasses.asdict(f.box) if f.box else None,
                "detection_score": f.detection_score,
                "quality": [dataclasses.asdict(q) for q in f.quality],
            }
            for f in verification.findings
        ],
        "liveness": {
            "status": verification.liveness.status.value,
            "failed_check": verification.liveness.failed_check,
            "passive_score": verification.liveness.passive_score,
        },
    }


def print_verification(verification: Verification, as_json: bool, out=None) -> int:
    """Print a verification and return the exit status it maps to."""
    if as_json:
        print(json.dumps(verification_dict(verification), indent=2), file=out)
    else:
        shown = verification.decision.value if verification.decision is not Decision.RETRY else verification.reason
        print(f"decision: {shown}", file=out)
        if verification.message:
            print(f"message: {verification.message}", file=out)
        if verification.similarity is not None:
            print(f"similarity: {verification.similarity:.4f}", file=out)
        point = verification.operating_point
        print(f"threshold: {point.threshold:.4f} (target FMR {point.target_fmr:g})", file=out)
        print(f"liveness: {liveness_text(verification)}", file=out)
        print("models: " + ", ".join(f"{k}={v}" for k, v in sorted(verification.model_versions.items())), file=out)
        print("timings_ms: " + ", ".join(f"{k}={v:.1f}" for k, v in verification.timings_ms.items()), file=out)
    return {Decision.MATCH: EXIT_MATCH, Decision.NO_MATCH: EXIT_NO_MATCH}.get(verification.decision, EXIT_UNDECIDED)


def liveness_text(verification: Verification) -> str:
    """"passed (passive score 0.9990)", "failed: passive (passive score 0.0123)", "not_performed"."""
    liveness = verification.liveness
    text = liveness.status.value + (f": {liveness.failed_check}" if liveness.failed_check else "")
    if liveness.passive_score is not None:
        text += f" (passive score {liveness.passive_score:.4f})"
    return text


def _read_photo(path: str) -> bytes:
    try:
        return Path(path).read_bytes()
    except OSError as e:
        raise KioskError(f"cannot read {path}: {e.strerror}") from None


def cmd_verify(args: argparse.Namespace, settings: Settings) -> int:
    id_photo = _read_photo(args.id_photo)
    live_photos = [_read_photo(p) for p in args.live_photos]
    if args.server:
        from kiosk.client import remote_verify

        verification = remote_verify(args, id_photo, live_photos)
    else:
        from kiosk.pipeline.verifier import Verifier

        verification = Verifier.load(settings).verify(id_photo, live_photos, args.target_fmr)
    return print_verification(verification, args.json)


def cmd_session(args: argparse.Namespace, settings: Settings) -> int:
    from kiosk.client import run_session_command

    return run_session_command(args)


def cmd_serve(args: argparse.Namespace, settings: Settings) -> int:
    from kiosk.runtime.hardening import startup_environment

    environment = startup_environment(os.environ)
    if environment is not None:
        # glibc and ONNX Runtime read these settings only when the process starts: start
        # over once, same pid and arguments, with them set (kiosk.runtime.hardening says why).
        os.execve(sys.executable, [sys.executable, *sys.orig_argv[1:]], environment)
    from kiosk.server.app import serve_forever

    if args.listen:
        settings = dataclasses.replace(
            settings, service=dataclasses.replace(settings.service, listen=tuple(args.listen))
        )
    return serve_forever(settings)


def cmd_health(args: argparse.Namespace, settings: Settings) -> int:
    from kiosk.client import KioskClient, RemoteError

    deadline = time.monotonic() + max(0.0, args.wait)
    while True:
        # A new channel per check: one that failed to connect waits out gRPC's growing
        # reconnect backoff, which would notice a service that just came up late.
        try:
            with KioskClient(args.address, ca=args.ca, cert=args.cert, key=args.key, timeout=args.timeout) as client:
                state, failure = client.health(args.service), None
        except RemoteError as e:
            state, failure = "", e
        remaining = deadline - time.monotonic()
        if state == "SERVING" or remaining <= 0:
            break
        time.sleep(min(HEALTH_POLL_S, remaining))
    if failure is not None:
        raise failure
    print(state)
    return EXIT_SERVING if state == "SERVING" else EXIT_NOT_SERVING


def _progress(items):
    try:
        from tqdm import tqdm
    except ImportError:
        return items
    return tqdm(items, desc="embedding", unit="image", file=sys.stderr, disable=not sys.stderr.isatty())


def _scored_pairs(args: argparse.Namespace, settings: Settings, pairs):
    from kiosk.evaluation import embed_images, score_pairs, wipe
    from kiosk.pipeline.verifier import Verifier

    verifier = Verifier.load(settings, calibrated=not getattr(args, "uncalibrated", False))
    embeddings = embed_images(verifier, Path(args.root), [p.a for p in pairs] + [p.b for p in pairs], _progress)
    try:
        return verifier, score_pairs(pairs, embeddings)
    finally:
        wipe(embeddings)


def cmd_evaluate(args: argparse.Namespace, settings: Settings) -> int:
    from kiosk.evaluation import read_pairs

    _, scored = _scored_pairs(args, settings, read_pairs(Path(args.pairs)))
    with open(args.scores_out, "w") as f:
        f.write("a,b,same,score\n")
        for s in scored:
            score = "" if s.score is None else f"{s.score:.6f}"
            f.write(f"{s.pair.a},{s.pair.b},{int(s.pair.same)},{score}\n")
    missing = sum(s.score is None for s in scored)
    print(f"scored {len(scored) - missing} of {len(scored)} pairs ({missing} without a usable face) -> {args.scores_out}")
    return 0


def format_report(name: str, report) -> str:
    lines = [
        f"{name}: {report.genuine_pairs} genuine, {report.impostor_pairs} impostor pairs; "
        f"AUC {report.auc:.4f}, EER {report.eer * 100:.2f} % (threshold {report.eer_threshold:.4f})"
    ]
    for r in report.at_fmr:
        caveat = "" if r.enough_impostors else f" [too few impostors: {r.impostor_pairs} < {3 / r.target_fmr:.0f} needed]"
        lines.append(
            f"  FAR {r.target_fmr:g}: TAR {r.tar * 100:.1f} % at threshold {r.threshold:.4f} "
            f"(measured FMR {r.measured_fmr:.2g}){caveat}"
        )
    return "\n".join(lines)


def cmd_calibrate(args: argparse.Namespace, settings: Settings) -> int:
    from kiosk.calibration import Calibration, calibration_toml, score_report, strictest_operating_points
    from kiosk.evaluation import cross_person_impostors, read_pairs, split_scores

    pairs = read_pairs(Path(args.pairs))
    if args.all_impostors:
        pairs = pairs + cross_person_impostors(pairs)
    verifier, scored = _scored_pairs(args, settings, pairs)
    missing = sum(s.score is None for s in scored)
    print(f"pairs without a usable face: {missing} of {len(scored)}")
    genuine, impostor = split_scores(scored)
    fmrs = tuple(sorted(set(args.fmr) | {1e-2, 1e-3, 1e-4}, reverse=True))
    report = score_report(genuine, impostor, fmrs)
    print(format_report("all pairs", report))
    impostor_by_subset = {}
    for subset in sorted({s.pair.subset for s in scored} - {""}):
        g, i = split_scores([s for s in scored if s.pair.subset == subset])
        impostor_by_subset[subset] = i
        if len(g) and len(i):
            print(format_report(subset, score_report(g, i, fmrs)))
    wanted = tuple(sorted(set(args.fmr), reverse=True))
    points = strictest_operating_points(genuine, impostor, impostor_by_subset, wanted)
    for p in points:
        print(f"operating point FMR {p.target_fmr:g}: threshold {p.threshold:.4f}, TAR {p.tar * 100:.1f} % ({p.note})")
    calibration = Calibration(
        embedder=verifier.model_versions["embedder"],
        pairs=Path(args.pairs).name + (" + all cross-person impostor pairs within each subset" if args.all_impostors else ""),
        created=datetime.date.today().isoformat(),
        auc=report.auc,
        eer=report.eer,
        operating_point=points,
    )
    out = Path(args.out) if args.out else settings.models.resolved_dir() / settings.models.calibration
    out.write_text(calibration_toml(calibration))
    print(f"wrote {len(points)} operating point(s) to {out}")
    return 0


def cmd_liveness_report(args: argparse.Namespace, settings: Settings) -> int:
    """Score the labelled spoof set and print BPCER and APCER per species (optionally write liveness.toml)."""
    from kiosk.liveness_calibration import (
        calibrate,
        format_figures,
        liveness_toml,
        load_liveness_calibration,
        read_spoof_labels,
        score_presentations,
    )
    from kiosk.pipeline.verifier import Verifier

    root = Path(args.root)
    verifier = Verifier.load(settings, calibrated=False)
    shipped = None
    if args.threshold is None:
        shipped = load_liveness_calibration(
            settings.models.resolved_dir() / settings.models.liveness, verifier.model_versions["liveness"]
        )
    threshold = args.threshold if args.threshold is not None else shipped.threshold
    presentations = score_presentations(verifier.passive_score_file, root, read_spoof_labels(root), _progress)
    rationale = args.rationale if args.rationale is not None else (shipped.rationale if shipped else "")
    calibration = calibrate(
        presentations,
        threshold,
        model=verifier.model_versions["liveness"],
        data="spoof/labels.csv",
        created=datetime.date.today().isoformat(),
        rationale=rationale,
    )
    print(
        f"scored {sum(p.score is not None for p in presentations)} of {len(presentations)} presentations; "
        f"no face: {calibration.bona_fide_without_face} bona fide, {calibration.attacks_without_face} attacks"
    )
    print(format_figures("shipped" if args.threshold is None else "at --threshold", calibration.shipped))
    for point in calibration.at_bpcer:
        print(format_figures(f"at BPCER {point.target_bpcer * 100:g} %", point.figures))
    for pattern in args.extra:
        paths = sorted(p.relative_to(root).as_posix() for p in root.glob(pattern) if p.is_file())
        scored = score_presentations(verifier.passive_score_file, root, [(p, "real", "") for p in paths], _progress)
        scores = [p.score for p in scored if p.score is not None]
        passed = sum(score >= threshold for score in scores)
        print(f"{pattern}: {passed} of {len(scores)} photos with a face pass ({passed / max(len(scores), 1) * 100:.1f} %)")
    if args.out:
        Path(args.out).write_text(liveness_toml(calibration))
        print(f"wrote {args.out}")
    return 0


def cmd_acceptance_report(args: argparse.Namespace, settings: Settings) -> int:
    """End-to-end FTA/FNMR/FRR/FMR per subset and capture condition, APCER/BPCER (kiosk.acceptance)."""
    from kiosk.acceptance import VARIATIONS, format_report, run_report
    from kiosk.pipeline.verifier import Verifier

    variations = tuple(VARIATIONS) if args.variations is None else tuple(v for v in args.variations.split(",") if v)
    unknown = sorted(set(variations) - set(VARIATIONS))
    if unknown:
        raise KioskError(f"unknown variation(s) {', '.join(unknown)}; known: {', '.join(VARIATIONS)}")
    report = run_report(
        Verifier.load(settings),
        Path(args.root),
        subsets=tuple(args.subset) if args.subset else ("nuaa_live", "webcam_pigface", "phone_selfie_live"),
        variations=variations,
        variation_every=args.variation_every,
        max_genuine=args.max_genuine,
        chip=not args.no_chip,
        attacks=not args.no_attacks,
        progress=lambda text: print(text, file=sys.stderr) if sys.stderr.isatty() else None,
    )
    print(json.dumps(report.as_dict(), indent=1) if args.json else format_report(report))
    return 0


def cmd_audit(args: argparse.Namespace, settings: Settings) -> int:
    from kiosk.audit import main_verify

    # `kiosk audit verify FILE...`: the tool's name is not one of the files.
    if args.rest[:1] != ["verify"]:
        print("usage: kiosk audit verify FILE... [--key-file KEYFILE | --config SETTINGS]", file=sys.stderr)
        return 2
    return main_verify(args.rest[1:])


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="kiosk", description=__doc__.splitlines()[0])
    parser.add_argument("--config", help="settings TOML (default: built-in defaults)")
    commands = parser.add_subparsers(dest="command", required=True)

    serve = commands.add_parser("serve", help="run the gRPC verification service")
    serve.add_argument("--listen", action="append", help="host:port or unix:PATH (repeatable)")
    serve.set_defaults(handler=cmd_serve)

    verify = commands.add_parser("verify", help="verify an ID photo against live photo(s)")
    verify.add_argument("id_photo")
    verify.add_argument("live_photos", nargs="+")
    verify.add_argument("--json", action="store_true")
    verify.add_argument("--target-fmr", type=float, default=None)
    add_client_options(verify)
    verify.set_defaults(handler=cmd_verify)

    session = commands.add_parser("session", help="stream frames as a live session to a running server")
    session.add_argument("--id-photo", required=True)
    session.add_argument("frames", nargs="+")
    session.add_argument("--fps", type=float, default=10.0)
    session.add_argument("--json", action="store_true")
    session.add_argument("--target-fmr", type=float, default=None)
    add_client_options(session)
    session.set_defaults(handler=cmd_session)

    health = commands.add_parser(
        "health", help="check a running service's health (grpc.health.v1): exit 0 serving, 1 not, 2 error"
    )
    health.add_argument("address", metavar="ADDR", help="host:port or unix:PATH")
    health.add_argument("--service", default="", help='service name, e.g. kiosk.v1.Kiosk (default "": the server)')
    health.add_argument("--wait", type=float, default=0.0, help="keep checking up to this many seconds until serving")
    health.add_argument("--ca", help="CA certificate that signed the server's certificate (TLS)")
    health.add_argument("--cert", help="client certificate (mutual TLS)")
    health.add_argument("--key", help="client private key (mutual TLS)")
    health.add_argument("--timeout", type=float, default=5.0, help="seconds per check")
    health.set_defaults(handler=cmd_health)

    for name, handler in (("calibrate", cmd_calibrate), ("evaluate", cmd_evaluate)):
        sub = commands.add_parser(name, help=f"{name} on labelled pairs (CSV a,b,same[,subset])")
        sub.add_argument("--pairs", required=True)
        sub.add_argument("--root", required=True, help="directory the pair paths are relative to")
        sub.set_defaults(handler=handler)
    calibrate = commands.choices["calibrate"]
    calibrate.add_argument("--fmr", type=float, action="append", required=True, help="target FMR (repeatable)")
    calibrate.add_argument("--out", help="calibration file to write (default: the one the service loads)")
    calibrate.add_argument(
        "--all-impostors",
        action="store_true",
        help="also use every cross-person pair of the CSV's images within each subset as an impostor pair",
    )
    calibrate.add_argument(
        "--uncalibrated", action="store_true", help="do not load the current calibration (first calibration of a new model)"
    )
    commands.choices["evaluate"].add_argument("--scores-out", required=True)

    report = commands.add_parser(
        "liveness-report", help="APCER per attack species and BPCER of passive liveness on a labelled spoof set"
    )
    report.add_argument("--root", required=True, help="folder holding spoof/labels.csv (paths are relative to it)")
    report.add_argument("--threshold", type=float, help="evaluate this threshold instead of the shipped one")
    report.add_argument("--out", help="write a liveness calibration file (models/liveness.toml format) for the threshold")
    report.add_argument("--rationale", help="why this threshold, stored in the written file")
    report.add_argument(
        "--extra", action="append", default=[], metavar="GLOB",
        help="also report the share of these photos (relative to --root) that pass; not used for the figures",
    )
    report.set_defaults(handler=cmd_liveness_report)

    acceptance = commands.add_parser(
        "acceptance-report",
        help="end-to-end FTA, FNMR, FRR, FMR per subset and capture condition, BPCER/APCER (full Verify path)",
    )
    acceptance.add_argument("--root", required=True, help="folder holding pairs_by_subset/ and spoof/labels.csv")
    acceptance.add_argument("--subset", action="append", help="subset of pairs_by_subset/ (repeatable; default: the cameras)")
    acceptance.add_argument("--variations", help="comma-separated camera variations (default: all; empty: none)")
    acceptance.add_argument("--variation-every", type=int, default=2, help="vary every Nth genuine pair (bounds the run)")
    acceptance.add_argument("--max-genuine", type=int, help="at most this many genuine pairs per subset (bounds the run)")
    acceptance.add_argument("--no-chip", action="store_true", help="skip the simulated chip-photo path")
    acceptance.add_argument("--no-attacks", action="store_true", help="skip the spoof set (BPCER/APCER)")
    acceptance.add_argument("--json", action="store_true")
    acceptance.set_defaults(handler=cmd_acceptance_report)

    audit = commands.add_parser("audit", help="audit log tools: `kiosk audit verify FILE [--key-file K]`")
    audit.add_argument("rest", nargs=argparse.REMAINDER)
    audit.set_defaults(handler=cmd_audit)
    return parser


def add_client_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--server", help="address of a running service (host:port or unix:PATH)")
    parser.add_argument("--ca", help="CA certificate that signed the server's certificate (TLS)")
    parser.add_argument("--cert", help="client certificate (mutual TLS)")
    parser.add_argument("--key", help="client private key (mutual TLS)")
    parser.add_argument("--consent-version", default=None, help="consent text version the person accepted")
    parser.add_argument("--timeout", type=float, default=30.0, help="seconds")


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        settings = load_settings(args.config)
        return args.handler(args, settings)
    except KioskError as e:
        print(f"kiosk: {e.message}", file=sys.stderr)
        return EXIT_UNDECIDED
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
