# -*- test-case-name: tests.test_webhook_http -*-
"""
Support for webhook tests: a real HTTP(S) receiver on loopback that records
what it gets and answers as scripted, and the C{standardwebhooks} library
(the reference verifier) for checking signatures.

Typical use in a trial test::

    receiver = WebhookReceiver([500, 200])        # fails once, then accepts
    receiver.start()
    self.addCleanup(receiver.stop)
    ... post to receiver.url ...
    yield receiver.waitFor(2)
    verifyWebhook(SECRET, receiver.requests[-1])

A script is a list of answers, one per request, then C{default} for the
rest: a status code, C{(code, body)} or C{(code, body, headers)}, L{STALL}
(never answer), or L{CLOSE} (drop the connection without answering).
"""

from __future__ import annotations

import base64
import os
import secrets
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from twisted.internet import reactor as _reactor
from twisted.internet.defer import Deferred, DeferredList, maybeDeferred, succeed
from twisted.internet.task import deferLater
from twisted.protocols.policies import WrappingFactory
from twisted.web.resource import Resource
from twisted.web.server import NOT_DONE_YET, Site

from gopherpost.tls import loadServerContextFactory
from tests.support.certs import CertificateFiles

__all__ = [
    "STALL",
    "CLOSE",
    "ReceivedRequest",
    "WebhookReceiver",
    "newSecret",
    "loadStandardWebhooks",
    "verifyWebhook",
    "TEST_SITE",
    "waitUntil",
]

#: Where C{tests/install-test-site.sh} installs test-only packages for a
#: Python without them (Debian's: no standardwebhooks package there); the
#: variable C{GOPHERPOST_TEST_SITE} may name another such directory.
#: The reactor, untyped: listenSSL is not on its declared interfaces.
reactor: Any = _reactor

TEST_SITE = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), ".site")


class _Answer:
    def __init__(self, name: str) -> None:
        self.name = name

    def __repr__(self) -> str:
        return self.name


#: Answer: keep the request open and never answer.
STALL = _Answer("STALL")
#: Answer: close the connection without answering.
CLOSE = _Answer("CLOSE")


def waitUntil(condition: Any, timeout: float = 30.0, interval: float = 0.02) -> Deferred[None]:
    """
    A L{Deferred} that fires once C{condition()} is true (checked every
    C{interval} seconds of real time), or fails after C{timeout} seconds.
    """
    deadline = reactor.seconds() + timeout

    def check(_: object = None) -> Deferred[None]:
        if condition():
            return succeed(None)
        if reactor.seconds() > deadline:
            raise AssertionError(f"not true within {timeout:g} s: {condition!r}")
        return deferLater(reactor, interval, lambda: None).addCallback(check)

    return maybeDeferred(check)


def newSecret() -> str:
    """
    A fresh C{whsec_} secret.
    """
    return "whsec_" + base64.b64encode(secrets.token_bytes(32)).decode("ascii")


@dataclass
class ReceivedRequest:
    """
    One request the receiver got.

    @ivar headers: lower-cased names, the first value of each.
    """

    method: str
    path: str
    headers: dict[str, str]
    body: bytes
    answer: Any


class _Hook(Resource):
    isLeaf = True

    def __init__(self, receiver: WebhookReceiver) -> None:
        Resource.__init__(self)
        self._receiver = receiver

    def render(self, request: Any) -> Any:
        receiver = self._receiver
        answer = receiver._next()
        headers = {
            name.decode("latin-1").lower(): values[0].decode("latin-1")
            for name, values in request.requestHeaders.getAllRawHeaders()
        }
        receiver.requests.append(
            ReceivedRequest(
                request.method.decode("ascii"),
                request.uri.decode("latin-1"),
                headers,
                request.content.read(),
                answer,
            )
        )
        if answer is STALL:
            receiver._stalled.append(request)
            return NOT_DONE_YET
        if answer is CLOSE:
            request.channel.transport.abortConnection()
            return NOT_DONE_YET
        if isinstance(answer, int):
            answer = (answer, b"")
        code, body = answer[0], answer[1]
        for name, value in (answer[2] if len(answer) > 2 else {}).items():
            request.setHeader(name, value)
        request.setResponseCode(code)
        return body


class _Connections(WrappingFactory):
    """
    Keeps the receiver's open connections (C{protocols}) and counts them.
    """

    noisy = False
    made = 0

    def buildProtocol(self, addr: Any) -> Any:
        self.made += 1
        return WrappingFactory.buildProtocol(self, addr)


class WebhookReceiver:
    """
    A webhook receiver on C{127.0.0.1}, over HTTPS when given a
    certificate.

    @ivar requests: every request received, in order.
    """

    def __init__(
        self,
        script: Sequence[Any] = (),
        default: Any = 200,
        certificate: CertificateFiles | None = None,
        path: str = "/hook",
    ) -> None:
        self._script = list(script)
        self._default = default
        self._certificate = certificate
        self._path = path
        self.requests: list[ReceivedRequest] = []
        self._stalled: list[Any] = []
        site = Site(_Hook(self))
        site.noisy = False
        #: Tracks the connections, so that stopping closes them.
        self.connections = _Connections(site)
        self._port: Any = None

    def _next(self) -> Any:
        return self._script.pop(0) if self._script else self._default

    def setDefault(self, default: Any) -> None:
        """
        Answer C{default} from now on (after what is left of the script).
        """
        self._default = default

    def start(self) -> WebhookReceiver:
        """
        Listen on a free port.
        """
        if self._certificate is None:
            self._port = reactor.listenTCP(0, self.connections, interface="127.0.0.1")
        else:
            context = loadServerContextFactory(
                self._certificate.certPath, self._certificate.keyPath
            )
            self._port = reactor.listenSSL(0, self.connections, context, interface="127.0.0.1")
        return self

    @property
    def port(self) -> int:
        return int(self._port.getHost().port)

    @property
    def url(self) -> str:
        scheme = "http" if self._certificate is None else "https"
        return f"{scheme}://127.0.0.1:{self.port}{self._path}"

    def waitFor(self, count: int, timeout: float = 30.0) -> Deferred[None]:
        """
        Fire once at least C{count} requests have come.
        """
        return waitUntil(lambda: len(self.requests) >= count, timeout=timeout)

    def ids(self) -> list[str]:
        """
        The C{webhook-id} of every request, in order.
        """
        return [r.headers.get("webhook-id", "") for r in self.requests]

    def stop(self) -> Deferred[Any]:
        """
        Stop listening and close every connection.
        """
        for protocol in list(self.connections.protocols):
            protocol.transport.abortConnection()
        stopped = [maybeDeferred(self._port.stopListening)] if self._port else []
        return DeferredList(stopped)


def loadStandardWebhooks() -> Any:
    """
    The C{standardwebhooks} package: installed, or from L{TEST_SITE} (on
    sys.path only while it is imported).

    @raise AssertionError: it is in neither place (a failing test, not a
        skip: install it as the message says).
    """
    try:
        import standardwebhooks

        return standardwebhooks
    except ImportError:
        pass
    for site in (os.environ.get("GOPHERPOST_TEST_SITE"), TEST_SITE):
        if not site or not os.path.isdir(site):
            continue
        sys.path.insert(0, site)
        try:
            import standardwebhooks

            return standardwebhooks
        except ImportError:
            pass
        finally:
            sys.path.remove(site)
    raise AssertionError(
        "the standardwebhooks package (the reference verifier) is missing: "
        "pip install standardwebhooks, or run tests/install-test-site.sh with this Python "
        "(it installs into tests/.site; GOPHERPOST_TEST_SITE may name another directory)"
    )


def verifyWebhook(secret: str, request: ReceivedRequest) -> Any:
    """
    Check one request's signature with the reference library.

    @return: the parsed JSON body.
    @raise standardwebhooks.WebhookVerificationError: it does not verify.
    """
    library = loadStandardWebhooks()
    return library.Webhook(secret).verify(request.body, request.headers)
