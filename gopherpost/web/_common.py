# -*- test-case-name: tests.test_web -*-
"""
Small pieces shared by the resources: plain-text pages and header helpers.
"""

from __future__ import annotations

from twisted.web.resource import IResource, Resource
from twisted.web.server import Request

__all__ = ["PlainTextPage", "RootResource", "noCache", "plainText"]


def noCache(request: Request) -> None:
    """
    Mark a response as never to be served from a cache.

    @param request: the request being answered.
    """
    request.setHeader(b"Cache-Control", b"no-cache")


def plainText(request: Request) -> None:
    """
    Mark a response as UTF-8 plain text, not to be sniffed as anything else.

    @param request: the request being answered.
    """
    request.setHeader(b"Content-Type", b"text/plain; charset=utf-8")
    request.setHeader(b"X-Content-Type-Options", b"nosniff")


class PlainTextPage(Resource):
    """
    A fixed plain-text response (for any method and any path below it).
    """

    isLeaf = True

    def __init__(self, code: int, text: str) -> None:
        """
        @param code: the HTTP status code.
        @param text: the body, one line (a newline is added).
        """
        super().__init__()
        self._code = code
        self._body = (text + "\n").encode("utf-8")

    def render(self, request: Request) -> bytes:
        """
        Answer with the fixed code and body.
        """
        request.setResponseCode(self._code)
        plainText(request)
        noCache(request)
        return self._body


class RootResource(Resource):
    """
    The root of the tree: only its explicit children exist, everything
    else (including C{/} itself) is 404.
    """

    def __init__(self) -> None:
        super().__init__()
        self._notFound = PlainTextPage(404, "404 Not Found")

    def getChild(self, path: bytes, request: Request) -> IResource:
        """
        Unknown children are 404.
        """
        return self._notFound

    def render(self, request: Request) -> bytes:
        """
        C{/} is 404 too.
        """
        return self._notFound.render(request)
