# -*- test-case-name: tests.test_acme_source -*-
"""
Certificates as served: L{ServedCertificate} (a certificate chain, its facts
and the ready TLS context that serves it) and L{CertificateSwitch}, the
inbound TLS connection creator that serves whatever an
L{ICertificateSource} says is current, picked afresh for each new
connection.

A connection keeps the OpenSSL context it was made with, so a session in
progress keeps its certificate while new sessions get the new one: swapping
is changing what the source returns, nothing more.
"""

from __future__ import annotations

import datetime
import hashlib
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, cast

from cryptography import x509
from cryptography.hazmat.primitives import serialization
from OpenSSL import SSL
from twisted.internet.interfaces import IOpenSSLServerConnectionCreator
from zope.interface import implementer

from gopherpost.acme.interfaces import ICertificateSource
from gopherpost.config import ConfigError

__all__ = [
    "ServedCertificate",
    "CertificateSwitch",
    "FixedCertificateSource",
    "loadServedCertificate",
    "parseCertificateChain",
    "certificateNames",
    "notValidBefore",
    "notValidAfter",
]

#: Builds the inbound TLS for a certificate and key file; by default
#: L{gopherpost.tls.loadServerContextFactory}, which raises L{ConfigError}.
MakeServerTLS = Callable[[str, str], Any]

_PEM_CERTIFICATE = re.compile(
    rb"-----BEGIN CERTIFICATE-----\r?\n.+?-----END CERTIFICATE-----", re.DOTALL
)


def _utc(naive: datetime.datetime) -> datetime.datetime:
    return naive.replace(tzinfo=datetime.UTC)


def notValidBefore(certificate: x509.Certificate) -> datetime.datetime:
    """
    The start of validity, timezone-aware (cryptography 38 and later).
    """
    aware = getattr(certificate, "not_valid_before_utc", None)
    return aware if aware is not None else _utc(certificate.not_valid_before)


def notValidAfter(certificate: x509.Certificate) -> datetime.datetime:
    """
    The end of validity, timezone-aware (cryptography 38 and later).
    """
    aware = getattr(certificate, "not_valid_after_utc", None)
    return aware if aware is not None else _utc(certificate.not_valid_after)


def certificateNames(certificate: x509.Certificate) -> tuple[str, ...]:
    """
    The DNS names of a certificate's subjectAltName, lower case, in order.
    """
    try:
        extension = certificate.extensions.get_extension_for_class(x509.SubjectAlternativeName)
    except x509.ExtensionNotFound:
        return ()
    return tuple(name.lower() for name in extension.value.get_values_for_type(x509.DNSName))


def parseCertificateChain(data: bytes) -> tuple[x509.Certificate, ...]:
    """
    Every PEM certificate in C{data}, in order (leaf first in a chain file).

    @raise ValueError: there is none, or one does not load.
    """
    blocks = _PEM_CERTIFICATE.findall(data)
    if not blocks:
        raise ValueError("no PEM certificate")
    return tuple(x509.load_pem_x509_certificate(block) for block in blocks)


@dataclass(frozen=True, eq=False)
class ServedCertificate:
    """
    One certificate chain ready to be served.

    @ivar origin: where it comes from: C{"acme"}, C{"self-signed"} or
        C{"file"}.
    @ivar certPath: the PEM chain file it was loaded from.
    @ivar keyPath: the PEM private key file.
    @ivar chain: the certificates, leaf first.
    @ivar serverTLS: the inbound TLS for it (an
        C{IOpenSSLServerConnectionCreator}, or an older context factory
        with C{getContext}), built once, when it was loaded.
    """

    origin: str
    certPath: str
    keyPath: str
    chain: tuple[x509.Certificate, ...]
    serverTLS: Any = field(repr=False)

    @property
    def leaf(self) -> x509.Certificate:
        """
        The server's own certificate.
        """
        return self.chain[0]

    @property
    def names(self) -> tuple[str, ...]:
        """
        The DNS names it is valid for.
        """
        return certificateNames(self.leaf)

    @property
    def notBefore(self) -> datetime.datetime:
        """
        Start of validity (UTC).
        """
        return notValidBefore(self.leaf)

    @property
    def notAfter(self) -> datetime.datetime:
        """
        End of validity (UTC).
        """
        return notValidAfter(self.leaf)

    @property
    def issuer(self) -> str:
        """
        The issuer's distinguished name (RFC 4514).
        """
        return self.leaf.issuer.rfc4514_string()

    @property
    def serial(self) -> str:
        """
        The serial number in hexadecimal.
        """
        return format(self.leaf.serial_number, "x")

    @property
    def fingerprint(self) -> str:
        """
        SHA-256 of the leaf certificate (DER), in hexadecimal.
        """
        return hashlib.sha256(self.leaf.public_bytes(serialization.Encoding.DER)).hexdigest()

    def expired(self, now: float) -> bool:
        """
        Whether it has expired at C{now} (seconds since the epoch).
        """
        return self.notAfter.timestamp() <= now

    def facts(self) -> dict[str, Any]:
        """
        Its facts as JSON-ready values, for status output.
        """
        return {
            "origin": self.origin,
            "subject": self.leaf.subject.rfc4514_string(),
            "names": list(self.names),
            "issuer": self.issuer,
            "serial": self.serial,
            "notBefore": self.notBefore.isoformat(),
            "notAfter": self.notAfter.isoformat(),
            "fingerprint": self.fingerprint,
            "path": self.certPath,
        }


def _defaultMakeServerTLS(certPath: str, keyPath: str) -> Any:
    from gopherpost import tls

    return tls.loadServerContextFactory(certPath, keyPath)


def loadServedCertificate(
    certPath: str,
    keyPath: str,
    origin: str,
    makeServerTLS: MakeServerTLS | None = None,
    variable: str = "SMTP_TLS_CERT",
) -> ServedCertificate:
    """
    Read a certificate chain and its key and build the TLS that serves them.

    This reads files and builds an OpenSSL context: call it at start-up or
    in a thread.

    @param makeServerTLS: builds the inbound TLS from the two files (default
        L{gopherpost.tls.loadServerContextFactory}: TLS 1.2 at least, the
        server's suites, the key checked against the certificate).
    @param variable: the setting named in errors.
    @raise ConfigError: a file does not load, or the key does not match.
    """
    try:
        with open(certPath, "rb") as f:
            chain = parseCertificateChain(f.read())
    except OSError as e:
        raise ConfigError(variable, f"cannot read {certPath!r}: {e.strerror or e}") from None
    except ValueError as e:
        raise ConfigError(variable, f"{certPath!r}: {e}") from None
    serverTLS = (makeServerTLS or _defaultMakeServerTLS)(certPath, keyPath)
    return ServedCertificate(origin, certPath, keyPath, chain, serverTLS)


@implementer(ICertificateSource)
class FixedCertificateSource:
    """
    An L{ICertificateSource} that serves what it was last given.
    """

    def __init__(self, certificate: ServedCertificate) -> None:
        self.certificate = certificate

    def currentCertificate(self) -> ServedCertificate:
        """
        The certificate given last.
        """
        return self.certificate


def _serverConnection(serverTLS: Any, tlsProtocol: Any) -> SSL.Connection:
    if IOpenSSLServerConnectionCreator.providedBy(serverTLS):
        return serverTLS.serverConnectionForTLS(tlsProtocol)
    connection = SSL.Connection(serverTLS.getContext(), None)
    connection.set_app_data(tlsProtocol)
    return connection


@implementer(IOpenSSLServerConnectionCreator)
class CertificateSwitch:
    """
    Inbound TLS (for C{transport.startTLS} and
    L{twisted.protocols.tls.TLSMemoryBIOFactory} alike) that serves, to
    each new connection, the certificate its source holds at that moment.

    It holds no certificate of its own: each L{ServedCertificate} carries
    its ready TLS context, so a swap costs nothing here and a connection
    made before it keeps the old context (and certificate) to its end.
    """

    def __init__(self, source: ICertificateSource) -> None:
        self.source = source

    @property
    def current(self) -> ServedCertificate:
        """
        The certificate a connection made now gets.
        """
        return cast(ServedCertificate, self.source.currentCertificate())

    def serverConnectionForTLS(self, tlsProtocol: Any) -> SSL.Connection:
        """
        A server TLS connection with the current certificate
        (L{IOpenSSLServerConnectionCreator}).
        """
        return _serverConnection(self.current.serverTLS, tlsProtocol)

    def getContext(self) -> SSL.Context:
        """
        The current certificate's OpenSSL context (the older context-factory
        interface, for callers that want one).
        """
        context: SSL.Context = self.current.serverTLS.getContext()
        return context

    def __repr__(self) -> str:
        served = self.current
        return f"<TLS serving the {served.origin} certificate for {', '.join(served.names)}>"
