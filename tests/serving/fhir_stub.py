"""A real HTTPS FHIR stub on 127.0.0.1 for prefetch tests: serves canned JSON by path and
query, logs every request, and trusts only its own self-signed certificate."""

from __future__ import annotations

import ipaddress
import json
import ssl
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

__all__ = ["FhirStub", "self_signed", "serve_fhir"]


def self_signed(directory: Path) -> tuple[Path, Path]:
    """A certificate and key for 127.0.0.1 (``cert.pem``, ``key.pem``) in ``directory``."""
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")])
    now = datetime.now(UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - timedelta(minutes=5))
        .not_valid_after(now + timedelta(days=1))
        .add_extension(
            x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
            critical=False,
        )
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    cert_path, key_path = directory / "cert.pem", directory / "key.pem"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return cert_path, key_path


class FhirStub:
    """What the stub answers (``routes``: ``"/r4/Condition?a=b"`` -> JSON or a status)
    and what it was asked (``seen``: path and query, ``tokens``: Authorization headers)."""

    def __init__(self, base: str) -> None:
        self.base = base
        self.routes: dict[str, dict[str, Any] | int] = {}
        self.seen: list[str] = []
        self.tokens: list[str] = []


@contextmanager
def serve_fhir(cert: Path, key: str | Path) -> Iterator[FhirStub]:
    """Serve a :class:`FhirStub` over HTTPS at ``https://127.0.0.1:<port>/r4``."""
    stub: FhirStub

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            stub.seen.append(self.path)
            stub.tokens.append(self.headers.get("Authorization", ""))
            answer = stub.routes.get(self.path, 404)
            body = b"" if isinstance(answer, int) else json.dumps(answer).encode()
            self.send_response(answer if isinstance(answer, int) else 200)
            self.send_header("Content-Type", "application/fhir+json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format: str, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(cert, key)
    server.socket = context.wrap_socket(server.socket, server_side=True)
    stub = FhirStub(f"https://127.0.0.1:{server.server_address[1]}/r4")
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield stub
    finally:
        server.shutdown()
        server.server_close()
        thread.join(10)
