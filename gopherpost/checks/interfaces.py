# -*- test-case-name: tests.test_checks_policies -*-
"""
The seams between the MX checks and the inbound chain.

The inbound session (the roles issue's framing / session / protocol) owns
the objects these interfaces describe; the policies only read them, tag the
transaction and edit the message's header fields.  The shapes follow the
inbound chain's C{IPolicy}, C{SessionContext}, C{Transaction} and
C{IReceivedMessage}; L{gopherpost.checks.policies.notesOf} keeps a policy's
own per-session and per-transaction state aside.

Replies are C{(code, text)} with the enhanced status code first in the
text, e.g. C{(550, "5.7.23 SPF validation failed")}.  A policy hook returns
L{None} (go on), a reply (stop with it), or a L{Deferred} of either.  A
C{421} reply closes the connection after it is sent.
"""

from __future__ import annotations

from zope.interface import Attribute, Interface

__all__ = [
    "IMXPolicy",
    "IMessageView",
    "ISessionView",
    "ITransactionView",
    "IViolationSink",
    "Reply",
]

Reply = tuple[int, str]


class ISessionView(Interface):
    """
    What the checks read of one SMTP session.
    """

    clientAddress = Attribute("The client's IP address as text (the real client's, behind PROXY).")
    helo = Attribute("The HELO/EHLO name, or None before HELO.")
    mayRelay = Attribute("Whether the client has relay permission (its network).")
    authenticatedUser = Attribute("The AUTH user name, or None.")


class ITransactionView(Interface):
    """
    What the checks read of one mail transaction (MAIL to end of data).
    """

    sender = Attribute(
        "The reverse-path: text ('' for <>), or an object whose 'text' attribute is that."
    )

    def tag(name: str, value: object) -> None:
        """
        Record what a policy learned (JSON-able); kept in the envelope's
        metadata with the message.
        """


class IMessageView(Interface):
    """
    The received message at the end of data, before it is made durable.
    """

    headers = Attribute(
        "The header fields as received: a list of (name, value) str pairs, "
        "value without the colon, folding kept."
    )

    def read() -> object:
        """
        The whole message as received (header, blank line, body; CRLF).

        @return: a Deferred firing with L{bytes}.
        """

    def prependHeader(name: str, value: str) -> None:
        """
        Add a header field at the top (where trace fields go).
        """

    def removeHeaders(name: str, predicate: object) -> int:
        """
        Remove every field named C{name} (any case) whose value
        C{predicate(value)} is true.

        @return: how many were removed.
        """


class IViolationSink(Interface):
    """
    Told about what a client does wrong, for bans: the inbound session
    calls it for RCPTs to unknown or relay-denied addresses, protocol
    errors and failed AUTH; the DNSBL policy for listings.
    """

    def violation(session: ISessionView, kind: str) -> object:
        """
        Count one violation (C{kind}: e.g. C{"unknown_recipient"},
        C{"relay_denied"}, C{"protocol"}, C{"auth"}, C{"dnsbl"}).

        @return: a Deferred the caller need not wait for; it never fails.
        """


class IMXPolicy(Interface):
    """
    A policy of the inbound chain.  Each hook returns None, a L{Reply} or a
    Deferred of either, and never fails (a problem is a 4xx reply or a
    logged pass, as the check's documentation says).
    """

    name = Attribute("A short name for logs, e.g. 'spf'.")

    def connect(session: ISessionView) -> object:
        """
        A client connected (before the banner).
        """

    def helo(session: ISessionView) -> object:
        """
        HELO or EHLO was accepted; C{session.helo} is set.
        """

    def mail(session: ISessionView, transaction: ITransactionView) -> object:
        """
        MAIL FROM; C{transaction.sender} is set.
        """

    def rcpt(session: ISessionView, transaction: ITransactionView, recipient: object) -> object:
        """
        RCPT TO C{recipient} (text, or an object whose C{address} is the
        text), after the relay and recipient checks passed.
        """

    def data(session: ISessionView, transaction: ITransactionView) -> object:
        """
        DATA, before the C{354}.
        """

    def message(
        session: ISessionView, transaction: ITransactionView, message: IMessageView
    ) -> object:
        """
        End of data, before the message is made durable.
        """
