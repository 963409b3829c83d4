# -*- test-case-name: tests.test_web -*-
"""
C{/metrics}: expvar-style JSON by default, the Prometheus text formats when
the client asks for them.
"""

from __future__ import annotations

import json

from twisted.web.resource import IResource, Resource
from twisted.web.server import Request

from gopherpost.metrics import Metrics
from gopherpost.web._common import PlainTextPage, noCache

__all__ = ["MetricsResource", "wantsPrometheus"]

_PROMETHEUS_TYPES = ("text/plain", "application/openmetrics-text")


def wantsPrometheus(accept: str | None) -> bool:
    """
    Whether an C{Accept} header prefers a Prometheus format to JSON.

    Prometheus sends C{application/openmetrics-text;...,text/plain;
    version=0.0.4;q=...,*/*;q=0.1}; browsers and C{curl} send C{*/*} or
    HTML types.  A Prometheus type wins when its quality is above that of
    an explicit C{application/json} and at least that of C{*/*}.

    @param accept: the header's value, or L{None} when absent.
    """
    if not accept:
        return False
    prometheus = json_ = wildcard = 0.0
    for item in accept.split(","):
        params = item.split(";")
        mediaType = params[0].strip().lower()
        quality = 1.0
        for param in params[1:]:
            key, _, value = param.partition("=")
            if key.strip().lower() == "q":
                try:
                    quality = float(value.strip())
                except ValueError:
                    quality = 0.0
        if mediaType in _PROMETHEUS_TYPES:
            prometheus = max(prometheus, quality)
        elif mediaType == "application/json":
            json_ = max(json_, quality)
        elif mediaType in ("*/*", "application/*"):
            wildcard = max(wildcard, quality)
    return prometheus > 0 and prometheus > json_ and prometheus >= wildcard


class MetricsResource(Resource):
    """
    C{/metrics} for one L{Metrics}.
    """

    def __init__(self, metrics: Metrics) -> None:
        """
        @param metrics: the numbers to serve.
        """
        super().__init__()
        self._metrics = metrics
        self._notFound = PlainTextPage(404, "404 Not Found")

    def getChild(self, path: bytes, request: Request) -> IResource:
        """
        Nothing lives below C{/metrics}.
        """
        return self._notFound

    def render_GET(self, request: Request) -> bytes:
        """
        The metrics, in the format the C{Accept} header asks for.
        """
        noCache(request)
        request.setHeader(b"Vary", b"Accept")
        raw = request.getHeader(b"accept")
        accept = raw.decode("latin-1") if raw is not None else ""
        if wantsPrometheus(accept):
            body, contentType = self._metrics.exposition(accept)
            request.setHeader(b"Content-Type", contentType.encode("ascii"))
            return body
        request.setHeader(b"Content-Type", b"application/json")
        return (json.dumps(self._metrics.asJSON(), indent=2, sort_keys=True) + "\n").encode("utf-8")
