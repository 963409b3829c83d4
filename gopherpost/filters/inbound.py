# -*- test-case-name: tests.test_filters_inbound -*-
"""
The content filters on the inbound policy chain: their replies are the
chain's L{Reply}, and the envelope edits milters make (add or delete a
recipient, change the sender) become the session's L{Mailbox} and
L{EnvelopeRecipient} values, checked as RFC 5321 paths like any client's.

L{makeInboundFilters} is the wiring's entry point, for the main process
and for each inbound worker process alike; its policies go at the end of
every listener role's chain (L{gopherpost.filters.service}).
"""

from __future__ import annotations

from typing import Any

from gopherpost.config import Settings
from gopherpost.filters.envelope import AttributeEnvelopeEditor
from gopherpost.filters.interfaces import IFilterMetrics
from gopherpost.filters.service import ContentFilters, makeContentFilters
from gopherpost.inbound.address import AddressError, Mailbox, parsePath
from gopherpost.inbound.context import EnvelopeRecipient
from gopherpost.inbound.replies import Reply

__all__ = ["inboundEditor", "makeInboundFilters", "senderMailbox", "recipientMailbox"]


def _path(address: str, sender: bool) -> Mailbox:
    try:
        # A milter may name any address, UTF-8 included (as SMTPUTF8 would).
        return parsePath(b"<" + address.encode("utf-8") + b">", sender=sender, smtputf8=True)
    except AddressError as e:
        raise ValueError(e.reply.text) from None


def senderMailbox(address: str) -> Mailbox:
    """
    A reverse-path from a milter (C{""} for C{<>}).

    @raise ValueError: when it is not a valid path.
    """
    return _path(address, sender=True)


def recipientMailbox(address: str, parameters: dict[str, str | None]) -> EnvelopeRecipient:
    """
    A recipient from a milter, with its RCPT parameters.

    @raise ValueError: when it is not a valid forward-path.
    """
    return EnvelopeRecipient(_path(address, sender=False), dict(parameters))


def inboundEditor() -> AttributeEnvelopeEditor:
    """
    The envelope editor for the session's C{Transaction}.
    """
    return AttributeEnvelopeEditor(makeSender=senderMailbox, makeRecipient=recipientMailbox)


def makeInboundFilters(
    settings: Settings, reactor: Any, metrics: IFilterMetrics | None = None
) -> ContentFilters:
    """
    The filters the settings switch on, shaped for the inbound chain.

    @param metrics: where verdicts are counted (default: a new
        L{gopherpost.filters.metrics.FilterMetrics}; a worker process
        passes an L{gopherpost.filters.metrics.AuditFilterMetrics}).
    """
    return makeContentFilters(
        settings, reactor, metrics=metrics, replyType=Reply, editor=inboundEditor()
    )
