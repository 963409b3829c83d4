# -*- test-case-name: tests.test_checks_policies -*-
"""
The MX checks as policies of the inbound chain (L{IMXPolicy}).

Clients with relay permission and authenticated users skip the sender and
client checks (that is submission, as with Postfix's C{permit_mynetworks}
and rspamd); only the per-user message rate applies to them, and forged
C{Authentication-Results} fields are removed from everyone's mail.

A check that cannot get an answer never lets a message through silently
and never rejects it permanently: where it would reject, the reply is a
C{4xx}; where it only records, the result says C{temperror}.  A state store
that does not answer lets the message through (logged and counted): losing
a counter must not lose mail.
"""

from __future__ import annotations

import weakref
from collections.abc import Callable
from typing import Any

from twisted.internet import defer
from twisted.logger import Logger
from twisted.python.failure import Failure
from zope.interface import implementer

from gopherpost.checks.abuse import BanList, Greylister, RateLimiter
from gopherpost.checks.authresults import HEADER, claimsAuthservId, formatAuthenticationResults
from gopherpost.checks.dkimverify import DKIMVerifier
from gopherpost.checks.dmarc import DMARCChecker
from gopherpost.checks.dnsbl import DNSBLChecker, DNSBLResult
from gopherpost.checks.interfaces import (
    IMessageView,
    IMXPolicy,
    ISessionView,
    ITransactionView,
    IViolationSink,
    Reply,
)
from gopherpost.checks.metrics import CheckMetrics
from gopherpost.checks.spf import SPFChecker, SPFResult

__all__ = [
    "QUARANTINE_HEADER",
    "addressText",
    "notesOf",
    "senderText",
    "BanPolicy",
    "BufferedMessage",
    "DNSBLPolicy",
    "GreylistPolicy",
    "MessageAuthenticationPolicy",
    "PolicyBase",
    "RateLimitPolicy",
    "SPFPolicy",
    "isSubmission",
]

_log = Logger()

#: The header field a quarantined message gets.
QUARANTINE_HEADER = "X-GopherPost-Quarantine"


def notesOf(thing: object) -> dict[str, Any]:
    """
    A dict of the policies' own notes that lives as long as C{thing} (a
    session or a transaction): its C{notes} attribute when it has one,
    else a dict kept aside, dropped when C{thing} is.
    """
    notes = getattr(thing, "notes", None)
    if isinstance(notes, dict):
        return notes
    key = id(thing)
    kept = _notes.get(key)
    if kept is None:
        kept = _notes[key] = {}
        weakref.finalize(thing, _notes.pop, key, None)
    return kept


_notes: dict[int, dict[str, Any]] = {}


def senderText(transaction: ITransactionView) -> str:
    """
    The reverse-path as text (C{""} for C{<>}).
    """
    sender = transaction.sender
    return str(getattr(sender, "text", sender) or "")


def addressText(recipient: object) -> str:
    """
    A recipient's address as text.
    """
    return str(getattr(recipient, "address", recipient))


def _authentication(transaction: ITransactionView) -> dict[str, Any]:
    """
    The transaction's C{authentication} tag, created (and tagged) once.
    """
    notes = notesOf(transaction)
    results = notes.get("authentication")
    if results is None:
        results = notes["authentication"] = {}
        transaction.tag("authentication", results)
    return results


def isSubmission(session: ISessionView) -> bool:
    """
    Whether a session is submission: its client may relay or has
    authenticated.
    """
    return bool(session.mayRelay or session.authenticatedUser)


def _storeFailed(what: str, metrics: CheckMetrics) -> Callable[[Failure], None]:
    def failed(failure: Failure) -> None:
        metrics.inc("smtp_state_store_errors")
        _log.warn(
            "{what} skipped: no state store answered ({problem})",
            what=what,
            problem=failure.getErrorMessage(),
        )
        return None

    return failed


@implementer(IMXPolicy)
class PolicyBase:
    """
    A policy whose hooks all say "go on"; subclasses override some.
    """

    name = "base"

    def connect(self, session: ISessionView) -> object:
        return None

    def helo(self, session: ISessionView) -> object:
        return None

    def mail(self, session: ISessionView, transaction: ITransactionView) -> object:
        return None

    def rcpt(
        self, session: ISessionView, transaction: ITransactionView, recipient: object
    ) -> object:
        return None

    def data(self, session: ISessionView, transaction: ITransactionView) -> object:
        return None

    def message(
        self, session: ISessionView, transaction: ITransactionView, message: IMessageView
    ) -> object:
        return None


@implementer(IMXPolicy, IViolationSink)
class BanPolicy(PolicyBase):
    """
    C{421 4.7.0} at connect for a banned client; counts violations.
    """

    name = "bans"

    def __init__(self, bans: BanList, metrics: CheckMetrics, hostname: str) -> None:
        self._bans = bans
        self._metrics = metrics
        self._hostname = hostname

    def connect(self, session: ISessionView) -> object:
        if session.mayRelay:
            return None

        def decide(until: float | None) -> Reply | None:
            if until is None:
                return None
            self._metrics.inc("smtp_banned_connections")
            return (
                421,
                f"4.7.0 {self._hostname} Too many errors from [{session.clientAddress}], "
                "try again later",
            )

        d = self._bans.bannedUntil(session.clientAddress)
        return d.addCallbacks(decide, _storeFailed("ban check", self._metrics))

    def violation(self, session: ISessionView, kind: str) -> defer.Deferred:
        """
        See L{IViolationSink.violation}; clients with relay permission are
        never banned.
        """
        if session.mayRelay:
            return defer.succeed(None)

        def counted(until: float | None) -> None:
            if until is not None:
                self._metrics.inc("smtp_bans")
                _log.info(
                    "Client [{client}] banned until {until:.0f} after too many violations "
                    "(last: {kind})",
                    client=session.clientAddress,
                    until=until,
                    kind=kind,
                )

        d = self._bans.violation(session.clientAddress)
        return d.addCallbacks(counted, _storeFailed("violation count", self._metrics))


@implementer(IMXPolicy)
class RateLimitPolicy(PolicyBase):
    """
    Connections, messages and recipients per client per minute; messages
    per authenticated user per hour.
    """

    name = "rate-limits"

    def __init__(self, limiter: RateLimiter, metrics: CheckMetrics, hostname: str) -> None:
        self._limiter = limiter
        self._metrics = metrics
        self._hostname = hostname

    def _decide(self, d: defer.Deferred, limit: str, reply: Reply) -> defer.Deferred:
        def decide(within: bool) -> Reply | None:
            if within:
                return None
            self._metrics.inc("smtp_rate_limited", limit)
            return reply

        return d.addCallbacks(decide, _storeFailed(f"{limit} rate limit", self._metrics))

    def connect(self, session: ISessionView) -> object:
        if session.mayRelay:
            return None
        return self._decide(
            self._limiter.connection(session.clientAddress),
            "connections",
            (
                421,
                f"4.7.0 {self._hostname} Error: too many connections from "
                f"[{session.clientAddress}]; rate limit exceeded, try again later",
            ),
        )

    def mail(self, session: ISessionView, transaction: ITransactionView) -> object:
        if session.authenticatedUser:
            user = str(session.authenticatedUser)
            return self._decide(
                self._limiter.userMessage(user),
                "user_messages",
                (
                    450,
                    f"4.7.1 Error: too many messages from {user}; rate limit exceeded, try again later",
                ),
            )
        if session.mayRelay:
            return None
        return self._decide(
            self._limiter.message(session.clientAddress),
            "messages",
            (
                450,
                f"4.7.1 Error: too many messages from [{session.clientAddress}]; "
                "rate limit exceeded, try again later",
            ),
        )

    def rcpt(
        self, session: ISessionView, transaction: ITransactionView, recipient: object
    ) -> object:
        if isSubmission(session):
            return None
        return self._decide(
            self._limiter.recipient(session.clientAddress),
            "recipients",
            (
                450,
                f"4.7.1 Error: too many recipients from [{session.clientAddress}]; "
                "rate limit exceeded, try again later",
            ),
        )


@implementer(IMXPolicy)
class DNSBLPolicy(PolicyBase):
    """
    Looks the client up while the session starts; a listing rejects its
    RCPTs (so that the envelope is logged).
    """

    name = "dnsbl"

    def __init__(
        self,
        checker: DNSBLChecker,
        metrics: CheckMetrics,
        violations: IViolationSink | None = None,
    ) -> None:
        self._checker = checker
        self._metrics = metrics
        self._violations = violations

    def connect(self, session: ISessionView) -> object:
        if not isSubmission(session):
            lookup = self._checker.check(session.clientAddress)
            waiting: list[defer.Deferred] = []
            outcome: list[DNSBLResult] = []

            def arrived(result: DNSBLResult) -> None:
                self._count(session, result)
                outcome.append(result)
                for d in waiting:
                    d.callback(result)
                waiting.clear()

            lookup.addCallback(arrived)
            notesOf(session)["dnsbl"] = (outcome, waiting)
        return None

    def _count(self, session: ISessionView, result: DNSBLResult) -> None:
        for zone, reason in result.errors:
            self._metrics.inc("smtp_dnsbl_errors", zone, "error_answer")
            _log.warn(
                "DNSBL {zone}: {reason} for [{client}]: not taken as a listing",
                zone=zone,
                reason=reason,
                client=session.clientAddress,
            )
        for zone, reason in result.temporary:
            self._metrics.inc("smtp_dnsbl_errors", zone, "temporary")
            _log.warn("DNSBL {zone} lookup failed: {reason}", zone=zone, reason=reason)
        for zone, _ in result.listed:
            self._metrics.inc("smtp_dnsbl_hits", zone)
        if result.listed and self._violations is not None:
            self._violations.violation(session, "dnsbl")

    def rcpt(
        self, session: ISessionView, transaction: ITransactionView, recipient: object
    ) -> object:
        state = notesOf(session).get("dnsbl")
        if state is None:
            return None
        outcome, waiting = state
        if outcome:
            return self._reply(session, outcome[0])
        d: defer.Deferred = defer.Deferred()
        waiting.append(d)
        return d.addCallback(lambda result: self._reply(session, result))

    def _reply(self, session: ISessionView, result: DNSBLResult) -> Reply | None:
        if result.zone is not None:
            return (
                554,
                f"5.7.1 Service unavailable; client [{session.clientAddress}] "
                f"blocked using {result.zone}",
            )
        if result.temporary:
            zone = result.temporary[0][0]
            return (
                451,
                f"4.7.1 Service unavailable; client [{session.clientAddress}] could not be "
                f"checked against {zone}, try again later",
            )
        return None


@implementer(IMXPolicy)
class SPFPolicy(PolicyBase):
    """
    SPF at MAIL: kept for DMARC and Authentication-Results; with
    C{SMTP_SPF_REJECT=fail} a fail is refused (C{550 5.7.23}) and a
    temperror deferred (C{451 4.7.24}).
    """

    name = "spf"

    def __init__(self, checker: SPFChecker, metrics: CheckMetrics, reject: bool) -> None:
        self._checker = checker
        self._metrics = metrics
        self.reject = reject

    def mail(self, session: ISessionView, transaction: ITransactionView) -> object:
        if isSubmission(session):
            return None
        d = self._checker.check(session.clientAddress, senderText(transaction), session.helo or "")

        def decide(result: SPFResult) -> Reply | None:
            self._metrics.inc("smtp_spf_results", result.result)
            notesOf(transaction)["spf"] = result
            _authentication(transaction)["spf"] = result.asMetadata()
            if not self.reject:
                return None
            if result.result == "fail":
                return (550, "5.7.23 SPF validation failed")
            if result.result == "temperror":
                return (451, "4.7.24 SPF validation error, try again later")
            return None

        return d.addCallback(decide)


@implementer(IMXPolicy)
class GreylistPolicy(PolicyBase):
    """
    C{451 4.7.1 Greylisted, try again in N seconds} at RCPT for a new
    (client network, sender, recipient).
    """

    name = "greylist"

    def __init__(self, greylister: Greylister, metrics: CheckMetrics) -> None:
        self._greylister = greylister
        self._metrics = metrics

    def rcpt(
        self, session: ISessionView, transaction: ITransactionView, recipient: object
    ) -> object:
        if isSubmission(session):
            return None

        def decide(decision: Any) -> Reply | None:
            if decision is None:
                return None
            if decision.passed:
                self._metrics.inc(
                    "smtp_greylist", "whitelisted" if decision.whitelisted else "pass"
                )
                return None
            self._metrics.inc("smtp_greylist", "greylisted")
            return (451, f"4.7.1 Greylisted, try again in {decision.wait} seconds")

        d = self._greylister.check(
            session.clientAddress, senderText(transaction), addressText(recipient)
        )
        return d.addCallbacks(decide, _storeFailed("greylisting", self._metrics))


@implementer(IMXPolicy)
class MessageAuthenticationPolicy(PolicyBase):
    """
    End of data: DKIM, ARC and DMARC, one C{Authentication-Results} field,
    and the DMARC disposition.

    Forged C{Authentication-Results} fields (with our authserv-id) and
    C{X-GopherPost-Quarantine} fields are removed from every message.
    """

    name = "message-authentication"

    def __init__(
        self,
        verifier: DKIMVerifier,
        dmarc: DMARCChecker,
        metrics: CheckMetrics,
        authservId: str,
        enforce: bool,
    ) -> None:
        self._verifier = verifier
        self._dmarc = dmarc
        self._metrics = metrics
        self.authservId = authservId
        self.enforce = enforce

    def message(
        self, session: ISessionView, transaction: ITransactionView, message: IMessageView
    ) -> object:
        removed = message.removeHeaders(
            HEADER, lambda value: claimsAuthservId(value, self.authservId)
        )
        removed += message.removeHeaders(QUARANTINE_HEADER, lambda value: True)
        if removed:
            _log.info(
                "Removed {count} forged Authentication-Results/quarantine field(s) from "
                "a message of [{client}]",
                count=removed,
                client=session.clientAddress,
            )
        if isSubmission(session):
            return None
        return defer.maybeDeferred(message.read).addCallback(
            self._check, session, transaction, message
        )

    @defer.inlineCallbacks
    def _check(
        self,
        raw: Any,
        session: ISessionView,
        transaction: ITransactionView,
        message: IMessageView,
    ) -> Any:
        spf = notesOf(transaction).get("spf")
        dkimResults, arc = yield defer.gatherResults(
            [self._verifier.verify(raw), self._verifier.verifyARC(raw)]
        )
        fromValues = [value for name, value in message.headers if name.lower() == "from"]
        dmarc = yield self._dmarc.check(fromValues, spf, dkimResults, arc)
        for r in dkimResults:
            self._metrics.inc("smtp_dkim_results", r.result)
        if not dkimResults:
            self._metrics.inc("smtp_dkim_results", "none")
        self._metrics.inc("smtp_arc_results", arc.result)
        disposition = dmarc.disposition if self.enforce else "none"
        self._metrics.inc("smtp_dmarc_results", dmarc.result, disposition)
        results = _authentication(transaction)
        results["dkim"] = [r.asMetadata() for r in dkimResults]
        results["arc"] = arc.asMetadata()
        results["dmarc"] = dict(dmarc.asMetadata(), enforced=self.enforce)
        message.prependHeader(
            HEADER, formatAuthenticationResults(self.authservId, spf, dkimResults, dmarc, arc)
        )
        if disposition == "reject":
            return (550, f"5.7.1 Email rejected per DMARC policy for {dmarc.domain}")
        if disposition == "tempfail":
            return (
                451,
                f"4.7.1 DMARC policy of {dmarc.domain} could not be checked, try again later",
            )
        if disposition == "quarantine":
            transaction.tag("quarantine", "dmarc")
            message.prependHeader(QUARANTINE_HEADER, "dmarc")
        return None


@implementer(IMessageView)
class BufferedMessage:
    """
    An L{IMessageView} over a message held in memory: for tests, and for a
    session that keeps small messages in memory.
    """

    def __init__(self, data: bytes) -> None:
        """
        @param data: the message as received (CRLF line ends).
        """
        self._original = data
        head, separator, self._body = data.partition(b"\r\n\r\n")
        if not separator:
            head, self._body = data, b""
        self.headers: list[tuple[str, str]] = []
        for line in head.split(b"\r\n"):
            text = line.decode("utf-8", "surrogateescape")
            if text[:1] in (" ", "\t") and self.headers:
                name, value = self.headers[-1]
                self.headers[-1] = (name, value + "\r\n" + text)
            elif ":" in text:
                name, _, value = text.partition(":")
                self.headers.append((name, value))

    def read(self) -> defer.Deferred:
        return defer.succeed(self._original)

    def prependHeader(self, name: str, value: str) -> None:
        self.headers.insert(0, (name, " " + value))

    def removeHeaders(self, name: str, predicate: Any) -> int:
        kept = [(n, v) for n, v in self.headers if n.lower() != name.lower() or not predicate(v)]
        removed = len(self.headers) - len(kept)
        self.headers = kept
        return removed

    def render(self) -> bytes:
        """
        The message with the header fields as they now are.
        """
        head = b"".join(f"{n}:{v}\r\n".encode("utf-8", "surrogateescape") for n, v in self.headers)
        return head + b"\r\n" + self._body
