# -*- test-case-name: tests.test_tlspolicy_connection -*-
"""
The TLS side of one outbound STARTTLS connection under a transport policy:
the connection creator the SMTP client hands to C{transport.startTLS}, which
checks the server's certificate when the handshake is done and records what
it found.

  - L{WebPKICheck}: the chain verifies against the trust store (OpenSSL's
    own verification, recorded by a verify callback that never interrupts
    the handshake) and the certificate names the host (MTA-STS, and
    C{SMTP_OUTBOUND_TLS=verify}).
  - L{DANECheck}: the chain matches a usable TLSA record
    (L{gopherpost.tlspolicy.certificates.verifyDANE}).

An enforcing check that fails ends the connection before anything is sent
(L{twisted.protocols.tls.TLSMemoryBIOProtocol.failVerification}, as
Twisted's own host name check does), with the reason as the connection's
loss; the SMTP client then defers the host, never retrying in cleartext.  A
recording check (MTA-STS C{testing}, C{SMTP_OUTBOUND_TLS=may}) only
records.  Either way the L{TLSObservation} says what happened, for TLS
reports and the delivery log.

The OpenSSL contexts are built once (L{ClientTLSContexts}) and shared by
every connection; each connection has its own check.
"""

from __future__ import annotations

import weakref
from collections.abc import Callable, Sequence
from typing import Any

from cryptography import x509
from OpenSSL import SSL
from twisted.internet.interfaces import IOpenSSLClientConnectionCreator
from twisted.internet.ssl import CertificateOptions, TLSVersion
from twisted.logger import Logger
from twisted.python.failure import Failure
from zope.interface import implementer

from gopherpost.tls import clientConnection, platformTrustRoot
from gopherpost.tlspolicy.certificates import (
    CertificateVerdict,
    TLSARecord,
    matchesHostname,
    verifyDANE,
    verifyErrorText,
    verifyErrorType,
)
from gopherpost.tlspolicy.results import CERTIFICATE_HOST_MISMATCH, VALIDATION_FAILURE

__all__ = [
    "CertificateRefused",
    "TLSObservation",
    "CertificateCheck",
    "WebPKICheck",
    "DANECheck",
    "ClientTLSContexts",
]

_log = Logger()


class CertificateRefused(Exception):
    """
    The connection was ended because the server's certificate failed the
    transport policy; C{str()} says why, on one line.
    """


class TLSObservation:
    """
    What one connection's TLS did.

    @ivar attempted: a TLS connection was set up (the server accepted
        STARTTLS and the handshake began).
    @ivar completed: the handshake finished.
    @ivar verdict: the certificate check's verdict, once the handshake
        finished (L{None} without a check).
    """

    def __init__(self) -> None:
        self.attempted = False
        self.completed = False
        self.verdict: CertificateVerdict | None = None

    def __repr__(self) -> str:
        return (
            f"<TLSObservation attempted={self.attempted} completed={self.completed} "
            f"verdict={self.verdict!r}>"
        )


#: C{check(chain, verifyErrors) -> CertificateVerdict}: C{chain} is what the
#: server sent (its own certificate first), C{verifyErrors} OpenSSL's
#: verification errors C{(code, depth)} in the order it met them.
CertificateCheck = Callable[
    [Sequence[x509.Certificate], Sequence[tuple[int, int]]], CertificateVerdict
]


class WebPKICheck:
    """
    The chain must verify against the trust store, and the certificate
    must be for one of C{names} (the MX host name).
    """

    webPKI = True

    def __init__(self, names: Sequence[str]) -> None:
        self.names = tuple(names)

    def __call__(
        self, chain: Sequence[x509.Certificate], verifyErrors: Sequence[tuple[int, int]]
    ) -> CertificateVerdict:
        if verifyErrors:
            code, depth = verifyErrors[0]
            return CertificateVerdict(
                False, verifyErrorType(code), f"{verifyErrorText(code)} (depth {depth})"
            )
        if not chain:
            return CertificateVerdict(False, VALIDATION_FAILURE, "the server sent no certificate")
        if not matchesHostname(chain[0], self.names):
            return CertificateVerdict(
                False,
                CERTIFICATE_HOST_MISMATCH,
                f"the certificate is not for {' or '.join(self.names)}",
            )
        return CertificateVerdict(True)


class DANECheck:
    """
    The chain must match one of the usable TLSA records (RFC 7672).
    """

    webPKI = False

    def __init__(self, records: Sequence[TLSARecord], names: Sequence[str]) -> None:
        self.records = tuple(records)
        self.names = tuple(names)

    def __call__(
        self, chain: Sequence[x509.Certificate], verifyErrors: Sequence[tuple[int, int]]
    ) -> CertificateVerdict:
        return verifyDANE(self.records, chain, self.names)


def _peerChain(connection: SSL.Connection) -> list[x509.Certificate]:
    """
    The certificates the server sent, its own first, as C{cryptography}
    objects (pyOpenSSL 24.3 can give those directly; 23 gives its own).
    """
    try:
        chain: Any = connection.get_peer_cert_chain(as_cryptography=True)
    except TypeError:
        chain = [c.to_cryptography() for c in connection.get_peer_cert_chain() or []]
    return list(chain or [])


class _ConnectionCheck:
    """
    One connection's check, between the callbacks of a shared context.
    """

    def __init__(
        self,
        check: CertificateCheck | None,
        enforce: bool,
        label: str,
        observation: TLSObservation,
    ) -> None:
        self.check = check
        self.enforce = enforce
        self.label = label
        self.observation = observation
        self.verifyErrors: list[tuple[int, int]] = []

    def handshakeDone(self, connection: SSL.Connection) -> None:
        observation = self.observation
        observation.completed = True
        if self.check is None:
            return
        try:
            verdict = self.check(_peerChain(connection), self.verifyErrors)
        except Exception as e:
            # A certificate the libraries cannot read (an unknown key type,
            # bad encoding) is the remote's doing: a failure, not a bug report.
            reason = f"the certificate cannot be checked: {type(e).__name__}: {e}"
            _log.warn("{label}: {reason}", label=self.label, reason=reason)
            verdict = CertificateVerdict(False, VALIDATION_FAILURE, reason[:200])
        observation.verdict = verdict
        if verdict.ok or not self.enforce:
            return
        protocol = connection.get_app_data()
        protocol.failVerification(Failure(CertificateRefused(f"{self.label}: {verdict.reason}")))


@implementer(IOpenSSLClientConnectionCreator)
class _CheckedClientTLS:
    """
    The connection creator of one outbound connection.
    """

    def __init__(
        self,
        contexts: ClientTLSContexts,
        context: SSL.Context,
        hostname: str,
        connectionCheck: _ConnectionCheck,
    ) -> None:
        self._contexts = contexts
        self._context = context
        self.hostname = hostname
        self._check = connectionCheck

    def clientConnectionForTLS(self, tlsProtocol: object) -> SSL.Connection:
        connection = clientConnection(self._context, self.hostname, tlsProtocol)
        self._contexts.watch(connection, self._check)
        self._check.observation.attempted = True
        return connection

    def __repr__(self) -> str:
        return f"<outbound TLS for {self.hostname!r} ({self._check.label})>"


class ClientTLSContexts:
    """
    The OpenSSL contexts of outbound STARTTLS, built once, and the creators
    made from them.
    """

    def __init__(self, trustRoot: Any = None) -> None:
        """
        @param trustRoot: the CAs a L{WebPKICheck} trusts; default
            C{SSL_CERT_FILE}/C{SSL_CERT_DIR} or the system's store
            (L{gopherpost.tls.platformTrustRoot}), loaded at the first use.
        """
        self._trustRoot = trustRoot
        self._contexts: dict[tuple[bool, bool], SSL.Context] = {}
        self._checks: weakref.WeakKeyDictionary[SSL.Connection, _ConnectionCheck] = (
            weakref.WeakKeyDictionary()
        )

    def creator(
        self,
        hostname: str,
        check: CertificateCheck | None,
        enforce: bool,
        label: str,
        observation: TLSObservation,
        strict: bool = True,
    ) -> IOpenSSLClientConnectionCreator:
        """
        The creator for one connection to C{hostname}.

        @param check: the certificate check, or L{None} for none.
        @param enforce: end the connection when the check fails.
        @param label: names the policy in the reason of a refusal, e.g.
            C{"DANE"}.
        @param observation: filled in as the connection goes.
        @param strict: TLS 1.2 at least (else OpenSSL's defaults).
        @raise ValueError: the trust store cannot be found.
        @raise OpenSSL.SSL.Error: it does not load.
        """
        webPKI = bool(getattr(check, "webPKI", False))
        context = self._context(webPKI, strict)
        connectionCheck = _ConnectionCheck(check, enforce, label, observation)
        return _CheckedClientTLS(self, context, hostname.rstrip(".").lower(), connectionCheck)

    def watch(self, connection: SSL.Connection, check: _ConnectionCheck) -> None:
        """
        Route C{connection}'s callbacks to C{check}.
        """
        self._checks[connection] = check

    def _context(self, webPKI: bool, strict: bool) -> SSL.Context:
        key = (webPKI, strict)
        context = self._contexts.get(key)
        if context is not None:
            return context
        extra: dict[str, Any] = {"raiseMinimumTo": TLSVersion.TLSv1_2} if strict else {}
        if webPKI:
            if self._trustRoot is None:
                self._trustRoot = platformTrustRoot()
            check = getattr(self._trustRoot, "check", None)
            if check is not None:
                check()
            options = CertificateOptions(trustRoot=self._trustRoot, **extra)
            context = options.getContext()
            context.set_verify(SSL.VERIFY_PEER, self._verified)
        else:
            context = CertificateOptions(verify=False, **extra).getContext()
        context.set_info_callback(self._info)
        self._contexts[key] = context
        return context

    def _verified(
        self, connection: SSL.Connection, certificate: Any, code: int, depth: int, ok: int
    ) -> bool:
        """
        OpenSSL's verification of one certificate of the chain: remember
        any error, and go on (the check decides once the handshake is done).
        """
        check = self._checks.get(connection)
        if not ok and check is not None:
            check.verifyErrors.append((code, depth))
        return True

    def _info(self, connection: SSL.Connection, where: int, ret: int) -> None:
        if not where & SSL.SSL_CB_HANDSHAKE_DONE:
            return
        check = self._checks.pop(connection, None)
        if check is not None:
            check.handshakeDone(connection)
