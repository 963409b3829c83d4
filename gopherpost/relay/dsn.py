# -*- test-case-name: tests.test_dsn -*-
"""
Bounces: delivery status notifications (RFC 3464) for recipients whose
delivery failed for good.

L{buildDSN} makes the message: a C{multipart/report;
report-type=delivery-status} with a human-readable part, a
C{message/delivery-status} part and the original header in a
C{text/rfc822-headers} part.  It is sent with the null reverse-path
(L{DSN_ENVELOPE_SENDER}) to the original envelope sender, through the normal
path (stored if the sender is local, else relayed).  L{shouldBounce} says
whether a sender gets one at all: never the null sender, so bounces cannot
loop.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from email.utils import format_datetime

__all__ = [
    "DSN_ENVELOPE_SENDER",
    "RecipientFailure",
    "buildDSN",
    "shouldBounce",
]

#: The envelope sender (MAIL FROM) of every DSN: the null reverse-path.
DSN_ENVELOPE_SENDER = ""

_STATUS = re.compile(r"^[245]\.\d{1,3}\.\d{1,3}$")
_ACTIONS = ("failed", "delayed", "delivered", "relayed", "expanded")
_MAX_FIELD = 900


@dataclass(frozen=True)
class RecipientFailure:
    """
    What happened to one recipient.

    @ivar recipient: the recipient's address (no angle brackets).
    @ivar status: the RFC 3463 status, e.g. C{"5.1.1"}.  For C{failed} a
        C{4.x.x} status (a temporary failure that ran out of time) is
        reported as C{5.x.x}.
    @ivar reason: one human-readable line, e.g. C{"host mx.example.test
        said: 550 5.1.1 No such user"} or C{"domain does not accept mail
        (null MX)"}.
    @ivar diagnosticCode: the remote server's SMTP reply (all lines), when
        the failure came from one; reported as C{Diagnostic-Code: smtp}.
    @ivar remoteMTA: the remote host's name, when one was talked to.
    @ivar action: the RFC 3464 action, C{failed} unless told otherwise.
    @ivar lastAttempt: when delivery was last tried (POSIX seconds).
    """

    recipient: str
    status: str
    reason: str
    diagnosticCode: str | None = None
    remoteMTA: str | None = None
    action: str = "failed"
    lastAttempt: float | None = None


def shouldBounce(sender: str | None) -> bool:
    """
    Whether a message from C{sender} gets a DSN when delivery fails.

    @param sender: the envelope sender as stored (with or without angle
        brackets).
    @return: L{False} for the null reverse-path (C{""} or C{"<>"}), which
        bounces, DSNs and other automatic replies use (RFC 5321 section
        4.5.5; RFC 3464 section 2); L{True} otherwise.
    """
    if sender is None:
        return False
    text = sender.strip()
    if text.startswith("<") and text.endswith(">"):
        text = text[1:-1].strip()
    return bool(text)


def _date(when: float) -> str:
    return format_datetime(datetime.fromtimestamp(when, UTC))


def _field(value: str) -> str:
    """
    Make C{value} safe as (part of) a header field: one line, printable
    ASCII, bounded length.
    """
    text = " ".join(value.split())
    text = "".join(c if " " <= c <= "~" else "?" for c in text)
    if len(text) > _MAX_FIELD:
        text = text[: _MAX_FIELD - 3] + "..."
    return text


def _address(value: str, what: str) -> str:
    text = value.strip()
    if text.startswith("<") and text.endswith(">"):
        text = text[1:-1]
    if any(c in text for c in "\r\n\0") or not text:
        raise ValueError(f"not a usable {what} address: {value!r}")
    return text


def _headerBlock(message: bytes) -> bytes:
    """
    The original message's header section, CRLF line ends, without the
    blank line.
    """
    if message.startswith((b"\r\n", b"\n")):
        return b""
    match = re.search(rb"\r?\n\r?\n", message)
    block = message[: match.start()] if match else message.rstrip(b"\r\n")
    if not block:
        return b""
    return b"".join(line + b"\r\n" for line in re.split(rb"\r\n|\r|\n", block))


def _messageId(headers: bytes) -> str | None:
    match = re.search(rb"(?im)^message-id:[ \t]*(<[^>\r\n]+>)", headers)
    if match is None:
        return None
    try:
        return match.group(1).decode("ascii")
    except UnicodeDecodeError:
        return None


def _status(failure: RecipientFailure) -> str:
    if not _STATUS.match(failure.status):
        raise ValueError(f"not an RFC 3463 status: {failure.status!r}")
    if failure.action not in _ACTIONS:
        raise ValueError(f"not an RFC 3464 action: {failure.action!r}")
    if failure.action == "failed" and failure.status.startswith("4"):
        return "5" + failure.status[1:]
    return failure.status


def _humanPart(reportingMTA: str, failures: Sequence[RecipientFailure], queueId: str | None) -> str:
    failed = [f for f in failures if f.action == "failed"]
    delayed = [f for f in failures if f.action == "delayed"]
    lines = [f"This is the mail system at host {reportingMTA}.", ""]
    if failed:
        lines += [
            "Your message could not be delivered to one or more recipients.",
            "It is attached below (headers only). Delivery will not be retried.",
            "",
        ]
    if delayed:
        lines += [
            "Delivery of your message to some recipients is delayed.",
            "It will be retried; you do not need to send it again.",
            "",
        ]
    if queueId:
        lines += [f"Queue ID: {_field(queueId)}", ""]
    for failure in failures:
        lines.append(f"<{_address(failure.recipient, 'recipient')}>: {_field(failure.reason)}")
        if failure.diagnosticCode:
            lines.append(f"    The remote server said: {_field(failure.diagnosticCode)}")
        lines.append("")
    return "\r\n".join(lines)


def _statusPart(
    reportingMTA: str,
    failures: Sequence[RecipientFailure],
    arrivalDate: float,
    queueId: str | None,
) -> str:
    fields = [f"Reporting-MTA: dns; {_field(reportingMTA)}"]
    if queueId:
        fields.append(f"X-GopherPost-Queue-ID: {_field(queueId)}")
    fields.append(f"Arrival-Date: {_date(arrivalDate)}")
    blocks = ["\r\n".join(fields)]
    for failure in failures:
        recipient = _field(_address(failure.recipient, "recipient"))
        fields = [
            f"Final-Recipient: rfc822; {recipient}",
            f"Action: {failure.action}",
            f"Status: {_status(failure)}",
        ]
        if failure.remoteMTA:
            fields.append(f"Remote-MTA: dns; {_field(failure.remoteMTA)}")
        if failure.diagnosticCode:
            fields.append(f"Diagnostic-Code: smtp; {_field(failure.diagnosticCode)}")
        if failure.lastAttempt is not None:
            fields.append(f"Last-Attempt-Date: {_date(failure.lastAttempt)}")
        blocks.append("\r\n".join(fields))
    return "\r\n\r\n".join(blocks) + "\r\n"


def buildDSN(
    reportingMTA: str,
    originalSender: str,
    failures: Sequence[RecipientFailure],
    originalMessage: bytes,
    arrivalDate: float,
    now: float,
    queueId: str | None = None,
    messageId: str | None = None,
) -> bytes:
    """
    Build the DSN for some recipients of one message.

    @param reportingMTA: our host name (C{SMTP_HOSTNAME}); the DSN comes
        from C{MAILER-DAEMON@reportingMTA}.
    @param originalSender: the original envelope sender, who gets the DSN
        (check L{shouldBounce} first).
    @param failures: one L{RecipientFailure} per recipient to report.
    @param originalMessage: the message as stored; only its header section
        is included.
    @param arrivalDate: when we accepted the message (POSIX seconds).
    @param now: the current time (POSIX seconds, from the injected clock).
    @param queueId: the message's queue id, reported for the postmaster.
    @param messageId: the DSN's Message-ID (default: derived from
        C{reportingMTA}, C{queueId} and C{now}).
    @return: the message, CRLF line ends.  It is 7-bit unless the original
        header section has 8-bit octets; then that part is marked C{8bit}
        and the DSN must be relayed with C{BODY=8BITMIME}.
    @raise ValueError: when there is nothing to report, or an address,
        status or action is unusable.
    """
    if not failures:
        raise ValueError("a DSN needs at least one recipient")
    sender = _address(originalSender, "sender")
    host = _field(reportingMTA)
    headers = _headerBlock(originalMessage)
    human = _humanPart(host, failures, queueId).encode("ascii")
    status = _statusPart(host, failures, arrivalDate, queueId).encode("ascii")

    seed = hashlib.sha256(headers + repr((host, queueId, now)).encode()).hexdigest()
    boundary = f"{seed[:16]}/{host}"
    counter = 0
    while boundary.encode() in headers:
        counter += 1
        boundary = f"{seed[:16]}.{counter}/{host}"
    if messageId is None:
        messageId = f"<dsn.{seed[16:32]}.{int(now)}@{host}>"
    delimiter = b"--" + boundary.encode("ascii")

    failed = any(f.action == "failed" for f in failures)
    subject = (
        "Undelivered Mail Returned to Sender" if failed else "Delayed Mail (still being retried)"
    )
    top = [
        f"From: Mail Delivery System <MAILER-DAEMON@{host}>",
        f"To: <{sender}>",
        f"Subject: {subject}",
        f"Date: {_date(now)}",
        f"Message-ID: {_field(messageId)}",
    ]
    original = _messageId(headers)
    if original is not None:
        top += [f"In-Reply-To: {original}", f"References: {original}"]
    top += [
        "Auto-Submitted: auto-replied",
        "MIME-Version: 1.0",
        "Content-Type: multipart/report; report-type=delivery-status;",
        f'\tboundary="{boundary}"',
        "Content-Transfer-Encoding: 8bit" if _is8bit(headers) else "",
    ]
    parts: list[bytes] = [
        "\r\n".join(line for line in top if line).encode("utf-8") + b"\r\n\r\n",
        b"This is a MIME-encapsulated message.\r\n\r\n",
        delimiter + b"\r\n",
        b"Content-Description: Notification\r\n",
        b"Content-Type: text/plain; charset=us-ascii\r\n\r\n",
        human + b"\r\n",
        delimiter + b"\r\n",
        b"Content-Description: Delivery report\r\n",
        b"Content-Type: message/delivery-status\r\n\r\n",
        status + b"\r\n",
        delimiter + b"\r\n",
        b"Content-Description: Undelivered Message Headers\r\n",
        b"Content-Type: text/rfc822-headers\r\n",
    ]
    if _is8bit(headers):
        parts.append(b"Content-Transfer-Encoding: 8bit\r\n")
    parts += [b"\r\n", headers, b"\r\n", delimiter + b"--\r\n"]
    return b"".join(parts)


def _is8bit(data: bytes) -> bool:
    return any(octet > 127 for octet in data)
