# -*- test-case-name: tests.test_tls -*-
"""
TLS for GopherPost, both directions.

Inbound (STARTTLS and the implicit-TLS listener): L{serverContextFactory}
turns C{SMTP_TLS_CERT}/C{SMTP_TLS_KEY} into a L{ServerTLS} connection
creator, or generates a self-signed certificate for C{SMTP_HOSTNAME} once and
keeps it.  TLS 1.2 at least, its suites limited to L{INBOUND_TLS12_CIPHERS}
(TLS 1.3 keeps OpenSSL's suites); a client that offers ALPN gets C{smtp} if it
offered that, else no ALPN at all (never a fatal alert).

Outbound (STARTTLS to a remote MX): L{clientContextFor} makes the connection
creator for one host under a policy of C{SMTP_OUTBOUND_TLS}, and the small
pure functions L{shouldStartTLS}, L{afterStartTLSRefused} and
L{afterHandshakeFailure} hold the policy decisions the SMTP client follows.

Policies:
  - C{"verify"} (default): when STARTTLS is offered it is used, and the
    certificate must verify against the MX host name; otherwise that host is
    a temporary failure.  Not offered: cleartext.
  - C{"may"}: STARTTLS when offered, without verifying the certificate.
  - C{"require"}: like C{"verify"}, and a server that does not offer
    STARTTLS is a temporary failure.
  - C{"none"}: never STARTTLS.
A failed handshake never falls back to cleartext on the same connection.
"""

from __future__ import annotations

import datetime
import os
import re
from collections.abc import Mapping, Sequence
from typing import Any, cast

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID
from OpenSSL import SSL, crypto

# The trust-root interface is only published in this module; Twisted's own
# documentation of optionsForClientTLS points at it.
from twisted.internet._sslverify import IOpenSSLTrustRoot
from twisted.internet.abstract import isIPAddress, isIPv6Address
from twisted.internet.interfaces import (
    IOpenSSLClientConnectionCreator,
    IOpenSSLServerConnectionCreator,
)
from twisted.internet.ssl import (
    AcceptableCiphers,
    CertificateOptions,
    TLSVersion,
    optionsForClientTLS,
    platformTrust,
)
from twisted.logger import Logger
from zope.interface import implementer

from gopherpost.config import OUTBOUND_TLS_POLICIES, ConfigError, Settings
from gopherpost.durable import replaceFile

__all__ = [
    "clientConnection",
    "INBOUND_TLS12_CIPHERS",
    "ALPN_PROTOCOL",
    "ServerTLS",
    "SELF_SIGNED_CERT",
    "SELF_SIGNED_KEY",
    "CONTINUE_CLEARTEXT",
    "DEFER_HOST",
    "TLSPolicyError",
    "serverContextFactory",
    "loadServerContextFactory",
    "ensureSelfSignedCertificate",
    "clientContextFor",
    "platformTrustRoot",
    "checkPolicy",
    "shouldStartTLS",
    "verifiesCertificate",
    "afterStartTLSRefused",
    "afterHandshakeFailure",
]

_log = Logger()

#: The TLS 1.2 suites inbound TLS accepts: Mozilla's "intermediate" profile
#: without its DHE suites, i.e. ECDHE key exchange with AES-GCM or
#: ChaCha20-Poly1305 only (no CBC, no SHA-1 MAC, no static RSA).  TLS 1.3
#: keeps OpenSSL's own suites, which are all of that kind.  Outbound TLS
#: keeps Twisted's broader default: an old MTA is better reached encrypted
#: than in clear.
INBOUND_TLS12_CIPHERS = ":".join(
    [
        "ECDHE-ECDSA-AES128-GCM-SHA256",
        "ECDHE-RSA-AES128-GCM-SHA256",
        "ECDHE-ECDSA-AES256-GCM-SHA384",
        "ECDHE-RSA-AES256-GCM-SHA384",
        "ECDHE-ECDSA-CHACHA20-POLY1305",
        "ECDHE-RSA-CHACHA20-POLY1305",
    ]
)

#: The one ALPN protocol the server selects, when a client offers it.
ALPN_PROTOCOL = b"smtp"

#: File names of the generated certificate inside the state directory.
SELF_SIGNED_CERT = "cert.pem"
SELF_SIGNED_KEY = "key.pem"

#: How long a generated self-signed certificate is valid.
SELF_SIGNED_LIFETIME = datetime.timedelta(days=3650)

#: A generated certificate this close to expiry is replaced at start-up.
_RENEW_BEFORE = datetime.timedelta(days=30)

#: Outcome of L{afterStartTLSRefused}: go on in cleartext.
CONTINUE_CLEARTEXT = "continue-cleartext"
#: Outcome of L{afterStartTLSRefused} / L{afterHandshakeFailure}: give up on
#: this host for now (a temporary failure); the queue tries another MX or
#: retries later.
DEFER_HOST = "defer-host"

_PEM_CERTIFICATE = re.compile(
    rb"-----BEGIN CERTIFICATE-----\r?\n.+?-----END CERTIFICATE-----", re.DOTALL
)


# ---------------------------------------------------------------------------
# Inbound: the server's certificate


def _utcnow() -> datetime.datetime:
    return datetime.datetime.now(datetime.UTC)


def _notValidAfter(cert: x509.Certificate) -> datetime.datetime:
    # cryptography >= 42 has the aware variant; 38 only the naive UTC one.
    aware = getattr(cert, "not_valid_after_utc", None)
    if aware is not None:
        return aware
    return cert.not_valid_after.replace(tzinfo=datetime.UTC)


def _publicKeyBytes(key) -> bytes:
    return key.public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )


def _readCertificates(path: str, variable: str) -> Sequence[x509.Certificate]:
    try:
        with open(path, "rb") as f:
            data = f.read()
    except OSError as e:
        raise ConfigError(variable, f"cannot read {path!r}: {e.strerror}") from None
    blocks = _PEM_CERTIFICATE.findall(data)
    if not blocks:
        raise ConfigError(variable, f"{path!r} holds no PEM certificate")
    certificates = []
    for number, block in enumerate(blocks, 1):
        try:
            certificates.append(x509.load_pem_x509_certificate(block))
        except ValueError as e:
            raise ConfigError(
                variable, f"certificate #{number} in {path!r} does not load: {e}"
            ) from None
    return certificates


def _readPrivateKey(path: str, variable: str):
    try:
        with open(path, "rb") as f:
            data = f.read()
    except OSError as e:
        raise ConfigError(variable, f"cannot read {path!r}: {e.strerror}") from None
    try:
        return serialization.load_pem_private_key(data, password=None)
    except TypeError:
        raise ConfigError(
            variable, f"{path!r} is encrypted; a passphrase-protected key is not supported"
        ) from None
    except ValueError as e:
        raise ConfigError(variable, f"{path!r} is not a PEM private key ({e})") from None
    except Exception as e:  # e.g. cryptography's UnsupportedAlgorithm
        raise ConfigError(variable, f"{path!r} does not load: {e}") from None


def _selectALPN(connection: SSL.Connection, offered: list[bytes]) -> Any:
    """
    The server's ALPN choice: L{ALPN_PROTOCOL} when offered, else none.

    Twisted 26's own callback fails the handshake (alert 80) when nothing
    overlaps, which turns away every client that offers ALPN at all.
    """
    if ALPN_PROTOCOL in offered:
        return ALPN_PROTOCOL
    return SSL.NO_OVERLAPPING_PROTOCOLS


@implementer(IOpenSSLServerConnectionCreator)
class ServerTLS:
    """
    The server side of inbound TLS, for STARTTLS (C{transport.startTLS}) and
    for L{twisted.protocols.tls.TLSMemoryBIOFactory} alike: one OpenSSL
    context, built (and checked) once.

    @ivar options: the L{CertificateOptions} the context came from.
    """

    def __init__(self, options: CertificateOptions) -> None:
        self.options = options
        context = options.getContext()
        context.set_alpn_select_callback(_selectALPN)
        self._context = context

    def getContext(self) -> SSL.Context:
        """
        The OpenSSL context (the older context-factory interface).
        """
        return self._context

    def serverConnectionForTLS(self, tlsProtocol: object) -> SSL.Connection:
        """
        A new server connection (L{IOpenSSLServerConnectionCreator}).
        """
        connection = SSL.Connection(self._context, None)
        connection.set_app_data(tlsProtocol)
        return connection

    def __repr__(self) -> str:
        return "<inbound TLS>"


def loadServerContextFactory(
    certPath: str,
    keyPath: str,
    certVariable: str = "SMTP_TLS_CERT",
    keyVariable: str = "SMTP_TLS_KEY",
) -> ServerTLS:
    """
    Load a PEM certificate (optionally followed by its intermediate
    certificates) and its PEM private key into the inbound L{ServerTLS}:
    TLS 1.2 at least, L{INBOUND_TLS12_CIPHERS}, ALPN C{smtp} or none.

    @param certPath: the certificate chain file, leaf first.
    @param keyPath: the unencrypted private key (PKCS#1, PKCS#8, SEC1).
    @param certVariable: the variable named in errors about the certificate.
    @param keyVariable: the variable named in errors about the key.
    @return: a connection creator for C{transport.startTLS} and
        L{twisted.protocols.tls.TLSMemoryBIOFactory}.
    @raise ConfigError: a file is missing or unreadable, holds no
        certificate/key, or the key does not belong to the first
        certificate.
    """
    certificates = _readCertificates(certPath, certVariable)
    key = _readPrivateKey(keyPath, keyVariable)
    leaf = certificates[0]
    if _publicKeyBytes(leaf.public_key()) != _publicKeyBytes(key.public_key()):
        raise ConfigError(
            keyVariable,
            f"{keyPath!r} does not match the (first) certificate in {certPath!r}",
        )
    if _notValidAfter(leaf) < _utcnow():
        _log.warn(
            "TLS certificate {path} expired on {date}; clients that verify will refuse it",
            path=certPath,
            date=_notValidAfter(leaf).isoformat(),
        )
    try:
        return ServerTLS(_certificateOptions(key, leaf, certificates[1:]))
    except (SSL.Error, crypto.Error, ValueError, TypeError) as e:
        raise ConfigError(
            certVariable, f"{certPath!r} cannot be used with {keyPath!r}: {e}"
        ) from None


def _certificateOptions(
    key, leaf: x509.Certificate, chain: Sequence[x509.Certificate]
) -> CertificateOptions:
    """
    Server options for a key, its certificate and intermediates, TLS 1.2 at
    least with L{INBOUND_TLS12_CIPHERS}, with the OpenSSL context already
    built so any problem surfaces at start-up rather than at the first
    STARTTLS.

    Current pyOpenSSL takes C{cryptography} objects (and deprecates its own);
    older releases (Debian's 23.0) only take their own.
    """
    ciphers = AcceptableCiphers.fromOpenSSLCipherString(INBOUND_TLS12_CIPHERS)
    try:
        # The stubs know only pyOpenSSL's own types; see the docstring.
        options = CertificateOptions(
            privateKey=key,
            certificate=cast(Any, leaf),
            extraCertChain=cast(Any, list(chain)),
            raiseMinimumTo=TLSVersion.TLSv1_2,
            acceptableCiphers=ciphers,
        )
        options.getContext()
    except TypeError:
        options = CertificateOptions(
            privateKey=crypto.PKey.from_cryptography_key(key),
            certificate=crypto.X509.from_cryptography(leaf),
            extraCertChain=[crypto.X509.from_cryptography(c) for c in chain],
            raiseMinimumTo=TLSVersion.TLSv1_2,
            acceptableCiphers=ciphers,
        )
        options.getContext()
    return options


def _generateSelfSigned(hostname: str, now: datetime.datetime) -> tuple[bytes, bytes]:
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, hostname)])
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(days=1))
        .not_valid_after(now + SELF_SIGNED_LIFETIME)
        .add_extension(x509.SubjectAlternativeName([x509.DNSName(hostname)]), critical=False)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .sign(key, hashes.SHA256())
    )
    keyPEM = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    return cert.public_bytes(serialization.Encoding.PEM), keyPEM


def _reusable(certPath: str, keyPath: str, hostname: str, now: datetime.datetime) -> str | None:
    """
    Why the generated certificate cannot be reused, or L{None} if it can.
    """
    if not (os.path.exists(certPath) and os.path.exists(keyPath)):
        return "missing"
    try:
        loadServerContextFactory(certPath, keyPath)
        cert = _readCertificates(certPath, "SMTP_TLS_CERT")[0]
    except ConfigError as e:
        return f"unloadable ({e.problem})"
    try:
        names = cert.extensions.get_extension_for_class(
            x509.SubjectAlternativeName
        ).value.get_values_for_type(x509.DNSName)
    except x509.ExtensionNotFound:
        names = []
    if hostname not in names:
        return f"not for {hostname!r}"
    if _notValidAfter(cert) - _RENEW_BEFORE < now:
        return "expiring"
    return None


def ensureSelfSignedCertificate(
    stateDirectory: str, hostname: str, now: datetime.datetime | None = None
) -> tuple[str, str]:
    """
    Make sure C{stateDirectory} holds a usable self-signed certificate for
    C{hostname}, generating one (RSA 2048, valid ten years) only when it is
    missing, does not load, is for another name or expires within 30 days.

    The directory is created with mode 0700 (and tightened to 0700 if it
    exists); the key is written with mode 0600.  Files are written to a
    temporary name, fsynced and renamed.  This blocks: call it before the
    reactor runs.

    @param stateDirectory: where C{cert.pem} and C{key.pem} live.
    @param hostname: the name the certificate is for (C{SMTP_HOSTNAME}).
    @param now: the current time (for tests); default the system clock.
    @return: C{(certPath, keyPath)}.
    @raise OSError: the directory or files cannot be written.
    """
    now = now or _utcnow()
    os.makedirs(stateDirectory, mode=0o700, exist_ok=True)
    os.chmod(stateDirectory, 0o700)
    certPath = os.path.join(stateDirectory, SELF_SIGNED_CERT)
    keyPath = os.path.join(stateDirectory, SELF_SIGNED_KEY)
    why = _reusable(certPath, keyPath, hostname, now)
    if why is None:
        return certPath, keyPath
    _log.info(
        "Generating a self-signed TLS certificate for {hostname} in {path} ({why})",
        hostname=hostname,
        path=stateDirectory,
        why=why,
    )
    certPEM, keyPEM = _generateSelfSigned(hostname, now)
    # Key first: a crash between the two renames leaves a mismatched pair,
    # which the next start-up regenerates.
    replaceFile(keyPath, keyPEM, 0o600)
    replaceFile(certPath, certPEM, 0o644)
    return certPath, keyPath


def serverContextFactory(settings: Settings, stateDirectory: str) -> ServerTLS | None:
    """
    The inbound TLS (STARTTLS and the implicit-TLS listener).

    @param settings: uses C{tlsDisable}, C{tlsCert}, C{tlsKey} and
        C{hostname}.
    @param stateDirectory: where a generated self-signed certificate is
        kept when no certificate is configured.
    @return: L{None} when C{SMTP_TLS_DISABLE=true}; otherwise a
        L{ServerTLS} for the configured certificate, or for a
        self-signed certificate for C{settings.hostname} generated once and
        reused on later starts.
    @raise ConfigError: a configured file does not load, the key does not
        match the certificate, or the self-signed certificate cannot be
        written.
    """
    if settings.tlsDisable:
        return None
    if settings.tlsCert is not None or settings.tlsKey is not None:
        if settings.tlsCert is None:
            raise ConfigError("SMTP_TLS_CERT", "must be set together with SMTP_TLS_KEY")
        if settings.tlsKey is None:
            raise ConfigError("SMTP_TLS_KEY", "must be set together with SMTP_TLS_CERT")
        return loadServerContextFactory(settings.tlsCert, settings.tlsKey)
    try:
        certPath, keyPath = ensureSelfSignedCertificate(stateDirectory, settings.hostname)
    except OSError as e:
        raise ConfigError(
            "SMTP_TLS_CERT",
            f"not set, and a self-signed certificate cannot be kept in "
            f"{stateDirectory!r}: {e.strerror or e}",
        ) from None
    return loadServerContextFactory(certPath, keyPath)


# ---------------------------------------------------------------------------
# Outbound: policy decisions (pure)


class TLSPolicyError(Exception):
    """
    The outbound TLS policy forbids going on with this host.

    Always a temporary failure: the queue tries another MX or retries later.

    @ivar reason: one line for logs and bounces.
    @ivar enhancedCode: the RFC 3463 status to report.
    """

    def __init__(self, reason: str, enhancedCode: str = "4.7.5") -> None:
        super().__init__(reason)
        self.reason = reason
        self.enhancedCode = enhancedCode

    def __str__(self) -> str:
        return self.reason


def checkPolicy(policy: str) -> str:
    """
    @return: C{policy} if it is one of L{OUTBOUND_TLS_POLICIES}.
    @raise ValueError: otherwise.
    """
    if policy not in OUTBOUND_TLS_POLICIES:
        raise ValueError(
            f"unknown outbound TLS policy {policy!r} (one of {', '.join(OUTBOUND_TLS_POLICIES)})"
        )
    return policy


def shouldStartTLS(policy: str, offered: bool) -> bool:
    """
    Decide whether to send STARTTLS after EHLO.

    @param policy: an outbound TLS policy.
    @param offered: whether the server's EHLO reply listed STARTTLS.
    @return: C{True} to send STARTTLS, C{False} to go on in cleartext.
    @raise TLSPolicyError: policy C{"require"} and STARTTLS not offered.
    """
    checkPolicy(policy)
    if policy == "none":
        return False
    if offered:
        return True
    if policy == "require":
        raise TLSPolicyError(
            "the server does not offer STARTTLS, which SMTP_OUTBOUND_TLS=require demands",
            "4.7.4",
        )
    return False


def verifiesCertificate(policy: str) -> bool:
    """
    Whether the policy checks the server's certificate against the host name.
    """
    return checkPolicy(policy) in ("verify", "require")


def afterStartTLSRefused(policy: str) -> str:
    """
    What to do when the server offered STARTTLS but refused the command
    (e.g. C{454 TLS not available}): no handshake happened, so the
    connection is still a clean cleartext session.

    @return: L{CONTINUE_CLEARTEXT} for C{"may"}; L{DEFER_HOST} for
        C{"verify"} and C{"require"}, which accept a host that offers
        STARTTLS only with a verified certificate.
    """
    if checkPolicy(policy) == "may":
        return CONTINUE_CLEARTEXT
    return DEFER_HOST


def afterHandshakeFailure(policy: str) -> str:
    """
    What to do when the TLS handshake (or certificate verification) failed.

    @return: always L{DEFER_HOST}: the connection is unusable and we never
        retry in cleartext, whatever the policy, so a man in the middle
        cannot downgrade us by breaking the handshake.
    """
    checkPolicy(policy)
    return DEFER_HOST


# ---------------------------------------------------------------------------
# Outbound: connection creators


@implementer(IOpenSSLTrustRoot)
class _VerifyLocations:
    """
    A trust root read from a CA file and/or a hashed CA directory, as
    OpenSSL's C{SSL_CERT_FILE} / C{SSL_CERT_DIR} name them.
    """

    def __init__(self, caFile: str | None, caPath: str | None) -> None:
        self.caFile = caFile
        self.caPath = caPath

    def check(self) -> None:
        """
        @raise ValueError: the file or directory does not exist.
        """
        if self.caFile is not None and not os.path.isfile(self.caFile):
            raise ValueError(f"SSL_CERT_FILE {self.caFile!r} is not a readable file")
        if self.caPath is not None and not all(
            os.path.isdir(p) for p in self.caPath.split(os.pathsep) if p
        ):
            raise ValueError(f"SSL_CERT_DIR {self.caPath!r} is not a directory")

    def _addCACertsToContext(self, context: SSL.Context) -> None:
        context.load_verify_locations(self.caFile, self.caPath)

    def __repr__(self) -> str:
        return f"<trust root file={self.caFile!r} dir={self.caPath!r}>"


def platformTrustRoot(environ: Mapping[str, str] | None = None) -> IOpenSSLTrustRoot:
    """
    The trust root for verifying remote servers: C{SSL_CERT_FILE} and/or
    C{SSL_CERT_DIR} when set (non-empty), else the system's default store.

    @param environ: the environment (default C{os.environ}).
    @return: an C{IOpenSSLTrustRoot} provider.
    """
    env = os.environ if environ is None else environ
    caFile = env.get("SSL_CERT_FILE") or None
    caPath = env.get("SSL_CERT_DIR") or None
    if caFile or caPath:
        return _VerifyLocations(caFile, caPath)
    return platformTrust()


def _normalizeHostname(hostname: str) -> str:
    return hostname.rstrip(".").lower()


@implementer(IOpenSSLClientConnectionCreator)
class _UnverifiedClientTLS:
    """
    Client TLS that encrypts without checking the certificate (policy
    C{"may"}), still sending SNI for a DNS name.
    """

    def __init__(self, hostname: str) -> None:
        self.hostname = hostname
        self._context = CertificateOptions(verify=False).getContext()

    def clientConnectionForTLS(self, tlsProtocol: object) -> SSL.Connection:
        return clientConnection(self._context, self.hostname, tlsProtocol)

    def __repr__(self) -> str:
        return f"<unverified TLS for {self.hostname!r}>"


def clientConnection(context: SSL.Context, hostname: str, tlsProtocol: object) -> SSL.Connection:
    """
    A client TLS connection for C{tlsProtocol} on C{context}, sending SNI
    for C{hostname} when it is a DNS name (never for an IP address, RFC 6066
    section 3).
    """
    connection = SSL.Connection(context, None)
    connection.set_app_data(tlsProtocol)
    if not (isIPAddress(hostname) or isIPv6Address(hostname)):
        try:
            connection.set_tlsext_host_name(hostname.encode("idna"))
        except UnicodeError:
            pass
    return connection


def clientContextFor(
    policy: str,
    hostname: str,
    trustRoot: object | None = None,
    environ: Mapping[str, str] | None = None,
) -> IOpenSSLClientConnectionCreator | None:
    """
    The connection creator for outbound STARTTLS to one host.

    @param policy: an outbound TLS policy (C{SMTP_OUTBOUND_TLS}).
    @param hostname: the MX host name the certificate must match (a
        trailing dot is ignored); an IP address is matched as such.
    @param trustRoot: the CAs to trust; default L{platformTrustRoot}C{(environ)}.
    @param environ: the environment for L{platformTrustRoot}.
    @return: L{None} for C{"none"}; an unverified creator for C{"may"}; for
        C{"verify"} and C{"require"} a creator that verifies the chain and
        the name with service-identity and refuses anything below TLS 1.2.
    @raise ValueError: an unknown policy, or C{SSL_CERT_FILE}/C{SSL_CERT_DIR}
        name something that does not exist.
    @raise OpenSSL.SSL.Error: the trust store cannot be loaded (depending on
        the Twisted version this surfaces here or at the handshake).
    """
    checkPolicy(policy)
    hostname = _normalizeHostname(hostname)
    if policy == "none":
        return None
    if policy == "may":
        return _UnverifiedClientTLS(hostname)
    if trustRoot is None:
        trustRoot = platformTrustRoot(environ)
    if isinstance(trustRoot, _VerifyLocations):
        trustRoot.check()
    return optionsForClientTLS(
        hostname,
        trustRoot=cast(Any, trustRoot),
        extraCertificateOptions={"raiseMinimumTo": TLSVersion.TLSv1_2},
    )
