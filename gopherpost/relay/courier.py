# -*- test-case-name: tests.test_courier -*-
"""
The courier: takes the messages due for one destination, finds the
destination's hosts (L{gopherpost.relay.mx}), tries them in order within
one attempt's bounds, runs the SMTP client on each connection
(L{gopherpost.relay.client}) and reports every recipient's outcome as soon
as it is known.

With a transport security policy (L{gopherpost.tlspolicy.interfaces.
ITransportSecurity}: DANE, MTA-STS), each destination and each connection
is decided by it: hosts it refuses are not connected to (their recipients
are deferred with its reason), the client runs with its TLS policy and
certificate check, and each delivery carries its C{tls} facts.  Messages
flagged REQUIRETLS (RFC 8689) and messages with C{TLS-Required: No} are
carried apart from the others, one after the other in the same attempt
(their hosts' TLS requirements differ); a REQUIRETLS message that no host
qualified for fails with C{5.7.30}.

The queue (L{gopherpost.relay.queue}) decides what is due and what to do
with the outcomes; the courier only carries.  It sits behind L{ICourier} so
that tests and later transport policies (MTA-STS, DANE) plug in.

One attempt: resolve the destination (a permanent DNS failure fails every
recipient, a temporary one defers them); then, for each host in preference
order, resolve its addresses and connect to at most two of them, at most
L{MAX_CONNECTIONS_PER_ATTEMPT} connections in all.  Each connection carries
every message that still has recipients without a final outcome (only
those recipients).  A recipient is final once a host accepted it (L{SENT})
or refused it permanently (L{FAILED}); a L{DEFERRED} one goes on to the
next host, and its last outcome stands at the end of the attempt.
"""

from __future__ import annotations

from collections.abc import Callable, Generator, Mapping, Sequence
from typing import Any, NamedTuple

from twisted.internet.defer import (
    Deferred,
    gatherResults,
    inlineCallbacks,
    maybeDeferred,
    succeed,
)
from twisted.python.failure import Failure
from zope.interface import Interface, implementer

from gopherpost.dns import PermanentDNSError, TemporaryDNSError
from gopherpost.relay import client
from gopherpost.relay.connectioncache import ConnectionCache
from gopherpost.relay.esmtp import relayEnvelope
from gopherpost.relay.mx import IDestinationResolver
from gopherpost.relay.outcome import DEFERRED, FAILED, DeliveryResult
from gopherpost.relay.session import ContextFactoryFor, StaleConnection
from gopherpost.relay.transaction import Envelope
from gopherpost.tls import clientContextFor
from gopherpost.tlspolicy import requiretls

__all__ = [
    "MAX_CONNECTIONS_PER_ATTEMPT",
    "ADDRESSES_PER_HOST",
    "OutboundMessage",
    "RecipientDelivery",
    "ICourier",
    "IDeliveryListener",
    "Courier",
]

#: Connections tried for one attempt at most (hosts x addresses).
MAX_CONNECTIONS_PER_ATTEMPT = 6
#: Addresses tried per host at most.
ADDRESSES_PER_HOST = 2

#: How a message's connections are secured: as the policies say,
#: REQUIRETLS (RFC 8689), or relaxed by C{TLS-Required: No}.
_USUAL, _REQUIRE_TLS, _RELAXED = "usual", "requiretls", "relaxed"


class OutboundMessage(NamedTuple):
    """
    One message for the courier to carry.

    @ivar queueId: the spool's queue id (for the listener; the courier
        does not look at it).
    @ivar sender: the reverse-path, C{""} for C{<>}.
    @ivar recipients: the recipients to deliver to, all of this destination.
    @ivar content: the message as it goes on the wire (any line ends).
    @ivar esmtp: what the relay needs of the envelope's ESMTP metadata
        (L{gopherpost.esmtp.metadata}: SMTPUTF8, DSN parameters).
    @ivar requireTLS: whether the message was received with REQUIRETLS
        (RFC 8689): it only goes over TLS checked by DANE or MTA-STS to a
        host that advertises REQUIRETLS.
    """

    queueId: str
    sender: str
    recipients: tuple[str, ...]
    content: bytes
    esmtp: Mapping[str, Any] = {}
    requireTLS: bool = False


class RecipientDelivery(NamedTuple):
    """
    One recipient's outcome at one host, or at the DNS: what a delivery log
    line says (C{to=, relay=host[address]:port, delays=, dsn=, status=}).

    @ivar recipient: the address.
    @ivar status: L{SENT}, L{DEFERRED} or L{FAILED}.
    @ivar reply: one line: the remote reply (C{"250 2.0.0 Ok: queued as
        X"}) or the local reason (C{"4.4.3 mx.example.test: timeout"}).
    @ivar dsn: the RFC 3463 status, e.g. C{"2.0.0"}, C{"5.1.1"}.
    @ivar remote: whether C{reply} came from the remote server.
    @ivar host: the host's name; C{""} when no host was tried (the DNS
        failed for the destination or for the host).
    @ivar address: the IP address connected to (C{""}: none).
    @ivar port: the port connected to (C{0}: none).
    @ivar tlsUsed: whether the connection was under TLS.
    @ivar tlsVersion: e.g. C{"TLSv1.3"}, when known.
    @ivar cipher: e.g. C{"TLS_AES_256_GCM_SHA384"}, when known.
    @ivar connectSeconds: time spent before the transaction could start:
        DNS, earlier hosts and connection set-up (greeting, EHLO, STARTTLS);
        C{0} for the later messages of a connection.
    @ivar transferSeconds: time spent in this message's transaction.
    @ivar tls: the transport security facts of the connection
        (L{gopherpost.tlspolicy.policy.TLSFacts}: the policy that applied,
        C{dane}, C{mta-sts}, C{verify}, C{may} or C{none}, whether TLS was
        used and verified); L{None} without a transport security policy or
        when the connection ended before TLS could be negotiated.
    """

    recipient: str
    status: str
    reply: str
    dsn: str
    remote: bool
    host: str = ""
    address: str = ""
    port: int = 0
    tlsUsed: bool = False
    tlsVersion: str | None = None
    cipher: str | None = None
    connectSeconds: float = 0.0
    transferSeconds: float = 0.0
    # esmtp: the host offered DSN (see L{DeliveryResult.dsnOffered}).
    dsnOffered: bool = False
    tls: Any = None
    #: See L{DeliveryResult.connectionUse}.
    connectionUse: int = 1

    @property
    def final(self) -> bool:
        """
        Whether this outcome ends the recipient's delivery (L{SENT} or
        L{FAILED}).
        """
        return self.status != DEFERRED


class IDeliveryListener(Interface):
    """
    Hears how an L{ICourier.deliver} call goes (the queue implements it).
    """

    def attempting(messages: Sequence[OutboundMessage], host: str, address: str, port: int) -> None:
        """
        A connection to C{host} (C{address}, C{port}) is about to be tried
        for C{messages}.
        """

    def settled(message: OutboundMessage, deliveries: Sequence[RecipientDelivery]) -> object:
        """
        Outcomes for some recipients of C{message} are known: called as soon
        as they are (for a message sent, right after the reply to its final
        dot), before the next message of the connection starts.  Record
        them now: a process killed after this call returned does not
        deliver them again.

        A recipient may be reported again by a later host while its
        outcome is L{DEFERRED}; a final outcome is its last report.

        @return: L{None}, or a Deferred the courier waits for before the
            connection carries its next message.
        """


class ICourier(Interface):
    """
    Carries messages to one destination; see the module docstring.
    """

    def destinationKey(domain: str) -> str:
        """
        The destination mail for C{domain} goes to: recipients with equal
        keys can share a connection and count against the same
        per-destination limit.
        """

    def deliver(
        domain: str, messages: Sequence[OutboundMessage], listener: IDeliveryListener
    ) -> Deferred[None]:
        """
        Make one delivery attempt for C{messages}, whose recipients are all
        in C{domain} (or share its destination key), telling C{listener}
        as it goes.

        @return: a Deferred firing with L{None} once the attempt is over.
            Recipients never reported were not tried (the attempt found no
            host to try, or it was stopped).  Cancelling it drops every
            connection at once (the outcomes reported so far stand).
        """

    def stop() -> Deferred[None]:
        """
        Stop every attempt in progress, losing track of nothing delivered:
        no new connection, DNS lookup or message starts; a message whose
        final dot is out waits for its reply, which is reported.

        @return: a Deferred firing once every attempt in progress has ended
            (their L{deliver} Deferreds have fired).
        """


class _Stopping(Exception):
    """
    The attempt was stopped while it waited for the DNS.
    """


StartDelivery = Callable[..., client.DeliveryAttempt]


class _Attempt:
    """
    One L{Courier.deliver} call in progress.

    @ivar ended: fires (never fails) once the attempt is over.
    """

    def __init__(self) -> None:
        self.stopping = False
        self.connection: client.DeliveryAttempt | client.ReusedDelivery | None = None
        self.waiting: Deferred[Any] | None = None
        self.ended: Deferred[None] = Deferred()

    def waitFor(self, d: Deferred[Any]) -> Deferred[Any]:
        """
        C{d}'s result, unless the attempt is stopped first (then
        L{_Stopping}; C{d}'s result is dropped when it comes).
        """
        waiter: Deferred[Any] = Deferred()

        def done(result: object) -> None:
            if waiter.called:
                return None
            if isinstance(result, Failure):
                waiter.errback(result)
            else:
                waiter.callback(result)
            return None

        d.addBoth(done)
        self.waiting = waiter
        return waiter

    def stop(self) -> None:
        self.stopping = True
        if self.waiting is not None and not self.waiting.called:
            self.waiting.errback(_Stopping())
        if self.connection is not None:
            self.connection.stopGracefully()


@implementer(ICourier)
class Courier:
    """
    The courier of L{ICourier}, over the MX walk and the SMTP client.
    """

    def __init__(
        self,
        reactor: Any,
        destinations: IDestinationResolver,
        heloName: str,
        tlsPolicy: str,
        timeoutScale: float = 1.0,
        contextFactoryFor: ContextFactoryFor = clientContextFor,
        startDelivery: StartDelivery = client.startDelivery,
        transportSecurity: Any = None,
        connectionCache: ConnectionCache | None = None,
    ) -> None:
        """
        @param reactor: provides time and TCP.
        @param destinations: finds each destination's hosts and addresses.
        @param heloName: our name in EHLO (C{SMTP_HOSTNAME}).
        @param tlsPolicy: C{SMTP_OUTBOUND_TLS}.
        @param timeoutScale: C{SMTP_OUTBOUND_TIMEOUT_SCALE}.
        @param contextFactoryFor: the TLS context per policy and host.
        @param startDelivery: the SMTP client (L{client.startDelivery}).
        @param transportSecurity: an
            L{gopherpost.tlspolicy.interfaces.ITransportSecurity} deciding
            each destination's and connection's TLS (DANE, MTA-STS); L{None}:
            C{tlsPolicy} and C{contextFactoryFor} for every connection.
        @param connectionCache: keeps connections open between deliveries
            to the same host (see L{gopherpost.relay.connectioncache});
            L{None}: QUIT after each delivery.
        """
        self._reactor = reactor
        self._destinations = destinations
        self._heloName = heloName
        self._tlsPolicy = tlsPolicy
        self._timeoutScale = timeoutScale
        self._contextFactoryFor = contextFactoryFor
        self._startDelivery = startDelivery
        self._security = transportSecurity
        self._cache = connectionCache
        self._attempts: set[_Attempt] = set()

    def destinationKey(self, domain: str) -> str:
        """
        See L{ICourier.destinationKey}.
        """
        return self._destinations.destinationKey(domain)

    def deliver(
        self, domain: str, messages: Sequence[OutboundMessage], listener: IDeliveryListener
    ) -> Deferred[None]:
        """
        See L{ICourier.deliver}.
        """
        attempt = _Attempt()
        self._attempts.add(attempt)

        def ended(result: object) -> object:
            self._attempts.discard(attempt)
            attempt.ended.callback(None)
            return result

        return self._runGroups(domain, messages, listener, attempt).addBoth(ended)

    def stop(self) -> Deferred[None]:
        """
        See L{ICourier.stop}.
        """
        if self._cache is not None:
            self._cache.stop()
        attempts = list(self._attempts)
        for attempt in attempts:
            attempt.stop()
        if not attempts:
            return succeed(None)
        return gatherResults([a.ended for a in attempts]).addCallback(lambda _: None)

    @inlineCallbacks
    def _runGroups(
        self,
        domain: str,
        messages: Sequence[OutboundMessage],
        listener: IDeliveryListener,
        attempt: _Attempt,
    ) -> Generator[Deferred[Any], Any, None]:
        """
        Without transport security, one run for all C{messages}; with it,
        one run per kind of message (as usual, REQUIRETLS, C{TLS-Required:
        No}), in that order.
        """
        if self._security is None:
            yield self._run(domain, messages, listener, attempt)
            return
        groups: dict[str, list[OutboundMessage]] = {}
        for message in messages:
            groups.setdefault(_tlsMode(message), []).append(message)
        for mode in (_USUAL, _REQUIRE_TLS, _RELAXED):
            group = groups.get(mode)
            if group and not attempt.stopping:
                yield self._run(domain, group, listener, attempt, mode)

    @inlineCallbacks
    def _run(
        self,
        domain: str,
        messages: Sequence[OutboundMessage],
        listener: IDeliveryListener,
        attempt: _Attempt,
        mode: str = _USUAL,
    ) -> Generator[Deferred[Any], Any, None]:
        started = self._reactor.seconds()
        # The recipients of each message without a final outcome yet.
        remaining = [list(m.recipients) for m in messages]
        # Each recipient's last (deferred) outcome, for REQUIRETLS.
        last: dict[tuple[int, str], RecipientDelivery] = {}

        def report(index: int, deliveries: list[RecipientDelivery]) -> object:
            unsettled = remaining[index]
            for delivery in deliveries:
                if delivery.status != DEFERRED and delivery.recipient in unsettled:
                    unsettled.remove(delivery.recipient)
                elif mode == _REQUIRE_TLS:
                    last[index, delivery.recipient] = delivery
            return listener.settled(messages[index], deliveries)

        def reportLocal(status: str, reply: str, dsn: str) -> Deferred[Any]:
            seconds = self._reactor.seconds() - started
            reports = []
            for index, unsettled in enumerate(remaining):
                if unsettled:
                    deliveries = [
                        RecipientDelivery(r, status, reply, dsn, False, connectSeconds=seconds)
                        for r in unsettled
                    ]
                    reports.append(maybeDeferred(report, index, deliveries))
            return gatherResults(reports)

        try:
            exchanges = yield attempt.waitFor(self._destinations.resolveDestination(domain))
        except PermanentDNSError as e:
            status = getattr(e, "status", "5.4.4")
            yield reportLocal(FAILED, f"{status} {e}", status)
            return
        except TemporaryDNSError as e:
            status = getattr(e, "status", "4.4.3")
            yield reportLocal(DEFERRED, f"{status} {e}", status)
            return
        except _Stopping:
            return
        destinationTLS: Any = None
        if self._security is not None:
            # The destination's DANE and MTA-STS verdicts (never fails).
            try:
                destinationTLS = yield attempt.waitFor(
                    self._security.forDestination(domain, self._destinations.port)
                )
            except _Stopping:
                return

        connections = 0
        for exchange in exchanges:
            if attempt.stopping or connections >= MAX_CONNECTIONS_PER_ATTEMPT:
                break
            if not any(remaining):
                break
            try:
                addresses = yield attempt.waitFor(
                    self._destinations.resolveHostAddresses(exchange.hostname)
                )
            except (PermanentDNSError, TemporaryDNSError) as e:
                yield reportLocal(DEFERRED, f"4.4.3 {exchange.hostname}: {e}", "4.4.3")
                continue
            except _Stopping:
                return
            for address in addresses[:ADDRESSES_PER_HOST]:
                active = [i for i, unsettled in enumerate(remaining) if unsettled]
                if not active or attempt.stopping or connections >= MAX_CONNECTIONS_PER_ATTEMPT:
                    break
                hostTLS: Any = None
                if destinationTLS is not None:
                    try:
                        hostTLS = yield attempt.waitFor(
                            destinationTLS.forHost(
                                exchange.hostname,
                                requireTLS=mode == _REQUIRE_TLS,
                                relaxed=mode == _RELAXED,
                            )
                        )
                    except _Stopping:
                        return
                    refusal = (
                        requiretls.hostRefusal(hostTLS)
                        if mode == _REQUIRE_TLS
                        else (None if hostTLS.allowed else hostTLS.refusal)
                    )
                    if refusal is not None:
                        # Not this host (DANE, MTA-STS enforce, REQUIRETLS):
                        # its recipients go on to the next one.
                        yield reportLocal(DEFERRED, refusal, refusal.split(" ", 1)[0])
                        break
                connections += 1
                listener.attempting(
                    [messages[i] for i in active],
                    exchange.hostname,
                    address,
                    self._destinations.port,
                )
                envelopes = [
                    relayEnvelope(
                        messages[i].sender,
                        tuple(remaining[i]),
                        messages[i].content,
                        messages[i].esmtp,
                        requireTLS=mode == _REQUIRE_TLS,
                    )
                    for i in active
                ]
                yield self._connect(
                    exchange.hostname,
                    address,
                    envelopes,
                    active,
                    report,
                    started,
                    attempt,
                    hostTLS,
                    mode,
                )
        if mode == _REQUIRE_TLS and not attempt.stopping:
            yield self._failUnqualified(domain, remaining, last, report)

    def _failUnqualified(
        self,
        domain: str,
        remaining: list[list[str]],
        last: dict[tuple[int, str], RecipientDelivery],
        report: Callable[[int, list[RecipientDelivery]], object],
    ) -> Deferred[Any]:
        """
        The end of a REQUIRETLS run: a recipient whose last host did not
        qualify (C{5.7.30}) fails (RFC 8689 4.2.1); one that met other
        trouble (a timeout, a DANE mismatch) stays deferred.
        """
        reports = []
        for index, unsettled in enumerate(remaining):
            failed = []
            for recipient in unsettled:
                delivery = last.get((index, recipient))
                if delivery is not None and delivery.dsn == requiretls.STATUS:
                    reply = requiretls.finalFailure(domain, delivery.reply)
                    failed.append(delivery._replace(status=FAILED, reply=reply))
            if failed:
                reports.append(maybeDeferred(report, index, failed))
        return gatherResults(reports)

    def _connect(
        self,
        host: str,
        address: str,
        envelopes: list[Envelope],
        indices: list[int],
        report: Callable[[int, list[RecipientDelivery]], object],
        started: float,
        attempt: _Attempt,
        hostTLS: Any = None,
        mode: str = _USUAL,
    ) -> Deferred[Any]:
        """
        One connection carrying C{envelopes}, for the messages at
        C{indices}, under C{hostTLS} (an
        L{gopherpost.tlspolicy.interfaces.IHostTLSPolicy}) when given: an
        idle one to the same host taken up again when there is one (see
        L{gopherpost.relay.connectioncache}), else a new one.
        """
        beforeConnection = self._reactor.seconds() - started
        tlsPolicy, contextFactoryFor = self._tlsPolicy, self._contextFactoryFor
        if hostTLS is not None:
            tlsPolicy, contextFactoryFor = hostTLS.clientPolicy, hostTLS.contextFactoryFor

        def onResult(index: int, result: DeliveryResult) -> object:
            # The time before this connection counts for the messages that
            # waited for it to be set up: the first, or all when it failed.
            setup = beforeConnection if index == 0 or result.connectSeconds else 0.0
            deliveries = _deliveries(result, setup)
            if hostTLS is not None:
                deliveries = _withTLSFacts(hostTLS, result, deliveries)
            return report(indices[index], deliveries)

        def finished(result: object) -> object:
            attempt.connection = None
            return result

        cache = self._cache
        key = (host, address, self._destinations.port, tlsPolicy, mode)

        def connect() -> Deferred[Any]:
            extra = {} if cache is None else {"park": cache.parkHook(key)}
            connection = self._startDelivery(
                self._reactor,
                host,
                address,
                self._destinations.port,
                self._heloName,
                envelopes,
                tlsPolicy,
                self._timeoutScale,
                contextFactoryFor,
                onResult,
                **extra,
            )
            attempt.connection = connection
            return connection.result

        if cache is not None:
            reused = cache.take(key, envelopes, onResult)
            if reused is not None:
                attempt.connection = reused

                def stale(failure: Failure) -> Deferred[Any] | None:
                    failure.trap(StaleConnection)
                    if attempt.stopping:
                        return None
                    return connect()

                return reused.result.addErrback(stale).addBoth(finished)
        return connect().addBoth(finished)


def _tlsMode(message: OutboundMessage) -> str:
    """
    Which kind of connection C{message} needs (REQUIRETLS wins over
    C{TLS-Required: No}, RFC 8689 5).
    """
    if message.requireTLS:
        return _REQUIRE_TLS
    if requiretls.tlsRequiredNo(message.content):
        return _RELAXED
    return _USUAL


def _withTLSFacts(
    hostTLS: Any, result: DeliveryResult, deliveries: list[RecipientDelivery]
) -> list[RecipientDelivery]:
    """
    C{deliveries} with the connection's TLS facts, and a clearer reply
    when the connection failed for TLS reasons.  The first result of a
    connection records the session (TLS reports, metrics).
    """
    facts = hostTLS.connectionEnded(result)
    explained = hostTLS.explain(result)
    if explained is None and facts is None:
        return deliveries
    return [
        d._replace(
            tls=facts,
            reply=(
                f"{d.reply.split(' ', 1)[0]} {d.dsn} {explained}"
                if explained is not None and d.status == DEFERRED
                else d.reply
            ),
        )
        for d in deliveries
    ]


def _deliveries(result: DeliveryResult, setupSeconds: float) -> list[RecipientDelivery]:
    """
    The client's result for one message as per-recipient deliveries.

    @param setupSeconds: the attempt's time before this connection, added
        to the connection's own set-up time.
    """
    connectSeconds = result.connectSeconds + setupSeconds
    host, address, port = result.host, result.address, result.port
    tlsUsed, tlsVersion, cipher = result.tlsUsed, result.tlsVersion, result.cipher
    transferSeconds = result.transferSeconds
    dsnOffered = result.dsnOffered
    use = result.connectionUse
    # Positional: this runs for every recipient of every message.
    return [
        RecipientDelivery(
            outcome.recipient,
            outcome.status,
            outcome.line,
            outcome.enhancedCode,
            outcome.remote,
            host,
            address,
            port,
            tlsUsed,
            tlsVersion,
            cipher,
            connectSeconds,
            transferSeconds,
            dsnOffered,
            None,
            use,
        )
        for outcome in result.outcomes
    ]
