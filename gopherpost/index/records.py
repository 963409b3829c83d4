# -*- test-case-name: tests.test_index_database -*-
"""
One message as the index keeps it, built from its envelope and its bytes.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

from gopherpost.index.mime import SEARCH_TEXT_LIMIT, Address, cleanTags, parseMessage, snippetOf
from gopherpost.spool import Envelope

__all__ = ["IndexRecord", "buildRecord", "envelopeTags", "envelopeUser"]


@dataclass
class IndexRecord:
    """
    The indexed facts of one message (see L{gopherpost.index.database}).

    @ivar id: the queue id, which is also the API's message ID.
    @ivar received: when the spool accepted it (seconds since the epoch).
    """

    id: str
    dateDirectory: str
    received: float
    date: float | None
    sender: str
    recipients: list[str]
    local: bool
    fromJSON: str
    toJSON: str
    ccJSON: str
    bccJSON: str
    replyToJSON: str
    subject: str
    messageId: str
    size: int
    attachments: int
    inline: int
    attachmentNames: str
    snippet: str
    searchText: str
    username: str = ""
    tags: list[str] = field(default_factory=list)

    @staticmethod
    def addressText(addresses: list[Address]) -> str:
        """
        Addresses as one line for C{from:}-style matching.
        """
        return ", ".join(a.searchText() for a in addresses)


#: C{json.dumps(value, ensure_ascii=False)}, without making an encoder per call.
encodeJSON = json.JSONEncoder(ensure_ascii=False).encode


def _json(addresses: list[Address]) -> str:
    if not addresses:
        return "[]"  # most Cc, Bcc and Reply-To lists: no encoder call
    return encodeJSON([a.toJSON() for a in addresses])


def _metadata(envelope: Envelope) -> dict[str, Any]:
    # Envelope.metadata arrives with the inbound rework (tags, the
    # authenticated user, authentication results); older envelopes have none.
    metadata = getattr(envelope, "metadata", None)
    return metadata if isinstance(metadata, dict) else {}


def envelopeTags(envelope: Envelope) -> list[str]:
    """
    The tags the inbound side gave the message (C{metadata["tags"]}).
    """
    return cleanTags(_metadata(envelope).get("tags") or [])


def envelopeUser(envelope: Envelope) -> str:
    """
    The authenticated user who sent the message, or C{""}.
    """
    for key in ("authUser", "user", "username"):
        value = _metadata(envelope).get(key)
        if isinstance(value, str) and value:
            return value
    return ""


def buildRecord(envelope: Envelope, raw: bytes) -> IndexRecord:
    """
    The index record of a stored message.

    Bcc lists the envelope recipients that no To or Cc header names (and
    any Bcc header), as Mailpit shows them.
    """
    parsed = parseMessage(raw, allHeaders=False)
    named = {a.address.lower() for a in parsed.to + parsed.cc}
    bcc = list(parsed.bcc)
    for recipient in envelope.recipients:
        lowered = recipient.address.lower()
        if lowered not in named and lowered not in {a.address.lower() for a in bcc}:
            bcc.append(Address("", recipient.address))
    sender = [parsed.sender] if parsed.sender is not None else []
    if not sender and envelope.sender:
        sender = [Address("", envelope.sender)]
    body = parsed.bodyText()
    names = [p.fileName for p in parsed.attachments if p.fileName]
    searchParts = [
        IndexRecord.addressText(sender),
        parsed.subject,
        IndexRecord.addressText(parsed.to),
        IndexRecord.addressText(parsed.cc),
        IndexRecord.addressText(bcc),
        IndexRecord.addressText(parsed.replyTo),
        parsed.returnPath,
        envelope.sender,
        " ".join(names),
        body[:SEARCH_TEXT_LIMIT],
    ]
    tags = cleanTags(parsed.tags + envelopeTags(envelope))
    return IndexRecord(
        id=envelope.queueId,
        dateDirectory=envelope.dateDirectory,
        received=envelope.received,
        date=parsed.date,
        sender=envelope.sender,
        recipients=[r.address for r in envelope.recipients],
        local=any(r.local for r in envelope.recipients),
        fromJSON=encodeJSON(sender[0].toJSON()) if sender else "null",
        toJSON=_json(parsed.to),
        ccJSON=_json(parsed.cc),
        bccJSON=_json(bcc),
        replyToJSON=_json(parsed.replyTo),
        subject=parsed.subject,
        messageId=parsed.messageId,
        size=envelope.size or len(raw),
        attachments=len(parsed.attachments),
        inline=len(parsed.inline),
        attachmentNames="\n".join(names),
        snippet=snippetOf(body),
        searchText="\n".join(p for p in searchParts if p),
        username=envelopeUser(envelope),
        tags=tags,
    )
