# -*- test-case-name: tests.test_tlspolicy_https -*-
"""
HTTPS for outbound transport security: fetching MTA-STS policies (RFC 8461
3.3) and posting TLS reports (RFC 8460 5.4), through Twisted's L{Agent}.

Every request:
  - resolves the host through GopherPost's own DNS (L{IDNSResolver}, i.e.
    C{SMTP_DNS_SERVERS}), never the system's resolver;
  - verifies the server's certificate against the trust store
    (C{SSL_CERT_FILE} / C{SSL_CERT_DIR}, else the system's) and the host
    name;
  - follows no redirect (a 3xx is a failure);
  - is bounded in time (connection, request and response together) and,
    for GETs, in the size of the body read.
Connections are not kept.  Failures are L{HTTPSError}s that say whether
the certificate was the problem (RFC 8460's C{sts-webpki-invalid}).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, NamedTuple

from OpenSSL import SSL
from twisted.internet import defer
from twisted.internet.abstract import isIPAddress, isIPv6Address
from twisted.internet.defer import Deferred, succeed
from twisted.internet.endpoints import TCP4ClientEndpoint, TCP6ClientEndpoint, wrapClientTLS
from twisted.internet.error import ConnectError, ConnectionRefusedError
from twisted.internet.interfaces import IStreamClientEndpoint
from twisted.internet.protocol import Protocol
from twisted.python.failure import Failure
from twisted.web.client import (
    Agent,
    BrowserLikePolicyForHTTPS,
    HTTPConnectionPool,
    ResponseFailed,
    ResponseNeverReceived,
)
from twisted.web.error import SchemeNotSupported
from twisted.web.http_headers import Headers
from twisted.web.iweb import IAgentEndpointFactory
from zope.interface import implementer

from gopherpost import __version__
from gopherpost.dns import DNSError, IDNSResolver
from gopherpost.httpbody import BytesProducer
from gopherpost.tls import platformTrustRoot

__all__ = ["USER_AGENT", "HTTPSError", "HTTPSResponse", "HTTPSClient"]

#: The C{User-Agent} of every request.
USER_AGENT = f"GopherPost/{__version__}"

#: Addresses of a host tried at most.
_ADDRESSES = 2


class HTTPSError(Exception):
    """
    A request failed.

    @ivar reason: one line.
    @ivar certificate: whether the server's certificate did not verify
        (rather than the connection, the status or the body failing).
    """

    def __init__(self, reason: str, certificate: bool = False) -> None:
        super().__init__(reason)
        self.reason = reason
        self.certificate = certificate

    def __str__(self) -> str:
        return self.reason


class HTTPSResponse(NamedTuple):
    """
    A response that was read whole.

    @ivar status: the HTTP status code.
    @ivar contentType: the C{Content-Type}, lower case, without parameters
        (C{""} when absent).
    @ivar body: the body.
    """

    status: int
    contentType: str
    body: bytes


@implementer(IStreamClientEndpoint)
class _ResolvingEndpoint:
    """
    TCP to a host name resolved through L{IDNSResolver}, trying its first
    addresses in turn.
    """

    def __init__(
        self,
        reactor: Any,
        resolver: IDNSResolver,
        host: str,
        port: int,
        timeout: float,
        connections: _Connections,
    ) -> None:
        self._reactor = reactor
        self._resolver = resolver
        self._host = host
        self._port = port
        self._timeout = timeout
        self._connections = connections

    def connect(self, factory: Any) -> Deferred[Any]:
        # No "Starting factory" log line per request: the TLS wrapper's
        # and the HTTP client's factories are quiet.
        factory.noisy = False
        wrapped = getattr(factory, "wrappedFactory", None)
        if wrapped is not None:
            wrapped.noisy = False
        if isIPAddress(self._host) or isIPv6Address(self._host):
            addresses: Deferred[Any] = succeed([self._host])
        else:
            addresses = self._resolver.lookupAddresses(self._host)

        def tryEach(found: Sequence[str]) -> Deferred[Any]:
            if not found:
                raise HTTPSError(f"{self._host} has no address")
            remaining = list(found[:_ADDRESSES])

            def attempt(failure: Failure | None = None) -> Deferred[Any]:
                if not remaining:
                    assert failure is not None
                    return defer.fail(failure)
                address = remaining.pop(0)
                kind = TCP6ClientEndpoint if isIPv6Address(address) else TCP4ClientEndpoint
                endpoint = kind(self._reactor, address, self._port, timeout=int(self._timeout) + 1)
                connecting = self._connections.connecting(endpoint.connect(factory))
                return connecting.addErrback(
                    lambda f: f if f.check(defer.CancelledError) else attempt(f)
                )

            return attempt()

        def lookupFailed(failure: Failure) -> None:
            failure.trap(DNSError)
            raise HTTPSError(f"cannot resolve {self._host}: {failure.value}")

        return addresses.addCallbacks(tryEach, lookupFailed)


class _Connections:
    """
    The connections one request made, so that its time-out can drop them
    (cancelling an L{Agent} request that waits for its response does not
    reliably close the connection).
    """

    def __init__(self) -> None:
        self._pending: list[Deferred[Any]] = []
        self._made: list[Any] = []
        self.aborted = False

    def connecting(self, d: Deferred[Any]) -> Deferred[Any]:
        """
        Remember the connection C{d} makes.
        """
        self._pending.append(d)

        def made(protocol: Any) -> Any:
            self._made.append(protocol)
            if self.aborted:
                protocol.transport.abortConnection()
            return protocol

        return d.addCallback(made)

    def abort(self) -> None:
        """
        Drop every connection made and give up those being made.
        """
        self.aborted = True
        for d in self._pending:
            if not d.called:
                d.cancel()
        for protocol in self._made:
            transport = getattr(protocol, "transport", None)
            if transport is not None:
                transport.abortConnection()


@implementer(IAgentEndpointFactory)
class _Endpoints:
    """
    HTTPS endpoints only, over L{_ResolvingEndpoint}, verified; one per
    request.
    """

    def __init__(
        self,
        reactor: Any,
        resolver: IDNSResolver,
        policy: BrowserLikePolicyForHTTPS,
        timeout: float,
    ) -> None:
        self._reactor = reactor
        self._resolver = resolver
        self._policy = policy
        self._timeout = timeout
        self.connections = _Connections()

    def endpointForURI(self, uri: Any) -> IStreamClientEndpoint:
        if uri.scheme != b"https":
            raise SchemeNotSupported(f"only https, not {uri.scheme!r}")
        host = uri.host.decode("ascii")
        if host.startswith("[") and host.endswith("]"):
            host = host[1:-1]
        tcp = _ResolvingEndpoint(
            self._reactor, self._resolver, host, uri.port, self._timeout, self.connections
        )
        return wrapClientTLS(self._policy.creatorForNetloc(uri.host, uri.port), tcp)


class _LimitedBody(Protocol):
    """
    Reads a response body, giving up (and dropping the connection) as soon
    as it is longer than C{limit} bytes.
    """

    def __init__(self, limit: int) -> None:
        self._limit = limit
        self._parts: list[bytes] = []
        self._size = 0
        self.finished: Deferred[bytes] = Deferred(self._cancel)

    def _cancel(self, _: Deferred[bytes]) -> None:
        transport: Any = self.transport
        if transport is not None:
            transport.stopProducing()

    def dataReceived(self, data: bytes) -> None:
        if self.finished.called:
            return
        self._size += len(data)
        if self._size > self._limit:
            self.finished.errback(HTTPSError(f"the body is larger than {self._limit} bytes"))
            transport: Any = self.transport
            transport.stopProducing()
            return
        self._parts.append(data)

    def connectionLost(self, reason: Failure = None) -> None:  # type: ignore[assignment]
        if self.finished.called:
            return
        value = getattr(reason, "value", None)
        if value is not None and type(value).__name__ not in ("ResponseDone", "PotentialDataLoss"):
            self.finished.errback(HTTPSError(f"the body was cut short: {type(value).__name__}"))
            return
        self.finished.callback(b"".join(self._parts))


def _isCertificateFailure(failure: Failure) -> bool:
    error = failure.value
    if type(error).__name__ in ("VerificationError", "CertificateError"):
        return True  # service_identity: the name does not match
    if isinstance(error, SSL.Error):
        text = str(error).lower()
        return "certificate" in text or "verify" in text
    return False


def _oneLine(text: str, limit: int = 200) -> str:
    text = " ".join(text.split())
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _describe(failure: Failure, timeout: float) -> HTTPSError:
    """
    The L{HTTPSError} for a request that failed.
    """
    error = failure.value
    if isinstance(error, HTTPSError):
        return error
    if isinstance(error, defer.TimeoutError | defer.CancelledError | TimeoutError):
        return HTTPSError(f"timed out after {timeout:g} s")
    if isinstance(error, ConnectionRefusedError):
        return HTTPSError("connection refused")
    if isinstance(error, ConnectError):
        return HTTPSError(_oneLine(f"cannot connect: {error.osError or error}"))
    reasons: list[Failure] = list(getattr(error, "reasons", None) or [])
    if isinstance(error, ResponseFailed | ResponseNeverReceived) or reasons:
        for reason in reasons:
            if _isCertificateFailure(reason):
                return HTTPSError(
                    _oneLine(f"the certificate does not verify: {reason.value}"), certificate=True
                )
        names = "; ".join(type(r.value).__name__ for r in reasons) or type(error).__name__
        return HTTPSError(_oneLine(f"no response: {names}"))
    if _isCertificateFailure(failure):
        return HTTPSError(_oneLine(f"the certificate does not verify: {error}"), certificate=True)
    return HTTPSError(_oneLine(f"{type(error).__name__}: {error}"))


class HTTPSClient:
    """
    GETs and POSTs over verified HTTPS; see the module docstring.

    @ivar timeout: seconds each request may take in all.
    """

    def __init__(
        self,
        reactor: Any,
        resolver: IDNSResolver,
        timeout: float = 20.0,
        trustRoot: Any = None,
        userAgent: str = USER_AGENT,
    ) -> None:
        """
        @param reactor: TCP, TLS and time.
        @param resolver: resolves host names (C{SMTP_DNS_SERVERS}).
        @param timeout: see L{timeout}.
        @param trustRoot: the CAs to trust; default the system's store or
            C{SSL_CERT_FILE}/C{SSL_CERT_DIR} (L{platformTrustRoot}).
        @param userAgent: the C{User-Agent} header.
        """
        self._reactor = reactor
        self._resolver = resolver
        self.timeout = timeout
        self._userAgent = userAgent.encode("ascii")
        self._policy = BrowserLikePolicyForHTTPS(
            trustRoot=platformTrustRoot() if trustRoot is None else trustRoot
        )

    def _request(
        self,
        method: bytes,
        url: str,
        headers: dict[bytes, bytes],
        body: bytes | None,
        limit: int,
    ) -> Deferred[HTTPSResponse]:
        try:
            encoded = url.encode("ascii")
        except UnicodeError:
            return defer.fail(HTTPSError(f"not an ASCII URL: {url!r}"))
        requestHeaders = Headers({b"User-Agent": [self._userAgent]})
        for name, value in headers.items():
            requestHeaders.setRawHeaders(name, [value])
        producer = None if body is None else BytesProducer(body)
        endpoints = _Endpoints(self._reactor, self._resolver, self._policy, self.timeout)
        agent = Agent.usingEndpointFactory(
            self._reactor, endpoints, pool=HTTPConnectionPool(self._reactor, persistent=False)
        )
        try:
            d = agent.request(method, encoded, requestHeaders, producer)
        except Exception as e:  # a malformed URL
            return defer.fail(HTTPSError(_oneLine(f"cannot request {url!r}: {e}")))

        def received(response: Any) -> Deferred[HTTPSResponse]:
            reader = _LimitedBody(limit)
            response.deliverBody(reader)
            types = response.headers.getRawHeaders(b"content-type") or [b""]
            contentType = types[0].split(b";")[0].strip().lower().decode("latin-1")
            return reader.finished.addCallback(
                lambda data: HTTPSResponse(response.code, contentType, data)
            )

        d.addCallback(received)
        timeout = self.timeout
        timer = self._reactor.callLater(timeout, endpoints.connections.abort)

        def done(result: object) -> object:
            if timer.active():
                timer.cancel()
            if isinstance(result, Failure):
                if endpoints.connections.aborted:
                    return defer.fail(HTTPSError(f"timed out after {timeout:g} s"))
                return defer.fail(_describe(result, timeout))
            return result

        return d.addBoth(done)

    def get(self, url: str, limit: int) -> Deferred[HTTPSResponse]:
        """
        GET C{url} (C{https:} only).

        @param limit: the largest body accepted, in bytes.
        @return: a L{Deferred} firing with the L{HTTPSResponse} whatever
            its status, or failing with L{HTTPSError}.
        """
        return self._request(b"GET", url, {}, None, limit)

    def post(self, url: str, body: bytes, contentType: str) -> Deferred[HTTPSResponse]:
        """
        POST C{body} to C{url} (C{https:} only).

        @return: a L{Deferred} firing with the L{HTTPSResponse} (its body
            cut to 64 KiB), or failing with L{HTTPSError}.
        """
        headers = {b"Content-Type": contentType.encode("ascii")}
        return self._request(b"POST", url, headers, body, 65536)
