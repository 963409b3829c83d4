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
    Commit a message to the spool (its observers are told).
    """
    return spool.store(raw, sender, list(recipients))


@inlineCallbacks
def startIndex(
    testCase: Any,
    spool: Spool,
    everything: bool = False,
    process: bool = False,
    relayRuns: bool = True,
    retention: Any = None,
):  # type: ignore[no-untyped-def]
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
def waitFor(check: Any, timeout: float = 20.0, interval: float = 0.02):  # type: ignore[no-untyped-def]
    """
    Call C{check()} (which may return a Deferred) until it is true, at most
    C{timeout} seconds; fail with C{AssertionError} after that.
    """
    from twisted.internet.task import deferLater

    waited = 0.0
    while True:
        result = yield check()
        if result:
            return result
        if waited >= timeout:
            raise AssertionError(f"still not true after {timeout} s: {check!r}")
        yield deferLater(reactor, interval, lambda: None)
        waited += interval
