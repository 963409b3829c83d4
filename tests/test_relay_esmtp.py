"""
Outbound SMTPUTF8 and DSN (L{gopherpost.relay.esmtp}): SMTPUTF8 only to
servers that offer it (else 5.6.7, never a downgrade), DSN parameters passed
on to servers that offer DSN, and GopherPost's own DSNs honouring NOTIFY,
RET, ENVID and ORCPT.
"""

from __future__ import annotations

import os

from twisted.trial.unittest import SynchronousTestCase

from gopherpost.esmtp.dsnparams import dsnMetadata
from gopherpost.relay.body import prepareMessage
from gopherpost.relay.esmtp import (
    asciiForm,
    headerSection,
    mailParameters,
    rcptParameters,
    relayEnvelope,
    relayMetadata,
    utf8Refusal,
)
from gopherpost.relay.outcome import DEFERRED, FAILED, SENT
from gopherpost.relay.state import MessageState
from gopherpost.relay.transaction import Envelope
from gopherpost.spool import Envelope as SpoolEnvelope
from tests.support.clientsession import (
    EHLO_REPLY,
    HELO,
    HOST,
    SENDER,
    Conversation,
    statuses,
)
from tests.test_queue import QueueTestCase, delivery

UTF8_MESSAGE = "Subject: Grüße\r\n\r\nHallo.\r\n".encode()
DSN_METADATA = {
    "smtputf8": True,
    **dsnMetadata(
        "HDRS",
        "env+2B1",
        [
            ("bob@example.test", ("SUCCESS", "DELAY"), "rfc822;bob+2Bx@example.test"),
            ("carol@example.test", ("NEVER",), None),
        ],
    ),
}


class HelperTests(SynchronousTestCase):
    """
    The pure functions.
    """

    def test_relayMetadata(self) -> None:
        """
        Only the ESMTP keys are kept.
        """
        self.assertEqual(relayMetadata(None), {})
        self.assertEqual(relayMetadata({"tags": {"x": 1}}), {})
        self.assertEqual(
            relayMetadata(
                {"tags": {}, "smtputf8": True, "requiretls": True, "dsn": {"ret": "FULL"}}
            ),
            {"smtputf8": True, "requiretls": True, "dsn": {"ret": "FULL"}},
        )

    def test_relayEnvelope(self) -> None:
        """
        The session's envelope carries SMTPUTF8 and the DSN request.
        """
        plain = relayEnvelope("a@x.test", ("b@y.test",), b"m", {})
        self.assertEqual(plain, Envelope("a@x.test", ("b@y.test",), b"m"))
        envelope = relayEnvelope("a@x.test", ("bob@example.test",), b"m", DSN_METADATA)
        self.assertTrue(envelope.smtputf8)
        assert envelope.dsn is not None
        self.assertEqual(envelope.dsn.ret, "HDRS")

    def test_asciiForm(self) -> None:
        self.assertEqual(asciiForm("a@x.test"), "a@x.test")
        self.assertEqual(asciiForm("a@bücher.test"), "a@xn--bcher-kva.test")
        self.assertIsNone(asciiForm("jü@x.test"))
        self.assertIsNone(asciiForm("a@☃.test"))

    def test_headerSection(self) -> None:
        self.assertEqual(headerSection(b"A: 1\r\nB: 2\r\n\r\nbody\n\nmore"), b"A: 1\r\nB: 2")
        self.assertEqual(headerSection(b"A: 1\n\nbody"), b"A: 1")
        self.assertEqual(headerSection(b"A: 1\r\n"), b"A: 1\r\n")

    def test_utf8Refusal(self) -> None:
        """
        A UTF-8 header section counts only for a message received with
        SMTPUTF8 (8-bit legacy headers go as before).
        """
        self.assertIsNone(utf8Refusal(Envelope("a@x.test", ("b@y.test",), UTF8_MESSAGE), HOST))
        refusal = utf8Refusal(Envelope("a@x.test", ("b@y.test",), UTF8_MESSAGE, True), HOST)
        self.assertEqual(
            refusal,
            f"the message has a non-ASCII header section and {HOST} does not offer SMTPUTF8",
        )
        ascii = Envelope("a@x.test", ("b@y.test",), b"Subject: x\r\n\r\n\xc3\xbc", True)
        self.assertIsNone(utf8Refusal(ascii, HOST))

    def test_parameters(self) -> None:
        """
        DSN parameters only for a server that offers DSN.
        """
        envelope = relayEnvelope("a@x.test", ("bob@example.test",), b"m", DSN_METADATA)
        self.assertEqual(mailParameters(envelope, {}), [])
        self.assertEqual(mailParameters(envelope, {"DSN": ()}), ["RET=HDRS", "ENVID=env+2B1"])
        self.assertEqual(rcptParameters(envelope, "bob@example.test", {}, False), "")
        self.assertEqual(
            rcptParameters(envelope, "bob@example.test", {"DSN": ()}, False),
            " NOTIFY=SUCCESS,DELAY ORCPT=rfc822;bob+2Bx@example.test",
        )
        self.assertEqual(
            rcptParameters(envelope, "carol@example.test", {"DSN": ()}, False), " NOTIFY=NEVER"
        )
        self.assertEqual(rcptParameters(envelope, "dave@example.test", {"DSN": ()}, False), "")


class SessionTests(SynchronousTestCase):
    """
    What the client session says to servers with and without SMTPUTF8 and
    DSN.
    """

    def conversation(self, envelope: Envelope) -> Conversation:
        c = Conversation(self, envelopes=[envelope])
        c.reply("220 mx.example.test ESMTP")
        c.expect(f"EHLO {HELO}")
        return c

    def test_utf8HeadersWithoutSMTPUTF8(self) -> None:
        """
        A message received with SMTPUTF8 whose header section is UTF-8 is
        not sent to a server without SMTPUTF8: every recipient fails with
        C{5.6.7}, no MAIL is sent.
        """
        envelope = Envelope(SENDER, ("bob@example.test", "carol@example.test"), UTF8_MESSAGE, True)
        c = self.conversation(envelope)
        c.reply(EHLO_REPLY)
        c.step("QUIT", "221 bye")
        (result,) = c.result()
        self.assertEqual(
            statuses(result),
            [("bob@example.test", FAILED, 553), ("carol@example.test", FAILED, 553)],
        )
        self.assertEqual(result.outcomeFor("bob@example.test").enhancedCode, "5.6.7")

    def test_utf8WithSMTPUTF8(self) -> None:
        """
        To a server that offers SMTPUTF8, MAIL says SMTPUTF8 and the message
        goes as it is.
        """
        envelope = Envelope("jürgen@gopher.example.test", ("bob@example.test",), UTF8_MESSAGE, True)
        payload, size, _ = prepareMessage(UTF8_MESSAGE)
        c = self.conversation(envelope)
        c.reply(
            EHLO_REPLY.replace("250 ENHANCEDSTATUSCODES", "250-ENHANCEDSTATUSCODES\n250 SMTPUTF8")
        )
        c.step(
            f"MAIL FROM:<jürgen@gopher.example.test> SIZE={size} BODY=8BITMIME SMTPUTF8",
            "250 ok",
        )
        c.step("RCPT TO:<bob@example.test>", "250 ok")
        c.step("DATA", "354 go")
        self.assertEqual(c.written(), payload)
        c.reply("250 queued")
        c.step("QUIT", "221 bye")
        self.assertEqual(c.result()[0].sent, ("bob@example.test",))

    def test_asciiMessageWithoutSMTPUTF8(self) -> None:
        """
        A message received with SMTPUTF8 that is all ASCII needs no
        SMTPUTF8: it goes to a server without it.
        """
        message = b"Subject: plain\r\n\r\nhi\r\n"
        c = self.conversation(Envelope(SENDER, ("bob@example.test",), message, True))
        c.reply(EHLO_REPLY)
        c.step(f"MAIL FROM:<{SENDER}> SIZE={prepareMessage(message)[1]}", "250 ok")
        c.step("RCPT TO:<bob@example.test>", "250 ok")
        c.step("DATA", "354 go")
        c.written()
        c.reply("250 queued")
        c.step("QUIT", "221 bye")
        self.assertEqual(statuses(c.result()[0]), [("bob@example.test", SENT, 250)])

    def test_idnDomainWithoutSMTPUTF8(self) -> None:
        """
        An ASCII local part at an internationalised domain goes to a server
        without SMTPUTF8 with the domain in A-labels (the same mailbox); a
        UTF-8 local part fails alone with 5.6.7.
        """
        message = b"Subject: x\r\n\r\nhi\r\n"
        envelope = Envelope(
            "alice@gopher.example.test", ("bob@bücher.test", "jü@bücher.test"), message
        )
        c = self.conversation(envelope)
        c.reply(EHLO_REPLY)
        c.step(f"MAIL FROM:<alice@gopher.example.test> SIZE={prepareMessage(message)[1]}", "250 ok")
        c.step("RCPT TO:<bob@xn--bcher-kva.test>", "250 ok")
        c.step("DATA", "354 go")
        c.written()
        c.reply("250 queued")
        c.step("QUIT", "221 bye")
        (result,) = c.result()
        self.assertEqual(
            statuses(result), [("bob@bücher.test", SENT, 250), ("jü@bücher.test", FAILED, 553)]
        )
        self.assertEqual(result.outcomeFor("jü@bücher.test").enhancedCode, "5.6.7")

    def test_dsnPassedOn(self) -> None:
        """
        To a server that offers DSN, RET and ENVID go on MAIL, NOTIFY and
        ORCPT on each RCPT, as the sender gave them.
        """
        message = b"Subject: x\r\n\r\nhi\r\n"
        envelope = relayEnvelope(
            SENDER, ("bob@example.test", "carol@example.test"), message, DSN_METADATA
        )
        size = prepareMessage(message)[1]
        c = self.conversation(envelope)
        c.reply(EHLO_REPLY.replace("250 ENHANCEDSTATUSCODES", "250-ENHANCEDSTATUSCODES\n250 DSN"))
        c.step(f"MAIL FROM:<{SENDER}> SIZE={size} RET=HDRS ENVID=env+2B1", "250 ok")
        c.step(
            "RCPT TO:<bob@example.test> NOTIFY=SUCCESS,DELAY ORCPT=rfc822;bob+2Bx@example.test",
            "250 ok",
        )
        c.step("RCPT TO:<carol@example.test> NOTIFY=NEVER", "250 ok")
        c.step("DATA", "354 go")
        c.written()
        c.reply("250 queued")
        c.step("QUIT", "221 bye")
        self.assertEqual(len(c.result()[0].sent), 2)

    def test_dsnNotOffered(self) -> None:
        """
        To a server without DSN the parameters are left out.
        """
        message = b"Subject: x\r\n\r\nhi\r\n"
        envelope = relayEnvelope(SENDER, ("bob@example.test",), message, DSN_METADATA)
        c = self.conversation(envelope)
        c.reply(EHLO_REPLY)
        c.step(f"MAIL FROM:<{SENDER}> SIZE={prepareMessage(message)[1]}", "250 ok")
        c.step("RCPT TO:<bob@example.test>", "250 ok")


class BounceTests(QueueTestCase):
    """
    GopherPost's own failure DSNs honour the sender's DSN parameters.
    """

    def spoolWith(
        self,
        metadata: dict,
        recipients: list[str],
        content: bytes,
        sender: str = "alice@gopherpost.test",
    ) -> SpoolEnvelope:
        writer = self.spool.newWriter()
        writer.write(content)
        d = self.spool.commit(
            writer,
            sender,
            [(r, False) for r in recipients],
            "127.0.0.1",
            "client.test",
            False,
            metadata=metadata,
        )
        self.clock.advance(0)
        envelope = self.successResultOf(d)
        self.clock.advance(0)
        self.clock.advance(0)
        return envelope

    def failAll(self) -> list[bytes]:
        """
        Fail every recipient of the one attempt; the bounces' contents.
        """
        [(_, [message], listener, d)] = self.courier.attempts
        listener.settled(message, [delivery(r, FAILED) for r in message.recipients])
        d.callback(None)
        self.clock.advance(0)
        return self.notices()

    def notices(self) -> list[bytes]:
        """
        The contents of every DSN in the spool.
        """
        found = []
        for envelope in self.spool.envelopes():
            if envelope.sender == "":
                (recipient,) = envelope.recipients
                path = os.path.join(
                    self.path,
                    envelope.dateDirectory,
                    f"{envelope.queueId}_{recipient.token}.eml",
                )
                with open(path, "rb") as f:
                    found.append(f.read())
        return found

    def test_stateKeepsMetadata(self) -> None:
        """
        The relay state and the courier's message carry the ESMTP metadata,
        also across a save and load.
        """
        envelope = self.spoolWith(DSN_METADATA, ["bob@example.test"], b"Subject: x\r\n\r\nhi\r\n")
        [(_, [message], _, _)] = self.courier.attempts
        self.assertEqual(message.esmtp, DSN_METADATA)
        state = MessageState.forEnvelope(envelope, 0.0)
        self.assertEqual(MessageState.fromJSON(state.toJSON()).esmtp, DSN_METADATA)
        plain = MessageState("q", "d", 0.0, "a@x.test")
        self.assertNotIn(b"esmtp", plain.toJSON())

    def test_notifyNever(self) -> None:
        """
        NOTIFY=NEVER, or a NOTIFY without FAILURE: no bounce for that
        recipient; the others as usual.
        """
        metadata = dsnMetadata(
            None,
            None,
            [
                ("never@example.test", ("NEVER",), None),
                ("success@example.test", ("SUCCESS",), None),
                ("failure@example.test", ("FAILURE",), None),
            ],
        )
        self.spoolWith(
            metadata,
            [
                "never@example.test",
                "success@example.test",
                "failure@example.test",
                "d@example.test",
            ],
            b"Subject: x\r\n\r\nhi\r\n",
        )
        (bounce,) = self.failAll()
        self.assertIn(b"Final-Recipient: rfc822; failure@example.test", bounce)
        self.assertIn(b"Final-Recipient: rfc822; d@example.test", bounce)
        self.assertNotIn(b"never@example.test", bounce)
        self.assertNotIn(b"success@example.test", bounce)

    def test_onlyNever(self) -> None:
        """
        When every failed recipient said NEVER, no DSN at all.
        """
        metadata = dsnMetadata(None, None, [("never@example.test", ("NEVER",), None)])
        self.spoolWith(metadata, ["never@example.test"], b"Subject: x\r\n\r\nhi\r\n")
        self.assertEqual(self.failAll(), [])

    def test_envelopeIdOriginalRecipientAndFullReturn(self) -> None:
        """
        ENVID as Original-Envelope-Id, ORCPT as Original-Recipient (both
        decoded), RET=FULL returns the whole message.
        """
        metadata = dsnMetadata(
            "FULL", "env+2B1", [("bob@example.test", None, "rfc822;bob+2Bx@example.test")]
        )
        self.spoolWith(metadata, ["bob@example.test"], b"Subject: x\r\n\r\nthe body\r\n")
        (bounce,) = self.failAll()
        self.assertIn(b"Original-Envelope-Id: env+1", bounce)
        self.assertIn(b"Original-Recipient: rfc822; bob+x@example.test", bounce)
        self.assertIn(b"message/rfc822", bounce)
        self.assertIn(b"the body", bounce)

    def test_headersOnly(self) -> None:
        """
        RET=HDRS (and no RET, as before): the header section only.
        """
        metadata = dsnMetadata("HDRS", None, [])
        self.spoolWith(metadata, ["bob@example.test"], b"Subject: x\r\n\r\nthe body\r\n")
        (bounce,) = self.failAll()
        self.assertIn(b"text/rfc822-headers", bounce)
        self.assertNotIn(b"the body", bounce)

    def test_utf8Recipient(self) -> None:
        """
        A UTF-8 recipient is reported as a utf-8 address (RFC 6533).
        """
        self.spoolWith({"smtputf8": True}, ["jü@example.test"], b"Subject: x\r\n\r\nhi\r\n")
        (bounce,) = self.failAll()
        self.assertIn(b"Final-Recipient: utf-8; j\\x{FC}@example.test", bounce)

    def test_utf8Sender(self) -> None:
        """
        A DSN to a UTF-8 sender has its address as UTF-8 (RFC 6532), and a
        UTF-8 header section comes back as it was.
        """
        content = "Subject: Grüße\r\n\r\nhi\r\n".encode()
        self.spoolWith({"smtputf8": True}, ["bob@example.test"], content, "jürgen@gopherpost.test")
        (bounce,) = self.failAll()
        self.assertIn("To: <jürgen@gopherpost.test>".encode(), bounce)
        self.assertIn("Subject: Grüße".encode(), bounce)


class NoticeTests(BounceTests):
    """
    Success and delay DSNs when the sender asked (NOTIFY=SUCCESS, DELAY).
    """

    def test_relayed(self) -> None:
        """
        NOTIFY=SUCCESS, delivered to a host without DSN: C{Action: relayed};
        to a host with DSN (it was given NOTIFY): nothing from us.
        """
        metadata = dsnMetadata(
            None,
            "e1",
            [
                ("bob@example.test", ("SUCCESS",), "rfc822;bob@example.test"),
                ("carol@example.test", ("SUCCESS", "FAILURE"), None),
                ("dave@example.test", None, None),
            ],
        )
        self.spoolWith(
            metadata,
            ["bob@example.test", "carol@example.test", "dave@example.test"],
            b"Subject: x\r\n\r\nthe body\r\n",
        )
        [(_, [message], listener, d)] = self.courier.attempts
        listener.settled(message, [delivery("bob@example.test", SENT)])
        listener.settled(
            message,
            [
                delivery("carol@example.test", SENT)._replace(dsnOffered=True),
                delivery("dave@example.test", SENT),
            ],
        )
        d.callback(None)
        self.clock.advance(0)
        (notice,) = self.notices()
        self.assertIn(b"Action: relayed", notice)
        self.assertIn(b"Final-Recipient: rfc822; bob@example.test", notice)
        self.assertIn(b"Original-Recipient: rfc822; bob@example.test", notice)
        self.assertIn(b"Original-Envelope-Id: e1", notice)
        self.assertNotIn(b"carol@", notice)
        self.assertNotIn(b"dave@", notice)
        self.assertNotIn(b"the body", notice)

    def test_delivered(self) -> None:
        """
        NOTIFY=SUCCESS for a local recipient: C{Action: delivered} once the
        message is stored.
        """
        metadata = dsnMetadata(None, None, [("bob@gopherpost.test", ("SUCCESS",), None)])
        writer = self.spool.newWriter()
        writer.write(b"Subject: x\r\n\r\nhi\r\n")
        d = self.spool.commit(
            writer,
            "alice@gopherpost.test",
            [("bob@gopherpost.test", True), ("carol@gopherpost.test", True)],
            "127.0.0.1",
            "client.test",
            False,
            metadata=metadata,
        )
        self.clock.advance(0)
        self.successResultOf(d)
        self.clock.advance(0)
        (notice,) = self.notices()
        self.assertIn(b"Action: delivered", notice)
        self.assertIn(b"Final-Recipient: rfc822; bob@gopherpost.test", notice)
        self.assertNotIn(b"carol@", notice)

    def test_delayed(self) -> None:
        """
        NOTIFY=DELAY: one C{Action: delayed} DSN once a recipient has waited
        SMTP_DELAY_WARNING (4 h), with Will-Retry-Until; none before, none
        again.
        """
        metadata = dsnMetadata(
            None,
            None,
            [("bob@example.test", ("DELAY", "FAILURE"), None), ("carol@example.test", None, None)],
        )
        self.spoolWith(
            metadata, ["bob@example.test", "carol@example.test"], b"Subject: x\r\n\r\nhi\r\n"
        )

        def deferAll() -> None:
            _, [message], listener, d = self.courier.attempts[-1]
            listener.settled(message, [delivery(r, DEFERRED) for r in message.recipients])
            d.callback(None)
            self.clock.advance(0)

        deferAll()
        self.assertEqual(self.notices(), [])
        attempts = len(self.courier.attempts)
        self.clock.advance(self.settings.delayWarning)
        self.clock.advance(0)
        self.assertGreater(len(self.courier.attempts), attempts)
        deferAll()
        (notice,) = self.notices()
        self.assertIn(b"Action: delayed", notice)
        self.assertIn(b"Status: 4.3.0", notice)
        self.assertIn(b"Will-Retry-Until: ", notice)
        self.assertIn(b"Final-Recipient: rfc822; bob@example.test", notice)
        self.assertNotIn(b"carol@", notice)
        self.clock.advance(self.settings.delayWarning)
        self.clock.advance(0)
        deferAll()
        self.assertEqual(len(self.notices()), 1)
