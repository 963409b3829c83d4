"""
Tests for L{gopherpost.filters.rspamd}: rspamd's replies as verdicts, and
the request the client sends (served in memory by a twisted.web resource;
the real rspamd is in L{tests.test_filters_real}).
"""

from __future__ import annotations

import json
from typing import Any

from treq.testing import RequestTraversalAgent
from twisted.internet.defer import Deferred, TimeoutError
from twisted.internet.task import Clock
from twisted.trial.unittest import SynchronousTestCase
from twisted.web.resource import Resource
from twisted.web.server import Request
from zope.interface.verify import verifyObject

from gopherpost.filters.envelope import ScanRequest, SessionFacts
from gopherpost.filters.failure import FilterProtocolError
from gopherpost.filters.interfaces import IContentScanner
from gopherpost.filters.rspamd import RspamdClient, checkURL, verdictFromReply
from gopherpost.filters.verdict import (
    AddHeader,
    ChangeHeader,
    DeleteHeader,
    Disposition,
    InsertHeader,
)

#: A reply of rspamd 3.4 for a clean message with milter_headers on
#: (recorded, symbols shortened).
CLEAN = {
    "is_skipped": False,
    "score": 2.0,
    "required_score": 15.0,
    "action": "no action",
    "symbols": {"AUTH_NA": {"name": "AUTH_NA", "score": 1.0}, "MIME_GOOD": {"score": -0.1}},
    "messages": {},
    "message-id": "2@example.test",
    "milter": {
        "add_headers": {
            "X-Spamd-Result": {
                "value": "default: False [2.00 / 15.00];\r\n\tAUTH_NA(1.00)[]",
                "order": -1,
            },
            "X-Rspamd-Queue-Id": {"value": "Q2", "order": -1},
            "X-Spam-Status": {"value": "No, score=2.00", "order": -1},
        },
        "remove_headers": {"X-Spam": 0, "X-Spamd-Result": 0},
    },
}

#: recorded: GTUBE.
GTUBE = {
    "is_skipped": True,
    "score": 15.0,
    "required_score": 15.0,
    "action": "reject",
    "symbols": {"GTUBE": {"name": "GTUBE", "score": 0.0}},
    "messages": {"smtp_message": "Gtube pattern"},
}

REQUEST = ScanRequest(
    SessionFacts(
        "192.0.2.10",
        helo="client.example.test",
        serverName="mx.example.test",
        authenticatedUser="alice",
        tlsVersion="TLSv1.3",
        tlsCipher="TLS_AES_256_GCM_SHA384",
    ),
    "QTEST1",
    "sender@example.test",
    ("one@example.test", "two@example.test"),
    b"Subject: hi\r\n",
    b"body\r\n",
)


class VerdictFromReplyTests(SynchronousTestCase):
    """
    Each action.
    """

    def test_noAction(self) -> None:
        """
        The milter block's removals, then its additions.
        """
        verdict = verdictFromReply(CLEAN)
        self.assertEqual(verdict.disposition, Disposition.ACCEPT)
        self.assertEqual((verdict.score, verdict.threshold), (2.0, 15.0))
        self.assertEqual(
            list(verdict.modifications),
            [
                DeleteHeader(b"X-Spam", 0),
                DeleteHeader(b"X-Spamd-Result", 0),
                AddHeader(
                    b"X-Spamd-Result", b"default: False [2.00 / 15.00];\r\n\tAUTH_NA(1.00)[]"
                ),
                AddHeader(b"X-Rspamd-Queue-Id", b"Q2"),
                AddHeader(b"X-Spam-Status", b"No, score=2.00"),
            ],
        )
        self.assertEqual(verdict.details["symbols"], ["AUTH_NA", "MIME_GOOD"])
        self.assertEqual(verdict.details["action"], "no action")
        # The score is the verdict's, not repeated in the details.
        self.assertNotIn("score", verdict.details)

    def test_reject(self) -> None:
        verdict = verdictFromReply(GTUBE)
        self.assertEqual((verdict.code, verdict.text), (550, "5.7.1 Gtube pattern"))
        self.assertEqual(verdict.score, 15.0)
        verdict = verdictFromReply({"action": "reject", "score": 20})
        self.assertEqual(verdict.text, "5.7.1 Spam message rejected")

    def test_softRejectAndGreylist(self) -> None:
        for action in ("soft reject", "greylist"):
            verdict = verdictFromReply({"action": action, "score": 5.0})
            self.assertEqual((verdict.code, verdict.text), (451, "4.7.1 Try again later"))
            self.assertEqual(verdict.disposition, Disposition.TEMPFAIL)
        verdict = verdictFromReply(
            {"action": "soft reject", "messages": {"smtp_message": "Ratelimit exceeded"}}
        )
        self.assertEqual(verdict.text, "4.7.1 Ratelimit exceeded")

    def test_addHeader(self) -> None:
        """
        C{X-Spam: Yes}, any forged one removed first.
        """
        verdict = verdictFromReply({"action": "add header", "score": 7.0})
        self.assertEqual(
            list(verdict.modifications), [DeleteHeader(b"X-Spam", 0), AddHeader(b"X-Spam", b"Yes")]
        )

    def test_rewriteSubject(self) -> None:
        verdict = verdictFromReply({"action": "rewrite subject", "subject": "*** SPAM *** hi"})
        self.assertEqual(
            list(verdict.modifications), [ChangeHeader(b"Subject", 1, b"*** SPAM *** hi")]
        )

    def test_discardAndQuarantine(self) -> None:
        self.assertEqual(verdictFromReply({"action": "discard"}).disposition, Disposition.DISCARD)
        verdict = verdictFromReply({"action": "quarantine"})
        self.assertEqual((verdict.disposition, verdict.quarantine), (Disposition.ACCEPT, "rspamd"))

    def test_dkimSignatureAndOrder(self) -> None:
        verdict = verdictFromReply(
            {
                "action": "no action",
                "dkim-signature": "v=1; a=rsa-sha256; d=example.test",
                "milter": {
                    "add_headers": {"X-First": {"value": "1", "order": 0}, "X-Many": ["a", "b"]}
                },
            }
        )
        self.assertEqual(
            list(verdict.modifications),
            [
                InsertHeader(0, b"X-First", b"1"),
                AddHeader(b"X-Many", b"a"),
                AddHeader(b"X-Many", b"b"),
                InsertHeader(0, b"DKIM-Signature", b"v=1; a=rsa-sha256; d=example.test"),
            ],
        )

    def test_notAReply(self) -> None:
        replies: list[Any] = [[], {"score": 1}, {"action": 3}, "reject"]
        for reply in replies:
            self.assertRaises(FilterProtocolError, verdictFromReply, reply)


class _Rspamd(Resource):
    isLeaf = True

    def __init__(self, reply: Any, code: int = 200) -> None:
        super().__init__()
        self.reply: Any = reply
        self.code = code
        self.requests: list[tuple[bytes, dict[bytes, Any], bytes]] = []

    def render_POST(self, request: Request) -> bytes:
        assert request.content is not None
        headers = dict(request.requestHeaders.getAllRawHeaders())
        self.requests.append((request.uri, headers, request.content.read()))
        request.setResponseCode(self.code)
        if isinstance(self.reply, bytes):
            return self.reply
        return json.dumps(self.reply).encode()


class RspamdClientTests(SynchronousTestCase):
    """
    The request and the failures.
    """

    def scan(self, resource: _Rspamd) -> Deferred[Any]:
        client = RspamdClient(
            Clock(), "http://127.0.0.1:11333", 20.0, RequestTraversalAgent(resource)
        )
        verifyObject(IContentScanner, client)
        return client.scan(REQUEST)

    def test_request(self) -> None:
        """
        The message as the body; the envelope and connection facts as
        rspamd's request headers.
        """
        resource = _Rspamd(GTUBE)
        verdict = self.successResultOf(self.scan(resource))
        self.assertEqual(verdict.code, 550)
        ((uri, headers, body),) = resource.requests
        self.assertEqual(uri, b"/checkv2")
        self.assertEqual(body, b"Subject: hi\r\n\r\nbody\r\n")
        self.assertEqual(headers[b"Ip"], [b"192.0.2.10"])
        self.assertEqual(headers[b"Helo"], [b"client.example.test"])
        self.assertEqual(headers[b"From"], [b"sender@example.test"])
        self.assertEqual(headers[b"Rcpt"], [b"one@example.test", b"two@example.test"])
        self.assertEqual(headers[b"Queue-Id"], [b"QTEST1"])
        self.assertEqual(headers[b"User"], [b"alice"])
        self.assertEqual(headers[b"Tls-Version"], [b"TLSv1.3"])
        self.assertEqual(headers[b"Tls-Cipher"], [b"TLS_AES_256_GCM_SHA384"])
        self.assertEqual(headers[b"Mta-Name"], [b"mx.example.test"])

    def test_httpError(self) -> None:
        self.failureResultOf(self.scan(_Rspamd(b"oops", 500)), FilterProtocolError)

    def test_notJSON(self) -> None:
        self.failureResultOf(self.scan(_Rspamd(b"<html>")), FilterProtocolError)

    def test_rspamdError(self) -> None:
        failure = self.failureResultOf(
            self.scan(_Rspamd({"error": "cannot parse message"})), FilterProtocolError
        )
        self.assertIn("cannot parse message", str(failure.value))

    def test_timeout(self) -> None:
        """
        A request that gets no answer is cancelled after the timeout.
        """
        clock = Clock()
        pending: list[Deferred[Any]] = []

        class Agent:
            def request(self, *args: Any) -> Deferred[Any]:
                d: Deferred[Any] = Deferred()
                pending.append(d)
                return d

        d = RspamdClient(clock, "http://127.0.0.1:11333", 20.0, Agent()).scan(REQUEST)
        clock.advance(19.9)
        self.assertNoResult(d)
        clock.advance(0.1)
        self.failureResultOf(d, TimeoutError)
        self.assertTrue(pending[0].called)  # cancelled: the connection is dropped

    def test_checkURL(self) -> None:
        self.assertEqual(checkURL("http://127.0.0.1:11333"), b"http://127.0.0.1:11333/checkv2")
        self.assertEqual(checkURL("http://h:1/rspamd/"), b"http://h:1/rspamd/checkv2")
        self.assertEqual(checkURL("http://h:1/checkv2"), b"http://h:1/checkv2")
