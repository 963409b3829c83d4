# -*- test-case-name: tests.test_session -*-
"""
What a session knows, as plain values that policies read: the
L{SessionContext} (who the client is, how it is connected) and the
L{Transaction} in progress (sender, recipients, their parameters, and what
policies added: trace headers and tags).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from gopherpost.esmtp.dsnparams import dsnMetadata
from gopherpost.esmtp.metadata import REQUIRETLS, SMTPUTF8
from gopherpost.esmtp.smtputf8 import addressKey
from gopherpost.inbound.address import Mailbox
from gopherpost.inbound.roles import SMTP, ListenerRole

__all__ = ["TLSInfo", "SessionContext", "Transaction", "EnvelopeRecipient"]


@dataclass(frozen=True)
class TLSInfo:
    """
    The TLS session of a connection.

    @ivar version: e.g. C{"TLSv1.3"} (C{""} if unknown).
    @ivar cipher: e.g. C{"TLS_AES_256_GCM_SHA384"} (C{""} if unknown).
    """

    version: str = ""
    cipher: str = ""

    @property
    def description(self) -> str:
        """
        C{using TLSv1.3 with cipher ...} for the C{Received:} header.
        """
        if not self.version:
            return "using TLS"
        if not self.cipher:
            return f"using {self.version}"
        return f"using {self.version} with cipher {self.cipher}"


@dataclass
class SessionContext:
    """
    One connection, as policies see it.

    @ivar clientAddress: the client's IP address (behind a PROXY-protocol
        listener, the real client's), IPv4-mapped addresses unmapped.
    @ivar clientPort: the client's port.
    @ivar role: the listener's role.
    @ivar serverName: our host name (C{SMTP_HOSTNAME}).
    @ivar tls: the TLS session, or L{None} while the connection is in the
        clear.
    @ivar helo: the name given in HELO or EHLO, or L{None} before it.
    @ivar extended: whether the client said EHLO (ESMTP).
    @ivar identity: who the connect-stage access check admitted the client
        as (the allow-list avatar), or L{None}.
    @ivar authenticatedUser: the user name an AUTH exchange proved, or
        L{None} (for the submission issue).
    @ivar relayClient: whether the client's address may relay (set by the
        relay-permission policy when the client connects).
    @ivar notes: policies' own state for this connection, by policy (not
        recorded anywhere).
    @ivar authMechanism: the SASL mechanism of a successful AUTH (C{PLAIN},
        C{LOGIN}), or L{None}.
    """

    clientAddress: str
    clientPort: int = 0
    role: ListenerRole = SMTP
    serverName: str = "localhost"
    tls: TLSInfo | None = None
    helo: str | None = None
    extended: bool = False
    identity: Any = None
    authenticatedUser: str | None = None
    relayClient: bool = False
    notes: dict[str, Any] = field(default_factory=dict, repr=False)
    authMechanism: str | None = None

    @property
    def mayRelay(self) -> bool:
        """
        Whether the client may send to non-local domains: a relay client,
        or an authenticated user.
        """
        return self.relayClient or self.authenticatedUser is not None

    def metadata(self) -> dict[str, Any]:
        """
        What the envelope's C{metadata} keeps of the session: the
        authenticated user (C{authUser}) and mechanism (C{authMechanism}),
        for logs, the index and webhooks (never in a header); nothing for
        a session without AUTH.
        """
        if self.authenticatedUser is None:
            return {}
        data: dict[str, Any] = {"authUser": self.authenticatedUser}
        if self.authMechanism:
            data["authMechanism"] = self.authMechanism
        return data

    @property
    def protocolName(self) -> str:
        """
        The C{with} keyword of the C{Received:} header (RFC 3848):
        C{SMTP}, C{ESMTP}, C{ESMTPS}, C{ESMTPA}, C{ESMTPSA}.
        """
        if not self.extended:
            return "SMTP"
        return (
            "ESMTP"
            + ("S" if self.tls is not None else "")
            + ("A" if self.authenticatedUser is not None else "")
        )


@dataclass
class EnvelopeRecipient:
    """
    One accepted recipient.

    @ivar mailbox: its address.
    @ivar parameters: its RCPT parameters by upper-case keyword (values as
        given, L{None} for a keyword without a value).
    @ivar notify: the C{NOTIFY=} keywords (RFC 3461) in upper case, or
        L{None}.
    @ivar originalRecipient: the C{ORCPT=} value as given, or L{None}.
    """

    mailbox: Mailbox
    parameters: dict[str, str | None] = field(default_factory=dict)
    notify: tuple[str, ...] | None = None
    originalRecipient: str | None = None

    @property
    def address(self) -> str:
        """
        The address as text.
        """
        return self.mailbox.text


@dataclass
class Transaction:
    """
    One mail transaction, from MAIL to the end of data (or RSET).

    @ivar sender: the reverse-path (C{NULL_PATH} for C{<>}).
    @ivar parameters: the MAIL parameters by upper-case keyword.
    @ivar declaredSize: the C{SIZE=} value, 0 if none.
    @ivar body: the C{BODY=} value in upper case, or L{None}.
    @ivar recipients: the accepted recipients, in order.
    @ivar headers: header fields policies added (C{(name, value)}), placed
        below our C{Received:} header.
    @ivar tags: what policies learned about the message (JSON-able values),
        kept with the message: each is a key of its envelope's metadata
        (see L{metadata}).
    @ivar notes: policies' own state for this transaction, by policy (not
        recorded anywhere).
    @ivar smtputf8: whether MAIL had C{SMTPUTF8} (RFC 6531): addresses and
        header fields may be UTF-8.
    @ivar requireTLS: whether MAIL had C{REQUIRETLS} (RFC 8689).
    @ivar dsnReturn: the C{RET=} value (C{"FULL"} or C{"HDRS"}), or L{None}.
    @ivar envelopeId: the C{ENVID=} value as given (xtext), or L{None}.
    @ivar contentCommand: C{"DATA"} or C{"BDAT"} once one of them started
        the content (RFC 3030: one transaction uses one of them).
    """

    sender: Mailbox
    parameters: dict[str, str | None] = field(default_factory=dict)
    declaredSize: int = 0
    body: str | None = None
    recipients: list[EnvelopeRecipient] = field(default_factory=list)
    headers: list[tuple[str, str]] = field(default_factory=list)
    tags: dict[str, Any] = field(default_factory=dict)
    smtputf8: bool = False
    requireTLS: bool = False
    dsnReturn: str | None = None
    envelopeId: str | None = None
    contentCommand: str | None = None
    notes: dict[str, Any] = field(default_factory=dict, repr=False)

    def tag(self, name: str, value: Any = True) -> None:
        """
        Record what a policy learned about the message, under a key of the
        envelope's metadata (see L{metadata} for the names in use).
        """
        self.tags[name] = value

    def addHeader(self, name: str, value: str) -> None:
        """
        Add a header field above the message's own (below C{Received:}).
        """
        self.headers.append((name, value))

    def metadata(self) -> dict[str, Any]:
        """
        What goes into the envelope's C{metadata}: only what is set, so a
        plain message's envelope has none.

        The envelope's metadata is one flat JSON object, read by the index,
        the web UI and the webhooks.  Its keys: each tag (C{authentication}:
        the SPF, DKIM, ARC and DMARC results; C{quarantine}: why the message
        is held, e.g. C{"dmarc"}; C{filters}: the content filters'
        verdicts), C{body} (the C{BODY=} value when not 7BIT), and what the
        session adds (C{authUser}).  C{tags}, when present, is the list of
        Mailpit-style tag names the index shows.
        """
        data: dict[str, Any] = dict(self.tags)
        if self.body is not None and self.body != "7BIT":
            data["body"] = self.body
        if self.smtputf8:
            data[SMTPUTF8] = True
        if self.requireTLS:
            data[REQUIRETLS] = True
        if (
            self.dsnReturn is not None
            or self.envelopeId is not None
            or any(r.notify is not None or r.originalRecipient is not None for r in self.recipients)
        ):
            data.update(dsnMetadata(self.dsnReturn, self.envelopeId, self._dsnRecipients()))
        return data

    def _dsnRecipients(self) -> list[tuple[str, tuple[str, ...] | None, str | None]]:
        """
        The DSN parameters of each recipient the spool stores: a repeated
        address (L{addressKey}) is stored once, as first given.
        """
        seen: set[str] = set()
        found = []
        for recipient in self.recipients:
            key = addressKey(recipient.address)
            if key in seen:
                continue
            seen.add(key)
            found.append((recipient.address, recipient.notify, recipient.originalRecipient))
        return found
