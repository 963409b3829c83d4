"""
Tests for L{gopherpost.tlspolicy.https}: verified HTTPS through the test
DNS server, against the loopback HTTPS server of
L{tests.support.httpsserver}.
"""

from __future__ import annotations

from collections.abc import Generator
from typing import Any

from twisted.internet import reactor
from twisted.internet.defer import Deferred, inlineCallbacks
from twisted.trial.unittest import TestCase

from gopherpost.dns import Resolver
from gopherpost.tlspolicy.https import HTTPSClient, HTTPSError
from tests.support.certs import CertificateAuthority, makeTestPKI
from tests.support.dnsserver import startDNSServer
from tests.support.httpsserver import startHTTPSServer

InlineCallbacks = Generator[Deferred[Any], Any, None]

HOST = "mta-sts.example.test"
PATH = "/.well-known/mta-sts.txt"


class HTTPSClientTests(TestCase):
    """
    GET and POST over verified HTTPS.
    """

    def setUp(self) -> None:
        self.pki = makeTestPKI(self.mktemp(), HOST)
        self.server = startHTTPSServer(self, self.pki.good)
        self.dns = startDNSServer(self)
        self.dns.addA(HOST, self.server.host)
        self.client = HTTPSClient(
            reactor,
            Resolver([self.dns.address], reactor),
            timeout=5,
            trustRoot=self.pki.ca.trustRoot(),
        )

    def url(self, path: str = PATH, host: str = HOST) -> str:
        return f"https://{host}:{self.server.port}{path}"

    @inlineCallbacks
    def test_get(self) -> InlineCallbacks:
        """
        A GET through the test DNS, verified against the test CA.
        """
        self.server.respond(PATH, b"version: STSv1\n", contentType="text/plain; charset=utf-8")
        response = yield self.client.get(self.url(), 65536)
        self.assertEqual(
            (response.status, response.contentType, response.body),
            (200, "text/plain", b"version: STSv1\n"),
        )
        [request] = self.server.requests
        self.assertEqual((request.method, request.path), ("GET", PATH))
        self.assertEqual(request.host, f"{HOST}:{self.server.port}")
        self.assertTrue(request.headers["user-agent"].startswith("GopherPost/"))
        self.assertIn((HOST.encode(), 1), self.dns.authority.queries)

    @inlineCallbacks
    def test_redirectNotFollowed(self) -> InlineCallbacks:
        """
        A redirect is returned as it is: nothing else is requested.
        """
        self.server.redirect(PATH, self.url("/elsewhere"))
        self.server.respond("/elsewhere", b"version: STSv1\n")
        response = yield self.client.get(self.url(), 65536)
        self.assertEqual(response.status, 301)
        self.assertEqual([r.path for r in self.server.requests], [PATH])

    @inlineCallbacks
    def test_oversize(self) -> InlineCallbacks:
        """
        A body over the limit fails the request.
        """
        self.server.respond(PATH, b"x" * 70000)
        with self.assertRaises(HTTPSError) as caught:
            yield self.client.get(self.url(), 65536)
        self.assertIn("larger than 65536", str(caught.exception))
        self.assertFalse(caught.exception.certificate)

    @inlineCallbacks
    def test_atLimit(self) -> InlineCallbacks:
        self.server.respond(PATH, b"x" * 65536)
        response = yield self.client.get(self.url(), 65536)
        self.assertEqual(len(response.body), 65536)

    @inlineCallbacks
    def test_untrustedCertificate(self) -> InlineCallbacks:
        """
        A certificate from a CA not trusted is a certificate failure.
        """
        stranger = CertificateAuthority(self.mktemp(), "Stranger").issue([HOST])
        other = startHTTPSServer(self, stranger, interface="127.0.0.2")
        self.dns.removeName(HOST)
        self.dns.addA(HOST, other.host)
        other.respond(PATH, b"version: STSv1\n")
        with self.assertRaises(HTTPSError) as caught:
            yield self.client.get(f"https://{HOST}:{other.port}{PATH}", 65536)
        self.assertTrue(caught.exception.certificate, str(caught.exception))
        self.assertEqual(other.requests, [])

    @inlineCallbacks
    def test_wrongName(self) -> InlineCallbacks:
        """
        A certificate for another name is a certificate failure.
        """
        other = startHTTPSServer(self, self.pki.wrongName, interface="127.0.0.3")
        self.dns.removeName(HOST)
        self.dns.addA(HOST, other.host)
        with self.assertRaises(HTTPSError) as caught:
            yield self.client.get(f"https://{HOST}:{other.port}{PATH}", 65536)
        self.assertTrue(caught.exception.certificate, str(caught.exception))

    @inlineCallbacks
    def test_unknownName(self) -> InlineCallbacks:
        with self.assertRaises(HTTPSError) as caught:
            yield self.client.get(self.url(host="nowhere.example.test"), 65536)
        self.assertIn("cannot resolve nowhere.example.test", str(caught.exception))

    @inlineCallbacks
    def test_refused(self) -> InlineCallbacks:
        self.dns.addA("closed.example.test", "127.0.0.9")
        with self.assertRaises(HTTPSError) as caught:
            yield self.client.get(self.url(host="closed.example.test"), 65536)
        self.assertIn("refused", str(caught.exception))

    @inlineCallbacks
    def test_timeout(self) -> InlineCallbacks:
        """
        A server that never answers: the request fails once its time is up.
        """
        self.server.silence(PATH)
        self.client.timeout = 0.5
        with self.assertRaises(HTTPSError) as caught:
            yield self.client.get(self.url(), 65536)
        self.assertEqual(str(caught.exception), "timed out after 0.5 s")

    @inlineCallbacks
    def test_onlyHTTPS(self) -> InlineCallbacks:
        with self.assertRaises(HTTPSError):
            yield self.client.get(f"http://{HOST}:{self.server.port}{PATH}", 65536)

    @inlineCallbacks
    def test_post(self) -> InlineCallbacks:
        """
        A POST carries its body and content type.
        """
        self.server.respond("/report", b"", status=201)
        response = yield self.client.post(
            self.url("/report"), b"\x1f\x8bdata", "application/tlsrpt+gzip"
        )
        self.assertEqual(response.status, 201)
        [request] = self.server.requests
        self.assertEqual(request.method, "POST")
        self.assertEqual(request.body, b"\x1f\x8bdata")
        self.assertEqual(request.headers["content-type"], "application/tlsrpt+gzip")
