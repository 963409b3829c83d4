"""
Tests for L{gopherpost.inbound.session} on its own, without a protocol:
replies as values, the context and transaction it keeps, and its actions.
"""

from __future__ import annotations

from typing import Any

from twisted.internet.defer import Deferred, succeed
from twisted.internet.task import Clock
from twisted.trial.unittest import SynchronousTestCase
from zope.interface import implementer

from gopherpost.inbound.context import SessionContext, TLSInfo
from gopherpost.inbound.interfaces import IMessageSink
from gopherpost.inbound.policies import RelayPermissionPolicy
from gopherpost.inbound.policy import PolicyChain
from gopherpost.inbound.replies import Action, Reply, responseReplies
from gopherpost.inbound.roles import SUBMISSION
from gopherpost.inbound.session import HARD_ERROR_LIMIT, Session, SessionSettings
from tests.support.inbound import RecordingAudit


class Message:
    """
    An incoming message that keeps what it is given.
    """

    queueId = "QUEUEID"
    error = None
    headers: list = []

    def __init__(self) -> None:
        self.content = b""
        self.aborted = False

    @property
    def size(self) -> int:
        return len(self.content)

    def write(self, data: bytes) -> None:
        self.content += data

    def commit(self) -> Any:
        return succeed(type("Envelope", (), {"queueId": self.queueId})())

    def abort(self) -> None:
        self.aborted = True


@implementer(IMessageSink)
class Sink:
    """
    An L{IMessageSink} that keeps its messages and transactions.
    """

    def __init__(self) -> None:
        self.messages: list[tuple[Any, Message]] = []

    def newMessage(self, context: SessionContext, transaction: Any, now: float) -> Message:
        message = Message()
        self.messages.append((transaction, message))
        return message


def session(**kwargs: Any) -> tuple[Session, Sink]:
    sink = Sink()
    context = SessionContext("192.0.2.1", 4000, kwargs.pop("role", SUBMISSION), "mx.test")
    chain = PolicyChain([RelayPermissionPolicy(None, lambda d: d == "mx.test")])
    s = Session(
        context,
        chain,
        sink,
        SessionSettings("mx.test", "hello", 1000),
        RecordingAudit(),
        Clock(),
        **kwargs,
    )
    return s, sink


def codes(response: Any) -> list[int]:
    return [r.code for r in responseReplies(response)]


def one(response: Any) -> Reply:
    """
    The response, which must be a single reply given at once.
    """
    assert isinstance(response, Reply), response
    return response


class SessionTests(SynchronousTestCase):
    """
    The state machine, reply by reply.
    """

    def test_transaction(self) -> None:
        """
        Banner, EHLO, MAIL, RCPT, DATA (with the DATA action), content, the
        end of data: each a reply value; the transaction keeps what was
        said.
        """
        s, sink = session(canStartTLS=True)
        self.assertEqual(s.start(), Reply(220, "mx.test ESMTP hello"))
        ehlo = one(s.lineReceived(b"EHLO client.test"))
        self.assertEqual(
            ehlo.text.split("\n"),
            [
                "mx.test",
                "PIPELINING",
                "SIZE 1000",
                "8BITMIME",
                "ENHANCEDSTATUSCODES",
                "STARTTLS",
                "HELP",
            ],
        )
        self.assertEqual(s.context.helo, "client.test")
        self.assertTrue(s.context.extended)
        self.assertEqual(s.lineReceived(b"MAIL FROM:<a@mx.test> SIZE=10"), Reply(250, "2.1.0 Ok"))
        assert s.transaction is not None
        self.assertEqual(s.transaction.declaredSize, 10)
        self.assertEqual(codes(s.lineReceived(b"RCPT TO:<b@mx.test>")), [250])
        data = one(s.lineReceived(b"DATA"))
        self.assertEqual((data.code, data.action), (354, Action.DATA))
        self.assertTrue(s.inData)
        self.assertTrue(s.bodyReceived(b"Subject: x\r\n\r\nhi\r\n"))
        ended = s.endOfData()
        assert isinstance(ended, Deferred)
        done = self.successResultOf(ended)
        self.assertEqual(done, Reply(250, "2.0.0 Ok: queued as QUEUEID"))
        self.assertFalse(s.inData)
        self.assertIsNone(s.transaction)
        [(transaction, message)] = sink.messages
        self.assertEqual([r.address for r in transaction.recipients], ["b@mx.test"])
        self.assertEqual(message.content, b"Subject: x\r\n\r\nhi\r\n")

    def test_tooBig(self) -> None:
        """
        Content past the size limit stops being delivered; the end of data
        answers 552 and the message is thrown away.
        """
        s, sink = session()
        s.start()
        for line in (b"EHLO c.test", b"MAIL FROM:<a@mx.test>", b"RCPT TO:<b@mx.test>", b"DATA"):
            s.lineReceived(line)
        self.assertTrue(s.bodyReceived(b"x" * 999))
        self.assertFalse(s.bodyReceived(b"x" * 2))
        self.assertEqual(codes(s.endOfData()), [552])
        self.assertTrue(sink.messages[0][1].aborted)

    def test_startTLS(self) -> None:
        """
        STARTTLS forgets the greeting and transaction and asks for TLS; once
        TLS is up it is no longer offered and the context says so.
        """
        s, _ = session(canStartTLS=True)
        s.start()
        s.lineReceived(b"EHLO c.test")
        s.lineReceived(b"MAIL FROM:<a@mx.test>")
        reply = one(s.lineReceived(b"STARTTLS"))
        self.assertEqual((reply.code, reply.action), (220, Action.STARTTLS))
        self.assertIsNone(s.context.helo)
        self.assertIsNone(s.transaction)
        s.tlsEstablished(TLSInfo("TLSv1.3", "TLS_AES_128_GCM_SHA256"))
        self.assertNotIn("STARTTLS", one(s.lineReceived(b"EHLO c.test")).text)
        self.assertEqual(s.context.protocolName, "ESMTPS")
        self.assertEqual(codes(s.lineReceived(b"STARTTLS")), [503])

    def test_errorLimit(self) -> None:
        """
        The error that reaches the limit is followed by 421 and the close.
        """
        s, _ = session()
        s.start()
        for _ in range(HARD_ERROR_LIMIT - 1):
            self.assertEqual(codes(s.lineReceived(b"BOGUS")), [502])
        response = s.lineReceived(b"BOGUS")
        self.assertEqual(codes(response), [502, 421])
        assert isinstance(response, tuple)
        self.assertIs(response[-1].action, Action.CLOSE)

    def test_quit(self) -> None:
        """
        QUIT is 221 and the close.
        """
        s, _ = session()
        s.start()
        reply = one(s.lineReceived(b"quit"))
        self.assertEqual((reply.code, reply.action), (221, Action.CLOSE))

    def test_pendingInputRules(self) -> None:
        """
        For a client that may not relay, input waiting after EHLO is a
        synchronization error; after MAIL (which may be pipelined) it is
        not.
        """
        pending = [False]
        s, _ = session(hasPendingInput=lambda: pending[0])
        s.start()
        s.context.relayClient = False
        s.lineReceived(b"EHLO c.test")
        pending[0] = True
        self.assertEqual(codes(s.lineReceived(b"MAIL FROM:<a@mx.test>")), [250])
        self.assertEqual(codes(s.lineReceived(b"RCPT TO:<b@mx.test>")), [250])
        self.assertEqual(codes(s.lineReceived(b"DATA")), [554, 421])
