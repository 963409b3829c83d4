"""
Tests for L{gopherpost.webhooks.http}: real requests to real receivers on
loopback (twisted.web), over HTTP and over HTTPS with a CA made at test
time.
"""

from __future__ import annotations

import os
import time
from typing import Any

from twisted.internet import reactor
from twisted.internet.defer import ensureDeferred
from twisted.internet.task import Clock
from twisted.trial.unittest import SynchronousTestCase, TestCase

from gopherpost import __version__
from gopherpost.config import ConfigError
from gopherpost.webhooks.http import WebhookPoster, WebhookTarget, checkTrustStore
from gopherpost.webhooks.signing import parseSecret, signedHeaders
from tests.support.certs import CertificateAuthority, makeTestPKI
from tests.support.relay import SteppedReactor
from tests.support.server import freePort
from tests.support.webhooks import CLOSE, STALL, WebhookReceiver, newSecret, verifyWebhook

BODY = b'{"id":"0190ABCDEF0123456","subject":"caf\xc3\xa9"}'


class PosterTestCase(TestCase):
    timeout = 60

    def receiver(self, *args: Any, **kwargs: Any) -> WebhookReceiver:
        receiver = WebhookReceiver(*args, **kwargs).start()
        self.addCleanup(receiver.stop)
        return receiver

    def poster(self, clock: Any = reactor, timeout: float = 15.0, **kwargs: Any) -> WebhookPoster:
        poster = WebhookPoster(clock, timeout, 2, **kwargs)
        self.addCleanup(poster.close)
        return poster

    def target(self, url: str, secret: str = "") -> WebhookTarget:
        return WebhookTarget.fromSetting("inbound", url, parseSecret(secret or newSecret()))


class PostTests(PosterTestCase):
    async def _signed(self) -> None:
        secret = newSecret()
        receiver = self.receiver()
        target = self.target(receiver.url, secret)
        headers = signedHeaders(target.key, "0190ABCDEF0123456", int(time.time()), BODY)
        result = await self.poster().post(target, headers, BODY)
        self.assertTrue(result.succeeded)
        self.assertEqual((result.status, result.error), (200, ""))
        [request] = receiver.requests
        self.assertEqual((request.method, request.path), ("POST", "/hook"))
        self.assertEqual(request.headers["content-type"], "application/json")
        self.assertEqual(request.headers["user-agent"], f"GopherPost/{__version__}")
        self.assertEqual(request.body, BODY)
        self.assertEqual(verifyWebhook(secret, request)["subject"], "café")

    def test_signed(self):
        """
        A request carries the JSON body and Standard Webhooks headers that
        the reference library verifies.
        """
        return ensureDeferred(self._signed())

    async def _statuses(self) -> None:
        receiver = self.receiver(
            [500, (503, b"down for maintenance"), 410, (422, b"x" * 1000)], default=204
        )
        poster = self.poster()
        target = self.target(receiver.url)
        results = [await poster.post(target, {}, BODY) for _ in range(5)]
        self.assertEqual([r.status for r in results], [500, 503, 410, 422, 204])
        self.assertEqual(results[0].error, "HTTP 500 Internal Server Error")
        self.assertEqual(results[1].error, "HTTP 503 Service Unavailable: down for maintenance")
        self.assertLessEqual(len(results[3].error), 200)
        self.assertTrue(results[4].succeeded)
        self.assertEqual(len(receiver.requests), 5)

    def test_statuses(self):
        """
        Any status comes back with one line saying what it was.
        """
        return ensureDeferred(self._statuses())

    async def _redirect(self) -> None:
        elsewhere = self.receiver()
        receiver = self.receiver([(302, b"", {"Location": elsewhere.url})])
        result = await self.poster().post(self.target(receiver.url), {}, BODY)
        self.assertEqual(result.status, 302)
        self.assertIn(f"redirect to {elsewhere.url} not followed", result.error)
        self.assertEqual(elsewhere.requests, [])

    def test_redirectNotFollowed(self):
        return ensureDeferred(self._redirect())

    async def _refused(self) -> None:
        result = await self.poster().post(
            self.target(f"http://127.0.0.1:{freePort()}/hook"), {}, BODY
        )
        self.assertEqual((result.status, result.error), (None, "connection refused"))

    def test_connectionRefused(self):
        return ensureDeferred(self._refused())

    async def _basicAuth(self) -> None:
        receiver = self.receiver()
        url = receiver.url.replace("http://", "http://hook%20user:p%40ss@")
        target = self.target(url)
        self.assertNotIn("p%40ss", target.displayURL)
        self.assertNotIn(b"user", target.url)
        await self.poster().post(target, {}, BODY)
        self.assertEqual(
            receiver.requests[0].headers["authorization"], "Basic aG9vayB1c2VyOnBAc3M="
        )

    def test_basicAuth(self):
        """
        A user and password in the URL become an C{Authorization: Basic}
        header, and stay out of the URL requested and logged.
        """
        return ensureDeferred(self._basicAuth())

    async def _closed(self) -> None:
        receiver = self.receiver([CLOSE, CLOSE])
        result = await self.poster().post(self.target(receiver.url), {}, BODY)
        self.assertEqual(result.status, None)
        self.assertEqual(result.error, "connection closed before the response")
        # Tried once more on a new connection: on a reused connection, that
        # is the receiver having just closed it.
        self.assertEqual(len(receiver.requests), 2)
        again = await self.poster().post(self.target(receiver.url), {}, BODY)
        self.assertEqual(again.status, 200)

    def test_closedBeforeResponse(self):
        return ensureDeferred(self._closed())

    async def _reuse(self) -> None:
        receiver = self.receiver()
        poster = self.poster()
        target = self.target(receiver.url)
        for _ in range(3):
            self.assertEqual((await poster.post(target, {}, BODY)).status, 200)
        self.assertEqual(receiver.connections.made, 1)

    def test_connectionReused(self):
        return ensureDeferred(self._reuse())


class TimeoutTests(PosterTestCase):
    async def _stall(self) -> None:
        clock = Clock()
        clock.advance(1796119200)
        receiver = self.receiver([STALL])
        poster = self.poster(SteppedReactor(clock), timeout=15.0)
        d = poster.post(self.target(receiver.url), {}, BODY)
        await receiver.waitFor(1)
        self.assertNoResult(d)
        clock.advance(15.0)
        result = await d
        self.assertEqual((result.status, result.error), (None, "timed out after 15 s"))
        self.assertEqual(result.seconds, 15.0)

    def test_stalledReceiver(self):
        """
        A receiver that never answers is given up after the time-out.
        """
        return ensureDeferred(self._stall())


class HTTPSTests(PosterTestCase):
    def setUp(self) -> None:
        self.pki = makeTestPKI(self.mktemp(), "127.0.0.1")

    async def _verified(self) -> None:
        secret = newSecret()
        receiver = self.receiver(certificate=self.pki.good)
        self.assertTrue(receiver.url.startswith("https://127.0.0.1:"))
        target = self.target(receiver.url, secret)
        headers = signedHeaders(target.key, "x1", int(time.time()), BODY)
        result = await self.poster(trustRoot=self.pki.ca.trustRoot()).post(target, headers, BODY)
        self.assertEqual(result.status, 200)
        verifyWebhook(secret, receiver.requests[0])

    def test_verified(self):
        """
        HTTPS to a receiver whose certificate the trusted CA issued.
        """
        return ensureDeferred(self._verified())

    async def _untrusted(self) -> None:
        other = CertificateAuthority(os.path.join(self.mktemp(), "other"), "Other CA")
        receiver = self.receiver(certificate=self.pki.good)
        result = await self.poster(trustRoot=other.trustRoot()).post(
            self.target(receiver.url), {}, BODY
        )
        self.assertIsNone(result.status)
        self.assertIn("TLS handshake failed", result.error)
        self.assertIn("certificate verify failed", result.error)
        self.assertEqual(receiver.requests, [])

    def test_untrusted(self):
        """
        A certificate from another CA is a failure (to be retried), and
        nothing is sent.
        """
        return ensureDeferred(self._untrusted())

    async def _wrongName(self) -> None:
        receiver = self.receiver(certificate=self.pki.wrongName)
        result = await self.poster(trustRoot=self.pki.ca.trustRoot()).post(
            self.target(receiver.url), {}, BODY
        )
        self.assertIsNone(result.status)
        self.assertIn("TLS", result.error)
        self.assertEqual(receiver.requests, [])

    def test_wrongName(self):
        return ensureDeferred(self._wrongName())

    async def _fromEnvironment(self) -> None:
        """
        Without a trust root given, C{SSL_CERT_FILE} is the trust store.
        """
        previous = os.environ.get("SSL_CERT_FILE")
        os.environ["SSL_CERT_FILE"] = self.pki.ca.certPath
        try:
            poster = self.poster()
        finally:
            if previous is None:
                del os.environ["SSL_CERT_FILE"]
            else:
                os.environ["SSL_CERT_FILE"] = previous
        receiver = self.receiver(certificate=self.pki.chained)
        result = await poster.post(self.target(receiver.url), {}, BODY)
        self.assertEqual(result.status, 200)

    def test_trustStoreFromEnvironment(self):
        return ensureDeferred(self._fromEnvironment())


class TargetTests(SynchronousTestCase):
    def test_plain(self) -> None:
        target = WebhookTarget.fromSetting("events", "http://hooks.example.test", b"k" * 32)
        self.assertEqual(target.url, b"http://hooks.example.test/")
        self.assertIsNone(target.authorization)
        self.assertEqual(target.kind, "events")

    def test_international(self) -> None:
        target = WebhookTarget.fromSetting(
            "inbound", "https://bücher.example.test:8443/h?a=1", b"k"
        )
        self.assertEqual(target.url, b"https://xn--bcher-kva.example.test:8443/h?a=1")

    def test_ipv6(self) -> None:
        target = WebhookTarget.fromSetting("inbound", "http://[::1]:8080/h", b"k")
        self.assertEqual(target.url, b"http://[::1]:8080/h")


class TrustStoreTests(SynchronousTestCase):
    def test_systemStore(self) -> None:
        checkTrustStore("SMTP_WEBHOOK_URL", {})

    def test_file(self) -> None:
        pki = makeTestPKI(self.mktemp())
        checkTrustStore("SMTP_WEBHOOK_URL", {"SSL_CERT_FILE": pki.ca.certPath})

    def test_missingFile(self) -> None:
        with self.assertRaises(ConfigError) as caught:
            checkTrustStore("SMTP_WEBHOOK_URL", {"SSL_CERT_FILE": "/nonexistent/ca.pem"})
        self.assertEqual(caught.exception.variable, "SSL_CERT_FILE")
        self.assertIn("SMTP_WEBHOOK_URL", str(caught.exception))

    def test_notCertificates(self) -> None:
        path = self.mktemp()
        with open(path, "w") as f:
            f.write("not a certificate\n")
        with self.assertRaises(ConfigError) as caught:
            checkTrustStore("SMTP_EVENTS_WEBHOOK_URL", {"SSL_CERT_FILE": path})
        self.assertEqual(caught.exception.variable, "SSL_CERT_FILE")
        self.assertIn("does not load", str(caught.exception))

    def test_missingDirectory(self) -> None:
        with self.assertRaises(ConfigError) as caught:
            checkTrustStore("SMTP_WEBHOOK_URL", {"SSL_CERT_DIR": "/nonexistent/certs"})
        self.assertEqual(caught.exception.variable, "SSL_CERT_DIR")
