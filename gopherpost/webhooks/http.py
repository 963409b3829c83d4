# -*- test-case-name: tests.test_webhook_http -*-
"""
One webhook request: an HTTP POST through Twisted's L{Agent}.

Redirects are never followed (the Agent alone does not), each request is
bounded by a time-out covering connection, request and response, and only
the first bytes of a response body are kept (for the log).  HTTPS is
verified against the system's trust store, or C{SSL_CERT_FILE} /
C{SSL_CERT_DIR} when set, as outbound SMTP is; L{checkTrustStore} makes a
store that does not load a start-up error.  Connections are kept open for
a moment and reused.
"""

from __future__ import annotations

import base64
import os
import ssl
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import unquote, urlsplit, urlunsplit

from OpenSSL import SSL
from twisted.internet import defer
from twisted.internet.defer import Deferred
from twisted.internet.endpoints import HostnameEndpoint, wrapClientTLS
from twisted.internet.error import ConnectError, ConnectionRefusedError, DNSLookupError
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
from gopherpost.config import ConfigError
from gopherpost.httpbody import BytesProducer
from gopherpost.tls import platformTrustRoot

__all__ = [
    "USER_AGENT",
    "WebhookTarget",
    "PostResult",
    "WebhookPoster",
    "checkTrustStore",
    "describeFailure",
]

#: The C{User-Agent} of every request.
USER_AGENT = f"GopherPost/{__version__}"
#: Bytes of a response body kept for the log.
KEEP_BODY = 200
#: Seconds an idle connection is kept for the next request.  Short: a
#: receiver that closes idle connections first makes the next POST fail.
IDLE_CONNECTION_SECONDS = 2


@dataclass(frozen=True)
class WebhookTarget:
    """
    Where one webhook posts, parsed once from its setting.

    @ivar kind: C{"inbound"} or C{"events"}.
    @ivar url: the URL to request, without user and password.
    @ivar displayURL: the same as text, for logs.
    @ivar authorization: a C{Basic} C{Authorization} value when the URL
        carried a user (and password), else L{None}.
    @ivar key: the signing key.
    """

    kind: str
    url: bytes
    displayURL: str
    authorization: bytes | None
    key: bytes

    @classmethod
    def fromSetting(cls, kind: str, url: str, key: bytes) -> WebhookTarget:
        """
        @param url: a URL as L{gopherpost.config} validated it.
        """
        parts = urlsplit(url)
        host = parts.hostname or ""
        if ":" in host:
            host = f"[{host}]"
        else:
            host = host.encode("idna").decode("ascii")
        netloc = host if parts.port is None else f"{host}:{parts.port}"
        plain = urlunsplit((parts.scheme, netloc, parts.path or "/", parts.query, ""))
        authorization = None
        if parts.username is not None:
            credentials = f"{unquote(parts.username)}:{unquote(parts.password or '')}"
            authorization = b"Basic " + base64.b64encode(credentials.encode("utf-8"))
        return cls(kind, plain.encode("ascii"), plain, authorization, key)


@dataclass(frozen=True)
class PostResult:
    """
    How one request ended.

    @ivar status: the HTTP status, or L{None} when no response came.
    @ivar error: why it did not succeed, one line (C{""} for 2xx).
    @ivar seconds: how long it took.
    """

    status: int | None
    error: str
    seconds: float

    @property
    def succeeded(self) -> bool:
        return self.status is not None and 200 <= self.status < 300


class _BodyHead(Protocol):
    """
    Reads a response body to its end, keeping its first bytes.
    """

    def __init__(self) -> None:
        self.head = b""
        self.finished: Deferred[bytes] = Deferred(self._cancel)

    def _cancel(self, _: Deferred[bytes]) -> None:
        transport: Any = self.transport
        if transport is not None:
            transport.stopProducing()

    def dataReceived(self, data: bytes) -> None:
        if len(self.head) < KEEP_BODY:
            self.head += data[: KEEP_BODY - len(self.head)]

    def connectionLost(self, reason: Failure = None) -> None:  # type: ignore[assignment]
        if not self.finished.called:
            self.finished.callback(self.head)


def _oneLine(text: str, limit: int = 200) -> str:
    text = " ".join(text.split())
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _sslDetails(error: SSL.Error) -> str:
    """
    What OpenSSL said, without its library and function names.
    """
    reasons = error.args[0] if error.args and isinstance(error.args[0], list) else []
    details = [str(item[-1]) for item in reasons if isinstance(item, tuple) and item[-1]]
    return ", ".join(details) or str(error)


def _describeReason(failure: Failure) -> str:
    error = failure.value
    if isinstance(error, SSL.Error):
        return "TLS handshake failed: " + _sslDetails(error)
    name = type(error).__name__
    if name == "VerificationError":  # service_identity: the name does not match
        return f"TLS certificate does not match the host: {error}"
    if name in ("ConnectionDone", "ConnectionLost"):
        return "connection closed before the response"
    return f"{name}: {error}" if str(error) else name


def describeFailure(failure: Failure, timeout: float) -> str:
    """
    One line for a request that got no response.
    """
    error = failure.value
    if isinstance(error, defer.TimeoutError | defer.CancelledError | TimeoutError):
        return f"timed out after {timeout:g} s"
    if isinstance(error, ConnectionRefusedError):
        return "connection refused"
    if isinstance(error, DNSLookupError):
        return "host name not found"
    if isinstance(error, ConnectError):
        return _oneLine(f"cannot connect: {error.osError or error}")
    reasons = getattr(error, "reasons", None)
    if isinstance(error, ResponseFailed | ResponseNeverReceived) or reasons:
        return _oneLine(
            "; ".join(_describeReason(r) for r in reasons or []) or type(error).__name__
        )
    return _oneLine(f"{type(error).__name__}: {error}")


def _closedBeforeResponse(failure: Failure) -> bool:
    """
    Whether the server closed the connection before answering anything:
    on a reused connection, usually because it had just timed it out.
    """
    if not failure.check(ResponseNeverReceived):
        return False
    reasons = getattr(failure.value, "reasons", [])
    return bool(reasons) and all(
        type(r.value).__name__ in ("ConnectionDone", "ConnectionLost") for r in reasons
    )


@implementer(IAgentEndpointFactory)
class _Endpoints:
    """
    The Agent's endpoints, each built once: the Agent's own factory builds
    one per request (an IDNA encoding of the host name and, for HTTPS, a
    new TLS context each time), though a pooled connection is used.
    """

    def __init__(self, reactor: Any, policy: BrowserLikePolicyForHTTPS, timeout: float) -> None:
        self._reactor = reactor
        self._policy = policy
        self._timeout = timeout
        self._endpoints: dict[tuple[bytes, bytes, int], Any] = {}

    def endpointForURI(self, uri: Any) -> Any:
        key = (uri.scheme, uri.host, uri.port)
        endpoint = self._endpoints.get(key)
        if endpoint is None:
            host = uri.host.decode("ascii")
            if host.startswith("[") and host.endswith("]"):
                host = host[1:-1]
            endpoint = HostnameEndpoint(self._reactor, host, uri.port, timeout=self._timeout)
            if uri.scheme == b"https":
                endpoint = wrapClientTLS(
                    self._policy.creatorForNetloc(uri.host, uri.port), endpoint
                )
            elif uri.scheme != b"http":
                raise SchemeNotSupported(f"unsupported scheme {uri.scheme!r}")
            self._endpoints[key] = endpoint
        return endpoint


class WebhookPoster:
    """
    Posts webhooks: at most C{concurrency} connections kept per host, each
    request bounded by C{timeout} seconds.

    @param reactor: for TCP, TLS and time.
    @param trustRoot: the CAs HTTPS is verified against; default the
        system's store or C{SSL_CERT_FILE}/C{SSL_CERT_DIR}.
    """

    def __init__(
        self,
        reactor: Any,
        timeout: float,
        concurrency: int,
        trustRoot: Any = None,
        userAgent: str = USER_AGENT,
    ) -> None:
        self._reactor = reactor
        self.timeout = timeout
        self._userAgent = userAgent.encode("ascii")
        self._pool = HTTPConnectionPool(reactor, persistent=True)
        self._pool.maxPersistentPerHost = concurrency
        self._pool.cachedConnectionTimeout = IDLE_CONNECTION_SECONDS
        self._pool.retryAutomatically = False
        policy = BrowserLikePolicyForHTTPS(
            trustRoot=platformTrustRoot() if trustRoot is None else trustRoot
        )
        self._agent = Agent.usingEndpointFactory(
            reactor, _Endpoints(reactor, policy, timeout), pool=self._pool
        )

    def post(
        self, target: WebhookTarget, headers: Mapping[str, str], body: bytes
    ) -> Deferred[PostResult]:
        """
        POST C{body} (JSON) to C{target} with C{headers} added.

        @return: a L{Deferred} that always fires with a L{PostResult}.
        """
        started = self._reactor.seconds()
        requestHeaders = Headers(
            {
                b"Content-Type": [b"application/json"],
                b"User-Agent": [self._userAgent],
            }
        )
        if target.authorization is not None:
            requestHeaders.setRawHeaders(b"Authorization", [target.authorization])
        for name, value in headers.items():
            requestHeaders.setRawHeaders(name.encode("ascii"), [value.encode("utf-8")])

        def request(again: bool) -> Deferred[Any]:
            d = self._agent.request(b"POST", target.url, requestHeaders, BytesProducer(body))
            if again:
                d.addErrback(lambda f: request(False) if _closedBeforeResponse(f) else f)
            return d

        def received(response: Any) -> Deferred[PostResult]:
            reader = _BodyHead()
            response.deliverBody(reader)

            def finished(head: bytes) -> PostResult:
                code = response.code
                seconds = self._reactor.seconds() - started
                if 200 <= code < 300:
                    return PostResult(code, "", seconds)
                error = f"HTTP {code} {response.phrase.decode('latin-1', 'replace')}"
                location = response.headers.getRawHeaders(b"location")
                if 300 <= code < 400 and location:
                    error += (
                        f" (redirect to {location[0].decode('latin-1', 'replace')} not followed)"
                    )
                text = head.decode("utf-8", "replace").strip()
                if text:
                    error += f": {text}"
                return PostResult(code, _oneLine(error), seconds)

            return reader.finished.addCallback(finished)

        timedOut: list[bool] = []

        def onTimeout(result: Any, timeout: float) -> Any:
            timedOut.append(True)
            return result

        d = request(True)
        d.addCallback(received)
        d.addTimeout(self.timeout, self._reactor, onTimeoutCancel=onTimeout)

        def failed(failure: Failure) -> PostResult:
            if timedOut:
                error = f"timed out after {self.timeout:g} s"
            else:
                error = describeFailure(failure, self.timeout)
            return PostResult(None, error, self._reactor.seconds() - started)

        return d.addErrback(failed)

    def close(self) -> Deferred[None]:
        """
        Close the connections kept open.
        """
        return self._pool.closeCachedConnections()


def checkTrustStore(variable: str, environ: Mapping[str, str]) -> None:
    """
    Make sure HTTPS requests can be verified: C{SSL_CERT_FILE} /
    C{SSL_CERT_DIR} load when set, else the system's store exists.

    @param variable: the setting with the https URL, for the message.
    @raise ConfigError: naming C{SSL_CERT_FILE} or C{SSL_CERT_DIR}.
    """
    caFile = environ.get("SSL_CERT_FILE") or None
    caPath = environ.get("SSL_CERT_DIR") or None
    context = SSL.Context(SSL.TLS_METHOD)
    if caFile is None and caPath is None:
        defaults = ssl.get_default_verify_paths()
        if not (
            (defaults.cafile and os.path.isfile(defaults.cafile))
            or (defaults.capath and os.path.isdir(defaults.capath))
        ):
            raise ConfigError(
                "SSL_CERT_FILE",
                f"unset, and the system has no trust store for the https {variable} "
                "(install ca-certificates, or set SSL_CERT_FILE)",
            )
        return
    if caFile is not None:
        try:
            context.load_verify_locations(caFile.encode(), None)
        except SSL.Error as e:
            raise ConfigError(
                "SSL_CERT_FILE",
                f"the trust store {caFile!r} for the https {variable} does not load: "
                f"{_sslDetails(e)}",
            ) from None
    if caPath is not None:
        for directory in caPath.split(os.pathsep):
            if directory and not os.path.isdir(directory):
                raise ConfigError(
                    "SSL_CERT_DIR",
                    f"{directory!r} (for the https {variable}) is not a directory",
                )
