# -*- test-case-name: tests.test_filters_spamd -*-
"""
SpamAssassin's spamd, spoken directly (the spamc protocol, SPAMC/1.5).

Each message goes to spamd with C{HEADERS}: spamd answers with its verdict
(C{Spam: True ; 1000.0 / 5.0}) and the message's header section as
SpamAssassin would leave it.  A score at or above C{SMTP_SPAM_REJECT_SCORE}
is refused (C{550 5.7.1}); otherwise the C{X-Spam-*} fields SpamAssassin
added (by its C{add_header} configuration: C{X-Spam-Status} always,
C{X-Spam-Flag: YES} for spam, ...) are put at the top of the message,
forged C{X-Spam-*} fields of the message are removed, and a Subject that
SpamAssassin rewrote (C{rewrite_header Subject}) is taken.  The body is
never changed (C{report_safe} needs C{PROCESS}, which we do not use).

Messages over C{SMTP_SPAMD_MAX_SIZE} are not scanned, as spamc does.
(aiospamc, the maintained Python client, is asyncio-only; the protocol is
small.)
"""

from __future__ import annotations

import ipaddress
import re
from typing import Any

from twisted.internet.defer import Deferred
from twisted.internet.endpoints import (
    HostnameEndpoint,
    TCP4ClientEndpoint,
    TCP6ClientEndpoint,
    UNIXClientEndpoint,
)
from twisted.internet.interfaces import IStreamClientEndpoint
from twisted.internet.protocol import Factory, Protocol
from twisted.python.failure import Failure
from zope.interface import implementer

from gopherpost.config import SpamdAddress
from gopherpost.filters.envelope import ScanRequest
from gopherpost.filters.failure import FilterProtocolError, withTimeout
from gopherpost.filters.headers import HeaderSection
from gopherpost.filters.interfaces import IContentScanner
from gopherpost.filters.verdict import (
    ChangeHeader,
    DeleteHeader,
    InsertHeader,
    Modification,
    Verdict,
)

__all__ = ["MAX_REPLY", "SpamdClient", "SpamdResult", "parseResponse", "request"]

#: The longest answer read from spamd (C{HEADERS} sends only the header
#: section).
MAX_REPLY = 1024 * 1024

_STATUS = re.compile(rb"SPAMD/(\d+\.\d+) +(\d+) +(.*)\Z")
_SPAM = re.compile(
    r"\s*(True|False|Yes|No)\s*;\s*(-?\d+(?:\.\d+)?)\s*/\s*(-?\d+(?:\.\d+)?)\s*\Z", re.I
)


def request(content: bytes, user: str | None = None) -> bytes:
    """
    A C{HEADERS} request for C{content}.
    """
    lines = [b"HEADERS SPAMC/1.5", b"Content-length: %d" % len(content)]
    if user:
        lines.append(b"User: " + user.encode("ascii", "replace"))
    return b"\r\n".join(lines) + b"\r\n\r\n" + content


class SpamdResult:
    """
    spamd's answer.

    @ivar spam: whether SpamAssassin says it is spam.
    @ivar score: its score.
    @ivar threshold: its C{required_score}.
    @ivar headers: the header section SpamAssassin returned.
    """

    def __init__(self, spam: bool, score: float, threshold: float, headers: bytes) -> None:
        self.spam = spam
        self.score = score
        self.threshold = threshold
        self.headers = headers

    def __repr__(self) -> str:
        return f"<SpamdResult spam={self.spam} {self.score}/{self.threshold}>"


def parseResponse(data: bytes) -> SpamdResult:
    """
    Parse spamd's whole answer.

    @raise FilterProtocolError: for an error status or a malformed answer.
    """
    head, separator, body = data.partition(b"\r\n\r\n")
    lines = head.split(b"\r\n")
    status = _STATUS.match(lines[0])
    if status is None:
        raise FilterProtocolError(f"spamd: not a SPAMD status line: {lines[0][:60]!r}")
    if status.group(2) != b"0":
        reason = status.group(3).decode("ascii", "replace")
        raise FilterProtocolError(f"spamd answered {status.group(2).decode()} {reason}")
    fields: dict[str, str] = {}
    for line in lines[1:]:
        name, colon, value = line.partition(b":")
        if colon:
            fields[name.strip().lower().decode("ascii", "replace")] = value.decode(
                "ascii", "replace"
            )
    spam = _SPAM.match(fields.get("spam", ""))
    if spam is None:
        raise FilterProtocolError("spamd: no Spam: line in the answer")
    length = fields.get("content-length")
    if length is not None and length.strip().isdigit() and len(body) < int(length):
        raise FilterProtocolError("spamd: the answer was cut short")
    section = body.replace(b"\r\n", b"\n").replace(b"\n", b"\r\n") if separator else b""
    if b"\r\n\r\n" in section:
        section = section.partition(b"\r\n\r\n")[0] + b"\r\n"
    return SpamdResult(
        spam.group(1).lower() in ("true", "yes"),
        float(spam.group(2)),
        float(spam.group(3)),
        section,
    )


class _SpamdProtocol(Protocol):
    """
    One request: send it, read until spamd closes.
    """

    def __init__(self, data: bytes) -> None:
        self._data = data
        self._parts: list[bytes] = []
        self._size = 0
        self.finished: Deferred[bytes] = Deferred(lambda _: self._abort())

    def _abort(self) -> None:
        if self.transport is not None:
            self.transport.abortConnection()  # type: ignore[attr-defined]

    def connectionMade(self) -> None:
        self.transport.write(self._data)  # type: ignore[union-attr]

    def dataReceived(self, data: bytes) -> None:
        self._size += len(data)
        if self._size > MAX_REPLY:
            if not self.finished.called:
                self.finished.errback(FilterProtocolError("spamd's answer is too long"))
            self._abort()
            return
        self._parts.append(data)

    def connectionLost(self, reason: Failure | None = None) -> None:
        if not self.finished.called:
            self.finished.callback(b"".join(self._parts))


def spamdEndpoint(reactor: Any, address: SpamdAddress, timeout: float) -> IStreamClientEndpoint:
    """
    The client endpoint of spamd's address.
    """
    seconds = max(1, int(timeout + 0.999))
    if address.path:
        return UNIXClientEndpoint(reactor, address.path, timeout=seconds)
    try:
        version = ipaddress.ip_address(address.host).version
    except ValueError:
        return HostnameEndpoint(reactor, address.host, address.port, timeout=seconds)
    if version == 6:
        return TCP6ClientEndpoint(reactor, address.host, address.port, timeout=seconds)
    return TCP4ClientEndpoint(reactor, address.host, address.port, timeout=seconds)


def _edits(original: bytes, returned: bytes) -> list[Modification]:
    """
    The header edits that make C{original}'s header section carry what
    SpamAssassin put in C{returned}.
    """
    before = HeaderSection(original)
    after = HeaderSection(returned)
    edits: list[Modification] = []
    forged = {f.name.lower() for f in before if f.name and f.name.lower().startswith(b"x-spam-")}
    for name in sorted(forged):
        edits.append(DeleteHeader(name, 0))
    added = [f for f in after if f.name and f.name.lower().startswith(b"x-spam-")]
    for index, field in enumerate(added):
        assert field.name is not None
        edits.append(InsertHeader(index, field.name, field.value))
    oldSubject = before.values(b"Subject")
    newSubject = after.values(b"Subject")
    if newSubject and newSubject[:1] != oldSubject[:1]:
        edits.append(ChangeHeader(b"Subject", 1, newSubject[0]))
    return edits


@implementer(IContentScanner)
class SpamdClient:
    """
    Scans messages with spamd.

    @param reactor: for connections and time.
    @param address: spamd's address (C{SMTP_SPAMD}).
    @param timeout: seconds one scan may take (C{SMTP_SPAMD_TIMEOUT}).
    @param rejectScore: refuse at this score or above; L{None}: never.
    @param maxSize: larger messages are not scanned.
    @param endpoint: where to connect (default from C{address}).
    """

    name = "spamassassin"

    def __init__(
        self,
        reactor: Any,
        address: SpamdAddress,
        timeout: float,
        rejectScore: float | None,
        maxSize: int = 512000,
        endpoint: IStreamClientEndpoint | None = None,
    ) -> None:
        self._reactor = reactor
        self.address = address
        self.timeout = timeout
        self.rejectScore = rejectScore
        self.maxSize = maxSize
        self._endpoint = endpoint or spamdEndpoint(reactor, address, timeout)

    def check(self, content: bytes, user: str | None = None) -> Deferred[SpamdResult]:
        """
        Ask spamd about C{content}.
        """
        protocol = _SpamdProtocol(request(content, user))
        factory = Factory.forProtocol(lambda: protocol)
        # Not a log line per connection (one per message).
        factory.noisy = False
        d: Deferred[Any] = self._endpoint.connect(factory)
        d.addCallback(lambda _: protocol.finished)
        d.addCallback(parseResponse)
        return withTimeout(d, self.timeout, self._reactor)

    def scan(self, request: ScanRequest) -> Deferred[Verdict]:
        """
        Scan a message; the verdict.
        """
        content = request.content
        if len(content) > self.maxSize:
            d: Deferred[Verdict] = Deferred()
            d.callback(Verdict.accept(result="skipped", details={"skipped": "size"}))
            return d
        return self.check(content, request.facts.authenticatedUser).addCallback(
            self._verdict, request.headerSection
        )

    def _verdict(self, result: SpamdResult, section: bytes) -> Verdict:
        details = {"spam": result.spam}
        facts: dict[str, Any] = {
            "score": result.score,
            "threshold": result.threshold,
            "details": details,
        }
        if self.rejectScore is not None and result.score >= self.rejectScore:
            return Verdict.reject(
                550,
                f"5.7.1 Message rejected as spam (SpamAssassin score {result.score:.1f})",
                **facts,
            )
        return Verdict.accept(_edits(section, result.headers), **facts)
