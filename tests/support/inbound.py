"""
A harness that drives GopherPost's SMTP server protocol synchronously:
real L{Spool} on a temporary directory, real portal and delivery policy,
L{StringTransport} for the wire and L{Clock} for time.  Spool work meant for
a thread runs when the test says so, so tests control when fsyncs finish.
"""

from __future__ import annotations

import ipaddress
import os
import time
from collections.abc import Callable
from dataclasses import replace
from typing import Any

from twisted.internet.address import IPv4Address, IPv6Address
from twisted.internet.defer import Deferred, maybeDeferred
from twisted.internet.interfaces import IHandshakeListener, ITLSTransport
from twisted.internet.task import Clock
from twisted.internet.testing import StringTransport
from twisted.protocols.policies import ProtocolWrapper, WrappingFactory
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
    "LiveServer",
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
class TLSStringTransport(RecordingTransport):  # type: ignore[misc]
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
    @ivar auth: the L{gopherpost.auth.service.AuthService} given, if any.
    """

    def __init__(
        self,
        testCase: Any,
        contextFactory: Any = None,
        synchronousThreads: bool = True,
        role: ListenerRole = SMTP,
        policies: Callable[[list[Any]], list[Any]] | None = None,
        auth: Callable[[Clock], Any] | None = None,
        **overrides: Any,
    ) -> None:
        """
        @param auth: makes the L{gopherpost.auth.service.AuthService} (with
            this harness's clock), for AUTH.
        """
        self.clock = Clock()
        self.path = os.path.abspath(testCase.mktemp())
        self.settings = testSettings(self.path, **overrides)
        self.synchronousThreads = synchronousThreads
        self.threadWork: list[tuple[Deferred, Callable[..., Any], tuple]] = []
        self.spool = Spool(self.path, self.clock, runInThread=self._runInThread)
        self.spool.open()
        self.spool.addObserver(self)  # type: ignore[arg-type]
        self.audit = RecordingAudit()
        self.relayed: list[tuple[str, str]] = []
        self.auth = auth(self.clock) if auth is not None else None
        self.portal = makePortal(self.settings.allowNetworks, self.settings.allowHosts)
        self.policies = policiesFor(role, self.settings, self.portal, self.auth)
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
            auth=self.auth,
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


@implementer(IHandshakeListener)
class _RecordingProtocol(ProtocolWrapper):
    """
    Counts the octets the server protocol was handed, read by read (and
    passes on the end of a STARTTLS handshake).
    """

    def handshakeCompleted(self) -> None:
        if IHandshakeListener.providedBy(self.wrappedProtocol):
            self.wrappedProtocol.handshakeCompleted()

    def dataReceived(self, data: bytes) -> None:
        self.factory.received += len(data)
        self.factory.reads += 1
        ProtocolWrapper.dataReceived(self, data)

    def connectionLost(self, reason: Any = None) -> None:
        self.factory.closed += 1
        ProtocolWrapper.connectionLost(self, reason)


class _RecordingFactory(WrappingFactory):
    protocol = _RecordingProtocol
    received = 0
    reads = 0
    closed = 0


class LiveServer:
    """
    The inbound side on a real loopback port of the real reactor: the
    factory of L{makeSMTPFactory} with a real spool, optionally TLS
    (STARTTLS, or implicit TLS for the submissions role, wrapped as the
    wiring does), and a count of the octets the protocol has read, so a
    client can make sure each of its writes is a read of its own.

    Stopped, with every connection closed, at the test's cleanup.

    @ivar port: the port number.
    @ivar factory: the L{SMTPFactory}.
    @ivar spool: the L{Spool}.
    @ivar pki: the test PKI when TLS is on (trust C{pki.ca.certPath}).
    """

    def __init__(
        self,
        testCase: Any,
        role: ListenerRole = SMTP,
        tls: bool = False,
        auth: Callable[[Settings], Any] | None = None,
        **overrides: Any,
    ) -> None:
        """
        @param auth: makes the L{gopherpost.auth.service.AuthService} from
            the server's settings (started and stopped with the server).
        """
        from twisted.internet import reactor
        from twisted.protocols.tls import TLSMemoryBIOFactory

        from gopherpost.tls import loadServerContextFactory
        from tests.support.certs import makeTestPKI

        self._reactor = reactor
        self.path = os.path.abspath(testCase.mktemp())
        contextFactory = None
        self.pki = None
        if tls or role.implicitTLS:
            self.pki = makeTestPKI(testCase.mktemp(), "mx.gopherpost.test")
            contextFactory = loadServerContextFactory(self.pki.good.certPath, self.pki.good.keyPath)
            overrides.setdefault("tlsDisable", False)
        self.settings = testSettings(self.path, **overrides)
        self.spool = Spool(self.path, reactor)
        self.spool.open()
        self.audit = RecordingAudit()
        self.auth = auth(self.settings) if auth is not None else None
        if self.auth is not None:
            self.auth.startService()
            testCase.addCleanup(self.auth.stopService)
        self.factory = makeSMTPFactory(
            self.settings,
            self.spool,
            self.audit,
            None,
            reactor,
            contextFactory,
            role=role,
            auth=self.auth,
        )
        wrapped: Any = self.factory
        if role.implicitTLS:
            wrapped = TLSMemoryBIOFactory(contextFactory, False, wrapped)  # type: ignore[arg-type]
        self.recorder = _RecordingFactory(wrapped)
        self.listener = reactor.listenTCP(0, self.recorder, interface="127.0.0.1")  # type: ignore[arg-type]
        self.port: int = self.listener.getHost().port  # type: ignore[attr-defined]
        testCase.addCleanup(self.stop)

    @property
    def received(self) -> int:
        """
        Octets handed to the server protocols so far.
        """
        return self.recorder.received

    @property
    def closed(self) -> int:
        """
        Connections the server has seen closed so far.
        """
        return self.recorder.closed

    def waitForReceived(self, count: int, closed: int | None = None, timeout: float = 30.0) -> None:
        """
        Block (in a client thread) until the server has read C{count}
        octets in all, or (with C{closed}) until more than C{closed}
        connections have closed: the server stopped reading by closing.
        """
        deadline = time.monotonic() + timeout
        while self.recorder.received < count:
            if closed is not None and self.recorder.closed > closed:
                return
            if time.monotonic() > deadline:
                raise AssertionError(
                    f"server read {self.recorder.received} octets, not {count}, in {timeout}s"
                )
            time.sleep(0.002)

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
        with open(os.path.join(self.path, relative), "rb") as f:
            return f.read()

    def stop(self) -> Deferred:
        """
        Stop listening and close every connection.
        """
        d = maybeDeferred(self.listener.stopListening)
        return d.addCallback(lambda _: self.factory.drain(0))
