# -*- test-case-name: tests.test_dsn -*-
"""
Delivery status notifications (RFC 3464): bounces for recipients whose
delivery failed for good, and the reports of delays and successes.

L{buildDSN} makes the message with the standard library's C{email} package:
a C{multipart/report; report-type=delivery-status} (RFC 6522) with a
human-readable part, a C{message/delivery-status} part and the original
message's header section as C{text/rfc822-headers} (or, when asked for, the
whole message as C{message/rfc822}).  It is sent with the null reverse-path
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
from email import policy
from email.message import Message
from email.parser import BytesHeaderParser, BytesParser
from email.policy import Compat32
from email.utils import format_datetime, quote

from gopherpost.esmtp.xtext import encodeUTF8Address

__all__ = [
    "DSN_ENVELOPE_SENDER",
    "RETURN_CONTENT_LIMIT",
    "RecipientFailure",
    "buildDSN",
    "shouldBounce",
]

#: The envelope sender (MAIL FROM) of every DSN: the null reverse-path.
DSN_ENVELOPE_SENDER = ""

#: With C{returnContent}, a larger original is returned as headers only
#: (Postfix's C{bounce_size_limit}).
RETURN_CONTENT_LIMIT = 50_000


class _FieldsAsGiven(Compat32):
    """
    How the DSN is written: the C{email} package's lenient policy, CRLF
    line ends, no C{>From} mangling, and every field written as it is given:
    our own are one line of at most 998 octets (as Postfix writes them;
    folding with the newer policies can turn a long word into RFC 2047
    encoded words, which no report field may carry), and a returned
    message keeps its fields as they came, folding included.
    """

    def fold(self, name: str, value: str) -> str:
        """
        C{name: value} and a line end, the value unchanged.
        """
        return f"{name}: {value}{self.linesep}"

    def fold_binary(self, name: str, value: str) -> bytes:
        """
        L{fold}, as bytes; 8-bit octets of a returned message come back as
        they were, and a UTF-8 address of ours (SMTPUTF8, RFC 6532) goes
        as UTF-8.
        """
        return self.fold(name, value).encode("utf-8", "surrogateescape")


_POLICY = _FieldsAsGiven(linesep="\r\n", mangle_from_=False)

_STATUS = re.compile(r"^[245]\.\d{1,3}\.\d{1,3}$")
_ACTIONS = ("failed", "delayed", "delivered", "relayed", "expanded")
_ADDRESS_TYPE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9-]*$")
_MESSAGE_ID = re.compile(r"<[^<>\s]+>")
_LINE_END = re.compile(rb"\r\n|\r|\n")
_MAX_FIELD = 900


@dataclass(frozen=True)
class RecipientFailure:
    """
    What happened to one recipient (a failure, or with C{action}, a delay
    or a success).

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
    @ivar action: the RFC 3464 action, C{failed} unless told otherwise
        (C{delayed}, C{delivered}, C{relayed}, C{expanded}).
    @ivar lastAttempt: when delivery was last tried (POSIX seconds).
    @ivar originalRecipient: the recipient as the sender gave it in the
        RCPT command's C{ORCPT} parameter (RFC 3461), xtext-decoded:
        C{"rfc822;bob@example.test"} (a bare address means C{rfc822}).
    @ivar willRetryUntil: for C{delayed}, when the queue gives up (POSIX
        seconds).
    """

    recipient: str
    status: str
    reason: str
    diagnosticCode: str | None = None
    remoteMTA: str | None = None
    action: str = "failed"
    lastAttempt: float | None = None
    originalRecipient: str | None = None
    willRetryUntil: float | None = None


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


def _finalRecipient(value: str) -> str:
    """
    The C{Final-Recipient} field: C{rfc822; address}, or for a UTF-8
    address (SMTPUTF8) C{utf-8; } and its utf-8-addr-xtext (RFC 6533 3).
    """
    address = _address(value, "recipient")
    if address.isascii():
        return f"rfc822; {_field(address)}"
    return f"utf-8; {_field(encodeUTF8Address(address))}"


def _typedAddress(value: str) -> str:
    """
    C{"type; address"} for an Original-Recipient field.
    """
    addressType, separator, address = value.partition(";")
    if not separator or not _ADDRESS_TYPE.match(addressType.strip()):
        addressType, address = "rfc822", value
    return f"{addressType.strip()}; {_field(_address(address, 'original recipient'))}"


def _crlf(data: bytes) -> bytes:
    return _LINE_END.sub(b"\r\n", data)


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
    return _crlf(block) + b"\r\n"


def _messageId(headers: bytes) -> str | None:
    """
    The original's Message-ID (parsed by the C{email} package, folded or
    not), or L{None}.
    """
    value = BytesHeaderParser(policy=policy.compat32).parsebytes(headers).get("Message-ID")
    if not isinstance(value, str):
        return None
    match = _MESSAGE_ID.search(value)
    if match is None or not match.group(0).isascii():
        return None
    return match.group(0)


def _status(failure: RecipientFailure) -> str:
    if not _STATUS.match(failure.status):
        raise ValueError(f"not an RFC 3463 status: {failure.status!r}")
    if failure.action not in _ACTIONS:
        raise ValueError(f"not an RFC 3464 action: {failure.action!r}")
    if failure.action == "failed" and failure.status.startswith("4"):
        return "5" + failure.status[1:]
    return failure.status


def _is8bit(data: bytes) -> bool:
    return not data.isascii()


def _text(data: bytes) -> str:
    """
    Bytes as a payload the C{email} package writes back unchanged.
    """
    return data.decode("ascii", "surrogateescape")


def _part(contentType: str, description: str) -> Message:
    part = Message(policy=_POLICY)
    part["Content-Description"] = description
    part["Content-Type"] = contentType
    return part


def _subject(failures: Sequence[RecipientFailure]) -> str:
    actions = {f.action for f in failures}
    if "failed" in actions:
        return "Undelivered Mail Returned to Sender"
    if "delayed" in actions:
        return "Delayed Mail (still being retried)"
    return "Successful Mail Delivery Report"


def _notification(
    reportingMTA: str,
    failures: Sequence[RecipientFailure],
    queueId: str | None,
    returned: str,
) -> Message:
    actions = {f.action for f in failures}
    lines = [f"This is the mail system at host {reportingMTA}.", ""]
    if "failed" in actions:
        lines += [
            "Your message could not be delivered to one or more recipients.",
            "Delivery will not be retried.",
            "",
        ]
    if "delayed" in actions:
        lines += [
            "Delivery of your message to some recipients is delayed.",
            "It will be retried; you do not need to send it again.",
            "",
        ]
    if actions & {"delivered", "relayed", "expanded"}:
        lines += [
            "Your message was delivered to the recipients marked so below.  If it",
            "was relayed to a system that does not report delivery, you may still",
            "be told of delivery errors from there.",
            "",
        ]
    if queueId:
        lines += [f"Queue ID: {_field(queueId)}", ""]
    for failure in failures:
        lines.append(f"<{_address(failure.recipient, 'recipient')}>: {_field(failure.reason)}")
        if failure.diagnosticCode:
            lines.append(f"    The remote server said: {_field(failure.diagnosticCode)}")
        lines.append("")
    lines.append(returned)
    text = "\r\n".join(lines) + "\r\n"
    if text.isascii():
        part = _part("text/plain; charset=us-ascii", "Notification")
        part.set_payload(text)
        return part
    # esmtp: a UTF-8 address (SMTPUTF8), as it is.
    part = _part("text/plain; charset=utf-8", "Notification")
    part["Content-Transfer-Encoding"] = "8bit"
    part.set_payload(_text(text.encode("utf-8")))
    return part


def _fields(*pairs: tuple[str, str | None]) -> Message:
    block = Message(policy=_POLICY)
    for name, value in pairs:
        if value is not None:
            block[name] = value
    return block


def _deliveryStatus(
    reportingMTA: str,
    failures: Sequence[RecipientFailure],
    arrivalDate: float,
    queueId: str | None,
    envelopeId: str | None,
) -> Message:
    # The field order is RFC 3464's grammar (section 2.2 and 2.3):
    # extension fields (X-...) last.
    blocks = [
        _fields(
            ("Original-Envelope-Id", _field(envelopeId) if envelopeId else None),
            ("Reporting-MTA", f"dns; {_field(reportingMTA)}"),
            ("Arrival-Date", _date(arrivalDate)),
            ("X-GopherPost-Queue-ID", _field(queueId) if queueId else None),
        )
    ]
    for failure in failures:
        original = failure.originalRecipient
        blocks.append(
            _fields(
                ("Original-Recipient", _typedAddress(original) if original else None),
                ("Final-Recipient", _finalRecipient(failure.recipient)),
                ("Action", failure.action),
                ("Status", _status(failure)),
                (
                    "Remote-MTA",
                    f"dns; {_field(failure.remoteMTA)}" if failure.remoteMTA else None,
                ),
                (
                    "Diagnostic-Code",
                    f"smtp; {_field(failure.diagnosticCode)}" if failure.diagnosticCode else None,
                ),
                (
                    "Last-Attempt-Date",
                    _date(failure.lastAttempt) if failure.lastAttempt is not None else None,
                ),
                (
                    "Will-Retry-Until",
                    _date(failure.willRetryUntil)
                    if failure.willRetryUntil is not None and failure.action == "delayed"
                    else None,
                ),
            )
        )
    part = _part("message/delivery-status", "Delivery report")
    for block in blocks:
        part.attach(block)
    return part


def _returnedHeaders(headers: bytes) -> Message:
    part = _part("text/rfc822-headers", "Undelivered Message Headers")
    if _is8bit(headers):
        part["Content-Transfer-Encoding"] = "8bit"
    part.set_payload(_text(headers))
    return part


def _returnedMessage(content: bytes) -> Message:
    part = _part("message/rfc822", "Undelivered Message")
    if _is8bit(content):
        part["Content-Transfer-Encoding"] = "8bit"
    # Parsed and written again by the same lenient policy, which folds
    # nothing: what comes back is the message as it was, but for the white
    # space after a field's colon.
    part.attach(BytesParser(policy=policy.compat32).parsebytes(content))
    return part


def _boundary(seed: str, host: str, returned: bytes) -> str:
    boundary = f"{seed[:16]}/{host}"
    counter = 0
    while boundary.encode() in returned:
        counter += 1
        boundary = f"{seed[:16]}.{counter}/{host}"
    return boundary


def buildDSN(
    reportingMTA: str,
    originalSender: str,
    failures: Sequence[RecipientFailure],
    originalMessage: bytes,
    arrivalDate: float,
    now: float,
    queueId: str | None = None,
    messageId: str | None = None,
    *,
    envelopeId: str | None = None,
    returnContent: bool = False,
    returnContentLimit: int = RETURN_CONTENT_LIMIT,
) -> bytes:
    """
    Build the DSN for some recipients of one message.

    @param reportingMTA: our host name (C{SMTP_HOSTNAME}); the DSN comes
        from C{MAILER-DAEMON@reportingMTA}.
    @param originalSender: the original envelope sender, who gets the DSN
        (check L{shouldBounce} first).
    @param failures: one L{RecipientFailure} per recipient to report.
    @param originalMessage: the message as stored.
    @param arrivalDate: when we accepted the message (POSIX seconds).
    @param now: the current time (POSIX seconds, from the injected clock).
    @param queueId: the message's queue id, reported for the postmaster.
    @param messageId: the DSN's Message-ID (default: derived from
        C{reportingMTA}, C{queueId} and C{now}).
    @param envelopeId: the C{ENVID} of the original MAIL command (RFC
        3461), xtext-decoded, reported as C{Original-Envelope-Id}.
    @param returnContent: return the whole message as C{message/rfc822}
        (C{RET=FULL}) instead of its header section
        (C{text/rfc822-headers}, the default, and C{RET=HDRS}).
    @param returnContentLimit: with C{returnContent}, a message larger than
        this many bytes is returned as headers only, and the notification
        says so.
    @return: the message, CRLF line ends.  It is 7-bit unless the returned
        original has 8-bit octets; then that part is marked C{8bit} and the
        DSN must be relayed with C{BODY=8BITMIME}.
    @raise ValueError: when there is nothing to report, or an address,
        status or action is unusable.
    """
    if not failures:
        raise ValueError("a DSN needs at least one recipient")
    sender = _address(originalSender, "sender")
    host = _field(reportingMTA)
    headers = _headerBlock(originalMessage)

    returned: Message
    if returnContent and len(originalMessage) <= returnContentLimit:
        content = _crlf(originalMessage)
        returned = _returnedMessage(content)
        note = "Your message is attached below."
    else:
        content = headers
        returned = _returnedHeaders(headers)
        note = "The headers of your message are attached below."
        if returnContent:
            note = (
                f"The headers of your message are attached below; the message is "
                f"larger than {returnContentLimit} bytes."
            )

    seed = hashlib.sha256(content + repr((host, queueId, now)).encode()).hexdigest()
    if messageId is None:
        messageId = f"<dsn.{seed[16:32]}.{int(now)}@{host}>"

    report = Message(policy=_POLICY)
    report["From"] = f"Mail Delivery System <MAILER-DAEMON@{host}>"
    report["To"] = f"<{sender}>"
    report["Subject"] = _subject(failures)
    report["Date"] = _date(now)
    report["Message-ID"] = _field(messageId)
    original = _messageId(headers)
    if original is not None:
        report["In-Reply-To"] = original
        report["References"] = original
    report["Auto-Submitted"] = "auto-replied"
    report["MIME-Version"] = "1.0"
    # The report type unquoted, as RFC 6522 writes it and filters look for it.
    boundary = quote(_boundary(seed, host, content))
    report["Content-Type"] = f'multipart/report; report-type=delivery-status; boundary="{boundary}"'
    notification = _notification(host, failures, queueId, note)
    if _is8bit(content) or notification["Content-Transfer-Encoding"] == "8bit":
        report["Content-Transfer-Encoding"] = "8bit"
    report.preamble = "This is a MIME-encapsulated message.\r\n"
    report.attach(notification)
    report.attach(_deliveryStatus(host, failures, arrivalDate, queueId, envelopeId))
    report.attach(returned)
    return report.as_bytes(policy=_POLICY)
