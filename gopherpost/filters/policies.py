# -*- test-case-name: tests.test_filters_policies -*-
"""
The content filters as policies of the inbound chain.

L{MilterPolicy} holds every configured milter: it opens one conversation
per milter when a client connects and consults them in order at connect,
HELO, MAIL, RCPT, DATA and the end of data (so a milter can refuse a
recipient).  L{ScannerPolicy} asks one content scanner (rspamd, spamd) at
the end of data.

At the end of data each filter sees the message as it will be stored (our
C{Received:} and the fields earlier policies added included, see
L{gopherpost.filters.interfaces}) and as the filters before it left it (a
working copy); the edits reach the real message and envelope only once
every filter of the policy has accepted, so a refusal or a failure
half-way never leaves a message half-filtered.

Time: each filter has its timeout, and at the end of data all of them
together have what was left of the client's DATA time at its final dot
(C{message.deadline}, L{gopherpost.inbound.timeouts}): a filter that would
start with no time left, or whose time runs out, stands for its failure
action as a timeout.  So the C{250} never waits longer than the filters'
timeouts, nor past the client's time.  A discarded message is answered
C{250 2.0.0 Ok: queued as ID}, as Postfix does: the client cannot tell.

A filter that is down, too slow or breaks its protocol stands for its
failure action (L{gopherpost.filters.failure}); a milter that failed is
not asked again in that session, and a tempfail or reject failure answers
every later stage of the session, as Postfix's C{milter_default_action}
does.

Every verdict is counted and timed (L{FilterMetrics}), logged in one line
(with the queue id at the end of data), and recorded in the transaction's
C{filters} tag (the envelope's metadata): C{{"rspamd": {"result": "accept",
"score": 2.0, ...}, ...}}.  A quarantine note becomes the C{quarantine} tag
and an C{X-GopherPost-Quarantine} header field.
"""

from __future__ import annotations

import weakref
from collections.abc import Callable, Generator, Sequence
from dataclasses import dataclass, field
from typing import Any

from twisted.internet import defer
from twisted.internet.defer import Deferred
from twisted.internet.interfaces import IReactorTime
from twisted.logger import Logger
from twisted.python.failure import Failure
from zope.interface import implementer

from gopherpost.filters.envelope import (
    AttributeEnvelopeEditor,
    FilterMessage,
    SessionFacts,
    addressText,
    senderText,
)
from gopherpost.filters.failure import FilterFailure, failureReason, failureVerdict, withTimeout
from gopherpost.filters.interfaces import (
    IContentScanner,
    IEnvelopeEditor,
    IFilterMetrics,
    IFilterPolicy,
)
from gopherpost.filters.milter.client import MilterClient
from gopherpost.filters.milter.conversation import MilterConversation
from gopherpost.filters.verdict import Disposition, InsertHeader, Verdict

__all__ = [
    "QUARANTINE_HEADER",
    "FilterReply",
    "MilterPolicy",
    "ScannerPolicy",
]

_log = Logger()

#: The header field of a quarantined message (the MX checks use it too).
QUARANTINE_HEADER = b"X-GopherPost-Quarantine"


@dataclass(frozen=True)
class FilterReply:
    """
    A reply, in the shape of the inbound chain's C{Reply} (which the
    policies make instead when given it as C{replyType}).

    @ivar reason: C{"content-filter"} for a refusal, C{"discard"} for a
        message to throw away after a 250.
    """

    code: int
    text: str = ""
    reason: str | None = None
    close: bool = False

    @property
    def isError(self) -> bool:
        return self.code >= 400

    def closing(self) -> FilterReply:
        """
        This reply, followed by closing the connection.
        """
        return FilterReply(self.code, self.text, self.reason, True)


ReplyType = Callable[..., Any]


def _argument(key: str, value: str | None) -> str:
    return key if value is None else f"{key}={value}"


def _arguments(parameters: Any) -> list[str]:
    if not isinstance(parameters, dict):
        return []
    return [_argument(str(k), v) for k, v in parameters.items()]


class _Notes:
    """
    State kept per session (context) aside, dropped with the context.
    """

    def __init__(self) -> None:
        self._kept: dict[int, Any] = {}

    def get(self, thing: object) -> Any:
        return self._kept.get(id(thing))

    def put(self, thing: object, value: Any, cleanup: Callable[[Any], None]) -> None:
        key = id(thing)
        self._kept[key] = value

        def gone() -> None:
            left = self._kept.pop(key, None)
            if left is not None:
                cleanup(left)

        weakref.finalize(thing, gone)

    def pop(self, thing: object) -> Any:
        return self._kept.pop(id(thing), None)


class _FilterBase:
    """
    What both policies share: replies, metrics, logs, tags.
    """

    name = "filters"

    def __init__(
        self,
        metrics: IFilterMetrics,
        clock: IReactorTime,
        editor: IEnvelopeEditor | None,
        replyType: ReplyType | None,
    ) -> None:
        self.metrics = metrics
        self._clock = clock
        self._editor = editor or AttributeEnvelopeEditor()
        self._replyType = replyType or FilterReply

    def _unexpected(self, failure: Failure, what: str) -> Any:
        """
        A bug, not a filter's failure: logged with its traceback, answered
        as a local error.
        """
        _log.failure("Content filter {what} failed", failure, what=what)
        return self._replyType(451, "4.3.0 Error: local error in processing", reason="policy-error")

    def _reply(self, verdict: Verdict, queueId: str | None = None) -> Any:
        text = verdict.text
        if verdict.disposition is Disposition.DISCARD:
            reason = "discard"
            if queueId:
                text = f"2.0.0 Ok: queued as {queueId}"
        else:
            reason = "content-filter"
        reply = self._replyType(verdict.code, text, reason=reason)
        if verdict.code == 421 and hasattr(reply, "closing"):
            reply = reply.closing()
        return reply

    def _record(
        self,
        filterName: str,
        verdict: Verdict,
        started: float,
        facts: SessionFacts,
        transaction: Any = None,
        queueId: str | None = None,
        stage: str = "message",
        problem: str | None = None,
    ) -> None:
        quiet = stage != "message" and verdict.result == "accept" and problem is None
        if quiet:
            # Only the verdict about the message (or a refusal or failure
            # on the way) counts; the stages a milter let pass do not.
            return
        self.metrics.verdict(
            filterName, verdict.result, max(0.0, self._clock.seconds() - started), verdict.score
        )
        if transaction is not None:
            entry: dict[str, Any] = {"result": verdict.result}
            if verdict.score is not None:
                entry["score"] = verdict.score
            if verdict.threshold is not None:
                entry["threshold"] = verdict.threshold
            for key, value in verdict.details.items():
                entry.setdefault(key, value)
            if verdict.refuses:
                entry["reply"] = f"{verdict.code} {verdict.text}"
            _filterTags(transaction)[filterName] = entry
        score = "" if verdict.score is None else f" score={verdict.score:g}"
        if verdict.threshold is not None:
            score += f"/{verdict.threshold:g}"
        reply = f" ({verdict.code} {verdict.text})" if verdict.refuses else ""
        why = f": {problem}" if problem else ""
        log = _log.warn if problem else _log.info
        log(
            "Filter {filter}: {result} at {stage} for {queueId} from [{client}]{score}{reply}{why}",
            filter=filterName,
            result=verdict.result,
            stage=stage,
            queueId=queueId or "NOQUEUE",
            client=facts.clientAddress,
            score=score,
            reply=reply,
            why=why,
        )

    def _quarantine(
        self, working: FilterMessage, transaction: Any, filterName: str, why: str
    ) -> None:
        note = f"{filterName}: {why}"
        working.quarantine.append(note)
        working.apply(
            [InsertHeader(0, QUARANTINE_HEADER, note.encode("utf-8", "replace"))], self._editor
        )
        # Another policy (DMARC) may have asked to hold it too.
        tags = getattr(transaction, "tags", None)
        earlier = tags.get("quarantine") if isinstance(tags, dict) else None
        notes = [earlier] if isinstance(earlier, str) and earlier else []
        notes += [n for n in working.quarantine if n not in notes]
        transaction.tag("quarantine", "; ".join(notes))

    def _timeLeft(self, message: Any, timeout: float) -> float:
        """
        The seconds a filter may take at the end of data: its timeout, or
        less when the client's DATA time runs out first.

        @raise FilterFailure: when no time is left.
        """
        deadline = getattr(message, "deadline", None)
        if deadline is None:
            return timeout
        left = deadline - self._clock.seconds()
        if left <= 0:
            raise FilterFailure("timeout", "no time left of the client's DATA time")
        return min(timeout, left)

    def connect(self, context: Any) -> Any:
        return None

    def helo(self, context: Any) -> Any:
        return None

    def mail(self, context: Any, transaction: Any) -> Any:
        return None

    def rcpt(self, context: Any, transaction: Any, recipient: Any) -> Any:
        return None

    def data(self, context: Any, transaction: Any) -> Any:
        return None

    def message(self, context: Any, transaction: Any, message: Any) -> Any:
        return None

    def disconnect(self, context: Any) -> None:
        return None


def _filterTags(transaction: Any) -> dict[str, Any]:
    """
    The transaction's C{filters} tag, created (and tagged) once.
    """
    tags = getattr(transaction, "tags", None)
    existing = tags.get("filters") if isinstance(tags, dict) else None
    if isinstance(existing, dict):
        return existing
    created: dict[str, Any] = {}
    transaction.tag("filters", created)
    return created


@implementer(IFilterPolicy)
class ScannerPolicy(_FilterBase):
    """
    One content scanner at the end of data.

    @param scanner: the scanner (rspamd, spamd).
    @param failAction: C{SMTP_FILTER_FAIL}.
    @param scope: C{inbound} (not for clients that may relay or
        authenticated) or C{all}.
    @param replyType: C{replyType(code, text, reason=...)} makes a reply
        (the inbound chain's C{Reply}); default L{FilterReply}.
    """

    def __init__(
        self,
        scanner: IContentScanner,
        failAction: str,
        scope: str,
        metrics: IFilterMetrics,
        clock: IReactorTime,
        editor: IEnvelopeEditor | None = None,
        replyType: ReplyType | None = None,
    ) -> None:
        super().__init__(metrics, clock, editor, replyType)
        self.scanner = scanner
        self.name = scanner.name
        self.failAction = failAction
        self.scope = scope

    def message(self, context: Any, transaction: Any, message: Any) -> Any:
        facts = SessionFacts.fromContext(context)
        if self.scope == "inbound" and facts.mayRelay:
            return None
        d = self._scan(facts, transaction, message)
        return d.addErrback(self._unexpected, self.name)

    @defer.inlineCallbacks
    def _scan(
        self, facts: SessionFacts, transaction: Any, message: Any
    ) -> Generator[Deferred[Any], Any, Any]:
        started = self._clock.seconds()
        problem = None
        try:
            seconds = self._timeLeft(message, self.scanner.timeout)
            body = yield message.readBody()
            working = FilterMessage.fromTransaction(
                message.queueId, message.fullHeaderSection, body, transaction
            )
            verdict = yield withTimeout(
                defer.maybeDeferred(self.scanner.scan, working.scanRequest(facts)),
                seconds,
                self._clock,
            )
            if not verdict.refuses and verdict.disposition is not Disposition.DISCARD:
                working.apply(verdict.modifications, self._editor)
        except Exception:
            failure = failureReason(Failure())
            verdict = failureVerdict(self.failAction, failure)
            problem = failure.problem
            working = None
        self._record(
            self.name, verdict, started, facts, transaction, message.queueId, problem=problem
        )
        if verdict.refuses or verdict.disposition is Disposition.DISCARD:
            return self._reply(verdict, message.queueId)
        if working is None:
            return None
        if verdict.quarantine is not None:
            self._quarantine(working, transaction, self.name, verdict.quarantine)
        yield working.writeBack(message, transaction, self._editor)
        return None


@dataclass
class _Slot:
    """
    One milter in one session.

    @ivar stuck: the failure verdict that answers every later stage.
    @ivar off: the milter is not asked again in this session.
    """

    client: MilterClient
    conversation: MilterConversation | None = None
    stuck: Verdict | None = None
    off: bool = False
    problem: str | None = None


@dataclass
class _Session:
    facts: SessionFacts
    slots: list[_Slot] = field(default_factory=list)


def _closeSession(session: _Session) -> None:
    for slot in session.slots:
        if slot.conversation is not None:
            slot.conversation.quit()
            slot.conversation = None


@implementer(IFilterPolicy)
class MilterPolicy(_FilterBase):
    """
    Every milter, in order, at every stage.

    @param clients: one L{MilterClient} per C{SMTP_MILTERS} entry.
    @param failAction: C{SMTP_FILTER_FAIL} (a milter's C{default=} wins).
    """

    name = "milters"

    def __init__(
        self,
        clients: Sequence[MilterClient],
        failAction: str,
        metrics: IFilterMetrics,
        clock: IReactorTime,
        editor: IEnvelopeEditor | None = None,
        replyType: ReplyType | None = None,
    ) -> None:
        super().__init__(metrics, clock, editor, replyType)
        self.clients = tuple(clients)
        self.failAction = failAction
        self._sessions = _Notes()

    def _action(self, slot: _Slot) -> str:
        return slot.client.spec.default or self.failAction

    def _inScope(self, slot: _Slot, facts: SessionFacts) -> bool:
        return slot.client.spec.scope == "all" or not facts.mayRelay

    def _failed(
        self,
        slot: _Slot,
        failure: FilterFailure,
        stage: str,
        started: float,
        session: _Session,
        transaction: Any = None,
        queueId: str | None = None,
    ) -> Verdict:
        """
        A milter failed: its failure action, from now on.
        """
        verdict = failureVerdict(self._action(slot), failure)
        self._record(
            slot.client.name,
            verdict,
            started,
            session.facts,
            transaction,
            queueId,
            stage=stage,
            problem=failure.problem,
        )
        if slot.conversation is not None:
            slot.conversation.drop()
            slot.conversation = None
        slot.off = True
        if verdict.refuses:
            slot.stuck = verdict
        return verdict

    # The session

    def connect(self, context: Any) -> Any:
        if not self.clients:
            return None
        facts = SessionFacts.fromContext(context)
        session = _Session(facts, [_Slot(client) for client in self.clients])
        self._sessions.put(context, session, _closeSession)
        return self._connect(session).addErrback(self._unexpected, "milter connect")

    @defer.inlineCallbacks
    def _connect(self, session: _Session) -> Generator[Deferred[Any], Any, Any]:
        started = self._clock.seconds()
        wanted = [slot for slot in session.slots if self._inScope(slot, session.facts)]
        for slot in session.slots:
            if slot not in wanted:
                slot.off = True
        opened = yield defer.DeferredList(
            [slot.client.open() for slot in wanted], consumeErrors=True
        )
        for slot, (ok, result) in zip(wanted, opened):
            if ok:
                slot.conversation = result
            else:
                self._failed(slot, failureReason(result), "connect", started, session)
        return (yield self._stage(session, "connect", lambda c: c.connect(session.facts)))

    def disconnect(self, context: Any) -> None:
        session = self._sessions.pop(context)
        if session is not None:
            _closeSession(session)

    def _session(self, context: Any) -> _Session | None:
        session = self._sessions.get(context)
        if session is not None:
            session.facts = SessionFacts.fromContext(context)
        return session

    @defer.inlineCallbacks
    def _stage(
        self,
        session: _Session,
        stage: str,
        call: Callable[[MilterConversation], Deferred[Verdict]],
        transaction: Any = None,
    ) -> Generator[Deferred[Any], Any, Any]:
        """
        One stage, milter after milter; the first refusal ends it.
        """
        for slot in session.slots:
            if slot.stuck is not None:
                return self._reply(slot.stuck)
            conversation = slot.conversation
            if slot.off or conversation is None or not self._inScope(slot, session.facts):
                continue
            started = self._clock.seconds()
            try:
                verdict = yield withTimeout(
                    defer.maybeDeferred(call, conversation), slot.client.timeout, self._clock
                )
            except Exception:
                verdict = self._failed(
                    slot, failureReason(Failure()), stage, started, session, transaction
                )
                if verdict.refuses:
                    return self._reply(verdict)
                continue
            self._record(slot.client.name, verdict, started, session.facts, stage=stage)
            if conversation.sessionDone:
                conversation.quit()
                slot.conversation = None
                slot.off = True
            if verdict.refuses:
                return self._reply(verdict)
            if verdict.disposition is Disposition.DISCARD and transaction is not None:
                # Discarded at MAIL, RCPT or DATA: thrown away at the end.
                transaction.tag("discard", slot.client.name)
        return None

    def helo(self, context: Any) -> Any:
        session = self._session(context)
        if session is None:
            return None
        return self._stage(session, "helo", lambda c: c.helo(session.facts)).addErrback(
            self._unexpected, "milter HELO"
        )

    def mail(self, context: Any, transaction: Any) -> Any:
        session = self._session(context)
        if session is None:
            return None
        sender = senderText(transaction)
        arguments = _arguments(getattr(transaction, "parameters", None))
        return self._stage(
            session, "mail", lambda c: c.mail(session.facts, sender, arguments), transaction
        ).addErrback(self._unexpected, "milter MAIL")

    def rcpt(self, context: Any, transaction: Any, recipient: Any) -> Any:
        session = self._session(context)
        if session is None:
            return None
        sender = senderText(transaction)
        address = addressText(recipient)
        arguments = _arguments(getattr(recipient, "parameters", None))
        return self._stage(
            session,
            "rcpt",
            lambda c: c.rcpt(session.facts, sender, address, arguments),
            transaction,
        ).addErrback(self._unexpected, "milter RCPT")

    def data(self, context: Any, transaction: Any) -> Any:
        session = self._session(context)
        if session is None:
            return None
        sender = senderText(transaction)
        return self._stage(
            session, "data", lambda c: c.data(session.facts, sender), transaction
        ).addErrback(self._unexpected, "milter DATA")

    def message(self, context: Any, transaction: Any, message: Any) -> Any:
        session = self._session(context)
        if session is None:
            return None
        if _discarded(transaction):
            return self._reply(Verdict.discard(), message.queueId)
        return self._message(session, transaction, message).addErrback(
            self._unexpected, "milter end of data"
        )

    @defer.inlineCallbacks
    def _message(
        self, session: _Session, transaction: Any, message: Any
    ) -> Generator[Deferred[Any], Any, Any]:
        queueId = message.queueId
        live = [
            slot
            for slot in session.slots
            if slot.stuck is not None
            or (
                not slot.off
                and slot.conversation is not None
                and self._inScope(slot, session.facts)
            )
        ]
        if not live:
            return None
        body = yield message.readBody()
        working = FilterMessage.fromTransaction(
            queueId, message.fullHeaderSection, body, transaction
        )
        for slot in live:
            if slot.stuck is not None:
                return self._reply(slot.stuck)
            conversation = slot.conversation
            assert conversation is not None
            started = self._clock.seconds()
            try:
                seconds = self._timeLeft(message, slot.client.timeout)
                verdict = yield withTimeout(
                    defer.maybeDeferred(conversation.message, session.facts, working),
                    seconds,
                    self._clock,
                )
                if not verdict.refuses and verdict.disposition is Disposition.ACCEPT:
                    working.apply(verdict.modifications, self._editor)
            except Exception:
                verdict = self._failed(
                    slot,
                    failureReason(Failure()),
                    "message",
                    started,
                    session,
                    transaction,
                    queueId,
                )
                if verdict.refuses:
                    return self._reply(verdict)
                continue
            self._record(slot.client.name, verdict, started, session.facts, transaction, queueId)
            if verdict.refuses or verdict.disposition is Disposition.DISCARD:
                return self._reply(verdict, queueId)
            if verdict.quarantine is not None:
                self._quarantine(working, transaction, slot.client.name, verdict.quarantine)
        if not working.recipients:
            # The milters removed every recipient: nothing to deliver.
            return self._reply(Verdict.discard(), queueId)
        yield working.writeBack(message, transaction, self._editor)
        return None


def _discarded(transaction: Any) -> bool:
    tags = getattr(transaction, "tags", None)
    return isinstance(tags, dict) and "discard" in tags
