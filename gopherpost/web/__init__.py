# -*- test-case-name: tests.test_web -*-
"""
GopherPost's HTTP side: health checks, metrics and the live audit stream.

The tree is::

    /livez     200 OK while the process answers; never streams
    /readyz    200 OK | 503 <reason> (SMTP not listening, spool not
               writable or out of space); never streams
    /healthz   200 OK | 503 <reason>; with SMTP_DEBUG=true, "OK\\n" and then
               a live audit stream for as long as the client stays
    /audit     with SMTP_DEBUG=true, the live audit stream alone (text, or
               server-sent events for Accept: text/event-stream); else 404
    /metrics   expvar-style JSON; Prometheus text or OpenMetrics when the
               Accept header asks for it
    (else)     404

Build it with L{makeWebResource} and serve it with L{makeWebService}.
"""

from __future__ import annotations

from twisted.internet.interfaces import IHostnameResolver, IReactorTCP
from twisted.web.resource import IResource

from gopherpost.config import Settings, healthAddress
from gopherpost.interfaces import IAuditLog
from gopherpost.metrics import Metrics
from gopherpost.web._audit import AuditResource, AuditStreams, auditOff
from gopherpost.web._common import RootResource
from gopherpost.web._health import (
    HealthResource,
    LivenessResource,
    Readiness,
    ReadinessResource,
)
from gopherpost.web._metrics import MetricsResource, wantsPrometheus
from gopherpost.web._service import QuietSite, WebService

__all__ = [
    "AuditResource",
    "AuditStreams",
    "HealthResource",
    "LivenessResource",
    "ReadinessResource",
    "MetricsResource",
    "Readiness",
    "WebService",
    "makeWebResource",
    "makeWebService",
    "wantsPrometheus",
]


def makeWebResource(
    settings: Settings,
    audit: IAuditLog,
    metrics: Metrics,
    readiness: Readiness,
) -> IResource:
    """
    Build the resource tree.

    @param settings: the configuration; C{settings.debug} turns the audit
        stream (C{/audit}, and on C{/healthz}) on.
    @param audit: the audit log to stream.
    @param metrics: the numbers for C{/metrics}.
    @param readiness: returns C{(ready, reason)}, e.g. "SMTP listener bound
        and spool writable".
    @return: the root resource.
    """
    root = RootResource()
    streams = AuditStreams(audit) if settings.debug else None
    root.putChild(b"livez", LivenessResource())
    root.putChild(b"readyz", ReadinessResource(readiness))
    root.putChild(
        b"healthz",
        HealthResource(readiness, audit if settings.debug else None, streams=streams),
    )
    root.putChild(b"audit", auditOff() if streams is None else AuditResource(streams))
    root.putChild(b"metrics", MetricsResource(metrics))
    return root


def makeWebService(
    settings: Settings,
    reactor: IReactorTCP,
    resource: IResource,
    nameResolver: IHostnameResolver | None = None,
) -> WebService | None:
    """
    Build the service that serves C{resource} on C{SMTP_HEALTH_ADDR}.

    An address that cannot be bound is logged as one warning when the
    service starts; the service (and the server) keep running.

    @param settings: the configuration (L{healthAddress}, C{healthDisable}).
    @param reactor: the reactor to listen with.
    @param resource: the root resource (see L{makeWebResource}).
    @param nameResolver: resolves a host name in C{SMTP_HEALTH_ADDR}
        (default: the reactor's).
    @return: the service, or L{None} when C{SMTP_HEALTH_DISABLE=true}.
    """
    if settings.healthDisable:
        return None
    host, port = healthAddress(settings)
    site = QuietSite(resource, reactor=reactor)
    return WebService(reactor, host, port, site, nameResolver)
