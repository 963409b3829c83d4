"""
Tests for L{gopherpost.acme.source}: served certificates and the
L{CertificateSwitch} that picks the current one per new TLS connection.
"""

from __future__ import annotations

from typing import Any

from OpenSSL import SSL
from twisted.internet.defer import inlineCallbacks
from twisted.internet.interfaces import IOpenSSLServerConnectionCreator
from twisted.internet.threads import deferToThread
from twisted.trial.unittest import SynchronousTestCase, TestCase
from zope.interface.verify import verifyObject

from gopherpost.acme.interfaces import ICertificateSource
from gopherpost.acme.source import (
    CertificateSwitch,
    FixedCertificateSource,
    loadServedCertificate,
    parseCertificateChain,
)
from gopherpost.config import ConfigError
from tests.support.certs import makeTestPKI
from tests.support.tlsprobe import STARTTLSClient, listenMinimalSTARTTLS

NAME = "mx.example.test"


class _TLSProtocol:
    """
    Stands for the TLS protocol a connection is made for (Twisted 26 reads
    its factory's wrapped factory for ALPN).
    """

    class factory:
        wrappedFactory = None


class ServedCertificateTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.pki = makeTestPKI(self.mktemp(), NAME)

    def test_facts(self) -> None:
        """
        The facts come from the leaf; the chain keeps the intermediate.
        """
        files = self.pki.chained
        served = loadServedCertificate(files.certPath, files.keyPath, "file")
        self.assertEqual(len(served.chain), 2)
        self.assertEqual(served.names, (NAME,))
        self.assertEqual(served.leaf.serial_number, files.certificate.serial_number)
        facts = served.facts()
        self.assertEqual(facts["origin"], "file")
        self.assertEqual(facts["names"], [NAME])
        self.assertIn("GopherPost Test Intermediate CA", facts["issuer"])
        self.assertEqual(facts["serial"], format(files.certificate.serial_number, "x"))
        self.assertEqual(len(facts["fingerprint"]), 64)
        self.assertFalse(served.expired(served.notAfter.timestamp() - 1))
        self.assertTrue(served.expired(served.notAfter.timestamp()))

    def test_errors(self) -> None:
        """
        A missing file, a file without a certificate or a key of another
        certificate: L{ConfigError} naming the variable.
        """
        good, other = self.pki.good, self.pki.wrongName
        with self.assertRaises(ConfigError) as missing:
            loadServedCertificate(good.certPath + ".gone", good.keyPath, "acme", variable="X_CERT")
        self.assertEqual(missing.exception.variable, "X_CERT")
        with self.assertRaises(ConfigError) as empty:
            loadServedCertificate(good.keyPath, good.keyPath, "acme")
        self.assertIn("no PEM certificate", empty.exception.problem)
        with self.assertRaises(ConfigError) as mismatch:
            loadServedCertificate(good.certPath, other.keyPath, "acme")
        self.assertIn("does not match", mismatch.exception.problem)

    def test_parseChain(self) -> None:
        with open(self.pki.chained.certPath, "rb") as f:
            self.assertEqual(len(parseCertificateChain(f.read())), 2)
        self.assertRaises(ValueError, parseCertificateChain, b"nothing")


class SwitchTests(SynchronousTestCase):
    def setUp(self) -> None:
        pki = makeTestPKI(self.mktemp(), NAME)
        self.one = loadServedCertificate(pki.good.certPath, pki.good.keyPath, "self-signed")
        self.two = loadServedCertificate(pki.chained.certPath, pki.chained.keyPath, "acme")
        self.source = FixedCertificateSource(self.one)
        self.switch = CertificateSwitch(self.source)

    def test_interfaces(self) -> None:
        verifyObject(IOpenSSLServerConnectionCreator, self.switch)
        verifyObject(ICertificateSource, self.source)

    def test_connectionsGetTheCurrentContext(self) -> None:
        """
        Each new connection is made with the current certificate's context;
        one made before a swap keeps its own.
        """
        before = self.switch.serverConnectionForTLS(_TLSProtocol())
        self.source.certificate = self.two
        after = self.switch.serverConnectionForTLS(_TLSProtocol())
        self.assertIs(before.get_context(), self.one.serverTLS.getContext())
        self.assertIs(after.get_context(), self.two.serverTLS.getContext())
        self.assertIs(self.switch.getContext(), self.two.serverTLS.getContext())
        self.assertIn("acme certificate for mx.example.test", repr(self.switch))

    def test_oldStyleContextFactory(self) -> None:
        """
        A certificate whose TLS is an old-style context factory (only
        C{getContext}) is served too.
        """

        class OldStyle:
            def __init__(self, context: SSL.Context) -> None:
                self.context = context

            def getContext(self) -> SSL.Context:
                return self.context

        context = self.two.serverTLS.getContext()
        self.source.certificate = loadServedCertificate(
            self.two.certPath, self.two.keyPath, "acme", lambda c, k: OldStyle(context)
        )
        marker = _TLSProtocol()
        connection = self.switch.serverConnectionForTLS(marker)
        self.assertIs(connection.get_context(), context)
        self.assertIs(connection.get_app_data(), marker)


class SwapOverTheNetworkTests(TestCase):
    timeout = 60

    @inlineCallbacks
    def test_sessionKeepsItsCertificate(self) -> Any:
        """
        Over real STARTTLS: a session started before the swap keeps the old
        certificate (and goes on working), a new one gets the new.
        """
        pki = makeTestPKI(self.mktemp(), NAME)
        with open(pki.ca.certPath, "rb") as f:
            root = f.read()
        first = loadServedCertificate(pki.good.certPath, pki.good.keyPath, "acme")
        second = loadServedCertificate(pki.chained.certPath, pki.chained.keyPath, "acme")
        source = FixedCertificateSource(first)
        port = listenMinimalSTARTTLS(self, CertificateSwitch(source))
        old = yield deferToThread(STARTTLSClient, port, NAME, root)
        self.addCleanup(deferToThread, old.close)
        source.certificate = second
        new = yield deferToThread(STARTTLSClient, port, NAME, root)
        self.addCleanup(deferToThread, new.close)
        self.assertEqual(old.certificate.serial_number, first.leaf.serial_number)
        self.assertEqual(new.certificate.serial_number, second.leaf.serial_number)
        code, _ = yield deferToThread(old.command, "NOOP")
        self.assertEqual(code, 250)
