# -*- test-case-name: tests.test_metrics -*-
"""
Counters, gauges and histograms of one GopherPost server, fed by the audit
log and read as an expvar-style JSON object (L{Metrics.asJSON}) or in the
Prometheus / OpenMetrics text formats (L{Metrics.exposition}).

Both views come from the same numbers.  Labels only ever carry values from a
small fixed set (unknown values become C{"other"}), so no label can carry an
address or grow without bound.
"""

from __future__ import annotations

import os
import sys
from bisect import bisect_left
from collections.abc import Callable, Iterator, Sequence
from typing import Any

from prometheus_client.core import (
    CollectorRegistry,
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
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


class _Histogram:
    """
    A cumulative histogram with fixed bucket bounds.
    """

    def __init__(self, bounds: Sequence[float]) -> None:
        self.bounds = tuple(bounds)
        self.counts = [0] * (len(self.bounds) + 1)
        self.sum = 0.0
        self.count = 0

    def observe(self, value: float) -> None:
        self.counts[bisect_left(self.bounds, value)] += 1
        self.sum += value
        self.count += 1

    def cumulative(self) -> list[tuple[str, int]]:
        """
        C{[(upperBound, countAtOrBelow), ..., ("+Inf", count)]}.
        """
        result = []
        running = 0
        for bound, count in zip(self.bounds + (float("inf"),), self.counts, strict=True):
            running += count
            result.append(("+Inf" if bound == float("inf") else _boundText(bound), running))
        return result


def _boundText(bound: float) -> str:
    return str(int(bound)) if bound == int(bound) else repr(bound)


def _number(value: object) -> float | None:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    if value != value or value < 0:
        return None
    return float(value)


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


class Metrics:
    """
    The numbers of one server.

    Feed it events with L{eventReceived} (L{Metrics} subscribes itself when
    given an audit log); tell it how to read the relay queue's depth with
    L{setQueueDepthSource}.

    @ivar registry: a private L{CollectorRegistry} holding only this object,
        for L{prometheus_client} exposition.
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

        self.messagesQueued = 0
        self.messagesDelivered = 0
        self.deliveryFailures = 0
        self.deliveryDeferrals = 0
        self.deliveryAttempts = 0
        self.relayQueued = 0
        self.sessionsActive = 0
        self.sessionsTotal = 0
        self.bytesReceived = 0
        self.tlsSessions = 0
        self.sessionsRejected: dict[str, int] = dict.fromkeys(SESSION_REJECT_REASONS + (_OTHER,), 0)
        self.messagesRejected: dict[str, int] = dict.fromkeys(MESSAGE_REJECT_REASONS + (_OTHER,), 0)
        self.mailCommands: dict[str, int] = {"accepted": 0, "refused": 0}
        self.rcptCommands: dict[str, int] = {"accepted": 0, "refused": 0}
        self.messageSize = _Histogram(MESSAGE_SIZE_BUCKETS)
        self.deliveryLatency = _Histogram(DELIVERY_LATENCY_BUCKETS)

        self._handlers: dict[str, Callable[[dict[str, Any]], None]] = {
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

        self.registry = CollectorRegistry(auto_describe=False)
        self.registry.register(self)  # type: ignore[arg-type]

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

    def eventReceived(self, eventDict: dict[str, Any]) -> None:
        """
        Count one audit event (the audit log's subscriber callback).

        @param eventDict: the event; unknown events are ignored.
        """
        handler = self._handlers.get(eventDict.get("event", ""))
        if handler is not None:
            handler(eventDict)

    def _sessionStart(self, e: dict[str, Any]) -> None:
        self.sessionsActive += 1
        self.sessionsTotal += 1

    def _sessionClose(self, e: dict[str, Any]) -> None:
        if self.sessionsActive > 0:
            self.sessionsActive -= 1

    def _sessionReject(self, e: dict[str, Any]) -> None:
        reason = e.get("reason")
        key = reason if reason in SESSION_REJECT_REASONS else _OTHER
        self.sessionsRejected[key] += 1  # type: ignore[index]

    def _mail(self, e: dict[str, Any]) -> None:
        self.mailCommands["accepted" if e.get("accepted") else "refused"] += 1

    def _rcpt(self, e: dict[str, Any]) -> None:
        self.rcptCommands["accepted" if e.get("accepted") else "refused"] += 1

    def _messageQueued(self, e: dict[str, Any]) -> None:
        self.messagesQueued += 1
        size = _number(e.get("size"))
        if size is not None:
            self.bytesReceived += int(size)
            self.messageSize.observe(size)

    def _messageRejected(self, e: dict[str, Any]) -> None:
        reason = e.get("reason")
        key = reason if reason in MESSAGE_REJECT_REASONS else _OTHER
        self.messagesRejected[key] += 1  # type: ignore[index]

    def _tlsEstablished(self, e: dict[str, Any]) -> None:
        self.tlsSessions += 1

    def _deliveryQueued(self, e: dict[str, Any]) -> None:
        self.relayQueued += 1

    def _deliveryAttempt(self, e: dict[str, Any]) -> None:
        self.deliveryAttempts += 1

    def _deliverySuccess(self, e: dict[str, Any]) -> None:
        self.messagesDelivered += 1
        latency = _number(e.get("latency"))
        if latency is not None:
            self.deliveryLatency.observe(latency)

    def _deliveryDeferral(self, e: dict[str, Any]) -> None:
        self.deliveryDeferrals += 1

    def _deliveryFailure(self, e: dict[str, Any]) -> None:
        self.deliveryFailures += 1

    # Reading

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

    def asJSON(self) -> dict[str, Any]:
        """
        Every number as an expvar-style JSON-able object.

        Counters end in C{_total}; counters by label are objects keyed by the
        label's value; histograms are C{{"count", "sum", "buckets"}} with
        cumulative bucket counts keyed by upper bound.  Process facts that
        cannot be read are C{null}.
        """

        def histogram(h: _Histogram) -> dict[str, Any]:
            return {
                "count": h.count,
                "sum": h.sum,
                "buckets": dict(h.cumulative()),
            }

        return {
            "smtp_messages_queued_total": self.messagesQueued,
            "smtp_messages_delivered_total": self.messagesDelivered,
            "smtp_delivery_failures_total": self.deliveryFailures,
            "smtp_delivery_deferrals_total": self.deliveryDeferrals,
            "smtp_delivery_attempts_total": self.deliveryAttempts,
            "smtp_relay_queued_total": self.relayQueued,
            "smtp_queue_depth": self.queueDepth(),
            "smtp_sessions_active": self.sessionsActive,
            "smtp_sessions_total": self.sessionsTotal,
            "smtp_sessions_rejected_total": dict(self.sessionsRejected),
            "smtp_messages_rejected_total": dict(self.messagesRejected),
            "smtp_mail_commands_total": dict(self.mailCommands),
            "smtp_rcpt_commands_total": dict(self.rcptCommands),
            "smtp_received_bytes_total": self.bytesReceived,
            "smtp_tls_sessions_total": self.tlsSessions,
            "smtp_message_size_bytes": histogram(self.messageSize),
            "smtp_delivery_latency_seconds": histogram(self.deliveryLatency),
            "process_start_time_seconds": self._startTime,
            "process_uptime_seconds": self.uptime(),
            "process_resident_memory_bytes": self._process.residentMemory(),
            "process_open_fds": self._process.openFileDescriptors(),
        }

    def collect(self) -> Iterator[Metric]:
        """
        The metric families, for L{prometheus_client}'s registry.
        """
        counters = (
            ("smtp_messages_queued", "Messages accepted and spooled.", self.messagesQueued),
            ("smtp_messages_delivered", "Successful deliveries.", self.messagesDelivered),
            ("smtp_delivery_failures", "Permanent delivery failures.", self.deliveryFailures),
            ("smtp_delivery_deferrals", "Temporary delivery failures.", self.deliveryDeferrals),
            ("smtp_delivery_attempts", "Delivery attempts.", self.deliveryAttempts),
            ("smtp_relay_queued", "Messages handed to the relay queue.", self.relayQueued),
            ("smtp_sessions", "SMTP sessions admitted.", self.sessionsTotal),
            ("smtp_received_bytes", "Bytes of accepted messages.", self.bytesReceived),
            ("smtp_tls_sessions", "STARTTLS handshakes completed.", self.tlsSessions),
        )
        for name, doc, value in counters:
            yield CounterMetricFamily(name, doc, value=value)

        labelled = (
            ("smtp_sessions_rejected", "Connections refused.", "reason", self.sessionsRejected),
            ("smtp_messages_rejected", "Messages refused.", "reason", self.messagesRejected),
            ("smtp_mail_commands", "MAIL FROM commands.", "result", self.mailCommands),
            ("smtp_rcpt_commands", "RCPT TO commands.", "result", self.rcptCommands),
        )
        for name, doc, label, values in labelled:
            family = CounterMetricFamily(name, doc, labels=[label])
            for labelValue, value in values.items():
                family.add_metric([labelValue], value)
            yield family

        yield GaugeMetricFamily(
            "smtp_sessions_active", "SMTP sessions open now.", value=self.sessionsActive
        )
        depth = self.queueDepth()
        if depth is not None:
            yield GaugeMetricFamily(
                "smtp_queue_depth", "Messages waiting in the relay queue.", value=depth
            )

        for name, doc, h in (
            ("smtp_message_size_bytes", "Sizes of accepted messages.", self.messageSize),
            (
                "smtp_delivery_latency_seconds",
                "Time from reception to successful delivery.",
                self.deliveryLatency,
            ),
        ):
            yield HistogramMetricFamily(name, doc, buckets=h.cumulative(), sum_value=h.sum)

        yield GaugeMetricFamily(
            "process_start_time_seconds",
            "Start time of the process since the epoch.",
            value=self._startTime,
        )
        yield GaugeMetricFamily(
            "process_uptime_seconds", "Seconds since the server started.", value=self.uptime()
        )
        rss = self._process.residentMemory()
        if rss is not None:
            yield GaugeMetricFamily(
                "process_resident_memory_bytes", "Resident memory size in bytes.", value=rss
            )
        fds = self._process.openFileDescriptors()
        if fds is not None:
            yield GaugeMetricFamily(
                "process_open_fds", "Number of open file descriptors.", value=fds
            )

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
