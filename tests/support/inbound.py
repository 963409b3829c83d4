"""
A harness that drives GopherPost's SMTP server protocol synchronously:
real L{Spool} on a temporary directory, real portal and delivery policy,
L{StringTransport} for the wire and L{Clock} for time.  Spool work meant for
a thread runs when the test says so, so tests control when fsyncs finish.
"""

from __future__ import annotations

import ipaddress
import os
from collections.abc import Callable
from dataclasses import replace
from typing import Any

from twisted.internet.address import IPv4Address, IPv6Address
from twisted.internet.defer import Deferred, maybeDeferred
from twisted.internet.interfaces import ITLSTransport
from twisted.internet.task import Clock
from twisted.internet.testing import StringTransport
from zope.interface import implementer

from gopherpost.config import Settings
from gopherpost.inbound.access import makePortal
from gopherpost.inbound.factory import makeSMTPFactory
from gopherpost.inbound.policies import policiesFor
from gopherpost.inbound.roles import SMTP, ListenerRole
from gopherpost.interfaces import IAuditLog
from gopherpost.spool import Spool

__all__ = [
    "RecordingAudit",
    "InboundHarness",
    "RecordingTransport",
    "TLSStringTransport",
    "testSettings",
]


@implementer(IAuditLog)
class RecordingAudit:
    """
    An L{IAuditLog} that remembers every event.
    """

    def __init__(self) -> None:
        self.events: list[tuple[str, dict]] = []

    def emit(self, event: str, **fields: object) -> None:
        self.events.append((event, fields))

    def subscribe(self, callback: object) -> Any:
        raise NotImplementedError()

    def named(self, event: str) -> list[dict]:
        """
        The fields of every event called C{event}.
        """
        return [fields for name, fields in self.events if name == event]


class RecordingTransport(StringTransport):
    """
    A L{StringTransport} that also records each call that puts bytes on the
    wire or changes it, in order: C{("write", data)}, C{("loseConnection",)},
    C{("abortConnection",)} and (for L{TLSStringTransport}) C{("startTLS",)}.

    @ivar lost: whether the protocol was told the connection is gone
        (L{InboundHarness.disconnect}).
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.calls: list[tuple[Any, ...]] = []
        self.lost = False
        self.aborted = False

    def abortConnection(self) -> None:
        self.calls.append(("abortConnection",))
        self.aborted = True
        super().abortConnection()

    def write(self, data: bytes) -> None:
        self.calls.append(("write", data))
        super().write(data)

    def writeSequence(self, data: Any) -> None:
        self.write(b"".join(data))

    def loseConnection(self) -> None:
        self.calls.append(("loseConnection",))
        super().loseConnection()

    def writes(self) -> list[bytes]:
        """
        The data of each write so far.
        """
        return [call[1] for call in self.calls if call[0] == "write"]


@implementer(ITLSTransport)
class TLSStringTransport(RecordingTransport):
    """
    A L{RecordingTransport} that records a STARTTLS.
    """

    tlsStarted = None

    def startTLS(self, contextFactory: Any) -> None:
        self.calls.append(("startTLS",))
        self.tlsStarted = contextFactory


def testSettings(queuePath: str, **overrides: Any) -> Settings:
    """
    Settings for tests: host C{mx.gopherpost.test}, loopback allowed.
    """
    base = Settings(
        hostname="mx.gopherpost.test",
        localDomains=("mx.gopherpost.test", "gopherpost.test"),
        allowNetworks=(ipaddress.ip_network("127.0.0.0/8"),),
        queuePath=queuePath,
        healthDisable=True,
        tlsDisable=True,
    )
    return replace(base, **overrides)


class InboundHarness:
    """
    A server factory wired as in production (L{makeSMTPFactory}), minus
    sockets and threads.

    @ivar threadWork: spool work waiting for L{runThreads}.
    @ivar policies: the chain's policies (tests may insert their own with
        C{policies=} or edit this list before the first connection).
    """

    def __init__(
        self,
        testCase: Any,
        contextFactory: Any = None,
        synchronousThreads: bool = True,
        role: ListenerRole = SMTP,
        policies: Callable[[list[Any]], list[Any]] | None = None,
        **overrides: Any,
    ) -> None:
        self.clock = Clock()
        self.path = os.path.abspath(testCase.mktemp())
        self.settings = testSettings(self.path, **overrides)
        self.synchronousThreads = synchronousThreads
        self.threadWork: list[tuple[Deferred, Callable[..., Any], tuple]] = []
        self.spool = Spool(self.path, self.clock, runInThread=self._runInThread)
        self.spool.open()
        self.spool.addObserver(self)
        self.audit = RecordingAudit()
        self.relayed: list[tuple[str, str]] = []
        self.portal = makePortal(self.settings.allowNetworks, self.settings.allowHosts)
        self.policies = policiesFor(role, self.settings, self.portal)
        if policies is not None:
            self.policies = policies(self.policies)
        self.factory = makeSMTPFactory(
            self.settings,
            self.spool,
            self.audit,
            None,
            self.clock,
            contextFactory,
            role=role,
            policies=self.policies,
            runInThread=self._runInThread,
        )
        self._sessions: list[Any] = []
        testCase.addCleanup(self._cleanUp)

    # ISpoolObserver, so tests see what would be relayed.
    def messageCommitted(self, envelope: Any) -> None:
        if envelope.relayRecipients:
            self.relayed.append((envelope.queueId, envelope.dateDirectory))

    def _runInThread(self, f: Callable[..., Any], *args: Any) -> Deferred:
        if self.synchronousThreads:
            return maybeDeferred(f, *args)
        d: Deferred = Deferred()
        self.threadWork.append((d, f, args))
        return d

    def runThreads(self) -> None:
        """
        Run the pending spool work now (as the thread pool would).
        """
        while self.threadWork:
            d, f, args = self.threadWork.pop(0)
            maybeDeferred(f, *args).chainDeferred(d)

    def connect(self, host: str = "127.0.0.1", tls: bool = False) -> tuple[Any, RecordingTransport]:
        """
        A new session from C{host}; returns C{(protocol, transport)}.
        """
        if ":" in host:
            peer: Any = IPv6Address("TCP", host, 40000 + len(self._sessions))
        else:
            peer = IPv4Address("TCP", host, 40000 + len(self._sessions))
        transport = (TLSStringTransport if tls else RecordingTransport)(peerAddress=peer)
        proto = self.factory.buildProtocol(peer)
        proto.makeConnection(transport)
        self._sessions.append((proto, transport))
        return proto, transport

    def _cleanUp(self) -> None:
        for proto, transport in self._sessions:
            if not transport.lost:
                transport.lost = True
                proto.connectionLost(None)

    def storedFiles(self) -> list[str]:
        """
        Every C{.eml} file in the spool, as paths relative to it.
        """
        found = []
        for directory in self.spool.dateDirectories():
            for name in sorted(os.listdir(os.path.join(self.path, directory))):
                if name.endswith(".eml"):
                    found.append(os.path.join(directory, name))
        return found

    def read(self, relative: str) -> bytes:
        """
        The content of a spool file.
        """
        with open(os.path.join(self.path, relative), "rb") as f:
            return f.read()


def replies(transport: StringTransport) -> list[bytes]:
    """
    The reply lines written so far (and clear them).
    """
    lines = transport.value().split(b"\r\n")
    transport.clear()
    return [line for line in lines if line]
