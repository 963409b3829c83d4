"""
Drive the outbound SMTP client over a L{StringTransport}: the test plays
the server one reply at a time, on a L{MemoryReactorClock}.

    c = Conversation(testCase)
    c.ready()                                   # greeting and EHLO
    c.step("MAIL FROM:<...> SIZE=26", "250 ok") # expect a command, reply
    result = c.result()
"""

from __future__ import annotations

from typing import Any

from twisted.internet.address import IPv4Address
from twisted.internet.error import ConnectionDone
from twisted.internet.testing import MemoryReactorClock, StringTransport
from twisted.python.failure import Failure
from twisted.trial.unittest import SynchronousTestCase

from gopherpost.relay.client import Envelope, deliver, deliverMany, startDelivery
from gopherpost.relay.outcome import DeliveryResult

__all__ = [
    "HOST",
    "ADDRESS",
    "HELO",
    "SENDER",
    "EHLO_REPLY",
    "EHLO_TLS_REPLY",
    "EHLO_PIPELINING_REPLY",
    "DEFAULT_MESSAGE",
    "DEFAULT_SIZE",
    "FakeTLSConnection",
    "ClientTransport",
    "Conversation",
    "statuses",
]

HOST = "mx.example.test"
ADDRESS = "192.0.2.25"
HELO = "gopher.example.test"
SENDER = "alice@gopher.example.test"
EHLO_REPLY = "250-mx.example.test hello\n250-SIZE 1000000\n250-8BITMIME\n250 ENHANCEDSTATUSCODES"
DEFAULT_MESSAGE = b"Subject: test\r\n\r\nHello.\r\n"
DEFAULT_SIZE = len(DEFAULT_MESSAGE)
EHLO_TLS_REPLY = EHLO_REPLY.replace("250-8BITMIME", "250-8BITMIME\n250-STARTTLS")
EHLO_PIPELINING_REPLY = EHLO_REPLY.replace("250-8BITMIME", "250-8BITMIME\n250-PIPELINING")


class FakeTLSConnection:
    """
    What C{transport.getHandle()} returns once TLS is on.
    """

    def get_protocol_version_name(self) -> str:
        return "TLSv1.3"

    def get_cipher_name(self) -> str:
        return "TLS_AES_128_GCM_SHA256"


class ClientTransport(StringTransport):
    """
    A L{StringTransport} that can start TLS (noting the creator), counts
    writes, and can play a full send buffer by pausing its producer.
    """

    def __init__(self) -> None:
        super().__init__(peerAddress=IPv4Address("TCP", ADDRESS, 25))
        self.writes = 0
        self.tlsCreator: object | None = None
        self.pauseAtWrite: int | None = None
        self.aborted = False

    def write(self, data: bytes) -> None:
        super().write(data)
        self.writes += 1
        if self.pauseAtWrite is not None and self.writes >= self.pauseAtWrite and self.producer:
            self.pauseAtWrite = None
            self.producer.pauseProducing()

    def startTLS(self, creator: object) -> None:
        self.tlsCreator = creator

    def getHandle(self) -> FakeTLSConnection:
        if self.tlsCreator is None:
            raise AttributeError("no TLS")
        return FakeTLSConnection()

    def abortConnection(self) -> None:
        self.aborted = True
        super().abortConnection()


class Conversation:
    """
    One delivery attempt with the test playing the server.
    """

    def __init__(
        self,
        testCase: SynchronousTestCase,
        recipients=("bob@example.test",),
        message: bytes = DEFAULT_MESSAGE,
        sender: str = SENDER,
        policy: str = "verify",
        scale: float = 1.0,
        envelopes: list[Envelope] | None = None,
        connect: bool = True,
        onResult=None,
    ) -> None:
        self.testCase = testCase
        self.reactor = MemoryReactorClock()
        self.creator = object()
        self.contextRequests: list = []
        self.contextError: Exception | None = None
        self.transport = ClientTransport()
        self._seen = 0
        self.attempt: Any = None
        self.d: Any
        self.protocol: Any = None
        if onResult is not None:
            self.attempt = startDelivery(
                self.reactor,
                HOST,
                ADDRESS,
                25,
                HELO,
                envelopes if envelopes is not None else [(sender, list(recipients), message)],
                policy,
                scale,
                self.contextFactoryFor,
                onResult,
            )
            self.d = self.attempt.result
        elif envelopes is None:
            self.d = deliver(
                self.reactor,
                HOST,
                ADDRESS,
                25,
                HELO,
                sender,
                list(recipients),
                message,
                policy,
                scale,
                self.contextFactoryFor,
            )
        else:
            self.d = deliverMany(
                self.reactor,
                HOST,
                ADDRESS,
                25,
                HELO,
                envelopes,
                policy,
                scale,
                self.contextFactoryFor,
            )
        if connect:
            self.connect()

    def contextFactoryFor(self, policy: str, host: str) -> object:
        self.contextRequests.append((policy, host))
        if self.contextError is not None:
            raise self.contextError
        return self.creator

    def connect(self) -> None:
        host, port, factory, timeout, bindAddress = self.reactor.tcpClients[0]
        self.protocol = factory.buildProtocol(IPv4Address("TCP", host, port))
        self.protocol.makeConnection(self.transport)

    def written(self) -> bytes:
        """
        The bytes the client wrote since the last call.
        """
        data = self.transport.value()[self._seen :]
        self._seen += len(data)
        return data

    def expect(self, *commands: str) -> None:
        """
        The client's next writes are exactly these command lines.
        """
        expected = "".join(c + "\r\n" for c in commands).encode("utf-8")
        self.testCase.assertEqual(self.written(), expected)

    def reply(self, text: str) -> None:
        """
        The server sends C{text} (LF in it become CRLF).
        """
        self.protocol.dataReceived(text.replace("\n", "\r\n").encode("utf-8") + b"\r\n")

    def step(self, command: str, reply: str) -> None:
        self.expect(command)
        self.reply(reply)

    def ready(self, ehlo: str = EHLO_REPLY) -> None:
        self.reply("220 mx.example.test ESMTP")
        self.step(f"EHLO {HELO}", ehlo)

    def lose(self, reason: Exception | None = None) -> None:
        self.protocol.connectionLost(Failure(reason or ConnectionDone()))

    def result(self):
        """
        Close the connection if the client asked to, and return the result.
        """
        if self.transport.disconnecting and not self.d.called:
            self.lose()
        return self.testCase.successResultOf(self.d)


def statuses(result: DeliveryResult) -> list:
    """
    C{(recipient, status, code)} of each outcome.
    """
    return [(o.recipient, o.status, o.code) for o in result.outcomes]
