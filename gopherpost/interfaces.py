"""
The seams between GopherPost's parts.

Data flows one way: socket -> inbound protocol -> delivery policy -> spool ->
relay queue -> client -> remote.  Everything that crosses a module boundary
does so through one of these interfaces.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from zope.interface import Attribute, Interface

if TYPE_CHECKING:
    from gopherpost.spool import Envelope

__all__ = ["IAuditLog", "IAuditSubscription", "IPeerAddress", "IRelayQueue"]


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


class IRelayQueue(Interface):
    """
    The outbound queue, told about each newly spooled message.
    """

    def messageSpooled(queueId: str, dateDirectory: str, envelope: Envelope | None = None) -> None:
        """
        A message with recipients outside our local domains is durably in the
        spool under C{dateDirectory} (e.g. C{"2026-11-22"}); schedule it.

        @param envelope: its envelope, when the caller has it at hand (in the
            same process), which spares reading it back from the spool.
        """
