# -*- test-case-name: tests.test_acme_service -*-
"""
Certificates from an ACME CA (RFC 8555; Let's Encrypt by default), obtained,
renewed and swapped into new TLS sessions by GopherPost itself.

  - L{makeACMEService}: the production wiring, from the settings;
  - L{ACMEService} (L{gopherpost.acme.service}): the renewal schedule, an
    L{ICertificateSource}, C{status()} / C{renew()} for C{gopherpostctl};
  - L{CertificateSwitch} (L{gopherpost.acme.source}): the inbound TLS
    connection creator that serves a source's current certificate;
  - L{gopherpost.acme.client}: the ACME conversation (certbot's C{acme}
    library, in a thread); L{gopherpost.acme.challenge}: the HTTP-01
    listener; L{gopherpost.acme.store}: the files; L{gopherpost.acme.renewal}:
    when to renew.

The ACME library is certbot's C{acme}: kept up by the Let's Encrypt and
certbot maintainers, following the CA's changes (ARI, profiles), and in
Debian bookworm as python3-acme (2.1).  txacme, the Twisted-native one, has
had no release since 2020, is not in Debian and pins old C{acme} releases.
C{acme} is synchronous: GopherPost runs it in one thread of its own, never on
the reactor.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import Any

from twisted.internet.interfaces import IReactorTime
from twisted.internet.threads import deferToThreadPool
from twisted.logger import Logger
from twisted.python.threadpool import ThreadPool

from gopherpost.acme.challenge import ChallengeResponses, ChallengeSite
from gopherpost.acme.client import ACMEClient
from gopherpost.acme.interfaces import ICertificateSource
from gopherpost.acme.service import ACMEService
from gopherpost.acme.source import CertificateSwitch, ServedCertificate, loadServedCertificate
from gopherpost.acme.store import ACMEStore
from gopherpost.config import ConfigError, Settings

__all__ = [
    "ACMEService",
    "CertificateSwitch",
    "ICertificateSource",
    "ServedCertificate",
    "makeACMEService",
]

_log = Logger(namespace="gopherpost.acme")


def _storedCertificate(store: ACMEStore) -> ServedCertificate | None:
    if not store.hasCertificate():
        return None
    try:
        return loadServedCertificate(store.certPath, store.keyPath, "acme")
    except ConfigError as e:
        _log.warn(
            "The kept ACME certificate cannot be served ({problem}): ordering a new one",
            problem=e.problem,
        )
        return None


def makeACMEService(
    settings: Settings,
    stateDirectory: str,
    reactor: Any,
    clock: IReactorTime | None = None,
    random: Callable[[], float] | None = None,
    inherited: Any = None,
) -> ACMEService:
    """
    The ACME service for C{settings} (C{SMTP_ACME_*}), not started.

    Blocks on the disk (the kept files, the self-signed certificate): call
    it at start-up, before the reactor runs.

    Its C{contextFactory} attribute is the L{CertificateSwitch} to give the
    SMTP factories and the implicit-TLS listener in place of the static
    context factory; its C{metrics} is a collector to register with the
    metrics registry; C{readiness()} belongs in C{/readyz}.

    @param stateDirectory: the spool's state directory; ACME keeps its files
        in C{acme/} there, the self-signed certificate is in C{tls/}.
    @param reactor: listens, runs the thread, and is the clock by default.
    @param clock: schedules renewals (default C{reactor}).
    @param random: for the moment inside a CA's renewal window.
    @param inherited: the sockets systemd passed
        (L{gopherpost.listeners.sockets.InheritedSockets}), for a
        C{systemd:} C{SMTP_ACME_CHALLENGE_LISTEN}.
    @raise ConfigError: the state directory cannot be used, or a
        C{systemd:} socket was not passed.
    """
    from gopherpost import tls
    from gopherpost.listeners.proxy import ProxyProtocolFactory
    from gopherpost.listeners.service import ListenerService
    from gopherpost.listeners.sockets import InheritedSockets, listenEndpoint

    store = ACMEStore(os.path.join(stateDirectory, "acme"))
    try:
        store.open()
        certPath, keyPath = tls.ensureSelfSignedCertificate(
            os.path.join(stateDirectory, "tls"), settings.hostname
        )
    except OSError as e:
        raise ConfigError(
            "SMTP_QUEUE_PATH",
            f"ACME cannot keep its files in {stateDirectory!r}: {e.strerror or e}",
        ) from None
    fallback = loadServedCertificate(certPath, keyPath, "self-signed")
    if settings.hostname not in settings.acmeDomains:
        _log.warn(
            "SMTP_HOSTNAME {hostname} is not in SMTP_ACME_DOMAINS: clients that check the "
            "certificate against it will refuse it",
            hostname=settings.hostname,
        )
    responses = ChallengeResponses()
    client = ACMEClient(
        settings.acmeDirectory,
        store,
        responses,
        email=settings.acmeEmail,
        caFile=settings.acmeDirectoryCA,
    )
    pool = ThreadPool(minthreads=0, maxthreads=1, name="gopherpost-acme")

    def runInThread(f: Callable[..., Any], *args: Any) -> Any:
        return deferToThreadPool(reactor, pool, f, *args)

    service = ACMEService(
        settings.acmeDomains,
        client,
        store,
        fallback,
        clock or reactor,
        runInThread,
        stored=_storedCertificate(store),
        threadPool=pool,
        random=random,
    )
    spec = settings.acmeChallengeListen
    site: Any = ChallengeSite(responses, reactor)
    if spec.proxy:
        site = ProxyProtocolFactory(site, reactor, spec.description)
    endpoint = listenEndpoint(spec, reactor, inherited or InheritedSockets([]))
    listener = ListenerService(spec, endpoint, site)
    listener.setServiceParent(service)
    service.challengeListener = listener
    service.contextFactory = CertificateSwitch(service)
    return service
