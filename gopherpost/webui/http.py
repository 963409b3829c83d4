# -*- test-case-name: tests.test_webui_api -*-
"""
The small HTTP toolkit of the web UI: responses as values, a router of
C{METHOD /path/{name}} patterns, and the one leaf resource that runs a
handler (which may return a L{Deferred}) and writes what it returns.

Errors a client can cause become short plain-text (or, where Mailpit does
so, JSON) answers with the right status; anything else is logged once and
answered C{500}, never with a traceback.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from twisted.internet.defer import Deferred, maybeDeferred
from twisted.logger import Logger
from twisted.python.failure import Failure
from twisted.web.resource import Resource
from twisted.web.server import NOT_DONE_YET, Request

from gopherpost.index.mailbox import MessageNotFound
from gopherpost.index.query import QueryError
from gopherpost.index.service import IndexNotReady

__all__ = [
    "HTTPError",
    "Response",
    "Router",
    "RoutedResource",
    "STREAMING",
    "jsonResponse",
    "textResponse",
    "readJSON",
    "queryArgument",
    "PAGE_POLICY",
    "applySecurityHeaders",
]

_log = Logger()

#: Content-Security-Policy of the UI's own pages and of the API: our own
#: scripts and styles only, nothing inline, no plugins, not framed.
PAGE_POLICY = (
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
    "connect-src 'self'; frame-src 'self'; form-action 'self'; frame-ancestors 'none'; "
    "base-uri 'none'"
)


def applySecurityHeaders(request: Request, policy: str = PAGE_POLICY) -> None:
    """
    The headers every response carries.
    """
    request.setHeader(b"Content-Security-Policy", policy.encode("ascii"))
    request.setHeader(b"X-Content-Type-Options", b"nosniff")
    request.setHeader(b"Referrer-Policy", b"no-referrer")
    request.setHeader(b"Cross-Origin-Opener-Policy", b"same-origin")
    request.setHeader(b"Cross-Origin-Resource-Policy", b"same-origin")
    if b"frame-ancestors 'none'" in policy.encode("ascii"):
        request.setHeader(b"X-Frame-Options", b"DENY")


class _Streaming:
    def __repr__(self) -> str:
        return "STREAMING"


#: Returned by a handler that writes (and finishes) the response itself.
STREAMING = _Streaming()


@dataclass
class Response:
    """
    An HTTP response as a value.
    """

    code: int = 200
    body: bytes = b""
    contentType: str = "text/plain; charset=utf-8"
    headers: dict[str, str] = field(default_factory=dict)


class HTTPError(Exception):
    """
    An answer other than success, for the client.

    @ivar asJSON: answer C{{"Error": message}} (Mailpit's send API does).
    """

    def __init__(self, code: int, message: str, asJSON: bool = False) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.asJSON = asJSON


def jsonResponse(data: Any, code: int = 200) -> Response:
    """
    C{data} as JSON (UTF-8, not ASCII-escaped).
    """
    body = json.dumps(data, ensure_ascii=False, separators=(",", ":")).encode("utf-8")
    return Response(code, body + b"\n", "application/json; charset=utf-8")


def textResponse(text: str, code: int = 200) -> Response:
    """
    Plain text.
    """
    return Response(code, text.encode("utf-8"), "text/plain; charset=utf-8")


def readJSON(request: Request, empty: Any = None) -> Any:
    """
    The request body as JSON; C{empty} when there is no body.

    @raise HTTPError: 400 when it is not JSON.
    """
    content = request.content.read() if request.content is not None else b""
    if not content.strip():
        return empty
    try:
        return json.loads(content.decode("utf-8"))
    except (UnicodeDecodeError, ValueError) as e:
        raise HTTPError(400, f"invalid JSON: {e}") from None


def queryArgument(request: Request, name: str, default: str | None = None) -> str | None:
    """
    A query-string argument as text (the first, if repeated).
    """
    values = (request.args or {}).get(name.encode("ascii"))
    if not values:
        return default
    return values[0].decode("utf-8", "replace")


Handler = Callable[..., Any]

_PARAMETER = re.compile(r"^\{(\w+)\}$")


class Router:
    """
    C{METHOD /a/{b}/c} patterns to handlers C{handler(request, b=...)}.
    """

    def __init__(self) -> None:
        self._routes: list[tuple[str, list[str], Handler]] = []

    def add(self, method: str, pattern: str, handler: Handler) -> None:
        """
        Route C{method} requests for C{pattern} to C{handler}.
        """
        self._routes.append((method, [p for p in pattern.strip("/").split("/") if p], handler))

    def match(
        self, method: str, segments: list[str]
    ) -> tuple[Handler | None, dict[str, str], set[str]]:
        """
        The handler and parameters for a request, and the methods the path
        allows (for 405).
        """
        allowed: set[str] = set()
        for routeMethod, parts, handler in self._routes:
            if len(parts) != len(segments):
                continue
            parameters: dict[str, str] = {}
            for part, segment in zip(parts, segments):
                name = _PARAMETER.match(part)
                if name:
                    parameters[name.group(1)] = segment
                elif part != segment:
                    break
            else:
                if routeMethod == method or (routeMethod == "GET" and method == "HEAD"):
                    return handler, parameters, allowed
                allowed.add(routeMethod)
        return None, {}, allowed


class RoutedResource(Resource):
    """
    Serves every path below it through a L{Router}.
    """

    isLeaf = True

    def __init__(self, router: Router, policy: str = PAGE_POLICY) -> None:
        super().__init__()
        self._router = router
        self._policy = policy

    def render(self, request: Request) -> Any:
        """
        Find the handler, run it, write what it returns.
        """
        path = list(request.prepath or []) + list(request.postpath or [])
        segments = [s.decode("utf-8", "replace") for s in path]
        segments = [s for s in segments if s != ""]
        method = request.method.decode("ascii", "replace")
        handler, parameters, allowed = self._router.match(method, segments)
        applySecurityHeaders(request, self._policy)
        request.setHeader(b"Cache-Control", b"no-store")
        if handler is None:
            if allowed:
                request.setHeader(b"Allow", ", ".join(sorted(allowed)).encode("ascii"))
                return self._write(request, textResponse("405 method not allowed", 405))
            return self._write(request, textResponse("404 page not found", 404))
        finished = [False]
        request.notifyFinish().addBoth(lambda _: finished.__setitem__(0, True))
        d: Deferred = maybeDeferred(handler, request, **parameters)

        def written(result: Any) -> None:
            if result is STREAMING or finished[0]:
                return
            self._write(request, result)
            request.finish()

        def failed(failure: Failure) -> None:
            if finished[0]:
                return
            self._write(request, errorResponse(failure, request))
            request.finish()

        d.addCallbacks(written, failed)
        d.addErrback(lambda f: _log.failure("Writing a web UI response failed", f))
        return NOT_DONE_YET

    def _write(self, request: Request, response: Response) -> bytes:
        request.setResponseCode(response.code)
        request.setHeader(b"Content-Type", response.contentType.encode("ascii"))
        for name, value in response.headers.items():
            request.setHeader(name.encode("ascii"), value.encode("latin-1", "replace"))
        if request.method == b"HEAD":
            request.setHeader(b"Content-Length", str(len(response.body)).encode("ascii"))
            return b""
        request.write(response.body)
        return b""


def errorResponse(failure: Failure, request: Request) -> Response:
    """
    The answer for a failed handler.
    """
    error = failure.value
    if isinstance(error, HTTPError):
        if error.asJSON:
            return jsonResponse({"Error": error.message}, error.code)
        return textResponse(error.message, error.code)
    if isinstance(error, MessageNotFound):
        return textResponse("404 page not found", 404)
    if isinstance(error, QueryError):
        return textResponse(str(error), 400)
    if isinstance(error, IndexNotReady):
        return Response(
            503, b"the message index is starting; try again\n", headers={"Retry-After": "1"}
        )
    _log.failure(
        "Web UI request {method} {uri} failed",
        failure,
        method=request.method.decode("ascii", "replace"),
        uri=request.uri.decode("ascii", "replace"),
    )
    return textResponse("500 internal server error", 500)
