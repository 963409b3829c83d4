# -*- test-case-name: tests.test_filters_rspamd -*-
"""
rspamd's HTTP API: each message POSTed to C{/checkv2} with the envelope and
connection facts as request headers, rspamd's action turned into a
L{Verdict}.

    reject                 550 5.7.1 (rspamd's SMTP message, or "Spam message rejected")
    soft reject, greylist  451 4.7.1 (rspamd's SMTP message, or "Try again later")
    add header             accepted, C{X-Spam: Yes}
    rewrite subject        accepted, the Subject rspamd gives
    discard                250, thrown away
    quarantine             accepted, held (the envelope's metadata says so)
    no action              accepted

In every accepted case the header fields rspamd's C{milter_headers} module
asks for (the reply's C{milter} block: C{remove_headers}, then
C{add_headers}) and a C{DKIM-Signature} from its C{dkim_signing} module are
applied, exactly as rspamd's own milter port would apply them; configure
which fields in rspamd (C{local.d/milter_headers.conf}).

One HTTP connection pool (persistent connections) per client; every request
is bounded by the timeout, and the reply by L{MAX_REPLY} octets.
"""

from __future__ import annotations

import json
from typing import Any

from twisted.internet.defer import Deferred
from twisted.internet.endpoints import HostnameEndpoint, wrapClientTLS
from twisted.internet.interfaces import IStreamClientEndpoint
from twisted.internet.protocol import Protocol
from twisted.python.failure import Failure
from twisted.web.client import Agent, BrowserLikePolicyForHTTPS, HTTPConnectionPool, ResponseDone
from twisted.web.http_headers import Headers
from twisted.web.iweb import IAgentEndpointFactory, IResponse
from zope.interface import implementer

from gopherpost.filters.envelope import ScanRequest
from gopherpost.filters.failure import FilterProtocolError, withTimeout
from gopherpost.filters.interfaces import IContentScanner
from gopherpost.filters.verdict import (
    AddHeader,
    ChangeHeader,
    DeleteHeader,
    InsertHeader,
    Modification,
    Verdict,
)
from gopherpost.httpbody import BytesProducer

__all__ = ["MAX_REPLY", "RspamdClient", "checkURL", "verdictFromReply"]

#: The longest reply read from rspamd.
MAX_REPLY = 4 * 1024 * 1024

#: Symbol names kept in the envelope's metadata at most.
_SYMBOLS_KEPT = 64


def checkURL(url: str) -> bytes:
    """
    The C{/checkv2} URL of an rspamd URL (C{SMTP_RSPAMD_URL}).
    """
    if not url.rstrip("/").endswith("/checkv2"):
        url = url.rstrip("/") + "/checkv2"
    return url.encode("ascii")


class _BoundedBody(Protocol):
    """
    Collects a response body of at most L{MAX_REPLY} octets.
    """

    def __init__(self, finished: Deferred[bytes]) -> None:
        self._finished = finished
        self._parts: list[bytes] = []
        self._size = 0

    def dataReceived(self, data: bytes) -> None:
        self._size += len(data)
        if self._size > MAX_REPLY:
            if not self._finished.called:
                self._finished.errback(FilterProtocolError("rspamd's reply is too long"))
            self.transport.stopProducing()  # type: ignore[union-attr]
            return
        self._parts.append(data)

    def connectionLost(self, reason: Failure) -> None:  # type: ignore[override]
        if self._finished.called:
            return
        if reason.check(ResponseDone):
            self._finished.callback(b"".join(self._parts))
        else:
            self._finished.errback(reason)


def _text(value: Any) -> bytes:
    return str(value).encode("utf-8", "replace")


def _milterModifications(block: Any) -> list[Modification]:
    """
    The edits of a reply's C{milter} block.
    """
    if not isinstance(block, dict):
        return []
    edits: list[Modification] = []
    removals = block.get("remove_headers")
    if isinstance(removals, dict):
        for name, index in removals.items():
            position = index if isinstance(index, int) and not isinstance(index, bool) else 0
            edits.append(DeleteHeader(_text(name), position))
    additions = block.get("add_headers")
    if isinstance(additions, dict):
        for name, spec in additions.items():
            for item in spec if isinstance(spec, list) else [spec]:
                if isinstance(item, dict):
                    value = item.get("value", "")
                    order = item.get("order", -1)
                else:
                    value, order = item, -1
                if isinstance(order, int) and not isinstance(order, bool) and order >= 0:
                    edits.append(InsertHeader(order, _text(name), _text(value)))
                else:
                    edits.append(AddHeader(_text(name), _text(value)))
    return edits


def _number(value: Any) -> float | None:
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return float(value)
    return None


def verdictFromReply(reply: Any) -> Verdict:
    """
    The verdict of a C{/checkv2} reply (parsed JSON).

    @raise FilterProtocolError: when it is not an rspamd reply.
    """
    if not isinstance(reply, dict) or not isinstance(reply.get("action"), str):
        raise FilterProtocolError("rspamd's reply has no action")
    action = reply["action"]
    score = _number(reply.get("score"))
    required = _number(reply.get("required_score"))
    messages = reply.get("messages")
    smtpMessage = messages.get("smtp_message") if isinstance(messages, dict) else None
    if not isinstance(smtpMessage, str) or not smtpMessage.strip():
        smtpMessage = None
    symbols = reply.get("symbols")
    details: dict[str, Any] = {"action": action}
    if isinstance(symbols, dict):
        details["symbols"] = sorted(str(s) for s in symbols)[:_SYMBOLS_KEPT]
    facts = {"score": score, "threshold": required, "details": details}
    if action == "reject":
        return Verdict.reject(550, "5.7.1 " + (smtpMessage or "Spam message rejected"), **facts)
    if action in ("soft reject", "greylist"):
        return Verdict.tempfail(451, "4.7.1 " + (smtpMessage or "Try again later"), **facts)
    if action == "discard":
        return Verdict.discard(**facts)
    edits = _milterModifications(reply.get("milter"))
    signatures = reply.get("dkim-signature")
    for signature in signatures if isinstance(signatures, list) else [signatures]:
        if isinstance(signature, str) and signature:
            edits.append(InsertHeader(0, b"DKIM-Signature", _text(signature)))
    quarantine = None
    if action == "add header":
        edits.append(DeleteHeader(b"X-Spam", 0))
        edits.append(AddHeader(b"X-Spam", b"Yes"))
    elif action == "rewrite subject":
        subject = reply.get("subject")
        if isinstance(subject, str) and subject:
            edits.append(ChangeHeader(b"Subject", 1, _text(subject)))
    elif action == "quarantine":
        quarantine = smtpMessage or "rspamd"
    return Verdict.accept(edits, quarantine=quarantine, **facts)


def _requestHeaders(request: ScanRequest) -> Headers:
    facts = request.facts
    headers = Headers(
        {
            b"IP": [_text(facts.clientAddress)],
            b"Queue-Id": [_text(request.queueId)],
            b"From": [_text(f"<{request.sender}>" if not request.sender else request.sender)],
            b"Rcpt": [_text(r) for r in request.recipients],
            b"MTA-Name": [_text(facts.serverName)],
            b"Content-Type": [b"application/octet-stream"],
        }
    )
    if facts.helo:
        headers.setRawHeaders(b"Helo", [_text(facts.helo)])
    if facts.clientName:
        headers.setRawHeaders(b"Hostname", [_text(facts.clientName)])
    if facts.authenticatedUser:
        headers.setRawHeaders(b"User", [_text(facts.authenticatedUser)])
    if facts.tlsVersion:
        headers.setRawHeaders(b"TLS-Version", [_text(facts.tlsVersion)])
    if facts.tlsCipher:
        headers.setRawHeaders(b"TLS-Cipher", [_text(facts.tlsCipher)])
    return headers


@implementer(IStreamClientEndpoint)
class _QuietEndpoint:
    """
    An endpoint whose connection factories do not log each connection
    (a line per message otherwise).
    """

    def __init__(self, endpoint: Any) -> None:
        self._endpoint = endpoint

    def connect(self, protocolFactory: Any) -> Deferred[Any]:
        protocolFactory.noisy = False
        result: Deferred[Any] = self._endpoint.connect(protocolFactory)
        return result


@implementer(IAgentEndpointFactory)
class _QuietEndpoints:
    """
    The agent's endpoints: as Twisted's own (TLS for C{https://}), quiet.
    """

    def __init__(self, reactor: Any, connectTimeout: float) -> None:
        self._reactor = reactor
        self._timeout = connectTimeout
        self._tls = BrowserLikePolicyForHTTPS()

    def endpointForURI(self, uri: Any) -> _QuietEndpoint:
        host = uri.host.decode("ascii")
        endpoint: Any = HostnameEndpoint(self._reactor, host, uri.port, timeout=self._timeout)
        if uri.scheme == b"https":
            endpoint = wrapClientTLS(self._tls.creatorForNetloc(uri.host, uri.port), endpoint)
        return _QuietEndpoint(endpoint)


@implementer(IContentScanner)
class RspamdClient:
    """
    Scans messages with rspamd's C{/checkv2}.

    @param reactor: for connections and time.
    @param url: rspamd's URL (C{SMTP_RSPAMD_URL}).
    @param timeout: seconds one scan may take (C{SMTP_RSPAMD_TIMEOUT}).
    @param agent: the HTTP agent (default: one with a persistent pool).
    """

    name = "rspamd"

    def __init__(self, reactor: Any, url: str, timeout: float, agent: Any = None) -> None:
        self._reactor = reactor
        self.url = url
        self._checkURL = checkURL(url)
        self.timeout = timeout
        self._pool: HTTPConnectionPool | None = None
        if agent is None:
            self._pool = HTTPConnectionPool(reactor, persistent=True)
            self._pool.maxPersistentPerHost = 16
            self._pool.retryAutomatically = False
            endpoints = _QuietEndpoints(reactor, max(1, int(timeout)))
            agent = Agent.usingEndpointFactory(reactor, endpoints, pool=self._pool)
        self._agent = agent

    def scan(self, request: ScanRequest) -> Deferred[Verdict]:
        """
        POST the message; rspamd's verdict.
        """
        d = self._agent.request(
            b"POST", self._checkURL, _requestHeaders(request), BytesProducer(request.content)
        )
        d.addCallback(self._response)
        d.addCallback(self._parse)
        return withTimeout(d, self.timeout, self._reactor)

    def _response(self, response: IResponse) -> Deferred[bytes]:
        if response.code != 200:
            response.deliverBody(_Discard())
            raise FilterProtocolError(f"rspamd answered HTTP {response.code}")

        def cancel(_: Deferred[bytes]) -> None:
            if body.transport is not None:
                body.transport.stopProducing()  # type: ignore[attr-defined]

        finished: Deferred[bytes] = Deferred(cancel)
        body = _BoundedBody(finished)
        response.deliverBody(body)
        return finished

    def _parse(self, body: bytes) -> Verdict:
        try:
            reply = json.loads(body)
        except ValueError:
            raise FilterProtocolError("rspamd's reply is not JSON") from None
        if isinstance(reply, dict) and "error" in reply and "action" not in reply:
            raise FilterProtocolError(f"rspamd: {str(reply['error'])[:200]}")
        return verdictFromReply(reply)

    def close(self) -> Deferred[None]:
        """
        Close the pool's connections.
        """
        if self._pool is None:
            d: Deferred[None] = Deferred()
            d.callback(None)
            return d
        return self._pool.closeCachedConnections()


class _Discard(Protocol):
    """
    Reads a response body and forgets it.
    """
