"""
Tests for the milter client (L{gopherpost.filters.milter.protocol},
L{gopherpost.filters.milter.conversation}, L{gopherpost.filters.milter.client}):
whole dialogues over a StringTransport, with the replies real milters sent
(see L{tests.test_milter_codec}) and hand-encoded ones for every
modification action.
"""

from __future__ import annotations

import struct
from typing import Any

from twisted.internet.defer import CancelledError, Deferred, TimeoutError, succeed
from twisted.internet.error import ConnectionLost
from twisted.internet.interfaces import IStreamClientEndpoint
from twisted.internet.task import Clock
from twisted.internet.testing import StringTransport
from twisted.python.failure import Failure
from twisted.trial.unittest import SynchronousTestCase
from zope.interface import implementer

from gopherpost.config import MilterSpec
from gopherpost.filters.envelope import FilterMessage, SessionFacts
from gopherpost.filters.failure import FilterProtocolError
from gopherpost.filters.headers import HeaderSection
from gopherpost.filters.milter import codec
from gopherpost.filters.milter.client import MilterClient
from gopherpost.filters.milter.codec import Action, Command, Step
from gopherpost.filters.milter.conversation import MilterConversation, negotiate
from gopherpost.filters.milter.protocol import MilterProtocol
from gopherpost.filters.verdict import (
    AddHeader,
    AddRecipient,
    ChangeHeader,
    ChangeSender,
    DeleteHeader,
    DeleteRecipient,
    Disposition,
    InsertHeader,
    ReplaceBody,
    Verdict,
)
from tests.test_milter_codec import (
    CLAMAV_INFECTED,
    CONNECT,
    INSHEADER_OPENDKIM,
    OPTNEG,
    OPTNEG_CLAMAV,
    OPTNEG_OPENDKIM,
    OPTNEG_RSPAMD,
    REPLYCODE_RSPAMD,
)

CONTINUE = b"\x00\x00\x00\x01c"
ACCEPT = b"\x00\x00\x00\x01a"
REJECT = b"\x00\x00\x00\x01r"
TEMPFAIL = b"\x00\x00\x00\x01t"
DISCARD = b"\x00\x00\x00\x01d"
SKIP = b"\x00\x00\x00\x01s"
PROGRESS = b"\x00\x00\x00\x01p"

FACTS = SessionFacts("127.0.0.1", 4000, serverName="mx.example.test", helo="client.example.test")

HEADERS = (
    b"From: a@example.test\r\n"
    b"To: b@example.test\r\n"
    b"Subject: x\r\n"
    b"Date: Tue, 1 Dec 2026 12:00:00 +0000\r\n"
    b"Message-ID: <m1@example.test>\r\n"
)


def optnegReply(actions: int, steps: int) -> bytes:
    return codec.packet(b"O", struct.pack("!III", 6, actions, steps))


def working(body: bytes = b"hello\r\n") -> FilterMessage:
    return FilterMessage(
        "Q123", HeaderSection(HEADERS), body, "a@example.test", [("b@example.test", "")]
    )


class Dialogue:
    """
    A negotiated conversation over a StringTransport.
    """

    def __init__(self, test: SynchronousTestCase, answer: bytes) -> None:
        self.test = test
        self.transport = StringTransport()
        self.protocol = MilterProtocol()
        self.protocol.makeConnection(self.transport)
        d = negotiate(self.protocol)
        test.assertEqual(self.sent(), OPTNEG)
        self.protocol.dataReceived(answer)
        self.conversation = MilterConversation(self.protocol, test.successResultOf(d), "test")

    def sent(self) -> bytes:
        value = self.transport.value()
        self.transport.clear()
        return value

    def reply(self, d: Deferred[Any], data: bytes) -> Any:
        """
        Forget what was sent, answer C{data}, return C{d}'s result.
        """
        self.transport.clear()
        self.protocol.dataReceived(data)
        return self.test.successResultOf(d)


class NegotiateTests(SynchronousTestCase):
    """
    Option negotiation.
    """

    def test_stepsLimitedToOffered(self) -> None:
        """
        Steps we did not offer (RCPT_REJ, larger chunks) are dropped.
        """
        dialogue = Dialogue(self, optnegReply(0x1FF, Step.RCPT_REJ | Step.MDS_1M | Step.NOHELO))
        self.assertEqual(dialogue.conversation.negotiation.steps, Step.NOHELO)

    def test_badVersion(self) -> None:
        protocol = MilterProtocol()
        protocol.makeConnection(StringTransport())
        d = negotiate(protocol)
        protocol.dataReceived(codec.packet(b"O", struct.pack("!III", 7, 0, 0)))
        self.failureResultOf(d, FilterProtocolError)

    def test_notANegotiation(self) -> None:
        protocol = MilterProtocol()
        protocol.makeConnection(StringTransport())
        d = negotiate(protocol)
        protocol.dataReceived(CONTINUE)
        self.failureResultOf(d, FilterProtocolError)


class OpenDKIMDialogueTests(SynchronousTestCase):
    """
    The dialogue recorded with OpenDKIM: no HELO, no DATA, header values
    with their leading space, the signature inserted at the top.
    """

    def test_dialogue(self) -> None:
        dialogue = Dialogue(self, OPTNEG_OPENDKIM)
        conversation = dialogue.conversation
        d = conversation.connect(FACTS)
        self.assertEqual(dialogue.sent(), CONNECT)
        self.assertEqual(dialogue.reply(d, CONTINUE), Verdict.accept())

        d = conversation.helo(FACTS)
        self.assertEqual(dialogue.sent(), b"")
        self.assertEqual(self.successResultOf(d), Verdict.accept())

        d = conversation.mail(FACTS, "a@example.test")
        self.assertEqual(
            dialogue.sent(),
            b"\x00\x00\x006DM{mail_addr}\x00a@example.test\x00{mail_host}\x00example.test\x00"
            b"\x00\x00\x00\x12M<a@example.test>\x00",
        )
        dialogue.reply(d, CONTINUE)
        d = conversation.rcpt(FACTS, "a@example.test", "b@example.test")
        self.assertEqual(
            dialogue.sent(),
            b"\x00\x00\x006DR{rcpt_addr}\x00b@example.test\x00{rcpt_host}\x00example.test\x00"
            b"\x00\x00\x00\x12R<b@example.test>\x00",
        )
        dialogue.reply(d, CONTINUE)
        d = conversation.data(FACTS, "a@example.test")
        self.assertEqual(dialogue.sent(), b"")

        d = conversation.message(FACTS, working())
        for expected in [
            b"\x00\x00\x00\x16LFrom\x00 a@example.test\x00",
            b"\x00\x00\x00\x14LTo\x00 b@example.test\x00",
            b"\x00\x00\x00\x0cLSubject\x00 x\x00",
            b"\x00\x00\x00&LDate\x00 Tue, 1 Dec 2026 12:00:00 +0000\x00",
            b"\x00\x00\x00\x1fLMessage-ID\x00 <m1@example.test>\x00",
            b"\x00\x00\x00\tDNi\x00Q123\x00\x00\x00\x00\x01N",
            b"\x00\x00\x00\x08Bhello\r\n",
        ]:
            self.assertEqual(dialogue.sent(), expected)
            self.assertNoResult(d)
            dialogue.protocol.dataReceived(CONTINUE)
        self.assertEqual(dialogue.sent(), b"\x00\x00\x00\tDEi\x00Q123\x00\x00\x00\x00\x01E")
        verdict = dialogue.reply(d, INSHEADER_OPENDKIM + ACCEPT)
        self.assertEqual(verdict.disposition, Disposition.ACCEPT)
        (signature,) = verdict.modifications
        self.assertIsInstance(signature, InsertHeader)
        self.assertEqual(signature.name, b"DKIM-Signature")

        conversation.quit()
        self.assertEqual(dialogue.sent(), b"\x00\x00\x00\x01Q")
        self.assertTrue(dialogue.transport.disconnecting)


class NoReplyStepsTests(SynchronousTestCase):
    """
    rspamd answers only the end of the message: every earlier stage goes
    out without waiting.
    """

    def test_dialogue(self) -> None:
        dialogue = Dialogue(self, OPTNEG_RSPAMD)
        conversation = dialogue.conversation
        for d in [
            conversation.connect(FACTS),
            conversation.helo(FACTS),
            conversation.mail(FACTS, "a@example.test"),
            conversation.rcpt(FACTS, "a@example.test", "b@example.test"),
            conversation.data(FACTS, "a@example.test"),
        ]:
            self.assertEqual(self.successResultOf(d), Verdict.accept())
        sent = dialogue.sent()
        self.assertTrue(sent.startswith(CONNECT))
        self.assertIn(b"\x00\x00\x00\x15Hclient.example.test\x00", sent)
        self.assertTrue(sent.endswith(b"\x00\x00\x00\x01T"))
        d = conversation.message(FACTS, working())
        sent = dialogue.sent()
        # Header values without their leading space (no HDR_LEADSPC).
        self.assertIn(b"\x00\x00\x00\x15LFrom\x00a@example.test\x00", sent)
        self.assertTrue(sent.endswith(b"\x00\x00\x00\x01E"))
        self.assertEqual(
            dialogue.reply(d, REPLYCODE_RSPAMD), Verdict.reject(554, "5.7.1 Gtube pattern")
        )


class ModificationTests(SynchronousTestCase):
    """
    Every end-of-message action.
    """

    def everything(self) -> Dialogue:
        dialogue = Dialogue(self, optnegReply(0x1FF, Step.NR_HDR | Step.NR_BODY | Step.NR_EOH))
        conversation = dialogue.conversation
        dialogue.reply(conversation.connect(FACTS), CONTINUE)
        dialogue.reply(conversation.mail(FACTS, "a@example.test"), CONTINUE)
        return dialogue

    def test_everyAction(self) -> None:
        """
        Add, insert, change and delete header fields, replace the body (in
        two pieces), add recipients (with and without parameters), delete
        one, change the sender, quarantine: all in the verdict, in order.
        """
        dialogue = self.everything()
        d = dialogue.conversation.message(FACTS, working())
        dialogue.sent()
        replies = [
            codec.packet(b"h", b"X-Added\x00yes\x00"),
            codec.packet(b"i", b"\x00\x00\x00\x01X-Inserted\x00top\x00"),
            codec.packet(b"m", b"\x00\x00\x00\x01Subject\x00[tagged] x\x00"),
            codec.packet(b"m", b"\x00\x00\x00\x01Date\x00\x00"),
            codec.packet(b"b", b"new body\r\n"),
            PROGRESS,
            codec.packet(b"b", b"second line\r\n"),
            codec.packet(b"+", b"<c@example.test>\x00"),
            codec.packet(b"2", b"<d@example.test>\x00NOTIFY=NEVER\x00"),
            codec.packet(b"-", b"<b@example.test>\x00"),
            codec.packet(b"e", b"<bounce@example.test>\x00SIZE=99\x00"),
            codec.packet(b"q", b"held for review\x00"),
            CONTINUE,
        ]
        verdict = dialogue.reply(d, b"".join(replies))
        self.assertEqual(verdict.disposition, Disposition.ACCEPT)
        self.assertEqual(verdict.quarantine, "held for review")
        self.assertEqual(verdict.result, "quarantine")
        self.assertEqual(
            list(verdict.modifications),
            [
                AddHeader(b"X-Added", b"yes"),
                InsertHeader(1, b"X-Inserted", b"top"),
                ChangeHeader(b"Subject", 1, b"[tagged] x"),
                DeleteHeader(b"Date", 1),
                AddRecipient("<c@example.test>"),
                AddRecipient("<d@example.test>", "NOTIFY=NEVER"),
                DeleteRecipient("<b@example.test>"),
                ChangeSender("<bounce@example.test>", "SIZE=99"),
                ReplaceBody(b"new body\r\nsecond line\r\n"),
            ],
        )

    def test_refusalDropsModifications(self) -> None:
        """
        recorded: clamav-milter adds its fields, then rejects: the fields
        are not made (nothing half-filtered).
        """
        dialogue = Dialogue(self, OPTNEG_CLAMAV)
        conversation = dialogue.conversation
        dialogue.reply(conversation.connect(FACTS), CONTINUE)
        dialogue.reply(conversation.mail(FACTS, "a@example.test"), CONTINUE)
        d = conversation.message(FACTS, working(b""))
        for _ in range(5):
            dialogue.protocol.dataReceived(CONTINUE)
        verdict = dialogue.reply(d, CLAMAV_INFECTED)
        self.assertEqual(verdict, Verdict.reject(550, "5.7.1 Command rejected"))
        self.assertEqual(verdict.modifications, ())

    def test_notNegotiated(self) -> None:
        """
        clamav-milter may add header fields but not recipients: an
        SMFIR_ADDRCPT from it is a protocol error.
        """
        dialogue = Dialogue(self, OPTNEG_CLAMAV)
        conversation = dialogue.conversation
        dialogue.reply(conversation.connect(FACTS), CONTINUE)
        d = conversation.message(FACTS, working(b""))
        for _ in range(5):
            dialogue.protocol.dataReceived(CONTINUE)
        dialogue.protocol.dataReceived(codec.packet(b"+", b"<c@example.test>\x00") + ACCEPT)
        self.failureResultOf(d, FilterProtocolError)

    def test_modificationBeforeTheEnd(self) -> None:
        """
        A modification is only allowed at the end of the message.
        """
        dialogue = self.everything()
        d = dialogue.conversation.rcpt(FACTS, "a@example.test", "b@example.test")
        dialogue.protocol.dataReceived(codec.packet(b"h", b"X-A\x00b\x00") + CONTINUE)
        self.failureResultOf(d, FilterProtocolError)


class ReplyTests(SynchronousTestCase):
    """
    What each reply means at each stage.
    """

    def started(self, steps: int = 0) -> Dialogue:
        dialogue = Dialogue(self, optnegReply(0x1FF, steps))
        dialogue.reply(dialogue.conversation.connect(FACTS), CONTINUE)
        return dialogue

    def test_rejectAtConnect(self) -> None:
        dialogue = Dialogue(self, OPTNEG_CLAMAV)
        verdict = dialogue.reply(dialogue.conversation.connect(FACTS), REJECT)
        self.assertEqual(verdict, Verdict.reject(554, "5.7.1 Service unavailable"))

    def test_rejectAndTempfail(self) -> None:
        dialogue = self.started()
        conversation = dialogue.conversation
        verdict = dialogue.reply(conversation.mail(FACTS, "a@example.test"), TEMPFAIL)
        self.assertEqual(
            verdict, Verdict.tempfail(451, "4.7.1 Service unavailable - try again later")
        )
        verdict = dialogue.reply(conversation.mail(FACTS, "a@example.test"), CONTINUE)
        verdict = dialogue.reply(
            conversation.rcpt(FACTS, "a@example.test", "x@example.test"), REJECT
        )
        self.assertEqual(verdict, Verdict.reject(550, "5.7.1 Command rejected"))
        # The transaction goes on: the next recipient is asked about.
        d = conversation.rcpt(FACTS, "a@example.test", "b@example.test")
        self.assertIn(b"<b@example.test>", dialogue.sent())
        self.assertEqual(dialogue.reply(d, CONTINUE), Verdict.accept())

    def test_replyCodes(self) -> None:
        """
        A custom reply gets an enhanced status code when it has none; a 421
        is kept (the session closes after it).
        """
        dialogue = self.started()
        conversation = dialogue.conversation
        verdict = dialogue.reply(
            conversation.mail(FACTS, "a@example.test"), codec.packet(b"y", b"550 go away\x00")
        )
        self.assertEqual(verdict, Verdict.reject(550, "5.7.1 go away"))
        verdict = dialogue.reply(
            conversation.mail(FACTS, "a@example.test"),
            codec.packet(b"y", b"421 4.7.0 closing\x00"),
        )
        self.assertEqual(verdict, Verdict.tempfail(421, "4.7.0 closing"))
        verdict = dialogue.reply(
            conversation.mail(FACTS, "a@example.test"),
            codec.packet(b"y", b"452-4.3.1 full\r\n452 4.3.1 try later\x00"),
        )
        self.assertEqual(verdict, Verdict.tempfail(452, "4.3.1 full\n4.3.1 try later"))

    def test_acceptAtConnectEndsSession(self) -> None:
        """
        C{accept} at connect: the milter hears nothing more.
        """
        dialogue = Dialogue(self, optnegReply(0x1FF, 0))
        conversation = dialogue.conversation
        dialogue.reply(conversation.connect(FACTS), ACCEPT)
        self.assertTrue(conversation.sessionDone)
        for d in [
            conversation.helo(FACTS),
            conversation.mail(FACTS, "a@example.test"),
            conversation.rcpt(FACTS, "a@example.test", "b@example.test"),
            conversation.data(FACTS, "a@example.test"),
            conversation.message(FACTS, working()),
        ]:
            self.assertEqual(self.successResultOf(d), Verdict.accept())
        self.assertEqual(dialogue.sent(), b"")

    def test_acceptAtMailEndsMessage(self) -> None:
        """
        C{accept} at MAIL: nothing more about this message; the next one
        starts with C{SMFIC_ABORT}.
        """
        dialogue = self.started()
        conversation = dialogue.conversation
        dialogue.reply(conversation.mail(FACTS, "a@example.test"), ACCEPT)
        for d in [
            conversation.rcpt(FACTS, "a@example.test", "b@example.test"),
            conversation.data(FACTS, "a@example.test"),
            conversation.message(FACTS, working()),
        ]:
            self.assertEqual(self.successResultOf(d), Verdict.accept())
        self.assertEqual(dialogue.sent(), b"")
        d = conversation.mail(FACTS, "c@example.test")
        sent = dialogue.sent()
        self.assertTrue(sent.startswith(b"\x00\x00\x00\x01A"))
        self.assertIn(b"M<c@example.test>", sent)
        self.assertEqual(dialogue.reply(d, CONTINUE), Verdict.accept())

    def test_abortBeforeHelo(self) -> None:
        """
        HELO in the middle of a transaction aborts it first.
        """
        dialogue = self.started()
        conversation = dialogue.conversation
        dialogue.reply(conversation.mail(FACTS, "a@example.test"), CONTINUE)
        d = conversation.helo(FACTS)
        self.assertTrue(dialogue.sent().startswith(b"\x00\x00\x00\x01A\x00\x00\x00\x15H"))
        dialogue.reply(d, CONTINUE)
        conversation.abort()
        self.assertEqual(dialogue.sent(), b"")

    def test_abortAfterRefusedMessage(self) -> None:
        """
        A message refused in its header section is aborted before the next
        transaction; the rest of it is not sent.
        """
        dialogue = self.started()
        conversation = dialogue.conversation
        dialogue.reply(conversation.mail(FACTS, "a@example.test"), CONTINUE)
        d = conversation.message(FACTS, working())
        dialogue.sent()
        self.assertEqual(dialogue.reply(d, REJECT), Verdict.reject())
        self.assertEqual(dialogue.sent(), b"")
        conversation.abort()
        self.assertEqual(dialogue.sent(), b"\x00\x00\x00\x01A")

    def test_discard(self) -> None:
        """
        C{discard} at RCPT throws the whole message away.
        """
        dialogue = self.started()
        conversation = dialogue.conversation
        dialogue.reply(conversation.mail(FACTS, "a@example.test"), CONTINUE)
        verdict = dialogue.reply(
            conversation.rcpt(FACTS, "a@example.test", "b@example.test"), DISCARD
        )
        self.assertEqual(verdict.disposition, Disposition.DISCARD)
        self.assertTrue(conversation.messageDone)

    def test_skipBody(self) -> None:
        """
        C{skip} during the body: no more chunks, straight to the end.
        """
        dialogue = self.started(Step.SKIP | Step.NOHDRS | Step.NOEOH)
        conversation = dialogue.conversation
        dialogue.reply(conversation.mail(FACTS, "a@example.test"), CONTINUE)
        d = conversation.message(FACTS, working(b"x" * (codec.BODY_CHUNK + 10)))
        first = dialogue.sent()
        self.assertEqual(len(first), 5 + codec.BODY_CHUNK)
        dialogue.protocol.dataReceived(SKIP)
        self.assertTrue(dialogue.sent().endswith(b"\x00\x00\x00\x01E"))
        self.assertEqual(dialogue.reply(d, ACCEPT), Verdict.accept())

    def test_skipNotNegotiated(self) -> None:
        dialogue = self.started(Step.NOHDRS | Step.NOEOH)
        conversation = dialogue.conversation
        d = conversation.message(FACTS, working())
        dialogue.protocol.dataReceived(SKIP)
        self.failureResultOf(d, FilterProtocolError)

    def test_shutdown(self) -> None:
        dialogue = self.started()
        d = dialogue.conversation.mail(FACTS, "a@example.test")
        dialogue.protocol.dataReceived(b"\x00\x00\x00\x014")
        self.failureResultOf(d, FilterProtocolError)

    def test_symlist(self) -> None:
        """
        A milter that names its macros gets those and no others.
        """
        answer = codec.packet(
            b"O",
            struct.pack("!III", 6, Action.SETSYMLIST, 0)
            + struct.pack("!I", 0)
            + b"{client_addr} {if_name}\x00",
        )
        dialogue = Dialogue(self, answer)
        dialogue.conversation.connect(FACTS)
        sent = dialogue.sent()
        self.assertTrue(
            sent.startswith(codec.macros(Command.CONNECT, [(b"{client_addr}", b"127.0.0.1")]))
        )


class FailureTests(SynchronousTestCase):
    """
    A broken conversation fails for good.
    """

    def test_unsolicited(self) -> None:
        dialogue = Dialogue(self, OPTNEG_CLAMAV)
        dialogue.protocol.dataReceived(CONTINUE)
        self.assertTrue(dialogue.protocol.failed)
        self.failureResultOf(dialogue.conversation.connect(FACTS), FilterProtocolError)

    def test_lostMidConversation(self) -> None:
        dialogue = Dialogue(self, OPTNEG_CLAMAV)
        d = dialogue.conversation.connect(FACTS)
        dialogue.protocol.connectionLost(Failure(ConnectionLost()))
        self.failureResultOf(d, ConnectionLost)
        self.assertTrue(dialogue.conversation.failed)

    def test_cancelDrops(self) -> None:
        """
        Cancelling an exchange (a timeout) drops the connection.
        """
        dialogue = Dialogue(self, OPTNEG_CLAMAV)
        d = dialogue.conversation.connect(FACTS)
        d.cancel()
        self.failureResultOf(d, CancelledError)
        self.assertTrue(dialogue.transport.disconnecting)
        self.assertTrue(dialogue.protocol.failed)

    def test_brokenPacket(self) -> None:
        dialogue = Dialogue(self, OPTNEG_CLAMAV)
        d = dialogue.conversation.connect(FACTS)
        dialogue.protocol.dataReceived(b"\x00\x00\x00\x00")
        self.failureResultOf(d, FilterProtocolError)


@implementer(IStreamClientEndpoint)
class _Endpoint:
    def __init__(self, connected: bool = True) -> None:
        self.transport = StringTransport()
        self.protocol: Any = None
        self.connected = connected

    def connect(self, factory: Any) -> Deferred[Any]:
        if not self.connected:
            return Deferred()
        self.protocol = factory.buildProtocol(None)
        self.protocol.makeConnection(self.transport)
        return succeed(self.protocol)


class MilterClientTests(SynchronousTestCase):
    """
    Opening a conversation, within the milter's timeout.
    """

    spec = MilterSpec("inet:127.0.0.1:8891", "127.0.0.1", 8891, name="opendkim", timeout=5)

    def test_open(self) -> None:
        clock = Clock()
        endpoint = _Endpoint()
        client = MilterClient(clock, self.spec, endpoint)
        d = client.open()
        self.assertEqual(endpoint.transport.value(), OPTNEG)
        endpoint.protocol.dataReceived(OPTNEG_OPENDKIM)
        conversation = self.successResultOf(d)
        self.assertEqual(conversation.name, "opendkim")
        self.assertEqual(clock.getDelayedCalls(), [])

    def test_negotiationTimeout(self) -> None:
        clock = Clock()
        endpoint = _Endpoint()
        d = MilterClient(clock, self.spec, endpoint).open()
        clock.advance(5)
        self.failureResultOf(d, TimeoutError)
        self.assertTrue(endpoint.transport.disconnecting)

    def test_connectTimeout(self) -> None:
        clock = Clock()
        d = MilterClient(clock, self.spec, _Endpoint(connected=False)).open()
        clock.advance(4.9)
        self.assertNoResult(d)
        clock.advance(0.1)
        self.failureResultOf(d, TimeoutError)


class MacroTests(SynchronousTestCase):
    """
    The macros milters rely on, at the stage they belong to.
    """

    def test_tlsAtHeloAuthAtMail(self) -> None:
        facts = SessionFacts(
            "127.0.0.1",
            4000,
            serverName="mx.example.test",
            helo="client.example.test",
            tlsVersion="TLSv1.3",
            tlsCipher="TLS_AES_256_GCM_SHA384",
            authenticatedUser="alice",
            authMechanism="PLAIN",
        )
        dialogue = Dialogue(self, optnegReply(0x1FF, 0))
        conversation = dialogue.conversation
        dialogue.reply(conversation.connect(facts), CONTINUE)
        d = conversation.helo(facts)
        self.assertTrue(
            dialogue.sent().startswith(
                codec.macros(
                    Command.HELO,
                    [(b"{tls_version}", b"TLSv1.3"), (b"{cipher}", b"TLS_AES_256_GCM_SHA384")],
                )
            )
        )
        dialogue.reply(d, CONTINUE)
        conversation.mail(facts, "alice@example.test")
        self.assertTrue(
            dialogue.sent().startswith(
                codec.macros(
                    Command.MAIL,
                    [
                        (b"{auth_authen}", b"alice"),
                        (b"{auth_type}", b"PLAIN"),
                        (b"{mail_addr}", b"alice@example.test"),
                        (b"{mail_host}", b"example.test"),
                    ],
                )
            )
        )

    def test_ipv6Connect(self) -> None:
        dialogue = Dialogue(self, optnegReply(0x1FF, 0))
        dialogue.conversation.connect(SessionFacts("2001:db8::25", 2525))
        self.assertTrue(
            dialogue.sent().endswith(codec.connect(b"[2001:db8::25]", b"6", 2525, b"2001:db8::25"))
        )
