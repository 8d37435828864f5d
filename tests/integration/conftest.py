"""Fixtures for the gRPC integration tests: real servers on 127.0.0.1:0 or unix sockets, TLS material.

Uses ``faces`` and ``verifier`` from tests/conftest.py: the photos are read from the
shared data folder beside the checkout (never copied into the repository); the only
synthetic image is a face-free one made here. TLS material is a throwaway CA
generated per test run.
"""

from __future__ import annotations

import dataclasses
import datetime
import ipaddress
import json
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import cv2
import grpc
import numpy as np
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from kiosk.audit import AuditLog
from kiosk.pipeline.verifier import Verifier
from kiosk.server.app import KioskServer, build_server
from kiosk.settings import ServiceSettings, Settings, TlsSettings
from kiosk.v1 import kiosk_pb2_grpc

AUDIT_KEY = bytes(range(32))


@dataclass(frozen=True)
class Photos:
    """Encoded photos used across the tests, with the files they came from."""

    scorsese: tuple[Path, ...]  # one person, four photos: genuine pairs
    stranger: Path  # someone else: impostor pairs
    nuaa_id: Path  # ID-style photo of nuaa__s01 ...
    nuaa_frames: tuple[Path, ...]  # ... and more captures of the same person, used as camera frames
    no_face: bytes  # a synthetic JPEG without a face


def _no_face_jpeg() -> bytes:
    # A smooth colour gradient: image-like for the decoder, nothing face-like for MTCNN.
    y, x = np.mgrid[0:480, 0:640]
    image = np.stack([x * 255 // 640, y * 255 // 480, (x + y) * 255 // 1120], axis=-1).astype(np.uint8)
    ok, encoded = cv2.imencode(".jpg", image)
    assert ok
    return encoded.tobytes()


@pytest.fixture(scope="session")
def photos(faces: Path) -> Photos:
    nuaa = sorted((faces / "nuaa__s01").glob("*.jpg"))
    return Photos(
        scorsese=tuple(sorted((faces / "lfw__Martin_Scorsese").glob("*.jpg"))),
        stranger=faces / "lfw__Aaron_Tippin" / "Aaron_Tippin_0001.jpg",
        nuaa_id=nuaa[0],
        nuaa_frames=tuple(nuaa[1:6]),
        no_face=_no_face_jpeg(),
    )


# --------------------------------------------------------------------------- servers


@dataclass
class RunningServer:
    server: KioskServer
    address: str
    audit: AuditLog | None
    channels: list[grpc.Channel] = dataclasses.field(default_factory=list)

    def channel(self, credentials: grpc.ChannelCredentials | None = None) -> grpc.Channel:
        channel = (
            grpc.secure_channel(self.address, credentials)
            if credentials is not None
            else grpc.insecure_channel(self.address)
        )
        self.channels.append(channel)
        return channel

    def stub(self, credentials: grpc.ChannelCredentials | None = None) -> kiosk_pb2_grpc.KioskStub:
        return kiosk_pb2_grpc.KioskStub(self.channel(credentials))

    def audit_records(self) -> list[dict]:
        assert self.audit is not None
        return [json.loads(line) for line in self.audit.path.read_text().splitlines()]


StartServer = Callable[..., RunningServer]


@pytest.fixture
def start_server(verifier: Verifier, tmp_path: Path) -> Iterator[StartServer]:
    """Factory: ``start_server(settings=None, verifier=<loaded>, audit=True, unix=False)``; all stopped at teardown."""
    started: list[RunningServer] = []
    audits: list[AuditLog] = []

    def start(
        settings: Settings | None = None,
        *,
        verifier: Verifier | None = verifier,
        audit: bool = True,
        unix: bool = False,
    ) -> RunningServer:
        n = len(started)
        if settings is None:
            listen = (f"unix:{tmp_path / f'kiosk{n}.sock'}",) if unix else ("127.0.0.1:0",)
            settings = dataclasses.replace(Settings(), service=ServiceSettings(listen=listen))
        audit_log = None
        if audit:
            audit_log = AuditLog(tmp_path / f"audit{n}.jsonl", AUDIT_KEY, 1 << 20)
            audits.append(audit_log)
        server, ports = build_server(settings, verifier, audit=audit_log)
        server.start()
        spec = settings.service.listen[0]
        address = spec if spec.startswith("unix:") else f"{spec.rpartition(':')[0]}:{ports[0]}"
        running = RunningServer(server, address, audit_log)
        started.append(running)
        return running

    yield start
    for running in started:
        for channel in running.channels:
            channel.close()
        running.server.stop(0).wait()
    for audit_log in audits:
        audit_log.close()


@pytest.fixture
def kiosk(start_server: StartServer) -> RunningServer:
    """A server with default settings and an audit log, on 127.0.0.1:<free port>."""
    return start_server()


# --------------------------------------------------------------------------- TLS


@dataclass(frozen=True)
class TlsFiles:
    ca: Path
    server_cert: Path
    server_key: Path
    client_cert: Path
    client_key: Path
    client_subject_cn: str
    rogue_cert: Path  # a client certificate from another CA
    rogue_key: Path

    def server_settings(self) -> TlsSettings:
        return TlsSettings(str(self.server_cert), str(self.server_key), str(self.ca))

    def client_credentials(self, cert: Path | None = None, key: Path | None = None) -> grpc.ChannelCredentials:
        return grpc.ssl_channel_credentials(
            root_certificates=self.ca.read_bytes(),
            private_key=key.read_bytes() if key else None,
            certificate_chain=cert.read_bytes() if cert else None,
        )


def _name(common_name: str) -> x509.Name:
    return x509.Name(
        [
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, "kiosk tests"),
            x509.NameAttribute(NameOID.COMMON_NAME, common_name),
        ]
    )


def _certificate(
    subject: x509.Name,
    key: ec.EllipticCurvePrivateKey,
    issuer: x509.Name,
    issuer_key: ec.EllipticCurvePrivateKey,
    *,
    ca: bool = False,
    usage: x509.ObjectIdentifier | None = None,
    san: list[x509.GeneralName] | None = None,
) -> x509.Certificate:
    now = datetime.datetime.now(datetime.timezone.utc)
    builder = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(issuer)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True)
    )
    if usage is not None:
        builder = builder.add_extension(x509.ExtendedKeyUsage([usage]), critical=False)
    if san:
        builder = builder.add_extension(x509.SubjectAlternativeName(san), critical=False)
    return builder.sign(issuer_key, hashes.SHA256())


def _write(directory: Path, name: str, cert: x509.Certificate, key: ec.EllipticCurvePrivateKey | None = None) -> None:
    (directory / f"{name}.crt").write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    if key is not None:
        pem = key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )
        (directory / f"{name}.key").write_bytes(pem)


@pytest.fixture(scope="session")
def tls_files(tmp_path_factory: pytest.TempPathFactory) -> TlsFiles:
    directory = tmp_path_factory.mktemp("tls")
    ca_key, rogue_ca_key = ec.generate_private_key(ec.SECP256R1()), ec.generate_private_key(ec.SECP256R1())
    ca_name, rogue_ca_name = _name("kiosk test CA"), _name("some other CA")
    _write(directory, "ca", _certificate(ca_name, ca_key, ca_name, ca_key, ca=True))
    server_key = ec.generate_private_key(ec.SECP256R1())
    san = [x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]
    server = _certificate(
        _name("kiosk service"), server_key, ca_name, ca_key, usage=ExtendedKeyUsageOID.SERVER_AUTH, san=san
    )
    _write(directory, "server", server, server_key)
    client_key = ec.generate_private_key(ec.SECP256R1())
    client = _certificate(_name("kiosk-07"), client_key, ca_name, ca_key, usage=ExtendedKeyUsageOID.CLIENT_AUTH)
    _write(directory, "client", client, client_key)
    rogue_key = ec.generate_private_key(ec.SECP256R1())
    rogue = _certificate(
        _name("kiosk-07"), rogue_key, rogue_ca_name, rogue_ca_key, usage=ExtendedKeyUsageOID.CLIENT_AUTH
    )
    _write(directory, "rogue", rogue, rogue_key)
    return TlsFiles(
        ca=directory / "ca.crt",
        server_cert=directory / "server.crt",
        server_key=directory / "server.key",
        client_cert=directory / "client.crt",
        client_key=directory / "client.key",
        client_subject_cn="kiosk-07",
        rogue_cert=directory / "rogue.crt",
        rogue_key=directory / "rogue.key",
    )
