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

from kiosk.cli_output import EXIT_UNDECIDED, json_text, print_verification
from kiosk.errors import InvalidRequest, KioskError
from kiosk.settings import Settings, load_settings

EXIT_SERVING, EXIT_NOT_SERVING = 0, 1
# Between health checks while `kiosk health --wait` waits for the models to load.
HEALTH_POLL_S = 0.5
# The service's gRPC name, as its health status knows it (kiosk/server/app.py SERVICE_NAME).
SERVICE_NAME = "kiosk.v1.Kiosk"


def _read_photo(path: str) -> bytes:
    try:
        return Path(path).read_bytes()
    except OSError as e:
        raise KioskError(f"cannot read {path}: {e.strerror}") from None


def cmd_verify(args: argparse.Namespace, settings: Settings) -> int:
    if getattr(args, "receipt_out", None) and not args.server:
        raise KioskError("--receipt-out needs --server: receipts are signed by a running service's device key")
    id_photo = _read_photo(args.id_photo)
    live_photos = [_read_photo(p) for p in args.live_photos]
    if args.server:
        from kiosk.cli_remote import remote_verify

        verification = remote_verify(args, id_photo, live_photos)
    else:
        from kiosk.pipeline.verifier import Verifier

        verification = Verifier.load(settings).verify(id_photo, live_photos, args.target_fmr)
    return print_verification(verification, args.json)


def cmd_session(args: argparse.Namespace, settings: Settings) -> int:
    from kiosk.cli_remote import run_session_command

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
        # reconnect backoff, which would notice a service that just came up late. No
        # check outlasts --wait by more than HEALTH_POLL_S (an unanswering host would
        # otherwise add a whole --timeout to it).
        remaining = deadline - time.monotonic()
        timeout = min(args.timeout, max(remaining, HEALTH_POLL_S)) if args.wait > 0 else args.timeout
        try:
            with KioskClient(
                args.address, ca=args.ca, cert=args.cert, key=args.key, timeout=timeout, server_name=args.server_name
            ) as client:
                state, failure = client.health(args.service), None
        except RemoteError as e:
            state, failure = "", e
        remaining = deadline - time.monotonic()
        if state == "SERVING" or remaining <= 0 or getattr(failure, "status_code", "") == "NOT_FOUND":
            break
        time.sleep(min(HEALTH_POLL_S, remaining))
    if getattr(failure, "status_code", "") == "NOT_FOUND":
        # grpc.health.v1 answers an unknown name with NOT_FOUND and no details.
        raise KioskError(
            f"{args.address}: NOT_FOUND: the service has no health status for {args.service!r} "
            f'(known: "" for the whole server, and {SERVICE_NAME})'
        )
    if failure is not None:
        raise failure
    print(json_text({"address": args.address, "service": args.service, "status": state}) if args.json else state)
    return EXIT_SERVING if state == "SERVING" else EXIT_NOT_SERVING


def _progress(items):
    """A progress bar on a terminal; elsewhere (CI logs, `| tee`) a plain line every 10 % or 30 s."""
    if sys.stderr.isatty():
        try:
            from tqdm import tqdm
        except ImportError:
            return items
        return tqdm(items, desc="embedding", unit="image", file=sys.stderr)
    return _progress_lines(list(items))


def _progress_lines(items: list, every_s: float = 30.0):
    started = last = time.monotonic()
    step = max(1, len(items) // 10)
    for done, item in enumerate(items, start=1):
        yield item
        now = time.monotonic()
        if done % step == 0 or done == len(items) or now - last >= every_s:
            print(f"embedding: {done} of {len(items)} images ({now - started:.0f} s)", file=sys.stderr, flush=True)
            last = now


def _scored_pairs(args: argparse.Namespace, settings: Settings, pairs):
    from kiosk.offline.evaluate import embed_images, score_pairs, wipe
    from kiosk.pipeline.verifier import Verifier
    from kiosk.runtime.profile import select_profile

    # Only the models scoring pairs needs: no liveness, eye or mesh model. The profile's
    # threads go to images analysed side by side, one onnxruntime thread each (embed_images).
    workers = select_profile(settings.hardware.profile).onnxruntime.intra_op_threads
    verifier = Verifier.load(
        settings,
        calibrated=not getattr(args, "uncalibrated", False),
        roles=("detector", "embedder"),
        threads_per_call=1,
    )
    if getattr(args, "chip_id_photos", False):
        from kiosk.offline.evaluate import chip_scored_pairs

        scored = chip_scored_pairs(verifier, Path(args.root), pairs, _progress, workers=workers)
        unscored = {p for s in scored if s.score is None for p in (s.pair.a, s.pair.b)}
        return verifier, scored, (len({p for pair in pairs for p in (pair.a, pair.b)}), len(unscored))
    paths = [p.a for p in pairs] + [p.b for p in pairs]
    embeddings = embed_images(verifier, Path(args.root), paths, _progress, workers=workers)
    try:
        without_face = {path for path, embedding in embeddings.items() if embedding is None}
        return verifier, score_pairs(pairs, embeddings), (len(embeddings), len(without_face))
    finally:
        wipe(embeddings)


def cmd_evaluate(args: argparse.Namespace, settings: Settings) -> int:
    from kiosk.offline.evaluate import read_pairs, split_scores
    from kiosk.offline.scores import REPORTED_FMRS, score_report

    pairs = read_pairs(Path(args.pairs))
    _, scored, (images, without_face) = _scored_pairs(args, settings, pairs)
    if args.scores_out:
        try:
            with open(args.scores_out, "w") as f:
                f.write("a,b,same,score\n")
                for s in scored:
                    score = "" if s.score is None else f"{s.score:.6f}"
                    f.write(f"{s.pair.a},{s.pair.b},{int(s.pair.same)},{score}\n")
        except OSError as e:
            raise InvalidRequest(f"cannot write {args.scores_out}: {e.strerror}") from None
    missing = sum(s.score is None for s in scored)
    # Failure to enrol (ISO/IEC 19795-1): the share of the list's images without a usable face.
    genuine, impostor = split_scores(scored)
    report = score_report(genuine, impostor, REPORTED_FMRS) if len(genuine) and len(impostor) else None
    if args.plot:
        if report is None:
            raise InvalidRequest(f"{args.pairs}: a ROC needs genuine and impostor pairs with a usable face")
        write_plot(Path(args.plot), genuine, impostor, report)
    summary = {
        "pairs": len(scored),
        "pairs_scored": len(scored) - missing,
        "pairs_without_face": missing,
        "images": images,
        "images_without_face": without_face,
        "failure_to_enrol_rate": without_face / images if images else None,
        "report": dataclasses.asdict(report) if report else None,
        "scores_out": args.scores_out,
        "plot": args.plot,
    }
    if args.json:
        print(json_text(summary))
        return 0
    print(f"scored {len(scored) - missing} of {len(scored)} pairs ({missing} without a usable face)")
    print(
        f"failure to enrol: {without_face} of {images} images without a usable face "
        f"({summary['failure_to_enrol_rate'] * 100:.2f} %)"
    )
    if report is None:
        print("no ROC figures: genuine and impostor pairs with a usable face are both needed")
    else:
        print(format_report("all pairs", report))
    for written in (args.scores_out, args.plot):
        if written:
            print(f"wrote {written}")
    return 0


def write_plot(path: Path, genuine, impostor, report) -> None:
    """ROC (TAR against FMR) and DET (FNMR against FMR) on log axes, as in ISO/IEC 19795-1 reports."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        raise InvalidRequest('--plot needs matplotlib: pip install "kiosk[plot]"') from None
    import numpy as np

    thresholds = np.unique(np.concatenate([genuine, impostor]))
    fmr = np.array([np.mean(impostor >= t) for t in thresholds])
    fnmr = np.array([np.mean(genuine < t) for t in thresholds])
    floor = 0.5 / len(impostor)  # a rate of 0 cannot sit on a log axis
    figure, (roc, det) = plt.subplots(1, 2, figsize=(10, 4.5))
    roc.semilogx(np.maximum(fmr, floor), 1 - fnmr)
    roc.set(xlabel="false match rate", ylabel="true accept rate", title=f"ROC (AUC {report.auc:.4f})")
    det.loglog(np.maximum(fmr, floor), np.maximum(fnmr, 0.5 / len(genuine)))
    det.set(xlabel="false match rate", ylabel="false non-match rate", title=f"DET (EER {report.eer * 100:.2f} %)")
    for axes in (roc, det):
        axes.grid(True, which="both", alpha=0.3)
    figure.suptitle(f"{len(genuine)} genuine, {len(impostor)} impostor pairs")
    figure.tight_layout()
    try:
        figure.savefig(path, dpi=100)
    except OSError as e:
        raise InvalidRequest(f"cannot write {path}: {e.strerror}") from None
    finally:
        plt.close(figure)


def format_report(name: str, report) -> str:
    from kiosk.offline.scores import impostors_needed

    lines = [
        f"{name}: {report.genuine_pairs} genuine, {report.impostor_pairs} impostor pairs; "
        f"AUC {report.auc:.4f}, EER {report.eer * 100:.2f} % (threshold {report.eer_threshold:.4f})"
    ]
    for r in report.at_fmr:
        needed = impostors_needed(r.target_fmr)
        caveat = "" if r.enough_impostors else f" [too few impostors: {r.impostor_pairs} < {needed} needed]"
        lines.append(
            f"  FAR {r.target_fmr:g}: TAR {r.tar * 100:.1f} % at threshold {r.threshold:.4f} "
            f"(measured FMR {r.measured_fmr:.2g}){caveat}"
        )
    return "\n".join(lines)


def cmd_calibrate(args: argparse.Namespace, settings: Settings) -> int:
    from kiosk.calibration import Calibration
    from kiosk.offline.evaluate import cross_person_impostors, read_pairs, split_scores
    from kiosk.offline.scores import calibration_toml, score_report, strictest_operating_points, unmeasurable

    # The file the service loads is changed only on request (--install); any other
    # output is a file the operator names and reviews before installing it.
    installed = settings.models.resolved_dir() / settings.models.calibration
    out = installed if args.install else Path(args.out)
    wanted = tuple(sorted(set(args.fmr), reverse=True))
    pairs = read_pairs(Path(args.pairs))
    if args.all_impostors:
        pairs = pairs + cross_person_impostors(pairs)
    # Refuse before the long embedding run when even every listed impostor pair would be too few.
    shortfall = unmeasurable(sum(not p.same for p in pairs), wanted)
    if shortfall and not args.force:
        raise InvalidRequest(f"{args.pairs}: {shortfall}; add impostor pairs (--all-impostors) or pass --force")
    verifier, scored, _ = _scored_pairs(args, settings, pairs)
    missing = sum(s.score is None for s in scored)
    genuine, impostor = split_scores(scored)
    if not len(genuine) or not len(impostor):
        raise InvalidRequest(
            f"{args.pairs}: {len(genuine)} genuine and {len(impostor)} impostor pairs with a usable face; "
            "both are needed"
        )
    shortfall = unmeasurable(len(impostor), wanted)
    if shortfall and not args.force:
        raise InvalidRequest(f"{args.pairs}: {shortfall} (scored pairs); add impostor pairs or pass --force")
    fmrs = tuple(sorted(set(args.fmr) | {1e-2, 1e-3, 1e-4}, reverse=True))
    report = score_report(genuine, impostor, fmrs)
    impostor_by_subset, reports = {}, {"all pairs": report}
    for subset in sorted({s.pair.subset for s in scored} - {""}):
        g, i = split_scores([s for s in scored if s.pair.subset == subset])
        impostor_by_subset[subset] = i
        if len(g) and len(i):
            reports[subset] = score_report(g, i, fmrs)
    points = strictest_operating_points(genuine, impostor, impostor_by_subset, wanted)
    calibration = Calibration(
        embedder=verifier.model_versions["embedder"],
        embedder_sha256=verifier.models.entries["embedder"].sha256,
        pairs=Path(args.pairs).name
        + (" + all cross-person impostor pairs within each subset" if args.all_impostors else "")
        + (", side a as 102x126 JPEG-q30 chip copies (colour and grey), both sides softened" if args.chip_id_photos else ""),
        created=datetime.date.today().isoformat(),
        auc=report.auc,
        eer=report.eer,
        operating_point=points,
    )
    try:
        out.write_text(calibration_toml(calibration))
    except OSError as e:
        raise InvalidRequest(f"cannot write {out}: {e.strerror}") from None
    if args.json:
        print(json_text({
            "pairs": len(scored),
            "pairs_without_face": missing,
            "reports": {name: dataclasses.asdict(r) for name, r in reports.items()},
            "operating_points": [dataclasses.asdict(p) for p in points],
            "out": str(out),
            "installed": out == installed,
        }))  # fmt: skip
        return 0
    print(f"pairs without a usable face: {missing} of {len(scored)}")
    for name, r in reports.items():
        print(format_report(name, r))
    for p in points:
        print(f"operating point FMR {p.target_fmr:g}: threshold {p.threshold:.4f}, TAR {p.tar * 100:.1f} % ({p.note})")
    note = " (the calibration the service loads: restart it to apply)" if out == installed else ""
    print(f"wrote {len(points)} operating point(s) to {out}{note}")
    return 0


def cmd_liveness_report(args: argparse.Namespace, settings: Settings) -> int:
    """Score the labelled spoof set and print BPCER and APCER per species (optionally write liveness.toml)."""
    from kiosk.liveness_calibration import load_liveness_calibration
    from kiosk.offline.liveness_report import (
        calibrate,
        format_figures,
        liveness_toml,
        read_spoof_labels,
        score_presentations,
    )
    from kiosk.pipeline.verifier import Verifier

    root = Path(args.root)
    if not (root / "spoof" / "labels.csv").is_file():
        raise InvalidRequest(f"{root}: no spoof/labels.csv under --root (the shared faces folder has one)")
    verifier = Verifier.load(settings, calibrated=False, roles=("detector", "liveness"))
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
    lines = [
        f"scored {sum(p.score is not None for p in presentations)} of {len(presentations)} presentations; "
        f"no face: {calibration.bona_fide_without_face} bona fide, {calibration.attacks_without_face} attacks",
        format_figures("shipped" if args.threshold is None else "at --threshold", calibration.shipped),
    ]
    for point in calibration.at_bpcer:
        lines.append(format_figures(f"at BPCER {point.target_bpcer * 100:g} %", point.figures))
    extra = {}
    for pattern in args.extra:
        paths = sorted(p.relative_to(root).as_posix() for p in root.glob(pattern) if p.is_file())
        scored = score_presentations(verifier.passive_score_file, root, [(p, "real", "") for p in paths], _progress)
        scores = [p.score for p in scored if p.score is not None]
        passed = sum(score >= threshold for score in scores)
        extra[pattern] = {"photos_with_face": len(scores), "passed": passed}
        lines.append(
            f"{pattern}: {passed} of {len(scores)} photos with a face pass ({passed / max(len(scores), 1) * 100:.1f} %)"
        )
    if args.out:
        try:
            Path(args.out).write_text(liveness_toml(calibration))
        except OSError as e:
            raise InvalidRequest(f"cannot write {args.out}: {e.strerror}") from None
        lines.append(f"wrote {args.out}")
    if args.json:
        print(json_text({"calibration": dataclasses.asdict(calibration), "extra": extra, "out": args.out}))
    else:
        print("\n".join(lines))
    return 0


def cmd_acceptance_report(args: argparse.Namespace, settings: Settings) -> int:
    """End-to-end FTA/FNMR/FRR/FMR per subset and capture condition, APCER/BPCER (kiosk.offline.acceptance)."""
    from kiosk.offline.acceptance import VARIATIONS, format_report, run_report
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
    from kiosk.offline.audit_verify import main_verify

    # `kiosk audit verify FILE...`: kiosk.offline.audit_verify parses its own arguments (and its --help).
    return main_verify(args.rest)


# --------------------------------------------------------------------------- back office (receipts, keys, info)


def cmd_keygen(args: argparse.Namespace, settings: Settings) -> int:
    """`kiosk keygen --out PATH`: the device's Ed25519 receipt key (0600) and PATH.pub beside it."""
    from kiosk.receipts import generate_key_file

    private, public = generate_key_file(args.out)
    print(f"wrote {private} (private, mode 0600) and {public} (public: give it to the back office)")
    return 0


def cmd_receipt(args: argparse.Namespace, settings: Settings) -> int:
    from kiosk.receipts import main_receipt

    return main_receipt(args.rest)


def info_dict(info) -> dict:
    """GetInfo as `kiosk info --json` prints it (strict JSON)."""
    return dataclasses.asdict(info)


def cmd_info(args: argparse.Namespace, settings: Settings) -> int:
    """`kiosk info ADDR [--json]`: what a running service runs (GetInfo), its receipt public key included."""
    from kiosk.client import KioskClient

    with KioskClient(args.address, ca=args.ca, cert=args.cert, key=args.key, timeout=args.timeout) as client:
        info = info_dict(client.info())
    if args.json:
        print(json.dumps(info, indent=2, sort_keys=True, allow_nan=False))
        return 0
    for name, value in info.items():
        if name == "receipt_public_key":
            print(f"{name}:\n{value.rstrip()}")
        else:
            print(f"{name}: {json.dumps(value, sort_keys=True)}")
    return 0


def add_backoffice_commands(commands) -> None:
    keygen = commands.add_parser("keygen", help="make the device's Ed25519 receipt key (private 0600, PATH.pub beside it)")
    keygen.add_argument("--out", required=True, metavar="PATH", help="private key file to create (never overwritten)")
    keygen.set_defaults(handler=cmd_keygen)

    receipt = commands.add_parser(
        "receipt", help="`kiosk receipt verify FILE --public-key KEY.pem`: check a receipt offline (0 valid, 1 invalid, 2 error)"
    )
    receipt.add_argument("rest", nargs=argparse.REMAINDER, help="verify FILE --public-key KEY.pem [--json]")
    receipt.set_defaults(handler=cmd_receipt)

    info = commands.add_parser("info", help="what a running service runs (GetInfo), incl. its receipt public key")
    info.add_argument("address", metavar="ADDR", help="gRPC target: host:port, unix:PATH, ipv4:A:P,B:P, dns:///HOST:PORT")
    info.add_argument("--json", action="store_true", help="print strict JSON")
    info.add_argument("--ca", help="CA certificate that signed the server's certificate (TLS)")
    info.add_argument("--cert", help="client certificate (mutual TLS)")
    info.add_argument("--key", help="client private key (mutual TLS)")
    info.add_argument("--timeout", type=float, default=10.0, help="seconds")
    info.set_defaults(handler=cmd_info)


def cmd_ui(args: argparse.Namespace, settings: Settings) -> int:
    # Imported here: the screen needs the optional `ui` extra (aiohttp), the service does not.
    from kiosk.ui import serve_ui

    return serve_ui(args.listen, args.service, card_reader=args.card_reader)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="kiosk", description=__doc__.splitlines()[0])
    parser.add_argument("--config", help="settings TOML (default: built-in defaults)")
    commands = parser.add_subparsers(dest="command", required=True)

    serve = commands.add_parser("serve", help="run the gRPC verification service")
    serve.add_argument("--listen", action="append", help="host:port or unix:PATH (repeatable)")
    serve.set_defaults(handler=cmd_serve)

    verify = commands.add_parser("verify", help="verify an ID photo against live photo(s)")
    verify.add_argument("id_photo", metavar="ID_PHOTO", help="photo of the ID card's picture (JPEG, PNG or BMP)")
    verify.add_argument("live_photos", metavar="LIVE_PHOTO", nargs="+", help="camera photo(s) of the person")
    verify.add_argument("--json", action="store_true", help="print the result as JSON (decision, retry_reason, ...)")
    verify.add_argument(
        "--target-fmr", type=float, default=None, help="decide at this calibrated FMR (default: decision.target_fmr)"
    )
    verify.add_argument("--receipt-out", metavar="FILE", help="write the decision's signed receipt here (with --server)")
    add_client_options(verify)
    verify.set_defaults(handler=cmd_verify)

    session = commands.add_parser("session", help="stream frames as a live session to a running server")
    session.add_argument("--id-photo", required=True, help="photo of the ID card's picture")
    session.add_argument("frames", metavar="FRAME", nargs="+", help="camera frames, streamed in this order")
    session.add_argument("--fps", type=float, default=10.0, help="frames per second to stream (default 10)")
    session.add_argument(
        "--json",
        action="store_true",
        help="print every event (guidance, frame_result, prompt, decision) as a JSON line",
    )
    session.add_argument(
        "--target-fmr", type=float, default=None, help="decide at this calibrated FMR (default: the server's)"
    )
    session.add_argument("--receipt-out", metavar="FILE", help="write the decision's signed receipt here")
    add_client_options(session, server_required=True)
    session.set_defaults(handler=cmd_session)

    health = commands.add_parser(
        "health", help="check a running service's health (grpc.health.v1): exit 0 serving, 1 not, 2 error"
    )
    health.add_argument("address", metavar="ADDR", help="host:port or unix:PATH")
    health.add_argument("--service", default="", help='service name, e.g. kiosk.v1.Kiosk (default "": the server)')
    health.add_argument("--wait", type=float, default=0.0, help="keep checking up to this many seconds until serving")
    add_tls_options(health)
    health.add_argument("--timeout", type=float, default=5.0, help="seconds per check")
    health.add_argument("--json", action="store_true", help='print {"address", "service", "status"} as JSON')
    health.set_defaults(handler=cmd_health)

    for name, handler in (("calibrate", cmd_calibrate), ("evaluate", cmd_evaluate)):
        sub = commands.add_parser(name, help=f"{name} on labelled pairs (CSV a,b,same[,subset])")
        sub.add_argument(
            "--pairs",
            required=True,
            metavar="CSV_OR_DIR",
            help="CSV with columns a,b,same[,subset], or a folder of such CSVs (each file's name is its rows' subset)",
        )
        sub.add_argument("--root", required=True, help="directory the pair paths are relative to")
        sub.add_argument("--json", action="store_true", help="print the figures as JSON instead of text")
        sub.add_argument(
            "--chip-id-photos",
            action="store_true",
            help="score each pair as Verify compares a chip-sized ID photo: side a as 102x126 JPEG-q30 chip "
            "copies (colour and grey), both sides softened (for models.chip_calibration)",
        )
        sub.set_defaults(handler=handler)
    calibrate = commands.choices["calibrate"]
    calibrate.add_argument("--fmr", type=float, action="append", required=True, help="target FMR (repeatable)")
    target = calibrate.add_mutually_exclusive_group(required=True)
    target.add_argument("--out", metavar="FILE", help="calibration file to write (review it, then install it)")
    target.add_argument(
        "--install", action="store_true", help="overwrite the calibration the service loads (models/calibration.toml)"
    )
    calibrate.add_argument(
        "--force",
        action="store_true",
        help="write operating points even where the impostor pairs are too few to measure them (< 3/FMR)",
    )
    calibrate.add_argument(
        "--all-impostors",
        action="store_true",
        help="also use every cross-person pair of the CSV's images within each subset as an impostor pair",
    )
    calibrate.add_argument(
        "--uncalibrated", action="store_true", help="do not load the current calibration (first calibration of a new model)"
    )
    evaluate = commands.choices["evaluate"]
    evaluate.add_argument("--scores-out", metavar="FILE", help="write every pair's score as CSV a,b,same,score")
    evaluate.add_argument(
        "--plot", metavar="FILE.png", help='write ROC and DET curves (needs matplotlib: pip install "kiosk[plot]")'
    )

    report = commands.add_parser(
        "liveness-report", help="APCER per attack species and BPCER of passive liveness on a labelled spoof set"
    )
    report.add_argument("--root", required=True, help="folder holding spoof/labels.csv (paths are relative to it)")
    report.add_argument("--threshold", type=float, help="evaluate this threshold instead of the shipped one")
    report.add_argument("--out", help="write a liveness calibration file (models/liveness.toml format) for the threshold")
    report.add_argument("--rationale", help="why this threshold, stored in the written file")
    report.add_argument("--json", action="store_true", help="print the figures as JSON instead of text")
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
    acceptance.add_argument("--json", action="store_true", help="print the report as strict JSON")
    acceptance.set_defaults(handler=cmd_acceptance_report)

    audit = commands.add_parser("audit", help="audit log tools (kiosk audit verify --help)")
    audit_commands = audit.add_subparsers(dest="audit_command", required=True, metavar="{verify}")
    audit_verify = audit_commands.add_parser(
        "verify",
        help="check an audit log's HMAC chain: verify FILE... [--key-file KEYFILE | --config SETTINGS]",
        add_help=False,
        prefix_chars="\0",  # every argument, --help included, goes to kiosk.offline.audit_verify's own parser
    )
    audit_verify.add_argument("rest", nargs=argparse.REMAINDER)
    audit.set_defaults(handler=cmd_audit)
    add_backoffice_commands(commands)

    ui = commands.add_parser("ui", help="serve the reference kiosk screen (a web page) and relay it to the service")
    ui.add_argument("--listen", default="127.0.0.1:8080", help="loopback HOST:PORT of the page (default 127.0.0.1:8080)")
    ui.add_argument("--service", required=True, metavar="ADDR", help="the kiosk service (host:port or unix:PATH)")
    ui.add_argument("--card-reader", metavar="PATH", help="file the ID-card reader leaves the chip photo in")
    ui.set_defaults(handler=cmd_ui)
    return parser


def add_client_options(parser: argparse.ArgumentParser, server_required: bool = False) -> None:
    parser.add_argument(
        "--server",
        metavar="ADDR",
        required=server_required,
        help="address of a running service (host:port or unix:PATH)"
        + ("" if server_required else "; without it the models run in this process"),
    )
    add_tls_options(parser)
    parser.add_argument("--consent-version", default=None, help="consent text version the person accepted")
    parser.add_argument("--timeout", type=float, default=30.0, help="seconds the call may take (default 30)")
    parser.add_argument(
        "--service-config",
        metavar="JSON",
        help="gRPC service config for the channel (default: round_robin, health checks, retry on UNAVAILABLE)",
    )


def add_tls_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--ca", help="CA certificate that signed the server's certificate (turns TLS on)")
    parser.add_argument("--cert", help="client certificate (mutual TLS)")
    parser.add_argument("--key", help="client private key (mutual TLS)")
    parser.add_argument(
        "--server-name",
        metavar="NAME",
        help="name the server's certificate must carry (a SAN), when it differs from ADDR's host (TLS)",
    )


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
    except BrokenPipeError:
        # `kiosk verify ... | head -3`: the reader left before the output ended. Not a
        # decision (1 would read as "no match"): say so on stderr and exit 2. Python's
        # own flush of stdout at exit would fail again, so stdout goes to /dev/null.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        print("kiosk: output closed before it was all written (broken pipe)", file=sys.stderr)
        return EXIT_UNDECIDED


if __name__ == "__main__":
    sys.exit(main())
