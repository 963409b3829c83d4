"""
Tests for L{gopherpost.filters.milter.codec}: every command we send and
every reply we read, as bytes.

The byte strings marked "recorded" were captured between GopherPost and the
real milters from Debian (OpenDKIM 2.11, clamav-milter 1.4, rspamd 3.4's
proxy in milter mode); the others are written from the protocol's
description (libmilter's mfdef.h and smfi_* pages) for replies those
milters do not send.
"""

from __future__ import annotations

from twisted.trial.unittest import SynchronousTestCase

from gopherpost.filters.failure import FilterProtocolError
from gopherpost.filters.milter import codec
from gopherpost.filters.milter.codec import Action, Command, ReplyKind, Stage, Step
from gopherpost.filters.verdict import (
    AddHeader,
    AddRecipient,
    ChangeHeader,
    ChangeSender,
    DeleteHeader,
    DeleteRecipient,
    InsertHeader,
)

#: recorded: our option negotiation (version 6, every action, our steps).
OPTNEG = b"\x00\x00\x00\rO\x00\x00\x00\x06\x00\x00\x01\xff\x00\x1f\xf7\xff"

#: recorded: OpenDKIM's, clamav-milter's and rspamd's answers.
OPTNEG_OPENDKIM = b"\x00\x00\x00\rO\x00\x00\x00\x06\x00\x00\x01\x11\x00\x10\x07\x02"
OPTNEG_CLAMAV = b"\x00\x00\x00\rO\x00\x00\x00\x06\x00\x00\x001\x00\x00\x03B"
OPTNEG_RSPAMD = b"\x00\x00\x00\rO\x00\x00\x00\x06\x00\x00\x01\xff\x00\x0f\xf0\x80"

#: recorded: the connect macros and SMFIC_CONNECT.
CONNECT = (
    b"\x00\x00\x00\x8dDCj\x00mx.example.test\x00{daemon_name}\x00smtp\x00"
    b"v\x00GopherPost 0.5.0\x00_\x00[127.0.0.1]\x00{client_addr}\x00127.0.0.1\x00"
    b"{client_port}\x004000\x00{client_name}\x00[127.0.0.1]\x00"
    b"\x00\x00\x00\x1aC[127.0.0.1]\x004\x0f\xa0127.0.0.1\x00"
)

#: recorded: OpenDKIM's signature (SMFIR_INSHEADER, a leading space kept).
INSHEADER_OPENDKIM = (
    b"\x00\x00\x01_i\x00\x00\x00\x00DKIM-Signature\x00 v=1; a=rsa-sha256; "
    b"c=simple/simple; d=example.test; s=sel;\n\tt=1796127803; "
    b"bh=zS7KNTV0HyeorkDDGwxB1AV6enuRKzO5rthkhdHIRnY=;\n\th=From:To:Subject:Date;\n\t"
    b"b=I6uccNVPXBMgeDwQw0b1MNcBhxl+/ByNkbLVt0dWoIonJJp0LDJpjOYR1d5khX0gB\n\t "
    b"YbI6MS+IpB7lT+KOmNVKlNE4qFS9URb4lasO7m/dDiaWTDOyv+hR8TJK9mDKdKEc5P\n\t "
    b"MzYSSrpLaM9IKGwfn+ANIrHzJIlHW1EYTpHj/N5U=\x00"
)

#: recorded: clamav-milter on a message with the test signature: its
#: header fields, then reject.
CLAMAV_INFECTED = (
    b"\x00\x00\x00+hX-Virus-Scanned\x00clamav-milter 1.4.6 at vm\x00"
    b"\x00\x00\x00@hX-Virus-Status\x00Infected (GopherPost.Test.Signature.UNOFFICIAL)\x00"
    b"\x00\x00\x00\x01r"
)

#: recorded: rspamd on GTUBE.
REPLYCODE_RSPAMD = b"\x00\x00\x00\x19y554 5.7.1 Gtube pattern\x00"


def parsed(data: bytes) -> list:
    reader = codec.PacketReader()
    return [codec.parseReply(c, d) for c, d in reader.feed(data)]


class CommandTests(SynchronousTestCase):
    """
    The commands, byte for byte.
    """

    def test_optneg(self) -> None:
        """
        Version 6, every action, every step we offer.
        """
        self.assertEqual(
            codec.optneg(codec.MILTER_VERSION, codec.OFFERED_ACTIONS, codec.OFFERED_STEPS),
            OPTNEG,
        )
        self.assertFalse(codec.OFFERED_STEPS & Step.RCPT_REJ)
        self.assertTrue(codec.OFFERED_STEPS & Step.HDR_LEADSPC)

    def test_connectWithMacros(self) -> None:
        """
        The macro packet names the command it belongs to; SMFIC_CONNECT
        has the host name, the family, the port and the address.
        """
        pairs = [
            (b"j", b"mx.example.test"),
            (b"{daemon_name}", b"smtp"),
            (b"v", b"GopherPost 0.5.0"),
            (b"_", b"[127.0.0.1]"),
            (b"{client_addr}", b"127.0.0.1"),
            (b"{client_port}", b"4000"),
            (b"{client_name}", b"[127.0.0.1]"),
        ]
        self.assertEqual(
            codec.macros(Command.CONNECT, pairs)
            + codec.connect(b"[127.0.0.1]", b"4", 4000, b"127.0.0.1"),
            CONNECT,
        )

    def test_connectIPv6AndUnknown(self) -> None:
        self.assertEqual(
            codec.connect(b"[2001:db8::1]", b"6", 25, b"2001:db8::1"),
            b"\x00\x00\x00\x1eC[2001:db8::1]\x006\x00\x192001:db8::1\x00",
        )
        self.assertEqual(codec.connect(b"x", b"U", 0, b""), b"\x00\x00\x00\x04Cx\x00U")

    def test_helo(self) -> None:
        self.assertEqual(
            codec.helo(b"client.example.test"), b"\x00\x00\x00\x15Hclient.example.test\x00"
        )

    def test_mailAndRcpt(self) -> None:
        """
        recorded: the address in angle brackets; ESMTP arguments follow.
        """
        self.assertEqual(
            codec.envelope(Command.MAIL, b"a@example.test"),
            b"\x00\x00\x00\x12M<a@example.test>\x00",
        )
        self.assertEqual(
            codec.envelope(Command.RCPT, b"b@example.test", [b"NOTIFY=NEVER"]),
            b"\x00\x00\x00\x1fR<b@example.test>\x00NOTIFY=NEVER\x00",
        )
        self.assertEqual(codec.envelope(Command.MAIL, b""), b"\x00\x00\x00\x04M<>\x00")

    def test_header(self) -> None:
        """
        recorded: name and value, each NUL-terminated; a NUL inside is
        dropped.
        """
        self.assertEqual(
            codec.header(b"From", b" a@example.test"),
            b"\x00\x00\x00\x16LFrom\x00 a@example.test\x00",
        )
        self.assertEqual(codec.header(b"X", b"a\x00b"), b"\x00\x00\x00\x06LX\x00ab\x00")

    def test_bodyAndSimple(self) -> None:
        """
        recorded: body chunks as they are; the commands without data.
        """
        self.assertEqual(codec.body(b"hello\r\n"), b"\x00\x00\x00\x08Bhello\r\n")
        self.assertEqual(codec.simple(Command.EOH), b"\x00\x00\x00\x01N")
        self.assertEqual(codec.simple(Command.BODYEOB), b"\x00\x00\x00\x01E")
        self.assertEqual(codec.simple(Command.DATA), b"\x00\x00\x00\x01T")
        self.assertEqual(codec.simple(Command.ABORT), b"\x00\x00\x00\x01A")
        self.assertEqual(codec.simple(Command.QUIT), b"\x00\x00\x00\x01Q")
        self.assertEqual(
            codec.macros(Command.BODYEOB, [(b"i", b"Q123")]), b"\x00\x00\x00\tDEi\x00Q123\x00"
        )


class NegotiationTests(SynchronousTestCase):
    """
    SMFIC_OPTNEG answers.
    """

    def test_opendkim(self) -> None:
        (negotiation,) = parsed(OPTNEG_OPENDKIM)
        self.assertEqual(negotiation.version, 6)
        self.assertEqual(negotiation.actions, Action.ADDHDRS | Action.CHGHDRS | Action.SETSYMLIST)
        self.assertTrue(negotiation.steps & Step.HDR_LEADSPC)
        self.assertTrue(negotiation.steps & Step.NOHELO)
        self.assertEqual(negotiation.symlists, {})

    def test_clamav(self) -> None:
        (negotiation,) = parsed(OPTNEG_CLAMAV)
        self.assertEqual(negotiation.actions, Action.ADDHDRS | Action.CHGHDRS | Action.QUARANTINE)
        self.assertTrue(negotiation.steps & Step.NODATA)
        self.assertFalse(negotiation.steps & Step.HDR_LEADSPC)

    def test_rspamd(self) -> None:
        """
        rspamd answers no stage but the end of the message.
        """
        (negotiation,) = parsed(OPTNEG_RSPAMD)
        self.assertEqual(negotiation.actions, codec.OFFERED_ACTIONS)
        for step in (Step.NR_CONN, Step.NR_HELO, Step.NR_MAIL, Step.NR_RCPT, Step.NR_HDR):
            self.assertTrue(negotiation.steps & step)

    def test_symlists(self) -> None:
        """
        A milter that negotiated SMFIF_SETSYMLIST names macros per stage.
        """
        data = (
            b"\x00\x00\x00\x06\x00\x00\x01\x00\x00\x00\x00\x00"
            b"\x00\x00\x00\x00{client_addr} j\x00"
            b"\x00\x00\x00\x05i {msg_id}\x00"
            b"\x00\x00\x00\x63ignored\x00"
        )
        negotiation = codec.parseReply(b"O", data)
        assert isinstance(negotiation, codec.Negotiation)
        self.assertEqual(
            negotiation.symlists,
            {Stage.CONNECT: (b"{client_addr}", b"j"), Stage.EOM: (b"i", b"{msg_id}")},
        )

    def test_short(self) -> None:
        self.assertRaises(FilterProtocolError, codec.parseReply, b"O", b"\x00\x00\x00\x06")
        self.assertRaises(
            FilterProtocolError, codec.parseReply, b"O", b"\x00" * 12 + b"\x00\x00\x00\x00ab"
        )


class ReplyTests(SynchronousTestCase):
    """
    Every reply and modification.
    """

    def test_simpleReplies(self) -> None:
        for octet, kind in [
            (b"a", ReplyKind.ACCEPT),
            (b"c", ReplyKind.CONTINUE),
            (b"d", ReplyKind.DISCARD),
            (b"r", ReplyKind.REJECT),
            (b"t", ReplyKind.TEMPFAIL),
            (b"p", ReplyKind.PROGRESS),
            (b"s", ReplyKind.SKIP),
            (b"4", ReplyKind.SHUTDOWN),
            (b"f", ReplyKind.CONN_FAIL),
        ]:
            self.assertEqual(parsed(b"\x00\x00\x00\x01" + octet), [codec.Reply(kind)])

    def test_replyCode(self) -> None:
        """
        recorded: rspamd's GTUBE refusal.
        """
        self.assertEqual(parsed(REPLYCODE_RSPAMD), [codec.ReplyCode(554, "5.7.1 Gtube pattern")])

    def test_replyCodeMultiline(self) -> None:
        reply = codec.parseReply(b"y", b"550-5.7.1 Virus found\r\n550 5.7.1 Eicar\x00")
        self.assertEqual(reply, codec.ReplyCode(550, "5.7.1 Virus found\n5.7.1 Eicar"))

    def test_replyCodeNotARefusal(self) -> None:
        """
        Only 4xx and 5xx codes, every line the same code.
        """
        for data in (b"250 ok\x00", b"55x no\x00", b"550 a\r\n451 b\x00", b"550 a"):
            self.assertRaises(FilterProtocolError, codec.parseReply, b"y", data)

    def test_addHeader(self) -> None:
        """
        recorded: clamav-milter's fields, then its reject, in one read.
        """
        self.assertEqual(
            parsed(CLAMAV_INFECTED),
            [
                AddHeader(b"X-Virus-Scanned", b"clamav-milter 1.4.6 at vm"),
                AddHeader(b"X-Virus-Status", b"Infected (GopherPost.Test.Signature.UNOFFICIAL)"),
                codec.Reply(ReplyKind.REJECT),
            ],
        )

    def test_insertHeader(self) -> None:
        """
        recorded: OpenDKIM's signature at index 0.
        """
        (insert,) = parsed(INSHEADER_OPENDKIM)
        assert isinstance(insert, InsertHeader)
        self.assertEqual((insert.index, insert.name), (0, b"DKIM-Signature"))
        self.assertTrue(insert.value.startswith(b" v=1; a=rsa-sha256;"))
        self.assertIn(b"\n\th=From:To:Subject:Date;", insert.value)

    def test_changeHeader(self) -> None:
        self.assertEqual(
            codec.parseReply(b"m", b"\x00\x00\x00\x02Subject\x00[SPAM] hi\x00"),
            ChangeHeader(b"Subject", 2, b"[SPAM] hi"),
        )

    def test_changeHeaderEmptyDeletes(self) -> None:
        """
        An empty value deletes the field (index 0 counts as the first).
        """
        self.assertEqual(
            codec.parseReply(b"m", b"\x00\x00\x00\x01X-Spam\x00\x00"), DeleteHeader(b"X-Spam", 1)
        )
        self.assertEqual(
            codec.parseReply(b"m", b"\x00\x00\x00\x00X-Spam\x00\x00"), DeleteHeader(b"X-Spam", 1)
        )

    def test_replaceBody(self) -> None:
        self.assertEqual(parsed(b"\x00\x00\x00\x06bnew\r\n"), [codec.BodyChunk(b"new\r\n")])

    def test_recipientsAndSender(self) -> None:
        self.assertEqual(
            codec.parseReply(b"+", b"<c@example.test>\x00"), AddRecipient("<c@example.test>")
        )
        self.assertEqual(
            codec.parseReply(b"2", b"<c@example.test>\x00NOTIFY=NEVER\x00"),
            AddRecipient("<c@example.test>", "NOTIFY=NEVER"),
        )
        self.assertEqual(
            codec.parseReply(b"-", b"<b@example.test>\x00"), DeleteRecipient("<b@example.test>")
        )
        self.assertEqual(
            codec.parseReply(b"e", b"<bounce@example.test>\x00"),
            ChangeSender("<bounce@example.test>"),
        )
        self.assertEqual(
            codec.parseReply(b"e", b"<bounce@example.test>\x00SIZE=10\x00"),
            ChangeSender("<bounce@example.test>", "SIZE=10"),
        )

    def test_quarantine(self) -> None:
        self.assertEqual(
            codec.parseReply(b"q", b"suspicious attachment\x00"),
            codec.Quarantine("suspicious attachment"),
        )

    def test_malformed(self) -> None:
        """
        Unknown replies, missing NULs, wrong string counts, data where none
        belongs: protocol errors.
        """
        for command, data in [
            (b"Z", b""),
            (b"h", b"X-A\x00value"),
            (b"h", b"X-A\x00"),
            (b"h", b"X-A\x00b\x00c\x00"),
            (b"i", b"\x00\x00"),
            (b"+", b""),
            (b"a", b"junk"),
            (b"l", b"\x00\x00\x00\x00j\x00"),
            (b"e", b"a\x00b\x00c\x00"),
        ]:
            self.assertRaises(FilterProtocolError, codec.parseReply, command, data)


class PacketReaderTests(SynchronousTestCase):
    """
    Packets are found however the stream is split.
    """

    def test_byteByByte(self) -> None:
        stream = OPTNEG_OPENDKIM + CLAMAV_INFECTED + REPLYCODE_RSPAMD
        whole = parsed(stream)
        reader = codec.PacketReader()
        pieces: list[object] = []
        for i in range(len(stream)):
            pieces.extend(codec.parseReply(c, d) for c, d in reader.feed(stream[i : i + 1]))
        self.assertEqual(pieces, whole)
        self.assertEqual(len(whole), 5)
        self.assertEqual(reader.pending, 0)

    def test_badLengths(self) -> None:
        """
        A zero length, or one over L{codec.MAX_PACKET}, is a protocol error.
        """
        for length in (b"\x00\x00\x00\x00", b"\x7f\x00\x00\x00"):
            reader = codec.PacketReader()
            self.assertRaises(FilterProtocolError, list, reader.feed(length + b"a"))
