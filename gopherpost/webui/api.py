# -*- test-case-name: tests.test_webui_api -*-
"""
Mailpit's API v1 over GopherPost's index and spool: the same paths,
parameters, field names and JSON shapes (Mailpit's
C{server/ui/api/v1/swagger.json}), so Mailpit's clients and test helpers
work unchanged.

Implemented: messages (list, read status, delete), search (list, delete),
message (summary, headers, raw, part, release), send, tags, info, webui,
the HTML and text views under C{/view/}, and GopherPost's own
C{/api/v1/message/{ID}/gopherpost} (envelope, client, TLS, delivery
state).  Without a counterpart here, as Mailpit answers when the feature
is off: chaos (400 "Chaos is not enabled"), SpamAssassin (404), HTML check
and link check (400), thumbnails (404).

Differences, each safer: C{limit} is capped at L{MAX_LIMIT}; a search
value that means nothing is 400 instead of being ignored; a request body
that is not JSON is 400 (Mailpit deletes every message when
C{DELETE /api/v1/messages} has a body it cannot read).
"""

from __future__ import annotations

import os
import resource
from typing import Any

from twisted.internet.defer import Deferred, inlineCallbacks
from twisted.web.server import Request

import gopherpost
from gopherpost.index.database import isoTime
from gopherpost.index.mailbox import Mailbox, MessageNotFound
from gopherpost.index.mime import cleanTags, findPart, parseMessage
from gopherpost.index.query import SearchQuery, parseQuery, parseTimestamp
from gopherpost.webui.http import (
    HTTPError,
    Response,
    Router,
    jsonResponse,
    queryArgument,
    readJSON,
    textResponse,
)
from gopherpost.webui.send import APIRelease, APISender, buildMessage, checkAddress, releasedMessage

__all__ = ["MailpitAPI", "MAX_LIMIT", "DEFAULT_LIMIT"]

#: Messages one page has by default (Mailpit's).
DEFAULT_LIMIT = 50
#: Messages one page has at most.
MAX_LIMIT = 1000


def _nonNegative(request: Request, name: str, default: int) -> int:
    raw = queryArgument(request, name)
    if raw is None or raw.strip() == "":
        return default
    try:
        value = int(raw.strip())
    except ValueError:
        raise HTTPError(400, f"{name}: {raw!r} is not a whole number") from None
    if value < 0:
        raise HTTPError(400, f"{name}: must not be negative")
    return value


def _before(request: Request) -> float | None:
    raw = queryArgument(request, "before")
    if not raw:
        return None
    return parseTimestamp(raw, queryArgument(request, "tz"))


def _ids(value: object) -> list[str] | None:
    if value is None:
        return None
    if not isinstance(value, list) or not all(isinstance(i, str) for i in value):
        raise HTTPError(400, "IDs must be an array of strings")
    return value


def _canonicalHeader(name: str) -> str:
    # Go's textproto.CanonicalMIMEHeaderKey, as Mailpit's header keys are.
    return "-".join(part[:1].upper() + part[1:].lower() for part in name.split("-"))


def _rawHeaders(raw: bytes) -> dict[str, list[str]]:
    from email.parser import BytesHeaderParser
    from email.policy import compat32

    message = BytesHeaderParser(policy=compat32).parsebytes(raw)
    headers: dict[str, list[str]] = {}
    for name, value in message.raw_items():
        text = str(value)
        if any("\udc80" <= c <= "\udcff" for c in text):
            text = text.encode("ascii", "surrogateescape").decode("utf-8", "replace")
        text = " ".join(text.replace("\r", "").split("\n")).strip()
        headers.setdefault(_canonicalHeader(str(name)), []).append(text)
    return dict(sorted(headers.items()))


def _listUnsubscribe(headerValue: str, post: str) -> dict[str, Any]:
    links = [part.strip().strip("<>") for part in headerValue.split(",") if part.strip()]
    errors = ""
    if headerValue and not all(
        part.strip().startswith("<") and part.strip().endswith(">")
        for part in headerValue.split(",")
    ):
        errors = "links must be enclosed in <>"
    return {"Header": headerValue, "Links": links, "Errors": errors, "HeaderPost": post}


class MailpitAPI:
    """
    The handlers; L{routes} puts them on a L{Router}.

    @param capture: capture mode (nothing is relayed).
    """

    def __init__(
        self,
        mailbox: Mailbox,
        sender: APISender,
        release: APIRelease,
        hostname: str,
        clock: Any,
        capture: bool,
        stats: Any = None,
    ) -> None:
        self.mailbox = mailbox
        self.sender = sender
        self.release = release
        self.hostname = hostname
        self.clock = clock
        self.capture = capture
        self.started = clock.seconds()
        self.stats = stats

    def routes(self, router: Router) -> Router:
        """
        Add every route to C{router}.
        """
        add = router.add
        add("GET", "/api/v1/messages", self.getMessages)
        add("PUT", "/api/v1/messages", self.setReadStatus)
        add("DELETE", "/api/v1/messages", self.deleteMessages)
        add("GET", "/api/v1/search", self.search)
        add("DELETE", "/api/v1/search", self.deleteSearch)
        add("POST", "/api/v1/send", self.send)
        add("GET", "/api/v1/tags", self.getTags)
        add("PUT", "/api/v1/tags", self.setTags)
        add("PUT", "/api/v1/tags/{tag}", self.renameTag)
        add("DELETE", "/api/v1/tags/{tag}", self.deleteTag)
        add("GET", "/api/v1/message/{id}", self.getMessage)
        add("GET", "/api/v1/message/{id}/headers", self.getHeaders)
        add("GET", "/api/v1/message/{id}/raw", self.getRaw)
        add("GET", "/api/v1/message/{id}/part/{partId}", self.getPart)
        add("GET", "/api/v1/message/{id}/part/{partId}/thumb", self.notFound)
        add("POST", "/api/v1/message/{id}/release", self.releaseMessage)
        add("GET", "/api/v1/message/{id}/gopherpost", self.getDelivery)
        add("GET", "/api/v1/message/{id}/html-check", self.htmlCheck)
        add("GET", "/api/v1/message/{id}/link-check", self.linkCheck)
        add("GET", "/api/v1/message/{id}/sa-check", self.notFound)
        add("GET", "/api/v1/info", self.info)
        add("GET", "/api/v1/webui", self.webui)
        add("GET", "/api/v1/chaos", self.chaos)
        add("PUT", "/api/v1/chaos", self.chaos)
        add("GET", "/view/{name}", self.view)
        return router

    # -- lists and search ----------------------------------------------------

    def _page(self, request: Request) -> tuple[int, int]:
        start = _nonNegative(request, "start", 0)
        limit = _nonNegative(request, "limit", DEFAULT_LIMIT)
        return start, min(limit, MAX_LIMIT)

    def getMessages(self, request: Request) -> Deferred:
        start, limit = self._page(request)
        before = _before(request)
        return self.mailbox.summaries(SearchQuery(), start, limit, before).addCallback(jsonResponse)

    def _query(self, request: Request) -> SearchQuery:
        text = (queryArgument(request, "query") or "").strip()
        if not text:
            raise HTTPError(400, "Error: no search query")
        return parseQuery(text, queryArgument(request, "tz"))

    def search(self, request: Request) -> Deferred:
        query = self._query(request)
        start, limit = self._page(request)
        before = _before(request)
        d = self.mailbox.summaries(query, start, limit, before, filtered=True)
        return d.addCallback(jsonResponse)

    def deleteSearch(self, request: Request) -> Deferred:
        query = self._query(request)
        return self.mailbox.deleteMatching(query).addCallback(lambda _: textResponse("ok"))

    def setReadStatus(self, request: Request) -> Deferred:
        data = readJSON(request, {}) or {}
        if not isinstance(data, dict):
            raise HTTPError(400, "expected a JSON object")
        ids = _ids(data.get("IDs"))
        search = data.get("Search") or ""
        read = bool(data.get("Read", False))
        if ids and search:
            raise HTTPError(400, "You may specify either IDs or a search query, not both")
        if search:
            if not isinstance(search, str):
                raise HTTPError(400, "Search must be a string")
            d = self.mailbox.setReadMatching(parseQuery(search, queryArgument(request, "tz")), read)
        else:
            d = self.mailbox.setRead(ids or None, read)
        return d.addCallback(lambda _: textResponse("ok"))

    def deleteMessages(self, request: Request) -> Deferred:
        data = readJSON(request, {}) or {}
        if not isinstance(data, dict):
            raise HTTPError(400, "expected a JSON object")
        ids = _ids(data.get("IDs"))
        return self.mailbox.delete(ids or None).addCallback(lambda _: textResponse("ok"))

    # -- one message --------------------------------------------------------

    @inlineCallbacks
    def _content(self, id: str):
        resolved = yield self.mailbox.resolve(id)
        result = yield self.mailbox.content(resolved)
        return result

    @inlineCallbacks
    def getMessage(self, request: Request, id: str):
        record, envelope, raw = yield self._content(id)
        parsed = parseMessage(raw, checksums=True)
        if not record["read"]:
            yield self.mailbox.setRead([record["id"]], True)
        summary = record["summary"]
        date = parsed.date if parsed.date is not None else record["received"]
        return jsonResponse(
            {
                "ID": record["id"],
                "MessageID": summary["MessageID"],
                "From": summary["From"],
                "To": summary["To"],
                "Cc": summary["Cc"],
                "Bcc": summary["Bcc"],
                "ReplyTo": summary["ReplyTo"],
                "ReturnPath": parsed.returnPath or envelope.sender,
                "Subject": summary["Subject"],
                "ListUnsubscribe": _listUnsubscribe(
                    parsed.header("List-Unsubscribe"), parsed.header("List-Unsubscribe-Post")
                ),
                "Date": isoTime(date),
                "Tags": record["tags"],
                "Username": record["username"],
                "Text": parsed.text,
                "HTML": parsed.html,
                "Size": record["size"],
                "Inline": [p.toJSON() for p in parsed.inline],
                "Attachments": [p.toJSON() for p in parsed.attachments],
            }
        )

    @inlineCallbacks
    def getHeaders(self, request: Request, id: str):
        record, envelope, raw = yield self._content(id)
        return jsonResponse(_rawHeaders(raw))

    @inlineCallbacks
    def getRaw(self, request: Request, id: str):
        record, envelope, raw = yield self._content(id)
        return Response(
            200,
            raw,
            "text/plain; charset=utf-8",
            {
                "Content-Disposition": f'attachment; filename="{record["id"]}.eml"',
                "Content-Security-Policy": "sandbox; default-src 'none'",
            },
        )

    @inlineCallbacks
    def getPart(self, request: Request, id: str, partId: str):
        record, envelope, raw = yield self._content(id)
        found = findPart(raw, partId)
        if found is None:
            raise MessageNotFound(partId)
        part, payload = found
        fileName = part.fileName or part.contentId or f"part-{partId}"
        safeName = "".join(c if c.isalnum() or c in "._- " else "_" for c in fileName)[:200]
        from urllib.parse import quote

        return Response(
            200,
            payload,
            part.contentType if "/" in part.contentType else "application/octet-stream",
            {
                "Content-Disposition": (
                    f"attachment; filename=\"{safeName}\"; filename*=UTF-8''{quote(fileName)}"
                ),
                "Content-Security-Policy": "sandbox; default-src 'none'",
            },
        )

    @inlineCallbacks
    def getDelivery(self, request: Request, id: str):
        record, envelope, raw = yield self._content(id)
        from gopherpost.relay.state import StateStore

        state = StateStore(self.mailbox.spool.path).load(envelope.dateDirectory, envelope.queueId)
        remote = {r.address.lower(): r for r in (state.recipients if state else [])}
        metadata = getattr(envelope, "metadata", None) or {}
        recipients = []
        for r in envelope.recipients:
            entry: dict[str, Any] = {"Address": r.address, "Local": r.local}
            if r.local:
                entry["Status"] = "stored"
            elif self.capture or not self.mailbox.relayRuns:
                entry["Status"] = "captured"
            else:
                relayed = remote.get(r.address.lower())
                if relayed is None:
                    entry["Status"] = "queued"
                else:
                    entry.update(
                        {
                            "Status": relayed.status,
                            "Attempts": relayed.attempts,
                            "NextAttempt": isoTime(relayed.nextAttempt)
                            if relayed.status == "pending" and relayed.nextAttempt
                            else "",
                            "LastError": relayed.lastError,
                            "LastHost": relayed.lastHost,
                        }
                    )
            recipients.append(entry)
        return jsonResponse(
            {
                "ID": envelope.queueId,
                "Received": isoTime(envelope.received),
                "MailFrom": envelope.sender,
                "RcptTo": [r.address for r in envelope.recipients],
                "Client": {"Address": envelope.clientAddress, "Helo": envelope.helo},
                "TLS": envelope.tls,
                "Username": record["username"],
                # The MX checks' results (SPF, DKIM, ARC, DMARC), or null.
                "AuthenticationResults": metadata.get("authentication"),
                "Quarantine": metadata.get("quarantine", ""),
                "Recipients": recipients,
                "Capture": self.capture,
            }
        )

    # -- sending ------------------------------------------------------------

    def _client(self, request: Request) -> str:
        peer = request.getClientAddress()
        return str(getattr(peer, "host", "") or "unix")

    def send(self, request: Request) -> Deferred:
        data = readJSON(request, None)
        built = buildMessage(data, self.hostname, self.clock.seconds())
        d = self.sender.commit(
            built.content, built.sender, built.recipients, self._client(request), request.isSecure()
        )
        return d.addCallback(lambda envelope: jsonResponse({"ID": envelope.queueId}))

    @inlineCallbacks
    def releaseMessage(self, request: Request, id: str):
        if self.capture:
            raise HTTPError(400, "message relaying is not enabled: capture mode relays nothing")
        if not self.release.enabled:
            raise HTTPError(400, "message relaying is not enabled (set SMTP_RELEASE_TO)")
        data = readJSON(request, {}) or {}
        if not isinstance(data, dict) or not isinstance(data.get("To"), list):
            raise HTTPError(400, 'expected {"To": [addresses]}')
        addresses = []
        for address in data["To"]:
            try:
                addresses.append(checkAddress(address, "To"))
            except HTTPError:
                raise HTTPError(400, f"Invalid email address: {address}") from None
        if not addresses:
            raise HTTPError(400, "No valid addresses found")
        refused = self.release.refused(addresses)
        if refused:
            noun = "Address does" if len(refused) == 1 else "Addresses do"
            raise HTTPError(
                400,
                f"Failed: {noun} not match the allowlist (SMTP_RELEASE_TO): {', '.join(refused)}",
            )
        record, envelope, raw = yield self._content(id)
        content = releasedMessage(raw, self.hostname, self.clock.seconds())
        yield self.sender.commit(
            content, envelope.sender, addresses, self._client(request), request.isSecure()
        )
        return textResponse("ok")

    # -- tags ---------------------------------------------------------------

    def getTags(self, request: Request) -> Deferred:
        return self.mailbox.tags().addCallback(jsonResponse)

    def setTags(self, request: Request) -> Deferred:
        data = readJSON(request, {}) or {}
        if not isinstance(data, dict):
            raise HTTPError(400, "expected a JSON object")
        ids = _ids(data.get("IDs")) or []
        tags = data.get("Tags") or []
        if not isinstance(tags, list):
            raise HTTPError(400, "Tags must be an array of strings")
        return self.mailbox.setTags(ids, cleanTags(tags)).addCallback(lambda _: textResponse("ok"))

    def renameTag(self, request: Request, tag: str) -> Deferred:
        from urllib.parse import unquote

        data = readJSON(request, {}) or {}
        name = cleanTags([data.get("Name", "")]) if isinstance(data, dict) else []
        if not name:
            raise HTTPError(400, "Name is required")
        d = self.mailbox.renameTag(unquote(tag), name[0])
        return d.addCallback(lambda _: textResponse("ok"))

    def deleteTag(self, request: Request, tag: str) -> Deferred:
        from urllib.parse import unquote

        return self.mailbox.deleteTag(unquote(tag)).addCallback(lambda _: textResponse("ok"))

    # -- application --------------------------------------------------------

    @inlineCallbacks
    def info(self, request: Request):
        total, unread = yield self.mailbox.counts()
        tags = yield self.mailbox.tagCounts()
        path = self.mailbox.index.databasePath
        size = 0
        for suffix in ("", "-wal"):
            try:
                size += os.stat(path + suffix).st_size
            except OSError:
                pass
        stats = self.mailbox.index.stats
        usage = resource.getrusage(resource.RUSAGE_SELF)
        return jsonResponse(
            {
                "Version": gopherpost.__version__,
                "LatestVersion": "disabled",
                "Database": path,
                "DatabaseSize": size,
                "Messages": total,
                "Unread": unread,
                "Tags": tags,
                "RuntimeStats": {
                    "Uptime": int(self.clock.seconds() - self.started),
                    "Memory": usage.ru_maxrss * 1024,
                    "MessagesDeleted": self.mailbox.deleted,
                    "SMTPAccepted": stats.accepted,
                    "SMTPAcceptedSize": stats.acceptedSize,
                    "SMTPRejected": 0,
                    "SMTPIgnored": 0,
                },
            }
        )

    def webui(self, request: Request) -> Response:
        enabled = self.release.enabled and not self.capture
        return jsonResponse(
            {
                "Label": "",
                "MessageRelay": {
                    "Enabled": enabled,
                    "SMTPServer": "GopherPost relay queue" if enabled else "",
                    "ReturnPath": "",
                    "AllowedRecipients": ", ".join(self.release.patterns) if enabled else "",
                    "BlockedRecipients": "",
                    "OverrideFrom": "",
                    "PreserveMessageIDs": False,
                    "RecipientAllowlist": ", ".join(self.release.patterns) if enabled else "",
                },
                "SpamAssassin": False,
                "ChaosEnabled": False,
                "DuplicatesIgnored": False,
                "HideDeleteAllButton": False,
                "GopherPost": {"Capture": self.capture, "Version": gopherpost.__version__},
            }
        )

    def chaos(self, request: Request) -> Response:
        return textResponse("Chaos is not enabled", 400)

    def htmlCheck(self, request: Request, id: str) -> Response:
        return textResponse("HTML check is not available in GopherPost", 400)

    def linkCheck(self, request: Request, id: str) -> Response:
        return textResponse("Link check is not available in GopherPost", 400)

    def notFound(self, request: Request, **parameters: str) -> Response:
        return textResponse("404 page not found", 404)

    # -- views (for UI tests, and the web UI's iframe) ------------------------

    def view(self, request: Request, name: str) -> Deferred | Response:
        from gopherpost.webui.views import renderView

        return renderView(self, request, name)
