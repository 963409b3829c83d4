"""
Integration tests for the relay queue: a DNS server and receiving SMTP
servers on 127.0.0.x, the real client, the real spool; time from a clock.
"""

from __future__ import annotations

import os
from typing import Any, cast

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from twisted.internet import reactor
from twisted.internet.defer import inlineCallbacks
from twisted.internet.testing import EventLoggingObserver
from twisted.internet.threads import deferToThread
from twisted.logger import LogLevel, formatEvent, globalLogPublisher
from twisted.trial.unittest import TestCase

from gopherpost.relay.state import DELIVERED, FAILED, PENDING
from tests.support.certs import makeTestPKI
from tests.support.dnsserver import DNSTestServer
from tests.support.relay import RelayHarness, eventually
from tests.support.server import freePort
from tests.support.smtpserver import SMTPTestServer, firstTimes, forRecipients


class RelayTestCase(TestCase):
    """
    A DNS zone: example.test has MX 10 mx1 (127.0.0.2) and MX 20 mx2
    (127.0.0.3); implicit.test has only an A record (127.0.0.4);
    nullmx.test publishes a null MX.
    """

    timeout = 60

    def setUp(self) -> None:
        self.dns = DNSTestServer(reactor)
        self.dns.start()
        self.addCleanup(self.dns.stop)
        self.dns.addMX("example.test", 10, "mx1.example.test")
        self.dns.addMX("example.test", 20, "mx2.example.test")
        self.dns.addA("mx1.example.test", "127.0.0.2")
        self.dns.addA("mx2.example.test", "127.0.0.3")
        self.dns.addA("implicit.test", "127.0.0.4")
        self.dns.addNullMX("nullmx.test")
        self.port = freePort("127.0.0.2")

    def server(self, host: str, **kwargs) -> SMTPTestServer:
        server = SMTPTestServer(reactor, **kwargs).start(host, self.port)
        self.addCleanup(server.stop)
        return server

    def harness(self, **overrides) -> RelayHarness:
        return RelayHarness(self, self.dns, self.port, **overrides)


class DeliveryTests(RelayTestCase):
    """
    Mail reaches the MX.
    """

    @inlineCallbacks
    def test_oneTransactionPerDestination(self):
        """
        Two recipients of one message at one domain go in one transaction;
        local recipients are not relayed; the state ends C{.relayed}.
        """
        mx1 = self.server("127.0.0.2")
        h = self.harness()
        h.startQueue()
        envelope = yield h.spoolMessage(
            ["bob@example.test", "carol@example.test", "dan@gopherpost.test"]
        )
        yield eventually(
            lambda: mx1.messages and h.state(envelope).recipients and h.state(envelope).done
        )
        [message] = mx1.messages
        self.assertEqual(sorted(message.recipients), ["bob@example.test", "carol@example.test"])
        self.assertEqual(message.sender, "alice@gopherpost.test")
        self.assertIn(b"Subject: relay test\r\n", message.data)
        state = h.state(envelope)
        self.assertEqual({r.status for r in state.recipients}, {DELIVERED})
        self.assertTrue(
            os.path.exists(
                os.path.join(h.path, envelope.dateDirectory, envelope.queueId + ".relayed")
            )
        )
        assert h.queue is not None
        self.assertEqual(h.queue.queueDepth(), 0)
        names = [name for name, _ in h.audit.events]
        self.assertIn("delivery.queued", names)
        self.assertIn("delivery.attempt", names)
        self.assertIn("delivery.success", names)

    @inlineCallbacks
    def test_severalMessagesOneConnection(self):
        """
        Messages due together for one destination share one connection.
        """
        from gopherpost.relay.state import MessageState, StateStore

        mx1 = self.server("127.0.0.2")
        h = self.harness()
        store = StateStore(h.path)
        for n in range(6):
            envelope = yield h.spool.store(
                b"Subject: %d\r\n\r\nx\r\n" % n,
                "alice@gopherpost.test",
                [("bob%d@example.test" % n, False)],
            )
            store.save(MessageState.forEnvelope(envelope, h.clock.seconds()))
        queue = h.startQueue()
        self.assertEqual(queue.queueDepth(), 6)
        yield eventually(lambda: len(mx1.messages) == 6)
        self.assertEqual(mx1.connectionsMade, 1)

    @inlineCallbacks
    def test_nextMessageTakesTheConnectionUp(self):
        """
        With the connection cache the server uses, a message spooled after
        the previous one was delivered goes over the connection that one
        left open; stopping the queue says QUIT on it.
        """
        from gopherpost.relay.connectioncache import ConnectionCache

        log = EventLoggingObserver.createWithCleanup(cast(Any, self), globalLogPublisher)
        mx1 = self.server("127.0.0.2")
        h = self.harness()
        queue = h.startQueue(courier=h.courier(connectionCache=ConnectionCache(h.reactor)))
        first = yield h.spoolMessage(["bob@example.test"])
        yield eventually(lambda: h.state(first).recipients and h.state(first).done)
        second = yield h.spoolMessage(["carol@example.test"])
        yield eventually(lambda: h.state(second).recipients and h.state(second).done)
        self.assertEqual(
            [m.recipients for m in mx1.messages], [["bob@example.test"], ["carol@example.test"]]
        )
        self.assertEqual(mx1.connectionsMade, 1)
        lines = [
            formatEvent(e) for e in log if e["log_namespace"] == "gopherpost.relay.deliverylog"
        ]
        [firstLine] = [line for line in lines if "to=<bob@" in line]
        [secondLine] = [line for line in lines if "to=<carol@" in line]
        self.assertNotIn("conn_use", firstLine)
        self.assertIn(":%d, conn_use=2, delay=" % self.port, secondLine)
        [connection] = mx1.sessions
        yield queue.stopService()
        yield connection.lost
        self.assertEqual(mx1.commands[-1], b"QUIT")

    @inlineCallbacks
    def test_spooledTogetherOneConnection(self):
        """
        Messages spooled in the same reactor turn (one group commit) are
        read in one go and share one connection, and a message announced
        twice is queued once.
        """
        from twisted.internet.defer import gatherResults

        mx1 = self.server("127.0.0.2")
        h = self.harness()
        queue = h.startQueue()
        # Told by hand, all in one turn, not as each commit step finishes.
        h.spool.removeObserver(queue)
        envelopes = yield gatherResults(
            [
                h.spool.store(
                    b"Subject: %d\r\n\r\nx\r\n" % n,
                    "alice@gopherpost.test",
                    [("bob%d@example.test" % n, False)],
                )
                for n in range(4)
            ]
        )
        for envelope in envelopes + envelopes[:1]:
            queue.messageCommitted(envelope)
        yield eventually(lambda: len(mx1.messages) == 4)
        self.assertEqual(mx1.connectionsMade, 1)
        yield eventually(lambda: queue.queueDepth() == 0)
        h.clock.advance(10000)
        self.assertEqual(len(mx1.messages), 4)

    @inlineCallbacks
    def test_envelopeAtHandNotReadAgain(self):
        """
        An envelope handed over with the announcement (as the inbound side
        does in the same process) is used as it is, not read back from the
        spool.
        """
        mx1 = self.server("127.0.0.2")
        h = self.harness()
        queue = h.startQueue()
        envelope = yield h.spool.store(
            b"Subject: at hand\r\n\r\nx\r\n", "alice@gopherpost.test", [("bob@example.test", False)]
        )
        path = os.path.join(h.path, envelope.dateDirectory, envelope.queueId + ".envelope")
        with open(path, "wb") as f:
            f.write(b"not JSON")
        queue.messageCommitted(envelope)
        yield eventually(lambda: len(mx1.messages) == 1)
        self.assertEqual(mx1.messages[0].recipients, ["bob@example.test"])

    @inlineCallbacks
    def test_largeContentReadInThread(self):
        """
        A batch reads small messages on the reactor thread and leaves those
        past the inline budget to the thread pool; every message arrives
        whole, in its order, over one connection.
        """
        from twisted.internet.defer import gatherResults
        from twisted.internet.threads import deferToThreadPool

        from gopherpost.relay import content

        self.patch(content, "INLINE_READ_BUDGET", 200)
        mx1 = self.server("127.0.0.2")
        h = self.harness()
        hops = []

        def runInThread(f, *args):
            hops.append((f, args))
            threaded = cast(Any, reactor)
            return deferToThreadPool(threaded, threaded.getThreadPool(), f, *args)

        queue = h.startQueue(runInThread=runInThread)
        h.spool.removeObserver(queue)
        bodies = [b"small one", b"large " * 50, b"small two"]
        envelopes = yield gatherResults(
            [
                h.spool.store(
                    b"Subject: %d\r\n\r\n%s\r\n" % (n, body),
                    "alice@gopherpost.test",
                    [("bob%d@example.test" % n, False)],
                )
                for n, body in enumerate(bodies)
            ]
        )
        for envelope in envelopes:
            queue.messageCommitted(envelope)
        yield eventually(lambda: len(mx1.messages) == 3)
        self.assertEqual(mx1.connectionsMade, 1)
        received = sorted(mx1.messages, key=lambda m: m.recipients)
        for n, (message, body) in enumerate(zip(received, bodies)):
            self.assertEqual(message.data, b"Subject: %d\r\n\r\n%s\r\n" % (n, body))
        [(f, (paths,))] = hops
        self.assertEqual(f, content.readAll)
        self.assertEqual([os.path.basename(p).split("_")[0] for p in paths], [envelopes[1].queueId])

    @inlineCallbacks
    def test_failover(self):
        """
        When the best MX refuses connections, the next preference gets it.
        """
        mx2 = self.server("127.0.0.3")
        h = self.harness()
        h.startQueue()
        envelope = yield h.spoolMessage(["bob@example.test"])
        yield eventually(lambda: mx2.messages)
        yield eventually(lambda: h.state(envelope).recipients and h.state(envelope).done)

    @inlineCallbacks
    def test_failoverOn4xx(self):
        """
        A 4xx from the best MX sends the recipient to the next MX at once.
        """
        mx1 = self.server("127.0.0.2", replies={"MAIL": (451, "4.3.0 busy")})
        mx2 = self.server("127.0.0.3")
        h = self.harness()
        h.startQueue()
        yield h.spoolMessage(["bob@example.test"])
        yield eventually(lambda: mx2.messages)
        self.assertEqual(mx1.messages, [])

    @inlineCallbacks
    def test_implicitMX(self):
        """
        A domain without MX is delivered to its address (RFC 5321 5.1).
        """
        server = self.server("127.0.0.4")
        h = self.harness()
        h.startQueue()
        yield h.spoolMessage(["eve@implicit.test"])
        yield eventually(lambda: server.messages)

    @inlineCallbacks
    def test_smarthost(self):
        """
        With SMTP_RELAY_HOST every domain goes to the smarthost, without MX
        lookups, in one transaction per message.
        """
        smarthost = self.server("127.0.0.5")
        h = self.harness(relayHost=("127.0.0.5", self.port))
        h.startQueue()
        yield h.spoolMessage(["bob@example.test", "eve@nullmx.test", "x@nonexistent.test"])
        yield eventually(lambda: smarthost.messages)
        self.assertEqual(
            sorted(smarthost.messages[0].recipients),
            ["bob@example.test", "eve@nullmx.test", "x@nonexistent.test"],
        )
        self.assertEqual(
            [q for q in self.dns.authority.queries if q[0].endswith(b"example.test")], []
        )

    @inlineCallbacks
    def test_perRecipientReplies(self):
        """
        One recipient refused with 550 fails (and is bounced), the other is
        delivered.
        """
        mx1 = self.server(
            "127.0.0.2",
            replies={"RCPT": forRecipients({"nobody@example.test": (550, "5.1.1 No such user")})},
        )
        h = self.harness()
        h.startQueue()
        envelope = yield h.spoolMessage(["bob@example.test", "nobody@example.test"])
        yield eventually(
            lambda: h.state(envelope).recipients and h.state(envelope).done and h.bounces()
        )
        self.assertEqual(mx1.messages[0].recipients, ["bob@example.test"])
        statuses = {r.address: r.status for r in h.state(envelope).recipients}
        self.assertEqual(statuses, {"bob@example.test": DELIVERED, "nobody@example.test": FAILED})
        [bounce] = h.bounces()
        self.assertEqual([r.address for r in bounce.recipients], ["alice@gopherpost.test"])
        with open(h.spool.messagePath(bounce), "rb") as f:
            report = f.read()
        self.assertIn(b"multipart/report", report)
        self.assertIn(b"report-type=delivery-status", report)
        self.assertIn(b"Final-Recipient: rfc822; nobody@example.test", report)
        self.assertIn(b"5.1.1", report)
        self.assertIn(b"Subject: relay test", report)
        self.assertNotIn(b"Final-Recipient: rfc822; bob@example.test", report)


class RetryTests(RelayTestCase):
    """
    Temporary failures, the retry schedule, restarts and expiry.
    """

    @inlineCallbacks
    def test_retryAfter4xx(self):
        """
        A 451 defers the recipient by about SMTP_RETRY_INITIAL; when the clock
        gets there it is delivered.
        """
        self.dns.removeName("example.test")
        self.dns.addMX("example.test", 10, "mx1.example.test")
        mx1 = self.server("127.0.0.2", replies={"RCPT": firstTimes(1, (451, "4.2.1 try later"))})
        h = self.harness(retryInitial=60.0)
        h.startQueue()
        envelope = yield h.spoolMessage(["bob@example.test"])
        yield eventually(lambda: h.settled(envelope))
        [recipient] = h.state(envelope).recipients
        self.assertEqual(recipient.status, PENDING)
        self.assertIn("4.2.1", recipient.lastError)
        delay = recipient.nextAttempt - h.clock.seconds()
        self.assertTrue(45 <= delay <= 60, delay)
        self.assertEqual(mx1.messages, [])
        h.clock.advance(delay - 1)
        self.assertEqual(mx1.rcptCount, 1)
        h.clock.advance(1)
        yield eventually(
            lambda: mx1.messages and h.state(envelope).recipients and h.state(envelope).done
        )
        self.assertIn("delivery.deferral", [name for name, _ in h.audit.events])

    @inlineCallbacks
    def deferredThenStopped(self):
        """
        Spool a message whose first attempt gets a 421, then stop the queue.

        @return: (via Deferred) the harness, the receiving server and the
            message's envelope.
        """
        self.dns.removeName("example.test")
        self.dns.addMX("example.test", 10, "mx1.example.test")
        mx1 = self.server(
            "127.0.0.2", replies={"MAIL": firstTimes(1, (421, "4.3.2 shutting down"))}
        )
        h = self.harness()
        first = h.startQueue()
        envelope = yield h.spoolMessage(["bob@example.test"])
        yield eventually(lambda: h.settled(envelope))
        yield first.stopService()
        return h, mx1, envelope

    @inlineCallbacks
    def test_restartKeepsQueue(self):
        """
        A message deferred before a restart is found again and delivered by
        the next queue; a later restart sends nothing twice.
        """
        h, mx1, envelope = yield self.deferredThenStopped()
        second = h.startQueue()
        self.assertEqual(second.queueDepth(), 1)
        h.clock.advance(3840)
        yield eventually(
            lambda: mx1.messages and h.state(envelope).recipients and h.state(envelope).done
        )
        yield second.stopService()
        third = h.startQueue()
        self.assertEqual(third.queueDepth(), 0)
        h.clock.advance(10000)
        self.assertEqual(len(mx1.messages), 1)

    @inlineCallbacks
    def test_restartWithUnreadableState(self):
        """
        A state file a crash left unreadable does not stop the queue: the
        message starts again from its envelope and is delivered.
        """
        import os

        h, mx1, envelope = yield self.deferredThenStopped()
        path = os.path.join(h.path, envelope.dateDirectory, envelope.queueId + ".relay")
        with open(path, "wb") as f:
            f.write(b'{"queueId": "')
        second = h.startQueue()
        yield eventually(
            lambda: mx1.messages and h.state(envelope).recipients and h.state(envelope).done
        )
        self.assertEqual(len(mx1.messages), 1)
        yield second.stopService()
        self.flushLoggedErrors()

    @inlineCallbacks
    def test_lifetimeExpiry(self):
        """
        A recipient still deferred after SMTP_QUEUE_LIFETIME fails with
        5.4.7 and the sender gets a DSN.
        """
        self.dns.removeName("example.test")
        self.dns.addMX("example.test", 10, "mx1.example.test")
        self.server("127.0.0.2", replies={"RCPT": (450, "4.2.0 mailbox busy")})
        h = self.harness(queueLifetime=300.0, retryInitial=60.0, retryMax=120.0)
        h.startQueue()
        envelope = yield h.spoolMessage(["bob@example.test"])
        for attempt in range(1, 10):
            yield eventually(
                lambda attempt=attempt: (
                    h.settled(envelope, attempt)
                    or h.state(envelope).recipients
                    and h.state(envelope).done
                )
            )
            if h.state(envelope).done:
                break
            h.clock.advance(120)
        [recipient] = h.state(envelope).recipients
        self.assertEqual(recipient.status, FAILED)
        self.assertTrue(recipient.lastError.startswith("5.4.7"), recipient.lastError)
        yield eventually(lambda: h.bounces())

    @inlineCallbacks
    def test_nullMX(self):
        """
        A null MX fails the recipient at once, with a DSN.
        """
        h = self.harness()
        h.startQueue()
        envelope = yield h.spoolMessage(["x@nullmx.test"])
        yield eventually(
            lambda: h.state(envelope).recipients and h.state(envelope).done and h.bounces()
        )
        self.assertEqual(h.state(envelope).recipients[0].status, FAILED)

    @inlineCallbacks
    def test_nxdomain(self):
        """
        A domain that does not exist fails at once.
        """
        h = self.harness()
        h.startQueue()
        envelope = yield h.spoolMessage(["x@nonexistent.test"])
        yield eventually(lambda: h.state(envelope).recipients and h.state(envelope).done)
        self.assertEqual(h.state(envelope).recipients[0].status, FAILED)

    @inlineCallbacks
    def test_noBounceForNullSender(self):
        """
        A message from C{<>} that fails is not bounced.
        """
        h = self.harness()
        h.startQueue()
        envelope = yield h.spoolMessage(["x@nullmx.test"], sender="")
        yield eventually(lambda: h.state(envelope).recipients and h.state(envelope).done)
        yield eventually(lambda: h.queue is not None and not h.queue.busy)
        self.assertEqual([e for e in h.bounces() if e.queueId != envelope.queueId], [])

    @inlineCallbacks
    def test_vanishedContentLeavesTheQueue(self):
        """
        A message whose content was deleted from the spool by hand leaves
        the queue with one warning (queue depth corrected), not an error
        per retry.
        """
        self.server("127.0.0.2")
        h = self.harness(retryInitial=60.0)
        queue = h.startQueue()
        envelope = yield h.spool.store(
            b"Subject: x\r\n\r\ny\r\n", "alice@gopherpost.test", [("bob@example.test", False)]
        )
        os.unlink(h.spool.messagePath(envelope))
        warnings = EventLoggingObserver.createWithCleanup(self, globalLogPublisher)
        queue.messageCommitted(envelope)

        def said():
            return [
                formatEvent(e)
                for e in warnings
                if e["log_level"] == LogLevel.warn and e.get("queueId") == envelope.queueId
            ]

        yield eventually(lambda: said() and not queue.busy)
        self.assertEqual(queue.queueDepth(), 0)
        h.clock.advance(100000)
        self.assertEqual(
            said(),
            [
                f"{envelope.queueId}: removed from the relay queue: its content is gone from "
                "the spool (deleted by hand?)"
            ],
        )
        self.assertEqual(self.flushLoggedErrors(), [])

    @inlineCallbacks
    def test_quitFailureIsSuccess(self):
        """
        A server that drops the connection after accepting the message (no
        QUIT reply) got it: it is not sent again.
        """
        mx1 = self.server("127.0.0.2", dropAfterDataEnd=True)
        h = self.harness()
        h.startQueue()
        envelope = yield h.spoolMessage(["bob@example.test"])
        yield eventually(lambda: h.state(envelope).recipients and h.state(envelope).done)
        h.clock.advance(10000)
        self.assertEqual(len(mx1.messages), 1)
        self.assertEqual(h.state(envelope).recipients[0].status, DELIVERED)


class TLSTests(RelayTestCase):
    """
    Outbound STARTTLS policies against real TLS servers.
    """

    def setUp(self) -> None:
        RelayTestCase.setUp(self)
        self.dns.removeName("example.test")
        self.dns.addMX("example.test", 10, "mx1.example.test")
        self.pki = makeTestPKI(self.mktemp(), "mx1.example.test")

    def queueFor(self, h, policy):
        from gopherpost.tls import clientContextFor

        return h.startQueue(
            contextFactoryFor=lambda p, host: clientContextFor(
                p, host, trustRoot=self.pki.ca.trustRoot()
            )
        )

    @inlineCallbacks
    def test_verifiedTLS(self):
        """
        With C{verify}, a certificate from a trusted CA for the MX name is
        accepted and the message goes over TLS.
        """
        mx1 = self.server("127.0.0.2", certificate=self.pki.good)
        h = self.harness(outboundTLS="verify")
        self.queueFor(h, "verify")
        yield h.spoolMessage(["bob@example.test"])
        yield eventually(lambda: mx1.messages)
        self.assertTrue(mx1.messages[0].tls)

    @inlineCallbacks
    def test_wrongNameDefers(self):
        """
        With C{verify}, a certificate for another name is a temporary
        failure: nothing is sent, in clear or otherwise.
        """
        mx1 = self.server("127.0.0.2", certificate=self.pki.wrongName)
        h = self.harness(outboundTLS="verify")
        self.queueFor(h, "verify")
        envelope = yield h.spoolMessage(["bob@example.test"])
        yield eventually(lambda: h.settled(envelope))
        self.assertEqual(mx1.messages, [])
        self.assertEqual(h.state(envelope).recipients[0].status, PENDING)

    @inlineCallbacks
    def test_requireWithoutTLS(self):
        """
        With C{require}, a server that offers no STARTTLS gets nothing.
        """
        mx1 = self.server("127.0.0.2")
        h = self.harness(outboundTLS="require")
        self.queueFor(h, "require")
        envelope = yield h.spoolMessage(["bob@example.test"])
        yield eventually(lambda: h.settled(envelope))
        self.assertEqual(mx1.messages, [])


class DKIMTests(RelayTestCase):
    """
    Outbound DKIM signatures.
    """

    @inlineCallbacks
    def test_signedOnceAndVerifies(self):
        """
        A relayed message carries one DKIM signature that dkimpy verifies
        against the key published in the test zone; retries reuse it.
        """
        import dkim as dkimpy

        from gopherpost import dkim

        key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        pem = key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.TraditionalOpenSSL,
            serialization.NoEncryption(),
        ).decode()
        self.dns.removeName("example.test")
        self.dns.addMX("example.test", 10, "mx1.example.test")
        mx1 = self.server("127.0.0.2", replies={"MAIL": firstTimes(1, (451, "4.3.0 later"))})
        h = self.harness(dkimSelector="sel1", dkimPrivateKey=pem)
        signer = dkim.loadSigner(h.settings)
        assert signer is not None
        self.dns.addTXT("sel1._domainkey.gopherpost.test", signer.publicKeyRecord())
        h.startQueue(signer=signer)
        envelope = yield h.spoolMessage(["bob@example.test"])
        yield eventually(lambda: h.settled(envelope))
        header = h.state(envelope).dkimHeader
        self.assertTrue(header.startswith("DKIM-Signature:"))
        h.clock.advance(60)
        yield eventually(lambda: mx1.messages)
        data = mx1.messages[0].data
        self.assertEqual(data.count(b"DKIM-Signature:"), 1)

        def dnsfunc(name, timeout=5):
            import dns.resolver

            resolver = dns.resolver.Resolver(configure=False)
            resolver.nameservers = [self.dns.host]
            resolver.port = cast(int, self.dns.port)
            answer = resolver.resolve(name.decode().rstrip("."), "TXT")
            return b"".join(b"".join(r.strings) for r in answer)

        verified = yield deferToThread(dkimpy.verify, data, dnsfunc=dnsfunc)
        self.assertTrue(verified)
