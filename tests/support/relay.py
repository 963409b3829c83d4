"""
Support for relay tests: real sockets and threads with time from a
L{Clock}, and a relay queue wired to a loopback DNS server.
"""

from __future__ import annotations

import os
from typing import Any

from twisted.internet import reactor as globalReactor
from twisted.internet.defer import Deferred
from twisted.internet.task import Clock, deferLater

from gopherpost.dns import Resolver
from gopherpost.relay.courier import Courier
from gopherpost.relay.mx import destinationResolverFromSettings
from gopherpost.relay.queue import RelayQueue
from gopherpost.spool import Spool
from tests.support.inbound import RecordingAudit, testSettings

__all__ = ["SteppedReactor", "RelayHarness", "eventually", "startRemoteDomain"]


class SteppedReactor:
    """
    The real reactor for sockets and threads, a L{Clock} for time: tests
    advance the clock to run retries and expiries at once.
    """

    def __init__(self, clock: Clock, real: Any = globalReactor) -> None:
        self.clock = clock
        self._real = real

    def seconds(self) -> float:
        return self.clock.seconds()

    def callLater(self, delay: float, f: Any, *args: Any, **kw: Any) -> Any:
        # Work due now runs on the real reactor; later work waits for the
        # test to advance the clock.
        if delay <= 0:
            return self._real.callLater(0, f, *args, **kw)
        return self.clock.callLater(delay, f, *args, **kw)

    def getDelayedCalls(self) -> list[Any]:
        return list(self.clock.getDelayedCalls())

    def __getattr__(self, name: str) -> Any:
        return getattr(self._real, name)


def eventually(condition, timeout: float = 20.0, interval: float = 0.02) -> Deferred:
    """
    Fire when C{condition()} is true, checking every C{interval} seconds of
    real time, or fail after C{timeout} (real peers answer when they answer).
    """
    deadline = globalReactor.seconds() + timeout

    def check(_=None):
        if condition():
            return None
        if globalReactor.seconds() > deadline:
            raise AssertionError("condition not met in time")
        return deferLater(globalReactor, interval, lambda: None).addCallback(check)

    return check()


class RelayHarness:
    """
    A spool and a relay queue on a stepped reactor, resolving through the
    given loopback DNS server and delivering to port C{outboundPort}.
    """

    def __init__(self, testCase: Any, dnsServer: Any, outboundPort: int, **overrides: Any) -> None:
        self.testCase = testCase
        self.clock = Clock()
        self.clock.advance(1795000000)
        self.reactor = SteppedReactor(self.clock)
        self.path = os.path.abspath(testCase.mktemp())
        options = dict(
            dnsServers=(dnsServer.address,), outboundPort=outboundPort, outboundTLS="may"
        )
        options.update(overrides)
        self.settings = testSettings(self.path, **options)
        self.spool = Spool(self.path, self.reactor)  # type: ignore[arg-type]
        self.spool.open()
        self.audit = RecordingAudit()
        self.resolver = Resolver(self.settings.dnsServers, globalReactor)
        self.queue: RelayQueue | None = None

    def courier(self, **kwargs: Any) -> Courier:
        """
        A courier as the server builds it, for this harness's DNS server and
        receiving port.

        @param kwargs: more arguments for L{Courier} (C{contextFactoryFor},
            C{startDelivery}).
        """
        destinations = destinationResolverFromSettings(self.settings, self.resolver)
        return Courier(
            self.reactor,
            destinations,
            heloName=self.settings.hostname,
            tlsPolicy=self.settings.outboundTLS,
            timeoutScale=self.settings.outboundTimeoutScale,
            **kwargs,
        )

    def startQueue(
        self, courier: Any = None, contextFactoryFor: Any = None, **kwargs: Any
    ) -> RelayQueue:
        """
        A new queue on the same spool, started (as at a restart).

        @param courier: the queue's courier (default L{courier}).
        @param contextFactoryFor: passed to the default courier.
        @param kwargs: more arguments for L{RelayQueue} (C{signer},
            C{runInThread}).
        """
        if courier is None:
            options = {} if contextFactoryFor is None else {"contextFactoryFor": contextFactoryFor}
            courier = self.courier(**options)
        self.queue = RelayQueue(
            self.settings, self.spool, self.audit, courier, self.reactor, **kwargs
        )
        self.queue.startService()
        self.spool.addObserver(self.queue)
        self.testCase.addCleanup(self._stop, self.queue)
        return self.queue

    def _stop(self, queue: RelayQueue) -> Deferred[None] | None:
        self.spool.removeObserver(queue)
        if queue.running:
            return queue.stopService()
        return None

    def spoolMessage(
        self,
        recipients,
        sender: str = "alice@gopherpost.test",
        content: bytes = b"From: alice@gopherpost.test\r\nTo: bob@example.test\r\nSubject: relay test\r\n\r\nHello.\r\n",
    ) -> Deferred:
        """
        Store a message (the spool tells the queue); fires with its envelope.
        """
        pairs = [(r, self.settings.isLocalDomain(r.rpartition("@")[2])) for r in recipients]
        return self.spool.store(content, sender, pairs)

    def state(self, envelope) -> Any:
        """
        The relay state saved for C{envelope}, or an empty one before the
        first save.
        """
        from gopherpost.relay.state import MessageState, StateStore

        saved = StateStore(self.path).load(envelope.dateDirectory, envelope.queueId)
        if saved is None:
            return MessageState(envelope.queueId, envelope.dateDirectory, 0, "", [], "")
        return saved

    def settled(self, envelope, attempts: int = 1) -> bool:
        """
        Whether C{envelope}'s first recipient was tried C{attempts} times
        and nothing is in flight.
        """
        state = self.state(envelope)
        return bool(
            state.recipients
            and state.recipients[0].attempts >= attempts
            and self.queue is not None
            and not self.queue.busy
        )

    def bounces(self) -> list[Any]:
        """
        Envelopes of messages from the null sender (our DSNs).
        """
        return [e for e in self.spool.envelopes() if e.sender == ""]


def startRemoteDomain(testCase: Any) -> Any:
    """
    A loopback DNS server whose zone gives C{example.test} the MX
    C{mx.example.test} (127.0.0.2), and a receiving SMTP server there; both
    stopped at cleanup.

    @return: C{(dnsServer, receiver)}.
    """
    from tests.support.dnsserver import DNSTestServer
    from tests.support.smtpserver import SMTPTestServer

    dns = DNSTestServer(globalReactor)
    dns.start()
    testCase.addCleanup(dns.stop)
    dns.addMX("example.test", 10, "mx.example.test")
    dns.addA("mx.example.test", "127.0.0.2")
    receiver = SMTPTestServer(globalReactor).start("127.0.0.2")
    testCase.addCleanup(receiver.stop)
    return dns, receiver
