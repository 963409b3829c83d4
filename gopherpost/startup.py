# -*- test-case-name: tests.test_startup -*-
"""
What the server says when it starts: one line with what it is and does
(L{startupLine}), and a warning for each likely mistake in the
configuration (L{configurationWarnings}): an unknown C{SMTP_*} variable
(with the closest known name), an empty allow-list, the health endpoint on
every interface while the audit stream shows addresses.
"""

from __future__ import annotations

from collections.abc import Sequence

from gopherpost import __version__
from gopherpost.config import Settings, healthAddress
from gopherpost.configsource import ENV_FILE, LoadedEnvironment
from gopherpost.inbound.roles import ListenerRole
from gopherpost.listeners.endpoints import ListenerSpec
from gopherpost.variables import closestName, unknownVariables

__all__ = ["configurationWarnings", "startupLine", "relayMode", "tlsMode"]


def configurationWarnings(loaded: LoadedEnvironment, settings: Settings) -> list[str]:
    """
    One line per likely mistake, in a stable order.
    """
    warnings = list(loaded.problems)
    for name in unknownVariables(loaded.variables):
        line = f"{name}: unknown variable"
        closest = closestName(name)
        if closest is not None:
            line += f"; did you mean {closest}?"
        if loaded.originOf(name) == ENV_FILE:
            line += f" (in the {loaded.describeOrigin(name)})"
        warnings.append(line)
    if not settings.allowNetworks and not settings.allowHosts:
        warnings.append(
            "SMTP_ALLOW_NETWORKS and SMTP_ALLOW_HOSTS are both empty: every client will be "
            "rejected (e.g. SMTP_ALLOW_NETWORKS=127.0.0.1/32,::1/128)"
        )
    if settings.debug and not settings.healthDisable:
        host, port = healthAddress(settings)
        if host in ("", "0.0.0.0", "::"):
            warnings.append(
                f"SMTP_DEBUG=true and the health endpoint listens on every interface "
                f"(port {port}): /audit and /healthz stream mail addresses to anyone who "
                "can reach it; set SMTP_HEALTH_ADDR=127.0.0.1:PORT"
            )
    return warnings


def relayMode(settings: Settings) -> str:
    """
    How mail for other domains leaves: C{"smarthost relay.test:587"} or
    C{"MX (port 25)"}, with the outbound TLS policy.
    """
    if settings.relayHost is not None:
        host, port = settings.relayHost
        where = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
        mode = f"smarthost {where}"
    else:
        mode = f"MX (port {settings.outboundPort})"
    return f"{mode}, outbound TLS {settings.outboundTLS}"


def tlsMode(settings: Settings) -> str:
    """
    Inbound TLS: off, a configured certificate, or a generated one.
    """
    if settings.tlsDisable:
        return "off"
    if settings.tlsCert is not None:
        return f"certificate {settings.tlsCert}"
    return f"self-signed certificate for {settings.hostname}"


def startupLine(
    settings: Settings,
    listeners: Sequence[tuple[ListenerRole, ListenerSpec]],
    spoolPath: str,
) -> str:
    """
    The one line that says what this server is.

    @param spoolPath: the spool's absolute path.
    """
    described = ", ".join(f"{spec.description} ({role.name})" for role, spec in listeners)
    workers = f" in {settings.workers} workers" if settings.workers > 1 else ""
    return (
        f"GopherPost {__version__} started as {settings.hostname}: "
        f"SMTP on {described or 'nothing'}{workers}; spool {spoolPath}; "
        f"relay {relayMode(settings)}; inbound TLS {tlsMode(settings)}"
    )
