# -*- test-case-name: tests.test_relay_transaction,tests.test_relay_session -*-
"""
One message's bookkeeping inside an outbound SMTP session: the envelope to
send, the outcome of each of its recipients as the replies settle them, and
the failure that ends a session for every recipient still open.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass

from gopherpost.relay.outcome import (
    DEFERRED,
    SENT,
    DeliveryResult,
    RecipientOutcome,
    Reply,
    cleanText,
    defaultEnhancedCode,
    statusFor,
)

__all__ = [
    "Envelope",
    "SessionFailure",
    "Transaction",
    "STOPPED_TEXT",
    "stoppedFailure",
    "validAddress",
    "unreachedResults",
]

#: Why the recipients of a stopped session were not tried.
STOPPED_TEXT = "delivery stopped: the relay is shutting down"

_BAD_ADDRESS = re.compile(r"[\x00-\x1f\x7f<>]")


@dataclass(frozen=True)
class Envelope:
    """
    One message to send.

    @ivar sender: the reverse-path without angle brackets; C{""} for C{<>}.
    @ivar recipients: forward-paths without angle brackets.
    @ivar message: the message, headers and body (any line ends).
    """

    sender: str
    recipients: tuple[str, ...]
    message: bytes


def validAddress(address: str, allowEmpty: bool) -> bool:
    """
    Whether C{address} can go between angle brackets in MAIL or RCPT: at
    most 254 characters, no control characters, no brackets.

    @param allowEmpty: whether C{""} is valid (the null reverse-path).
    """
    if not address:
        return allowEmpty
    return len(address) <= 254 and _BAD_ADDRESS.search(address) is None


class SessionFailure(Exception):
    """
    The session cannot go on; every unsettled recipient gets this outcome.

    @ivar stage: where it failed (a L{gopherpost.relay.channel.TIMEOUTS}
        key, C{"connect"}, C{"TLS"} or C{"stopped"}).
    @ivar polite: whether the connection is still a clean SMTP session, so
        we say QUIT rather than just closing.
    @ivar abort: whether to drop the connection at once.
    """

    def __init__(
        self,
        stage: str,
        code: int,
        enhancedCode: str,
        text: str,
        remote: bool,
        status: str = DEFERRED,
        polite: bool = False,
        abort: bool = False,
    ) -> None:
        super().__init__(text)
        self.abort = abort
        self.stage = stage
        self.code = code
        self.enhancedCode = enhancedCode
        self.text = text
        self.remote = remote
        self.status = status
        self.polite = polite

    @classmethod
    def fromReply(
        cls,
        stage: str,
        reply: Reply,
        prefix: str = "",
        status: str = DEFERRED,
        polite: bool = True,
        abort: bool = False,
    ) -> SessionFailure:
        """
        The failure a remote reply causes.

        @param prefix: what went wrong, put before the reply in the text.
        """
        text = reply.text
        if prefix:
            text = f"{prefix}: {reply.code} {text}".rstrip()
        return cls(
            stage,
            reply.code,
            reply.enhancedCode or defaultEnhancedCode(reply.code),
            text,
            True,
            status,
            polite=polite and reply.code != 421 and not abort,
            abort=abort,
        )

    def outcome(self, recipient: str) -> RecipientOutcome:
        """
        The outcome this failure gives C{recipient}.
        """
        return RecipientOutcome(
            recipient, self.status, self.code, self.enhancedCode, self.text, self.remote
        )


def stoppedFailure(polite: bool) -> SessionFailure:
    """
    The failure of a session stopped because the relay shuts down.
    """
    return SessionFailure("stopped", 421, "4.3.2", STOPPED_TEXT, False, polite=polite)


class Transaction:
    """
    One envelope's progress in a session.

    @ivar recipients: the distinct recipients, in order.
    @ivar outcomes: the settled ones.
    @ivar accepted: whether the server answered 2xx to the final dot.
    @ivar failureStage: where the message last failed.
    @ivar startedAt: when its first command went out (L{None}: never).
    @ivar endedAt: when its outcome became known.
    @ivar result: its L{DeliveryResult}, once reported.
    """

    def __init__(self, envelope: Envelope) -> None:
        self.envelope = envelope
        self.recipients: tuple[str, ...] = tuple(dict.fromkeys(envelope.recipients))
        self.outcomes: dict[str, RecipientOutcome] = {}
        self.accepted = False
        self.failureStage: str | None = None
        self.startedAt: float | None = None
        self.endedAt: float | None = None
        #: The result as reported (L{None} until then).
        self.result: DeliveryResult | None = None

    def settle(
        self, recipient: str, status: str, code: int, enhanced: str, text: str, remote: bool
    ) -> None:
        """
        Give C{recipient} its outcome, unless it has one already.
        """
        if recipient not in self.outcomes:
            self.outcomes[recipient] = RecipientOutcome(
                recipient, status, code, enhanced, text, remote
            )

    def settleReply(self, recipients: Sequence[str], reply: Reply, stage: str) -> None:
        """
        Settle C{recipients} with the remote C{reply} to C{stage}.
        """
        status = statusFor(reply.code)
        if status != SENT and recipients:
            self.failureStage = stage
        enhanced = reply.enhancedCode or defaultEnhancedCode(reply.code)
        text = cleanText(reply.text)
        for recipient in recipients:
            self.settle(recipient, status, reply.code, enhanced, text, True)

    def settleAll(self, failure: SessionFailure) -> None:
        """
        Settle every recipient still open with C{failure}.
        """
        if self.unsettled():
            self.failureStage = failure.stage
        for recipient in self.recipients:
            if recipient not in self.outcomes:
                self.outcomes[recipient] = failure.outcome(recipient)

    def unsettled(self) -> list[str]:
        """
        The recipients without an outcome yet.
        """
        return [r for r in self.recipients if r not in self.outcomes]

    @property
    def transferSeconds(self) -> float:
        """
        How long the transaction took (C{0} if it never started).
        """
        if self.startedAt is None or self.endedAt is None or self.endedAt < self.startedAt:
            return 0.0
        return self.endedAt - self.startedAt


def unreachedResults(
    envelopes: Sequence[Envelope],
    host: str,
    address: str,
    port: int,
    failure: SessionFailure,
    seconds: float,
) -> list[DeliveryResult]:
    """
    The results for envelopes that never reached a session: every recipient
    gets C{failure}'s outcome.

    @param seconds: how long the failed attempt to connect lasted.
    """
    results = []
    for envelope in envelopes:
        transaction = Transaction(envelope)
        transaction.settleAll(failure)
        results.append(
            DeliveryResult(
                host=host,
                address=address,
                port=port,
                outcomes=tuple(transaction.outcomes[r] for r in transaction.recipients),
                failureStage=failure.stage,
                connectSeconds=seconds,
            )
        )
    return results
