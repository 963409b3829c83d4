# -*- test-case-name: tests.test_tlspolicy_https -*-
"""
A scripted HTTPS server on a loopback address for tests: MTA-STS policy
files, redirects, oversized and slow answers, and a recorder of POSTed TLS
reports.  It serves with a certificate made at test time
(L{tests.support.certs}); clients trust its CA through C{SSL_CERT_FILE} or
an injected trust root::

    pki = makeTestPKI(self.mktemp(), "mta-sts.example.test")
    server = startHTTPSServer(self, pki.good)
    server.respond("/.well-known/mta-sts.txt", b"version: STSv1\\n...")
    ... https://mta-sts.example.test:{server.port}/.well-known/mta-sts.txt

The server answers by path, whatever the C{Host}; an unknown path is a 404.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from twisted.internet.defer import Deferred, gatherResults
from twisted.internet.protocol import connectionDone
from twisted.protocols.policies import ProtocolWrapper, WrappingFactory
from twisted.protocols.tls import TLSMemoryBIOFactory
from twisted.python.failure import Failure
from twisted.web import resource, server

from gopherpost.tls import loadServerContextFactory
from tests.support.certs import CertificateFiles

__all__ = ["Answer", "Request", "HTTPSTestServer", "startHTTPSServer"]


@dataclass
class Answer:
    """
    What the server answers for one path.

    @ivar status: the HTTP status.
    @ivar body: the body.
    @ivar headers: extra response headers.
    @ivar silent: never answer (the client times out).
    """

    status: int = 200
    body: bytes = b""
    headers: dict[str, str] = field(default_factory=dict)
    silent: bool = False


@dataclass(frozen=True)
class Request:
    """
    One request the server received.

    @ivar method: e.g. C{"GET"}.
    @ivar path: e.g. C{"/.well-known/mta-sts.txt"}.
    @ivar host: the C{Host} header.
    @ivar headers: the request headers (names lower case, first value).
    @ivar body: the request body.
    """

    method: str
    path: str
    host: str
    headers: dict[str, str]
    body: bytes


class _Scripted(resource.Resource):
    isLeaf = True

    def __init__(self, owner: HTTPSTestServer) -> None:
        resource.Resource.__init__(self)
        self._owner = owner

    def render(self, request: server.Request) -> bytes | int:
        path = (request.path or b"/").decode("ascii", "replace")
        headers = {
            name.decode("latin-1").lower(): values[0].decode("latin-1")
            for name, values in request.requestHeaders.getAllRawHeaders()
        }
        assert request.content is not None
        body = request.content.read()
        method = (request.method or b"GET").decode("ascii")
        self._owner.requests.append(Request(method, path, headers.get("host", ""), headers, body))
        answer = self._owner.answers.get(path)
        if callable(answer):
            answer = answer(self._owner.requests[-1])
        if answer is None:
            request.setResponseCode(404)
            return b"not found\n"
        if answer.silent:
            return server.NOT_DONE_YET
        request.setResponseCode(answer.status)
        for name, value in answer.headers.items():
            request.setHeader(name.encode("latin-1"), value.encode("latin-1"))
        return answer.body


class _TrackedProtocol(ProtocolWrapper):
    def connectionLost(self, reason: Failure = connectionDone) -> None:
        ProtocolWrapper.connectionLost(self, reason)
        factory: Any = self.factory
        factory.lost(self)


class _TrackingFactory(WrappingFactory):
    protocol = _TrackedProtocol

    def __init__(self, wrapped: Any) -> None:
        WrappingFactory.__init__(self, wrapped)  # type: ignore[arg-type]
        self.waiting: list[Deferred[None]] = []

    def lost(self, protocol: object) -> None:
        if not self.protocols:
            waiting, self.waiting = self.waiting, []
            for d in waiting:
                d.callback(None)

    def allClosed(self) -> Deferred[None]:
        waiter: Deferred[None] = Deferred()
        if not self.protocols:
            waiter.callback(None)
            return waiter
        self.waiting.append(waiter)
        for protocol in list(self.protocols):
            transport: Any = protocol.transport
            if transport is not None:
                transport.abortConnection()
        return waiter


class HTTPSTestServer:
    """
    The scripted HTTPS server.

    @ivar answers: path -> L{Answer}, or a callable taking the L{Request}
        and returning one (or L{None} for a 404).
    @ivar requests: every L{Request} received, in order.
    @ivar host: the address listened on, once started.
    @ivar port: the port, once started.
    """

    def __init__(self, certificate: CertificateFiles, reactor: object | None = None) -> None:
        if reactor is None:
            from twisted.internet import reactor as globalReactor

            reactor = globalReactor
        self._reactor = reactor
        self._certificate = certificate
        self.answers: dict[str, Answer | Callable[[Request], Answer | None]] = {}
        self.requests: list[Request] = []
        self.host = ""
        self.port = 0
        self._listener: object = None
        self._factory: _TrackingFactory | None = None

    def respond(
        self,
        path: str,
        body: bytes,
        status: int = 200,
        contentType: str = "text/plain",
        headers: dict[str, str] | None = None,
    ) -> None:
        """
        Answer C{path} with C{body}.
        """
        allHeaders = {"Content-Type": contentType}
        allHeaders.update(headers or {})
        self.answers[path] = Answer(status, body, allHeaders)

    def redirect(self, path: str, location: str, status: int = 301) -> None:
        """
        Answer C{path} with a redirect.
        """
        self.answers[path] = Answer(status, b"moved\n", {"Location": location})

    def silence(self, path: str) -> None:
        """
        Never answer C{path}.
        """
        self.answers[path] = Answer(silent=True)

    def start(self, interface: str = "127.0.0.1") -> HTTPSTestServer:
        """
        Listen on C{interface}, on an ephemeral port.
        """
        site = server.Site(_Scripted(self))
        site.displayTracebacks = False
        site.noisy = False
        tls = TLSMemoryBIOFactory(
            loadServerContextFactory(self._certificate.certPath, self._certificate.keyPath),
            False,
            site,
        )
        tls.noisy = False
        self._factory = _TrackingFactory(tls)
        self._factory.noisy = False
        listener = self._reactor.listenTCP(0, self._factory, interface=interface)  # type: ignore[attr-defined]
        self._listener = listener
        address = listener.getHost()
        self.host, self.port = address.host, address.port
        return self

    def stop(self) -> Deferred[None]:
        """
        Stop listening and drop every connection.
        """
        waits: list[Deferred[None]] = []
        if self._listener is not None:
            waits.append(self._listener.stopListening())  # type: ignore[attr-defined]
            self._listener = None
        if self._factory is not None:
            waits.append(self._factory.allClosed())
        return gatherResults(waits).addCallback(lambda _: None)


def startHTTPSServer(
    testCase: object, certificate: CertificateFiles, interface: str = "127.0.0.1"
) -> HTTPSTestServer:
    """
    Start an L{HTTPSTestServer} for one trial test; stopped in cleanup.
    """
    httpsServer = HTTPSTestServer(certificate).start(interface)
    testCase.addCleanup(httpsServer.stop)  # type: ignore[attr-defined]
    return httpsServer
