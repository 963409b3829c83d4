"""
Tests for the inbound side of L{gopherpost.tls}: the suites a client can
get and ALPN, in memory through Twisted's TLS layer and through pyOpenSSL
alone.  (Real sockets and real clients: L{tests.test_listeners_tls}.)
"""

from __future__ import annotations

import re

from OpenSSL import SSL
from twisted.internet.address import IPv4Address
from twisted.internet.interfaces import IHandshakeListener, IOpenSSLServerConnectionCreator
from twisted.internet.protocol import Factory, Protocol
from twisted.internet.testing import StringTransport
from twisted.protocols.tls import TLSMemoryBIOFactory
from twisted.trial.unittest import SynchronousTestCase
from zope.interface import implementer
from zope.interface.verify import verifyObject

from gopherpost.tls import (
    ALPN_PROTOCOL,
    INBOUND_TLS12_CIPHERS,
    ServerTLS,
    loadServerContextFactory,
)
from tests.support.certs import makeTestPKI

HOST = "mx.example.test"

#: What Mozilla's "intermediate" profile allows for TLS 1.2, ECDHE only.
_INTERMEDIATE = re.compile(r"ECDHE-(ECDSA|RSA)-(AES(128|256)-GCM-SHA(256|384)|CHACHA20-POLY1305)")


@implementer(IHandshakeListener)
class _Application(Protocol):
    """
    What runs inside TLS on either side: notes the handshake.
    """

    handshakeDone = False

    def handshakeCompleted(self) -> None:
        self.handshakeDone = True


def _client(
    alpn: list[bytes] | None = None,
    ciphers: bytes | None = None,
    maximum: int | None = None,
) -> SSL.Connection:
    """
    A client connection that verifies nothing, offering C{alpn} and
    C{ciphers} (TLS 1.2 suites; then TLS 1.2 only) when given.
    """
    context = SSL.Context(SSL.TLS_METHOD)
    if ciphers is not None:
        context.set_cipher_list(ciphers)
        maximum = SSL.TLS1_2_VERSION
    if maximum is not None:
        context.set_max_proto_version(maximum)
    if alpn is not None:
        context.set_alpn_protos(alpn)
    connection = SSL.Connection(context, None)
    connection.set_connect_state()
    return connection


def _handshakeThroughTwisted(server: ServerTLS, client: SSL.Connection) -> _Application:
    """
    Run C{client}'s handshake against a L{TLSMemoryBIOFactory} server (the
    implicit-TLS listener's layer) over a L{StringTransport}.

    @return: the server's application protocol.
    @raise SSL.Error: the client's handshake failed.
    """
    application = _Application()
    protocol = TLSMemoryBIOFactory(
        server, False, Factory.forProtocol(lambda: application)
    ).buildProtocol(IPv4Address("TCP", "127.0.0.1", 465))
    transport = StringTransport()
    protocol.makeConnection(transport)
    for _ in range(20):
        try:
            client.do_handshake()
            done = True
        except SSL.WantReadError:
            done = False
        while True:
            try:
                data = client.bio_read(65536)
            except SSL.WantReadError:
                break
            protocol.dataReceived(data)
        if done:
            return application
        reply = transport.value()
        transport.clear()
        if reply:
            client.bio_write(reply)
    raise AssertionError("handshake did not finish")


class InboundTLSTests(SynchronousTestCase):
    """
    L{ServerTLS}: what the server offers and accepts.
    """

    def setUp(self) -> None:
        pki = makeTestPKI(self.mktemp(), HOST)
        self.ecdsa = loadServerContextFactory(pki.good.certPath, pki.good.keyPath)
        rsa = pki.ca.issue([HOST], basename="rsa", keyType="rsa")
        self.rsa = loadServerContextFactory(rsa.certPath, rsa.keyPath)

    def test_interface(self) -> None:
        """
        The server TLS is an L{IOpenSSLServerConnectionCreator} (for
        L{TLSMemoryBIOFactory}) and keeps C{getContext} (for C{startTLS}).
        """
        self.assertTrue(verifyObject(IOpenSSLServerConnectionCreator, self.ecdsa))
        self.assertIsInstance(self.ecdsa.getContext(), SSL.Context)

    def test_tls12Suites(self) -> None:
        """
        The TLS 1.2 suites are Mozilla's "intermediate" ECDHE suites and
        nothing else: no CBC, no SHA-1 MAC, no static RSA, no DHE.
        """
        offered = SSL.Connection(self.rsa.getContext(), None).get_cipher_list()
        tls12 = [name for name in offered if not name.startswith("TLS_")]
        self.assertEqual(tls12, INBOUND_TLS12_CIPHERS.split(":"))
        for name in tls12:
            self.assertRegex(name, _INTERMEDIATE)
            self.assertNotIn("CBC", name)
            self.assertFalse(name.endswith("-SHA"), name)

    def test_tls13Kept(self) -> None:
        """
        TLS 1.3 is negotiated when the client can, with OpenSSL's suites.
        """
        client = _client()
        _handshakeThroughTwisted(self.rsa, client)
        self.assertEqual(client.get_protocol_version_name(), "TLSv1.3")
        self.assertIn(
            client.get_cipher_name(),
            {"TLS_AES_256_GCM_SHA384", "TLS_AES_128_GCM_SHA256", "TLS_CHACHA20_POLY1305_SHA256"},
        )

    def test_modernTLS12Accepted(self) -> None:
        """
        A TLS 1.2 client with an ECDHE AES-GCM or ChaCha20 suite gets it,
        for an RSA and for an ECDSA certificate.
        """
        for server, suite in (
            (self.rsa, b"ECDHE-RSA-AES128-GCM-SHA256"),
            (self.rsa, b"ECDHE-RSA-CHACHA20-POLY1305"),
            (self.ecdsa, b"ECDHE-ECDSA-AES256-GCM-SHA384"),
        ):
            client = _client(ciphers=suite)
            _handshakeThroughTwisted(server, client)
            self.assertEqual(client.get_cipher_name(), suite.decode())

    def test_legacyTLS12Refused(self) -> None:
        """
        A TLS 1.2 client offering only CBC, SHA-1 or static-RSA suites
        cannot connect.
        """
        for suites in (
            b"AES128-SHA:AES256-SHA",
            b"AES128-GCM-SHA256",
            b"ECDHE-RSA-AES128-SHA:ECDHE-RSA-AES256-SHA384",
            b"DHE-RSA-AES128-GCM-SHA256",
        ):
            self.assertRaises(
                SSL.Error, _handshakeThroughTwisted, self.rsa, _client(ciphers=suites)
            )

    def test_alpnOtherProtocols(self) -> None:
        """
        A client offering ALPN without C{smtp} (C{h2}, C{http/1.1}) gets a
        handshake without ALPN, not alert 80 (Twisted 26's behaviour).
        """
        for maximum in (SSL.TLS1_2_VERSION, SSL.TLS1_3_VERSION):
            client = _client(alpn=[b"h2", b"http/1.1"], maximum=maximum)
            application = _handshakeThroughTwisted(self.rsa, client)
            self.assertTrue(application.handshakeDone)
            self.assertEqual(client.get_alpn_proto_negotiated(), b"")

    def test_alpnSMTP(self) -> None:
        """
        A client offering C{smtp} among others gets C{smtp}.
        """
        client = _client(alpn=[b"h2", ALPN_PROTOCOL])
        _handshakeThroughTwisted(self.ecdsa, client)
        self.assertEqual(client.get_alpn_proto_negotiated(), b"smtp")

    def test_noALPN(self) -> None:
        """
        A client without ALPN gets none.
        """
        client = _client()
        _handshakeThroughTwisted(self.ecdsa, client)
        self.assertEqual(client.get_alpn_proto_negotiated(), b"")


class OutboundTLSTests(SynchronousTestCase):
    """
    The inbound restriction stays inbound.
    """

    def test_outboundBroader(self) -> None:
        """
        Outbound TLS keeps Twisted's broader TLS 1.2 list (CBC suites
        included): an old receiving MTA is better reached encrypted than in
        clear.
        """
        from gopherpost.tls import clientContextFor

        creator = clientContextFor("may", HOST)
        assert creator is not None
        connection = creator.clientConnectionForTLS(None)  # type: ignore[arg-type]
        offered = [name for name in connection.get_cipher_list() if not name.startswith("TLS_")]
        self.assertGreater(len(offered), len(INBOUND_TLS12_CIPHERS.split(":")))
        self.assertTrue(any(not _INTERMEDIATE.fullmatch(name) for name in offered), offered)
