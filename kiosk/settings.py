"""Typed, frozen settings loaded from TOML.

Every section is a frozen dataclass; an unknown key or a value of the wrong type is a
``ConfigError`` at start-up rather than a silently ignored typo. The bundled models and
hardware profiles are found relative to the source checkout or, for a wheel install,
under ``<prefix>/share/kiosk``.
"""

from __future__ import annotations

import dataclasses
import math
import sys
import tomllib
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path

from kiosk.domain import Challenge
from kiosk.errors import ConfigError


def _bundled_dir(name: str, share_name: str) -> Path:
    """``models/`` or ``hardware/profiles`` of the checkout, else the installed copy."""
    root = Path(__file__).resolve().parent.parent
    # An installed package's parent is site-packages, where another distribution may
    # have put a top-level "models" package: only a checkout has pyproject.toml there.
    if (root / "pyproject.toml").is_file() and (root / name).is_dir():
        return root / name
    return Path(sys.prefix) / "share" / "kiosk" / share_name


def bundled_models_dir() -> Path:
    return _bundled_dir("models", "models")


def bundled_profiles_dir() -> Path:
    return _bundled_dir("hardware/profiles", "profiles")


@dataclass(frozen=True)
class TlsSettings:
    """Mutual TLS for remote listeners: all three files or none."""

    # PEM certificate the service presents to clients.
    server_cert: str = ""
    # PEM private key of server_cert (readable by the service user only).
    server_key: str = ""
    # PEM CA certificate(s); clients must present a certificate signed by one of them.
    client_ca: str = ""

    @property
    def enabled(self) -> bool:
        return bool(self.server_cert)


@dataclass(frozen=True)
class ServiceSettings:
    # gRPC listen addresses, "host:port" or "unix:PATH". Loopback TCP and unix sockets
    # are plain text; any other address needs mutual TLS (service.tls).
    listen: tuple[str, ...] = ("127.0.0.1:50051",)
    # Mutual TLS for the listeners: required for any non-loopback TCP address.
    tls: TlsSettings = field(default_factory=TlsSettings)
    # Largest gRPC message in bytes. Two ID-grade photos plus a few live JPEGs fit
    # easily; anything larger is abuse.
    max_message_bytes: int = 8 * 1024 * 1024
    # Verify/VerifySession calls running at once; more are refused with RESOURCE_EXHAUSTED.
    max_concurrent_calls: int = 4
    # Longest a Verify call may take, in seconds (a shorter client deadline wins).
    call_deadline_s: float = 10.0
    # Longest a VerifySession call may take, in seconds. A live session waits for a person
    # to get into position, so it gets its own, longer deadline; 30 s is the 300-frame
    # session limit at 10 fps.
    session_deadline_s: float = 30.0
    # Seconds in-flight calls get to finish on SIGTERM before they are cancelled.
    grace_period_s: float = 10.0
    # This kiosk's id: recorded in the audit log when a request names none, shown by GetInfo.
    device_id: str = ""
    # gRPC server reflection (lets grpcurl and similar tools list the API). gRPC serves
    # the same services on every listener, so reflection is on only while no listener
    # uses TLS, i.e. while every listener is loopback or a unix socket: never for remote clients.
    reflection: bool = True
    # Verify/VerifySession calls each client may start per second, sustained; 0 = no
    # limit. A client is its mutual-TLS certificate subject, or "local" for the unix
    # socket and loopback. A kiosk starts about one call per customer and a Raspberry Pi
    # computes one or two a second, so this never slows a real client; it stops one
    # that floods the service or probes the matcher with many faces. Refused calls get
    # RESOURCE_EXHAUSTED with a retry-after-ms trailer.
    rate_limit_per_s: float = 5.0
    # Calls a client may start in a burst after being idle (the token bucket's size).
    rate_limit_burst: int = 30
    # Group owning the unix sockets (mode 0660), e.g. the kiosk UI's; empty keeps the
    # service user's primary group.
    unix_socket_group: str = ""
    # Plain-text listener serving only grpc.health.v1 ("host:port"; empty = none), for
    # probes that cannot present a client certificate, e.g. Kubernetes' native gRPC
    # probes against a mutual-TLS service. It answers nothing but health.
    health_listen: str = ""
    # Verify/VerifySession calls one client may have in flight at once, so one client
    # cannot hold every slot. A client is its mutual-TLS certificate subject; on loopback
    # and unix sockets (no certificate) each connection is a client of its own. Below
    # max_concurrent_calls, so whatever one client does, a slot is left for another.
    max_calls_per_client: int = 3
    # Health checks, GetInfo and reflection calls in flight at once. They have worker
    # threads of their own, so analysis calls can never starve them (a supervisor
    # polling health sees a busy kiosk as busy, not dead); past this they are refused.
    max_light_calls: int = 8
    # Of those, how many one client may have in flight at once.
    max_light_calls_per_client: int = 2
    # Seconds a call may take to send its (first) request message: every kiosk client
    # sends it with the call, so a call that sends headers and nothing more is cancelled
    # after this instead of holding a worker thread and a slot.
    first_message_timeout_s: float = 2.0
    # Seconds a live session may go without a frame (a kiosk camera sends several a
    # second); past it the session ends with DEADLINE_EXCEEDED.
    frame_idle_timeout_s: float = 5.0
    # Calls of every kind the service holds at once, including those being refused;
    # past it gRPC itself answers RESOURCE_EXHAUSTED to everything, health included.
    # Must be at least max_concurrent_calls + max_light_calls + 4.
    max_open_calls: int = 256
    # A connection is closed (after its calls finish) this many seconds after it opened
    # (gRPC's max connection age, gRFC A9): whatever a client does, nothing it holds
    # lives longer than this plus the grace below. Clients reconnect transparently.
    max_connection_age_s: float = 300.0
    # Seconds calls on an aged connection get to finish before it is closed under them;
    # longer than session_deadline_s so an honest session is never cut.
    max_connection_age_grace_s: float = 60.0
    # How much of the similarity a remote caller (mutual TLS) is told: "exact", "rounded"
    # (2 decimals, as the audit log records it) or "match_only" (rounded on a MATCH,
    # none otherwise). Exact scores let a caller hill-climb a synthetic face towards the
    # ID photo (Adler 2004; ISO/IEC 30136), so remote callers get rounded ones by default.
    remote_similarity: str = "rounded"
    # The same for local callers (unix socket, loopback): the kiosk's own screen.
    local_similarity: str = "exact"
    # Refuse Verify (still photos) from remote callers: only a live session with active
    # challenges (VerifySession, liveness_challenge.enabled) shows that a person is
    # present; a still sent over the network can be a digital copy or a replay.
    require_active_session_remote: bool = False


@dataclass(frozen=True)
class LimitSettings:
    # Largest encoded image (JPEG, PNG or BMP) in bytes.
    max_image_bytes: int = 3 * 1024 * 1024
    # Largest image in pixels (width x height), checked from the header before
    # decoding: 12 MP covers any kiosk camera.
    max_image_pixels: int = 12_000_000
    # Longest image side in pixels, also checked before decoding.
    max_image_side: int = 8192
    # Most live photos one Verify call may compare with the ID photo.
    max_live_photos: int = 5


@dataclass(frozen=True)
class DecisionSettings:
    # Target false-match rate whose calibrated threshold decides by default.
    target_fmr: float = 1e-3


@dataclass(frozen=True)
class QualityLimits:
    """Limits one face must meet; failing one gives the kiosk an actionable guidance code.

    The live-frame defaults reject none of the 121 webcam captures of the shared data
    and 1 % of its LFW photos, and nearly all degraded copies that no longer match
    (README, "Capture quality", has the table and how it was measured).
    """

    # Smallest distance between the eyes in pixels (MOVE_CLOSER). Below ~20 px the
    # embedder's accuracy drops sharply on live frames.
    min_inter_eye_px: float = 20.0
    # Largest |nose offset from the eye/mouth midline| / inter-eye distance
    # (FACE_THE_CAMERA); ~0.5 is about 30 degrees of yaw.
    max_yaw_ratio: float = 0.5
    # Largest |nose shift along the eyes-to-mouth line| from the frontal template, as a
    # share of that line (FACE_THE_CAMERA); ~0.35 is a 45-degree nod. Photos lean one way
    # (celebrity photos taken from above reach 0.33) and a kiosk camera below or above
    # eye level adds its own tilt, so the limit sits just above every shared photo's.
    max_pitch_ratio: float = 0.35
    # Largest head tilt (roll) in degrees (FACE_THE_CAMERA).
    max_roll_deg: float = 30.0
    # Smallest variance of the Laplacian of the aligned 112x112 grey face (HOLD_STILL).
    # Webcam frames measure 600-2000, LFW photos 24 and up; a blur of 0.1 inter-eye
    # distances, after which no copy matches its original, brings them to 6-10.
    min_sharpness: float = 15.0
    # Smallest mean grey level (0-255) of the aligned face (TOO_DARK); the dim NUAA
    # webcam frames measure 46 and up. Lighting limits are operator signals: they never
    # refuse a face on their own, only turn a non-match into RETRY poor_lighting.
    min_brightness: float = 40.0
    # Largest mean grey level (0-255) of the aligned face (TOO_BRIGHT); an operator signal.
    max_brightness: float = 220.0
    # Smallest standard deviation of the aligned face's grey levels (TOO_DARK). Webcam
    # frames measure 12.8 and up; contrast cut to a quarter (74 % no longer match) ~5.
    min_contrast: float = 10.0
    # Largest face-box height / frame height (MOVE_BACK): webcam captures measure
    # 0.37-0.58. A face filling the frame leaves the passive-liveness crop no context:
    # tight 160x160 face crops pass it 2 % of the time.
    max_face_height_share: float = 0.8
    # Smallest share of the face box inside the frame: a face cut by the frame edge
    # gets MOVE_BACK when large, FACE_THE_CAMERA when it is off to the side. 0 turns
    # the check off; all five landmarks must be inside the frame in any case.
    min_box_inside_share: float = 0.9
    # Eye model (fr_eye) P(open) below which an eye counts as closed; OPEN_EYES only
    # when both are. The model reads dark webcam frames of a person with glasses as
    # closed with P(open) down to 0.002, so only near-certain readings count; 0 turns
    # the check (and the model call) off.
    min_eye_open_probability: float = 0.001
    # Largest sensor noise of the face region, in grey levels (Immerkaer's sigma estimate on
    # the frame's pixels; NOISY_IMAGE). Not about looks: past it the passive-liveness check
    # fails open. Gaussian noise added to the shared attack captures let no print or replay
    # through at sigma 8 (which measures 5.9-6.2), 8 of 59 at sigma 12 (8.3-8.7) and 24 of
    # 59 at sigma 20; every real capture measures at most 4.6. Infinite turns it off.
    max_noise: float = 7.0


def _id_photo_limits() -> "QualityLimits":
    # A 102x126 chip photo has eyes ~26 px apart and is often a blurry, low-contrast
    # snapshot of the printed card: only reject what cannot be matched at all. The
    # person at the kiosk cannot retake their card photo, so guidance asking them to
    # move or to open their eyes means nothing for it.
    return QualityLimits(
        min_inter_eye_px=12.0,
        max_yaw_ratio=0.6,
        max_pitch_ratio=0.4,
        # Alignment removes roll completely, and a phone snapshot of a card is often tilted.
        max_roll_deg=90.0,
        min_sharpness=3.0,
        min_brightness=25.0,
        max_brightness=235.0,
        min_contrast=8.0,
        # Chip photos are framed tight: the detector's box often reaches past their edges.
        max_face_height_share=math.inf,
        min_box_inside_share=0.0,
        min_eye_open_probability=0.0,
        # No liveness check on the ID photo: its noise (a phone snapshot of a card) does not matter.
        max_noise=math.inf,
    )


@dataclass(frozen=True)
class QualitySettings:
    # Limits a face in a live photo or camera frame must meet.
    live_frame: QualityLimits = field(default_factory=QualityLimits)
    # Limits the face in the ID photo must meet: far laxer, chip photos are small and flat.
    id_photo: QualityLimits = field(default_factory=_id_photo_limits)
    # Detection floor in pixels for the ID photo (chip photos are small); live frames use the profile's.
    id_photo_min_face_px: int = 20
    # The subject of an ID photo or a kiosk capture fills a good part of the frame; faces
    # smaller than this fraction of the short side are background, and skipping them
    # saves most of the detector's pyramid on large frames.
    min_face_fraction: float = 0.1
    # An ID photo is known to hold one face; when none passes the detector's usual
    # thresholds (greyscale, low-contrast chip photos), it is searched again with all
    # three MTCNN stage thresholds lowered to this.
    id_photo_retry_threshold: float = 0.4


@dataclass(frozen=True)
class ModelSettings:
    # Directory of the ONNX models; empty means the bundled directory.
    dir: str = ""
    # Model manifest (hashes, sources, input specs), relative to models.dir.
    manifest: str = "manifest.toml"
    # Calibrated thresholds per target FMR, relative to models.dir.
    calibration: str = "calibration.toml"
    # Thresholds for a comparison with a chip-sized ID photo (eyes under 32 px apart: an ID
    # card's chip portrait), measured on chip copies (`kiosk calibrate --chip-id-photos`).
    # Degraded photos score lower against everyone, impostors too, so the same FMR is a lower
    # threshold. Bound to the embedder like models.calibration; "" = use models.calibration.
    chip_calibration: str = "calibration_chip.toml"
    # Passive-liveness threshold and the attack/bona fide figures behind it, relative to models.dir.
    liveness: str = "liveness.toml"
    # The manifest entry (by its file name) that fills each model role; "" = the entry
    # with that role. An embedder needs a calibration of its own (models.calibration):
    # e.g. embedder = "mobilefacenet_192.onnx" with calibration = "calibration_mobilefacenet_192.toml".
    embedder: str = ""
    # The passive-liveness model, chosen the same way (its threshold is models.liveness).
    liveness_model: str = ""
    # The eye-state model, chosen the same way.
    eye_state: str = ""
    # The face-mesh model of the liveness challenges, chosen the same way.
    face_mesh: str = ""
    # PEM Ed25519 public key that models.manifest's signature (manifest.toml.sig) must
    # verify against; empty means the project's own key (the bundled models). Set it when
    # a vendor ships a model bundle signed with its own key.
    manifest_public_key: str = ""

    def resolved_dir(self) -> Path:
        return Path(self.dir) if self.dir else bundled_models_dir()


@dataclass(frozen=True)
class HardwareSettings:
    # A profile name from hardware/profiles, a path to a TOML file, or "auto" to detect the board.
    profile: str = "auto"


@dataclass(frozen=True)
class ConsentSettings:
    # Consent text versions the operator has shown to people; anything else is refused.
    accepted_versions: tuple[str, ...] = ("2026-01",)


@dataclass(frozen=True)
class AuditSettings:
    # Audit log file (JSON lines). Empty disables the audit log: fine for CLI use, never
    # for a deployed kiosk.
    path: str = ""
    # HMAC key of the audit chain: hex text or raw bytes, at least 32 bytes, mode 0600.
    key_file: str = ""
    # Size in bytes at which the log file is rotated to <path>.<first_seq>-<last_seq>.
    max_bytes: int = 16 * 1024 * 1024
    # Seconds between signed checkpoints of the chain's head (<path>.checkpoints, signed
    # with the receipt key), written only when the head moved; one more is written at
    # shutdown. Deleting the newest records is then detectable against any checkpoint
    # or receipt kept off the device. 0 = only at shutdown.
    checkpoint_interval_s: float = 300.0


@dataclass(frozen=True)
class ReceiptSettings:
    # Ed25519 private key (PKCS#8 PEM, mode 0600) that signs every decision's receipt and
    # the audit checkpoints; make it with `kiosk keygen --out PATH` (public half: PATH.pub).
    # Empty: an ephemeral key is generated at start-up (a warning is logged and GetInfo
    # reports receipt_key_ephemeral), so receipts verify only against the key GetInfo
    # showed while that process ran. Never for a deployed kiosk.
    key_file: str = ""


@dataclass(frozen=True)
class MetricsSettings:
    # Prometheus metrics endpoint, "host:port" on a loopback address (e.g.
    # "127.0.0.1:9464"); empty turns it off. Metrics carry no personal data.
    listen: str = ""


# Every challenge the pipeline has a rule for (kiosk.pipeline.challenge.RULES, keyed by
# this enum): a new challenge becomes allowed here by itself.
CHALLENGE_NAMES = tuple(challenge.value for challenge in Challenge)


@dataclass(frozen=True)
class LivenessChallengeSettings:
    """Active liveness in live sessions: random challenges measured on the face mesh.

    Ratios and angles below were measured on the 468-point mesh of 38 real faces from
    the shared data (models/README.md, "Face mesh"): baseline EAR 0.24 +- 0.04, MAR of
    closed mouths 0.09 +- 0.10; rotating the faces' own 3-D meshes moved yaw by 0.18 per
    10 degrees and pitch by 0.15 per 10 degrees.
    """

    # Ask for challenges in live sessions. Off, a session asks for none and its liveness
    # rests on the passive model alone: PASSED with the lowest passive score, or RETRY
    # liveness_failed with failed_check "passive". Only for tests and lab set-ups.
    enabled: bool = True
    # Challenges a session draws from: blink, turn_left, turn_right, open_mouth, nod.
    challenges: tuple[str, ...] = CHALLENGE_NAMES
    # Fewest challenges per session; the number is drawn at random in [min, max].
    min_challenges: int = 2
    # Most challenges per session. 2-3 distinct challenges in a random order give
    # 20-60 possible sequences (2 of 5 alone: 20), so a recording rarely fits.
    max_challenges: int = 3
    # Time for one challenge, in ms of frame time from the frame that issued its
    # prompt: a person needs about 1 s to react and act; 3 s is 30 frames at 10 fps.
    step_window_ms: int = 3000
    # Frames with a face that set the person's neutral baseline before the first prompt.
    baseline_frames: int = 3
    # Frames must echo the current prompt's nonce (CameraFrame.challenge_nonce) to
    # count for it, proving they were captured after the prompt reached the kiosk.
    require_nonce_echo: bool = True
    # A blink: both eyes' EAR at most this fraction of the baseline EAR (closed) ...
    blink_closed_ratio: float = 0.6
    # ... then the mean EAR back to at least this fraction (open again).
    blink_open_ratio: float = 0.85
    # A turn: yaw moved at least this far from the baseline (0.30 is about 17 degrees).
    turn_min_yaw: float = 0.30
    # A nod: pitch moved at least this far (0.20 is about 13 degrees), then back
    # within neutral_pitch.
    nod_min_pitch: float = 0.20
    # An open mouth: MAR at least this much above the baseline (a gap of 30 % of the
    # mouth's width; closed mouths measured 0.09 +- 0.10).
    mouth_min_increase: float = 0.30
    # Neutral face, needed after each prompt before the action counts: |yaw change|
    # at most this (about 7 degrees) ...
    neutral_yaw: float = 0.12
    # ... |pitch change| at most this (about 7 degrees) ...
    neutral_pitch: float = 0.10
    # ... and MAR at most this much above the baseline.
    neutral_mar: float = 0.15
    # Eye and mouth ratios count only while the face's height/width stays within this
    # fraction of the baseline's: squashing a photo to fake a blink changes it by 40 %,
    # a real blink not at all, an open mouth by 10-20 %.
    shape_tolerance: float = 0.25
    # Every usable frame's embedding must have at least this cosine similarity with the
    # session's first live embedding. Laxer than the shipped 1 % FMR threshold (0.58),
    # because the challenges turn the head away from the first frame's pose. Measured
    # on the shared faces: 4.7 % of kpop's 12,792 within-group impostor pairs (the
    # hardest group) and none of LFW's 419,145 reach 0.52, so a swapped person fails on
    # 95 % of frames or more, and every later frame is checked again.
    identity_min_similarity: float = 0.52
    # Shortest interval between frame timestamps in ms: closer frames (above 50 fps)
    # come from no kiosk camera.
    min_frame_interval_ms: int = 20
    # Longest gap between frames in ms once challenges started: a blink lasts
    # 100-400 ms, so longer gaps could hide or splice one.
    max_frame_gap_ms: int = 500
    # Longest time in ms the face may be missing during the challenges (a detector
    # miss on a blurred frame) before the session fails with face_lost.
    max_face_missing_ms: int = 300

    def __post_init__(self) -> None:
        unknown = sorted(set(self.challenges) - set(CHALLENGE_NAMES))
        if unknown:
            raise ConfigError(f"liveness_challenge.challenges: unknown challenge(s) {', '.join(unknown)}")
        if len(set(self.challenges)) != len(self.challenges):
            raise ConfigError("liveness_challenge.challenges: a challenge is listed twice")
        if not 1 <= self.min_challenges <= self.max_challenges <= len(self.challenges):
            raise ConfigError(
                "liveness_challenge: need 1 <= min_challenges <= max_challenges <= the number of challenges"
            )


@dataclass(frozen=True)
class Settings:
    # The gRPC service: listeners, TLS, message size, concurrency, deadlines.
    service: ServiceSettings = field(default_factory=ServiceSettings)
    # Limits on the images of a request, checked before anything is decoded.
    limits: LimitSettings = field(default_factory=LimitSettings)
    # Which calibrated operating point decides.
    decision: DecisionSettings = field(default_factory=DecisionSettings)
    # Face quality limits and detection settings.
    quality: QualitySettings = field(default_factory=QualitySettings)
    # Where the models, their manifest and their calibration are.
    models: ModelSettings = field(default_factory=ModelSettings)
    # Inference settings of the board (threads, detector input size).
    hardware: HardwareSettings = field(default_factory=HardwareSettings)
    # Consent texts the operator shows.
    consent: ConsentSettings = field(default_factory=ConsentSettings)
    # The HMAC-chained audit log of decisions and refusals.
    audit: AuditSettings = field(default_factory=AuditSettings)
    # The device key that signs decision receipts and audit checkpoints.
    receipts: ReceiptSettings = field(default_factory=ReceiptSettings)
    # The Prometheus metrics endpoint for the back office.
    metrics: MetricsSettings = field(default_factory=MetricsSettings)
    # Active liveness challenges in live sessions.
    liveness_challenge: LivenessChallengeSettings = field(default_factory=LivenessChallengeSettings)


T = typing.TypeVar("T")


def from_mapping(cls: type[T], data: typing.Mapping[str, typing.Any], where: str = "", base: T | None = None) -> T:
    """Build dataclass ``cls`` from a TOML mapping, rejecting unknown keys and wrong types.

    Keys not given keep the value of ``base`` (or the field default), so overriding one
    limit of a nested table does not reset its siblings to another table's defaults.
    """
    label = where or "settings"
    if not isinstance(data, typing.Mapping):
        raise ConfigError(f"{label}: expected a table, got {type(data).__name__}")
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls)}
    unknown = sorted(set(data) - set(fields))
    if unknown:
        raise ConfigError(f"{label}: unknown key(s) {', '.join(unknown)}")
    values = {}
    for name, raw in data.items():
        hint = hints[name]
        inner = f"{where}.{name}" if where else name
        if dataclasses.is_dataclass(hint):
            nested_base = getattr(base, name) if base is not None else _default_of(fields[name])
            values[name] = from_mapping(hint, raw, inner, nested_base)
        else:
            values[name] = _coerce(hint, raw, inner)
    if base is not None:
        return dataclasses.replace(base, **values)
    missing = sorted(
        n for n, f in fields.items()
        if n not in values and f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING
    )
    if missing:
        raise ConfigError(f"{label}: missing key(s) {', '.join(missing)}")
    return cls(**values)


def _default_of(f: dataclasses.Field) -> typing.Any:
    if f.default_factory is not dataclasses.MISSING:
        return f.default_factory()
    return None if f.default is dataclasses.MISSING else f.default


def _coerce(hint: typing.Any, raw: typing.Any, where: str) -> typing.Any:
    if dataclasses.is_dataclass(hint):
        return from_mapping(hint, raw, where)
    origin = typing.get_origin(hint)
    if origin is tuple:
        (item,) = {a for a in typing.get_args(hint) if a is not Ellipsis}
        if not isinstance(raw, list):
            raise ConfigError(f"{where}: expected a list")
        return tuple(_coerce(item, v, f"{where}[{i}]") for i, v in enumerate(raw))
    if origin in (typing.Union, types.UnionType):
        for option in typing.get_args(hint):
            try:
                return _coerce(option, raw, where)
            except ConfigError:
                continue
        raise ConfigError(f"{where}: {raw!r} does not fit {hint}")
    if hint is float and isinstance(raw, int) and not isinstance(raw, bool):
        return float(raw)
    if hint is type(None) and raw is None:
        return None
    if not isinstance(raw, hint) or (hint is int and isinstance(raw, bool)):
        raise ConfigError(f"{where}: expected {hint.__name__}, got {type(raw).__name__}")
    return raw


def load_toml(cls: type[T], path: str | Path) -> T:
    try:
        with open(path, "rb") as f:
            data = tomllib.load(f)
    except FileNotFoundError:
        raise ConfigError(f"{path}: no such file") from None
    except tomllib.TOMLDecodeError as e:
        raise ConfigError(f"{path}: invalid TOML: {e}") from None
    return from_mapping(cls, data, where=str(path))


def load_settings(path: str | Path | None = None) -> Settings:
    """Settings from a TOML file, or the defaults when ``path`` is None."""
    return Settings() if path is None else load_toml(Settings, path)
