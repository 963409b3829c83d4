"""
The seams between GopherPost's parts.

Data flows one way: socket -> inbound protocol -> delivery policy -> spool ->
spool observers (relay queue) -> client -> remote.  Everything that crosses a module boundary
does so through one of these interfaces.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from zope.interface import Attribute, Interface

if TYPE_CHECKING:
    from gopherpost.deliveryevents import DeliveryEvent
    from gopherpost.spool import Envelope

__all__ = [
    "IAuditLog",
    "IAuditSubscription",
    "IDeliveryObserver",
    "IPeerAddress",
    "ISpoolObserver",
]


class IAuditSubscription(Interface):
    """
    A handle on one subscriber of an L{IAuditLog}.
    """

    def cancel() -> None:
        """
        Stop delivering events to this subscriber; idempotent.
        """


class IAuditLog(Interface):
    """
    Structured audit events, fanned out to subscribers.

    Event names are dotted, e.g. C{"session.start"}, C{"message.queued"},
    C{"delivery.success"}.  Fields are plain JSON-able values.  Fields named
    C{sender}, C{recipient} or C{recipients} (when a list of addresses) carry
    mail addresses and are only kept when debugging is on.
    """

    def emit(event: str, **fields: object) -> None:
        """
        Record one event.  Never blocks, never raises.
        """

    def subscribe(callback: object) -> IAuditSubscription:
        """
        Call C{callback(eventDict)} for every later event.

        @return: a subscription to cancel.
        """


class IPeerAddress(Interface):
    """
    Credentials: the network address a client connects from.

    The allow-list checker authenticates these; a later AUTH checker may
    combine them with a user name.
    """

    host = Attribute("The client's IP address as text (IPv4-mapped IPv6 unmapped).")
    port = Attribute("The client's port.")


class ISpoolObserver(Interface):
    """
    Told about every message the spool commits: the relay queue now; the
    message index and webhooks later.
    """

    def messageCommitted(envelope: Envelope) -> None:
        """
        The message described by C{envelope} is durably in the spool (its
        content and envelope are synced), whichever process committed it.

        Called on the reactor thread, before the committing client is told
        C{250}; it must return quickly (start work, do not do it) and must
        not raise (an exception is logged and the other observers are still
        told).
        """


class IDeliveryObserver(Interface):
    """
    Told by the relay queue what happened to relayed mail: the delivery
    events webhook now.
    """

    def deliveryEvent(event: DeliveryEvent) -> None:
        """
        One L{gopherpost.deliveryevents.DeliveryEvent} happened (a message
        was queued; a recipient was delivered, deferred, bounced or expired).

        Called on the reactor thread as soon as the queue knows (a bounce
        once its report is spooled, so that it carries the report's queue
        id); it must return quickly (record the event, do not deliver it)
        and must not raise (an exception is logged and the other observers
        are still told).
        """
