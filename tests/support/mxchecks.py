"""
Helpers for the tests of L{gopherpost.checks}: a loopback DNS zone, the
resolver and thread pools the checks use, DKIM keys and signed messages.
"""

from __future__ import annotations

import base64
from collections.abc import Generator
from dataclasses import dataclass
from typing import Any

import dkim
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ed25519, rsa
from twisted.internet import defer, reactor
from twisted.python.threadpool import ThreadPool

from gopherpost.checks.dkimverify import DKIMVerifier
from gopherpost.checks.spf import SPFChecker
from gopherpost.checks.threaddns import ThreadDNS
from gopherpost.dns import Resolver
from tests.support.dnsserver import DNSTestServer, startDNSServer

__all__ = [
    "CheckEnvironment",
    "InlineCallbacks",
    "SigningKey",
    "message",
    "startCheckEnvironment",
]

#: The return type of an C{inlineCallbacks} test: what each C{yield} gives
#: back is whatever the Deferred fired with.
InlineCallbacks = Generator[defer.Deferred[Any], Any, Any]


@dataclass
class CheckEnvironment:
    """
    A DNS zone on loopback and the checks' plumbing pointed at it.
    """

    dnsServer: DNSTestServer
    resolver: Resolver
    threadDNS: ThreadDNS
    pool: ThreadPool

    def spfChecker(self, timeout: float = 10.0) -> SPFChecker:
        return SPFChecker(self.threadDNS, reactor, self.pool, timeout=timeout)

    def dkimVerifier(self) -> DKIMVerifier:
        return DKIMVerifier(self.threadDNS, reactor, self.pool)


def startCheckEnvironment(testCase: Any, dnsTimeout: float = 2.0) -> CheckEnvironment:
    """
    Start a loopback DNS server, a resolver (lookups time out after
    C{dnsTimeout} seconds) and a checks thread pool; all are stopped in
    cleanup.
    """
    server = startDNSServer(testCase)
    dnsPool = ThreadPool(minthreads=0, maxthreads=4, name="test-dns")
    dnsPool.start()
    testCase.addCleanup(dnsPool.stop)
    resolver = Resolver([server.address], reactor, threadpool=dnsPool, timeout=dnsTimeout)
    pool = ThreadPool(minthreads=0, maxthreads=4, name="test-checks")
    pool.start()
    testCase.addCleanup(pool.stop)
    return CheckEnvironment(server, resolver, ThreadDNS(resolver, reactor, dnsTimeout), pool)


class SigningKey:
    """
    A DKIM key (RSA or Ed25519) that signs test messages and publishes
    itself in a L{DNSTestServer}.
    """

    def __init__(self, domain: str, selector: str = "sel", algorithm: str = "rsa") -> None:
        self.domain = domain
        self.selector = selector
        if algorithm == "rsa":
            key = rsa.generate_private_key(public_exponent=65537, key_size=1024)
            self._private = key.private_bytes(
                serialization.Encoding.PEM,
                serialization.PrivateFormat.TraditionalOpenSSL,
                serialization.NoEncryption(),
            )
            spki = key.public_key().public_bytes(
                serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
            )
            self.record = "v=DKIM1; k=rsa; p=" + base64.b64encode(spki).decode()
            self.algorithm = b"rsa-sha256"
        else:
            edKey = ed25519.Ed25519PrivateKey.generate()
            seed = edKey.private_bytes(
                serialization.Encoding.Raw,
                serialization.PrivateFormat.Raw,
                serialization.NoEncryption(),
            )
            self._private = base64.b64encode(seed)
            raw = edKey.public_key().public_bytes(
                serialization.Encoding.Raw, serialization.PublicFormat.Raw
            )
            self.record = "v=DKIM1; k=ed25519; p=" + base64.b64encode(raw).decode()
            self.algorithm = b"ed25519-sha256"

    def publish(self, server: DNSTestServer) -> None:
        server.addTXT(f"{self.selector}._domainkey.{self.domain}", self.record)

    def sign(self, data: bytes) -> bytes:
        signature = dkim.sign(
            data,
            self.selector.encode(),
            self.domain.encode(),
            self._private,
            canonicalize=(b"relaxed", b"relaxed"),
            signature_algorithm=self.algorithm,
            include_headers=[b"from", b"to", b"subject"],
            linesep=b"\r\n",
        )
        return signature + data

    def arcSeal(self, data: bytes, authservId: str) -> bytes:
        """
        Add an ARC set as a forwarder would (C{data} must carry an
        Authentication-Results field of C{authservId}).
        """
        headers = dkim.arc_sign(
            data,
            self.selector.encode(),
            self.domain.encode(),
            self._private,
            authservId.encode(),
            linesep=b"\r\n",
        )
        return b"".join(headers) + data


def message(
    sender: str = "alice@example.test", subject: str = "Hello", body: bytes = b"Hi there.\r\n"
) -> bytes:
    """
    A small message with CRLF line ends.
    """
    return (
        f"From: Alice <{sender}>\r\nTo: bob@mx.test\r\nSubject: {subject}\r\n"
        "Message-ID: <1@example.test>\r\n\r\n"
    ).encode() + body
