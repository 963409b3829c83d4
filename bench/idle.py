"""
Hold many idle SMTP sessions open against one server (standard library
only).

Opens C{--count} connections to C{--host}:C{--port}, at most C{--batch}
greetings pending at once; each waits for the C{220} greeting and, with
C{--ehlo}, says EHLO and waits for the final C{250} line.  Then it prints
one JSON line (C{{"ready": N, "failed": M, "seconds": S}}) and holds every
session open until a line (or end of file) arrives on standard input or
C{--hold} seconds pass, and closes them all.

Bounded: connecting gives up after C{--connect-timeout} seconds.
"""

from __future__ import annotations

import argparse
import json
import resource
import select
import selectors
import socket
import sys
import time

__all__ = ["main"]


def _raiseFileLimit(needed: int) -> None:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < needed:
        resource.setrlimit(resource.RLIMIT_NOFILE, (min(needed, hard), hard))


def main(argv=None) -> int:
    """
    Run the client; see the module docstring.
    """
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--count", type=int, default=5000)
    parser.add_argument("--batch", type=int, default=200)
    parser.add_argument("--ehlo", action="store_true")
    parser.add_argument("--connect-timeout", type=float, default=120.0)
    parser.add_argument("--hold", type=float, default=300.0)
    args = parser.parse_args(argv)
    _raiseFileLimit(args.count + 100)

    selector = selectors.DefaultSelector()
    buffers = {}
    ready = []
    failed = 0
    opened = 0
    started = time.monotonic()
    deadline = started + args.connect_timeout

    def fail(sock: socket.socket) -> None:
        nonlocal failed
        failed += 1
        selector.unregister(sock)
        buffers.pop(sock, None)
        sock.close()

    while (opened < args.count or buffers) and time.monotonic() < deadline:
        while opened < args.count and len(buffers) < args.batch:
            sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            sock.setblocking(False)
            sock.connect_ex((args.host, args.port))
            buffers[sock] = [b"", "greeting"]
            selector.register(sock, selectors.EVENT_READ)
            opened += 1
        for key, _ in selector.select(timeout=1.0):
            sock = key.fileobj
            try:
                data = sock.recv(4096)
            except OSError:
                fail(sock)
                continue
            if not data:
                fail(sock)
                continue
            state = buffers[sock]
            state[0] += data
            lines = state[0].split(b"\r\n")
            state[0] = lines.pop()
            for line in lines:
                if line[3:4] == b"-":
                    continue
                if state[1] == "greeting" and line.startswith(b"220"):
                    if args.ehlo:
                        state[1] = "ehlo"
                        sock.send(b"EHLO idle.bench.test\r\n")
                    else:
                        state[1] = "ready"
                elif state[1] == "ehlo" and line.startswith(b"250"):
                    state[1] = "ready"
                else:
                    state[1] = "failed"
            if state[1] == "ready":
                selector.unregister(sock)
                del buffers[sock]
                ready.append(sock)
            elif state[1] == "failed":
                fail(sock)
    for sock in list(buffers):
        fail(sock)
    print(
        json.dumps(
            {
                "ready": len(ready),
                "failed": failed + (args.count - opened),
                "seconds": round(time.monotonic() - started, 3),
            }
        ),
        flush=True,
    )
    select.select([sys.stdin], [], [], args.hold)
    for sock in ready:
        sock.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
