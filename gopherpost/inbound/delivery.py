# -*- test-case-name: tests.test_delivery -*-
"""
The delivery policy for one admitted client: which senders and recipients
are accepted, the trace header, and the message object that puts an
accepted transaction into the spool.
"""

from __future__ import annotations

import email.utils
import re
import time
from collections.abc import Callable, Sequence
from datetime import UTC, datetime

from twisted.internet.defer import Deferred
from twisted.logger import Logger
from twisted.mail.smtp import (
    Address,
    IMessage,
    IMessageDelivery,
    SMTPServerError,
    User,
)
from zope.interface import implementer

from gopherpost.config import Settings
from gopherpost.interfaces import IAuditLog
from gopherpost.spool import Envelope, MessageWriter, Spool

__all__ = ["SpoolDelivery", "SpooledMessage", "addressText"]

_log = Logger()

_UNSAFE = re.compile(rb"[^\x21-\x7e]")


def addressText(address: Address) -> str:
    """
    An address as text, C{""} for the null reverse-path.
    """
    text = bytes(address).decode("utf-8", "replace")
    return "" if text in ("", "<>") else text


def _domainOf(address: str) -> str:
    return address.rpartition("@")[2].rstrip(".").lower()


@implementer(IMessage)
class SpooledMessage:
    """
    One incoming message for all the recipients of a transaction.

    The protocol feeds it whole chunks of wire-decoded content with
    L{write} (or lines with L{lineReceived}); L{eomReceived} commits it to the
    spool and fires with the stored L{Envelope}.
    """

    def __init__(
        self,
        delivery: SpoolDelivery,
        writer: MessageWriter,
        queueId: str,
        sender: str,
        recipients: Sequence[str],
        helo: str,
        tls: bool,
    ) -> None:
        self._delivery = delivery
        self._writer = writer
        self.queueId = queueId
        self.sender = sender
        self.recipients = list(recipients)
        self.helo = helo
        self.tls = tls

    @property
    def size(self) -> int:
        """
        Bytes stored so far.
        """
        return self._writer.size

    def write(self, data: bytes) -> None:
        """
        Append content (CRLF line ends, dot-unstuffed).
        """
        self._writer.write(data)

    def lineReceived(self, line: bytes) -> None:
        """
        Append one line (L{IMessage}).
        """
        self._writer.write(line + b"\r\n")

    def eomReceived(self) -> Deferred[Envelope]:
        """
        Commit to the spool; fires with the L{Envelope} once durable.
        """
        return self._delivery.commit(self)

    def connectionLost(self) -> None:
        """
        The transaction failed: throw the content away.
        """
        self._writer.abort()


@implementer(IMessageDelivery)
class SpoolDelivery:
    """
    Accept mail from one allowed client into the spool.

    @param settings: the server's settings.
    @param spool: where messages go.
    @param clientAddress: the client's IP address.
    @param audit: the audit log.
    """

    def __init__(
        self,
        settings: Settings,
        spool: Spool,
        clientAddress: str,
        audit: IAuditLog,
    ) -> None:
        self._settings = settings
        self._spool = spool
        self.clientAddress = clientAddress
        self._audit = audit

    # IMessageDelivery

    def receivedHeader(self, helo, origin, recipients) -> bytes:
        """
        The trace header (L{IMessageDelivery}); see L{traceHeader}.
        """
        heloName = (helo[0] or b"").decode("ascii", "replace") if helo else ""
        return self.traceHeader(
            heloName, "ESMTP", "", [str(r.dest) for r in recipients], None, time.time()
        )

    def validateFrom(self, helo, origin: Address) -> Address:
        """
        Accept the null sender always; otherwise, with
        C{SMTP_REQUIRE_LOCAL_DOMAIN}, only senders in a local domain.

        @raise SMTPServerError: 553 5.7.1 for a foreign sender.
        """
        sender = addressText(origin)
        if sender and self._settings.requireLocalDomain:
            if not self._settings.isLocalDomain(_domainOf(sender)):
                raise SMTPServerError(
                    553,
                    f"5.7.1 <{sender}>: Sender address rejected: "
                    "domain is not local to this server",
                )
        return origin

    def validateTo(self, user: User) -> Callable[[], IMessage]:
        """
        Accept any syntactically valid recipient: the client is on the
        allow-list, so it may relay (like Postfix's C{permit_mynetworks}).
        """
        address = str(user.dest)
        if "@" not in address or not _domainOf(address):
            raise SMTPServerError(
                501, f"5.1.3 <{address}>: Recipient address rejected: need fully-qualified address"
            )

        def noSeparateMessages() -> IMessage:
            raise NotImplementedError("GopherPost stores one message per transaction")

        return noSeparateMessages

    # Our own extensions

    def isLocal(self, address: str) -> bool:
        """
        Whether a recipient is in one of our local domains.
        """
        return self._settings.isLocalDomain(_domainOf(address))

    def traceHeader(
        self,
        helo: str,
        protocolName: str,
        tlsDescription: str,
        recipients: Sequence[str],
        queueId: str | None,
        now: float,
    ) -> bytes:
        """
        An RFC 5321 section 4.4 C{Received:} header, folded, ending in CRLF.
        """
        heloText = _UNSAFE.sub(b"?", helo.encode("utf-8", "replace")[:255]).decode("ascii")
        lines = [
            f"Received: from {heloText or 'unknown'} ([{self.clientAddress}])",
            f"\tby {self._settings.hostname} (GopherPost) with {protocolName}"
            + (f" id {queueId}" if queueId else ""),
        ]
        if tlsDescription:
            lines.append(f"\t({tlsDescription})")
        stamp = email.utils.format_datetime(datetime.fromtimestamp(now, UTC))
        if len(recipients) == 1:
            lines.append(f"\tfor <{recipients[0]}>; {stamp}")
        else:
            lines[-1] += ";"
            lines.append(f"\t{stamp}")
        return "\r\n".join(lines).encode("utf-8", "replace") + b"\r\n"

    def newMessage(
        self, sender: str, recipients: Sequence[str], helo: str, tls: bool
    ) -> SpooledMessage:
        """
        Start the message of a transaction whose DATA was accepted.
        """
        return SpooledMessage(
            self,
            self._spool.newWriter(),
            self._spool.newQueueId(),
            sender,
            recipients,
            helo,
            tls,
        )

    def commit(self, message: SpooledMessage) -> Deferred[Envelope]:
        """
        Store C{message} durably (the spool tells its observers, the relay
        queue among them).
        """
        d = self._spool.commit(
            message._writer,
            message.sender,
            [(r, self.isLocal(r)) for r in message.recipients],
            self.clientAddress,
            message.helo,
            message.tls,
            queueId=message.queueId,
        )

        def stored(envelope: Envelope) -> Envelope:
            self._audit.emit(
                "message.queued",
                queueId=envelope.queueId,
                client=self.clientAddress,
                size=envelope.size,
                recipients=len(envelope.recipients),
                tls=envelope.tls,
            )
            _log.info(
                "Accepted {queueId} from {client} size={size} recipients={count} tls={tls}",
                queueId=envelope.queueId,
                client=self.clientAddress,
                size=envelope.size,
                count=len(envelope.recipients),
                tls="yes" if envelope.tls else "no",
            )
            return envelope

        return d.addCallback(stored)
