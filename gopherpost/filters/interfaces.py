# -*- test-case-name: tests.test_filters_policies -*-
"""
The seams between the content filters and the inbound chain.

The inbound session owns the objects described here; the filter policies
read them and, at the end of data, edit the message and the envelope
before the message is made durable.  The shapes are those of the inbound
chain's C{IPolicy}, C{SessionContext}, C{Transaction} and
C{IReceivedMessage} (gopherpost/inbound/), with the L{IEnvelopeEditor} that
changes recipients and sender, and the L{IFilterPolicy.disconnect} hook
that ends a milter conversation with its session.

Filters see the header section as it will be stored
(L{IFilterableMessage.fullHeaderSection}): our C{Received:} (SpamAssassin
finds the client's address and HELO there, as behind any MTA) and the
fields earlier policies added (OpenDMARC reads the C{Authentication-Results}
of the MX checks), as milters behind Postfix see Postfix's own
C{Received:}; header indexes in milter replies count them.
"""

from __future__ import annotations

from zope.interface import Attribute, Interface

__all__ = [
    "IContentScanner",
    "IEnvelopeEditor",
    "IFilterableMessage",
    "IFilterMetrics",
    "IFilterPolicy",
    "IFilterSession",
    "IFilterTransaction",
]


class IFilterSession(Interface):
    """
    What filters read of a session (the inbound C{SessionContext}).
    """

    clientAddress = Attribute("The client's IP address as text.")
    clientPort = Attribute("The client's port (0 if unknown).")
    serverName = Attribute("Our host name (C{SMTP_HOSTNAME}).")
    role = Attribute("The listener role (its C{name}, e.g. C{'smtp'}), or a string.")
    tls = Attribute("L{None}, or an object with C{version} and C{cipher} text.")
    helo = Attribute("The HELO/EHLO name, or L{None} before it.")
    authenticatedUser = Attribute("The AUTH user name, or L{None}.")
    mayRelay = Attribute("Whether the client may relay (its network, or AUTH).")


class IFilterTransaction(Interface):
    """
    What filters read of a mail transaction (the inbound C{Transaction}).
    """

    sender = Attribute("The reverse-path: an object whose C{text} is the address, or text.")
    parameters = Attribute("The MAIL parameters: a dict of upper-case keyword to value or None.")
    recipients = Attribute(
        "The accepted recipients: objects with C{address} (text) and C{parameters}."
    )

    def tag(name, value):
        """
        Record what a filter found (JSON-able); kept in the envelope's
        metadata.
        """


class IFilterableMessage(Interface):
    """
    The message at the end of data, before it is made durable (the part of
    the inbound C{IReceivedMessage} that filters use).
    """

    queueId = Attribute("The queue id it will be stored under.")
    fullHeaderSection = Attribute(
        "The header section as it will be stored (bytes, each field ending "
        "in CRLF): our C{Received:}, the fields policies added, the "
        "message's own."
    )
    deadline = Attribute(
        "When the end-of-data policies must have answered (the clock's "
        "seconds), or L{None}: the filters' time counts against the "
        "client's DATA time."
    )

    def readBody():
        """
        The body after the header section's empty line.

        @return: a L{Deferred} firing with the bytes.
        """

    def replaceFullHeaderSection(section):
        """
        Make C{section} (bytes, fields ending in CRLF) the whole header
        section the message is stored with.
        """

    def replaceBody(body):
        """
        Make C{body} (bytes, CRLF line ends) the message's body.

        @return: L{None}, or a L{Deferred} that fires when it is written.
        """


class IEnvelopeEditor(Interface):
    """
    Changes the envelope of a transaction for the filters (milters add and
    delete recipients and change the sender).
    """

    def sender(transaction):
        """
        The reverse-path as text (C{""} for C{<>}).
        """

    def recipients(transaction):
        """
        The recipients' addresses as text, in order.
        """

    def check(address):
        """
        Whether C{address} (text, no angle brackets) may be put in the
        envelope (a valid path).
        """

    def setSender(transaction, address, parameters):
        """
        Make C{address} (text, C{""} for C{<>}) the reverse-path, with
        C{parameters} (ESMTP text, e.g. C{"SIZE=100"}) as its MAIL
        parameters.
        """

    def addRecipient(transaction, address, parameters):
        """
        Add a recipient after the others.
        """

    def removeRecipient(transaction, address):
        """
        Remove the recipient C{address} (compared without case).
        """


class IContentScanner(Interface):
    """
    A filter that looks at a whole message once, at the end of data
    (rspamd, spamd).
    """

    name = Attribute("A short name for logs and metrics, e.g. C{'rspamd'}.")
    timeout = Attribute("Seconds a scan may take.")

    def scan(request):
        """
        Scan a message.

        @param request: a L{gopherpost.filters.envelope.ScanRequest}.
        @return: a L{Deferred} firing with a
            L{gopherpost.filters.verdict.Verdict}, or failing when the
            filter could not answer.
        """


class IFilterPolicy(Interface):
    """
    A policy of the inbound chain (the shape of the inbound C{IPolicy}),
    with the hook a milter conversation needs at the end of a session.

    Every hook returns L{None} (go on), a reply (an object made by the
    reply factory the policy was given: C{code}, C{text}, C{reason}), or a
    L{Deferred} of either, and never fails.  A reply whose C{reason} is
    C{"discard"} (code 250) at the end of data means: tell the client 250
    and throw the message away.
    """

    name = Attribute("A short name for logs.")

    def connect(context):
        """
        A client connected.
        """

    def helo(context):
        """
        HELO or EHLO.
        """

    def mail(context, transaction):
        """
        MAIL FROM.
        """

    def rcpt(context, transaction, recipient):
        """
        RCPT TO C{recipient}.
        """

    def data(context, transaction):
        """
        DATA, before the C{354}.
        """

    def message(context, transaction, message):
        """
        The end of data (C{message} is an L{IFilterableMessage}).
        """

    def disconnect(context):
        """
        The session ended (the connection closed); frees what the policy
        kept for it.
        """


class IFilterMetrics(Interface):
    """
    Where the policies count their verdicts (a
    L{gopherpost.filters.metrics.FilterMetrics}, or in a worker process an
    L{gopherpost.filters.metrics.AuditFilterMetrics}).
    """

    def verdict(filterName, result, seconds, score):
        """
        One verdict or failure of C{filterName}: its C{result} label, the
        seconds it took and its spam score (or L{None}).
        """
