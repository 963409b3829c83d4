"""
Live updates: Server-Sent Events at /api/events.
"""

from __future__ import annotations

import json
from typing import Any

from twisted.internet import reactor
from twisted.internet.defer import Deferred, inlineCallbacks
from twisted.internet.protocol import Protocol
from twisted.internet.task import Clock
from twisted.trial.unittest import TestCase
from twisted.web.client import Agent, HTTPConnectionPool
from twisted.web.http_headers import Headers

from gopherpost.webui.events import KEEPALIVE, EventStreams, formatEvent
from tests.support.mailstore import makeMessage, startWebUI, storeMessage, waitFor


class _Collect(Protocol):
    def __init__(self) -> None:
        self.data = b""
        self.done: Deferred[None] = Deferred()

    def dataReceived(self, data: bytes) -> None:
        self.data += data

    def connectionLost(self, reason: object = None) -> None:
        self.done.callback(None)

    def events(self) -> list[tuple[str, object]]:
        found = []
        for block in self.data.decode("utf-8").split("\n\n"):
            kind, payload = None, None
            for line in block.split("\n"):
                if line.startswith("event: "):
                    kind = line[7:]
                elif line.startswith("data: "):
                    payload = json.loads(line[6:])
            if kind:
                found.append((kind, payload))
        return found


class _FakeRequest:
    """
    Just what a stream uses of a request.
    """

    def __init__(self) -> None:
        self.written: list[bytes] = []
        self.headers: dict[bytes, bytes] = {}
        self.code = None
        self.producer: Any = None
        self.finished: Deferred[None] = Deferred()
        self.transport = None

    def setResponseCode(self, code):
        self.code = code

    def setHeader(self, name, value):
        self.headers[name] = value

    def write(self, data):
        self.written.append(data)

    def registerProducer(self, producer, streaming):
        self.producer = producer

    def unregisterProducer(self):
        self.producer = None

    def notifyFinish(self):
        return self.finished

    def finish(self):
        self.finished.callback(None)


class _FakeMailbox:
    def __init__(self) -> None:
        self.subscribers: list = []

    def subscribe(self, callback):
        self.subscribers.append(callback)
        return lambda: self.subscribers.remove(callback)

    def publish(self, kind, data):
        for callback in list(self.subscribers):
            callback(kind, data)


class StreamUnitTests(TestCase):
    def test_format(self) -> None:
        self.assertEqual(formatEvent("new", {"ID": "x"}), b'event: new\ndata: {"ID":"x"}\n\n')

    def test_streamLifecycle(self) -> None:
        """
        A stream starts with retry and hello, gets events, keep-alives on
        the clock, drops what a paused client misses for one prune, and
        unsubscribes when it ends.
        """
        clock = Clock()
        mailbox = _FakeMailbox()
        streams = EventStreams(mailbox, clock)  # type: ignore[arg-type]
        request = _FakeRequest()
        streams.handle(request)  # type: ignore[arg-type]
        self.assertEqual(request.headers[b"Content-Type"], b"text/event-stream; charset=utf-8")
        self.assertTrue(request.written[0].startswith(b"retry: 2000\n\nevent: hello\n"))
        mailbox.publish("new", {"ID": "1"})
        self.assertEqual(request.written[-1], formatEvent("new", {"ID": "1"}))
        clock.advance(KEEPALIVE)
        self.assertEqual(request.written[-1], b": keep-alive\n\n")
        request.producer.pauseProducing()
        count = len(request.written)
        mailbox.publish("new", {"ID": "2"})
        mailbox.publish("delete", {"ID": "1"})
        clock.advance(KEEPALIVE)
        self.assertEqual(len(request.written), count)
        request.producer.resumeProducing()
        self.assertEqual(request.written[-1], formatEvent("prune", None))
        request.finished.callback(None)
        self.assertEqual(mailbox.subscribers, [])
        self.assertEqual(streams.openStreams, 0)
        self.assertEqual(clock.getDelayedCalls(), [])

    def test_limit(self) -> None:
        streams = EventStreams(_FakeMailbox(), Clock(), maxStreams=1)  # type: ignore[arg-type]
        streams.handle(_FakeRequest())  # type: ignore[arg-type]
        response = streams.handle(_FakeRequest())  # type: ignore[arg-type]
        self.assertEqual(response.code, 503)
        streams.closeAll()
        self.assertEqual(streams.openStreams, 0)


class LiveTests(TestCase):
    @inlineCallbacks
    def test_newMessageEvent(self):
        """
        A message committed while a client listens arrives as a "new" event
        carrying its summary, then "stats".
        """
        web = yield startWebUI(self)
        pool = HTTPConnectionPool(reactor, persistent=False)
        agent = Agent(reactor, pool=pool)
        response = yield agent.request(
            b"GET",
            (web.url + "/api/events").encode("ascii"),
            Headers({b"Accept": [b"text/event-stream"]}),
        )
        self.assertEqual(response.code, 200)
        self.assertEqual(
            response.headers.getRawHeaders(b"Content-Type"), [b"text/event-stream; charset=utf-8"]
        )
        collector = _Collect()
        response.deliverBody(collector)
        envelope = yield storeMessage(web.spool, makeMessage("live one"))

        def arrived():
            return [e for e in collector.events() if e[0] == "new"]

        yield waitFor(lambda: bool(arrived()))
        (kind, summary), *_ = arrived()
        self.assertEqual(summary["ID"], envelope.queueId)
        self.assertEqual(summary["Subject"], "live one")
        yield waitFor(lambda: any(e[0] == "stats" for e in collector.events()))
        yield web.request("DELETE", "/api/v1/messages", json={"IDs": [envelope.queueId]})
        yield waitFor(lambda: ("delete", {"ID": envelope.queueId}) in collector.events())
        yield web.service.web.stopService()
        yield collector.done
        self.assertEqual(web.service.web._events.openStreams, 0)
