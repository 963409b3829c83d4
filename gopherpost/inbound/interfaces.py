"""
The seams of the inbound side.

A session consults an ordered chain of L{IPolicy} objects at every stage
and hands accepted transactions to an L{IMessageSink}, which makes an
L{IIncomingMessage} for each DATA.  End-of-data policies see that message
as an L{IReceivedMessage}: its parsed header fields, its body, and the
edits they may make before it is made durable.
"""

from __future__ import annotations

from zope.interface import Attribute, Interface

__all__ = ["IPolicy", "IReceivedMessage", "IIncomingMessage", "IMessageSink"]


class IPolicy(Interface):
    """
    One check of the policy chain (allow-list, relay permission, SPF,
    DNSBL, greylisting, a milter ...).

    Every hook returns L{None} ("go on"), a
    L{gopherpost.inbound.replies.Reply}, or a L{Deferred} firing with
    either.  A reply ends the stage: a 4xx or 5xx refuses it (the client
    gets that reply), a 2xx accepts it at once without asking the policies
    after this one.  A hook that raises (or whose Deferred fails) is logged
    and answers C{451 4.3.0}.

    Hooks read the L{SessionContext} and may record what they learn on the
    L{Transaction} (C{tag}, C{addHeader}) or, at the end of data, edit the
    message (L{IReceivedMessage}).

    A policy may also have C{disconnect(context)} (not part of this
    interface): the chain calls it when the session's connection is gone,
    to free what the policy kept for the session.
    """

    name = Attribute("A short name for logs, e.g. C{'relay-permission'}.")

    def connect(context):
        """
        A client connected, before the banner.  A refusal closes the
        connection after the reply.
        """

    def helo(context):
        """
        HELO or EHLO; C{context.helo} and C{context.extended} are set.
        """

    def mail(context, transaction):
        """
        MAIL FROM; C{transaction.sender} and its parameters are set.
        """

    def rcpt(context, transaction, recipient):
        """
        RCPT TO for C{recipient} (an L{EnvelopeRecipient}, not yet in
        C{transaction.recipients}).
        """

    def data(context, transaction):
        """
        DATA, before the C{354}.
        """

    def message(context, transaction, message):
        """
        The end of data: C{message} (an L{IReceivedMessage}) is complete
        but not yet durable.  A refusal throws it away; otherwise it is
        committed and the client told C{250} with its queue id (the text of
        a 2xx reply from a policy is not used), except for a 2xx reply
        whose C{reason} is C{"discard"}: the message is thrown away and the
        client told that reply (a milter's or rspamd's discard).
        """


class IReceivedMessage(Interface):
    """
    A message at the end of data, as policies see it.
    """

    queueId = Attribute("The queue id the message will be stored under.")
    size = Attribute("Octets of content received (before our header fields).")
    headerSection = Attribute(
        "The message's own header section as received (bytes, each field "
        "ending in CRLF), without our C{Received:} header."
    )
    headers = Attribute(
        "The parsed header fields: a list of C{(name, value)} text pairs in "
        "order, folded values unfolded."
    )

    def readBody():
        """
        The body (after the header section and its empty line), from memory
        or from the spilled temporary file.

        @return: a L{Deferred} firing with the bytes.
        """

    def addHeader(name, value):
        """
        Add a header field at the top, below our C{Received:} header (e.g.
        C{Authentication-Results}).  C{value} may hold C{\\n} where it is
        to be folded; anything else that is not printable becomes C{?}.
        """

    def removeHeaders(name, predicate=None):
        """
        Remove every field called C{name} (any case) from the message's own
        header section (e.g. a spoofed C{Authentication-Results}).

        @param predicate: if given, only fields whose value (the text after
            the colon, folding kept) it returns true for are removed (RFC
            8601: only the fields that carry our authserv-id).
        @return: how many were removed.
        """

    # For the content filters: they see and edit the message as it will be
    # stored, as milters do behind Postfix.

    deadline = Attribute(
        "When the end-of-data policies must have answered (the clock's "
        "seconds): what was left of the client's DATA time at its final "
        "dot; L{None}: no bound."
    )
    fullHeaderSection = Attribute(
        "The header section as it will be stored: our C{Received:}, the "
        "fields policies added, then the message's own (bytes, each field "
        "ending in CRLF)."
    )

    def replaceFullHeaderSection(section):
        """
        Store the message with C{section} as its whole header section (our
        C{Received:} and the fields policies added included).  From then
        on C{headerSection} is all of it, and fields added later go on top.
        """

    def replaceBody(body):
        """
        Make C{body} (after the empty line, CRLF line ends) the message's
        body.

        @return: a L{Deferred} that fires when it is written.
        """


class IIncomingMessage(IReceivedMessage):
    """
    The message of one DATA, as the session feeds it.
    """

    error = Attribute(
        "The L{OSError} that stopped storing the content (disk full, ...), or L{None}."
    )

    def write(data):
        """
        Append content (CRLF line ends, dot-unstuffed).
        """

    def commit():
        """
        Make the message durable.

        @return: a L{Deferred} firing with the stored
            L{gopherpost.spool.Envelope}, or failing (a
            L{gopherpost.spool.SpoolError} for a storage failure).
        """

    def abort():
        """
        Throw the message away (the transaction failed); idempotent.
        """


class IMessageSink(Interface):
    """
    Where accepted transactions go (the spool).
    """

    def newMessage(context, transaction, now):
        """
        Start the message of a transaction whose DATA was accepted.

        @param now: the time of the C{Received:} header.
        @return: an L{IIncomingMessage}.
        """
