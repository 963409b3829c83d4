"""
Stand-ins for the inbound session's objects, in the shapes the content
filters read (L{gopherpost.filters.interfaces}): a session context, a
transaction and a message at the end of data.

They follow the inbound chain's C{SessionContext}, C{Transaction} and
C{IReceivedMessage} (the part filters use), so the policies are tested on
their own; tests.test_filters_inbound runs them in real sessions.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, cast

from twisted.internet.defer import Deferred, succeed
from twisted.logger import ILogObserver, globalLogPublisher
from zope.interface import implementer

from gopherpost.filters.interfaces import IFilterableMessage

__all__ = [
    "FakeContext",
    "FakeMessage",
    "FakeRecipient",
    "FakeTransaction",
    "TLS",
    "message",
    "noTracebacks",
]


@dataclass
class TLS:
    version: str = "TLSv1.3"
    cipher: str = "TLS_AES_256_GCM_SHA384"


@dataclass
class FakeContext:
    clientAddress: str = "192.0.2.10"
    clientPort: int = 40000
    serverName: str = "mx.example.test"
    role: str = "smtp"
    tls: Any = None
    helo: str | None = "client.example.test"
    authenticatedUser: str | None = None
    relayClient: bool = False

    @property
    def mayRelay(self) -> bool:
        return self.relayClient or self.authenticatedUser is not None


@dataclass
class FakeRecipient:
    address: str
    parameters: dict[str, str | None] = field(default_factory=dict)


@dataclass
class FakeSender:
    text: str


@dataclass
class FakeTransaction:
    sender: Any = field(default_factory=lambda: FakeSender("sender@example.test"))
    recipients: list[Any] = field(default_factory=lambda: [FakeRecipient("rcpt@example.test")])
    parameters: dict[str, str | None] = field(default_factory=dict)
    tags: dict[str, Any] = field(default_factory=dict)

    def tag(self, name: str, value: Any = True) -> None:
        self.tags[name] = value


@implementer(IFilterableMessage)
class FakeMessage:
    """
    A message at the end of data: its header section (as it will be
    stored: C{headerSection} is the same) and body in memory.
    """

    def __init__(
        self,
        section: bytes,
        body: bytes,
        queueId: str = "QTEST1",
        deadline: float | None = None,
    ) -> None:
        self.queueId = queueId
        self.fullHeaderSection = section
        self.body = body
        self.deadline = deadline
        self.sectionReplaced = 0
        self.bodyReplaced = 0

    @property
    def headerSection(self) -> bytes:
        return self.fullHeaderSection

    @headerSection.setter
    def headerSection(self, section: bytes) -> None:
        self.fullHeaderSection = section

    def readBody(self) -> Deferred[bytes]:
        return succeed(self.body)

    def replaceFullHeaderSection(self, section: bytes) -> None:
        self.fullHeaderSection = section
        self.sectionReplaced += 1

    def replaceBody(self, body: bytes) -> None:
        self.body = body
        self.bodyReplaced += 1

    @property
    def content(self) -> bytes:
        return self.headerSection + b"\r\n" + self.body


def message(
    body: bytes = b"Hello, a plain message.\r\n", deadline: float | None = None, **fields: str
) -> FakeMessage:
    """
    A small well-formed message (C{deadline}: when the filters must have
    answered).
    """
    section = (
        b"From: Sender <sender@example.test>\r\n"
        b"To: rcpt@example.test\r\n"
        b"Subject: " + fields.get("subject", "Hello").encode() + b"\r\n"
        b"Date: Tue, 01 Dec 2026 12:00:00 +0000\r\n"
        b"Message-ID: <" + fields.get("mid", "test-1").encode() + b"@example.test>\r\n"
        b"MIME-Version: 1.0\r\n"
        b"Content-Type: text/plain; charset=us-ascii\r\n"
    )
    return FakeMessage(section, body, deadline=deadline)


def noTracebacks(testCase: Any) -> list[dict[str, Any]]:
    """
    Capture the log during C{testCase}; at its end, fail if any event
    carries a traceback (a filter's failure must be one line, never one).

    @return: the captured events.
    """
    events: list[dict[str, Any]] = []
    observer = cast(ILogObserver, events.append)
    globalLogPublisher.addObserver(observer)

    def check() -> None:
        globalLogPublisher.removeObserver(observer)
        tracebacks = [e for e in events if "log_failure" in e]
        if tracebacks:
            testCase.fail(f"tracebacks in the log: {tracebacks!r}"[:2000])

    testCase.addCleanup(check)
    return events
