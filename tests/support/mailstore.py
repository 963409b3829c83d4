"""
Fixtures for the message index and the web UI: a real spool in a
temporary directory, messages committed to it, and an index service on
top (in-process indexer thread, or the real worker process).
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from email.message import EmailMessage
from typing import Any

from twisted.internet import reactor
from twisted.internet.defer import Deferred, inlineCallbacks
from twisted.internet.task import deferLater

from gopherpost.index.indexer import IndexPolicy
from gopherpost.index.mailbox import Mailbox
from gopherpost.index.service import IndexService, ThreadBackend
from gopherpost.spool import Envelope, Spool

__all__ = ["makeMessage", "openSpool", "startIndex", "storeMessage", "waitFor"]


def makeMessage(
    subject: str = "Hello",
    sender: str = "Alice <alice@client.test>",
    to: str = "bob@gopherpost.test",
    text: str = "Hello, Bob.",
    html: str | None = None,
    attachments: Sequence[tuple[str, str, bytes]] = (),
    headers: dict[str, str] | None = None,
) -> bytes:
    """
    A message built with the email package (CRLF line ends).

    @param attachments: C{(filename, content type, content)} each.
    """
    message = EmailMessage()
    message["From"] = sender
    message["To"] = to
    message["Subject"] = subject
    message["Date"] = "Tue, 01 Dec 2026 10:00:00 +0000"
    message["Message-ID"] = f"<{abs(hash((subject, text))):x}@client.test>"
    for name, value in (headers or {}).items():
        message[name] = value
    message.set_content(text)
    if html is not None:
        message.add_alternative(html, subtype="html")
    for fileName, contentType, content in attachments:
        maintype, subtype = contentType.split("/", 1)
        message.add_attachment(content, maintype=maintype, subtype=subtype, filename=fileName)
    return message.as_bytes(policy=message.policy.clone(linesep="\r\n"))


def openSpool(testCase: Any) -> Spool:
    """
    A fresh, opened spool in a temporary directory (the real reactor).
    """
    spool = Spool(os.path.abspath(testCase.mktemp()), reactor)
    spool.open()
    return spool


def storeMessage(
    spool: Spool,
    raw: bytes,
    sender: str = "alice@client.test",
    recipients: Sequence[tuple[str, bool]] = (("bob@gopherpost.test", True),),
) -> Deferred[Envelope]:
    """
    Commit a message to the spool; the L{Deferred} fires once its observers
    have been told too (the spool tells them after the committer, at the end
    of the same turn of the reactor).
    """
    return spool.store(raw, sender, list(recipients)).addCallback(
        lambda envelope: deferLater(reactor, 0, lambda: envelope)
    )


@inlineCallbacks
def startIndex(
    testCase: Any,
    spool: Spool,
    everything: bool = False,
    process: bool = False,
    relayRuns: bool = True,
    retention: Any = None,
):
    """
    Start an index service (and its mailbox) on C{spool}, observing it;
    stopped at cleanup.  Fires with the L{Mailbox} once the index is ready.
    """
    policy = IndexPolicy(everything=everything)
    backend = None
    if not process:
        backend = ThreadBackend(
            spool, os.path.join(spool.stateDirectory, "index.sqlite3"), policy, reactor
        )
    index = IndexService(spool, reactor, policy, backend=backend)
    mailbox = Mailbox(index, spool, reactor, relayRuns=relayRuns, retention=retention)
    spool.addObserver(index)
    testCase.addCleanup(spool.removeObserver, index)
    index.startService()
    testCase.addCleanup(index.stopService)
    yield index.whenReady()
    return mailbox


@inlineCallbacks
def waitFor(check: Any, timeout: float = 20.0, interval: float = 0.02):
    """
    Call C{check()} (which may return a Deferred) until it is true, at most
    C{timeout} seconds; fail with C{AssertionError} after that.
    """
    waited = 0.0
    while True:
        result = yield check()
        if result:
            return result
        if waited >= timeout:
            raise AssertionError(f"still not true after {timeout} s: {check!r}")
        yield deferLater(reactor, interval, lambda: None)
        waited += interval


class RunningWebUI:
    """
    The message index and the web UI of a spool, on a loopback port, in
    this process (indexer in a thread).

    @ivar url: the base URL, e.g. C{http://127.0.0.1:40123}.
    """

    def __init__(self, spool: Spool, service: Any, settings: Any) -> None:
        self.spool = spool
        self.service = service
        self.settings = settings
        self.mailbox = service.mailbox
        port = service.web.port.getHost().port
        self.port = port
        self.url = f"http://127.0.0.1:{port}"

    @inlineCallbacks
    def request(
        self,
        method: str,
        path: str,
        json: Any = None,
        headers: dict[str, str] | None = None,
        data: bytes | None = None,
        auth: tuple[str, str] | None = None,
    ):
        """
        One HTTP request with a fresh connection; fires with C{(code,
        headers, body)}.
        """
        import json as _json

        import treq
        from twisted.web.client import HTTPConnectionPool

        pool = HTTPConnectionPool(reactor, persistent=False)
        allHeaders = dict(headers or {})
        body = data
        if json is not None:
            body = _json.dumps(json).encode("utf-8")
            allHeaders.setdefault("Content-Type", "application/json")
        response = yield treq.request(
            method,
            self.url + path,
            headers={k: [v] for k, v in allHeaders.items()},  # type: ignore[arg-type]
            data=body,
            pool=pool,
            auth=auth,
        )
        content = yield response.content()
        return response.code, response.headers, content

    @inlineCallbacks
    def getJSON(self, path: str, code: int = 200):
        """
        GET C{path}, check the status, fire with the parsed JSON.
        """
        import json as _json

        status, headers, body = yield self.request("GET", path)
        if status != code:
            raise AssertionError(f"GET {path}: {status} {body!r}")
        return _json.loads(body)


@inlineCallbacks
def startWebUI(testCase: Any, spool: Spool | None = None, **overrides: Any):
    """
    Start the index and the web UI (settings from
    L{tests.support.inbound.testSettings} with C{overrides}); stopped at
    cleanup.  Fires with a L{RunningWebUI} once the index is ready.
    """
    from gopherpost.webui.service import makeWebUIService
    from tests.support.inbound import testSettings

    if spool is None:
        spool = openSpool(testCase)
    overrides.setdefault("webListen", "tcp:0:interface=127.0.0.1")
    settings = testSettings(spool.path, **overrides)
    policy = IndexPolicy(everything=settings.capture or settings.indexRelayed)
    index = IndexService(
        spool,
        reactor,
        policy,
        backend=ThreadBackend(
            spool, os.path.join(spool.stateDirectory, "index.sqlite3"), policy, reactor
        ),
    )
    service = makeWebUIService(settings, spool, reactor, index=index)
    assert service is not None
    testCase.addCleanup(spool.removeObserver, index)
    service.startService()
    testCase.addCleanup(service.stopService)
    yield index.whenReady()
    return RunningWebUI(spool, service, settings)
