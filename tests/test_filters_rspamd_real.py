"""
rspamd from Debian, started on loopback ports (L{tests.filters.services}):
its HTTP API through L{gopherpost.filters.rspamd}, its milter port through
the milter client, and the two agreeing.
"""

from __future__ import annotations

from collections.abc import Generator
from typing import Any

from twisted.internet import defer, reactor
from twisted.internet.defer import Deferred
from twisted.internet.protocol import Protocol, ServerFactory
from twisted.trial.unittest import TestCase

from gopherpost.config import MilterSpec
from gopherpost.filters.headers import HeaderSection
from gopherpost.filters.metrics import FilterMetrics
from gopherpost.filters.milter.client import MilterClient
from gopherpost.filters.policies import MilterPolicy, ScannerPolicy
from gopherpost.filters.rspamd import RspamdClient
from tests.filters import services
from tests.filters.services import GTUBE
from tests.support.filterchain import runSession
from tests.support.filters import FakeContext, FakeMessage, FakeTransaction, message, noTracebacks


def results(metrics: FilterMetrics, name: str, result: str) -> float:
    return metrics.value("smtp_filter_results_total", {"filter": name, "result": result})


class RspamdHTTPTests(TestCase):
    """
    GTUBE is refused, a clean message gets rspamd's header fields, each
    action does what the module says.
    """

    timeout = 400

    def setUp(self) -> None:
        noTracebacks(self)

    @defer.inlineCallbacks
    def scan(
        self, msg: FakeMessage, timeout: float = 20.0, url: str | None = None, **kwargs: Any
    ) -> Generator[Deferred[Any], Any, tuple[Any, FakeTransaction]]:
        if url is None:
            rspamd = yield services.rspamd()
            url = rspamd.url
        client = RspamdClient(reactor, url, timeout)
        self.addCleanup(client.close)
        self.metrics = FilterMetrics()
        policy = ScannerPolicy(
            client,
            kwargs.pop("failAction", "tempfail"),
            kwargs.pop("scope", "inbound"),
            self.metrics,
            reactor,
        )
        transaction = FakeTransaction()
        reply = yield policy.message(kwargs.pop("context", FakeContext()), transaction, msg)
        return reply, transaction

    @defer.inlineCallbacks
    def test_gtubeRejected(self) -> Generator[Deferred[Any], Any, None]:
        msg = message(GTUBE + b"\r\n")
        before = msg.content
        reply, transaction = yield self.scan(msg)
        self.assertEqual((reply.code, reply.text), (550, "5.7.1 Gtube pattern"))
        self.assertEqual(msg.content, before)
        self.assertEqual(transaction.tags["filters"]["rspamd"]["action"], "reject")
        self.assertEqual(results(self.metrics, "rspamd", "reject"), 1)
        self.assertEqual(self.metrics.value("smtp_spam_score_count", {"filter": "rspamd"}), 1)

    @defer.inlineCallbacks
    def test_cleanAccepted(self) -> Generator[Deferred[Any], Any, None]:
        """
        The header fields rspamd's milter_headers module asks for, forged
        ones replaced; the queue id we sent comes back.
        """
        msg = message()
        msg.headerSection += b"X-Spamd-Result: forged\r\n"
        reply, transaction = yield self.scan(msg)
        self.assertIsNone(reply)
        section = HeaderSection(msg.headerSection)
        self.assertEqual(section.values(b"X-Rspamd-Queue-Id"), [b" QTEST1"])
        (status,) = section.values(b"X-Spam-Status")
        self.assertTrue(status.startswith(b" No, score="), status)
        (result,) = section.values(b"X-Spamd-Result")
        self.assertIn(b"default: False", result)
        self.assertNotIn(b"forged", msg.headerSection)
        self.assertEqual(section.values(b"X-Spam"), [])
        self.assertEqual(transaction.tags["filters"]["rspamd"]["action"], "no action")
        self.assertLess(transaction.tags["filters"]["rspamd"]["score"], 4.0)

    @defer.inlineCallbacks
    def test_addHeader(self) -> Generator[Deferred[Any], Any, None]:
        msg = message(subject="gopherpost-add-header")
        msg.headerSection += b"X-Spam: No (forged)\r\n"
        reply, transaction = yield self.scan(msg)
        self.assertIsNone(reply)
        self.assertEqual(HeaderSection(msg.headerSection).values(b"X-Spam"), [b" Yes"])
        self.assertEqual(transaction.tags["filters"]["rspamd"]["action"], "add header")

    @defer.inlineCallbacks
    def test_rewriteSubject(self) -> Generator[Deferred[Any], Any, None]:
        msg = message(subject="gopherpost-rewrite-subject")
        reply, _ = yield self.scan(msg)
        self.assertIsNone(reply)
        self.assertEqual(
            HeaderSection(msg.headerSection).values(b"Subject"),
            [b" ***SPAM*** gopherpost-rewrite-subject"],
        )

    @defer.inlineCallbacks
    def test_softReject(self) -> Generator[Deferred[Any], Any, None]:
        msg = message(subject="gopherpost-soft-reject")
        reply, _ = yield self.scan(msg)
        self.assertEqual((reply.code, reply.text), (451, "4.7.1 Soft reject test"))
        self.assertEqual(msg.sectionReplaced, 0)

    @defer.inlineCallbacks
    def test_scopeInbound(self) -> Generator[Deferred[Any], Any, None]:
        """
        A client that may relay is not scanned (GTUBE goes through).
        """
        reply, transaction = yield self.scan(
            message(GTUBE + b"\r\n"), context=FakeContext(relayClient=True)
        )
        self.assertIsNone(reply)
        self.assertNotIn("filters", transaction.tags)

    @defer.inlineCallbacks
    def test_down(self) -> Generator[Deferred[Any], Any, None]:
        """
        rspamd not listening: tempfail (the client tries later), or with
        C{SMTP_FILTER_FAIL=accept} the message goes on, untouched.
        """
        url = f"http://127.0.0.1:{services.freePort()}"
        msg = message(GTUBE + b"\r\n")
        reply, _ = yield self.scan(msg, url=url)
        self.assertEqual(
            (reply.code, reply.text), (451, "4.7.1 Content filter unavailable, try again later")
        )
        self.assertEqual(results(self.metrics, "rspamd", "error"), 1)
        reply, transaction = yield self.scan(msg, url=url, failAction="accept")
        self.assertIsNone(reply)
        self.assertEqual(msg.sectionReplaced, 0)
        self.assertEqual(transaction.tags["filters"]["rspamd"]["result"], "error")

    @defer.inlineCallbacks
    def test_slow(self) -> Generator[Deferred[Any], Any, None]:
        """
        An rspamd that does not answer in SMTP_RSPAMD_TIMEOUT: tempfail,
        counted as a timeout.  (A listener that accepts and never answers
        stands in for a hung rspamd.)
        """
        connections: list[Protocol] = []

        class Silent(Protocol):
            def connectionMade(self) -> None:
                connections.append(self)

        factory = ServerFactory()
        factory.protocol = Silent
        port = reactor.listenTCP(0, factory, interface="127.0.0.1")
        self.addCleanup(port.stopListening)
        url = f"http://127.0.0.1:{port.getHost().port}"  # type: ignore[attr-defined]
        started = reactor.seconds()
        reply, _ = yield self.scan(message(), timeout=0.5, url=url)
        self.assertEqual(reply.code, 451)
        self.assertLess(reactor.seconds() - started, 10)
        self.assertEqual(results(self.metrics, "rspamd", "timeout"), 1)
        self.assertEqual(len(connections), 1)
        for connection in connections:
            assert connection.transport is not None
            connection.transport.loseConnection()


class RspamdAgreementTests(TestCase):
    """
    rspamd's milter port and its HTTP API give the same verdict and the
    same header fields for the same message.
    """

    timeout = 400

    def setUp(self) -> None:
        noTracebacks(self)

    @defer.inlineCallbacks
    def both(self, msg: FakeMessage) -> Generator[Deferred[Any], Any, Any]:
        rspamd = yield services.rspamd()
        http = RspamdClient(reactor, rspamd.url, 20.0)
        self.addCleanup(http.close)
        metrics = FilterMetrics()
        viaHTTP = FakeMessage(msg.headerSection, msg.body)
        viaMilter = FakeMessage(msg.headerSection, msg.body)
        httpReplies = yield runSession(
            [ScannerPolicy(http, "tempfail", "all", metrics, reactor)],
            FakeContext(),
            FakeTransaction(),
            viaHTTP,
        )
        spec = MilterSpec(
            f"inet:127.0.0.1:{rspamd.milter}", "127.0.0.1", rspamd.milter, name="rspamd-milter"
        )
        milterReplies = yield runSession(
            [MilterPolicy([MilterClient(reactor, spec)], "tempfail", metrics, reactor)],
            FakeContext(),
            FakeTransaction(),
            viaMilter,
        )
        return httpReplies["message"], viaHTTP, milterReplies["message"], viaMilter

    def names(self, msg: FakeMessage) -> list[bytes]:
        return sorted(f.name for f in HeaderSection(msg.headerSection) if f.name)

    @defer.inlineCallbacks
    def test_clean(self) -> Generator[Deferred[Any], Any, None]:
        httpReply, viaHTTP, milterReply, viaMilter = yield self.both(message())
        self.assertIsNone(httpReply)
        self.assertIsNone(milterReply)
        self.assertEqual(self.names(viaHTTP), self.names(viaMilter))
        self.assertIn(b"X-Spamd-Result", self.names(viaHTTP))
        self.assertEqual(
            HeaderSection(viaHTTP.headerSection).values(b"X-Spam-Status"),
            HeaderSection(viaMilter.headerSection).values(b"X-Spam-Status"),
        )

    @defer.inlineCallbacks
    def test_addHeaderAndRewrite(self) -> Generator[Deferred[Any], Any, None]:
        for subject in ("gopherpost-add-header", "gopherpost-rewrite-subject"):
            httpReply, viaHTTP, milterReply, viaMilter = yield self.both(message(subject=subject))
            self.assertIsNone(httpReply)
            self.assertIsNone(milterReply)
            self.assertEqual(self.names(viaHTTP), self.names(viaMilter), subject)
            for name in (b"X-Spam", b"Subject"):
                self.assertEqual(
                    HeaderSection(viaHTTP.headerSection).values(name),
                    HeaderSection(viaMilter.headerSection).values(name),
                    (subject, name),
                )

    @defer.inlineCallbacks
    def test_refusals(self) -> Generator[Deferred[Any], Any, None]:
        """
        GTUBE: 5xx both ways; a soft reject: 4xx both ways, same text.
        """
        httpReply, _, milterReply, viaMilter = yield self.both(message(GTUBE + b"\r\n"))
        self.assertEqual((httpReply.code // 100, milterReply.code // 100), (5, 5))
        self.assertEqual(httpReply.text, milterReply.text)
        self.assertEqual(viaMilter.sectionReplaced, 0)
        httpReply, _, milterReply, _ = yield self.both(message(subject="gopherpost-soft-reject"))
        self.assertEqual((httpReply.code // 100, milterReply.code // 100), (4, 4))
        self.assertIn("Soft reject test", milterReply.text)
        self.assertEqual(httpReply.text, "4.7.1 Soft reject test")
