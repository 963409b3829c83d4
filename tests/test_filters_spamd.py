"""
Tests for L{gopherpost.filters.spamd}: the SPAMC/1.5 exchange over a
StringTransport, with spamd's answers recorded from SpamAssassin 4.0.1
(the real spamd is in L{tests.test_filters_real}).
"""

from __future__ import annotations

from typing import Any

from twisted.internet.defer import Deferred, TimeoutError, succeed
from twisted.internet.error import ConnectionDone
from twisted.internet.interfaces import IStreamClientEndpoint
from twisted.internet.task import Clock
from twisted.internet.testing import StringTransport
from twisted.python.failure import Failure
from twisted.trial.unittest import SynchronousTestCase
from zope.interface import implementer

from gopherpost.config import SpamdAddress
from gopherpost.filters.envelope import ScanRequest, SessionFacts
from gopherpost.filters.failure import FilterProtocolError
from gopherpost.filters.spamd import SpamdClient, parseResponse, request
from gopherpost.filters.verdict import DeleteHeader, Disposition, InsertHeader

#: recorded: GTUBE (report_safe on: SpamAssassin's own Received and
#: Content-Type, which we do not take).
GTUBE = (
    b"SPAMD/1.1 0 EX_OK\r\nContent-length: 627\r\nSpam: True ; 1000.0 / 5.0\r\n\r\n"
    b"Received: from localhost by vm\r\n\twith SpamAssassin (version 4.0.1);\r\n"
    b"\tTue, 01 Dec 2026 12:27:23 +0000\r\nFrom: a@example.test\r\nTo: b@example.test\r\n"
    b"Subject: hi\r\nDate: Tue, 1 Dec 2026 12:00:00 +0000\r\nMessage-Id: <1@example.test>\r\n"
    b"X-Spam-Checker-Version: SpamAssassin 4.0.1 (2024-03-25) on vm\r\nX-Spam-Flag: YES\r\n"
    b"X-Spam-Level: **************************************************\r\n"
    b"X-Spam-Status: Yes, score=1000.0 required=5.0 tests=GTUBE,MSGID_SHORT,\r\n"
    b"\tNO_RECEIVED,NO_RELAYS,TVD_SPACE_RATIO autolearn=no autolearn_force=no\r\n"
    b"\tversion=4.0.1\r\nMIME-Version: 1.0\r\n"
    b'Content-Type: multipart/mixed; boundary="----------=_6B0EBD2B.CF957AE2"\r\n\r\n'
)

#: recorded: a clean message.
CLEAN = (
    b"SPAMD/1.1 0 EX_OK\r\nContent-length: 346\r\nSpam: False ; -0.0 / 5.0\r\n\r\n"
    b"X-Spam-Checker-Version: SpamAssassin 4.0.1 (2024-03-25) on vm\r\nX-Spam-Level: \r\n"
    b"X-Spam-Status: No, score=-0.0 required=5.0 tests=MSGID_SHORT,NO_RECEIVED,\r\n"
    b"\tNO_RELAYS autolearn=unavailable autolearn_force=no version=4.0.1\r\n"
    b"From: a@example.test\r\nTo: b@example.test\r\nSubject: hi\r\n"
    b"Message-ID: <2@example.test>\r\nDate: Tue, 1 Dec 2026 12:00:00 +0000\r\n\r\n"
)

SECTION = b"From: a@example.test\r\nTo: b@example.test\r\nSubject: hi\r\nX-Spam-Flag: YES\r\n"


def scanRequest(body: bytes = b"hello\r\n") -> ScanRequest:
    return ScanRequest(
        SessionFacts("192.0.2.10"),
        "Q1",
        "a@example.test",
        ("b@example.test",),
        SECTION,
        body,
    )


@implementer(IStreamClientEndpoint)
class _Endpoint:
    def __init__(self, connect: bool = True) -> None:
        self.transport = StringTransport()
        self.protocol: Any = None
        self._connect = connect

    def connect(self, factory: Any) -> Deferred[Any]:
        if not self._connect:
            return Deferred()
        self.protocol = factory.buildProtocol(None)
        self.protocol.makeConnection(self.transport)
        return succeed(self.protocol)

    def answer(self, data: bytes) -> None:
        self.protocol.dataReceived(data)
        self.protocol.connectionLost(Failure(ConnectionDone()))


def client(endpoint: _Endpoint, clock: Clock | None = None, **kwargs: Any) -> SpamdClient:
    return SpamdClient(
        clock or Clock(),
        SpamdAddress("127.0.0.1", 783),
        kwargs.pop("timeout", 20.0),
        kwargs.pop("rejectScore", 10.0),
        endpoint=endpoint,
        **kwargs,
    )


class ProtocolTests(SynchronousTestCase):
    def test_request(self) -> None:
        self.assertEqual(
            request(b"Subject: x\r\n\r\nhi\r\n", "alice"),
            b"HEADERS SPAMC/1.5\r\nContent-length: 18\r\nUser: alice\r\n\r\nSubject: x\r\n\r\nhi\r\n",
        )

    def test_parseSpam(self) -> None:
        result = parseResponse(GTUBE)
        self.assertEqual((result.spam, result.score, result.threshold), (True, 1000.0, 5.0))
        self.assertTrue(result.headers.startswith(b"Received: from localhost"))
        self.assertTrue(result.headers.endswith(b'"----------=_6B0EBD2B.CF957AE2"\r\n'))

    def test_parseClean(self) -> None:
        result = parseResponse(CLEAN)
        self.assertEqual((result.spam, result.score, result.threshold), (False, 0.0, 5.0))

    def test_errors(self) -> None:
        for data in (
            b"",
            b"HTTP/1.1 200 OK\r\n\r\n",
            b"SPAMD/1.0 76 Bad header line: x\r\n\r\n",
            b"SPAMD/1.1 0 EX_OK\r\n\r\n",
            b"SPAMD/1.1 0 EX_OK\r\nSpam: maybe\r\n\r\n",
            b"SPAMD/1.1 0 EX_OK\r\nContent-length: 100\r\nSpam: True ; 1 / 5\r\n\r\nshort",
        ):
            self.assertRaises(FilterProtocolError, parseResponse, data)


class SpamdClientTests(SynchronousTestCase):
    def test_spamRejected(self) -> None:
        endpoint = _Endpoint()
        d = client(endpoint).scan(scanRequest())
        self.assertEqual(endpoint.transport.value(), request(SECTION + b"\r\nhello\r\n"))
        endpoint.answer(GTUBE)
        verdict = self.successResultOf(d)
        self.assertEqual(verdict.disposition, Disposition.REJECT)
        self.assertEqual(
            (verdict.code, verdict.text),
            (550, "5.7.1 Message rejected as spam (SpamAssassin score 1000.0)"),
        )
        self.assertEqual((verdict.score, verdict.threshold), (1000.0, 5.0))

    def test_spamTagged(self) -> None:
        """
        Under the reject score: SpamAssassin's X-Spam-* fields on top, the
        forged one removed, nothing else taken.
        """
        endpoint = _Endpoint()
        d = client(endpoint, rejectScore=None).scan(scanRequest())
        endpoint.answer(GTUBE)
        verdict = self.successResultOf(d)
        self.assertEqual(verdict.disposition, Disposition.ACCEPT)
        edits = list(verdict.modifications)
        self.assertEqual(edits[0], DeleteHeader(b"x-spam-flag", 0))
        self.assertEqual(
            [(e.index, e.name) for e in edits[1:] if isinstance(e, InsertHeader)],
            [
                (0, b"X-Spam-Checker-Version"),
                (1, b"X-Spam-Flag"),
                (2, b"X-Spam-Level"),
                (3, b"X-Spam-Status"),
            ],
        )
        self.assertEqual(len(edits), 5)
        status = edits[4]
        assert isinstance(status, InsertHeader)
        self.assertIn(b"\r\n\tNO_RECEIVED", status.value)

    def test_clean(self) -> None:
        endpoint = _Endpoint()
        d = client(endpoint).scan(scanRequest())
        endpoint.answer(CLEAN)
        verdict = self.successResultOf(d)
        self.assertEqual(verdict.result, "accept")
        self.assertIn(b"X-Spam-Status", [getattr(e, "name", None) for e in verdict.modifications])

    def test_subjectRewritten(self) -> None:
        endpoint = _Endpoint()
        d = client(endpoint, rejectScore=None).scan(scanRequest())
        endpoint.answer(
            b"SPAMD/1.1 0 EX_OK\r\nSpam: True ; 7.0 / 5.0\r\n\r\n"
            b"Subject: [SPAM] hi\r\nX-Spam-Flag: YES\r\n\r\n"
        )
        verdict = self.successResultOf(d)
        self.assertIn(b" [SPAM] hi", [getattr(e, "value", None) for e in verdict.modifications])

    def test_tooLarge(self) -> None:
        """
        Over the size limit: not scanned (as spamc does).
        """
        endpoint = _Endpoint()
        verdict = self.successResultOf(client(endpoint, maxSize=50).scan(scanRequest(b"x" * 100)))
        self.assertEqual(verdict.result, "skipped")
        self.assertIsNone(endpoint.protocol)

    def test_timeout(self) -> None:
        clock = Clock()
        endpoint = _Endpoint()
        d = client(endpoint, clock).scan(scanRequest())
        clock.advance(20)
        self.failureResultOf(d, TimeoutError)
        self.assertTrue(endpoint.transport.disconnecting)

    def test_cannotConnect(self) -> None:
        clock = Clock()
        d = client(_Endpoint(connect=False), clock).scan(scanRequest())
        clock.advance(20)
        self.failureResultOf(d, TimeoutError)

    def test_closedEarly(self) -> None:
        endpoint = _Endpoint()
        d = client(endpoint).scan(scanRequest())
        endpoint.answer(b"SPAMD/1.1 0 EX_OK\r\n")
        self.failureResultOf(d, FilterProtocolError)
