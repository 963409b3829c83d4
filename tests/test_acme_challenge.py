"""
Tests for L{gopherpost.acme.challenge}: the HTTP-01 answers and their
listener.
"""

from __future__ import annotations

import threading
from typing import Any

import treq
from twisted.internet import reactor
from twisted.internet.defer import inlineCallbacks
from twisted.internet.testing import EventLoggingObserver
from twisted.logger import formatEvent, globalLogPublisher
from twisted.trial.unittest import SynchronousTestCase, TestCase
from twisted.web.client import HTTPConnectionPool
from twisted.web.http_headers import Headers

from gopherpost.acme.challenge import ChallengeResponses, ChallengeSite

TOKEN = "evaGxfADs6pSRb2LAv9IZf17Dt3juxGJ-PCt92wr-oA"
ANSWER = TOKEN + ".9jg46WB3rR_AHD-EBXdN7cBkH1WOu0tA3M9fm21mqTI"


class ResponsesTests(SynchronousTestCase):
    def test_addRemove(self) -> None:
        responses = ChallengeResponses()
        responses.add(TOKEN, ANSWER)
        self.assertEqual((responses.get(TOKEN), len(responses)), (ANSWER, 1))
        responses.remove(TOKEN)
        responses.remove(TOKEN)
        self.assertEqual((responses.get(TOKEN), len(responses)), (None, 0))

    def test_fromThreads(self) -> None:
        """
        Filled from other threads while read.
        """
        responses = ChallengeResponses()

        def fill(n: int) -> None:
            for i in range(200):
                responses.add(f"t{n}-{i}", "x")

        threads = [threading.Thread(target=fill, args=(n,)) for n in range(4)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        self.assertEqual(len(responses), 800)


class SiteTests(TestCase):
    timeout = 30

    def setUp(self) -> None:
        self.observer = EventLoggingObserver.createWithCleanup(self, globalLogPublisher)
        self.responses = ChallengeResponses()
        self.responses.add(TOKEN, ANSWER)
        listener: Any = reactor
        self.port = listener.listenTCP(
            0, ChallengeSite(self.responses, reactor), interface="127.0.0.1"
        )
        self.addCleanup(self.port.stopListening)
        self.base = f"http://127.0.0.1:{self.port.getHost().port}"
        self.pool = HTTPConnectionPool(reactor, persistent=False)

    @inlineCallbacks
    def get(self, path: str, method: str = "GET") -> Any:
        response = yield treq.request(
            method,
            self.base + path,
            headers=Headers({b"Host": [b"mx.example.test:80"]}),
            pool=self.pool,
        )
        body = yield response.content()
        return response.code, response.headers.getRawHeaders("content-type"), body

    @inlineCallbacks
    def test_answer(self) -> Any:
        """
        The key authorization for a known token, as the RFC says, and one
        log line naming the name asked for.
        """
        code, contentType, body = yield self.get(f"/.well-known/acme-challenge/{TOKEN}")
        self.assertEqual(
            (code, contentType, body), (200, ["application/octet-stream"], ANSWER.encode())
        )
        code, _, body = yield self.get(f"/.well-known/acme-challenge/{TOKEN}", "HEAD")
        self.assertEqual((code, body), (200, b""))
        lines = [formatEvent(e) for e in self.observer if "HTTP-01" in (formatEvent(e) or "")]
        self.assertIn("Answered the ACME HTTP-01 challenge for mx.example.test to 127.0.0.1", lines)

    @inlineCallbacks
    def test_nothingElse(self) -> Any:
        """
        Unknown tokens, other paths and bad tokens are 404 without a log
        line; other methods 405.
        """
        for path in (
            "/",
            "/.well-known/acme-challenge/",
            "/.well-known/acme-challenge/unknown",
            f"/.well-known/acme-challenge/{TOKEN}/more",
            "/.well-known/acme-challenge/..%2F..%2Fetc",
            f"/x/.well-known/acme-challenge/{TOKEN}",
        ):
            code, _, _ = yield self.get(path)
            self.assertEqual(code, 404, path)
        code, _, _ = yield self.get(f"/.well-known/acme-challenge/{TOKEN}", "POST")
        self.assertEqual(code, 405)
        self.assertEqual([e for e in self.observer if "HTTP-01" in (formatEvent(e) or "")], [])

    @inlineCallbacks
    def test_removed(self) -> Any:
        self.responses.remove(TOKEN)
        code, _, _ = yield self.get(f"/.well-known/acme-challenge/{TOKEN}")
        self.assertEqual(code, 404)
