# -*- test-case-name: tests.test_webhook_payload -*-
"""
The JSON documents the webhooks post: a spooled message for the inbound
webhook (L{inboundPayload}), a delivery event for the events webhook
(L{eventPayload}), and their encoding (L{encode}).

Messages are parsed with the standard library's C{email} package
(C{policy.default}).  Mail in the wild is often broken: nothing here raises
on a message; what cannot be read is left out or null, and every problem
the parser or this module noticed is listed in C{parse_errors}.  Header
values are decoded (RFC 2047, RFC 2231) to Unicode; text parts are decoded
from their charset (an unknown charset or undeclared 8-bit text is read as
UTF-8, with replacement characters where it is not).

Pure functions of their input, so a retry posts the same body.  Building a
message's document is CPU work (about 0.6 ms for 1 KiB): the courier does it
in a thread of its own process.

From the envelope's C{metadata} (filled by the inbound side and the MX
checks when they record them) these keys are read: C{tls_version} (e.g.
C{"TLSv1.3"}), C{authUser} (the authenticated user), and C{authentication} (a JSON object: SPF,
DKIM, DMARC, ARC results and the Authentication-Results header).
"""

from __future__ import annotations

import base64
import codecs
import datetime
import hashlib
import json
import re
from collections.abc import Iterator
from email import policy
from email.header import decode_header, make_header
from email.message import EmailMessage, Message
from email.utils import getaddresses, parsedate_to_datetime
from typing import Any

from gopherpost.deliveryevents import (
    DeliveryEvent,
    MessageQueued,
    RecipientBounced,
    RecipientDeferred,
    RecipientDelivered,
    RecipientExpired,
)
from gopherpost.messageparse import parseBytes

__all__ = ["inboundPayload", "inScope", "eventPayload", "encode", "rfc3339"]

#: Parse errors listed at most (a pathological message can have thousands).
MAX_PARSE_ERRORS = 50

_ADDRESS_FIELDS = (("from", "from"), ("to", "to"), ("cc", "cc"), ("reply_to", "reply-to"))


def rfc3339(seconds: float) -> str:
    """
    C{seconds} since the epoch as an RFC 3339 UTC time with milliseconds,
    e.g. C{"2026-12-01T10:00:00.123Z"}.
    """
    moment = datetime.datetime.fromtimestamp(seconds, datetime.UTC)
    return moment.isoformat(timespec="milliseconds").replace("+00:00", "Z")


def _clean(text: str) -> str:
    """
    C{text} as valid Unicode: raw 8-bit bytes the parser kept as surrogate
    escapes are read as UTF-8 (RFC 6532), anything else invalid replaced.
    """
    try:
        return text.encode("utf-8", "surrogateescape").decode("utf-8", "replace")
    except UnicodeEncodeError:
        return text.encode("utf-8", "replace").decode("utf-8")


class _Errors:
    """
    The C{parse_errors} of one message, in order, without repeats.
    """

    def __init__(self) -> None:
        self.items: list[str] = []

    def add(self, text: str) -> None:
        text = _clean(text)
        if text not in self.items and len(self.items) < MAX_PARSE_ERRORS:
            self.items.append(text)

    def defects(self, where: str, defects: Any) -> None:
        for defect in defects or ():
            detail = str(defect)
            name = type(defect).__name__
            self.add(f"{where}: {name}" + (f": {detail}" if detail and detail != name else ""))


def _needsDecoding(raw: str) -> bool:
    """
    Whether a header's decoded value can differ from its unfolded raw value:
    it holds encoded words (RFC 2047) or 8-bit bytes.  Parsing a header
    through C{policy.default}'s header registry costs tens of microseconds,
    most of a payload's cost, so plain headers are only unfolded.
    """
    return "=?" in raw or not raw.isascii()


def _parse(message: Message, name: str, raw: str, errors: _Errors) -> Any:
    """
    One header through C{policy.default}'s header registry, its defects
    recorded; L{None} if the parser failed on it.
    """
    try:
        header = message.policy.header_fetch_parse(name, raw)
    except Exception as e:
        errors.add(f"header {name}: {type(e).__name__}: {e}")
        return None
    errors.defects(f"header {name}", getattr(header, "defects", ()))
    return header


def _unfold(raw: str) -> str:
    return "".join(raw.splitlines())


_ATOM = r"[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+"
_ADDR_SPEC = rf"{_ATOM}(?:\.{_ATOM})*@[A-Za-z0-9-]+(?:\.[A-Za-z0-9-]+)*"
#: One mailbox in its simple, unambiguous forms: C{a@b}, C{<a@b>}, C{Name
#: Words <a@b>}, C{"Quoted, Name" <a@b>}.  Anything else (comments, groups,
#: escapes, obsolete syntax) goes to the registry's parser.
_SIMPLE_MAILBOX = re.compile(
    rf"\s*(?:(?P<bare>{_ADDR_SPEC})|<(?P<angle>{_ADDR_SPEC})>"
    rf"|(?P<name>[A-Za-z0-9_'-]+(?: [A-Za-z0-9_'-]+)*) ?<(?P<named>{_ADDR_SPEC})>"
    rf'|"(?P<quoted>[A-Za-z0-9_\'.,:;@()/&+-]+(?: [A-Za-z0-9_\'.,:;@()/&+-]+)*)" ?'
    rf"<(?P<qaddr>{_ADDR_SPEC})>)\s*\Z"
)


def _simpleAddresses(value: str) -> list[dict[str, str]] | None:
    """
    The mailboxes of a plain address header, or L{None} when it is not in
    the simple forms L{_SIMPLE_MAILBOX} reads exactly as the registry does.
    """
    pieces = value.split(",") if '"' not in value else [value]
    found = []
    for piece in pieces:
        match = _SIMPLE_MAILBOX.match(piece)
        if match is None:
            return None
        groups = match.groupdict()
        address = groups["bare"] or groups["angle"] or groups["named"] or groups["qaddr"]
        found.append({"name": groups["name"] or groups["quoted"] or "", "address": address})
    return found


def _headerValue(message: Message, name: str, raw: str, errors: _Errors) -> tuple[str, Any]:
    """
    The decoded value of one header, and its parsed object (L{None} if it
    needed no parsing, or the parser failed on it).
    """
    if not _needsDecoding(raw):
        return _unfold(raw), None
    header = _parse(message, name, raw, errors)
    if header is None:
        return _clean(" ".join(raw.split())), None
    return _clean(str(header)), header


def _address(displayName: str, address: str) -> dict[str, str]:
    return {"name": _clean(displayName), "address": _clean(address)}


def _addresses(
    message: Message, found: tuple[str, Any, str, str], errors: _Errors
) -> list[dict[str, str]]:
    """
    The mailboxes of an address header (groups flattened).

    @param found: the header's decoded value, parsed form (or L{None}), raw
        value and name.
    """
    value, header, raw, name = found
    if header is None and not _needsDecoding(raw):
        simple = _simpleAddresses(value)
        if simple is not None:
            return simple
        header = _parse(message, name, raw, errors)
    addresses = getattr(header, "addresses", None)
    if addresses is not None:
        return [_address(a.display_name, a.addr_spec) for a in addresses if a.addr_spec]
    return [_address(n, a) for n, a in getaddresses([value]) if a]


def _date(message: Message, found: tuple[str, Any, str, str], errors: _Errors) -> str | None:
    value, header, raw, name = found
    moment = None
    if header is None:
        try:
            moment = parsedate_to_datetime(value)
        except (TypeError, ValueError, IndexError, OverflowError):
            header = _parse(message, name, raw, errors)
    if moment is None:
        moment = getattr(header, "datetime", None)
    if moment is None:
        return None
    if moment.tzinfo is None:  # "-0000": the zone is unknown; RFC 5322 says UTC
        moment = moment.replace(tzinfo=datetime.UTC)
    try:
        return rfc3339(moment.timestamp())
    except (OverflowError, OSError, ValueError) as e:
        errors.add(f"header Date: {e}")
        return None


def _isContainer(part: Message) -> bool:
    return part.get_content_maintype() == "multipart" and isinstance(part.get_payload(), list)


def _leaves(part: Message) -> Iterator[Message]:
    """
    The parts that hold content, in order: everything but readable
    multiparts.  An attached message (C{message/*}) is one leaf: its own
    text is not this message's text.
    """
    if _isContainer(part):
        for sub in part.get_payload():
            if isinstance(sub, Message):
                yield from _leaves(sub)
    else:
        yield part


def _contentBytes(part: Message, errors: _Errors, where: str) -> bytes:
    """
    The content of a leaf after its transfer encoding is undone.
    """
    payload = part.get_payload()
    try:
        if isinstance(payload, list):
            # message/rfc822 and friends: the attached message as text.
            serialized = part.as_bytes()
            for separator in (b"\r\n\r\n", b"\n\n"):
                head, found, body = serialized.partition(separator)
                if found:
                    return body
            return b""
        decoded = part.get_payload(decode=True)
        return decoded if isinstance(decoded, bytes) else b""
    except Exception as e:
        errors.add(f"{where}: content not readable: {type(e).__name__}: {e}")
        return b""


def _charsetOf(part: Message, errors: _Errors, where: str) -> str:
    charset = part.get_content_charset() or "us-ascii"
    try:
        return codecs.lookup(charset).name
    except LookupError:
        errors.add(f"{where}: unknown charset {charset!r}, read as UTF-8")
        return "utf-8"


def _text(part: Message, errors: _Errors, where: str) -> str:
    """
    A text leaf decoded to Unicode.
    """
    data = _contentBytes(part, errors, where)
    charset = _charsetOf(part, errors, where)
    try:
        return data.decode(charset)
    except UnicodeDecodeError:
        pass
    except LookupError:  # codecs.lookup said yes, but not a text codec
        charset = "utf-8"
    if charset == "ascii":
        try:
            text = data.decode("utf-8")
            errors.add(f"{where}: 8-bit text in a part declared us-ascii, read as UTF-8")
            return text
        except UnicodeDecodeError:
            pass
    errors.add(f"{where}: text is not valid {charset}; invalid bytes replaced")
    return data.decode(charset, "replace")


def _isAttachment(part: Message) -> bool:
    try:
        return part.get_content_disposition() == "attachment" or bool(part.get_filename())
    except Exception:
        return False


def _filename(part: Message, errors: _Errors, where: str) -> str | None:
    try:
        name = part.get_filename()
    except Exception as e:
        errors.add(f"{where}: filename not readable: {type(e).__name__}: {e}")
        return None
    if name is None:
        return None
    name = str(name)
    if "=?" in name and "?=" in name:
        # RFC 2047 inside a parameter: not standard, but what many clients send.
        try:
            name = str(make_header(decode_header(name)))
        except Exception:
            pass
    return _clean(name)


def _contentId(part: Message) -> str | None:
    value = part.get("content-id")
    if value is None:
        return None
    text = _clean(str(value)).strip()
    if text.startswith("<") and text.endswith(">"):
        text = text[1:-1]
    return text or None


def _attachment(part: Message, number: int, maxInline: int, errors: _Errors) -> dict[str, Any]:
    where = f"part {number} ({part.get_content_type()})"
    data = _contentBytes(part, errors, where)
    try:
        disposition = part.get_content_disposition()
    except Exception:
        disposition = None
    return {
        "filename": _filename(part, errors, where),
        "content_type": part.get_content_type(),
        "size": len(data),
        "sha256": hashlib.sha256(data).hexdigest(),
        "content_id": _contentId(part),
        "disposition": disposition,
        "content": base64.b64encode(data).decode("ascii") if len(data) <= maxInline else None,
    }


def _metadata(envelope: Any) -> dict[str, Any]:
    metadata = getattr(envelope, "metadata", None)
    return metadata if isinstance(metadata, dict) else {}


def _tlsVersion(envelope: Any, metadata: dict[str, Any]) -> str | None:
    version = metadata.get("tls_version")
    if isinstance(version, str) and version:
        return version
    # Without the version recorded, only whether TLS was used is known.
    return "TLS" if envelope.tls else None


def _body(
    message: Message, errors: _Errors, maxInline: int
) -> tuple[str | None, str | None, list[dict[str, Any]]]:
    """
    The first text/plain and text/html parts that are not attachments, and
    every other leaf as an attachment (inline images included).
    """
    text: str | None = None
    html: str | None = None
    attachments: list[dict[str, Any]] = []
    for number, part in enumerate(_leaves(message), 1):
        where = f"part {number} ({part.get_content_type()})"
        contentType = part.get_content_type()
        if part.get_content_maintype() == "multipart":
            contentType = "text/plain"  # a multipart that could not be split
        if not _isAttachment(part) and contentType == "text/plain" and text is None:
            text = _clean(_text(part, errors, where))
        elif not _isAttachment(part) and contentType == "text/html" and html is None:
            html = _clean(_text(part, errors, where))
        else:
            attachments.append(_attachment(part, number, maxInline, errors))
        # Decoding the content adds what it found wrong (bad base64, ...).
        errors.defects(where if part is not message else "message", part.defects)
    return text, html, attachments


def inScope(envelope: Any, scope: str) -> bool:
    """
    Whether a message gets an inbound webhook under C{SMTP_WEBHOOK_SCOPE}:
    C{"all"}, or (C{"local"}) when one of its recipients is local.
    """
    return scope == "all" or any(r.local for r in envelope.recipients)


def inboundPayload(
    envelope: Any,
    content: bytes,
    allRecipients: bool = False,
    maxInline: int = 1024 * 1024,
    includeRaw: bool = False,
) -> dict[str, Any]:
    """
    The inbound webhook's document for one spooled message.

    @param envelope: the message's L{gopherpost.spool.Envelope}.
    @param content: the message as stored.
    @param allRecipients: list every recipient in C{envelope.rcpt_to}
        (C{SMTP_WEBHOOK_SCOPE=all}); otherwise only the local ones.
    @param maxInline: attachments up to this size carry their content
        (base64); larger ones have C{content: null}.
    @param includeRaw: add C{raw}, the whole message in base64.
    @return: a JSON-able dict (see the README for every field).
    """
    errors = _Errors()
    metadata = _metadata(envelope)
    try:
        message: Message = parseBytes(content, policy.default)
    except Exception as e:  # the parser is lenient; this is a last resort
        errors.add(f"message not parsed: {type(e).__name__}: {e}")
        message = EmailMessage()
    headers: list[list[str]] = []
    parsed: dict[str, tuple[str, Any, str, str]] = {}
    for name, raw in message.raw_items():
        value, header = _headerValue(message, name, raw, errors)
        cleanName = _clean(name)
        headers.append([cleanName, value])
        parsed.setdefault(cleanName.lower(), (value, header, raw, cleanName))

    def single(name: str) -> str | None:
        found = parsed.get(name)
        return None if found is None else found[0]

    addresses: dict[str, list[dict[str, str]]] = {}
    for key, name in _ADDRESS_FIELDS:
        found = parsed.get(name)
        try:
            addresses[key] = [] if found is None else _addresses(message, found, errors)
        except Exception as e:
            errors.add(f"header {name}: addresses not readable: {type(e).__name__}: {e}")
            addresses[key] = []

    messageId = single("message-id")
    if messageId is not None:
        messageId = messageId.strip()
        if messageId.startswith("<") and messageId.endswith(">"):
            messageId = messageId[1:-1]

    date = None
    if "date" in parsed:
        date = _date(message, parsed["date"], errors)

    try:
        text, html, attachments = _body(message, errors, maxInline)
    except Exception as e:
        errors.add(f"body not readable: {type(e).__name__}: {e}")
        text, html, attachments = None, None, []
    if message.is_multipart():
        errors.defects("message", message.defects)

    recipients = [_clean(r.address) for r in envelope.recipients if allRecipients or r.local]
    authentication = metadata.get("authentication")
    # The inbound session records it as "authUser" (gopherpost.auth).
    authUser = metadata.get("authUser")
    document: dict[str, Any] = {
        "id": envelope.queueId,
        "received_at": rfc3339(envelope.received),
        "envelope": {"mail_from": _clean(envelope.sender), "rcpt_to": recipients},
        "client": {
            "ip": envelope.clientAddress,
            "helo": _clean(envelope.helo),
            "tls": _tlsVersion(envelope, metadata),
            "auth_user": authUser if isinstance(authUser, str) else None,
        },
        "authentication": authentication if isinstance(authentication, dict) else None,
        "headers": headers,
        "message_id": messageId or None,
        "subject": single("subject"),
        "from": addresses["from"][0] if addresses["from"] else None,
        "to": addresses["to"],
        "cc": addresses["cc"],
        "reply_to": addresses["reply_to"],
        "date": date,
        "text": text,
        "html": html,
        "attachments": attachments,
        "parse_errors": errors.items,
    }
    if includeRaw:
        document["raw"] = base64.b64encode(content).decode("ascii")
    return document


def _remote(host: str | None, ip: str | None = None, port: int | None = None) -> Any:
    if host is None and ip is None:
        return None
    return {"host": host, "ip": ip, "port": port}


def eventPayload(event: DeliveryEvent, eventId: str) -> dict[str, Any]:
    """
    The events webhook's document for one delivery event.

    @param eventId: the event's unique id (also its C{webhook-id}).
    """
    document: dict[str, Any] = {
        "id": eventId,
        "type": event.type,
        "timestamp": rfc3339(event.time),
        "queue_id": event.queueId,
    }
    if isinstance(event, MessageQueued):
        document.update(sender=event.sender, recipients=list(event.recipients), size=event.size)
    elif isinstance(event, RecipientDelivered):
        document.update(
            recipient=event.recipient,
            remote=_remote(event.remoteHost, event.remoteIP, event.remotePort),
            reply=event.reply,
            tls=None
            if event.tlsVersion is None
            else {"version": event.tlsVersion, "verified": bool(event.tlsVerified)},
        )
    elif isinstance(event, RecipientDeferred):
        document.update(
            recipient=event.recipient,
            attempt=event.attempt,
            error=event.error,
            next_attempt_at=rfc3339(event.nextAttempt),
            remote=_remote(event.remoteHost),
        )
    elif isinstance(event, RecipientBounced):
        document.update(
            recipient=event.recipient,
            dsn={"code": event.dsnCode, "text": event.dsnText},
            bounce_queue_id=event.bounceQueueId,
            remote=_remote(event.remoteHost),
        )
    elif isinstance(event, RecipientExpired):
        document.update(
            recipient=event.recipient,
            dsn={"code": event.dsnCode, "text": "Delivery time expired"},
            last_error=event.lastError,
            bounce_queue_id=event.bounceQueueId,
        )
    return document


def encode(document: dict[str, Any]) -> bytes:
    """
    The body posted: compact UTF-8 JSON.
    """
    text = json.dumps(document, ensure_ascii=False, separators=(",", ":"), allow_nan=False)
    return text.encode("utf-8", "replace")
