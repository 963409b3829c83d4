# -*- test-case-name: tests.test_metrics -*-
"""
Counters, gauges and histograms of one GopherPost server, fed by the audit
log and read as an expvar-style JSON object (L{Metrics.asJSON}) or in the
Prometheus / OpenMetrics text formats (L{Metrics.exposition}).

The numbers live in C{prometheus_client} instruments (L{Counter}, L{Gauge},
L{Histogram}) held by a registry of their own, one per L{Metrics} object,
never the library's global default registry; the values that are read when
scraped (queue depth, uptime, memory, open files) come from custom
collectors.  Both views are read from that registry.

Labels only ever carry values from a small fixed set (unknown values become
C{"other"}), so no label can carry an address or grow without bound.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Callable, Iterable, Iterator
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.exposition import choose_encoder
from twisted.internet.interfaces import IReactorTime
from twisted.logger import Logger

from gopherpost.interfaces import IAuditLog, IAuditSubscription

__all__ = [
    "Metrics",
    "MESSAGE_REJECT_REASONS",
    "SESSION_REJECT_REASONS",
    "MESSAGE_SIZE_BUCKETS",
    "DELIVERY_LATENCY_BUCKETS",
]

_log = Logger()

#: The reasons of C{session.reject} events counted separately.
SESSION_REJECT_REASONS = ("access", "connection-limit", "connection-limit-ip")

#: The reasons of C{message.rejected} events counted separately.
MESSAGE_REJECT_REASONS = ("size", "line-length", "storage", "recipients", "sender")

#: Upper bounds (bytes) of the message size histogram buckets.
MESSAGE_SIZE_BUCKETS: tuple[float, ...] = tuple(
    float(1024 * 4**i) for i in range(9)
)  # 1 KiB .. 64 MiB

#: Upper bounds (seconds) of the delivery latency histogram buckets.
DELIVERY_LATENCY_BUCKETS: tuple[float, ...] = (
    1.0,
    5.0,
    15.0,
    60.0,
    300.0,
    900.0,
    3600.0,
    14400.0,
    86400.0,
    432000.0,
)

_OTHER = "other"
_RESULTS = ("accepted", "refused")

EventDict = dict[str, Any]


def _boundText(bound: float) -> str:
    """
    A bucket bound as the JSON view names it: C{"1024"}, C{"0.5"}, C{"+Inf"}.
    """
    if bound == float("inf"):
        return "+Inf"
    return str(int(bound)) if bound == int(bound) else repr(bound)


def _number(value: object) -> float | None:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    if value != value or value < 0:
        return None
    return float(value)


def _count(value: float) -> int | float:
    """
    A counter's value as JSON shows it: an integer when it is one.
    """
    return int(value) if value == int(value) else value


def _put(tree: dict[str, Any], labels: Iterable[str], value: Any) -> None:
    """
    C{tree[l1][l2]... = value} for the label values C{labels}.
    """
    *path, last = labels
    for label in path:
        tree = tree.setdefault(label, {})
    tree[last] = value


def _emptyHistogram() -> dict[str, Any]:
    return {"count": 0, "sum": 0.0, "buckets": {}}


def _histogramJSON(family: Metric) -> Any:
    histograms: dict[tuple[str, ...], dict[str, Any]] = {}
    for sample in family.samples:
        key = tuple(v for k, v in sample.labels.items() if k != "le")
        h = histograms.setdefault(key, _emptyHistogram())
        if sample.name == family.name + "_bucket":
            h["buckets"][_boundText(float(sample.labels["le"]))] = _count(sample.value)
        elif sample.name == family.name + "_count":
            h["count"] = _count(sample.value)
        elif sample.name == family.name + "_sum":
            h["sum"] = sample.value
    if list(histograms) in ([], [()]):
        return histograms.get((), _emptyHistogram())
    tree: dict[str, Any] = {}
    for key, h in histograms.items():
        _put(tree, key, h)
    return tree


def _familyJSON(family: Metric) -> tuple[str, Any]:
    """
    One metric family as a key and a value of the JSON view.  A family
    without samples is 0 (a counter) or C{null}.
    """
    if family.type == "histogram":
        return family.name, _histogramJSON(family)
    name = family.name + "_total" if family.type == "counter" else family.name
    samples = [s for s in family.samples if s.name == name]
    if not samples:
        return name, 0 if family.type == "counter" else None
    if not samples[0].labels:
        return name, _count(samples[0].value)
    values: dict[str, Any] = {}
    for sample in samples:
        _put(values, sample.labels.values(), _count(sample.value))
    return name, values


class _ProcessFacts:
    """
    Cheap facts about this process, from C{/proc} when there is one.
    """

    def __init__(self, procRoot: str) -> None:
        self._statm = os.path.join(procRoot, "self", "statm")
        self._fdDirs = (os.path.join(procRoot, "self", "fd"), "/dev/fd")
        try:
            self._pageSize = os.sysconf("SC_PAGE_SIZE")
        except (AttributeError, ValueError, OSError):
            self._pageSize = 4096

    def residentMemory(self) -> int | None:
        """
        The resident set size in bytes; without C{/proc}, the peak RSS as
        C{getrusage} reports it; L{None} when neither works.
        """
        try:
            with open(self._statm, "rb") as f:
                return int(f.read().split()[1]) * self._pageSize
        except (OSError, ValueError, IndexError):
            pass
        try:
            import resource
        except ImportError:
            return None
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        return int(peak) if sys.platform == "darwin" else int(peak) * 1024

    def openFileDescriptors(self) -> int | None:
        """
        How many file descriptors are open; L{None} if unknown.
        """
        for path in self._fdDirs:
            try:
                return len(os.listdir(path))
            except OSError:
                continue
        return None


class _ComputedGauges:
    """
    A custom collector: gauges whose values are computed when scraped.
    Those whose value is L{None} (unknown) are left out.
    """

    def __init__(self, gauges: Callable[[], Iterable[tuple[str, str, float | None]]]) -> None:
        """
        @param gauges: returns C{(name, help, value)} for each gauge.
        """
        self._gauges = gauges

    def describe(self) -> Iterator[Metric]:
        """
        The gauges' names, so that the registry refuses duplicates.
        """
        for name, documentation, _ in self._gauges():
            yield GaugeMetricFamily(name, documentation)

    def collect(self) -> Iterator[Metric]:
        """
        The gauges that have a value now.
        """
        for name, documentation, value in self._gauges():
            if value is not None:
                yield GaugeMetricFamily(name, documentation, value=value)


class _WithoutCreatedSeries:
    """
    A view of a registry without the C{*_created} samples that
    C{prometheus_client} adds to counters and histograms: they are not part
    of GopherPost's metrics, and they would read the wall clock instead of
    the injected one.
    """

    _TYPES = frozenset(("counter", "histogram", "summary"))

    def __init__(self, registry: CollectorRegistry) -> None:
        self._registry = registry

    def collect(self) -> Iterator[Metric]:
        """
        The registry's families, C{*_created} samples removed.
        """
        for family in self._registry.collect():
            if family.type not in self._TYPES:
                yield family
                continue
            created = family.name + "_created"
            copy = Metric(family.name, family.documentation, family.type, family.unit)
            copy.samples = [s for s in family.samples if s.name != created]
            yield copy


class Metrics:
    """
    The numbers of one server.

    Feed it events with L{eventReceived} (L{Metrics} subscribes itself when
    given an audit log); tell it how to read the relay queue's depth with
    L{setQueueDepthSource}.

    To add a metric: make the instrument in L{__init__} with
    C{registry=self._instruments} and count it in an event handler (listed
    in C{self._handlers}); both views show it.  Other parts' collectors are
    registered with L{registry} and shown in both views as well.

    @ivar registry: a private L{CollectorRegistry} holding only this
        object's metrics, as they are exposed (for C{prometheus_client}'s
        exposition functions and C{get_sample_value}).
    """

    def __init__(
        self,
        clock: IReactorTime,
        audit: IAuditLog | None = None,
        procRoot: str = "/proc",
    ) -> None:
        """
        @param clock: the reactor; uptime is counted from now.
        @param audit: if given, subscribe to it (see L{stop}).
        @param procRoot: where C{/proc} is (tests point it elsewhere).
        """
        self._clock = clock
        self._startTime = clock.seconds()
        self._process = _ProcessFacts(procRoot)
        self._queueDepthSource: Callable[[], int] | None = None
        self._sessionsOpen = 0

        r = self._instruments = CollectorRegistry(auto_describe=False)
        self._messagesQueued = Counter(
            "smtp_messages_queued", "Messages accepted and spooled.", registry=r
        )
        self._messagesDelivered = Counter(
            "smtp_messages_delivered", "Successful deliveries.", registry=r
        )
        self._deliveryFailures = Counter(
            "smtp_delivery_failures", "Permanent delivery failures.", registry=r
        )
        self._deliveryDeferrals = Counter(
            "smtp_delivery_deferrals", "Temporary delivery failures.", registry=r
        )
        self._deliveryAttempts = Counter("smtp_delivery_attempts", "Delivery attempts.", registry=r)
        self._relayQueued = Counter(
            "smtp_relay_queued", "Messages handed to the relay queue.", registry=r
        )
        self._sessionsTotal = Counter("smtp_sessions", "SMTP sessions admitted.", registry=r)
        self._bytesReceived = Counter(
            "smtp_received_bytes", "Bytes of accepted messages.", registry=r
        )
        self._tlsSessions = Counter(
            "smtp_tls_sessions", "STARTTLS handshakes completed.", registry=r
        )
        self._sessionsRejected = Counter(
            "smtp_sessions_rejected", "Connections refused.", ["reason"], registry=r
        )
        self._messagesRejected = Counter(
            "smtp_messages_rejected", "Messages refused.", ["reason"], registry=r
        )
        self._mailCommands = Counter(
            "smtp_mail_commands", "MAIL FROM commands.", ["result"], registry=r
        )
        self._rcptCommands = Counter(
            "smtp_rcpt_commands", "RCPT TO commands.", ["result"], registry=r
        )
        self._sessionsActive = Gauge("smtp_sessions_active", "SMTP sessions open now.", registry=r)
        # Read when scraped: counting sessions stays an integer addition.
        self._sessionsActive.set_function(lambda: self._sessionsOpen)
        self._computedNames = [
            name for name, _, _ in [*self._queueGauges(), *self._processGauges()]
        ]
        r.register(_ComputedGauges(self._queueGauges))
        self._messageSize = Histogram(
            "smtp_message_size_bytes",
            "Sizes of accepted messages.",
            buckets=MESSAGE_SIZE_BUCKETS,
            registry=r,
        )
        self._deliveryLatency = Histogram(
            "smtp_delivery_latency_seconds",
            "Time from reception to successful delivery.",
            buckets=DELIVERY_LATENCY_BUCKETS,
            registry=r,
        )
        r.register(_ComputedGauges(self._processGauges))

        # Children for every label value, made once: all are exposed from
        # the start (at 0), and counting skips the label lookup.
        self._sessionRejectReasons = {
            reason: self._sessionsRejected.labels(reason)
            for reason in SESSION_REJECT_REASONS + (_OTHER,)
        }
        self._messageRejectReasons = {
            reason: self._messagesRejected.labels(reason)
            for reason in MESSAGE_REJECT_REASONS + (_OTHER,)
        }
        self._mailResults = {result: self._mailCommands.labels(result) for result in _RESULTS}
        self._rcptResults = {result: self._rcptCommands.labels(result) for result in _RESULTS}

        # auto_describe: a collector registered later whose names clash with
        # ours (or with another's) is refused.
        self.registry = CollectorRegistry(auto_describe=True)
        self.registry.register(_WithoutCreatedSeries(r))

        self._handlers: dict[str, Callable[[EventDict], None]] = {
            "session.start": self._sessionStart,
            "session.close": self._sessionClose,
            "session.reject": self._sessionReject,
            "smtp.mail": self._mail,
            "smtp.rcpt": self._rcpt,
            "message.queued": self._messageQueued,
            "message.rejected": self._messageRejected,
            "tls.established": self._tlsEstablished,
            "delivery.queued": self._deliveryQueued,
            "delivery.attempt": self._deliveryAttempt,
            "delivery.success": self._deliverySuccess,
            "delivery.deferral": self._deliveryDeferral,
            "delivery.failure": self._deliveryFailure,
        }

        self._subscription: IAuditSubscription | None = None
        if audit is not None:
            self._subscription = audit.subscribe(self.eventReceived)

    def stop(self) -> None:
        """
        Stop counting events from the audit log given to the constructor.
        """
        if self._subscription is not None:
            self._subscription.cancel()
            self._subscription = None

    def setQueueDepthSource(self, source: Callable[[], int]) -> None:
        """
        @param source: returns how many messages wait in the relay queue;
            called on each read of the metrics.
        """
        self._queueDepthSource = source

    # Events

    def eventReceived(self, eventDict: EventDict) -> None:
        """
        Count one audit event (the audit log's subscriber callback).

        @param eventDict: the event; unknown events are ignored.
        """
        handler = self._handlers.get(eventDict.get("event", ""))
        if handler is not None:
            handler(eventDict)

    def _sessionStart(self, e: EventDict) -> None:
        self._sessionsOpen += 1
        self._sessionsTotal.inc()

    def _sessionClose(self, e: EventDict) -> None:
        if self._sessionsOpen > 0:
            self._sessionsOpen -= 1

    def _sessionReject(self, e: EventDict) -> None:
        reasons = self._sessionRejectReasons
        reasons.get(str(e.get("reason")), reasons[_OTHER]).inc()

    def _mail(self, e: EventDict) -> None:
        self._mailResults["accepted" if e.get("accepted") else "refused"].inc()

    def _rcpt(self, e: EventDict) -> None:
        self._rcptResults["accepted" if e.get("accepted") else "refused"].inc()

    def _messageQueued(self, e: EventDict) -> None:
        self._messagesQueued.inc()
        size = _number(e.get("size"))
        if size is not None:
            self._bytesReceived.inc(int(size))
            self._messageSize.observe(size)

    def _messageRejected(self, e: EventDict) -> None:
        reasons = self._messageRejectReasons
        reasons.get(str(e.get("reason")), reasons[_OTHER]).inc()

    def _tlsEstablished(self, e: EventDict) -> None:
        self._tlsSessions.inc()

    def _deliveryQueued(self, e: EventDict) -> None:
        self._relayQueued.inc()

    def _deliveryAttempt(self, e: EventDict) -> None:
        self._deliveryAttempts.inc()

    def _deliverySuccess(self, e: EventDict) -> None:
        self._messagesDelivered.inc()
        latency = _number(e.get("latency"))
        if latency is not None:
            self._deliveryLatency.observe(latency)

    def _deliveryDeferral(self, e: EventDict) -> None:
        self._deliveryDeferrals.inc()

    def _deliveryFailure(self, e: EventDict) -> None:
        self._deliveryFailures.inc()

    # Computed values

    def queueDepth(self) -> int | None:
        """
        The relay queue's depth: 0 without a source, L{None} if the source
        failed (the failure is logged).
        """
        if self._queueDepthSource is None:
            return 0
        try:
            return int(self._queueDepthSource())
        except Exception:
            _log.failure("Could not read the relay queue depth")
            return None

    def uptime(self) -> float:
        """
        Seconds since this object was made (at server start).
        """
        return max(0.0, self._clock.seconds() - self._startTime)

    def _queueGauges(self) -> Iterator[tuple[str, str, float | None]]:
        yield ("smtp_queue_depth", "Messages waiting in the relay queue.", self.queueDepth())

    def _processGauges(self) -> Iterator[tuple[str, str, float | None]]:
        yield (
            "process_start_time_seconds",
            "Start time of the process since the epoch.",
            self._startTime,
        )
        yield ("process_uptime_seconds", "Seconds since the server started.", self.uptime())
        yield (
            "process_resident_memory_bytes",
            "Resident memory size in bytes.",
            self._process.residentMemory(),
        )
        yield (
            "process_open_fds",
            "Number of open file descriptors.",
            self._process.openFileDescriptors(),
        )

    # Reading

    def asJSON(self) -> dict[str, Any]:
        """
        Every number as an expvar-style JSON-able object: this object's
        metrics, and those of any collector registered with L{registry}
        (e.g. the MX checks').

        Counters end in C{_total}; counters by label are objects keyed by the
        label's value (nested, one level per label); histograms are
        C{{"count", "sum", "buckets"}} with cumulative bucket counts keyed by
        upper bound.  Process facts that cannot be read, and a queue depth
        that cannot, are C{null}.
        """
        result = dict(_familyJSON(family) for family in self.registry.collect())
        for name in self._computedNames:
            result.setdefault(name, None)
        return result

    def exposition(self, accept: str = "") -> tuple[bytes, str]:
        """
        Render the metrics in the Prometheus format C{accept} asks for.

        @param accept: the request's C{Accept} header: OpenMetrics when it
            names C{application/openmetrics-text}, otherwise the Prometheus
            text format.
        @return: the body and its C{Content-Type}.
        """
        encoder, contentType = choose_encoder(accept)
        return encoder(self.registry), contentType
