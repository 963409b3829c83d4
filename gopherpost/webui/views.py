# -*- test-case-name: tests.test_webui_views -*-
"""
C{/view/{ID}.html} and C{/view/{ID}.txt}: one message's HTML and text
bodies (Mailpit's testing routes; the web UI shows the HTML one in its
iframe).

The HTML is sanitized (L{gopherpost.webui.sanitize}) and sent with a
Content-Security-Policy that sandboxes the document wherever it is
opened -- no scripts, no forms, an opaque origin (never the UI's) -- and
allows images from the message itself (C{data:}, its parts in the API),
and remote images only with C{?images=1}, which the UI's "load remote
images" button asks for.  The iframe that shows it is sandboxed the same
way (see the UI's C{app.js}).
"""

from __future__ import annotations

import re
from typing import TYPE_CHECKING, Any
from urllib.parse import quote

from twisted.internet.defer import inlineCallbacks
from twisted.web.server import Request

from gopherpost.index.mime import parseMessage
from gopherpost.webui.http import Response, queryArgument, textResponse
from gopherpost.webui.sanitize import sanitizeHTML

if TYPE_CHECKING:
    from gopherpost.webui.api import MailpitAPI

__all__ = ["renderView", "viewPolicy"]

_HOST = re.compile(r"^[A-Za-z0-9.\-]+(:\d+)?$|^\[[0-9A-Fa-f:.]+\](:\d+)?$")

_DOCUMENT = (
    '<!DOCTYPE html>\n<html><head><meta charset="utf-8">'
    '<meta name="referrer" content="no-referrer"><base target="_blank">'
    "</head><body>\n{body}\n</body></html>\n"
)


def viewPolicy(request: Request, remoteImages: bool) -> str:
    """
    The Content-Security-Policy of a sanitized HTML view.
    """
    images = ["'self'", "data:"]
    host = (request.getHeader(b"host") or b"").decode("latin-1")
    if _HOST.match(host):
        images.append(("https://" if request.isSecure() else "http://") + host)
    if remoteImages:
        images += ["https:", "http:"]
    return (
        "sandbox allow-popups allow-popups-to-escape-sandbox; default-src 'none'; "
        f"img-src {' '.join(images)}; style-src 'unsafe-inline'; font-src 'none'; "
        "form-action 'none'; frame-ancestors 'self'; base-uri 'none'"
    )


def renderView(api: MailpitAPI, request: Request, name: str) -> Any:
    """
    Answer C{GET /view/<name>}.
    """
    if name.endswith(".html"):
        return _html(api, request, name[: -len(".html")])
    if name.endswith(".txt"):
        return _text(api, request, name[: -len(".txt")])
    return textResponse("404 page not found", 404)


@inlineCallbacks
def _html(api: MailpitAPI, request: Request, id: str):
    record, envelope, raw = yield api._content(id)
    parsed = parseMessage(raw)
    if not parsed.html.strip():
        return textResponse("This message does not contain a HTML part", 404)
    parts = {p.contentId: p.partId for p in parsed.inline + parsed.attachments if p.contentId}
    base = f"/api/v1/message/{quote(record['id'])}/part/"

    def cidURL(contentId: str) -> str | None:
        partId = parts.get(contentId)
        return base + quote(partId) if partId is not None else None

    remote = queryArgument(request, "images") == "1"
    body = sanitizeHTML(parsed.html, allowRemoteImages=remote, cidURL=cidURL)
    return Response(
        200,
        _DOCUMENT.format(body=body).encode("utf-8"),
        "text/html; charset=utf-8",
        {
            "Content-Security-Policy": viewPolicy(request, remote),
            "X-Frame-Options": "SAMEORIGIN",
        },
    )


@inlineCallbacks
def _text(api: MailpitAPI, request: Request, id: str):
    record, envelope, raw = yield api._content(id)
    return textResponse(parseMessage(raw).text)
