"""
Per-message commit latency: the time from sending a message's final dot to
reading its 250, as the client sees it.

smtp-source reports no latency, so this client measures it: C{--sessions}
connections at once, each sending C{--messages} messages one after the
other over the same connection (MAIL, RCPT, DATA, the content, the dot;
no pipelining, like smtp-source; RSET-free, one EHLO per connection), with
C{--size}-byte contents of 80-byte lines.  One thread, non-blocking sockets
on a C{selectors} loop, so that timestamps are taken as soon as a reply
arrives, not when a thread gets the GIL.  Prints one JSON object: the
latency percentiles in milliseconds, the messages per second over the
whole run, and any errors.

    python latency.py --port 2525 --sessions 20 --messages 50 --size 1024
"""

from __future__ import annotations

import argparse
import json
import selectors
import socket
import statistics
import sys
import time

__all__ = ["main", "percentile"]


def percentile(sortedValues: list[float], fraction: float) -> float:
    """
    The value below which C{fraction} of C{sortedValues} lie (nearest rank).
    """
    if not sortedValues:
        return float("nan")
    index = max(0, min(len(sortedValues) - 1, round(fraction * len(sortedValues)) - 1))
    return sortedValues[index]


def content(size: int, number: int, sender: str, recipient: str) -> bytes:
    """
    A message of about C{size} bytes: a few headers, then 80-byte lines,
    dot-stuffing never needed.
    """
    head = (
        f"From: <{sender}>\r\nTo: <{recipient}>\r\nSubject: latency {number}\r\n"
        f"Message-ID: <latency.{number}.{time.monotonic_ns()}@bench.test>\r\n\r\n"
    ).encode("ascii")
    line = b"x" * 78 + b"\r\n"
    body = line * max(0, (size - len(head)) // len(line))
    return head + body


class Session:
    """
    One connection's state machine: each reply moves it on.
    """

    def __init__(self, number: int, args: argparse.Namespace, results: dict) -> None:
        self.number = number
        self.args = args
        self.results = results
        self.sent = 0
        self.buffer = b""
        self.state = "greeting"
        self.dotSent = 0.0
        self.dotQueued = False
        self.outgoing = b""
        self.sock = socket.create_connection((args.host, args.port), timeout=args.timeout)
        self.sock.setblocking(False)
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

    def send(self, data: bytes) -> None:
        self.outgoing += data
        self.flush()

    def flush(self) -> bool:
        """
        Send what the socket takes; return whether everything went.  The
        final dot counts as sent when its last byte is in the socket.
        """
        while self.outgoing:
            try:
                n = self.sock.send(self.outgoing)
            except BlockingIOError:
                return False
            self.outgoing = self.outgoing[n:]
        if self.dotQueued:
            self.dotSent = time.perf_counter()
            self.dotQueued = False
        return True

    def replies(self, data: bytes) -> list[bytes]:
        """
        Whole replies (last line of each) received so far.
        """
        self.buffer += data
        done = []
        while b"\r\n" in self.buffer:
            line, self.buffer = self.buffer.split(b"\r\n", 1)
            if len(line) >= 4 and line[3:4] == b"-":
                continue
            done.append(line)
        return done

    def reply(self, line: bytes, now: float) -> bool:
        """
        Act on one reply; return False when the session is over.
        """
        code = line[:3]
        args = self.args
        if self.state == "greeting":
            self.expect(code, b"220", line)
            self.state = "ehlo"
            self.send(b"EHLO latency.bench.test\r\n")
        elif self.state in ("ehlo", "sent"):
            self.expect(code, b"250", line)
            if self.state == "sent":
                self.results["latencies"].append(now - self.dotSent)
                self.sent += 1
            if self.sent >= args.messages:
                self.state = "quit"
                self.send(b"QUIT\r\n")
            else:
                self.state = "mail"
                self.send(f"MAIL FROM:<{args.sender}>\r\n".encode("ascii"))
        elif self.state == "mail":
            self.expect(code, b"250", line)
            self.state = "rcpt"
            self.send(f"RCPT TO:<{args.recipient}>\r\n".encode("ascii"))
        elif self.state == "rcpt":
            self.expect(code, b"250", line)
            self.state = "data"
            self.send(b"DATA\r\n")
        elif self.state == "data":
            self.expect(code, b"354", line)
            self.state = "sent"
            number = self.number * args.messages + self.sent
            self.dotQueued = True
            self.send(content(args.size, number, args.sender, args.recipient) + b".\r\n")
        elif self.state == "quit":
            return False
        return True

    @staticmethod
    def expect(code: bytes, wanted: bytes, line: bytes) -> None:
        if code != wanted:
            raise RuntimeError(line.decode("ascii", "replace")[:200])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--sessions", type=int, default=1)
    parser.add_argument("--messages", type=int, default=100, help="messages per session")
    parser.add_argument("--size", type=int, default=1024, help="bytes per message (about)")
    parser.add_argument("--sender", default="bench@bench.test")
    parser.add_argument("--recipient", default="user@bench.test")
    parser.add_argument("--timeout", type=float, default=120.0, help="seconds for the whole run")
    args = parser.parse_args(argv)
    results: dict = {"latencies": [], "errors": []}
    selector = selectors.DefaultSelector()
    started = time.perf_counter()
    deadline = started + args.timeout
    sessions = {}
    for number in range(args.sessions):
        try:
            session = Session(number, args, results)
        except OSError as e:
            results["errors"].append(f"connect: {e}")
            continue
        sessions[session.sock.fileno()] = session
        selector.register(session.sock, selectors.EVENT_READ, session)
    while sessions and time.perf_counter() < deadline:
        for key, events in selector.select(timeout=1.0):
            session = key.data
            now = time.perf_counter()
            alive = True
            try:
                if events & selectors.EVENT_READ:
                    data = session.sock.recv(65536)
                    if not data:
                        raise RuntimeError("connection closed by the server")
                    alive = all(session.reply(line, now) for line in session.replies(data))
                done = session.flush()
                wanted = selectors.EVENT_READ | (0 if done else selectors.EVENT_WRITE)
                if alive and wanted != key.events:
                    selector.modify(session.sock, wanted, session)
            except (OSError, RuntimeError) as e:
                results["errors"].append(f"session {session.number}: {e}")
                alive = False
            if not alive:
                selector.unregister(session.sock)
                session.sock.close()
                del sessions[key.fd]
    if sessions:
        results["errors"].append(f"{len(sessions)} sessions unfinished after {args.timeout} s")
    elapsed = time.perf_counter() - started
    latencies = sorted(results["latencies"])
    milliseconds = [1000 * x for x in latencies]
    print(
        json.dumps(
            {
                "sessions": args.sessions,
                "messages": len(latencies),
                "size": args.size,
                "seconds": round(elapsed, 3),
                "msgs_per_s": round(len(latencies) / elapsed, 1) if elapsed else None,
                "p50_ms": round(percentile(milliseconds, 0.50), 3),
                "p90_ms": round(percentile(milliseconds, 0.90), 3),
                "p99_ms": round(percentile(milliseconds, 0.99), 3),
                "max_ms": round(milliseconds[-1], 3) if milliseconds else None,
                "mean_ms": round(statistics.mean(milliseconds), 3) if milliseconds else None,
                "errors": results["errors"][:10],
            }
        )
    )
    return 0 if not results["errors"] else 1


if __name__ == "__main__":
    sys.exit(main())
