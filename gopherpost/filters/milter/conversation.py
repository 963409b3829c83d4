# -*- test-case-name: tests.test_milter_client -*-
"""
One SMTP session's conversation with one milter: the stages of the SMTP
session as milter commands, and the milter's replies as
L{gopherpost.filters.verdict.Verdict}s.

    connect  -> SMFIC_CONNECT       HELO -> SMFIC_HELO
    MAIL     -> SMFIC_MAIL          RCPT -> SMFIC_RCPT        DATA -> SMFIC_DATA
    end of data -> SMFIC_HEADER each, SMFIC_EOH, SMFIC_BODY chunks, SMFIC_BODYEOB

Each stage is sent with its macros, unless the milter negotiated it away
(C{SMFIP_NO*}); a stage the milter does not answer (C{SMFIP_NR_*}) goes on
at once.  C{accept} at connect or HELO ends the conversation for the
session, at a later stage for the message.  A transaction that did not
reach the end of the message is ended with C{SMFIC_ABORT} before the next
one.  Modifications are collected until the milter's final reply at the
end of the message and only count when it accepts; those it did not
negotiate, and any reply out of place, are protocol errors.
"""

from __future__ import annotations

import re
from collections.abc import Generator, Sequence
from typing import Any

from twisted.internet import defer
from twisted.internet.defer import Deferred

from gopherpost.filters.envelope import FilterMessage, SessionFacts
from gopherpost.filters.failure import FilterProtocolError
from gopherpost.filters.milter import codec, macros
from gopherpost.filters.milter.codec import Action, Command, ReplyKind, Stage, Step
from gopherpost.filters.milter.protocol import Exchange, MilterProtocol
from gopherpost.filters.verdict import (
    AddHeader,
    AddRecipient,
    ChangeHeader,
    ChangeSender,
    DeleteHeader,
    DeleteRecipient,
    InsertHeader,
    Modification,
    ReplaceBody,
    Verdict,
)

__all__ = ["MilterConversation", "negotiate"]

_ENHANCED = re.compile(r"[245]\.\d{1,3}\.\d{1,3}( |$)")

#: The default refusals at each stage (Postfix's texts).
_REJECT = {
    "connect": (554, "5.7.1 Service unavailable"),
    "default": (550, "5.7.1 Command rejected"),
}
_TEMPFAIL = (451, "4.7.1 Service unavailable - try again later")

#: The actions each modification needs.
_NEEDS: dict[type, Action] = {
    AddHeader: Action.ADDHDRS,
    InsertHeader: Action.ADDHDRS,
    ChangeHeader: Action.CHGHDRS,
    DeleteHeader: Action.CHGHDRS,
    codec.BodyChunk: Action.CHGBODY,
    DeleteRecipient: Action.DELRCPT,
    ChangeSender: Action.CHGFROM,
    codec.Quarantine: Action.QUARANTINE,
}


def negotiate(protocol: MilterProtocol) -> Deferred[codec.Negotiation]:
    """
    Send C{SMFIC_OPTNEG} and check the answer.

    @return: a L{Deferred} firing with the milter's L{codec.Negotiation}
        (its steps limited to those we offered), failing with
        L{FilterProtocolError} for an answer we cannot work with.
    """
    d = protocol.exchange(
        [codec.optneg(codec.MILTER_VERSION, codec.OFFERED_ACTIONS, codec.OFFERED_STEPS)]
    )

    def check(exchange: Exchange) -> codec.Negotiation:
        reply, early = exchange
        if not isinstance(reply, codec.Negotiation) or early:
            raise FilterProtocolError(f"expected option negotiation, got {reply!r}"[:120])
        if not 2 <= reply.version <= codec.MILTER_VERSION:
            raise FilterProtocolError(f"milter protocol version {reply.version}")
        return codec.Negotiation(
            reply.version,
            reply.actions & codec.OFFERED_ACTIONS,
            reply.steps & codec.OFFERED_STEPS,
            reply.symlists,
        )

    return d.addCallback(check)


def _replyText(code: int, text: str) -> str:
    """
    A milter's reply text with an enhanced status code on its first line.
    """
    lines = text.split("\n")
    if not _ENHANCED.match(lines[0]):
        lines[0] = ("5.7.1 " if code >= 500 else "4.7.1 ") + lines[0]
    return "\n".join(line.rstrip() for line in lines).rstrip()


class MilterConversation:
    """
    The conversation with one milter for one SMTP session.

    @param protocol: the connected protocol, options negotiated.
    @param negotiation: what the milter negotiated.
    @param name: the milter's name, for errors.
    """

    def __init__(
        self, protocol: MilterProtocol, negotiation: codec.Negotiation, name: str = "milter"
    ) -> None:
        self._protocol = protocol
        self.negotiation = negotiation
        self.name = name
        #: The milter accepted the session: nothing more is sent.
        self.sessionDone = False
        #: The milter decided about this message: nothing more until the next.
        self.messageDone = False
        self._inTransaction = False
        self.recipientsSent = 0

    @property
    def failed(self) -> bool:
        """
        Whether the connection failed or closed.
        """
        return self._protocol.failed

    def _wants(self, skip: Step) -> bool:
        return not (self.negotiation.steps & skip)

    def _macros(self, stage: Stage, command: Command, values: dict[str, str]) -> list[bytes]:
        pairs = macros.select(stage, values, self.negotiation.symlists)
        return [codec.macros(command, pairs)] if pairs else []

    @defer.inlineCallbacks
    def _stage(
        self,
        stage: str,
        packets: Sequence[bytes],
        noReply: Step,
    ) -> Generator[Deferred[Any], Any, Verdict]:
        """
        Send one stage's packets; its verdict.
        """
        if not self._wants(noReply):
            self._protocol.send(packets)
            return Verdict.accept()
        reply, early = yield self._protocol.exchange(packets)
        if any(not _isProgress(e) for e in early):
            raise FilterProtocolError(f"modification at {stage}")
        return self._decide(stage, reply)

    def _decide(self, stage: str, reply: Any) -> Verdict:
        messageStage = stage not in ("connect", "helo")
        if isinstance(reply, codec.ReplyCode):
            text = _replyText(reply.code, reply.text)
            if reply.code >= 500:
                return Verdict.reject(reply.code, text)
            return Verdict.tempfail(reply.code, text)
        if not isinstance(reply, codec.Reply):
            raise FilterProtocolError(f"unexpected {reply!r} at {stage}"[:120])
        kind = reply.kind
        if kind is ReplyKind.CONTINUE:
            return Verdict.accept()
        if kind is ReplyKind.ACCEPT:
            if messageStage:
                self.messageDone = True
            else:
                self.sessionDone = True
            return Verdict.accept()
        if kind is ReplyKind.REJECT:
            code, text = _REJECT["connect" if stage == "connect" else "default"]
            return Verdict.reject(code, text)
        if kind is ReplyKind.TEMPFAIL:
            return Verdict.tempfail(*_TEMPFAIL)
        if kind is ReplyKind.DISCARD:
            if messageStage:
                self.messageDone = True
                return Verdict.discard()
            # Discard means nothing for a connection: the milter is done.
            self.sessionDone = True
            return Verdict.accept()
        if kind is ReplyKind.CONN_FAIL:
            return Verdict.tempfail(421, "4.7.0 Service unavailable - closing connection")
        if kind is ReplyKind.SHUTDOWN:
            raise FilterProtocolError("the milter is shutting down")
        raise FilterProtocolError(f"reply {kind.value!r} at {stage}")

    def _endTransaction(self) -> list[bytes]:
        """
        C{SMFIC_ABORT} when a transaction is still open.
        """
        if self._inTransaction:
            self._inTransaction = False
            return [codec.simple(Command.ABORT)]
        return []

    def connect(self, facts: SessionFacts) -> Deferred[Verdict]:
        """
        The client connected.
        """
        if not self._wants(Step.NOCONNECT):
            return defer.succeed(Verdict.accept())
        address = facts.clientAddress
        family = b"6" if ":" in address else b"4"
        hostname = (facts.clientName or f"[{address}]").encode("utf-8", "replace")
        packets = self._macros(Stage.CONNECT, Command.CONNECT, macros.macroValues(facts)) + [
            codec.connect(hostname, family, facts.clientPort, address.encode("ascii", "replace"))
        ]
        return self._stage("connect", packets, Step.NR_CONN)

    def helo(self, facts: SessionFacts) -> Deferred[Verdict]:
        """
        HELO or EHLO (an open transaction is aborted first).
        """
        packets = self._endTransaction()
        if self.sessionDone or not self._wants(Step.NOHELO):
            self._protocol.send(packets)
            return defer.succeed(Verdict.accept())
        packets += self._macros(Stage.HELO, Command.HELO, macros.macroValues(facts))
        packets.append(codec.helo((facts.helo or "").encode("utf-8", "replace")))
        return self._stage("helo", packets, Step.NR_HELO)

    def mail(
        self, facts: SessionFacts, sender: str, arguments: Sequence[str] = ()
    ) -> Deferred[Verdict]:
        """
        MAIL FROM (an open transaction is aborted first).
        """
        packets = self._endTransaction()
        self.messageDone = False
        self.recipientsSent = 0
        if self.sessionDone or not self._wants(Step.NOMAIL):
            self._protocol.send(packets)
            self._inTransaction = not self.sessionDone
            return defer.succeed(Verdict.accept())
        values = macros.macroValues(facts, sender=sender)
        packets += self._macros(Stage.ENVFROM, Command.MAIL, values)
        packets.append(
            codec.envelope(
                Command.MAIL, sender.encode("utf-8"), [a.encode("utf-8") for a in arguments]
            )
        )
        self._inTransaction = True
        return self._stage("mail", packets, Step.NR_MAIL)

    def rcpt(
        self, facts: SessionFacts, sender: str, recipient: str, arguments: Sequence[str] = ()
    ) -> Deferred[Verdict]:
        """
        RCPT TO.
        """
        if self.sessionDone or self.messageDone or not self._wants(Step.NORCPT):
            return defer.succeed(Verdict.accept())
        values = macros.macroValues(facts, sender=sender, recipient=recipient)
        packets = self._macros(Stage.ENVRCPT, Command.RCPT, values)
        packets.append(
            codec.envelope(
                Command.RCPT, recipient.encode("utf-8"), [a.encode("utf-8") for a in arguments]
            )
        )
        self.recipientsSent += 1
        return self._stage("rcpt", packets, Step.NR_RCPT)

    def data(self, facts: SessionFacts, sender: str) -> Deferred[Verdict]:
        """
        DATA, before the C{354}.
        """
        if (
            self.sessionDone
            or self.messageDone
            or self.negotiation.version < 4
            or not self._wants(Step.NODATA)
        ):
            return defer.succeed(Verdict.accept())
        values = macros.macroValues(facts, sender=sender)
        packets = self._macros(Stage.DATA, Command.DATA, values)
        packets.append(codec.simple(Command.DATA))
        return self._stage("data", packets, Step.NR_DATA)

    @defer.inlineCallbacks
    def message(
        self, facts: SessionFacts, message: FilterMessage
    ) -> Generator[Deferred[Any], Any, Verdict]:
        """
        The end of data: the header fields, the body and the end of the
        message; the milter's verdict with its modifications.
        """
        if self.sessionDone or self.messageDone:
            return Verdict.accept()
        leadingSpace = bool(self.negotiation.steps & Step.HDR_LEADSPC)
        if self._wants(Step.NOHDRS):
            for field in message.headers:
                name = field.name
                if name is None:
                    continue
                value = field.value.replace(b"\r\n", b"\n")
                if not leadingSpace:
                    value = value.lstrip(b" \t")
                verdict = yield self._stage("header", [codec.header(name, value)], Step.NR_HDR)
                if verdict.disposition.value != "accept" or self.messageDone:
                    return verdict
        values = macros.macroValues(facts, queueId=message.queueId, sender=message.sender)
        if self._wants(Step.NOEOH):
            packets = self._macros(Stage.EOH, Command.EOH, values)
            packets.append(codec.simple(Command.EOH))
            verdict = yield self._stage("eoh", packets, Step.NR_EOH)
            if verdict.disposition.value != "accept" or self.messageDone:
                return verdict
        if self._wants(Step.NOBODY):
            body = message.body
            for start in range(0, len(body), codec.BODY_CHUNK):
                chunk = [codec.body(body[start : start + codec.BODY_CHUNK])]
                if not self._wants(Step.NR_BODY):
                    self._protocol.send(chunk)
                    continue
                reply, early = yield self._protocol.exchange(chunk)
                if any(not _isProgress(e) for e in early):
                    raise FilterProtocolError("modification in the body")
                if isinstance(reply, codec.Reply) and reply.kind is ReplyKind.SKIP:
                    if not self.negotiation.steps & Step.SKIP:
                        raise FilterProtocolError("skip without SMFIP_SKIP")
                    break
                verdict = self._decide("body", reply)
                if verdict.disposition.value != "accept" or self.messageDone:
                    return verdict
        packets = self._macros(Stage.EOM, Command.BODYEOB, values)
        packets.append(codec.simple(Command.BODYEOB))
        reply, early = yield self._protocol.exchange(packets)
        self._inTransaction = False
        verdict = self._decide("eom", reply)
        self.messageDone = False
        if verdict.disposition.value != "accept":
            return verdict
        modifications, quarantine = self._modifications(early)
        return Verdict.accept(modifications, quarantine=quarantine)

    def _modifications(self, early: list[Any]) -> tuple[list[Modification], str | None]:
        allowed = self.negotiation.actions
        modifications: list[Modification] = []
        body: list[bytes] | None = None
        quarantine = None
        for item in early:
            if _isProgress(item):
                continue
            if isinstance(item, AddRecipient):
                need = Action.ADDRCPT_PAR if item.parameters else Action.ADDRCPT
                if not allowed & need and not allowed & Action.ADDRCPT_PAR:
                    raise FilterProtocolError(f"{type(item).__name__} not negotiated")
            else:
                need = _NEEDS.get(type(item), Action(0))
                if not need or not allowed & need:
                    raise FilterProtocolError(f"{type(item).__name__} not negotiated")
            if isinstance(item, codec.BodyChunk):
                body = [] if body is None else body
                body.append(item.data)
            elif isinstance(item, codec.Quarantine):
                quarantine = item.reason or self.name
            else:
                modifications.append(item)
        if body is not None:
            modifications.append(ReplaceBody(b"".join(body)))
        return modifications, quarantine

    def abort(self) -> None:
        """
        End an open transaction (RSET, or a refusal by someone else).
        """
        self._protocol.send(self._endTransaction())

    def quit(self) -> None:
        """
        End the conversation (C{SMFIC_QUIT}) and close the connection.
        """
        self._protocol.close()

    def drop(self) -> None:
        """
        Drop the connection at once (after a timeout: its state is
        unknown).
        """
        self._protocol.abort()


def _isProgress(item: Any) -> bool:
    return isinstance(item, codec.Reply) and item.kind is ReplyKind.PROGRESS
