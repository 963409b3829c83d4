# -*- test-case-name: tests.test_httpbody -*-
"""
A request body already in memory, for Twisted's HTTP client (the webhooks,
rspamd, MTA-STS policies and TLS reports post or fetch with it).
"""

from __future__ import annotations

from typing import Any

from twisted.internet.defer import Deferred, succeed
from twisted.web.iweb import IBodyProducer
from zope.interface import implementer

__all__ = ["BytesProducer"]


@implementer(IBodyProducer)
class BytesProducer:
    """
    Writes C{body} at once (no cooperator turn, unlike
    L{twisted.web.client.FileBodyProducer}).
    """

    def __init__(self, body: bytes) -> None:
        self._body = body
        self.length = len(body)

    def startProducing(self, consumer: Any) -> Deferred[None]:
        consumer.write(self._body)
        return succeed(None)

    def pauseProducing(self) -> None:
        pass

    def resumeProducing(self) -> None:
        pass

    def stopProducing(self) -> None:
        pass
