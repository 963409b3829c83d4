# -*- test-case-name: tests.test_webui_send -*-
"""
Mail that enters through the API: Mailpit's send API (C{POST
/api/v1/send}) and release (C{POST /api/v1/message/{ID}/release}).

Both build a message and commit it to the spool as if it had arrived over
SMTP from the API's client (authenticated, or on loopback): it is stored,
indexed, and -- unless in capture mode -- its remote recipients are
relayed by the relay queue, which the spool tells of every commit.  Nothing
here calls the relay queue.

The send API builds the message with the standard library's email package
(C{policy.SMTP}: CRLF line ends, RFC 2047 where needed).  Release edits the
stored message's header block as bytes (the body is sent as it is):
C{Bcc} goes, C{Date} and C{Message-ID} are new, a C{Received} header says
where it came from.
"""

from __future__ import annotations

import base64
import binascii
import email.policy
import fnmatch
import mimetypes
import re
import time
from collections.abc import Sequence
from dataclasses import dataclass
from email.message import EmailMessage
from email.utils import formataddr, formatdate, make_msgid
from typing import Any

from twisted.internet.defer import Deferred

from gopherpost.spool import Envelope, Spool
from gopherpost.webui.http import HTTPError

__all__ = [
    "APIRelease",
    "APISender",
    "SendRequestError",
    "buildMessage",
    "checkAddress",
    "releasedMessage",
]

#: Headers the send API sets itself (Mailpit's list).
RESTRICTED_HEADERS = frozenset(
    h.lower()
    for h in (
        "To",
        "From",
        "Cc",
        "Bcc",
        "Reply-To",
        "Date",
        "Subject",
        "Content-Type",
        "Mime-Version",
    )
)

_ADDRESS = re.compile(r"^[^\s<>()\[\]\\,;:@\"]+(\.[^\s<>()\[\]\\,;:@\"]+)*@[A-Za-z0-9.\-\[\]:]+$")
_HEADER_NAME = re.compile(r"^[!-9;-~]+$")


class SendRequestError(HTTPError):
    """
    A send request that cannot be built (400, answered as JSON).
    """

    def __init__(self, message: str, code: int = 400) -> None:
        super().__init__(code, message, asJSON=True)


def checkAddress(address: object, what: str) -> str:
    """
    An address as the envelope takes it (C{local@domain}, no display name).

    @raise SendRequestError: naming C{what}.
    """
    if not isinstance(address, str) or not _ADDRESS.match(address.strip()) or len(address) > 320:
        raise SendRequestError(f"invalid {what} address: {address}")
    return address.strip()


def _mailbox(entry: object, what: str) -> tuple[str, str]:
    if not isinstance(entry, dict):
        raise SendRequestError(f"invalid {what}: expected an object with Email (and Name)")
    name = entry.get("Name") or ""
    if not isinstance(name, str) or "\r" in name or "\n" in name:
        raise SendRequestError(f"invalid {what} name")
    return (name, checkAddress(entry.get("Email"), what))


def _mailboxes(value: object, what: str) -> list[tuple[str, str]]:
    if value is None:
        return []
    if not isinstance(value, list):
        raise SendRequestError(f"invalid {what}: expected an array")
    return [_mailbox(entry, what) for entry in value]


def _text(data: dict[str, Any], name: str) -> str:
    value = data.get(name) or ""
    if not isinstance(value, str):
        raise SendRequestError(f"invalid {name}: expected a string")
    return value


@dataclass
class BuiltMessage:
    """
    A message ready for the spool.
    """

    content: bytes
    sender: str
    recipients: list[str]


def buildMessage(data: object, hostname: str, now: float | None = None) -> BuiltMessage:
    """
    Build the message of a Mailpit send request.

    @raise SendRequestError: for anything Mailpit refuses too (no From, bad
        addresses, a restricted header, bad base64), or no recipient.
    """
    if not isinstance(data, dict):
        raise SendRequestError("invalid request: expected a JSON object")
    if not data.get("From"):
        raise SendRequestError("missing From")
    sender = _mailbox(data["From"], "From")
    to = _mailboxes(data.get("To"), "To")
    cc = _mailboxes(data.get("Cc"), "Cc")
    replyTo = _mailboxes(data.get("ReplyTo"), "Reply-To")
    bccRaw = data.get("Bcc") or []
    if not isinstance(bccRaw, list):
        raise SendRequestError("invalid Bcc: expected an array of addresses")
    bcc = [checkAddress(a, "Bcc") for a in bccRaw]
    recipients = [a for _, a in to] + [a for _, a in cc] + bcc
    if not recipients:
        raise SendRequestError("no recipients (To, Cc or Bcc)")
    subject = _text(data, "Subject")
    if "\r" in subject or "\n" in subject:
        raise SendRequestError("invalid Subject: must be one line")
    text = _text(data, "Text")
    html = _text(data, "HTML")

    message = EmailMessage(policy=email.policy.SMTP)
    message["From"] = formataddr(sender)
    if to:
        message["To"] = ", ".join(formataddr(m) for m in to)
    if cc:
        message["Cc"] = ", ".join(formataddr(m) for m in cc)
    if replyTo:
        message["Reply-To"] = ", ".join(formataddr(m) for m in replyTo)
    message["Subject"] = subject
    message["Date"] = formatdate(now if now is not None else time.time(), localtime=False)
    message["Message-ID"] = make_msgid(domain=hostname)
    tags = data.get("Tags") or []
    if not isinstance(tags, list) or not all(isinstance(t, str) for t in tags):
        raise SendRequestError("invalid Tags: expected an array of strings")
    restricted = set(RESTRICTED_HEADERS)
    if tags:
        message["X-Tags"] = ", ".join(t.replace("\r", " ").replace("\n", " ") for t in tags)
        restricted.add("x-tags")
    headers = data.get("Headers") or {}
    if not isinstance(headers, dict):
        raise SendRequestError("invalid Headers: expected an object")
    for name, value in headers.items():
        if not isinstance(name, str) or not _HEADER_NAME.match(name):
            raise SendRequestError(f"invalid header name: {name!r}")
        if name.lower() in restricted or name.lower() == "message-id":
            raise SendRequestError(f'cannot overwrite header: "{name}"')
        if not isinstance(value, str) or "\r" in value or "\n" in value:
            raise SendRequestError(f'invalid value of header "{name}": must be one line')
        message[name] = value

    message.set_content(text)
    if html:
        message.add_alternative(html, subtype="html")
    attachments = data.get("Attachments") or []
    if not isinstance(attachments, list):
        raise SendRequestError("invalid Attachments: expected an array")
    for attachment in attachments:
        _attach(message, attachment, bool(html))
    return BuiltMessage(message.as_bytes(), sender[1], recipients)


def _attach(message: EmailMessage, attachment: object, hasHTML: bool) -> None:
    if not isinstance(attachment, dict):
        raise SendRequestError("invalid attachment: expected an object")
    fileName = attachment.get("Filename")
    content = attachment.get("Content")
    if not isinstance(fileName, str) or not fileName or "\r" in fileName or "\n" in fileName:
        raise SendRequestError("invalid attachment: Filename is required")
    if not isinstance(content, str):
        raise SendRequestError(f'invalid attachment "{fileName}": Content is required')
    try:
        payload = base64.b64decode(content.split(",")[-1], validate=True)
    except (binascii.Error, ValueError) as e:
        raise SendRequestError(f'error decoding base64 attachment "{fileName}": {e}') from None
    contentType = attachment.get("ContentType") or mimetypes.guess_type(fileName)[0]
    if not isinstance(contentType, str) or "/" not in contentType:
        contentType = "application/octet-stream"
    maintype, subtype = contentType.split("/", 1)
    subtype = subtype.split(";")[0].strip() or "octet-stream"
    contentId = attachment.get("ContentID") or ""
    if not isinstance(contentId, str) or "\r" in contentId or "\n" in contentId:
        raise SendRequestError(f'invalid attachment "{fileName}": bad ContentID')
    if contentId and hasHTML:
        htmlPart = message.get_body(("html",))
        if htmlPart is not None:
            htmlPart.add_related(
                payload,
                maintype=maintype,
                subtype=subtype,
                cid=f"<{contentId.strip('<>')}>",
                filename=fileName,
                disposition="inline",
            )
            return
    message.add_attachment(payload, maintype=maintype, subtype=subtype, filename=fileName)


def receivedHeader(clientAddress: str, hostname: str, queueId: str, now: float) -> bytes:
    """
    The C{Received} header of a message that entered through the API.
    """
    client = clientAddress.replace("\r", "").replace("\n", "")
    return (
        f"Received: from [{client}] by {hostname} with HTTP (GopherPost API)\r\n"
        f"\tid {queueId}; {formatdate(now, localtime=False)}\r\n"
    ).encode("ascii", "replace")


_DROPPED_ON_RELEASE = (b"bcc", b"date", b"message-id")


def releasedMessage(raw: bytes, hostname: str, now: float) -> bytes:
    """
    The stored message as release sends it: without C{Bcc}, with a new
    C{Date} and C{Message-ID}; the body byte for byte.
    """
    separator = re.search(rb"\r?\n\r?\n", raw)
    head, body = (raw[: separator.start()], raw[separator.start() :]) if separator else (raw, b"")
    kept: list[bytes] = []
    dropping = False
    for line in re.split(rb"\r?\n", head):
        if line[:1] in (b" ", b"\t"):
            if not dropping:
                kept.append(line)
            continue
        name = line.split(b":", 1)[0].strip().lower()
        dropping = name in _DROPPED_ON_RELEASE
        if not dropping:
            kept.append(line)
    fresh = [
        b"Date: " + formatdate(now, localtime=False).encode("ascii"),
        b"Message-ID: " + make_msgid(domain=hostname).encode("ascii"),
    ]
    return b"\r\n".join(fresh + kept) + body


class APISender:
    """
    Commits messages made by the API to the spool.

    @param isLocal: whether an address is in one of our local domains.
    @param maxSize: the largest message (C{SMTP_MAX_MESSAGE_SIZE}).
    """

    def __init__(self, spool: Spool, hostname: str, isLocal: Any, maxSize: int, clock: Any) -> None:
        self._spool = spool
        self._hostname = hostname
        self._isLocal = isLocal
        self._maxSize = maxSize
        self._clock = clock

    def _local(self, address: str) -> bool:
        return bool(self._isLocal(address.rpartition("@")[2]))

    def commit(
        self, content: bytes, sender: str, recipients: Sequence[str], clientAddress: str, tls: bool
    ) -> Deferred[Envelope]:
        """
        Store C{content} (a C{Received} header is put on top) for
        C{recipients}.

        @raise SendRequestError: 413 when it is larger than the limit.
        """
        queueId = self._spool.newQueueId()
        now = self._clock.seconds()
        content = receivedHeader(clientAddress, self._hostname, queueId, now) + content
        if len(content) > self._maxSize:
            raise SendRequestError(
                f"message size {len(content)} exceeds the limit of {self._maxSize} bytes", 413
            )
        writer = self._spool.newWriter()
        writer.write(content)
        unique = list(dict.fromkeys(recipients))
        return self._spool.commit(
            writer,
            sender,
            [(r, self._local(r)) for r in unique],
            clientAddress,
            "api",
            tls,
            queueId=queueId,
        )


class APIRelease:
    """
    Which addresses release may send to: C{SMTP_RELEASE_TO} patterns
    (shell-style, case-insensitive: C{*@example.org}).
    """

    def __init__(self, patterns: Sequence[str], enabled: bool) -> None:
        self.patterns = tuple(p.lower() for p in patterns)
        self.enabled = enabled and bool(self.patterns)

    def refused(self, addresses: Sequence[str]) -> list[str]:
        """
        The addresses no pattern allows.
        """
        return [
            a
            for a in addresses
            if not any(fnmatch.fnmatchcase(a.lower(), p) for p in self.patterns)
        ]
