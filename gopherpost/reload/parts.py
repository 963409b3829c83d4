# -*- test-case-name: tests.test_reload_parts -*-
"""
The server's parts as live reload sees them: which L{Settings} fields each
reads, and the reloadable ones.

  - L{ListenerFactories}: the factories behind every SMTP listener of one
    process, rebuilt from the new settings and switched in for new
    sessions (banner, host name, local domains, allow-list, relay
    networks, limits, the TLS certificate and key read again from disk);
  - L{ResolverReload}: the DNS servers, for every lookup from then on;
  - L{RelayReload}: the relay queue's settings, its courier and the DKIM
    signer, for a queue that offers C{reconfigure(settings, courier,
    signer)};
  - listeners, the HTTP server, the audit log and the spool's place are
    read once: changing them needs a restart (L{STATIC_PARTS}).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

from twisted.internet.defer import Deferred, maybeDeferred
from twisted.internet.interfaces import IProtocolFactory
from zope.interface import implementer

from gopherpost.config import Settings
from gopherpost.reload.interfaces import IReconfigurable
from gopherpost.reload.switch import SwitchableFactory

__all__ = [
    "LISTENER_FIELDS",
    "HTTP_FIELDS",
    "SPOOL_FIELDS",
    "INBOUND_FIELDS",
    "MXCHECK_FIELDS",
    "DNS_FIELDS",
    "RELAY_FIELDS",
    "RETENTION_FIELDS",
    "STATIC_PARTS",
    "ListenerFactories",
    "ResolverReload",
    "RelayReload",
    "WorkerReload",
    "SwitchableResolver",
]

#: Read when the listeners are bound.
LISTENER_FIELDS = frozenset(
    ("port", "listenAddress", "listen", "submissionListen", "submissionsListen", "workers")
)
#: Read when the HTTP server and the audit log are built.
HTTP_FIELDS = frozenset(("healthAddr", "healthPort", "healthDisable", "debug"))
#: Where the spool is.
SPOOL_FIELDS = frozenset(("queuePath",))
#: Read by the SMTP factories and the sessions they start (the inbound
#: rewrite's C{minDataRate} included).
INBOUND_FIELDS = frozenset(
    (
        "hostname",
        "banner",
        "allowNetworks",
        "allowHosts",
        "requireLocalDomain",
        "localDomains",
        "relayNetworks",
        "maxMessageSize",
        "maxRecipients",
        "commandTimeout",
        "maxConnections",
        "maxConnectionsPerIP",
        "minDataRate",
        "tlsDisable",
        "tlsCert",
        "tlsKey",
    )
)
#: Read by the MX checks (issue 16) once: their policies on the inbound
#: chain keep their state stores, thread pools and counters for the
#: process's life, in the main process and in each worker.
MXCHECK_FIELDS = frozenset(
    (
        "senderAuth",
        "spfReject",
        "dmarcEnforce",
        "arcTrustedSealers",
        "dnsblZones",
        "rateConnections",
        "rateMessages",
        "rateRecipients",
        "rateUserMessages",
        "greylist",
        "greylistDelay",
        "greylistAutoWhitelist",
        "banThreshold",
        "banWindow",
        "banDuration",
        "banMaxDuration",
        "redisURL",
        "redisPrefix",
    )
)
#: Read by the resolver.
DNS_FIELDS = frozenset(("dnsServers",))
#: Read by the relay queue, its courier and the DKIM signer.
RELAY_FIELDS = frozenset(
    (
        "hostname",
        "localDomains",
        "relayHost",
        "outboundPort",
        "outboundTLS",
        "outboundTimeoutScale",
        "retryInitial",
        "retryMax",
        "queueLifetime",
        "delayWarning",  # esmtp (issue 19): NOTIFY=DELAY warnings
        "queueWorkers",
        "destinationConcurrency",
        "dkimSelector",
        "dkimKeyPath",
        "dkimPrivateKey",
        "dkimDomain",
    )
)
#: Read by the retention service.
RETENTION_FIELDS = frozenset(("keepDelivered", "retentionDays", "retentionMaxMessages"))

#: Read by the webhooks' service (issue 18), once.
WEBHOOK_FIELDS = frozenset(
    (
        "webhookURL",
        "webhookSecret",
        "webhookScope",
        "webhookMaxInline",
        "webhookRaw",
        "webhookTimeout",
        "webhookRetryInitial",
        "webhookRetryMax",
        "webhookLifetime",
        "webhookConcurrency",
        "eventsWebhookURL",
        "eventsWebhookSecret",
    )
)
#: Read by the content filters (issue 21), once.
FILTER_FIELDS = frozenset(
    (
        "rspamdURL",
        "rspamdScope",
        "rspamdTimeout",
        "filterFail",
        "spamd",
        "spamdScope",
        "spamdTimeout",
        "spamdMaxSize",
        "spamRejectScore",
        "milters",
    )
)
#: Read by the web UI, the message index and capture mode (issue 17), once.
WEB_UI_FIELDS = frozenset(
    ("webListen", "webAuth", "capture", "captureMaxMessages", "indexRelayed", "releaseTo")
)
#: Read by the ACME service (issue 22), once.
ACME_FIELDS = frozenset(
    (
        "acmeDomains",
        "acmeEmail",
        "acmeDirectory",
        "acmeAgreeTOS",
        "acmeChallengeListen",
        "acmeDirectoryCA",
    )
)
#: Read by outbound transport security (issue 19: MTA-STS, DANE, TLS
#: reports), once.
TLSPOLICY_FIELDS = frozenset(("mtaSts", "mtaStsPort", "dane", "tlsrpt"))

#: The parts that read their settings once: (name, fields).
STATIC_PARTS: tuple[tuple[str, frozenset[str]], ...] = (
    ("listeners", LISTENER_FIELDS),
    ("HTTP server and audit log", HTTP_FIELDS),
    ("spool", SPOOL_FIELDS),
    ("webhooks", WEBHOOK_FIELDS),
    ("content filters", FILTER_FIELDS),
    ("web UI and capture mode", WEB_UI_FIELDS),
    ("ACME", ACME_FIELDS),
    ("outbound transport security", TLSPOLICY_FIELDS),
    ("MX checks", MXCHECK_FIELDS),
)

#: What one generation of factories is: the SMTP factories (each with
#: C{drain} and C{sessionCount}), and each listener's outer factory, in
#: the order of the listeners.
Generation = tuple[Sequence[Any], Sequence[IProtocolFactory]]


@implementer(IReconfigurable)
class ListenerFactories:
    """
    The factories behind the listeners of one process, one generation per
    configuration: new connections get the newest, sessions in progress
    finish with the one they started with.

    @param build: C{build(settings) -> (smtpFactories, listenerFactories)}
        builds a generation (raising L{ConfigError} when, e.g., the TLS
        certificate does not load).
    @param settings: the first configuration.
    @param applyLimits: called with the new settings when a generation is
        switched in, to update the connection limits the generations share.
    @param onChange: called with L{factories} after a switch (the inbound
        service drains those at shutdown).

    @ivar switches: one L{SwitchableFactory} per listener, to listen with.
    @ivar onChange: see C{onChange} above.
    """

    name = "inbound sessions"
    fields = INBOUND_FIELDS

    def __init__(
        self,
        build: Callable[[Settings], Generation],
        settings: Settings,
        applyLimits: Callable[[Settings], None] | None = None,
        onChange: Callable[[list[Any]], None] | None = None,
    ) -> None:
        self._build = build
        self._applyLimits = applyLimits
        self.onChange = onChange
        smtp, outer = build(settings)
        self._current = list(smtp)
        self._retired: list[Any] = []
        self.switches = [SwitchableFactory(f) for f in outer]

    @property
    def factories(self) -> list[Any]:
        """
        The SMTP factories of the current generation, and those of older
        generations that still have sessions.
        """
        self._retired = [f for f in self._retired if f.sessionCount > 0]
        return self._current + self._retired

    @property
    def busySessionCount(self) -> int:
        """
        Sessions with a message in flight, in every generation.
        """
        return sum(switch.busySessionCount for switch in self.switches)

    def prepareReload(self, settings: Settings) -> Callable[[], None]:
        """
        Build the next generation (reading the TLS files again).
        """
        smtp, outer = self._build(settings)
        if len(outer) != len(self.switches):
            raise AssertionError("a reload cannot change the listeners")

        def apply() -> None:
            if self._applyLimits is not None:
                self._applyLimits(settings)
            for switch, factory in zip(self.switches, outer):
                switch.switchTo(factory)
            self._retired += self._current
            self._current = list(smtp)
            if self.onChange is not None:
                self.onChange(self.factories)

        return apply


@implementer(IReconfigurable)
class WorkerReload:
    """
    The inbound side when workers (C{SMTP_WORKERS} > 1) run it: the TLS
    files are checked here, then every worker is told the new variables
    and rebuilds its own factories (see L{ListenerFactories}).

    @param checkTLS: C{checkTLS(settings)} loads the certificate (raising
        L{ConfigError}).
    @param tellWorkers: C{tellWorkers(variables) -> Deferred} sends the
        new configuration to every worker (and to those started later).
    @param variables: returns the variables being applied.
    """

    name = "inbound workers"
    fields = INBOUND_FIELDS

    def __init__(
        self,
        checkTLS: Callable[[Settings], object],
        tellWorkers: Callable[[Mapping[str, str]], Deferred[Any]],
        variables: Callable[[], Mapping[str, str]],
    ) -> None:
        self._checkTLS = checkTLS
        self._tellWorkers = tellWorkers
        self._variables = variables

    def prepareReload(self, settings: Settings) -> Callable[[], Deferred[Any]]:
        """
        Check the certificate; the workers build their own.
        """
        self._checkTLS(settings)
        variables = dict(self._variables())
        return lambda: self._tellWorkers(variables)


class SwitchableResolver:
    """
    The DNS resolver every part holds, switched to a new one when the DNS
    servers change; lookups in progress finish with the old one.

    It provides what L{gopherpost.dns.Resolver} does, by delegation.

    @ivar current: the resolver in use.
    """

    def __init__(self, resolver: Any) -> None:
        self.current = resolver

    @property
    def servers(self) -> Any:
        """
        The DNS servers of the current resolver.
        """
        return self.current.servers

    def lookupMX(self, name: str) -> Deferred[Any]:
        """
        See L{gopherpost.dns.IDNSResolver.lookupMX}.
        """
        return self.current.lookupMX(name)

    def lookupAddresses(self, name: str, *args: Any, **kwargs: Any) -> Deferred[Any]:
        """
        See L{gopherpost.dns.IDNSResolver.lookupAddresses}.
        """
        return self.current.lookupAddresses(name, *args, **kwargs)

    def lookupPTR(self, address: str, *args: Any, **kwargs: Any) -> Deferred[Any]:
        """
        See L{gopherpost.dns.IDNSResolver.lookupPTR}.
        """
        return self.current.lookupPTR(address, *args, **kwargs)

    def lookupTXT(self, name: str) -> Deferred[Any]:
        """
        See L{gopherpost.dns.IDNSResolver.lookupTXT}.
        """
        return self.current.lookupTXT(name)

    def lookupRecords(self, *args: Any, **kwargs: Any) -> Deferred[Any]:
        """
        See L{gopherpost.dns.Resolver.lookupRecords}.
        """
        return self.current.lookupRecords(*args, **kwargs)

    def forwardConfirmedNames(self, address: str, timeout: float | None = None) -> Deferred[Any]:
        """
        See L{gopherpost.dns.IDNSResolver.forwardConfirmedNames}.
        """
        return self.current.forwardConfirmedNames(address, timeout)

    def lookupAuthenticated(self, *args: Any, **kwargs: Any) -> Deferred[Any]:
        """
        See L{gopherpost.dns.Resolver.lookupAuthenticated} (DANE, issue 19).
        """
        return self.current.lookupAuthenticated(*args, **kwargs)


@implementer(IReconfigurable)
class ResolverReload:
    """
    New DNS servers for every lookup from now on.

    @param holder: the L{SwitchableResolver} the parts hold.
    @param makeResolver: C{makeResolver(servers)} builds a resolver.
    """

    name = "DNS resolver"
    fields = DNS_FIELDS

    def __init__(self, holder: SwitchableResolver, makeResolver: Callable[[Any], Any]) -> None:
        self._holder = holder
        self._makeResolver = makeResolver

    def prepareReload(self, settings: Settings) -> Callable[[], None]:
        """
        Build the resolver for the new servers.
        """
        resolver = self._makeResolver(settings.dnsServers)

        def apply() -> None:
            self._holder.current = resolver

        return apply


@implementer(IReconfigurable)
class RelayReload:
    """
    The relay queue's settings (retry schedule, concurrency, queue
    lifetime), a new courier (smarthost or MX, outbound TLS policy,
    timeouts, HELO name) and the DKIM key read again, for a queue with
    C{reconfigure(settings, courier, signer)}.

    @param queue: the relay queue.
    @param buildCourier: C{buildCourier(settings)} makes the courier for
        new delivery attempts, or L{None} if the queue builds its own.
    @param loadSigner: C{loadSigner(settings)} reads the DKIM key (raising
        L{ConfigError}); default L{gopherpost.dkim.loadSigner}.
    """

    name = "relay queue"
    fields = RELAY_FIELDS

    def __init__(
        self,
        queue: Any,
        buildCourier: Callable[[Settings], Any] | None = None,
        loadSigner: Callable[[Settings], Any] | None = None,
    ) -> None:
        if loadSigner is None:
            from gopherpost import dkim

            loadSigner = dkim.loadSigner
        self._queue = queue
        self._buildCourier = buildCourier
        self._loadSigner: Callable[[Settings], Any] = loadSigner

    def prepareReload(self, settings: Settings) -> Callable[[], Deferred[Any]]:
        """
        Read the DKIM key, build the courier.
        """
        signer = self._loadSigner(settings)
        courier = self._buildCourier(settings) if self._buildCourier is not None else None

        def apply() -> Deferred[Any]:
            return maybeDeferred(self._queue.reconfigure, settings, courier=courier, signer=signer)

        return apply
