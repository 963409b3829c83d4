# -*- test-case-name: tests.test_deliveryevents -*-
"""
What happened to relayed mail, as plain values: the relay queue reports
these to L{gopherpost.interfaces.IDeliveryObserver} objects (the delivery
events webhook is one).

One value per fact: a message entered the relay queue (L{MessageQueued});
one recipient was delivered (L{RecipientDelivered}), deferred for a later
attempt (L{RecipientDeferred}), refused for good (L{RecipientBounced}) or
given up on when its queue lifetime ran out (L{RecipientExpired}).  Times are
seconds since the epoch, from the queue's clock.  The values know nothing of
HTTP or JSON: the webhook decides how they are written.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

__all__ = [
    "DeliveryEvent",
    "MessageQueued",
    "RecipientDelivered",
    "RecipientDeferred",
    "RecipientBounced",
    "RecipientExpired",
    "EVENT_TYPES",
]


@dataclass(frozen=True)
class DeliveryEvent:
    """
    The fields every event has.

    @cvar type: the event's name in webhooks and logs.
    @ivar queueId: the spooled message the event is about.
    @ivar time: when it happened (seconds since the epoch).
    """

    type: ClassVar[str] = ""

    queueId: str
    time: float


@dataclass(frozen=True)
class MessageQueued(DeliveryEvent):
    """
    A message with recipients outside our local domains entered the relay
    queue (once per message, when it is first spooled; not again when the
    queue is reloaded at start-up).

    @ivar sender: the reverse-path, C{""} for the null sender.
    @ivar recipients: the recipients to relay to.
    @ivar size: the message's size in bytes.
    """

    type: ClassVar[str] = "queued"

    sender: str
    recipients: tuple[str, ...]
    size: int


@dataclass(frozen=True)
class RecipientDelivered(DeliveryEvent):
    """
    A remote server accepted the message for one recipient.

    @ivar remoteHost: the host name of the server (MX or smarthost).
    @ivar remoteIP: the address connected to.
    @ivar remotePort: the port connected to.
    @ivar reply: the remote's reply to the end of data (or to RCPT),
        e.g. C{"250 2.0.0 Ok: queued as 4XYZ"}.
    @ivar tlsVersion: e.g. C{"TLSv1.3"}, or L{None} for cleartext.
    @ivar tlsVerified: whether the certificate was verified (L{None} for
        cleartext).
    """

    type: ClassVar[str] = "delivered"

    recipient: str
    remoteHost: str
    remoteIP: str | None = None
    remotePort: int | None = None
    reply: str = ""
    tlsVersion: str | None = None
    tlsVerified: bool | None = None


@dataclass(frozen=True)
class RecipientDeferred(DeliveryEvent):
    """
    An attempt for one recipient failed temporarily; it will be retried.

    @ivar attempt: how many attempts were made so far (1 after the first).
    @ivar error: the reason, one line (a remote reply or a local error).
    @ivar nextAttempt: when the next attempt is due.
    @ivar remoteHost: the last server tried, if any.
    """

    type: ClassVar[str] = "deferred"

    recipient: str
    attempt: int
    error: str
    nextAttempt: float
    remoteHost: str | None = None


@dataclass(frozen=True)
class RecipientBounced(DeliveryEvent):
    """
    Delivery to one recipient failed for good.

    @ivar dsnCode: the RFC 3463 status, e.g. C{"5.1.1"}.
    @ivar dsnText: the reason, e.g. the remote's reply.
    @ivar bounceQueueId: the queue id of the delivery status notification
        sent to the sender, or L{None} when none was sent (null sender).
    @ivar remoteHost: the server that refused, if any.
    """

    type: ClassVar[str] = "bounced"

    recipient: str
    dsnCode: str
    dsnText: str
    bounceQueueId: str | None = None
    remoteHost: str | None = None


@dataclass(frozen=True)
class RecipientExpired(DeliveryEvent):
    """
    One recipient was still undelivered when the message's queue lifetime
    (C{SMTP_QUEUE_LIFETIME}) ran out: the queue gave up (and bounced it;
    report this instead of L{RecipientBounced} for that recipient).

    @ivar lastError: the last temporary error.
    @ivar dsnCode: the status of the bounce, normally C{"5.4.7"}.
    @ivar bounceQueueId: as for L{RecipientBounced}.
    """

    type: ClassVar[str] = "expired"

    recipient: str
    lastError: str
    dsnCode: str = "5.4.7"
    bounceQueueId: str | None = None


#: Every event class by its type name.
EVENT_TYPES: dict[str, type[DeliveryEvent]] = {
    cls.type: cls
    for cls in (
        MessageQueued,
        RecipientDelivered,
        RecipientDeferred,
        RecipientBounced,
        RecipientExpired,
    )
}
