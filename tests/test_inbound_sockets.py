"""
The inbound hardening over real loopback sockets, where the split of the
client's bytes into the server's reads matters: each payload is sent in
the split that used to fail (every write made a read of its own: the client
waits until the server has read it), byte by byte, and in one write.  Also
flow control against a client that never reads, TLS handshakes that never
finish (STARTTLS and implicit TLS), implicit TLS with C{smtplib.SMTP_SSL},
and a full disk.
"""

from __future__ import annotations

import os
import smtplib
import socket
import ssl
import time
from typing import Any

from twisted.internet.threads import deferToThread
from twisted.trial.unittest import TestCase

from gopherpost.inbound import session
from gopherpost.inbound.framing import DISCARD_LIMIT
from gopherpost.inbound.roles import SUBMISSIONS
from gopherpost.spool import MessageWriter
from tests.support.inbound import LiveServer

ENVELOPE = (
    b"EHLO c.test\r\nMAIL FROM:<alice@gopherpost.test>\r\nRCPT TO:<bob@gopherpost.test>\r\nDATA\r\n"
)


class Client:
    """
    A blocking client for a thread: writes pieces, each as a read of its
    own on the server, and reads reply lines.
    """

    def __init__(self, server: LiveServer, timeout: float = 30.0) -> None:
        self.server = server
        self.sock = socket.create_connection(("127.0.0.1", server.port), timeout=timeout)
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.buffer = b""
        self.base = server.received
        self.closedBefore = server.closed

    def send(self, *pieces: bytes) -> None:
        for piece in pieces:
            try:
                self.sock.sendall(piece)
            except (BrokenPipeError, ConnectionResetError):
                return
            self.base += len(piece)
            self.server.waitForReceived(self.base, self.closedBefore)

    def replies(self, count: int) -> list[bytes]:
        """
        The next C{count} final reply lines (multi-line replies as their
        last line), or fewer if the server closes.
        """
        lines: list[bytes] = []
        while len(lines) < count:
            while b"\r\n" not in self.buffer:
                data = self.sock.recv(65536)
                if not data:
                    return lines
                self.buffer += data
            line, self.buffer = self.buffer.split(b"\r\n", 1)
            if line[3:4] != b"-":
                lines.append(line)
        return lines

    def closedByServer(self, timeout: float) -> bool:
        """
        Whether the server closes the connection within C{timeout}
        seconds (reading and dropping what it sends).
        """
        deadline = time.monotonic() + timeout
        self.sock.settimeout(0.5)
        while time.monotonic() < deadline:
            try:
                if not self.sock.recv(65536):
                    return True
            except TimeoutError:
                continue
            except ConnectionResetError:
                return True
        return False

    def close(self) -> None:
        self.sock.close()


def splits(payload: bytes, failing: list[bytes]) -> list[list[bytes]]:
    """
    The ways to send C{payload}: the failing split, one write, and (for
    short payloads) byte by byte.
    """
    assert b"".join(failing) == payload
    ways = [failing, [payload]]
    if len(payload) <= 3000:
        ways.append([payload[i : i + 1] for i in range(len(payload))])
    return ways


class SplitTests(TestCase):
    """
    Items 4 and 9 of issue 12 with real reads.
    """

    timeout = 120

    def sendAll(self, payloads: list[tuple[list[bytes], int, Any]], server: LiveServer) -> Any:
        """
        For each C{(pieces, replies, check)}: a new connection sends the
        banner's worth, then the pieces; C{check(lines, client)} judges the
        replies.
        """

        def work() -> None:
            for pieces, count, check in payloads:
                client = Client(server)
                try:
                    self.assertEqual(client.replies(1)[0][:4], b"220 ")
                    client.send(*pieces)
                    check(client.replies(count), client)
                finally:
                    client.close()

        return deferToThread(work)

    def test_finalDotStartsRead(self) -> Any:
        """
        After a body, C{.\\r\\nNOOP\\r\\n} in a read of its own: 250, 250;
        C{DATA\\r\\n} then C{.\\r\\nQUIT\\r\\n}: 354, 250, 221 and the close.
        """
        server = LiveServer(self)
        body = ENVELOPE + b"Subject: x\r\n\r\nbody\r\n"

        def dotThenNoop(lines: list[bytes], client: Client) -> None:
            self.assertTrue(lines[-2].startswith(b"250 2.0.0 Ok: queued as"), lines)
            self.assertEqual(lines[-1], b"250 2.0.0 Ok")

        def emptyThenQuit(lines: list[bytes], client: Client) -> None:
            self.assertEqual(lines[-3][:4], b"354 ")
            self.assertTrue(lines[-2].startswith(b"250 2.0.0 Ok: queued as"), lines)
            self.assertEqual(lines[-1], b"221 2.0.0 Bye")
            self.assertTrue(client.closedByServer(10))

        payload1 = body + b".\r\nNOOP\r\n"
        payload2 = ENVELOPE + b".\r\nQUIT\r\n"
        cases = [(p, 6, dotThenNoop) for p in splits(payload1, [body, b".\r\nNOOP\r\n"])]
        cases += [(p, 7, emptyThenQuit) for p in splits(payload2, [ENVELOPE, b".\r\nQUIT\r\n"])]
        return self.sendAll(cases, server)

    def test_lineLengthsWhateverTheReads(self) -> Any:
        """
        Bare-LF lines over 1,000 octets in all, none over 998, in one read;
        a dot-stuffed 998-octet line whose CR comes in a later read: both
        stored, however split.
        """
        server = LiveServer(self)
        bareLF = b"Subject: x\n\n" + (b"l" * 500 + b"\n") * 4
        stuffed = b"Subject: y\r\n\r\n." + b"s" * 998
        payloads = [
            (ENVELOPE, bareLF + b"\r\n.\r\n"),
            (ENVELOPE, stuffed + b"\r\n.\r\n"),
        ]

        def stored(lines: list[bytes], client: Client) -> None:
            self.assertTrue(lines[-1].startswith(b"250 2.0.0 Ok: queued as"), lines[-1][:100])

        cases = []
        for envelope, content in payloads:
            failing = (
                [envelope, content]
                if content.startswith(b"Subject: x")
                else [
                    envelope,
                    content[: len(stuffed)],
                    content[len(stuffed) :],
                ]
            )
            for pieces in splits(envelope + content, failing):
                cases.append((pieces, 5, stored))

        def check(_: object) -> None:
            files = server.storedFiles()
            self.assertEqual(len(files), len(cases))
            for name in files:
                content = server.read(name)
                self.assertEqual(content.count(b"\n"), content.count(b"\r\n"))

        return self.sendAll(cases, server).addCallback(check)

    def test_longCommandLines(self) -> Any:
        """
        A command line over 16 KiB closes the session (500, 421), in one
        read or split; one of 10 KiB is a 500 and the session goes on.
        """
        server = LiveServer(self)
        huge = b"NOOP " + b"h" * 20000 + b"\r\nNOOP\r\n"
        long = b"NOOP " + b"g" * 10000 + b"\r\nNOOP\r\n"

        def closes(lines: list[bytes], client: Client) -> None:
            self.assertEqual(
                lines,
                [
                    b"500 5.5.2 Error: line too long",
                    b"421 4.7.0 mx.gopherpost.test Error: line too long",
                ],
            )
            self.assertTrue(client.closedByServer(10))

        def goesOn(lines: list[bytes], client: Client) -> None:
            self.assertEqual(lines, [b"500 5.5.2 Error: line too long", b"250 2.0.0 Ok"])

        cases = []
        for pieces in splits(huge, [huge[:DISCARD_LIMIT], huge[DISCARD_LIMIT:]]):
            cases.append((pieces, 2, closes))
        cases.append(([huge[i : i + 700] for i in range(0, len(huge), 700)], 2, closes))
        for pieces in splits(long, [long[:5000], long[5000:]]):
            cases.append((pieces, 2, goesOn))
        return self.sendAll(cases, server)


class FlowControlTests(TestCase):
    """
    Item 2: a client that never reads stops being read.
    """

    timeout = 120

    def test_neverReads(self) -> Any:
        """
        A client pipelines NOOPs without reading until its socket is full:
        the server stops reading long before the client has sent 10 MB;
        when the client reads, every reply arrives, in order.  (The junk
        command limit is lifted to see the flow control alone.)
        """
        self.patch(session, "JUNK_COMMAND_LIMIT", 10**9)
        server = LiveServer(self)

        def work() -> tuple[int, int, int]:
            sock = socket.create_connection(("127.0.0.1", server.port), timeout=30)
            try:
                banner = sock.recv(1024)
                self.assertTrue(banner.startswith(b"220 "))
                sock.setblocking(False)
                command = b"NOOP\r\n"
                chunk = command * 10000
                sent = 0
                quiet = 0.0
                while sent < 10 * 1024 * 1024 and quiet < 2.0:
                    try:
                        # A send may take part of the chunk: go on from
                        # where it stopped, so the stream stays whole
                        # commands (a restart would make "NONOOP").
                        sent += sock.send(chunk[sent % len(command) :])
                        quiet = 0.0
                    except BlockingIOError:
                        time.sleep(0.05)
                        quiet += 0.05
                readByServer = server.received
                sock.setblocking(True)
                sock.settimeout(30)
                expected = (sent // 6) * len(b"250 2.0.0 Ok\r\n")
                received = []
                got = 0
                while got < expected:
                    data = sock.recv(1 << 20)
                    if not data:
                        break
                    received.append(data)
                    got += len(data)
                everything = b"".join(received)
                self.assertEqual(everything.replace(b"250 2.0.0 Ok\r\n", b""), b"")
                return sent, readByServer, got
            finally:
                sock.close()

        def check(result: tuple[int, int, int]) -> None:
            sent, readByServer, got = result
            self.assertLess(sent, 10 * 1024 * 1024, "the client was never blocked")
            self.assertLess(readByServer, sent)
            self.assertEqual(got, (sent // 6) * len(b"250 2.0.0 Ok\r\n"))

        return deferToThread(work).addCallback(check)


class TLSTimeoutTests(TestCase):
    """
    Item 1: unfinished TLS handshakes end after the command timeout.
    """

    timeout = 120

    def silence(self, server: LiveServer, before: list[bytes]) -> Any:
        def work() -> bool:
            client = Client(server)
            try:
                if not server.factory.role.implicitTLS:
                    client.replies(1)
                for piece in before:
                    client.sock.sendall(piece)
                return client.closedByServer(20)
            finally:
                client.close()

        return deferToThread(work).addCallback(self.assertTrue)

    def test_startTLSSilence(self) -> Any:
        """
        STARTTLS, then nothing.
        """
        server = LiveServer(self, tls=True, commandTimeout=2)
        return self.silence(server, [b"EHLO c.test\r\nSTARTTLS\r\n"])

    def test_startTLSPartialHello(self) -> Any:
        """
        STARTTLS, then half a ClientHello.
        """
        server = LiveServer(self, tls=True, commandTimeout=2)
        return self.silence(server, [b"EHLO c.test\r\nSTARTTLS\r\n", b"\x16\x03\x01\x02\x00\x01"])

    def test_implicitTLSSilence(self) -> Any:
        """
        The implicit-TLS listener, and a client that sends nothing, or half
        a ClientHello.
        """
        server = LiveServer(self, role=SUBMISSIONS, commandTimeout=2)
        d = self.silence(server, [])
        return d.addCallback(lambda _: self.silence(server, [b"\x16\x03\x01\x02\x00\x01"]))


class ImplicitTLSTests(TestCase):
    """
    The submissions role: implicit TLS with C{smtplib.SMTP_SSL}.
    """

    timeout = 60

    def test_smtpSSL(self) -> Any:
        """
        The handshake comes first, then the banner; EHLO offers no
        STARTTLS; the message's Received header says ESMTPS and names the
        TLS version and cipher.
        """
        server = LiveServer(self, role=SUBMISSIONS)

        def send() -> tuple[Any, Any, Any]:
            assert server.pki is not None
            context = ssl.create_default_context(cafile=server.pki.ca.certPath)
            with smtplib.SMTP_SSL(timeout=30, context=context) as client:
                # The name the certificate is checked against.
                client._host = "mx.gopherpost.test"  # type: ignore[attr-defined]
                client.connect("127.0.0.1", server.port)
                code, greeting = client.ehlo("client.test")
                startTLS = client.has_extn("starttls")
                refused = client.sendmail(
                    "alice@gopherpost.test", ["bob@gopherpost.test"], b"Subject: ssl\r\n\r\nhi\r\n"
                )
                assert isinstance(client.sock, ssl.SSLSocket)
                return startTLS, refused, client.sock.version()

        def check(result: tuple[Any, Any, Any]) -> None:
            startTLS, refused, version = result
            self.assertFalse(startTLS)
            self.assertEqual(refused, {})
            [name] = server.storedFiles()
            content = server.read(name)
            self.assertIn(b"with ESMTPS id", content)
            self.assertIn(b"(using " + version.encode() + b" with cipher ", content)

        return deferToThread(send).addCallback(check)


class DiskFullTests(TestCase):
    """
    Item 6 through a real client: a large message on a full disk.
    """

    timeout = 60

    def test_noSpace(self) -> Any:
        """
        smtplib sends a 300 KB message whose file cannot be written (no
        space): it is told 452 4.3.1 and can go on; nothing is left in
        C{tmp/}.
        """
        server = LiveServer(self)
        tmp = os.path.join(server.path, "tmp")

        def newWriter() -> MessageWriter:
            path = os.path.join(tmp, "full")
            os.symlink("/dev/full", path)
            return MessageWriter(path)

        server.spool.newWriter = newWriter  # type: ignore[method-assign]

        def send() -> tuple[int, bytes, int]:
            with smtplib.SMTP("127.0.0.1", server.port, timeout=30) as client:
                client.ehlo("client.test")
                client.mail("alice@gopherpost.test")
                client.rcpt("bob@gopherpost.test")
                code, text = client.data(b"Subject: big\r\n\r\n" + (b"q" * 78 + b"\r\n") * 4000)
                noop = client.noop()[0]
                return code, text, noop

        def check(result: tuple[int, bytes, int]) -> None:
            self.assertEqual(result, (452, b"4.3.1 Error: insufficient system storage", 250))
            self.assertEqual(os.listdir(tmp), [])

        return deferToThread(send).addCallback(check)
