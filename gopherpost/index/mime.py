# -*- test-case-name: tests.test_index_mime -*-
"""
What a stored message says about itself: its addresses, subject, date,
bodies and attachments, read from its bytes with the standard library's
email package.

Mail is hostile input and often broken: nothing here raises for a bad
message.  A header that does not decode is shown as it is, a charset that
is unknown is read as UTF-8 with replacement characters, a part that does
not decode is empty.  The legacy C{compat32} policy is used: it is ten
times faster than C{policy.default} (this runs for every indexed message)
and leaves the decoding to the careful helpers below.

Parts are numbered as IMAP numbers them (RFC 3501 section 6.4.5): the
children of a multipart are C{1}, C{2}, ...; their children C{1.1}, ...;
a message that is not multipart has the single part C{1}.  These are the
C{PartID}s of the API.
"""

from __future__ import annotations

import email.policy
import hashlib
import html
import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from email.header import decode_header, make_header
from email.message import Message
from email.utils import collapse_rfc2231_value, getaddresses, parsedate_to_datetime
from html.parser import HTMLParser

from gopherpost.messageparse import parseBytes

__all__ = [
    "Address",
    "Part",
    "ParsedMessage",
    "parseMessage",
    "findPart",
    "decodeHeader",
    "htmlToText",
    "snippetOf",
    "cleanTags",
]

#: Characters of text kept for full-text search per message.
SEARCH_TEXT_LIMIT = 64 * 1024
#: Characters of the list's snippet (Mailpit's).
SNIPPET_LENGTH = 250

_WHITESPACE = re.compile(r"\s+")


@dataclass(frozen=True)
class Address:
    """
    One mailbox of an address header.
    """

    name: str
    address: str

    def toJSON(self) -> dict[str, str]:
        """
        Mailpit's shape: C{{"Name": ..., "Address": ...}}.
        """
        return {"Name": self.name, "Address": self.address}

    def searchText(self) -> str:
        """
        C{name <address>}, for matching.
        """
        return f"{self.name} <{self.address}>" if self.name else f"<{self.address}>"


@dataclass(frozen=True)
class Part:
    """
    An attachment or inline part.

    @ivar partId: its IMAP part number (see the module docstring).
    @ivar size: the decoded size in bytes.
    """

    partId: str
    fileName: str
    contentType: str
    contentId: str
    size: int
    inline: bool
    #: MD5, SHA1 and SHA256 of the decoded content, when asked for.
    checksums: tuple[str, str, str] | None = None

    def toJSON(self) -> dict[str, object]:
        """
        Mailpit's C{Attachment} shape.
        """
        data: dict[str, object] = {
            "PartID": self.partId,
            "FileName": self.fileName,
            "ContentType": self.contentType,
            "ContentID": self.contentId,
            "Size": self.size,
        }
        if self.checksums is not None:
            md5, sha1, sha256 = self.checksums
            data["Checksums"] = {"MD5": md5, "SHA1": sha1, "SHA256": sha256}
        return data


@dataclass
class ParsedMessage:
    """
    A message as the index and the API show it.

    @ivar headers: every header, in order, decoded.
    @ivar date: the C{Date:} header as seconds since the epoch, or L{None}
        when it is missing or unreadable.
    """

    headers: list[tuple[str, str]] = field(default_factory=list)
    sender: Address | None = None
    to: list[Address] = field(default_factory=list)
    cc: list[Address] = field(default_factory=list)
    bcc: list[Address] = field(default_factory=list)
    replyTo: list[Address] = field(default_factory=list)
    subject: str = ""
    messageId: str = ""
    returnPath: str = ""
    date: float | None = None
    text: str = ""
    html: str = ""
    attachments: list[Part] = field(default_factory=list)
    inline: list[Part] = field(default_factory=list)
    tags: list[str] = field(default_factory=list)

    def header(self, name: str) -> str:
        """
        The first header called C{name} (any case), or C{""}.
        """
        lowered = name.lower()
        for key, value in self.headers:
            if key.lower() == lowered:
                return value
        return ""

    def bodyText(self) -> str:
        """
        The text body, or the HTML body as text when there is no text.
        """
        return self.text if self.text.strip() else htmlToText(self.html)


def _unescape(value: str) -> str:
    """
    Undo the surrogate escapes of 8-bit header bytes (raw UTF-8 headers).
    """
    if value.isascii():
        return value
    try:
        value.encode("utf-8")
        return value
    except UnicodeEncodeError:
        return value.encode("utf-8", "surrogateescape").decode("utf-8", "replace")


def decodeHeader(value: object) -> str:
    """
    A header value as text: RFC 2047 encoded words decoded, raw 8-bit
    bytes read as UTF-8, folding removed.  Never raises.
    """
    if value is None:
        return ""
    text = _unescape(str(value))
    if "=?" in text:
        try:
            text = str(make_header(decode_header(text)))
        except Exception:
            # HeaderParseError (bad base64), unknown charsets, ...: as it is.
            pass
    if "\n" in text or "\t" in text or "  " in text or "\r" in text:
        text = _WHITESPACE.sub(" ", text.replace("\r", "").replace("\n", ""))
    return text.strip()


_SIMPLE_ADDRESS = re.compile(r"^\s*<?([^\s<>@\"(),;:\[\]\\]+@[A-Za-z0-9.\-]+)>?\s*$")
_SIMPLE_NAMED = re.compile(
    r'^\s*([^<>"(),;:@\\]*?)\s*<([^\s<>@"(),;:\[\]\\]+@[A-Za-z0-9.\-]+)>\s*$'
)


class _Headers:
    """
    A message's headers by lower-cased name, read once (C{Message.get} scans
    every header each time).
    """

    def __init__(self, message: Message) -> None:
        self._all: dict[str, list[object]] = {}
        # raw_items: the values as parsed (8-bit bytes surrogate-escaped);
        # items() would wrap those in Header objects that lose them.
        for name, value in message.raw_items():
            self._all.setdefault(name.lower(), []).append(value)

    def get(self, name: str) -> object:
        values = self._all.get(name)
        return values[0] if values else None

    def get_all(self, name: str, default: list[object]) -> list[object]:
        return self._all.get(name, default)


def _addresses(message: Message | _Headers, name: str) -> list[Address]:
    values = [_unescape(str(v)) for v in message.get_all(name, [])]
    if not values:
        return []
    if len(values) == 1 and "," not in values[0] and "=?" not in values[0]:
        # The common case without the email package's address parser.
        simple = _SIMPLE_ADDRESS.match(values[0])
        if simple:
            return [Address("", simple.group(1))]
        named = _SIMPLE_NAMED.match(values[0])
        if named:
            return [Address(named.group(1).strip(), named.group(2))]
    try:
        pairs = getaddresses(values)
    except Exception:
        return []
    found = []
    for displayName, address in pairs:
        if not address and not displayName:
            continue
        found.append(Address(decodeHeader(displayName), address.strip()))
    return found


def _charsetOf(part: Message) -> str:
    try:
        charset = part.get_content_charset() or "utf-8"
    except Exception:
        return "utf-8"
    if charset in ("us-ascii", "ascii", "unknown-8bit", "x-unknown"):
        return "utf-8"
    return charset


def _payload(part: Message) -> bytes:
    try:
        payload = part.get_payload(decode=True)
    except Exception:
        return b""
    return payload if isinstance(payload, bytes) else b""


def _text(part: Message) -> str:
    data = _payload(part)
    try:
        return data.decode(_charsetOf(part), "replace")
    except LookupError:
        return data.decode("utf-8", "replace")


def _fileName(part: Message) -> str:
    try:
        # Content-Disposition's filename, else Content-Type's name.
        name = part.get_filename()
    except Exception:
        # A filename that does not decode: Content-Type's name alone.
        try:
            param = part.get_param("name")
            name = collapse_rfc2231_value(param) if isinstance(param, tuple) else param
        except Exception:
            name = None
    return decodeHeader(name) if name else ""


def _disposition(part: Message) -> str:
    try:
        value = part.get_content_disposition()
    except Exception:
        return ""
    return value or ""


def _walk(part: Message, path: str, related: bool) -> Iterator[tuple[str, Message, bool]]:
    """
    Yield C{(partId, part, insideRelated)} for every leaf part.
    """
    if part.is_multipart():
        children = part.get_payload()
        if not isinstance(children, list):
            return
        isRelated = related or part.get_content_subtype() == "related"
        for i, child in enumerate(children, 1):
            if isinstance(child, Message):
                yield from _walk(child, f"{path}.{i}" if path else str(i), isRelated)
        return
    yield (path or "1", part, related)


def _parse(raw: bytes) -> Message:
    return parseBytes(raw, email.policy.compat32)


def parseMessage(raw: bytes, checksums: bool = False, allHeaders: bool = True) -> ParsedMessage:
    """
    Read a message (never raises).

    @param raw: the message as stored (CRLF or LF line ends).
    @param checksums: compute the checksums of attachments (for the API's
        message view; the index does not need them).
    @param allHeaders: decode every header into C{headers} (the index does
        not need them).
    """
    message = _parse(raw)
    parsed = ParsedMessage()
    if allHeaders:
        parsed.headers = [(str(k), decodeHeader(v)) for k, v in message.raw_items()]
    headers = _Headers(message)
    senders = _addresses(headers, "from")
    parsed.sender = senders[0] if senders else None
    parsed.to = _addresses(headers, "to")
    parsed.cc = _addresses(headers, "cc")
    parsed.bcc = _addresses(headers, "bcc")
    parsed.replyTo = _addresses(headers, "reply-to")
    parsed.subject = decodeHeader(headers.get("subject"))
    parsed.messageId = decodeHeader(headers.get("message-id")).strip().strip("<>").strip()
    parsed.returnPath = decodeHeader(headers.get("return-path")).strip("<> ")
    dateHeader = headers.get("date")
    if dateHeader:
        try:
            parsed.date = parsedate_to_datetime(decodeHeader(dateHeader)).timestamp()
        except (TypeError, ValueError, IndexError, OverflowError):
            parsed.date = None
    tags = decodeHeader(headers.get("x-tags"))
    if tags:
        parsed.tags = cleanTags(tags.split(","))
    texts: list[str] = []
    htmls: list[str] = []
    for partId, part, related in _walk(message, "", False):
        contentType = part.get_content_type()
        disposition = _disposition(part)
        fileName = _fileName(part)
        isBody = disposition != "attachment" and (not fileName or disposition == "inline")
        if contentType in ("text/plain", "text/html") and isBody:
            (texts if contentType == "text/plain" else htmls).append(_text(part))
            continue
        contentId = decodeHeader(part.get("content-id")).strip("<> ")
        payload = _payload(part)
        record = Part(
            partId=partId,
            fileName=fileName,
            contentType=contentType,
            contentId=contentId,
            size=len(payload),
            inline=bool(contentId) and disposition != "attachment" and (related or not fileName),
            checksums=_checksums(payload) if checksums else None,
        )
        (parsed.inline if record.inline else parsed.attachments).append(record)
    parsed.text = "\n".join(texts)
    parsed.html = "\n".join(htmls)
    return parsed


def _checksums(payload: bytes) -> tuple[str, str, str]:
    return (
        hashlib.md5(payload, usedforsecurity=False).hexdigest(),
        hashlib.sha1(payload, usedforsecurity=False).hexdigest(),
        hashlib.sha256(payload).hexdigest(),
    )


def cleanTags(names: object) -> list[str]:
    """
    Tags as Mailpit keeps them: C{a-z A-Z 0-9 - . _} and spaces, trimmed,
    empty ones and repeats (in any case) dropped.
    """
    tags: list[str] = []
    seen: set[str] = set()
    for name in names if isinstance(names, list | tuple) else []:
        cleaned = re.sub(r"[^a-zA-Z0-9\-._ ]", "", str(name)).strip()
        cleaned = _WHITESPACE.sub(" ", cleaned)
        if cleaned and cleaned.lower() not in seen:
            seen.add(cleaned.lower())
            tags.append(cleaned)
    return tags


def findPart(raw: bytes, partId: str) -> tuple[Part, bytes] | None:
    """
    The attachment or inline part C{partId} of a message and its decoded
    content, or L{None} if there is no such part.
    """
    message = _parse(raw)
    for candidate, part, related in _walk(message, "", False):
        if candidate != partId:
            continue
        disposition = _disposition(part)
        contentId = decodeHeader(part.get("content-id")).strip("<> ")
        fileName = _fileName(part)
        payload = _payload(part)
        return (
            Part(
                partId=partId,
                fileName=fileName,
                contentType=part.get_content_type(),
                contentId=contentId,
                size=len(payload),
                inline=bool(contentId)
                and disposition != "attachment"
                and (related or not fileName),
            ),
            payload,
        )
    return None


class _TextExtractor(HTMLParser):
    _SKIP = frozenset({"script", "style", "head", "title", "template", "noscript"})
    _BREAK = frozenset({"br", "p", "div", "tr", "li", "h1", "h2", "h3", "h4", "h5", "h6", "table"})

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.chunks: list[str] = []
        self._skipping = 0

    def handle_starttag(self, tag: str, attrs: object) -> None:
        if tag in self._SKIP:
            self._skipping += 1
        elif tag in self._BREAK:
            self.chunks.append("\n")

    def handle_endtag(self, tag: str) -> None:
        if tag in self._SKIP and self._skipping:
            self._skipping -= 1
        elif tag in self._BREAK:
            self.chunks.append("\n")

    def handle_data(self, data: str) -> None:
        if not self._skipping:
            self.chunks.append(data)


def htmlToText(markup: str) -> str:
    """
    The text of an HTML document (for search and snippets; never shown as
    HTML).  Never raises.
    """
    if not markup:
        return ""
    extractor = _TextExtractor()
    try:
        extractor.feed(markup)
        extractor.close()
    except Exception:
        return html.unescape(re.sub(r"<[^>]*>", " ", markup))
    return "".join(extractor.chunks)


def snippetOf(text: str) -> str:
    """
    The first L{SNIPPET_LENGTH} characters of C{text}, whitespace collapsed.
    """
    collapsed = " ".join(text[: SNIPPET_LENGTH * 8].split())
    if len(collapsed) <= SNIPPET_LENGTH:
        return collapsed
    return collapsed[:SNIPPET_LENGTH].rstrip() + "..."
