"""
Stand-ins for the ACME service's unit tests: a certificate authority that
signs the store's own key (as an ACME CA signs the CSR's), a fake issuing
client with scripted outcomes, and a service wired with them, a
L{twisted.internet.task.Clock} and a synchronous "thread".
"""

from __future__ import annotations

import datetime
import os
import threading
from collections.abc import Sequence
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from twisted.internet.defer import maybeDeferred
from twisted.internet.task import Clock

from gopherpost.acme.client import ACMECancelled, ACMEError, Issued
from gopherpost.acme.renewal import RenewalWindow
from gopherpost.acme.service import ACMEService
from gopherpost.acme.source import ServedCertificate, loadServedCertificate
from gopherpost.acme.store import ACMEStore
from tests.support.certs import selfSignedCertificate

__all__ = ["DAY", "FakeCA", "FakeIssuer", "makeTestService", "pemOf"]

DAY = 86400.0
DIRECTORY = "https://ca.example.test/directory"


def pemOf(certificate: x509.Certificate) -> bytes:
    return certificate.public_bytes(serialization.Encoding.PEM)


def _moment(seconds: float) -> datetime.datetime:
    return datetime.datetime.fromtimestamp(int(seconds), datetime.UTC)


class FakeCA:
    """
    Signs certificates for any public key, with chosen validity.
    """

    def __init__(self) -> None:
        self._key = ec.generate_private_key(ec.SECP256R1())
        name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "Fake ACME Intermediate")])
        self.name = name
        now = datetime.datetime.now(datetime.UTC)
        self.certificate = (
            x509.CertificateBuilder()
            .subject_name(name)
            .issuer_name(name)
            .public_key(self._key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(days=3650))
            .not_valid_after(now + datetime.timedelta(days=3650))
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .sign(self._key, hashes.SHA256())
        )

    def sign(self, keyPEM: bytes, names: Sequence[str], notBefore: float, notAfter: float) -> bytes:
        """
        A chain (leaf, then this CA) for the key C{keyPEM}.
        """
        key = serialization.load_pem_private_key(keyPEM, password=None)
        leaf = (
            x509.CertificateBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, names[0])]))
            .issuer_name(self.name)
            .public_key(key.public_key())  # type: ignore[arg-type]
            .serial_number(x509.random_serial_number())
            .not_valid_before(_moment(notBefore))
            .not_valid_after(_moment(notAfter))
            .add_extension(
                x509.SubjectAlternativeName([x509.DNSName(n) for n in names]), critical=False
            )
            .add_extension(
                x509.AuthorityKeyIdentifier.from_issuer_public_key(self._key.public_key()),
                critical=False,
            )
            .sign(self._key, hashes.SHA256())
        )
        return pemOf(leaf) + pemOf(self.certificate)


class FakeIssuer:
    """
    An L{gopherpost.acme.service.IssuingClient} whose outcomes the test
    scripts: each order takes the next item of C{outcomes} (an exception to
    raise, or L{None} to issue), issuing for C{lifetime} seconds from the
    clock's time once the list is empty.

    @ivar orders: the names of each order, in order.
    @ivar windows: what L{renewalWindow} returns next (a
        L{RenewalWindow}, L{None}, or an exception to raise), the last one
        repeating.
    """

    def __init__(self, clock: Clock, store: ACMEStore, ca: FakeCA, lifetime: float = 90 * DAY):
        self.directoryURL = DIRECTORY
        self.clock = clock
        self.store = store
        self.ca = ca
        self.lifetime = lifetime
        self.outcomes: list[BaseException | None] = []
        self.windows: list[RenewalWindow | BaseException | None] = [None]
        self.orders: list[tuple[str, ...]] = []
        self.windowRequests = 0
        self.cancelled: threading.Event | None = None
        self.issuedNames: Sequence[str] | None = None

    def issue(self, domains: Sequence[str], cancelled: threading.Event | None = None) -> Issued:
        self.orders.append(tuple(domains))
        self.cancelled = cancelled
        if cancelled is not None and cancelled.is_set():
            raise ACMECancelled()
        if self.outcomes:
            outcome = self.outcomes.pop(0)
            if outcome is not None:
                raise outcome
        now = self.clock.seconds()
        names = self.issuedNames or domains
        chain = self.ca.sign(self.store.certificateKeyPEM(), names, now, now + self.lifetime)
        notes = (
            ("registered ACME account https://ca.example.test/acct/1",)
            if len(self.orders) == 1
            else ()
        )
        return Issued(chain, "https://ca.example.test/acct/1", notes)

    def renewalWindow(self, certificate: Any) -> RenewalWindow | None:
        self.windowRequests += 1
        window = self.windows[0] if len(self.windows) == 1 else self.windows.pop(0)
        if isinstance(window, BaseException):
            raise window
        return window


def _seedKey(store: ACMEStore) -> None:
    # An EC key is quicker to make than the RSA key the store would make.
    key = ec.generate_private_key(ec.SECP256R1())
    data = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    fd = os.open(store.keyPath, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(data)


def makeTestService(
    directory: str,
    clock: Clock,
    domains: Sequence[str] = ("mx.example.test",),
    stored: ServedCertificate | None = None,
    lifetime: float = 90 * DAY,
    runInThread: Any = None,
) -> tuple[ACMEService, FakeIssuer]:
    """
    An L{ACMEService} (not started) with a L{FakeIssuer}, a store in
    C{directory}/acme and the self-signed fallback.
    """
    store = ACMEStore(os.path.join(directory, "acme"))
    store.open()
    if not os.path.exists(store.keyPath):
        _seedKey(store)
    fallbackFiles = selfSignedCertificate(os.path.join(directory, "tls"), [domains[0]])
    fallback = loadServedCertificate(fallbackFiles.certPath, fallbackFiles.keyPath, "self-signed")
    issuer = FakeIssuer(clock, store, FakeCA(), lifetime)
    service = ACMEService(
        domains,
        issuer,
        store,
        fallback,
        clock,
        runInThread or (lambda f, *args: maybeDeferred(f, *args)),
        stored=stored,
        random=lambda: 0.5,
    )
    return service, issuer


def acmeError(reason: str = "the CA refused: rateLimited: too many") -> ACMEError:
    return ACMEError(reason)
