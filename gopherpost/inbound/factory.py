# -*- test-case-name: tests.test_factory -*-
"""
The SMTP server factory of one listener role: builds sessions, enforces the
connection limits shared by every listener, and drains sessions gracefully
when the server stops.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Sequence
from typing import Any

from twisted.application.service import IService, MultiService
from twisted.internet.defer import Deferred, succeed
from twisted.internet.interfaces import IReactorTime
from twisted.internet.protocol import ServerFactory
from twisted.internet.threads import deferToThreadPool
from twisted.logger import Logger

from gopherpost.config import Settings
from gopherpost.inbound.context import SessionContext
from gopherpost.inbound.interfaces import IMessageSink, IPolicy
from gopherpost.inbound.policy import PolicyChain
from gopherpost.inbound.protocol import SMTPServerProtocol
from gopherpost.inbound.roles import SMTP, ListenerRole
from gopherpost.inbound.session import Session, SessionSettings
from gopherpost.interfaces import IAuditLog

__all__ = [
    "ConnectionLimits",
    "SMTPFactory",
    "SMTPService",
    "SHUTDOWN_GRACE",
    "LISTEN_BACKLOG",
    "makeSMTPFactory",
]

_log = Logger()

#: Seconds a stopping server waits for messages in flight.
SHUTDOWN_GRACE = 30.0
#: Pending connections the kernel queues for us (Twisted's default of 50
#: overflows under bursts; the kernel caps it at net.core.somaxconn).
LISTEN_BACKLOG = 1024


class ConnectionLimits:
    """
    The connection slots of the whole server, shared by every listener:
    at most C{maxConnections} sessions in all and C{maxPerAddress} from one
    client address (0: unlimited).
    """

    def __init__(self, maxConnections: int, maxPerAddress: int) -> None:
        self.maxConnections = maxConnections
        self.maxPerAddress = maxPerAddress
        self._count = 0
        self._perAddress: Counter = Counter()

    @property
    def count(self) -> int:
        """
        Slots taken.
        """
        return self._count

    def take(self, address: str) -> tuple[str, str] | None:
        """
        Take a slot for a client at C{address}.

        @return: L{None} if taken, else C{(reason, text)} for the refusal.
        """
        if self.maxConnections and self._count >= self.maxConnections:
            return ("connection-limit", "too many connections")
        if self.maxPerAddress and self._perAddress[address] >= self.maxPerAddress:
            return ("connection-limit-ip", f"too many connections from {address}")
        self._count += 1
        self._perAddress[address] += 1
        return None

    def give(self, address: str) -> None:
        """
        Give back a slot taken for C{address}.
        """
        self._count -= 1
        self._perAddress[address] -= 1
        if self._perAddress[address] <= 0:
            del self._perAddress[address]


class SMTPFactory(ServerFactory):
    """
    Makes one L{SMTPServerProtocol} per connection of one listener role.

    @ivar settings: the server's L{Settings}.
    @ivar chain: the role's L{PolicyChain}.
    @ivar sink: where accepted messages go (L{IMessageSink}).
    @ivar audit: where sessions report events.
    @ivar clock: the reactor's clock (time stamps, timeouts).
    @ivar contextFactory: the TLS context for STARTTLS, or L{None}.
    @ivar role: the L{ListenerRole} of the listeners using this factory.
    @ivar limits: the connection slots, shared with the other roles'
        factories.
    @ivar auth: the L{gopherpost.auth.service.AuthService} when this role
        offers AUTH, else L{None}.
    @ivar portal: the portal AUTH logs in to (the role's allow-list portal).
    """

    noisy = False
    #: Whether a port is listening with this factory (for health checks).
    listening = False

    def __init__(
        self,
        settings: Settings,
        chain: PolicyChain,
        sink: IMessageSink,
        audit: IAuditLog,
        clock: IReactorTime,
        contextFactory: Any = None,
        role: ListenerRole = SMTP,
        limits: ConnectionLimits | None = None,
        auth: Any = None,
        portal: Any = None,
    ) -> None:
        self.settings = settings
        self.auth = auth
        self.portal = portal
        self.chain = chain
        self.sink = sink
        self.audit = audit
        self.clock = clock
        self.contextFactory = contextFactory
        self.role = role
        if limits is None:
            limits = ConnectionLimits(settings.maxConnections, settings.maxConnectionsPerIP)
        self.limits = limits
        self.hostname = settings.hostname
        self.commandTimeout = settings.commandTimeout
        self.minDataRate = settings.minDataRate
        self._sessionSettings = SessionSettings.fromSettings(settings)
        self._sessions: set[SMTPServerProtocol] = set()
        self._emptyWaiters: list[Deferred] = []

    def startFactory(self) -> None:
        """
        A port started listening.
        """
        self.listening = True

    def stopFactory(self) -> None:
        """
        The port stopped listening.
        """
        self.listening = False

    def buildProtocol(self, addr: Any) -> SMTPServerProtocol:  # type: ignore[override]
        """
        A new connection.
        """
        return SMTPServerProtocol(self)

    def newSession(
        self,
        context: SessionContext,
        canStartTLS: bool,
        hasPendingInput: Callable[[], bool],
    ) -> Session:
        """
        The session of a new connection.
        """
        auth = None
        if self.auth is not None and self.auth.enabledFor(self.role):
            auth = self.auth.newCommand(context, self.portal)
        return Session(
            context,
            self.chain,
            self.sink,
            self._sessionSettings,
            self.audit,
            self.clock,
            canStartTLS=canStartTLS,
            hasPendingInput=hasPendingInput,
            auth=auth,
        )

    @property
    def sessionCount(self) -> int:
        """
        Sessions of this factory currently holding a connection slot.
        """
        return len(self._sessions)

    def admit(self, session: SMTPServerProtocol) -> tuple[str, str] | None:
        """
        Take a connection slot for C{session}.

        @return: L{None} if admitted, else C{(reason, text)}.
        """
        refusal = self.limits.take(session.clientAddress)
        if refusal is None:
            self._sessions.add(session)
        return refusal

    def release(self, session: SMTPServerProtocol) -> None:
        """
        Give back C{session}'s slot (if it had one).
        """
        if session in self._sessions:
            self._sessions.discard(session)
            self.limits.give(session.clientAddress)
        if not self._sessions:
            waiters, self._emptyWaiters = self._emptyWaiters, []
            for d in waiters:
                d.callback(None)

    def drain(self, grace: float = SHUTDOWN_GRACE) -> Deferred:
        """
        Let messages in flight finish, tell everyone else 421, and close.

        Sessions still busy after C{grace} seconds are told 421 and cut off
        (their messages were never acknowledged, so nothing is lost).

        @return: a L{Deferred} that fires when every session is gone.
        """
        if not self._sessions:
            return succeed(None)
        for session in list(self._sessions):
            _shutDownWhenIdle(session)
        allGone: Deferred = Deferred()
        self._emptyWaiters.append(allGone)

        def cutOff() -> None:
            for session in list(self._sessions):
                _log.warn(
                    "Cutting off {client}: still busy at shutdown", client=session.clientAddress
                )
                session.cutOff()

        timer = self.clock.callLater(grace, cutOff)

        def cancelTimer(result: object) -> object:
            if timer.active():
                timer.cancel()
            return result

        return allGone.addBoth(cancelTimer)


def _shutDownWhenIdle(session: SMTPServerProtocol) -> None:
    """
    Tell C{session} 421 and close it once it has no message in flight.
    """

    def idle(_: object) -> None:
        session.shutDown()

    session.whenIdle().addCallback(idle)


class SMTPService(MultiService):
    """
    The SMTP listener and its sessions as one service: stopping it stops
    listening first, then drains the sessions.

    @param listener: the service that owns the listening port (e.g. a
        L{twisted.application.internet.StreamServerEndpointService}).
    """

    def __init__(
        self, listener: IService, factory: SMTPFactory, grace: float = SHUTDOWN_GRACE
    ) -> None:
        MultiService.__init__(self)
        self.factory = factory
        self.listener = listener
        self.grace = grace
        listener.setServiceParent(self)

    @property
    def listening(self) -> bool:
        """
        Whether the SMTP port is bound.
        """
        return self.factory.listening

    def stopService(self) -> Deferred:
        """
        Stop listening, then wait for the sessions to drain.
        """
        d = MultiService.stopService(self)
        d.addCallback(lambda _: self.factory.drain(self.grace))
        return d


def makeSMTPFactory(
    settings: Settings,
    spool: Any,
    audit: IAuditLog,
    resolver: Any,
    clock: IReactorTime,
    contextFactory: Any,
    role: ListenerRole = SMTP,
    limits: ConnectionLimits | None = None,
    policies: Sequence[IPolicy] | None = None,
    runInThread: Callable[..., Deferred] | None = None,
    auth: Any = None,
    extraPolicies: Sequence[IPolicy] = (),
) -> SMTPFactory:
    """
    The SMTP factory of one listener role as wired in production: the
    role's policy chain (the allow-list portal first) and a
    L{SpoolDelivery} into C{spool}.

    For the C{submissions} role, the caller wraps the factory in
    C{TLSMemoryBIOFactory(contextFactory, False, factory)}: sessions then
    start with the handshake (no STARTTLS), and the banner follows it.

    @param limits: the connection slots shared by every role's factory
        (default: a new set from C{settings}).
    @param policies: the chain's policies (default: L{policiesFor} the
        role, with the allow-list portal on C{resolver}).
    @param runInThread: C{runInThread(f) -> Deferred}, where policies read
        a spilled message body (default: the reactor's thread pool when
        C{clock} has one, else at once).
    @param auth: the L{gopherpost.auth.service.AuthService} (AUTH, its
        policies, its password checker on the role's portal), or L{None}.
    @param extraPolicies: policies that follow the role's own on the chain
        (the MX checks, the content filters), in order.
    """
    from gopherpost.inbound.access import makePortal
    from gopherpost.inbound.delivery import SpoolDelivery
    from gopherpost.inbound.policies import policiesFor

    portal = makePortal(settings.allowNetworks, settings.allowHosts, resolver)
    if auth is not None:
        auth.extendPortal(portal)
    if policies is None:
        policies = policiesFor(role, settings, portal, auth)
    if runInThread is None and hasattr(clock, "getThreadPool"):

        def runInThread(f: Callable[..., Any], *args: Any) -> Deferred:
            return deferToThreadPool(clock, clock.getThreadPool(), f, *args)  # type: ignore[arg-type]

    sink = SpoolDelivery(spool, settings.hostname, settings.isLocalDomain, audit, runInThread)
    return SMTPFactory(
        settings,
        PolicyChain([*policies, *extraPolicies]),
        sink,
        audit,
        clock,
        contextFactory,
        role,
        limits,
        auth=auth,
        portal=portal,
    )
