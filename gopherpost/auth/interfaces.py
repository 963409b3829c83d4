# -*- test-case-name: tests.test_auth_session -*-
"""
The seams of authenticated submission.

  - L{IAuthenticatedUser}: the avatar the portal gives a user whose
    password was right: their name and sender rights.
  - L{IAuthContext}: what AUTH reads and sets of the inbound session's
    context (the inbound C{SessionContext} provides it).
  - L{IAuthCommand}: what the inbound session calls: the AUTH command and
    the lines of an exchange in progress go in, replies come out.

Replies are objects with C{code}, C{text}, C{reason} and C{closing()}, as
the inbound chain's C{Reply}: each part that makes replies takes a
C{replyType} (called as C{replyType(code, text, reason=...)}), by default
L{gopherpost.auth.replies.AuthReply}.  A response is one reply or a tuple
of them (a refusal, then C{421} and the close).
"""

from __future__ import annotations

from zope.interface import Attribute, Interface

__all__ = ["IAuthenticatedUser", "IAuthContext", "IAuthCommand"]


class IAuthenticatedUser(Interface):
    """
    A user who authenticated.
    """

    name = Attribute("The user name, as the users file writes it.")
    rights = Attribute(
        "The L{gopherpost.auth.senders.SenderRights}: the addresses the user may send as."
    )


class IAuthContext(Interface):
    """
    The session, as AUTH sees it.
    """

    clientAddress = Attribute("The client's IP address as text.")
    role = Attribute("The listener role (its C{name}: smtp, submission, submissions).")
    tls = Attribute("The TLS session, or None while the connection is in the clear.")
    helo = Attribute("The HELO/EHLO name, or None.")
    extended = Attribute("Whether the client said EHLO.")
    serverName = Attribute("Our host name, for the 421 before a close.")
    authenticatedUser = Attribute("Set to the user name when AUTH succeeds.")
    authMechanism = Attribute("Set to the SASL mechanism (PLAIN, LOGIN) when AUTH succeeds.")


class IAuthCommand(Interface):
    """
    AUTH in one session: the inbound session hands it the AUTH command and,
    while an exchange is in progress (L{inProgress}), every line the client
    sends, and writes the responses it returns in order.
    """

    inProgress = Attribute(
        "Whether an exchange waits for the client's next response line (it is "
        "not a command: the session must hand it to L{lineReceived})."
    )
    user = Attribute("The L{IAuthenticatedUser} once AUTH succeeded, else None.")

    def keyword():
        """
        The EHLO keyword (C{"AUTH PLAIN LOGIN"}) when AUTH is offered now
        (the role allows it and the session is encrypted), else None.
        """

    def command(argument, inTransaction):
        """
        The AUTH command, with its argument (mechanism and initial
        response, bytes).

        @param inTransaction: whether a mail transaction is in progress.
        @return: a response, or a Deferred firing with one.
        """

    def lineReceived(line):
        """
        A response line of the exchange in progress (bytes, no line end).

        @return: a response, or a Deferred firing with one.
        """

    def lineTooLong():
        """
        The framing saw a response line over its limit: the exchange ends
        with C{500 5.5.6}.

        @return: a response, or a Deferred firing with one.
        """

    def connectionLost():
        """
        The connection is gone: cancel pending timers.
        """
