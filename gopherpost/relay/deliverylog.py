# -*- test-case-name: tests.test_relay_deliverylog -*-
"""
The relay queue's delivery log: one line per fact, in the layout Postfix's
operators grep, each starting with the message's queue id::

    66192812E28A5A6A2F8: from=<alice@example.org>, size=1234, nrcpt=2
    66192812E28A5A6A2F8: to=<bob@example.net>, relay=mx.example.net[192.0.2.25]:25,
        delay=1.2, delays=0.01/0.3/0.9, dsn=2.0.0, status=sent (250 2.0.0 Ok: queued as X)
    66192812E28A5A6A2F8: sender non-delivery notification: 66192812F0C1D2E3A4B
    66192812E28A5A6A2F8: removed

(the C{to=} line is one line).  C{delay} is the time since the message
arrived; C{delays} splits it into the time before this attempt (in the
queue), before its transaction could start (DNS, earlier hosts,
connection set-up, TLS) and in its transaction.  C{relay=none} when no host
was reached (the DNS failed).  A delivery over a connection taken up again
(L{gopherpost.relay.connectioncache}) says which use of the connection it
was after the relay, as Postfix does: C{relay=...:25, conn_use=2, delay=}.
Lines are logged at info level, addresses included (as any MTA's log has
them; the spool's file names stay hashed).
Each event also carries the facts as fields (C{queueId}, C{recipient},
C{status}, C{dsn}, C{relay}) for log processors.
"""

from __future__ import annotations

from twisted.logger import Logger

from gopherpost.relay.courier import RecipientDelivery

__all__ = [
    "SENT",
    "DEFERRED",
    "BOUNCED",
    "formatSeconds",
    "relayOf",
    "queuedLine",
    "recipientLine",
    "tlsOf",
    "DeliveryLog",
]

#: The C{status=} values.
SENT = "sent"
DEFERRED = "deferred"
BOUNCED = "bounced"


def formatSeconds(seconds: float) -> str:
    """
    Seconds as Postfix writes them: two decimals at most, trailing zeros
    dropped (C{0}, C{0.05}, C{1.2}), whole seconds from 10 on.
    """
    seconds = max(0.0, seconds)
    if seconds >= 10:
        return f"{seconds:.0f}"
    return f"{seconds:.2f}".rstrip("0").rstrip(".") or "0"


def relayOf(host: str, address: str, port: int) -> str:
    """
    C{host[address]:port}, or C{none} when no host was reached.
    """
    if not host:
        return "none"
    if not address:
        return host
    return f"{host}[{address}]:{port}"


def _clean(text: str) -> str:
    # Remote text goes into one log line.
    return " ".join(text.split())


def queuedLine(queueId: str, sender: str, size: int, recipients: int) -> str:
    """
    The line for a message entering the relay queue.
    """
    return f"{queueId}: from=<{sender}>, size={size}, nrcpt={recipients}"


def recipientLine(
    queueId: str,
    recipient: str,
    relay: str,
    delay: float,
    delays: tuple[float, float, float],
    dsn: str,
    status: str,
    reason: str,
    tls: str = "",
    connectionUse: int = 1,
) -> str:
    """
    The line for one recipient's outcome.

    @param tls: the transport security of the connection, e.g.
        C{"dane/verified"} (issue 19; C{""}: not known, left out).
    @param connectionUse: which use of its connection this was; from 2 on
        it is written as Postfix writes it, C{conn_use=N} after the relay.
    """
    # After the reason: the Postfix-shaped prefix stays as parsers expect.
    security = f", tls={tls}" if tls else ""
    reuse = f", conn_use={connectionUse}" if connectionUse > 1 else ""
    return (
        f"{queueId}: to=<{recipient}>, relay={relay}{reuse}, delay={formatSeconds(delay)}, "
        f"delays={'/'.join(formatSeconds(d) for d in delays)}, dsn={dsn}, "
        f"status={status} ({_clean(reason)}){security}"
    )


def tlsOf(facts: object) -> str:
    """
    C{policy/result} for a connection's L{gopherpost.tlspolicy.policy.TLSFacts}
    (C{dane/verified}, C{mta-sts/verified}, C{verify/unverified},
    C{may/cleartext}, ...), or C{""} for L{None}.
    """
    if facts is None:
        return ""
    if not getattr(facts, "tls", False):
        result = "cleartext"
    else:
        result = "verified" if getattr(facts, "verified", False) else "unverified"
    return f"{getattr(facts, 'label', '')}/{result}"


class DeliveryLog:
    """
    Writes the delivery log lines to a L{Logger}.

    @param log: where the lines go (default: this module's).
    """

    def __init__(self, log: Logger | None = None) -> None:
        self._log = log if log is not None else Logger(namespace=__name__)

    def queued(self, queueId: str, sender: str, size: int, recipients: int) -> None:
        """
        A message entered the relay queue.
        """
        self._log.info(
            "{line}",
            line=queuedLine(queueId, sender, size, recipients),
            queueId=queueId,
            status="queued",
        )

    def outcome(
        self,
        queueId: str,
        recipient: str,
        status: str,
        reason: str,
        dsn: str,
        received: float,
        attemptStarted: float,
        now: float,
        delivery: RecipientDelivery | None = None,
    ) -> None:
        """
        One recipient's outcome: L{SENT}, L{DEFERRED} or L{BOUNCED}.

        @param reason: the remote's reply or the local reason.
        @param received: when the message arrived.
        @param attemptStarted: when this attempt started.
        @param delivery: the courier's report, for the relay and the
            connection and transfer times (L{None}: no host tried).
        """
        tls = ""
        use = 1
        if delivery is not None:
            relay = relayOf(delivery.host, delivery.address, delivery.port)
            connect, transfer = delivery.connectSeconds, delivery.transferSeconds
            tls = tlsOf(delivery.tls)
            use = delivery.connectionUse
        else:
            relay, connect, transfer = "none", 0.0, 0.0
        delays = (max(0.0, attemptStarted - received), connect, transfer)
        self._log.info(
            "{line}",
            line=recipientLine(
                queueId, recipient, relay, now - received, delays, dsn, status, reason, tls, use
            ),
            queueId=queueId,
            recipient=recipient,
            status=status,
            dsn=dsn,
            relay=relay,
        )

    def notification(self, queueId: str, bounceId: str) -> None:
        """
        A delivery status notification about C{queueId} went to the sender
        as the message C{bounceId}.
        """
        self._log.info(
            "{line}",
            line=f"{queueId}: sender non-delivery notification: {bounceId}",
            queueId=queueId,
            bounceId=bounceId,
        )

    def removed(self, queueId: str) -> None:
        """
        The message left the relay queue (every recipient final, or deleted).
        """
        self._log.info("{line}", line=f"{queueId}: removed", queueId=queueId, status="removed")

    def operator(self, queueId: str, action: str) -> None:
        """
        An operator's action on the message (C{held}, C{released}, ...).
        """
        self._log.info(
            "{line}", line=f"{queueId}: {action} by the operator", queueId=queueId, action=action
        )
