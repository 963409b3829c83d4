"""
Tests for L{gopherpost.tls}: the inbound certificate (configured or
generated once), the outbound connection creators and the TLS policy
decisions.

Handshakes run in memory between two pyOpenSSL connections (no sockets).
"""

from __future__ import annotations

import datetime
import os
import stat
from typing import Any, cast

from cryptography import x509
from cryptography.hazmat.primitives import serialization
from OpenSSL import SSL, crypto
from twisted.internet.address import IPv4Address
from twisted.internet.error import ConnectionDone
from twisted.internet.interfaces import IHandshakeListener, IOpenSSLClientConnectionCreator
from twisted.internet.protocol import Factory, Protocol, connectionDone
from twisted.internet.ssl import VerificationError
from twisted.internet.testing import StringTransport
from twisted.protocols.tls import TLSMemoryBIOFactory
from twisted.python.failure import Failure
from twisted.trial.unittest import SynchronousTestCase
from zope.interface import implementer
from zope.interface.verify import verifyObject

from gopherpost.config import ConfigError, Settings
from gopherpost.tls import (
    CONTINUE_CLEARTEXT,
    DEFER_HOST,
    TLSPolicyError,
    afterHandshakeFailure,
    afterStartTLSRefused,
    checkPolicy,
    clientContextFor,
    ensureSelfSignedCertificate,
    loadServerContextFactory,
    platformTrustRoot,
    serverContextFactory,
    shouldStartTLS,
    verifiesCertificate,
)
from tests.support.certs import generateKey, makeTestPKI

HOST = "mx.example.test"


@implementer(IHandshakeListener)
class _Peer(Protocol):
    """
    The application protocol inside a TLS connection: notes the handshake
    and how the connection ended.
    """

    handshakeDone = False
    lostReason = None

    def handshakeCompleted(self) -> None:
        self.handshakeDone = True

    def connectionLost(self, reason: Failure = connectionDone) -> None:
        self.lostReason = reason


def _pumpHandshake(serverOptions, clientCreator):
    """
    Connect two L{TLSMemoryBIOFactory} protocols over L{StringTransport}s
    and move bytes until nothing moves; then deliver C{connectionLost} to
    any side whose transport was closed.

    @return: C{(serverTLS, clientPeer)}.
    """
    address = IPv4Address("TCP", "127.0.0.1", 25)
    clientPeer, serverPeer = _Peer(), _Peer()
    server = TLSMemoryBIOFactory(
        serverOptions, False, Factory.forProtocol(lambda: serverPeer)
    ).buildProtocol(address)
    client = TLSMemoryBIOFactory(
        clientCreator, True, Factory.forProtocol(lambda: clientPeer)
    ).buildProtocol(address)
    serverTransport, clientTransport = StringTransport(), StringTransport()
    server.makeConnection(serverTransport)
    client.makeConnection(clientTransport)
    for _ in range(50):
        moved = False
        for source, destination in ((clientTransport, server), (serverTransport, client)):
            data = source.value()
            if data:
                source.clear()
                destination.dataReceived(data)
                moved = True
        if not moved:
            break
    for protocol, transport in ((client, clientTransport), (server, serverTransport)):
        if transport.disconnecting:
            protocol.connectionLost(Failure(ConnectionDone()))
    return server, clientPeer


def _handshake(serverContext: SSL.Context, client: SSL.Connection) -> SSL.Connection:
    """
    Run a TLS handshake between C{client} and a server connection for
    C{serverContext} through memory BIOs.

    @return: the server side connection.
    @raise SSL.Error: the handshake failed.
    """
    server = SSL.Connection(serverContext, None)
    server.set_accept_state()
    done = {id(client): False, id(server): False}
    for _ in range(20):
        for one, other in ((client, server), (server, client)):
            if not done[id(one)]:
                try:
                    one.do_handshake()
                    done[id(one)] = True
                except SSL.WantReadError:
                    pass
            while True:
                try:
                    data = one.bio_read(65536)
                except SSL.WantReadError:
                    break
                other.bio_write(data)
        if all(done.values()):
            return server
    raise AssertionError("handshake did not finish")


def _peerCertificate(server: SSL.Connection) -> x509.Certificate:
    """
    The certificate C{server} presented.
    """
    certificate = server.get_certificate()
    assert certificate is not None
    return certificate.to_cryptography()


def _validity(cert: x509.Certificate):
    """
    C{(notBefore, notAfter)} as aware datetimes, on cryptography 38 and 42+.
    """
    if hasattr(cert, "not_valid_after_utc"):
        return cert.not_valid_before_utc, cert.not_valid_after_utc
    utc = datetime.UTC
    return (
        cert.not_valid_before.replace(tzinfo=utc),
        cert.not_valid_after.replace(tzinfo=utc),
    )


def _verifyingClient(caPath: str) -> SSL.Connection:
    context = SSL.Context(SSL.TLS_METHOD)
    context.load_verify_locations(caPath)
    context.set_verify(SSL.VERIFY_PEER, lambda conn, cert, errno, depth, ok: bool(ok))
    client = SSL.Connection(context, None)
    client.set_connect_state()
    client.set_tlsext_host_name(HOST.encode("ascii"))
    return client


class ServerContextFactoryTests(SynchronousTestCase):
    """
    L{serverContextFactory} and L{loadServerContextFactory}.
    """

    def setUp(self) -> None:
        self.pki = makeTestPKI(self.mktemp(), HOST)
        self.state = os.path.join(self.mktemp(), "tls")

    def settings(self, **kw) -> Settings:
        kw.setdefault("hostname", HOST)
        return Settings(**kw)

    def test_disabled(self) -> None:
        """
        C{SMTP_TLS_DISABLE=true}: no context factory and nothing generated.
        """
        self.assertIsNone(serverContextFactory(self.settings(tlsDisable=True), self.state))
        self.assertFalse(os.path.exists(self.state))

    def test_configured(self) -> None:
        """
        A configured certificate and key are served, and nothing is
        generated.
        """
        good = self.pki.good
        factory = serverContextFactory(
            self.settings(tlsCert=good.certPath, tlsKey=good.keyPath), self.state
        )
        assert factory is not None
        server = _handshake(factory.getContext(), _verifyingClient(self.pki.ca.certPath))
        served = _peerCertificate(server)
        self.assertEqual(served, good.certificate)
        self.assertFalse(os.path.exists(self.state))

    def test_minimumTLS12(self) -> None:
        """
        TLS 1.0 and 1.1 are switched off; TLS 1.2 is not.
        """
        good = self.pki.good
        context = loadServerContextFactory(good.certPath, good.keyPath).getContext()
        options = context.set_options(0)
        self.assertTrue(options & SSL.OP_NO_TLSv1)
        self.assertTrue(options & SSL.OP_NO_TLSv1_1)
        self.assertFalse(options & SSL.OP_NO_TLSv1_2)

    def test_chain(self) -> None:
        """
        The intermediate certificates after the leaf in the certificate file
        are sent, so a client trusting only the root verifies the leaf.
        """
        chained = self.pki.chained
        factory = loadServerContextFactory(chained.certPath, chained.keyPath)
        client = _verifyingClient(self.pki.ca.certPath)
        _handshake(factory.getContext(), client)
        chain = [c.to_cryptography() for c in client.get_peer_cert_chain() or []]
        self.assertEqual(len(chain), 2)
        self.assertEqual(chain[0], chained.certificate)

    def test_keyMismatch(self) -> None:
        """
        A key that does not belong to the certificate is refused, naming
        C{SMTP_TLS_KEY}.
        """
        error = self.assertRaises(
            ConfigError,
            serverContextFactory,
            self.settings(tlsCert=self.pki.good.certPath, tlsKey=self.pki.wrongName.keyPath),
            self.state,
        )
        self.assertEqual(error.variable, "SMTP_TLS_KEY")
        self.assertIn("does not match", error.problem)

    def writeFile(self, data: bytes) -> str:
        path = self.mktemp()
        with open(path, "wb") as f:
            f.write(data)
        return path

    def test_certificateNotPEM(self) -> None:
        """
        A certificate file without a PEM certificate names C{SMTP_TLS_CERT}.
        """
        garbage = self.writeFile(b"not a certificate\n")
        error = self.assertRaises(
            ConfigError, loadServerContextFactory, garbage, self.pki.good.keyPath
        )
        self.assertEqual(error.variable, "SMTP_TLS_CERT")
        self.assertIn("no PEM certificate", error.problem)

    def test_certificateCorrupt(self) -> None:
        """
        A PEM block that is not a certificate names C{SMTP_TLS_CERT}.
        """
        corrupt = self.writeFile(b"-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n")
        error = self.assertRaises(
            ConfigError, loadServerContextFactory, corrupt, self.pki.good.keyPath
        )
        self.assertEqual(error.variable, "SMTP_TLS_CERT")

    def test_certificateMissing(self) -> None:
        """
        A certificate file that does not exist names C{SMTP_TLS_CERT}.
        """
        error = self.assertRaises(
            ConfigError, loadServerContextFactory, self.mktemp(), self.pki.good.keyPath
        )
        self.assertEqual(error.variable, "SMTP_TLS_CERT")

    def test_keyNotPEM(self) -> None:
        """
        A key file that holds no key names C{SMTP_TLS_KEY}; so does a key
        file holding a certificate.
        """
        for data in (b"nothing\n", self.pki.good.certificatePEM()):
            error = self.assertRaises(
                ConfigError,
                loadServerContextFactory,
                self.pki.good.certPath,
                self.writeFile(data),
            )
            self.assertEqual(error.variable, "SMTP_TLS_KEY")

    def test_keyEncrypted(self) -> None:
        """
        A passphrase-protected key is refused with a clear reason.
        """
        key = serialization.load_pem_private_key(self.pki.good.keyPEM(), None)
        encrypted = key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.BestAvailableEncryption(b"secret"),
        )
        error = self.assertRaises(
            ConfigError,
            loadServerContextFactory,
            self.pki.good.certPath,
            self.writeFile(encrypted),
        )
        self.assertEqual(error.variable, "SMTP_TLS_KEY")
        self.assertIn("encrypted", error.problem)

    def test_rsaTraditionalKey(self) -> None:
        """
        An RSA key in PKCS#1 ("BEGIN RSA PRIVATE KEY") form loads.
        """
        files = self.pki.ca.issue([HOST], basename="rsa", keyType="rsa")
        key = serialization.load_pem_private_key(files.keyPEM(), None)
        pkcs1 = key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.TraditionalOpenSSL,
            serialization.NoEncryption(),
        )
        self.assertIn(b"BEGIN RSA PRIVATE KEY", pkcs1)
        factory = loadServerContextFactory(files.certPath, self.writeFile(pkcs1))
        _handshake(factory.getContext(), _verifyingClient(self.pki.ca.certPath))


class SelfSignedTests(SynchronousTestCase):
    """
    Without a configured certificate, one is generated once and kept.
    """

    def setUp(self) -> None:
        self.state = os.path.join(self.mktemp(), "state", "tls")
        self.settings = Settings(hostname=HOST)

    def read(self, name: str) -> bytes:
        with open(os.path.join(self.state, name), "rb") as f:
            return f.read()

    def certificate(self) -> x509.Certificate:
        return x509.load_pem_x509_certificate(self.read("cert.pem"))

    def test_generated(self) -> None:
        """
        A certificate for C{SMTP_HOSTNAME}, valid about ten years, is
        written as C{cert.pem}/C{key.pem}; the key is 0600 and the
        directory 0700; the context factory serves it.
        """
        factory = serverContextFactory(self.settings, self.state)
        self.assertEqual(stat.S_IMODE(os.stat(self.state).st_mode), 0o700)
        self.assertEqual(stat.S_IMODE(os.stat(os.path.join(self.state, "key.pem")).st_mode), 0o600)
        cert = self.certificate()
        names = cert.extensions.get_extension_for_class(
            x509.SubjectAlternativeName
        ).value.get_values_for_type(x509.DNSName)
        self.assertEqual(names, [HOST])
        notBefore, notAfter = _validity(cert)
        lifetime = notAfter - notBefore
        self.assertGreater(lifetime, datetime.timedelta(days=9 * 365))
        client = _verifyingClient(os.path.join(self.state, "cert.pem"))
        assert factory is not None
        server = _handshake(factory.getContext(), client)
        self.assertEqual(_peerCertificate(server), cert)

    def test_reused(self) -> None:
        """
        A later start reuses the same certificate and key.
        """
        serverContextFactory(self.settings, self.state)
        first = (self.read("cert.pem"), self.read("key.pem"))
        serverContextFactory(self.settings, self.state)
        self.assertEqual((self.read("cert.pem"), self.read("key.pem")), first)

    def test_regeneratedWhenUnloadable(self) -> None:
        """
        A corrupt or missing file is replaced by a new pair.
        """
        serverContextFactory(self.settings, self.state)
        first = self.read("cert.pem")
        with open(os.path.join(self.state, "key.pem"), "wb") as f:
            f.write(b"garbage")
        serverContextFactory(self.settings, self.state)
        second = self.read("cert.pem")
        self.assertNotEqual(second, first)
        os.remove(os.path.join(self.state, "cert.pem"))
        serverContextFactory(self.settings, self.state)
        self.assertNotEqual(self.read("cert.pem"), second)

    def test_regeneratedForNewHostname(self) -> None:
        """
        When C{SMTP_HOSTNAME} changes, the certificate follows it.
        """
        serverContextFactory(self.settings, self.state)
        serverContextFactory(Settings(hostname="other.example.test"), self.state)
        names = (
            self.certificate()
            .extensions.get_extension_for_class(x509.SubjectAlternativeName)
            .value.get_values_for_type(x509.DNSName)
        )
        self.assertEqual(names, ["other.example.test"])

    def test_regeneratedBeforeExpiry(self) -> None:
        """
        A certificate that expires within 30 days is replaced; one that has
        longer to live is not.
        """
        start = datetime.datetime(2030, 1, 1, tzinfo=datetime.UTC)
        ensureSelfSignedCertificate(self.state, HOST, now=start)
        first = self.read("cert.pem")
        ensureSelfSignedCertificate(self.state, HOST, now=start + datetime.timedelta(days=3000))
        self.assertEqual(self.read("cert.pem"), first)
        ensureSelfSignedCertificate(self.state, HOST, now=start + datetime.timedelta(days=3630))
        self.assertNotEqual(self.read("cert.pem"), first)

    def test_unwritable(self) -> None:
        """
        A state directory that cannot be created fails start-up with a
        L{ConfigError}.
        """
        blocker = self.mktemp()
        with open(blocker, "w") as f:
            f.write("a file, not a directory")
        error = self.assertRaises(
            ConfigError, serverContextFactory, self.settings, os.path.join(blocker, "tls")
        )
        self.assertEqual(error.variable, "SMTP_TLS_CERT")
        self.assertIn(blocker, error.problem)


class PolicyTests(SynchronousTestCase):
    """
    The pure policy decisions.
    """

    def test_shouldStartTLS(self) -> None:
        """
        STARTTLS is used when offered, except under C{none}.
        """
        table = {
            ("none", True): False,
            ("none", False): False,
            ("may", True): True,
            ("may", False): False,
            ("verify", True): True,
            ("verify", False): False,
            ("require", True): True,
        }
        for (policy, offered), expected in table.items():
            self.assertIs(shouldStartTLS(policy, offered), expected, (policy, offered))

    def test_requireNotOffered(self) -> None:
        """
        C{require} and no STARTTLS: a temporary failure, X.7.4.
        """
        error = self.assertRaises(TLSPolicyError, shouldStartTLS, "require", False)
        self.assertEqual(error.enhancedCode, "4.7.4")
        self.assertIn("STARTTLS", str(error))

    def test_unknownPolicy(self) -> None:
        """
        An unknown policy is a programming error, whatever the question.
        """
        for function in (
            checkPolicy,
            verifiesCertificate,
            afterStartTLSRefused,
            afterHandshakeFailure,
        ):
            self.assertRaises(ValueError, function, "sometimes")
        self.assertRaises(ValueError, shouldStartTLS, "sometimes", True)
        self.assertRaises(ValueError, clientContextFor, "sometimes", HOST)

    def test_verifiesCertificate(self) -> None:
        """
        C{verify} and C{require} check certificates; C{may} and C{none} not.
        """
        self.assertEqual(
            [verifiesCertificate(p) for p in ("verify", "require", "may", "none")],
            [True, True, False, False],
        )

    def test_afterStartTLSRefused(self) -> None:
        """
        A refused STARTTLS (no handshake happened) goes on in cleartext only
        under C{may}.
        """
        self.assertEqual(afterStartTLSRefused("may"), CONTINUE_CLEARTEXT)
        self.assertEqual(afterStartTLSRefused("verify"), DEFER_HOST)
        self.assertEqual(afterStartTLSRefused("require"), DEFER_HOST)

    def test_afterHandshakeFailure(self) -> None:
        """
        A failed handshake never falls back to cleartext.
        """
        for policy in ("may", "verify", "require", "none"):
            self.assertEqual(afterHandshakeFailure(policy), DEFER_HOST)


class ClientContextTests(SynchronousTestCase):
    """
    L{clientContextFor} and L{platformTrustRoot}, with real handshakes
    (Twisted's TLS protocol on both ends, bytes pumped in memory) against
    certificates from the test CA.
    """

    def setUp(self) -> None:
        self.pki = makeTestPKI(self.mktemp(), HOST)

    def connect(self, creator, files):
        """
        Handshake between C{creator} and a server with C{files}.

        @return: C{(serverTLS, clientPeer)}: the server's TLS protocol and
            the protocol the client's TLS layer wraps.
        """
        verifyObject(IOpenSSLClientConnectionCreator, creator)
        serverOptions = loadServerContextFactory(files.certPath, files.keyPath)
        return _pumpHandshake(serverOptions, creator)

    def test_none(self) -> None:
        """
        C{none}: no creator at all.
        """
        self.assertIsNone(clientContextFor("none", HOST))

    def test_verifyWithCertFile(self) -> None:
        """
        C{verify} trusts C{SSL_CERT_FILE} and checks the name: the good
        certificate passes, and the server received the name as SNI.
        """
        creator = clientContextFor("verify", HOST, environ={"SSL_CERT_FILE": self.pki.ca.certPath})
        server, client = self.connect(creator, self.pki.good)
        self.assertTrue(client.handshakeDone, client.lostReason)
        self.assertEqual(server.getHandle().get_servername(), HOST.encode("ascii"))

    def test_verifyTrailingDotAndCase(self) -> None:
        """
        An MX name with a trailing dot and capitals still matches.
        """
        creator = clientContextFor(
            "require", "MX.Example.TEST.", environ={"SSL_CERT_FILE": self.pki.ca.certPath}
        )
        _, client = self.connect(creator, self.pki.good)
        self.assertTrue(client.handshakeDone, client.lostReason)

    def test_verifyWithCertDir(self) -> None:
        """
        C{SSL_CERT_DIR} (a hashed directory, as c_rehash makes) is honoured.
        """
        directory = self.mktemp()
        os.mkdir(directory)
        caPEM = open(self.pki.ca.certPath, "rb").read()
        ca = crypto.load_certificate(crypto.FILETYPE_PEM, caPEM)
        with open(os.path.join(directory, "%08x.0" % ca.subject_name_hash()), "wb") as f:
            f.write(caPEM)
        creator = clientContextFor("verify", HOST, environ={"SSL_CERT_DIR": directory})
        _, client = self.connect(creator, self.pki.chained)
        self.assertTrue(client.handshakeDone, client.lostReason)

    def test_verifyInjectedTrustRoot(self) -> None:
        """
        An explicit trust root wins over the environment.
        """
        creator = clientContextFor(
            "verify",
            HOST,
            trustRoot=self.pki.ca.trustRoot(),
            environ={"SSL_CERT_FILE": "/nonexistent"},
        )
        _, client = self.connect(creator, self.pki.chained)
        self.assertTrue(client.handshakeDone, client.lostReason)

    def test_verifyUntrusted(self) -> None:
        """
        Without the test CA in the trust store (the system default), the
        handshake fails; so it does for a self-signed or expired certificate
        even with the CA trusted.
        """
        creator = clientContextFor("verify", HOST, environ={})
        _, client = self.connect(creator, self.pki.good)
        self.assertFalse(client.handshakeDone)
        client.lostReason.trap(SSL.Error)
        trusting = {"SSL_CERT_FILE": self.pki.ca.certPath}
        for files in (self.pki.selfSigned, self.pki.expired):
            creator = clientContextFor("verify", HOST, environ=trusting)
            _, client = self.connect(creator, files)
            self.assertFalse(client.handshakeDone)
            client.lostReason.trap(SSL.Error)

    def test_verifyWrongName(self) -> None:
        """
        A trusted certificate for another name fails host name verification.
        """
        creator = clientContextFor("verify", HOST, environ={"SSL_CERT_FILE": self.pki.ca.certPath})
        _, client = self.connect(creator, self.pki.wrongName)
        # Twisted 22 reports the handshake as complete just before the name
        # check aborts the connection; the connection is lost either way.
        self.assertIsNotNone(client.lostReason)
        client.lostReason.trap(VerificationError)

    def test_verifyBadTrustFile(self) -> None:
        """
        An C{SSL_CERT_FILE} that does not exist makes the creator fail.
        """
        self.assertRaises(
            ValueError,
            clientContextFor,
            "verify",
            HOST,
            environ={"SSL_CERT_FILE": os.path.join(self.mktemp(), "missing.pem")},
        )

    def test_mayAcceptsAnything(self) -> None:
        """
        C{may} encrypts to a self-signed certificate for another name, and
        still sends SNI.
        """
        creator = clientContextFor("may", HOST)
        server, client = self.connect(creator, self.pki.selfSigned)
        self.assertTrue(client.handshakeDone, client.lostReason)
        self.assertEqual(server.getHandle().get_servername(), HOST.encode("ascii"))
        server, client = self.connect(clientContextFor("may", HOST), self.pki.wrongName)
        self.assertTrue(client.handshakeDone, client.lostReason)

    def test_verifyBadTrustDirectory(self) -> None:
        """
        An C{SSL_CERT_DIR} that is not a directory makes the creator fail.
        """
        self.assertRaises(
            ValueError,
            clientContextFor,
            "verify",
            HOST,
            environ={"SSL_CERT_DIR": self.pki.ca.certPath},
        )

    def test_platformTrustRoot(self) -> None:
        """
        L{platformTrustRoot} reads the variables from the given environment;
        empty values count as unset.
        """
        root: Any = platformTrustRoot({"SSL_CERT_FILE": "/a.pem", "SSL_CERT_DIR": "/d"})
        self.assertEqual((root.caFile, root.caPath), ("/a.pem", "/d"))
        root = platformTrustRoot({"SSL_CERT_DIR": "/d", "SSL_CERT_FILE": ""})
        self.assertEqual((root.caFile, root.caPath), (None, "/d"))
        self.assertFalse(hasattr(platformTrustRoot({"SSL_CERT_FILE": ""}), "caFile"))


class TestPKITests(SynchronousTestCase):
    """
    The test certificates are what they claim to be.
    """

    def test_expired(self) -> None:
        """
        The expired certificate's validity ended in the past.
        """
        pki = makeTestPKI(self.mktemp())
        now = datetime.datetime.now(datetime.UTC)
        self.assertLess(_validity(pki.expired.certificate)[1], now)
        self.assertGreater(_validity(pki.good.certificate)[1], now)

    def test_keyTypes(self) -> None:
        """
        EC by default, RSA on request.
        """
        self.assertEqual(generateKey("rsa").key_size, 2048)
        self.assertEqual(cast(Any, generateKey()).curve.name, "secp256r1")
