# -*- test-case-name: tests.test_webui_service -*-
"""
The web UI and its API on C{SMTP_WEB_LISTEN}, and the message index behind
them: L{makeWebUIService} builds both from the settings.

The listener is its own (separate from health and metrics, so that
monitoring can reach one and not the other), bound before privileges are
dropped.  Start-up refuses, naming C{SMTP_WEB_LISTEN}, when it cannot bind,
or when it turns out bound to a non-loopback address without
C{SMTP_WEB_AUTH} (the setting was checked before, this checks the socket).
"""

from __future__ import annotations

from importlib import resources
from io import BytesIO
from typing import Any

from twisted.application.service import MultiService, Service
from twisted.internet.defer import Deferred, gatherResults, maybeDeferred
from twisted.internet.endpoints import serverFromString
from twisted.internet.threads import deferToThreadPool
from twisted.logger import Logger
from twisted.python.threadpool import ThreadPool
from twisted.web.resource import IResource
from twisted.web.server import Request, Site

from gopherpost.config import ConfigError, Settings
from gopherpost.index.indexer import IndexPolicy
from gopherpost.index.mailbox import Mailbox
from gopherpost.index.retention import IRetentionPolicy, KeepNewest
from gopherpost.index.service import IndexService
from gopherpost.spool import Spool
from gopherpost.web._service import TrackingFactory
from gopherpost.webui.access import AccessGuard, ScryptChecker
from gopherpost.webui.api import MailpitAPI
from gopherpost.webui.events import EventStreams
from gopherpost.webui.http import Response, RoutedResource, Router
from gopherpost.webui.listen import isLoopbackHost
from gopherpost.webui.send import APIRelease, APISender

__all__ = ["WebUIService", "MailService", "makeWebUIService", "makeWebUIResource"]

_log = Logger(namespace="gopherpost.webui")

_STATIC_TYPES = {
    "index.html": "text/html; charset=utf-8",
    "app.js": "text/javascript; charset=utf-8",
    "app.css": "text/css; charset=utf-8",
    "favicon.svg": "image/svg+xml",
}

#: Seconds an idle HTTP connection stays open.
IDLE_TIMEOUT = 60


def _staticFiles() -> dict[str, bytes]:
    folder = resources.files("gopherpost.webui") / "static"
    return {name: (folder / name).read_bytes() for name in _STATIC_TYPES}


def _staticHandler(files: dict[str, bytes]) -> Any:
    def serve(request: Request, name: str = "index.html") -> Response:
        if name not in files:
            return Response(404, b"404 page not found\n")
        return Response(200, files[name], _STATIC_TYPES[name], {"Cache-Control": "no-cache"})

    return serve


def makeWebUIResource(
    mailbox: Mailbox,
    api: MailpitAPI,
    events: EventStreams,
    checker: Any,
    checkHost: bool,
    clock: Any,
) -> IResource:
    """
    The whole site: the UI's files, the API, the views, the event stream,
    behind the access guard.
    """
    router = Router()
    serve = _staticHandler(_staticFiles())
    router.add("GET", "/", serve)
    router.add("GET", "/static/{name}", serve)
    router.add("GET", "/api/events", events.handle)
    api.routes(router)
    return AccessGuard(RoutedResource(router), checker, checkHost, clock)


class _LimitedRequest(Request):
    """
    A request whose body may be at most C{maxBody} bytes; a larger one is
    discarded as it arrives and answered C{413}.
    """

    maxBody = 1024 * 1024
    _tooLarge = False
    _bodySeen = 0

    def gotLength(self, length: int | None) -> None:
        if length is not None and length > self.maxBody:
            self._tooLarge = True
            self.content = BytesIO()
            return
        super().gotLength(length)

    def handleContentChunk(self, data: bytes) -> None:
        self._bodySeen += len(data)
        if self._tooLarge or self._bodySeen > self.maxBody:
            self._tooLarge = True
            return
        super().handleContentChunk(data)

    def process(self) -> None:
        if not self._tooLarge:
            super().process()
            return
        self.setResponseCode(413)
        self.setHeader(b"Content-Type", b"text/plain; charset=utf-8")
        self.setHeader(b"Connection", b"close")
        self.write(f"413 request body larger than {self.maxBody} bytes\n".encode("ascii"))
        self.finish()


class _Site(Site):
    """
    No access log, no tracebacks, bounded bodies.
    """

    noisy = False
    displayTracebacks = False

    def __init__(self, resource: IResource, reactor: Any, maxBody: int) -> None:
        super().__init__(resource, timeout=IDLE_TIMEOUT, reactor=reactor)
        limited: type[Request] = type("_Request", (_LimitedRequest,), {"maxBody": maxBody})
        self.requestFactory = limited

    def log(self, request: object) -> None:
        pass


class WebUIService(Service):
    """
    Serves the site on one endpoint.

    @ivar port: the listening port, once bound.
    """

    name = "webui"

    def __init__(
        self,
        reactor: Any,
        description: str,
        site: Site,
        events: EventStreams,
        authenticated: bool,
        authPool: ThreadPool | None = None,
    ) -> None:
        self._reactor = reactor
        self.description = description
        self._factory = TrackingFactory(site, "gopherpost.webui")
        self._events = events
        self._authenticated = authenticated
        self._authPool = authPool
        self.port: Any = None

    def privilegedStartService(self) -> None:
        """
        Bind now, while privileges allow it.
        """
        Service.privilegedStartService(self)
        self._listen()

    def startService(self) -> None:
        Service.startService(self)
        if self._authPool is not None:
            self._authPool.start()
        self._listen()

    def _listen(self) -> None:
        if self.port is not None:
            return
        endpoint = serverFromString(self._reactor, self.description)
        d = endpoint.listen(self._factory)
        result: list[Any] = []
        d.addBoth(result.append)
        if not result:
            raise ConfigError("SMTP_WEB_LISTEN", f"{self.description!r} did not bind at once")
        outcome = result[0]
        if not hasattr(outcome, "getHost"):
            error = getattr(outcome, "value", outcome)
            raise ConfigError("SMTP_WEB_LISTEN", f"cannot listen on {self.description!r}: {error}")
        self.port = outcome
        address = outcome.getHost()
        host = getattr(address, "host", None)
        if not self._authenticated and host is not None and not isLoopbackHost(host):
            outcome.stopListening()
            self.port = None
            raise ConfigError(
                "SMTP_WEB_LISTEN",
                f"bound to {host}, not loopback, and SMTP_WEB_AUTH is not set",
            )
        _log.info(
            "Web UI and Mailpit-compatible API on {address}",
            address=f"http://{host}:{address.port}/" if host is not None else self.description,
        )

    def stopService(self) -> Deferred:
        Service.stopService(self)
        self._events.closeAll()
        port, self.port = self.port, None
        waiting = [self._factory.closeAll()]
        if port is not None:
            waiting.append(maybeDeferred(port.stopListening))
        d = gatherResults(waiting)
        if self._authPool is not None:
            pool = self._authPool
            d.addBoth(lambda _: pool.stop())
        return d.addCallback(lambda _: None)


class MailService(MultiService):
    """
    The index and (when configured) the web UI, as one service.

    @ivar index: the L{IndexService} (a spool observer).
    @ivar mailbox: the L{Mailbox}.
    @ivar web: the L{WebUIService}, or L{None} without C{SMTP_WEB_LISTEN}.
    """

    index: IndexService
    mailbox: Mailbox
    web: WebUIService | None = None


def makeWebUIService(
    settings: Settings, spool: Spool, reactor: Any, index: IndexService | None = None
) -> MailService | None:
    """
    The message index and the web UI as configured, or L{None} when neither
    C{SMTP_WEB_LISTEN} nor capture mode asks for them.  The index is added
    as an observer of C{spool}.

    @param index: an index service to use (tests); default: one with the
        indexer in a worker process.
    """
    if not settings.webListen and not settings.capture:
        return None
    service = MailService()
    policy = IndexPolicy(everything=settings.capture or settings.indexRelayed)
    if index is None:
        index = IndexService(spool, reactor, policy)
    index.setServiceParent(service)
    spool.addObserver(index)
    retention: IRetentionPolicy | None = None
    if settings.capture and settings.captureMaxMessages > 0:
        retention = KeepNewest(settings.captureMaxMessages)
    mailbox = Mailbox(index, spool, reactor, relayRuns=not settings.capture, retention=retention)
    service.index, service.mailbox = index, mailbox
    if not settings.webListen:
        return service
    sender = APISender(
        spool, settings.hostname, settings.isLocalDomain, settings.maxMessageSize, reactor
    )
    release = APIRelease(settings.releaseTo, enabled=not settings.capture)
    api = MailpitAPI(mailbox, sender, release, settings.hostname, reactor, settings.capture)
    events = EventStreams(mailbox, reactor)
    pool = None
    checker = None
    if settings.webAuth is not None:
        pool = ThreadPool(minthreads=0, maxthreads=2, name="gopherpost-webui-auth")
        user, hashText = settings.webAuth

        def runInThread(f: Any, *args: Any) -> Deferred:
            return deferToThreadPool(reactor, pool, f, *args)

        checker = ScryptChecker({user: hashText}, runInThread)
    checkHost = settings.webAuth is None and not settings.webListen.startswith("unix:")
    resource = makeWebUIResource(mailbox, api, events, checker, checkHost, reactor)
    # A send request carries the message base64-encoded in JSON.
    maxBody = max(1024 * 1024, settings.maxMessageSize * 2)
    site = _Site(resource, reactor, maxBody)
    web = WebUIService(
        reactor, settings.webListen, site, events, settings.webAuth is not None, pool
    )
    web.setServiceParent(service)
    service.web = web
    return service
