# -*- test-case-name: tests.test_acme_challenge -*-
"""
HTTP-01 answers (RFC 8555, section 8.3): while an order is being validated,
C{GET /.well-known/acme-challenge/<token>} on port 80 of each name answers
the token's key authorization.

L{ChallengeResponses} holds the answers (filled by the ACME thread, read by
the reactor); L{ChallengeResource} serves them and nothing else (404 for
any other path, without a log line: port 80 draws scanners);
the listener on C{SMTP_ACME_CHALLENGE_LISTEN} is one of the server's
L{gopherpost.listeners.service.ListenerService}s (bound before privileges
are dropped, one line naming the variable if it cannot be).
"""

from __future__ import annotations

import re
import threading
from typing import Any

from twisted.logger import Logger
from twisted.web.http import Request
from twisted.web.resource import Resource
from twisted.web.server import Site

__all__ = [
    "CHALLENGE_PATH",
    "ChallengeResponses",
    "ChallengeResource",
    "ChallengeSite",
]

_log = Logger(namespace="gopherpost.acme")

#: Where HTTP-01 answers are asked for.
CHALLENGE_PATH = b"/.well-known/acme-challenge/"

_TOKEN = re.compile(rb"[A-Za-z0-9_-]{1,255}")


def _hostOnly(header: bytes | None) -> str:
    """
    The name in a C{Host} header, without the port.
    """
    text = (header or b"?").decode("ascii", "replace")
    if text.startswith("["):
        return text.partition("]")[0] + "]"
    return text.rsplit(":", 1)[0] if text.count(":") == 1 else text


class ChallengeResponses:
    """
    The key authorizations to serve, by token.  Safe to use from any
    thread.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._responses: dict[str, str] = {}

    def add(self, token: str, keyAuthorization: str) -> None:
        """
        Serve C{keyAuthorization} for C{token} from now on.
        """
        with self._lock:
            self._responses[token] = keyAuthorization

    def remove(self, token: str) -> None:
        """
        Stop serving C{token}.
        """
        with self._lock:
            self._responses.pop(token, None)

    def get(self, token: str) -> str | None:
        """
        The key authorization for C{token}, or L{None}.
        """
        with self._lock:
            return self._responses.get(token)

    def __len__(self) -> int:
        with self._lock:
            return len(self._responses)


class ChallengeResource(Resource):
    """
    Answers C{GET} and C{HEAD} for C{/.well-known/acme-challenge/<token>}
    with the key authorization (C{application/octet-stream}); 404 for
    anything else, 405 for other methods.
    """

    isLeaf = True

    def __init__(self, responses: ChallengeResponses) -> None:
        Resource.__init__(self)
        self.responses = responses

    def render(self, request: Any) -> bytes:
        """
        Answer one request.
        """
        if request.method not in (b"GET", b"HEAD"):
            request.setResponseCode(405)
            request.setHeader(b"allow", b"GET, HEAD")
            request.setHeader(b"content-type", b"text/plain")
            return b"Method Not Allowed\n"
        path = request.path
        token = path[len(CHALLENGE_PATH) :] if path.startswith(CHALLENGE_PATH) else b""
        answer = self.responses.get(token.decode("ascii")) if _TOKEN.fullmatch(token) else None
        if answer is None:
            request.setResponseCode(404)
            request.setHeader(b"content-type", b"text/plain")
            return b"Not Found\n"
        _log.info(
            "Answered the ACME HTTP-01 challenge for {host} to {client}",
            host=_hostOnly(request.getHeader(b"host")),
            client=getattr(request.getClientAddress(), "host", "?"),
        )
        request.setHeader(b"content-type", b"application/octet-stream")
        request.setHeader(b"cache-control", b"no-store")
        return answer.encode("ascii")


class ChallengeSite(Site):
    """
    The HTTP server of the challenge listener: the resource above, without
    an access log (port 80 draws scanners).
    """

    noisy = False

    def __init__(self, responses: ChallengeResponses, reactor: Any = None) -> None:
        if reactor is None:
            Site.__init__(self, ChallengeResource(responses), timeout=30)
        else:
            Site.__init__(self, ChallengeResource(responses), timeout=30, reactor=reactor)

    def log(self, request: Request) -> None:
        """
        No access log.
        """
