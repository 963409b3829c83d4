# -*- test-case-name: tests.test_delivery -*-
"""
The sink of accepted transactions: each DATA becomes an
L{IncomingMessage} headed by our C{Received:} trace header, committed to
the spool with the transaction's recipients and metadata.  The spool tells
its observers (the relay queue) of each commit; nothing here knows about
relaying.
"""

from __future__ import annotations

import email.utils
import functools
import re
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from typing import Any

from twisted.internet.defer import Deferred, maybeDeferred
from twisted.logger import Logger
from twisted.python.failure import Failure
from zope.interface import implementer

from gopherpost.inbound.context import SessionContext, Transaction
from gopherpost.inbound.interfaces import IMessageSink
from gopherpost.inbound.message import IncomingMessage
from gopherpost.interfaces import IAuditLog
from gopherpost.spool import Envelope, Spool

__all__ = ["SpoolDelivery", "traceHeader"]

_log = Logger()

_UNSAFE_NAME = re.compile(rb"[^\x21-\x7e]")
_UNPRINTABLE = re.compile(r"[^\x20-\x7e\t]")
# With SMTPUTF8 (RFC 6532) a field may hold UTF-8, never a control character.
_UNPRINTABLE_UTF8 = re.compile(r"[\x00-\x08\x0a-\x1f\x7f-\x9f\u2028\u2029]")


def traceHeader(
    serverName: str,
    context: SessionContext,
    recipients: Sequence[str],
    queueId: str | None,
    now: float,
    smtputf8: bool = False,
) -> bytes:
    """
    An RFC 5321 section 4.4 C{Received:} header, folded, ending in CRLF.

    Only printable US-ASCII goes in (RFC 5322 field bodies): the HELO name
    has anything else replaced by C{?}, and so would any other part.  For a
    transaction with SMTPUTF8 the protocol is C{UTF8SMTP...} (RFC 6531
    3.7.3) and the recipient may be UTF-8 (RFC 6532).
    """
    helo = context.helo or ""
    heloText = _UNSAFE_NAME.sub(b"?", helo.encode("utf-8", "replace")[:255]).decode("ascii")
    protocol = context.protocolName
    if smtputf8 and protocol.startswith("ESMTP"):
        protocol = "UTF8SMTP" + protocol[5:]
    lines = [
        f"Received: from {heloText or 'unknown'} ([{context.clientAddress}])",
        f"\tby {serverName} (GopherPost) with {protocol}" + (f" id {queueId}" if queueId else ""),
    ]
    if context.tls is not None:
        lines.append(f"\t({context.tls.description})")
    stamp = _dateText(int(now))
    if len(recipients) == 1:
        lines.append(f"\tfor <{recipients[0]}>; {stamp}")
    else:
        lines[-1] += ";"
        lines.append(f"\t{stamp}")
    text = "\r\n".join(lines)
    if smtputf8 and not text.isascii():
        text = "\r\n\t".join(_UNPRINTABLE_UTF8.sub("?", line) for line in text.split("\r\n\t"))
        return text.encode("utf-8") + b"\r\n"
    if not (text.isascii() and text.replace("\r\n\t", "").isprintable()):
        text = "\r\n\t".join(_UNPRINTABLE.sub("?", line) for line in text.split("\r\n\t"))
    return text.encode("ascii") + b"\r\n"


@functools.lru_cache(maxsize=4)
def _dateText(second: int) -> str:
    """
    An RFC 5322 date for a whole second (messages of the same second share
    it: formatting one costs more than the rest of the header).
    """
    return email.utils.format_datetime(datetime.fromtimestamp(second, UTC))


@implementer(IMessageSink)
class SpoolDelivery:
    """
    Accept mail into the spool.

    @param spool: where messages go.
    @param serverName: our host name, for the trace header.
    @param isLocalDomain: whether a domain is one of ours (recorded per
        recipient: the relay queue takes the others).
    @param audit: the audit log.
    @param runInThread: C{runInThread(f) -> Deferred}, to read a spilled
        body for a policy (default: at once).
    """

    def __init__(
        self,
        spool: Spool,
        serverName: str,
        isLocalDomain: Callable[[str], bool],
        audit: IAuditLog,
        runInThread: Callable[[Callable[[], Any]], Deferred[Any]] | None = None,
    ) -> None:
        self._spool = spool
        self._serverName = serverName
        self._isLocalDomain = isLocalDomain
        self._audit = audit
        self._runInThread = runInThread or maybeDeferred

    def newMessage(
        self, context: SessionContext, transaction: Transaction, now: float
    ) -> IncomingMessage:
        """
        Start the message of a transaction whose DATA was accepted.
        """
        queueId = self._spool.newQueueId()
        recipients = [r.address for r in transaction.recipients]
        trace = traceHeader(
            self._serverName, context, recipients, queueId, now, transaction.smtputf8
        )

        def commit(message: IncomingMessage) -> Deferred[Envelope]:
            return self._commit(message, context, transaction)

        return IncomingMessage(
            self._spool.newWriter(),
            queueId,
            trace,
            transaction.headers,
            commit,
            self._runInThread,
        )

    def _commit(
        self, message: IncomingMessage, context: SessionContext, transaction: Transaction
    ) -> Deferred[Envelope]:
        client = context.clientAddress
        d = self._spool.commit(
            message.writer,
            transaction.sender.text,
            [(r.address, self._isLocalDomain(r.mailbox.domain)) for r in transaction.recipients],
            client,
            context.helo or "",
            context.tls is not None,
            queueId=message.queueId,
            metadata={**transaction.metadata(), **context.metadata()},
        )

        # Whoever waits (the session: its 250) hears first; the audit event
        # and the log line come after, so the client waits for neither.
        acknowledged: Deferred[Envelope] = Deferred(lambda _: d.cancel())

        def failed(failure: Failure) -> None:
            if not acknowledged.called:
                acknowledged.errback(failure)

        def stored(envelope: Envelope) -> None:
            acknowledged.callback(envelope)
            self._audit.emit(
                "message.queued",
                queueId=envelope.queueId,
                client=client,
                size=envelope.size,
                recipients=len(envelope.recipients),
                tls=envelope.tls,
            )
            _log.info(
                "Accepted {queueId} from {client} size={size} recipients={count} tls={tls}"
                + ("" if context.authenticatedUser is None else " user={user}"),
                queueId=envelope.queueId,
                client=client,
                size=envelope.size,
                count=len(envelope.recipients),
                tls="yes" if envelope.tls else "no",
                user=context.authenticatedUser,
            )

        d.addCallbacks(stored, failed).addErrback(
            lambda failure: _log.failure("Reporting a stored message failed", failure)
        )
        return acknowledged
