"""
Where one message's time goes when a client sends alone: one connection
per message, as C{smtp-source -s 1} makes them, each phase of the dialogue
timed from the client's side.

    python3 bench/phases.py HOST PORT MESSAGES

Prints, per phase (connect and banner, HELO, MAIL, RCPT, DATA, final dot to
C{250}, QUIT and close), the median, mean and 99th percentile in
milliseconds, and the messages per second they add up to.  Sender and
recipient are in C{bench.test}, the message is 1 KiB (C{latency.content}).  Loopback only.
"""

from __future__ import annotations

import os
import socket
import statistics
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from latency import content, percentile  # noqa: E402

PHASES = ("connect+banner", "HELO", "MAIL", "RCPT", "DATA", "dot->250", "QUIT+close")
BODY = content(1024, 0, "sender@bench.test", "user@bench.test") + b".\r\n"
COMMANDS = (
    ("HELO", b"HELO client.bench.test\r\n"),
    ("MAIL", b"MAIL FROM:<sender@bench.test>\r\n"),
    ("RCPT", b"RCPT TO:<user@bench.test>\r\n"),
    ("DATA", b"DATA\r\n"),
    ("dot->250", BODY),
    ("QUIT+close", b"QUIT\r\n"),
)


def _reply(f) -> bytes:
    while True:
        line = f.readline()
        if not line:
            raise EOFError("the server closed the connection")
        if line[3:4] != b"-":
            return line


def measure(host: str, port: int, messages: int) -> dict[str, list[float]]:
    """
    Send C{messages} messages, one connection each; the seconds of every
    phase of every message.
    """
    if not host.startswith("127."):
        raise SystemExit("loopback addresses only")
    times: dict[str, list[float]] = {name: [] for name in PHASES}
    for _ in range(messages):
        started = time.perf_counter()
        with socket.create_connection((host, port), timeout=30) as s, s.makefile("rb") as f:
            _reply(f)
            now = time.perf_counter()
            times["connect+banner"].append(now - started)
            for name, data in COMMANDS:
                started = now
                s.sendall(data)
                code = _reply(f)[:3]
                if name == "QUIT+close":
                    f.read()  # until the server closes
                elif not code.startswith((b"2", b"3")):
                    raise SystemExit(f"{name}: {code.decode()}")
                now = time.perf_counter()
                times[name].append(now - started)
    return times


def main(argv: list[str]) -> int:
    if len(argv) != 4:
        print(__doc__, file=sys.stderr)
        return 2
    times = measure(argv[1], int(argv[2]), int(argv[3]))
    total = 0.0
    for name in PHASES:
        values = sorted(times[name])
        mean = statistics.mean(values)
        total += mean
        p99 = percentile(values, 0.99)
        print(
            f"{name:15s} p50 {statistics.median(values) * 1000:7.3f} ms"
            f"  mean {mean * 1000:7.3f}  p99 {p99 * 1000:7.3f}"
        )
    print(f"in all {total * 1000:.3f} ms a message = {1 / total:.0f} msgs/s")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
