# -*- test-case-name: tests.test_filters_envelope -*-
"""
The message and its envelope as filters see them, and the edits they make.

L{SessionFacts} is what a filter is told about the client (from the
inbound session's context).  L{FilterMessage} is a working copy of one
message (header section, body, sender, recipients) that each filter's
verdict is applied to in turn, so that a later filter sees what an earlier
one changed; L{FilterMessage.writeBack} puts the result into the real
message and transaction in one go, only once every filter has accepted, so
nothing is ever stored half-filtered.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from twisted.internet.defer import Deferred, maybeDeferred, succeed
from zope.interface import implementer

from gopherpost.filters.headers import HeaderSection
from gopherpost.filters.interfaces import IEnvelopeEditor
from gopherpost.filters.verdict import (
    AddHeader,
    AddRecipient,
    ChangeHeader,
    ChangeSender,
    DeleteHeader,
    DeleteRecipient,
    InsertHeader,
    Modification,
    ReplaceBody,
)

__all__ = [
    "AttributeEnvelopeEditor",
    "FilterMessage",
    "ScanRequest",
    "SessionFacts",
    "addressText",
    "senderText",
    "stripBrackets",
]


def senderText(transaction: Any) -> str:
    """
    A transaction's reverse-path as text (C{""} for C{<>}).
    """
    sender = transaction.sender
    return str(getattr(sender, "text", sender) or "")


def addressText(recipient: Any) -> str:
    """
    A recipient's address as text.
    """
    return str(getattr(recipient, "address", recipient))


def stripBrackets(address: str) -> str:
    """
    C{<a@b>} -> C{a@b} (milters send addresses either way).
    """
    text = address.strip()
    if text.startswith("<") and text.endswith(">"):
        text = text[1:-1]
    return text


def _parametersText(parameters: Any) -> str:
    """
    A MAIL/RCPT parameter dict as ESMTP text (C{SIZE=100 BODY=8BITMIME}).
    """
    if not parameters:
        return ""
    if isinstance(parameters, str):
        return parameters
    return " ".join(k if v is None else f"{k}={v}" for k, v in parameters.items())


@dataclass(frozen=True)
class SessionFacts:
    """
    What filters are told about a session.

    @ivar clientName: the client's verified host name, or L{None} (the
        session does no reverse lookups).
    @ivar daemonName: the listener role's name (milter C{{daemon_name}}).
    @ivar authMechanism: the SASL mechanism of the AUTH exchange (the
        context's C{authMechanism}, once AUTH keeps it), or L{None}.
    """

    clientAddress: str
    clientPort: int = 0
    clientName: str | None = None
    serverName: str = "localhost"
    daemonName: str = "smtp"
    helo: str | None = None
    tlsVersion: str | None = None
    tlsCipher: str | None = None
    authenticatedUser: str | None = None
    authMechanism: str | None = None
    mayRelay: bool = False

    @classmethod
    def fromContext(cls, context: Any) -> SessionFacts:
        """
        The facts of an inbound C{SessionContext} (see L{IFilterSession}).
        """
        tls = getattr(context, "tls", None)
        role = getattr(context, "role", "smtp")
        return cls(
            clientAddress=str(context.clientAddress),
            clientPort=int(getattr(context, "clientPort", 0) or 0),
            clientName=getattr(context, "clientName", None),
            serverName=str(getattr(context, "serverName", "localhost")),
            daemonName=str(getattr(role, "name", role)),
            helo=getattr(context, "helo", None),
            tlsVersion=(getattr(tls, "version", "") or None) if tls is not None else None,
            tlsCipher=(getattr(tls, "cipher", "") or None) if tls is not None else None,
            authenticatedUser=getattr(context, "authenticatedUser", None),
            authMechanism=getattr(context, "authMechanism", None),
            mayRelay=bool(getattr(context, "mayRelay", False)),
        )


@dataclass(frozen=True)
class ScanRequest:
    """
    One message for a content scanner.

    @ivar headerSection: the message's header section (fields ending in
        CRLF).
    @ivar body: the body after the empty line.
    """

    facts: SessionFacts
    queueId: str
    sender: str
    recipients: tuple[str, ...]
    headerSection: bytes
    body: bytes

    @property
    def content(self) -> bytes:
        """
        The whole message (header section, empty line, body).
        """
        return self.headerSection + b"\r\n" + self.body


@dataclass
class FilterMessage:
    """
    A working copy of one message and its envelope.

    @ivar headers: the header section.
    @ivar body: the body (after the empty line).
    @ivar sender: the reverse-path (C{""} for C{<>}).
    @ivar senderParameters: its MAIL parameters as ESMTP text.
    @ivar recipients: C{(address, parameters)} in order.
    @ivar quarantine: the reasons filters gave for holding it.
    """

    queueId: str
    headers: HeaderSection
    body: bytes
    sender: str
    recipients: list[tuple[str, str]]
    senderParameters: str = ""
    quarantine: list[str] = field(default_factory=list)
    bodyChanged: bool = False
    senderChanged: bool = False
    recipientsChanged: bool = False

    @classmethod
    def fromTransaction(
        cls, queueId: str, section: bytes, body: bytes, transaction: Any
    ) -> FilterMessage:
        """
        The working copy of a message at the end of data.
        """
        return cls(
            queueId=queueId,
            headers=HeaderSection(section),
            body=body,
            sender=senderText(transaction),
            senderParameters=_parametersText(getattr(transaction, "parameters", None)),
            recipients=[
                (addressText(r), _parametersText(getattr(r, "parameters", None)))
                for r in transaction.recipients
            ],
        )

    @property
    def content(self) -> bytes:
        """
        The whole message as it now is.
        """
        return self.headers.render() + b"\r\n" + self.body

    @property
    def recipientAddresses(self) -> tuple[str, ...]:
        return tuple(address for address, _ in self.recipients)

    def scanRequest(self, facts: SessionFacts) -> ScanRequest:
        """
        The message for a content scanner.
        """
        return ScanRequest(
            facts,
            self.queueId,
            self.sender,
            self.recipientAddresses,
            self.headers.render(),
            self.body,
        )

    def apply(self, modifications: Sequence[Modification], editor: IEnvelopeEditor) -> None:
        """
        Make a verdict's edits.

        @param editor: checks new addresses.
        @raise ValueError: for an edit that cannot be made (an invalid
            header name or address); nothing is changed then.
        """
        for m in modifications:
            if isinstance(m, (AddRecipient, ChangeSender)):
                address = stripBrackets(m.address)
                if (address or isinstance(m, AddRecipient)) and not editor.check(address):
                    raise ValueError(f"not a valid address: {m.address!r}")
        # Header edits are checked by making them on a copy first.
        headers = HeaderSection(self.headers.render())
        for m in modifications:
            if isinstance(m, AddHeader):
                headers.add(m.name, m.value)
            elif isinstance(m, InsertHeader):
                headers.insert(m.index, m.name, m.value)
            elif isinstance(m, ChangeHeader):
                headers.change(m.name, m.index, m.value)
            elif isinstance(m, DeleteHeader):
                headers.delete(m.name, m.index)
        if headers.changed:
            self.headers = headers
        for m in modifications:
            if isinstance(m, ReplaceBody):
                self.body = m.body
                self.bodyChanged = True
            elif isinstance(m, ChangeSender):
                self.sender = stripBrackets(m.address)
                self.senderParameters = m.parameters
                self.senderChanged = True
            elif isinstance(m, AddRecipient):
                address = stripBrackets(m.address)
                if address.lower() not in (a.lower() for a, _ in self.recipients):
                    self.recipients.append((address, m.parameters))
                    self.recipientsChanged = True
            elif isinstance(m, DeleteRecipient):
                address = stripBrackets(m.address).lower()
                kept = [(a, p) for a, p in self.recipients if a.lower() != address]
                if len(kept) != len(self.recipients):
                    self.recipients = kept
                    self.recipientsChanged = True

    def writeBack(self, message: Any, transaction: Any, editor: IEnvelopeEditor) -> Deferred[None]:
        """
        Put the edits into the real message (an L{IFilterableMessage}) and
        transaction.

        @return: a L{Deferred} that fires when the body is written.
        """
        if self.headers.changed:
            message.replaceFullHeaderSection(self.headers.render())
        if self.senderChanged:
            editor.setSender(transaction, self.sender, self.senderParameters)
        if self.recipientsChanged:
            wanted = {a.lower() for a, _ in self.recipients}
            for address in list(editor.recipients(transaction)):
                if address.lower() not in wanted:
                    editor.removeRecipient(transaction, address)
            present = {a.lower() for a in editor.recipients(transaction)}
            for address, parameters in self.recipients:
                if address.lower() not in present:
                    editor.addRecipient(transaction, address, parameters)
        if self.bodyChanged:
            return maybeDeferred(message.replaceBody, self.body).addCallback(lambda _: None)
        return succeed(None)


def _splitParameters(text: str) -> dict[str, str | None]:
    parameters: dict[str, str | None] = {}
    for item in text.split():
        key, equals, value = item.partition("=")
        parameters[key.upper()] = value if equals else None
    return parameters


@implementer(IEnvelopeEditor)
class AttributeEnvelopeEditor:
    """
    An L{IEnvelopeEditor} for transactions with C{sender} and
    C{recipients} attributes (the inbound C{Transaction}).

    @param makeSender: C{makeSender(address) -> object} for
        C{transaction.sender}; raises L{ValueError} for an invalid address
        (default: the text itself).
    @param makeRecipient: C{makeRecipient(address, parameters) -> object}
        for C{transaction.recipients} (C{parameters} a dict); raises
        L{ValueError} for an invalid address (default: the text itself).
    """

    def __init__(self, makeSender: Any = None, makeRecipient: Any = None) -> None:
        self._makeSender = makeSender or (lambda address: address)
        self._makeRecipient = makeRecipient or (lambda address, parameters: address)

    def sender(self, transaction: Any) -> str:
        return senderText(transaction)

    def recipients(self, transaction: Any) -> list[str]:
        return [addressText(r) for r in transaction.recipients]

    def check(self, address: str) -> bool:
        if not address or any(c in address for c in "\r\n\x00<> "):
            return False
        try:
            self._makeRecipient(address, {})
        except ValueError:
            return False
        return True

    def setSender(self, transaction: Any, address: str, parameters: str) -> None:
        transaction.sender = self._makeSender(address)
        if hasattr(transaction, "parameters"):
            transaction.parameters = _splitParameters(parameters)

    def addRecipient(self, transaction: Any, address: str, parameters: str) -> None:
        transaction.recipients.append(self._makeRecipient(address, _splitParameters(parameters)))

    def removeRecipient(self, transaction: Any, address: str) -> None:
        wanted = address.lower()
        transaction.recipients[:] = [
            r for r in transaction.recipients if addressText(r).lower() != wanted
        ]
